//! The embedded ingest API (`shipper::ingest`): objects inserted by an
//! application reach real sinks (a file; a real aggregator process over
//! loopback), from many threads, offline first, with the budget's `Full`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{file_sink, free_port, seen, Guard};
use shipper::ingest::{Ingest, IngestOptions, Ingestor, InsertError};

#[derive(serde::Serialize, Ingest)]
#[ingest(stream = "weather")]
struct Reading {
    seq: u64,
    sensor: u32,
    celsius: f64,
}

/// The trait by hand, for a generic type.
#[derive(serde::Serialize)]
struct Tagged<T> {
    seq: u64,
    tag: T,
}

impl<T: serde::Serialize> Ingest for Tagged<T> {
    const STREAM: &'static str = "tags";
}

fn reading(seq: u64) -> Reading {
    Reading {
        seq,
        sensor: (seq % 7) as u32,
        celsius: 20.0 + (seq % 100) as f64 / 10.0,
    }
}

/// A config with an `sdk` source and `sinks`.
fn config(dir: &Path, log: &str, sinks: &str) -> String {
    format!(
        r#"data_dir = "{data}"
shutdown_timeout_ms = 5000

[log]
durability = "interval"
interval_ms = 20
{log}

[sources.app]
type = "sdk"

{sinks}"#,
        data = dir.join("data").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserted_objects_reach_the_sink_and_wait_for_upload_sees_the_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let ingestor =
        Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    for seq in 0..20_000 {
        ingestor.insert(&reading(seq)).unwrap();
    }
    assert!(ingestor
        .wait_for_upload(Duration::from_secs(30))
        .await
        .unwrap());
    let out = dir.path().join("out/records.ndjson");
    common::assert_exactly_once(&seen(&out), 20_000);
    let text = std::fs::read_to_string(&out).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["sensor"], 0);
    assert_eq!(first["celsius"], 20.0);
    assert_eq!(<Reading as Ingest>::STREAM, "weather");
    // Raw bytes too, a hand-made impl, and a durable insert.
    ingestor
        .insert_bytes("weather", br#"{"seq":20000,"raw":true}"#)
        .unwrap();
    ingestor
        .insert(&Tagged {
            seq: 20_002,
            tag: "x",
        })
        .unwrap();
    ingestor.insert_durable(&reading(20_001)).await.unwrap();
    assert!(ingestor.log().durable_offset() >= 20_003);
    let handle = ingestor.clone();
    ingestor.close().await.unwrap();
    assert!(matches!(
        handle.insert(&reading(1)),
        Err(InsertError::Closed)
    ));
    drop(handle);
    common::assert_exactly_once(&seen(&out), 20_003);
}

/// `#[derive(Ingest)]` writes the fields; this type's `Serialize` does not.
#[derive(Ingest)]
#[ingest(stream = "weather")]
struct Fahrenheit {
    celsius: f64,
}

impl serde::Serialize for Fahrenheit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.celsius * 9.0 / 5.0 + 32.0)
    }
}

#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_builds_catch_a_derived_writer_that_disagrees_with_serialize() {
    let dir = tempfile::tempdir().unwrap();
    let ingestor =
        Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ingestor.insert(&Fahrenheit { celsius: 100.0 })
    }))
    .expect_err("the mismatch panics");
    let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains(r#"writes {"celsius":100.0} but its Serialize impl writes 212.0"#)
            && message.contains("#[ingest(stream = \"...\", serde)]"),
        "{message}"
    );
    // Nothing of it was stored, and the thread inserts on.
    ingestor.insert(&reading(0)).unwrap();
    assert!(ingestor
        .wait_for_upload(Duration::from_secs(30))
        .await
        .unwrap());
    ingestor.close().await.unwrap();
    common::assert_exactly_once(&seen(&dir.path().join("out/records.ndjson")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_threads_insert_at_once_and_nothing_is_lost_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let ingestor =
        Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    const THREADS: u64 = 4;
    const EACH: u64 = 25_000;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let ingestor = ingestor.clone();
            scope.spawn(move || {
                for i in 0..EACH {
                    ingestor.insert(&reading(thread * EACH + i)).unwrap();
                }
            });
        }
    });
    // The threads are gone; their open chunks are not lost.
    assert!(ingestor
        .wait_for_upload(Duration::from_secs(60))
        .await
        .unwrap());
    ingestor.close().await.unwrap();
    common::assert_exactly_once(
        &seen(&dir.path().join("out/records.ndjson")),
        THREADS * EACH,
    );
}

/// The backend (an aggregator: `shipper run` with a shipper source and a
/// file sink) is down while the app inserts: the objects wait on the app's
/// disk; once it is up they upload and the app's disk empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_first_objects_wait_on_disk_then_upload_when_the_backend_returns() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = format!(
        r#"[sinks.backend]
type = "http"
inputs = ["app"]
uri = "http://127.0.0.1:{port}/v1/chunks"
timeout_ms = 2000
retry = {{ initial_ms = 50, max_ms = 200 }}
"#
    );
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let ingestor = Ingestor::open_toml(&config(&app, "segment_bytes = \"64KiB\"", &sink)).unwrap();
    const COUNT: u64 = 30_000;
    for seq in 0..COUNT {
        ingestor.insert(&reading(seq)).unwrap();
    }
    ingestor.flush().await.unwrap();
    assert!(
        !ingestor
            .wait_for_upload(Duration::from_millis(300))
            .await
            .unwrap(),
        "nothing can be acknowledged while the backend is down"
    );
    assert!(
        ingestor.log().durable_offset() >= COUNT,
        "on disk meanwhile"
    );

    let aggregator_dir = dir.path().join("aggregator");
    std::fs::create_dir_all(&aggregator_dir).unwrap();
    let aggregator_config = aggregator_dir.join("aggregator.toml");
    std::fs::write(
        &aggregator_config,
        format!(
            r#"data_dir = "{data}"
[admin]
address = "127.0.0.1:0"
[sources.apps]
type = "shipper"
address = "127.0.0.1:{port}"
[sinks.out]
type = "file"
inputs = ["apps"]
path = "{out}"
"#,
            data = aggregator_dir.join("data").display(),
            out = aggregator_dir.join("out/records.ndjson").display(),
        ),
    )
    .unwrap();
    let aggregator = Guard::start(&aggregator_config);
    assert!(
        ingestor
            .wait_for_upload(Duration::from_secs(60))
            .await
            .unwrap(),
        "uploaded once the backend is back"
    );
    let out = aggregator_dir.join("out/records.ndjson");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (seen(&out).len() as u64) < COUNT && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    aggregator.terminate();
    common::assert_exactly_once(&seen(&out), COUNT);
    // Acknowledged segments are deleted: only the active one is left.
    let segments = std::fs::read_dir(app.join("data/segments"))
        .unwrap()
        .count();
    ingestor.close().await.unwrap();
    assert!(segments <= 2, "{segments} segments left on the app's disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_refuses_with_full_when_so_configured() {
    let dir = tempfile::tempdir().unwrap();
    // A backend that never answers: nothing is ever acknowledged.
    let sink = format!(
        r#"[sinks.backend]
type = "http"
inputs = ["app"]
uri = "http://127.0.0.1:{}/v1/chunks"
"#,
        free_port()
    );
    let log = "segment_bytes = \"16KiB\"\nmax_bytes = \"48KiB\"\nwhen_full = \"block\"";
    let ingestor = Ingestor::open_toml_with(
        &config(dir.path(), log, &sink),
        IngestOptions {
            refuse_when_full: true,
        },
    )
    .unwrap();
    let mut outcomes = BTreeMap::new();
    for seq in 0..200_000 {
        let outcome = match ingestor.insert(&reading(seq)) {
            Ok(()) => "stored",
            Err(InsertError::Full) => "full",
            Err(error) => panic!("{error}"),
        };
        *outcomes.entry(outcome).or_insert(0u64) += 1;
        if outcome == "full" {
            break;
        }
    }
    assert_eq!(outcomes.get("full"), Some(&1), "{outcomes:?}");
    assert!(outcomes["stored"] > 0);
    // Closing gives up on what cannot be stored instead of hanging.
    let started = std::time::Instant::now();
    let error = ingestor.close().await.unwrap_err().to_string();
    assert!(error.contains("disk budget"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// `flush` (like `insert_durable` and `wait_for_upload`) waits for the log
/// off the caller's runtime thread: here a current-thread runtime, its
/// only thread, keeps running the application's other tasks while the
/// flush waits for room that a dead backend never makes. (A flush that
/// blocked the thread would stop the runtime, its timeout included: the
/// test thread watches from outside.)
#[test]
fn a_waiting_flush_leaves_the_applications_runtime_running() {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(flush_beside_other_tasks());
        let _ = done.send(());
    });
    outcome
        .recv_timeout(Duration::from_secs(120))
        .expect("the flush blocked the runtime's only thread (or the test panicked)");
}

async fn flush_beside_other_tasks() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[sinks.backend]\ntype = \"http\"\ninputs = [\"app\"]\nuri = \"http://127.0.0.1:{}/v1/chunks\"\n",
        free_port()
    );
    let log = "segment_bytes = \"16KiB\"\nmax_bytes = \"48KiB\"\nwhen_full = \"block\"";
    let text = config(dir.path(), log, &sink)
        .replace("shutdown_timeout_ms = 5000", "shutdown_timeout_ms = 100");
    let ingestor = Ingestor::open_toml(&text).unwrap();
    // A thread of the application inserts until the budget stops it.
    let inserting = std::thread::spawn({
        let ingestor = ingestor.clone();
        move || {
            for seq in 0.. {
                if ingestor.insert(&reading(seq)).is_err() {
                    return seq;
                }
            }
            unreachable!()
        }
    });
    while !ingestor.log().is_full() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ticks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn({
        let (ticks, stop) = (ticks.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let flushed = tokio::time::timeout(Duration::from_millis(300), ingestor.flush()).await;
    assert!(flushed.is_err(), "the log has no room: the flush waits");
    assert!(
        ticks.load(Ordering::Relaxed) > 0,
        "the runtime's only thread ran the ticker while the flush waited"
    );
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap();
    // Closing gives up on the budget; the blocked insert returns.
    let error = ingestor.close().await.unwrap_err().to_string();
    assert!(error.contains("disk budget"), "{error}");
    assert!(inserting.join().unwrap() > 0);
}

/// Polls `future` to completion on this thread, parking between polls:
/// an executor that is not tokio.
fn block_on_plain<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

#[test]
fn insert_durable_flush_and_wait_for_upload_work_outside_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let ingestor =
        Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    ingestor.insert(&reading(0)).unwrap();
    block_on_plain(ingestor.insert_durable(&reading(1))).unwrap();
    ingestor.insert(&reading(2)).unwrap();
    block_on_plain(ingestor.flush()).unwrap();
    assert!(ingestor.log().durable_offset() >= 3);
    assert!(block_on_plain(ingestor.wait_for_upload(Duration::from_secs(30))).unwrap());
    common::assert_exactly_once(&seen(&dir.path().join("out/records.ndjson")), 3);
    ingestor.insert(&reading(3)).unwrap();
    block_on_plain(ingestor.flush()).unwrap();
    drop(ingestor);
    // Dropped, not closed: what was durable ships on the next open.
    let ingestor =
        Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert!(ingestor
            .wait_for_upload(Duration::from_secs(30))
            .await
            .unwrap());
        ingestor.close().await.unwrap();
    });
    common::assert_exactly_once(&seen(&dir.path().join("out/records.ndjson")), 4);
}

#[test]
fn an_ingestor_needs_one_sdk_source_and_shipper_run_refuses_one() {
    let dir = tempfile::tempdir().unwrap();
    let without = format!(
        "data_dir = \"{}\"\n[sources.in]\ntype = \"stdin\"\n{}",
        dir.path().join("data").display(),
        file_sink(dir.path(), "app").replace("[\"app\"]", "[\"in\"]")
    );
    let error = Ingestor::open_toml(&without).unwrap_err().to_string();
    assert!(error.contains("type \"sdk\""), "{error}");

    let path = dir.path().join("sdk.toml");
    std::fs::write(&path, config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("embeds shipper"), "{stderr}");
}

/// The `tracing` layer under a storm from four threads with a small
/// queue: the application never waits, every event that was not counted
/// as dropped arrives once, with its level, target, message, fields and
/// spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracing_layer_ships_events_and_drops_a_storm_without_blocking() {
    use shipper::ingest::EventLayer;
    use tracing_subscriber::layer::SubscriberExt;

    let dir = tempfile::tempdir().unwrap();
    let ingestor =
        Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    let layer = EventLayer::new(&ingestor, "logs", 2_000).unwrap();
    let dropped = layer.dropped_counter();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    const THREADS: u64 = 4;
    const EACH: u64 = 50_000;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let _request = tracing::info_span!("request", thread).entered();
                    for i in 0..EACH {
                        let seq = thread * EACH + i;
                        tracing::warn!(seq, ms = 812, slow = true, "slow query");
                    }
                });
            });
        }
    });
    drop(dispatch);
    let dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
    let expected = (THREADS * EACH - dropped) as usize;
    assert!(expected > 0, "some events got through");
    let out = dir.path().join("out/records.ndjson");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen(&out).len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {expected}",
            seen(&out).len()
        );
        ingestor
            .wait_for_upload(Duration::from_secs(1))
            .await
            .unwrap();
    }
    ingestor.close().await.unwrap();
    let counts = seen(&out);
    assert_eq!(counts.len(), expected, "{dropped} dropped");
    assert!(counts.values().all(|&n| n == 1), "once each");
    let text = std::fs::read_to_string(&out).unwrap();
    let event: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(event["level"], "WARN");
    assert_eq!(event["message"], "slow query");
    assert_eq!(event["ms"], 812);
    assert_eq!(event["slow"], true);
    assert_eq!(event["spans"], serde_json::json!(["request"]));
    assert!(
        event["target"].as_str().unwrap().contains("ingest"),
        "{event}"
    );
    assert!(event["ts"].as_str().unwrap().ends_with('Z'), "{event}");
}

/// The same layer as the `log` crate's backend (the only test here that
/// installs a global logger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_backend_ships_records() {
    use shipper::ingest::EventLayer;

    let dir = tempfile::tempdir().unwrap();
    let ingestor =
        Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
    let layer = EventLayer::new(&ingestor, "logs", 10_000).unwrap();
    log::set_boxed_logger(Box::new(layer.clone())).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    for seq in 0..1_000 {
        log::info!(target: "app::orders", "{{\"seq\":{seq}}} order stored");
    }
    log::debug!("filtered out by the max level");
    assert_eq!(layer.dropped(), 0);
    let out = dir.path().join("out/records.ndjson");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .collect::<Vec<_>>()
    };
    while lines().len() < 1_000 {
        assert!(std::time::Instant::now() < deadline, "{}", lines().len());
        ingestor
            .wait_for_upload(Duration::from_secs(1))
            .await
            .unwrap();
    }
    let records = lines();
    assert_eq!(records.len(), 1_000);
    assert_eq!(records[7]["message"], r#"{"seq":7} order stored"#);
    assert_eq!(records[7]["level"], "INFO");
    assert_eq!(records[7]["target"], "app::orders");
    assert!(records[7]["line"].as_u64().is_some());
}

/// The application side of the SIGKILL test below: inserts until killed,
/// printing `durable SEQ` after each `insert_durable`. Does nothing unless
/// `SHIPPER_INGEST_CHILD` names its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_inserts_until_killed() {
    let Ok(dir) = std::env::var("SHIPPER_INGEST_CHILD") else {
        return;
    };
    let dir = Path::new(&dir);
    let ingestor = Ingestor::open_toml(&config(dir, "", &file_sink(dir, "app"))).unwrap();
    for seq in 0.. {
        if seq % 97 == 0 {
            ingestor.insert_durable(&reading(seq)).await.unwrap();
            println!("durable {seq}");
        } else {
            ingestor.insert(&reading(seq)).unwrap();
        }
    }
}

/// An application killed (SIGKILL) while it inserts and ships: opened
/// again on the same directory, it delivers what it had stored; downstream
/// every record it was told was durable arrives, none is partial and none
/// arrives twice.
#[test]
fn an_app_killed_while_inserting_loses_nothing_durable_and_repeats_nothing() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_inserts_until_killed", "--nocapture"])
        .env("SHIPPER_INGEST_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut durable = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(seq) = line.strip_prefix("durable ") {
            let seq: u64 = seq.parse().unwrap();
            durable = Some(seq);
            if seq >= 30_000 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let durable = durable.expect("the child reported durable inserts");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ingestor =
            Ingestor::open_toml(&config(dir.path(), "", &file_sink(dir.path(), "app"))).unwrap();
        assert!(ingestor
            .wait_for_upload(Duration::from_secs(60))
            .await
            .unwrap());
        ingestor.close().await.unwrap();
    });
    // `seen` parses every line: a partial record would fail it.
    let counts = seen(&dir.path().join("out/records.ndjson"));
    assert!(counts.values().all(|&n| n == 1), "nothing twice");
    let missing: Vec<u64> = (0..=durable)
        .filter(|seq| !counts.contains_key(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records at or below the last durable one ({durable}) lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// The builder: the same ingestor in code, sinks typed or as TOML tables
/// (checked like a config file's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_opens_the_same_ingestor_in_code() {
    use shipper::config::{DurabilityPolicy, LogConfig, SinkConfig};
    use shipper::ingest::IngestorBuilder;
    use shipper_components::sinks::blackhole::BlackholeSinkConfig;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/records.ndjson");
    let ingestor = Ingestor::builder(dir.path().join("data"))
        .log(LogConfig {
            durability: DurabilityPolicy::Always,
            ..LogConfig::default()
        })
        .shutdown_timeout(Duration::from_secs(5))
        .sink_toml(
            "out",
            &format!("type = \"file\"\npath = \"{}\"", out.display()),
        )
        .sink(
            "void",
            SinkConfig::builtin(BlackholeSinkConfig {
                inputs: vec![IngestorBuilder::SOURCE.into()],
            }),
        )
        .open()
        .unwrap();
    for seq in 0..1_000 {
        ingestor.insert(&reading(seq)).unwrap();
    }
    assert!(ingestor
        .wait_for_upload(Duration::from_secs(30))
        .await
        .unwrap());
    ingestor.close().await.unwrap();
    common::assert_exactly_once(&seen(&out), 1_000);

    let error = Ingestor::builder(dir.path().join("other"))
        .sink_toml("web", "type = \"http\"\nuri = \"ftp://x\"")
        .open()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sink web") && error.contains("http://"),
        "{error}"
    );
    let error = Ingestor::builder(dir.path().join("other"))
        .open()
        .unwrap_err()
        .to_string();
    assert!(error.contains("at least one sink"), "{error}");
}
