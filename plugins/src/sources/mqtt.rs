//! `mqtt`: subscribes to topic filters on an MQTT 3.1.1 broker and stores
//! every message as one JSON record that keeps its topic.
//!
//! # Delivery
//!
//! QoS 1 is at-least-once end to end. Acknowledgements are manual: a
//! PUBLISH is acknowledged (PUBACK) only once the record made from it is
//! durable in the log. Records are emitted as they arrive, one durability
//! wait covers all of them that arrived meanwhile, and when it ends their
//! acknowledgements go out in the order the messages came. A message that
//! is not acknowledged stays the broker's: it is delivered again on the
//! next connection. So that the broker keeps messages across restarts, the
//! session is persistent (`clean_session = false`) under a stable client
//! id, and the source subscribes again only when the broker has no session
//! for it, or at the first connection of a run, to pick up added filters
//! (the broker then sends matching retained messages again). A
//! filter dropped from the options stays subscribed in the session: MQTT
//! has no way to list a session's subscriptions, and matching topics here
//! instead would need `$`-topic rules rumqttc's `matches` does not follow.
//!
//! Duplicates are possible, loss by this source is not (the broker's own
//! queue limits are another matter, see below). After a dropped connection
//! (the acknowledgements of messages received on it are not sent on the
//! next one, whose packet ids may mean other messages) and after a crash,
//! the broker delivers again what was stored but not yet acknowledged. An
//! orderly stop stores and acknowledges everything it took, then sends
//! DISCONNECT: nothing is delivered twice.
//!
//! QoS 0 messages are stored as they come, with nothing to acknowledge;
//! the broker keeps none for a client that is away. QoS 2 is refused:
//! rumqttc 0.25 cannot resume a QoS 2 exchange in a persistent session
//! (it answers a PUBREL the broker sends again after a reconnect with a
//! protocol error, and reconnects forever: bytebeamio/rumqtt#664).
//!
//! # Flow control
//!
//! Until a message is acknowledged the broker holds it for this client,
//! and an acknowledgement waits for durability (up to the flush interval
//! under `Durability::Interval`). Meanwhile the broker queues what else
//! arrives, within its own limits: Mosquitto drops messages for a client
//! beyond `max_queued_messages` (1000 by default). On the development
//! machine, with Mosquitto 2.0 defaults, a burst of 3000 messages published
//! within 70 ms lost 1980 of them at the broker under a 100 ms flush
//! interval and 480 under `Durability::Always`; bursts of 1000 lost none.
//! Size the broker's queue for the bursts expected. This source in turn
//! stops reading the broker while [`MAX_UNACKED`] messages wait for
//! durability, and a full log blocks the emitter, so a slow disk pauses the
//! broker instead of growing memory.
//!
//! # Record format
//!
//! One JSON object per message, on one line ([`write_record`]):
//!
//! * `{"topic":"<topic>","payload":<value>}` when the payload is UTF-8 and
//!   one JSON value (stored as it came, without surrounding whitespace and
//!   with line breaks between tokens removed);
//! * `{"topic":"<topic>","payload":"<text>"}` when it is other UTF-8 text;
//! * `{"topic":"<topic>","payload_base64":"<base64>"}` otherwise (RFC 4648
//!   standard alphabet, padded), so that any payload is kept exactly.
//!
//! A record longer than the log's record limit is dropped, counted, logged
//! and acknowledged: delivered again it would be refused again, forever.
//!
//! # Connection
//!
//! Plain TCP (no TLS yet). A lost or refused connection is retried with an
//! exponential backoff from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], each attempt
//! logged as a warning.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, Outgoing, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use shipper_core::chunk::now_nanos;
use shipper_core::component::{ComponentError, Source, SourceContext};

/// The port of `mqtt://` when the url names none.
pub const DEFAULT_PORT: u16 = 1883;
/// Messages emitted and not yet acknowledged beyond which the broker is not
/// read until a durability wait ends.
pub const MAX_UNACKED: usize = 1024;
/// The first reconnection delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted this long starts the backoff over; a shorter
/// one (a broker that accepts and drops, another client taking the same
/// id) keeps it growing.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// How long an orderly stop waits to send its last acknowledgements and
/// DISCONNECT.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest MQTT packet read: the protocol's own limit (a 256 MiB remaining
/// length). A smaller limit would make a large message fail the connection
/// at every delivery, forever; a record too large for the log is dropped
/// and counted instead.
const MAX_PACKET_BYTES: usize = 268_435_460;
/// Requests (acknowledgements, SUBSCRIBE, DISCONNECT) queued to the event
/// loop; acknowledgements beyond it wait in the source.
const REQUEST_CAPACITY: usize = 256;
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The quality of service subscribed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttQos {
    /// QoS 0: nothing is acknowledged; messages sent while the connection
    /// is down are lost.
    AtMostOnce,
    /// QoS 1: acknowledged once durable; see the module docs.
    AtLeastOnce,
}

impl MqttQos {
    /// The QoS of a config's `qos` level: 0 or 1. Level 2 is refused with
    /// the reason (see the module docs).
    pub fn from_level(level: u8) -> Result<MqttQos, String> {
        match level {
            0 => Ok(MqttQos::AtMostOnce),
            1 => Ok(MqttQos::AtLeastOnce),
            2 => Err(
                "qos 2 is not supported: the MQTT client cannot resume a QoS 2 exchange \
                 after a reconnect (bytebeamio/rumqtt#664); use qos 1, which with durable \
                 acknowledgement is at-least-once"
                    .into(),
            ),
            other => Err(format!("qos {other} is not 0, 1 or 2")),
        }
    }

    fn level(self) -> QoS {
        match self {
            MqttQos::AtMostOnce => QoS::AtMostOnce,
            MqttQos::AtLeastOnce => QoS::AtLeastOnce,
        }
    }
}

/// Options of an [`MqttSource`].
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// The client id: the name of the broker's session for this source, so
    /// it must be stable across restarts and unique among the broker's
    /// clients. See [`MqttOptions::default_client_id`].
    pub client_id: String,
    /// Topic filters subscribed to (`+` and `#` wildcards allowed).
    pub topics: Vec<String>,
    /// The QoS of every subscription.
    pub qos: MqttQos,
    /// TLS to the broker, when set.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A user name and password for the broker.
    pub credentials: Option<(String, String)>,
}

impl MqttOptions {
    /// The client id of a source that names none: `shipper-<source name>`.
    pub fn default_client_id(source: &str) -> String {
        format!("shipper-{source}")
    }
}

/// The port of `mqtts://` when the url names none.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// Whether `url` asks for TLS (`mqtts://` or `ssl://`).
pub fn url_wants_tls(url: &str) -> bool {
    url.starts_with("mqtts://") || url.starts_with("ssl://")
}

/// Parses `mqtt://host[:port]` (or `tcp://`; `mqtts://` or `ssl://` for
/// TLS) into a host and a port ([`DEFAULT_PORT`], or [`DEFAULT_TLS_PORT`]
/// for TLS, when absent). An IPv6 address goes in brackets.
///
/// ```
/// use shipper_components::sources::mqtt::parse_url;
///
/// assert_eq!(parse_url("mqtt://broker.local:1884"), Ok(("broker.local".into(), 1884)));
/// assert_eq!(parse_url("mqtt://[::1]"), Ok(("::1".into(), 1883)));
/// assert_eq!(parse_url("mqtts://broker.local"), Ok(("broker.local".into(), 8883)));
/// ```
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let default_port = if url_wants_tls(url) {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    };
    let rest = if let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .or_else(|| url.strip_prefix("mqtts://"))
        .or_else(|| url.strip_prefix("ssl://"))
    {
        rest
    } else {
        return Err(format!("{url:?} does not start with mqtt:// or mqtts://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(
            "credentials in the url are not supported; use `username` and `password`".into(),
        );
    }
    if authority.contains(['/', '?', '#']) {
        return Err(format!("{url:?}: only mqtt://host:port, no path or query"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed `[`"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{url:?}: expected `:port` after `]`")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{url:?}: bad port {port:?}"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// Counters of an MQTT source.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Connections the broker accepted (CONNACK).
    pub connections: AtomicU64,
    /// Subscriptions the broker confirmed with every filter granted (SUBACK).
    pub subscriptions: AtomicU64,
    /// Records emitted.
    pub records: AtomicU64,
    /// Acknowledgements sent to the broker (PUBACK).
    pub acked: AtomicU64,
    /// Messages dropped because their record exceeds the log's record limit.
    pub oversized: AtomicU64,
    /// Connections that failed or broke: the broker unreachable, a TLS
    /// handshake or the broker's CONNACK refusing the credentials, a
    /// dropped connection. Each is retried after a backoff.
    pub failures: AtomicU64,
}

/// Subscribes to a broker and emits every message it delivers.
#[derive(Debug)]
pub struct MqttSource {
    options: MqttOptions,
    stream: String,
    counters: Arc<MqttStats>,
    /// Logs oversized messages at most once per ten seconds.
    oversized_log: crate::throttle::Throttle,
}

impl MqttSource {
    /// A source that will connect when it runs; records go to `stream`.
    /// Refuses bad options now (no topics, an invalid topic filter, an
    /// empty client id); an unreachable broker is not an error: the source
    /// keeps trying.
    pub fn new(options: MqttOptions, stream: &str) -> Result<Self, ComponentError> {
        if options.topics.is_empty() {
            return Err(ComponentError::Fatal(
                "no topic filters to subscribe to".into(),
            ));
        }
        if let Some(bad) = options.topics.iter().find(|t| !rumqttc::valid_filter(t)) {
            return Err(ComponentError::Fatal(format!(
                "invalid topic filter {bad:?}"
            )));
        }
        if options.client_id.is_empty() {
            return Err(ComponentError::Fatal("the client id is empty".into()));
        }
        if options.host.is_empty() {
            return Err(ComponentError::Fatal("the broker host is empty".into()));
        }
        Ok(MqttSource {
            options,
            stream: stream.to_owned(),
            counters: Arc::default(),
            oversized_log: crate::throttle::Throttle::default(),
        })
    }

    /// The counters, shared with the running source.
    pub fn counters(&self) -> Arc<MqttStats> {
        self.counters.clone()
    }

    fn client_options(&self) -> rumqttc::MqttOptions {
        let mut options = rumqttc::MqttOptions::new(
            &self.options.client_id,
            &self.options.host,
            self.options.port,
        );
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_PACKET_BYTES, 64 * 1024);
        if let Some(tls) = &self.options.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        if let Some((user, password)) = &self.options.credentials {
            options.set_credentials(user, password);
        }
        options
    }

    fn subscribe(&self, client: &AsyncClient) -> Result<(), ComponentError> {
        let filters = self
            .options
            .topics
            .iter()
            .map(|topic| SubscribeFilter::new(topic.clone(), self.options.qos.level()));
        client
            .try_subscribe_many(filters)
            .map_err(|e| ComponentError::Fatal(format!("queueing SUBSCRIBE: {e}")))
    }
}

/// What is needed to acknowledge one message.
#[derive(Debug, Clone, Copy)]
struct Ack {
    pkid: u16,
    qos: QoS,
}

impl Ack {
    fn publish(self) -> Publish {
        let mut publish = Publish::new("", self.qos, Vec::new());
        publish.pkid = self.pkid;
        publish
    }
}

/// A wait for the log to make durable everything emitted before it
/// started, and the messages it covers.
struct DurabilityWait {
    durable: Pin<Box<dyn Future<Output = shipper_core::Result<()>> + Send>>,
    acks: Vec<Ack>,
}

/// Resolves when `wait` is durable; never when there is no wait.
async fn settled(wait: &mut Option<DurabilityWait>) -> shipper_core::Result<()> {
    match wait {
        Some(wait) => wait.durable.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Messages on their way from emitted to acknowledged, oldest first at
/// every stage.
#[derive(Default)]
struct Acks {
    /// Emitted, not yet covered by a durability wait.
    emitted: Vec<Ack>,
    /// Covered by the wait in progress.
    waiting: Option<DurabilityWait>,
    /// Durable, to be handed to the event loop.
    durable: VecDeque<Ack>,
}

impl Acks {
    /// Messages emitted and not yet durable.
    fn owed(&self) -> usize {
        self.emitted.len() + self.waiting.as_ref().map_or(0, |w| w.acks.len())
    }

    /// Forgets every acknowledgement: after a lost connection the packet
    /// ids are the old connection's, and the broker delivers those
    /// messages again.
    fn forget(&mut self) {
        self.emitted.clear();
        self.waiting = None;
        self.durable.clear();
    }

    /// Hands durable acknowledgements to the event loop while its queue
    /// has room, in order.
    fn send(&mut self, client: &AsyncClient) {
        while let Some(ack) = self.durable.front() {
            if client.try_ack(&ack.publish()).is_err() {
                // The queue is full; the event loop drains it as it runs.
                break;
            }
            self.durable.pop_front();
        }
    }
}

/// Exponential reconnection delays.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

impl MqttStats {
    /// The counters as metrics.
    pub fn metrics(self: &Arc<Self>) -> Vec<shipper_core::metrics::ComponentMetric> {
        shipper_core::metrics::counters_of(
            self,
            &[
                ("shipper_source_connections_total", "Connections the broker accepted (CONNACK).", &[], |c| &c.connections),
                ("shipper_source_subscriptions_total", "Subscriptions the broker confirmed with every filter granted (SUBACK).", &[], |c| &c.subscriptions),
                ("shipper_source_acknowledgements_total", "Acknowledgements sent to the broker (PUBACK), each after its record was durable.", &[], |c| &c.acked),
                ("shipper_source_discarded_records_total", "Records the source dropped, by reason.", &[("reason", "oversized")], |c| &c.oversized),
                ("shipper_source_connection_failures_total", "Connections to the broker that failed or broke (unreachable, TLS refused, credentials refused, dropped), each retried after a backoff.", &[], |c| &c.failures),
            ],
        )
    }
}

#[async_trait]
impl Source for MqttSource {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.counters.metrics()
    }

    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        let (client, mut eventloop) = AsyncClient::new(self.client_options(), REQUEST_CAPACITY);
        let mut acks = Acks::default();
        let mut backoff = Backoff::new();
        let mut connected_at: Option<Instant> = None;
        let mut subscribed = false;
        let mut record = Vec::new();
        let broker = format!("{}:{}", self.options.host, self.options.port);
        loop {
            if connected_at.is_some() {
                acks.send(&client);
                if acks.waiting.is_none() && !acks.emitted.is_empty() {
                    let end = cx.emitter.written().await?;
                    let log = cx.emitter.log().clone();
                    acks.waiting = Some(DurabilityWait {
                        durable: Box::pin(async move {
                            match end {
                                Some(end) => log.durable(end).await,
                                None => Ok(()),
                            }
                        }),
                        acks: std::mem::take(&mut acks.emitted),
                    });
                }
            }
            let may_receive = acks.owed() < MAX_UNACKED;
            tokio::select! {
                biased;
                () = cx.shutdown.wait() => break,
                outcome = settled(&mut acks.waiting) => {
                    outcome?;
                    let wait = acks.waiting.take().expect("a settled wait exists");
                    acks.durable.extend(wait.acks);
                }
                event = eventloop.poll(), if may_receive => match event {
                    Ok(Event::Incoming(Incoming::Publish(publish))) => {
                        self.store(cx, &publish, &mut record, &mut acks)?;
                    }
                    Ok(Event::Incoming(Incoming::ConnAck(connack))) => {
                        self.counters.connections.fetch_add(1, Ordering::Relaxed);
                        connected_at = Some(Instant::now());
                        tracing::info!(
                            source = %self.stream,
                            %broker,
                            client_id = %self.options.client_id,
                            session_present = connack.session_present,
                            "connected to the MQTT broker"
                        );
                        if subscribed && !connack.session_present {
                            tracing::warn!(
                                source = %self.stream,
                                %broker,
                                "the broker kept no session for this client: messages published while it was away are lost"
                            );
                        }
                        if !subscribed || !connack.session_present {
                            self.subscribe(&client)?;
                            subscribed = true;
                        }
                    }
                    Ok(Event::Incoming(Incoming::SubAck(suback))) => self.check_suback(&suback.return_codes),
                    Ok(Event::Outgoing(Outgoing::PubAck(_))) => {
                        self.counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        self.counters.failures.fetch_add(1, Ordering::Relaxed);
                        acks.forget();
                        if connected_at.take().is_some_and(|at| at.elapsed() >= STABLE_CONNECTION) {
                            backoff.reset();
                        }
                        // Nothing lingers while the connection is down.
                        cx.emitter.close_chunks()?;
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            source = %self.stream,
                            %broker,
                            error = %describe(&error),
                            retry_in = ?delay,
                            "MQTT connection failed"
                        );
                        tokio::select! {
                            () = cx.shutdown.wait() => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                },
            }
        }
        self.finish(cx, client, eventloop, acks, connected_at.is_some())
            .await
    }
}

impl MqttSource {
    /// Emits one message's record; a QoS 1 message joins the
    /// acknowledgements owed.
    fn store(
        &self,
        cx: &mut SourceContext,
        publish: &Publish,
        record: &mut Vec<u8>,
        acks: &mut Acks,
    ) -> Result<(), ComponentError> {
        record.clear();
        write_record(&publish.topic, &publish.payload, record);
        match cx.emitter.emit(&self.stream, record, now_nanos(), None) {
            Ok(()) => {
                self.counters.records.fetch_add(1, Ordering::Relaxed);
            }
            Err(shipper_core::Error::RecordTooLarge { len, max }) => {
                self.counters.oversized.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.oversized_log.allow() {
                    tracing::warn!(
                        source = %self.stream,
                        topic = %publish.topic,
                        len,
                        max,
                        suppressed,
                        "MQTT message too large for a record; dropped"
                    );
                }
            }
            Err(error) => return Err(error.into()),
        }
        if publish.qos != QoS::AtMostOnce {
            acks.emitted.push(Ack {
                pkid: publish.pkid,
                qos: publish.qos,
            });
        }
        Ok(())
    }

    fn check_suback(&self, codes: &[SubscribeReasonCode]) {
        let mut granted = true;
        for (topic, code) in self.options.topics.iter().zip(codes) {
            match code {
                SubscribeReasonCode::Success(qos) if *qos == self.options.qos.level() => {}
                SubscribeReasonCode::Success(qos) => tracing::warn!(
                    source = %self.stream,
                    %topic,
                    granted = ?qos,
                    "the broker granted a lower QoS than asked"
                ),
                SubscribeReasonCode::Failure => {
                    granted = false;
                    tracing::error!(source = %self.stream, %topic, "the broker refused the subscription");
                }
            }
        }
        if granted {
            self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The orderly stop: makes every emitted record durable, acknowledges
    /// the messages, sends DISCONNECT. Messages arriving meanwhile are
    /// neither stored nor acknowledged: the broker keeps them for the next
    /// run.
    async fn finish(
        &self,
        cx: &mut SourceContext,
        client: AsyncClient,
        mut eventloop: EventLoop,
        mut acks: Acks,
        connected: bool,
    ) -> Result<(), ComponentError> {
        cx.emitter.durable().await?;
        if !connected {
            return Ok(());
        }
        let owed = acks.waiting.take().map(|w| w.acks).unwrap_or_default();
        acks.durable.extend(owed);
        acks.durable.extend(std::mem::take(&mut acks.emitted));
        let drained = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            let mut disconnecting = false;
            loop {
                acks.send(&client);
                if acks.durable.is_empty() && !disconnecting {
                    disconnecting = client.try_disconnect().is_ok();
                }
                match eventloop.poll().await? {
                    Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
                    Event::Outgoing(Outgoing::PubAck(_)) => {
                        self.counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
        .await;
        let broker = format!("{}:{}", self.options.host, self.options.port);
        match drained {
            Ok(Ok(())) => {
                tracing::info!(source = %self.stream, %broker, "disconnected from the MQTT broker");
            }
            Ok(Err(error)) => tracing::warn!(
                source = %self.stream,
                %broker,
                error = %describe(&error),
                "the MQTT connection failed while stopping; the broker delivers unacknowledged messages again"
            ),
            Err(_) => tracing::warn!(
                source = %self.stream,
                %broker,
                "the MQTT broker did not take the last acknowledgements within {DISCONNECT_TIMEOUT:?}; it delivers them again"
            ),
        }
        Ok(())
    }
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => format!("connection refused: {code:?}"),
        other => other.to_string(),
    }
}

/// Writes the record of a message on `topic` with `payload` to `out`; see
/// the module docs for the format.
///
/// ```
/// use shipper_components::sources::mqtt::write_record;
///
/// let mut out = Vec::new();
/// write_record("sensors/t1", b"{\"celsius\": 21.5}\n", &mut out);
/// assert_eq!(out, br#"{"topic":"sensors/t1","payload":{"celsius": 21.5}}"#);
/// out.clear();
/// write_record("door", b"open", &mut out);
/// assert_eq!(out, br#"{"topic":"door","payload":"open"}"#);
/// out.clear();
/// write_record("raw", &[0xff, 0xfe, 0x00, 0x80], &mut out);
/// assert_eq!(out, br#"{"topic":"raw","payload_base64":"//4AgA=="}"#);
/// ```
pub fn write_record(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"topic\":");
    write_json_string(topic, out);
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            out.extend_from_slice(b",\"payload\":");
            // Valid JSON holds no raw line breaks inside strings, so every
            // CR and LF is whitespace between tokens, and the tokens on
            // either side are kept apart by punctuation.
            let value = text.trim_matches([' ', '\t', '\n', '\r']);
            out.extend(value.bytes().filter(|b| !matches!(b, b'\n' | b'\r')));
        }
        Ok(text) => {
            out.extend_from_slice(b",\"payload\":");
            write_json_string(text, out);
        }
        Err(_) => {
            out.extend_from_slice(b",\"payload_base64\":\"");
            base64(payload, out);
            out.push(b'"');
        }
    }
    out.push(b'}');
}

fn write_json_string(text: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, text).expect("writing a str into a Vec cannot fail");
}

/// RFC 4648 base64, standard alphabet, padded.
fn base64(input: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for group in input.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let bits = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, payload: &[u8]) -> String {
        let mut out = Vec::new();
        write_record(topic, payload, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64(input.as_bytes(), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn records_by_payload_kind() {
        for (payload, expected) in [
            (&b"{\"a\":1}"[..], r#"{"topic":"t","payload":{"a":1}}"#),
            (b"  [1,\r\n 2]\n", r#"{"topic":"t","payload":[1, 2]}"#),
            (b"42", r#"{"topic":"t","payload":42}"#),
            (b"\"quoted\"", r#"{"topic":"t","payload":"quoted"}"#),
            (b"null", r#"{"topic":"t","payload":null}"#),
            (b"", r#"{"topic":"t","payload":""}"#),
            (b"two\nlines", r#"{"topic":"t","payload":"two\nlines"}"#),
            (b"{\"a\":", r#"{"topic":"t","payload":"{\"a\":"}"#),
            (b"\"\xff\"", r#"{"topic":"t","payload_base64":"Iv8i"}"#),
            (b"\x00\x01", r#"{"topic":"t","payload":"\u0000\u0001"}"#),
        ] {
            let got = record("t", payload);
            assert_eq!(got, expected, "{payload:?}");
            let parsed: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert_eq!(parsed["topic"], "t");
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn topics_are_escaped() {
        assert_eq!(
            record("a/\"b\"/c", b"1"),
            r#"{"topic":"a/\"b\"/c","payload":1}"#
        );
    }

    #[test]
    fn urls() {
        for (url, expected) in [
            ("mqtt://localhost", Ok(("localhost", 1883))),
            ("mqtt://localhost:1884/", Ok(("localhost", 1884))),
            ("tcp://10.0.0.1:2000", Ok(("10.0.0.1", 2000))),
            ("mqtt://[::1]:1885", Ok(("::1", 1885))),
            ("mqtt://[::1]", Ok(("::1", 1883))),
            ("mqtt://", Err("names no host")),
            ("mqtt://host:0", Err("bad port")),
            ("mqtt://host:x", Err("bad port")),
            ("mqtt://host:1883/topic", Err("no path")),
            ("mqtt://user:pw@host", Err("credentials")),
            ("mqtts://host", Ok(("host", 8883))),
            ("ssl://host:8884", Ok(("host", 8884))),
            ("http://host", Err("does not start with mqtt://")),
            ("mqtt://[::1", Err("unclosed")),
        ] {
            match (parse_url(url), expected) {
                (Ok(got), Ok((host, port))) => assert_eq!(got, (host.to_owned(), port), "{url}"),
                (Err(got), Err(part)) => assert!(got.contains(part), "{url}: {got}"),
                (got, expected) => panic!("{url}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn qos_levels() {
        assert_eq!(MqttQos::from_level(0), Ok(MqttQos::AtMostOnce));
        assert_eq!(MqttQos::from_level(1), Ok(MqttQos::AtLeastOnce));
        assert!(MqttQos::from_level(2).unwrap_err().contains("rumqtt#664"));
        assert!(MqttQos::from_level(3).is_err());
    }

    #[test]
    fn bad_options_are_refused_up_front() {
        let good = MqttOptions {
            host: "localhost".into(),
            port: 1883,
            client_id: "c".into(),
            topics: vec!["a/+/b".into(), "c/#".into()],
            qos: MqttQos::AtLeastOnce,
            tls: None,
            credentials: None,
        };
        assert!(MqttSource::new(good.clone(), "s").is_ok());
        for bad in [
            MqttOptions {
                topics: vec![],
                ..good.clone()
            },
            MqttOptions {
                topics: vec!["a/#/b".into()],
                ..good.clone()
            },
            MqttOptions {
                client_id: String::new(),
                ..good.clone()
            },
        ] {
            assert!(MqttSource::new(bad, "s").is_err());
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], BACKOFF_MIN);
        assert_eq!(delays[1], BACKOFF_MIN * 2);
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), BACKOFF_MIN);
    }
}

/// The `mqtt` source's config: `[sources.NAME] type = "mqtt"`. Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use serde::Deserialize;
    use shipper_core::component::Source;

    use super::{parse_url, MqttOptions, MqttQos, MqttSource, DEFAULT_PORT};
    use crate::config::{BuildContext, BuildError, Checks, SourceComponent};

    fn default_qos() -> u8 {
        1
    }

    /// `type = "mqtt"`: subscribes to topic filters on a broker.
    #[derive(Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct MqttSourceConfig {
        /// `mqtt://host:port`; or give `host` (and `port`) instead.
        #[serde(default)]
        pub url: Option<String>,
        #[serde(default)]
        pub host: Option<String>,
        #[serde(default)]
        pub port: Option<u16>,
        pub topics: Vec<String>,
        #[serde(default = "default_qos")]
        pub qos: u8,
        #[serde(default)]
        pub client_id: Option<String>,
        /// TLS to the broker (also implied by an `mqtts://` url).
        #[serde(default)]
        pub tls: Option<crate::tls::TlsClientConfig>,
        /// A user name for the broker.
        #[serde(default)]
        pub username: Option<String>,
        /// Its password (`${VAR}` takes it from the environment).
        #[serde(default)]
        pub password: Option<String>,
    }

    impl std::fmt::Debug for MqttSourceConfig {
        /// The password is a secret: never log it.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MqttSourceConfig")
                .field("url", &self.url)
                .field("host", &self.host)
                .field("port", &self.port)
                .field("topics", &self.topics)
                .field("qos", &self.qos)
                .field("client_id", &self.client_id)
                .field("tls", &self.tls)
                .field("username", &self.username)
                .field("password", &self.password.as_ref().map(|_| "<redacted>"))
                .finish()
        }
    }

    impl MqttSourceConfig {
        /// Whether it connects over TLS.
        fn wants_tls(&self) -> bool {
            self.tls.is_some() || self.url.as_deref().is_some_and(super::url_wants_tls)
        }
    }

    /// Checks one topic filter as the source does: `MqttSource::new` is given
    /// that filter alone, with options otherwise valid, and refuses it if it is
    /// not a valid MQTT filter (nothing is connected).
    fn check_topic_filter(topic: &str) -> Result<(), String> {
        let options = MqttOptions {
            host: "localhost".into(),
            port: DEFAULT_PORT,
            client_id: "validate".into(),
            topics: vec![topic.to_owned()],
            qos: MqttQos::AtLeastOnce,
            tls: None,
            credentials: None,
        };
        MqttSource::new(options, "validate")
            .map(drop)
            .map_err(|error| error.to_string())
    }

    impl crate::config::Named for MqttSourceConfig {
        const TYPE: &'static str = "mqtt";
    }

    #[async_trait::async_trait]
    impl SourceComponent for MqttSourceConfig {
        fn check(&self, check: &mut dyn Checks) {
            match (&self.url, &self.host) {
                (None, None) => check.error(&[], "needs `url` or `host`"),
                (Some(_), Some(_)) => check.error(&["host"], "give `url` or `host`, not both"),
                (Some(url), None) => {
                    // The source's own parser (TLS, credentials, a path, a bad port).
                    if let Err(message) = parse_url(url) {
                        check.error(&["url"], message);
                    }
                    if self.port.is_some() {
                        check.error(&["port"], "with `url`, the port goes in the url");
                    }
                }
                (None, Some(host)) => {
                    if host.is_empty() {
                        check.error(&["host"], "must not be empty");
                    }
                }
            }
            if self.port == Some(0) {
                check.error(&["port"], "must be 1 to 65535");
            }
            if self.client_id.as_deref() == Some("") {
                check.error(
                    &["client_id"],
                    "must not be empty (leave it out for shipper-NAME)",
                );
            }
            if self.topics.is_empty() {
                check.error(&["topics"], "needs at least one topic filter");
            }
            for topic in &self.topics {
                if let Err(message) = check_topic_filter(topic) {
                    check.error(&["topics"], message);
                }
            }
            if let Some(tls) = &self.tls {
                tls.check(check);
            }
            match (&self.username, &self.password) {
                (Some(_), None) => check.error(&["password"], "`username` needs `password`"),
                (None, Some(_)) => check.error(&["username"], "`password` needs `username`"),
                (Some(_), Some(_)) if !self.wants_tls() => check.warning(
                    &["password"],
                    "sent in the clear: give the broker a `tls` table (or an mqtts:// url)",
                ),
                _ => {}
            }
            match self.qos {
                0 | 1 => {}
                2 => check.error(
                    &["qos"],
                    "qos 2 is not supported (the MQTT client cannot resume a QoS 2 exchange after a reconnect); use 1: records are acknowledged only once durable",
                ),
                other => check.error(&["qos"], format!("qos {other} is not 0 or 1")),
            }
        }

        async fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
            let (host, port) = match (&self.url, &self.host) {
                (Some(url), _) => parse_url(url).map_err(|e| format!("url: {e}"))?,
                (None, Some(host)) => (host.clone(), self.port.unwrap_or(DEFAULT_PORT)),
                (None, None) => return Err("needs `url` or `host`".into()),
            };
            let options = MqttOptions {
                host,
                port,
                client_id: self
                    .client_id
                    .clone()
                    .unwrap_or_else(|| MqttOptions::default_client_id(cx.name)),
                topics: self.topics.clone(),
                qos: MqttQos::from_level(self.qos).map_err(|e| e.to_string())?,
                tls: self
                    .wants_tls()
                    .then(|| {
                        let settings = self.tls.clone().unwrap_or_default();
                        crate::tls::client_config(&settings, &[], cx.name)
                    })
                    .transpose()
                    .map_err(|e| format!("tls: {e}"))?,
                credentials: self.username.clone().zip(self.password.clone()),
            };
            Ok(Box::new(
                MqttSource::new(options, cx.name).map_err(|e| e.to_string())?,
            ))
        }
    }
}

pub use config::MqttSourceConfig;
