//! The mqtt source against a real Mosquitto broker on 127.0.0.1:1883 (no
//! auth). Without one the tests print why they skip, unless
//! `SHIPPER_REQUIRE_SERVICES=1`, which makes them fail instead. Every test
//! uses topics and client ids of its own (process id and time), so runs in
//! parallel do not meet.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Outgoing};
use serde_json::{json, Value};
use shipper_components::sources::mqtt::{MqttOptions, MqttQos, MqttSource, MqttStats};
use shipper_core::chunk::{decode_body, ChunkOptions, Decoder};
use shipper_core::component::{ComponentError, Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Durability, Faults, Log, LogOptions};
use tokio::task::JoinHandle;

const BROKER: &str = "127.0.0.1:1883";
const PATIENCE: Duration = Duration::from_secs(30);

/// Whether the broker answers; panics instead of skipping when services
/// are required.
fn broker_available() -> bool {
    shipper_tests::service_available("Mosquitto", BROKER)
}

use shipper_tests::{free_port, unique};

/// Publishes every message with QoS 1 and returns once the broker has
/// acknowledged all of them.
async fn publish(messages: &[(String, Vec<u8>)]) {
    let messages = messages.to_vec();
    tokio::task::spawn_blocking(move || {
        shipper_tests::mqtt::Publisher::new(&unique("publisher")).publish_all(&messages);
    })
    .await
    .expect("the publisher panicked");
}

fn records(log: &Log) -> Vec<Value> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for chunk in log.reader(0) {
        let chunk = chunk.unwrap();
        let view = chunk.view();
        assert_eq!(view.stream_str(), "mqtt");
        for record in decode_body(&view, &mut decoder).unwrap().records() {
            out.push(serde_json::from_slice(record.unwrap()).unwrap());
        }
    }
    out
}

fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by_key(Value::to_string);
    values
}

/// Waits until `condition` holds, failing after [`PATIENCE`].
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Running {
    shutdown: Shutdown,
    task: JoinHandle<Result<(), ComponentError>>,
    counters: Arc<MqttStats>,
}

impl Running {
    fn start(log: &Log, client_id: &str, topics: &[String]) -> Running {
        Running::start_with(
            log,
            MqttOptions {
                host: "127.0.0.1".into(),
                port: 1883,
                client_id: client_id.into(),
                topics: topics.to_vec(),
                qos: MqttQos::AtLeastOnce,
                tls: None,
                credentials: None,
            },
        )
    }

    fn start_with(log: &Log, options: MqttOptions) -> Running {
        let mut source = MqttSource::new(options, "mqtt").unwrap();
        let counters = source.counters();
        let shutdown = Shutdown::new();
        let mut cx = SourceContext {
            emitter: Emitter::new(log.clone(), "mqtt", ChunkOptions::default()).unwrap(),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(async move { source.run(&mut cx).await });
        Running {
            shutdown,
            task,
            counters,
        }
    }

    async fn subscribed(&self) {
        wait_for("the subscription", || {
            self.counters.subscriptions.load(Ordering::Relaxed) > 0
        })
        .await;
    }

    /// The orderly stop: must return `Ok`.
    async fn stop(self) -> Arc<MqttStats> {
        self.shutdown.trigger();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the source stops")
            .unwrap()
            .unwrap();
        self.counters
    }
}

/// Waits until the log holds `count` durable records.
async fn wait_for_records(log: &Log, count: usize) {
    wait_for(&format!("{count} records"), || {
        log.durable_offset() >= count as u64
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_two_filters_are_stored_with_their_topics() {
    if !broker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let base = unique("filters");
    let topics = vec![format!("{base}/sensors/+"), format!("{base}/exact")];
    let running = Running::start(&log, &unique("client"), &topics);
    running.subscribed().await;

    let mut messages = vec![
        (
            format!("{base}/sensors/a"),
            br#"{"celsius": 21.5}"#.to_vec(),
        ),
        (format!("{base}/sensors/b"), b"plain text".to_vec()),
        (format!("{base}/exact"), vec![0xff, 0xfe, 0x00, 0x80]),
        // Matched by neither filter.
        (format!("{base}/sensors/a/deeper"), b"1".to_vec()),
        (format!("{base}/other"), b"2".to_vec()),
    ];
    let mut expected = vec![
        json!({"topic": format!("{base}/sensors/a"), "payload": {"celsius": 21.5}}),
        json!({"topic": format!("{base}/sensors/b"), "payload": "plain text"}),
        json!({"topic": format!("{base}/exact"), "payload_base64": "//4AgA=="}),
    ];
    for i in 0..100 {
        messages.push((
            format!("{base}/sensors/n"),
            format!("{{\"i\":{i}}}").into_bytes(),
        ));
        expected.push(json!({"topic": format!("{base}/sensors/n"), "payload": {"i": i}}));
    }
    publish(&messages).await;
    wait_for_records(&log, expected.len()).await;
    let counters = running.stop().await;

    assert_eq!(sorted(records(&log)), sorted(expected.clone()));
    assert_eq!(counters.records.load(Ordering::Relaxed), 103);
    // Every message was acknowledged, by the time the source returned.
    assert_eq!(counters.acked.load(Ordering::Relaxed), 103);
    assert_eq!(counters.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_stopped_arrive_once_after_a_restart() {
    if !broker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let base = unique("restart");
    let topics = vec![format!("{base}/#")];
    let client_id = unique("client");
    let message = |run: &str, i: usize| {
        (
            format!("{base}/{run}"),
            format!("{{\"run\":\"{run}\",\"i\":{i}}}").into_bytes(),
        )
    };
    let expected = |run: &str, i: usize| json!({"topic": format!("{base}/{run}"), "payload": {"run": run, "i": i}});

    let first = Running::start(&log, &client_id, &topics);
    first.subscribed().await;
    publish(&(0..10).map(|i| message("first", i)).collect::<Vec<_>>()).await;
    wait_for_records(&log, 10).await;
    let counters = first.stop().await;
    assert_eq!(counters.acked.load(Ordering::Relaxed), 10);

    // Nothing is subscribed now: the broker keeps these for the session.
    publish(&(0..200).map(|i| message("second", i)).collect::<Vec<_>>()).await;

    let second = Running::start(&log, &client_id, &topics);
    wait_for_records(&log, 210).await;
    let counters = second.stop().await;

    let want: Vec<Value> = (0..10)
        .map(|i| expected("first", i))
        .chain((0..200).map(|i| expected("second", i)))
        .collect();
    // Exactly these, in publishing order: none lost, none twice.
    assert_eq!(records(&log), want);
    assert_eq!(counters.records.load(Ordering::Relaxed), 200);
    assert_eq!(counters.acked.load(Ordering::Relaxed), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_acknowledged_only_once_durable() {
    if !broker_available() {
        return;
    }
    let base = unique("durable");
    let topics = vec![format!("{base}/#")];
    let client_id = unique("client");
    let messages: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("{base}/m"), format!("{i}").into_bytes()))
        .collect();

    // A first run creates the session and its subscription.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("healthy"), LogOptions::default()).unwrap();
    let setup = Running::start(&log, &client_id, &topics);
    setup.subscribed().await;
    setup.stop().await;
    publish(&messages).await;

    // A log that cannot make anything durable: every flush fails.
    let faults = Faults::default();
    let broken = Log::open(
        dir.path().join("broken"),
        LogOptions {
            durability: Durability::Always,
            faults: faults.clone(),
            ..LogOptions::default()
        },
    )
    .unwrap();
    faults.fail_flush_after(0);
    let failing = Running::start(&broken, &client_id, &topics);
    wait_for("the source to give up or acknowledge", || {
        failing.task.is_finished() || failing.counters.acked.load(Ordering::Relaxed) > 0
    })
    .await;
    // It had messages and emitted records, and acknowledged none.
    assert_eq!(failing.counters.acked.load(Ordering::Relaxed), 0);
    assert!(failing.counters.records.load(Ordering::Relaxed) > 0);
    let outcome = failing.task.await.unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    drop(broken);

    // So the broker delivers every message again, to the next run.
    let again = Running::start(&log, &client_id, &topics);
    wait_for_records(&log, messages.len()).await;
    again.stop().await;
    let want: Vec<Value> = (0..30)
        .map(|i| json!({"topic": format!("{base}/m"), "payload": i}))
        .collect();
    assert_eq!(sorted(records(&log)), sorted(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_resumed_without_loss() {
    if !broker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let base = unique("takeover");
    let topics = vec![format!("{base}/#")];
    let client_id = unique("client");
    let running = Running::start(&log, &client_id, &topics);
    running.subscribed().await;
    let message = |i: usize| (format!("{base}/m"), format!("{i}").into_bytes());
    publish(&(0..20).map(message).collect::<Vec<_>>()).await;
    wait_for_records(&log, 20).await;

    // Another connection under the same client id (keeping the session)
    // makes the broker drop the source's connection.
    let mut options = rumqttc::MqttOptions::new(client_id.clone(), "127.0.0.1", 1883);
    // Manual acknowledgements, never sent: what the broker hands this
    // connection from the session stays unacknowledged, so it is
    // delivered to the source again.
    options.set_clean_session(false).set_manual_acks(true);
    let (intruder, mut eventloop) = AsyncClient::new(options, 8);
    intruder.disconnect().await.unwrap();
    loop {
        if let Event::Outgoing(Outgoing::Disconnect) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    publish(&(20..60).map(message).collect::<Vec<_>>()).await;
    wait_for("a reconnection", || {
        running.counters.connections.load(Ordering::Relaxed) >= 2
    })
    .await;
    // At-least-once: after a dropped connection a message may be stored
    // twice, never lost.
    let distinct = || {
        let mut got: Vec<i64> = records(&log)
            .iter()
            .map(|r| r["payload"].as_i64().unwrap())
            .collect();
        got.sort_unstable();
        got.dedup();
        got
    };
    wait_for("all 60 messages", || distinct().len() == 60).await;
    let counters = running.stop().await;
    assert_eq!(distinct(), (0..60).collect::<Vec<i64>>());
    assert!(counters.acked.load(Ordering::Relaxed) >= 60);
}

/// A `mosquitto` of the test's own on three loopback ports: `mutual`
/// (TLS, a client certificate of the CA required), `password` (TLS, a
/// user and password required) and `plain` (for the test's publisher).
struct TlsBroker {
    child: std::process::Child,
    mutual: u16,
    password: u16,
    plain: u16,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsBroker {
    fn start(dir: &std::path::Path, ca: &shipper_tests::pki::Ca) -> Option<TlsBroker> {
        let (binary, passwd) = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto_passwd");
        if !std::path::Path::new(binary).exists() || !std::path::Path::new(passwd).exists() {
            shipper_tests::service_missing(
                "no mosquitto and mosquitto_passwd to start a TLS broker with",
            );
            return None;
        }
        let server = ca.server(dir, "broker");
        let passwords = dir.join("passwords");
        let made = std::process::Command::new(passwd)
            .args(["-b", "-c"])
            .arg(&passwords)
            .args(["shipper", "broker-s3cret"])
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let (mutual, password, plain) = (free_port(), free_port(), free_port());
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            ca.crt.display(),
            server.crt.display(),
            server.key.display()
        );
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "user root\nper_listener_settings true\n\
                 listener {mutual} 127.0.0.1\n{tls}require_certificate true\nallow_anonymous true\n\
                 listener {password} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {}\n\
                 listener {plain} 127.0.0.1\nallow_anonymous true\n",
                passwords.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        for port in [mutual, password, plain] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "mosquitto never listened on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(TlsBroker {
            child,
            mutual,
            password,
            plain,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_over_tls_with_a_client_certificate_or_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let ca = shipper_tests::pki::Ca::new(dir.path(), "ca");
    let Some(broker) = TlsBroker::start(dir.path(), &ca) else {
        return;
    };
    let client = ca.client(dir.path(), "shipper");
    let tls = |certificate: bool| {
        let settings = shipper_components::tls::TlsClientConfig {
            ca_file: Some(ca.crt.clone()),
            crt_file: certificate.then(|| client.crt.clone()),
            key_file: certificate.then(|| client.key.clone()),
            server_name: Some("localhost".into()),
            ..Default::default()
        };
        Some(shipper_components::tls::client_config(&settings, &[], "mqtt").unwrap())
    };
    // Refused: the mutual-TLS listener without a client certificate, the
    // password listener with a wrong password. The source keeps retrying;
    // its failures count, nothing connects.
    for (port, certificate, credentials) in [
        (broker.mutual, false, None),
        (
            broker.password,
            false,
            Some(("shipper".to_owned(), "wrong".to_owned())),
        ),
    ] {
        let log_dir = tempfile::tempdir().unwrap();
        let log = Log::open(log_dir.path(), LogOptions::default()).unwrap();
        let running = Running::start_with(
            &log,
            MqttOptions {
                host: "127.0.0.1".into(),
                port,
                client_id: unique("refused"),
                topics: vec![unique("refused")],
                qos: MqttQos::AtLeastOnce,
                tls: tls(certificate),
                credentials,
            },
        );
        wait_for("a refused connection", || {
            running.counters.failures.load(Ordering::Relaxed) > 0
        })
        .await;
        let counters = running.stop().await;
        assert_eq!(
            counters.connections.load(Ordering::Relaxed),
            0,
            "port {port}"
        );
    }
    for (port, certificate, credentials) in [
        (broker.mutual, true, None),
        (
            broker.password,
            false,
            Some(("shipper".to_owned(), "broker-s3cret".to_owned())),
        ),
    ] {
        let log_dir = tempfile::tempdir().unwrap();
        let log = Log::open(log_dir.path(), LogOptions::default()).unwrap();
        let topic = unique("tls");
        let running = Running::start_with(
            &log,
            MqttOptions {
                host: "127.0.0.1".into(),
                port,
                client_id: unique("client"),
                topics: vec![topic.clone()],
                qos: MqttQos::AtLeastOnce,
                tls: tls(certificate),
                credentials,
            },
        );
        running.subscribed().await;
        let plain = broker.plain;
        tokio::task::spawn_blocking(move || {
            shipper_tests::mqtt::Publisher::at(plain, &unique("publisher"))
                .publish(&topic, &["{\"over\":\"tls\"}"]);
        })
        .await
        .unwrap();
        wait_for_records(&log, 1).await;
        running.stop().await;
    }
}
