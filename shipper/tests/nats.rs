//! `shipper run` with a `generator` source and a `nats` sink against the
//! real NATS server with JetStream on 127.0.0.1:4222: once the run ends on
//! its own, the stream holds exactly `count` messages. Without a server
//! the test prints why it skips, unless `SHIPPER_REQUIRE_SERVICES=1`,
//! which makes it fail instead.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;

const SHIPPER: &str = env!("CARGO_BIN_EXE_shipper");
const SERVER: &str = "127.0.0.1:4222";

/// Whether NATS answers; panics instead of skipping when services are
/// required.
fn server_available() -> bool {
    shipper_tests::service_available("NATS", SERVER)
}

#[test]
fn generator_to_nats_stores_exactly_count_messages() {
    if !server_available() {
        return;
    }
    const COUNT: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let subject = format!("shipper_run_test_{}_{nanos}", std::process::id());
    let stream = subject.clone();
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[sources.gen]
type = "generator"
count = {COUNT}
seed = 7

[sinks.js]
type = "nats"
inputs = ["gen"]
url = "nats://{SERVER}"
subject = "{subject}"
"#,
        data = dir.path().join("data").display(),
    );
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, config).unwrap();
    let started = Instant::now();
    let mut child = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run ends by itself once the generator has emitted `count` records
    // and the sink has delivered them.
    let deadline = started + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the run did not end\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\n{stderr}",
        output.status
    );
    eprintln!(
        "{COUNT} records through shipper run into JetStream in {elapsed:.2?}: {:.0} messages/s",
        COUNT as f64 / elapsed.as_secs_f64()
    );

    let producer = std::fs::read_to_string(dir.path().join("data/producer_id")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let js = jetstream::new(async_nats::connect(SERVER).await.unwrap());
        let info = js
            .get_stream(&stream)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
        assert_eq!(info.state.messages, COUNT, "{stderr}");
        let last = js
            .get_stream(&stream)
            .await
            .unwrap()
            .get_last_raw_message_by_subject(&format!("{subject}.{}", producer.trim()))
            .await
            .unwrap();
        assert_eq!(
            last.headers.get("Shipper-Offset").unwrap().as_str(),
            (COUNT - 1).to_string()
        );
        let record: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
        assert_eq!(record["seq"], COUNT - 1);
        js.delete_stream(&stream).await.unwrap();
    });
}
