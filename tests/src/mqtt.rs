//! An MQTT publisher for the tests of the `mqtt` source: QoS 1 to the local
//! Mosquitto (127.0.0.1:1883), returning once the broker has acknowledged
//! every message.

/// How long the broker may take to acknowledge what was published.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A QoS 1 publisher on its own connection.
pub struct Publisher {
    client: rumqttc::Client,
    connection: rumqttc::Connection,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects as `client_id` (lazily: the first publish connects), with
    /// room for messages up to 32 MiB (over the log's 16 MiB record limit,
    /// so tests can send one that is too large).
    pub fn new(client_id: &str) -> Self {
        Publisher::at(1883, client_id)
    }

    /// As [`Publisher::new`], to a broker on 127.0.0.1:`port`.
    pub fn at(port: u16, client_id: &str) -> Self {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_max_packet_size(32 << 20, 32 << 20);
        let (client, connection) = rumqttc::Client::new(options, 1024);
        Publisher { client, connection }
    }

    /// Publishes every payload to `topic` and returns once the broker has
    /// acknowledged them all.
    ///
    /// # Panics
    /// When the broker cannot be reached, refuses a message, or has not
    /// acknowledged them all within 30 s.
    pub fn publish<P: AsRef<[u8]>>(&mut self, topic: &str, payloads: &[P]) {
        let messages: Vec<(&str, &[u8])> = payloads.iter().map(|p| (topic, p.as_ref())).collect();
        self.publish_all(&messages);
    }

    /// Publishes each `(topic, payload)` in order and returns once the
    /// broker has acknowledged them all.
    ///
    /// # Panics
    /// As [`Publisher::publish`].
    pub fn publish_all<T: AsRef<str>, P: AsRef<[u8]>>(&mut self, messages: &[(T, P)]) {
        for (topic, payload) in messages {
            self.client
                .publish(
                    topic.as_ref(),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload.as_ref().to_vec(),
                )
                .unwrap_or_else(|e| panic!("publishing to {}: {e}", topic.as_ref()));
        }
        let mut acknowledged = 0;
        while acknowledged < messages.len() {
            let event = match self.connection.recv_timeout(PATIENCE) {
                Ok(Ok(event)) => event,
                Ok(Err(e)) => panic!("MQTT connection to 127.0.0.1:1883: {e}"),
                Err(_) => panic!(
                    "the broker acknowledged {acknowledged} of {} messages within {PATIENCE:?}",
                    messages.len()
                ),
            };
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                acknowledged += 1;
            }
        }
    }
}
