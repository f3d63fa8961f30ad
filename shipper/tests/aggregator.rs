//! A sidecar (file source → `http` sink, shipper protocol) and an
//! aggregator (`shipper` source → file sink) as real processes, while a
//! seeded loop SIGKILLs one or the other at random moments and the writer
//! rotates its log: at the end the aggregator's output holds every line
//! exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_exactly_once, file_sink, free_port, seen, unique, writer, Database, Guard, Proxy,
};

/// A port free right now on 127.0.0.1.
fn write(path: &Path, text: String) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

fn aggregator_config(dir: &Path, port: u16) -> PathBuf {
    aggregator_config_with(dir, port, &file_sink(dir, "sidecars"))
}

fn aggregator_config_with(dir: &Path, port: u16, sinks: &str) -> PathBuf {
    write(
        &dir.join("aggregator.toml"),
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
durability = "interval"
interval_ms = 20

[sources.sidecars]
type = "shipper"
address = "127.0.0.1:{port}"
token = "s3cret"

{sinks}"#,
            data = dir.join("aggregator-data").display(),
        ),
    )
}

fn sidecar_config(dir: &Path, port: u16) -> PathBuf {
    write(
        &dir.join("sidecar.toml"),
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
durability = "interval"
interval_ms = 20
segment_bytes = "1MiB"
# Chunks travel with a trained dictionary: the aggregator asks for it
# after every restart, and its sinks decode with it.
dictionary = {{ sample_records = 500 }}

[sources.app]
type = "file"
include = ["{logs}/app.log*"]
glob_interval_ms = 50
rotate_wait_ms = 500

[sinks.aggregator]
type = "http"
inputs = ["app"]
uri = "http://127.0.0.1:{port}/v1/chunks"
protocol = "shipper"
auth = {{ strategy = "bearer", token = "s3cret" }}
timeout_ms = 2000
"#,
            data = dir.join("sidecar-data").display(),
            logs = dir.join("logs").display(),
        ),
    )
}

/// A sidecar and an aggregator, each a `shipper run` process.
struct Pair {
    sidecar: PathBuf,
    aggregator: PathBuf,
    running: [Option<Guard>; 2],
}

impl Pair {
    fn start(sidecar: PathBuf, aggregator: PathBuf) -> Pair {
        let running = [
            Some(Guard::start(&sidecar)),
            Some(Guard::start(&aggregator)),
        ];
        Pair {
            sidecar,
            aggregator,
            running,
        }
    }

    /// Ten rounds: after a pseudo-random while (fixed by `seed`, so a
    /// failure replays) SIGKILL the sidecar or the aggregator, leave it down
    /// for a moment, start it again. With a `proxy`, the backend behind it
    /// is cut off from round 3 to round 6.
    fn chaos(&mut self, seed: u64, proxy: Option<&Proxy>) {
        let mut x = seed;
        for round in 0..10 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let alive = 200 + (x >> 33) % 600;
            std::thread::sleep(Duration::from_millis(alive));
            match (round, proxy) {
                (3, Some(proxy)) => proxy.cut(),
                (6, Some(proxy)) => proxy.restore(),
                _ => {}
            }
            let which = ((x >> 17) & 1) as usize;
            self.running[which].take().unwrap().kill();
            let name = ["sidecar", "aggregator"][which];
            eprintln!("round {round}: killed the {name} after {alive} ms");
            // Down for a moment: the other side keeps going (or retrying).
            std::thread::sleep(Duration::from_millis((x >> 40) % 300));
            let config = [&self.sidecar, &self.aggregator][which];
            self.running[which] = Some(Guard::start(config));
        }
        if let Some(proxy) = proxy {
            proxy.restore();
        }
    }

    /// SIGTERM to both; each must exit 0.
    fn stop(mut self) {
        for running in &mut self.running {
            running.take().unwrap().terminate();
        }
    }
}

/// Writes `total` numbered lines into `dir/logs` (rotating every
/// `rotate_every`) while a sidecar ships them to an aggregator whose sinks
/// are `sinks` and `Pair::chaos` kills them; returns the pair, still
/// running, once the writer is done.
fn write_under_chaos(
    dir: &Path,
    sinks: &str,
    total: u64,
    rotate_every: u64,
    seed: u64,
    proxy: Option<&Proxy>,
) -> Pair {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let port = free_port();
    let aggregator = aggregator_config_with(dir, port, sinks);
    let sidecar = sidecar_config(dir, port);
    let done = Arc::new(AtomicBool::new(false));
    let writing = {
        let (dir, done) = (dir.to_owned(), done.clone());
        std::thread::spawn(move || writer(dir, total, rotate_every, done))
    };
    let mut pair = Pair::start(sidecar, aggregator);
    pair.chaos(seed, proxy);
    writing.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    pair
}

#[test]
fn sidecar_to_aggregator_is_exactly_once_under_random_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/records.ndjson");
    const TOTAL: u64 = 150_000;
    let pair = write_under_chaos(
        dir.path(),
        &file_sink(dir.path(), "sidecars"),
        TOTAL,
        50_000,
        0xa66e_6a7e,
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while (seen(&out).len() as u64) < TOTAL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    pair.stop();
    let dictionaries = |data: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join(data).join("dictionaries"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".zdict"))
            .collect();
        names.sort();
        names
    };
    let (received, trained) = (
        dictionaries("aggregator-data"),
        dictionaries("sidecar-data"),
    );
    // A restarted sidecar goes on with its stream's dictionary; only a kill
    // between storing a new one and naming it the stream's trains another.
    assert!(
        !trained.is_empty() && trained.len() <= 2,
        "the sidecar trains once: {trained:?}"
    );
    assert!(
        !received.is_empty() && received.iter().all(|name| trained.contains(name)),
        "the sidecar's dictionary reached the aggregator: {received:?}, the sidecar's: {trained:?}"
    );
    assert_exactly_once(&seen(&out), TOTAL);
}

#[test]
fn sidecar_to_aggregator_to_postgres_is_exactly_once_under_sigkills_and_an_outage() {
    let Some(mut db) = Database::connect() else {
        return;
    };
    let table = unique("agg_rows");
    let hwm = unique("agg_hwm");
    db.tables.extend([table.clone(), hwm.clone()]);
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    const TOTAL: u64 = 100_000;
    let sinks = format!(
        r#"[sinks.database]
type = "postgres"
inputs = ["sidecars"]
connection = "host=127.0.0.1 port={proxy} user=postgres dbname=test connect_timeout=2"
table = "{table}"
table_per_stream = false
hwm_table = "{hwm}"
timeout_ms = 3000
"#,
        proxy = proxy.port,
    );
    let pair = write_under_chaos(dir.path(), &sinks, TOTAL, 40_000, 0x9057_6e55, Some(&proxy));
    let deadline = Instant::now() + Duration::from_secs(120);
    while db.rows(&table) < TOTAL as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    pair.stop();
    let rows = db.rows(&table);
    let distinct = db.number(&format!(
        "SELECT count(DISTINCT (payload->>'seq')::int8) FROM {table}"
    ));
    let sum = db.number(&format!(
        "SELECT coalesce(sum((payload->>'seq')::int8), 0)::int8 FROM {table}"
    ));
    assert_eq!(distinct, TOTAL as i64, "every line arrived ({rows} rows)");
    assert_eq!(rows, TOTAL as i64, "and only once");
    assert_eq!(sum, (TOTAL * (TOTAL - 1) / 2) as i64, "with its content");
}

/// Every `seq` in the JetStream stream `stream`, or `None` to skip (no
/// server, and services not required).
fn nats_sequences(stream: &str, expected: u64) -> Vec<u64> {
    use async_nats::jetstream::consumer::pull;
    use futures_util::StreamExt;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
        let stream = js.get_stream(stream).await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut seqs = Vec::new();
        let mut messages = consumer
            .fetch()
            .max_messages(expected as usize + 10)
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .unwrap();
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            let record: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            seqs.push(record["seq"].as_u64().unwrap());
            if seqs.len() as u64 > expected + 5 {
                break;
            }
        }
        seqs
    })
}

fn nats_messages(stream: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
        match js.get_stream(stream).await {
            Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
            Err(_) => 0,
        }
    })
}

fn nats_delete(stream: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
        let _ = js.delete_stream(stream).await;
    });
}

#[test]
fn sidecar_to_aggregator_to_nats_is_exactly_once_under_sigkills_and_an_outage() {
    if let Err(error) = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:4222".parse().unwrap(),
        Duration::from_secs(2),
    ) {
        let reason = format!("NATS not reachable on 127.0.0.1:4222: {error}");
        shipper_tests::service_missing(&reason);
        return;
    }
    let subject = unique("agg");
    let stream = subject.clone();
    let proxy = Proxy::start("127.0.0.1:4222".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    const TOTAL: u64 = 60_000;
    let sinks = format!(
        r#"[sinks.jetstream]
type = "nats"
inputs = ["sidecars"]
url = "nats://127.0.0.1:{proxy}"
subject = "{subject}"
stream = "{stream}"
timeout_ms = 3000
"#,
        proxy = proxy.port,
    );
    let pair = write_under_chaos(dir.path(), &sinks, TOTAL, 25_000, 0x4a75_1234, Some(&proxy));
    let deadline = Instant::now() + Duration::from_secs(120);
    while nats_messages(&stream) < TOTAL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    pair.stop();
    let messages = nats_messages(&stream);
    let mut seqs = nats_sequences(&stream, TOTAL);
    nats_delete(&stream);
    seqs.sort_unstable();
    let len = seqs.len();
    seqs.dedup();
    assert_eq!(
        seqs.len() as u64,
        TOTAL,
        "every line arrived ({messages} messages)"
    );
    assert_eq!(len as u64, TOTAL, "and only once");
    assert_eq!(messages, TOTAL);
}

#[test]
fn an_outage_fills_the_budget_then_everything_drains_and_the_disk_empties() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin = free_port();
    const COUNT: u64 = 300_000;
    let sidecar = write(
        &dir.path().join("sidecar.toml"),
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:{admin}"

[log]
segment_bytes = "1MiB"
max_bytes = "6MiB"
when_full = "block"

[sources.gen]
type = "generator"
format = "events"
count = {COUNT}

[sinks.aggregator]
type = "http"
inputs = ["gen"]
uri = "http://127.0.0.1:{port}/v1/chunks"
protocol = "shipper"
auth = {{ strategy = "bearer", token = "s3cret" }}
timeout_ms = 2000
"#,
            data = dir.path().join("sidecar-data").display(),
        ),
    );
    let aggregator = aggregator_config(dir.path(), port);
    let out = dir.path().join("out/records.ndjson");

    // The aggregator is down: the sidecar fills its budget and waits.
    let running_sidecar = Guard::start(&sidecar);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = shipper_tests::http(admin, "GET", "/health", &[], b"")
            .map(|(_, body)| body)
            .unwrap_or_default();
        if health.contains("disk budget reached") {
            break;
        }
        assert!(Instant::now() < deadline, "never full: {health}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = inspect(&dir.path().join("sidecar-data"));
    let disk: u64 = report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert!(disk <= 6 << 20, "within the budget: {disk} bytes");
    assert!(report["cursors"][0]["lag_records"].as_u64().unwrap() > 0);

    // It comes back: everything drains, and the sidecar, its generator
    // done, ends by itself with nothing left on its disk.
    let running_aggregator = Guard::start(&aggregator);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (seen(&out).len() as u64) < COUNT && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    running_sidecar.wait_for_exit(Duration::from_secs(60));
    running_aggregator.terminate();
    let counts = seen(&out);
    assert_eq!(counts.len() as u64, COUNT, "every record arrived");
    assert!(counts.values().all(|&n| n == 1), "once");
    let report = inspect(&dir.path().join("sidecar-data"));
    assert_eq!(report["cursors"][0]["lag_records"], 0, "{report:#}");
    assert_eq!(
        report["segments"].as_array().unwrap().len(),
        1,
        "only the active segment is left: {report:#}"
    );
}

fn inspect(dir: &Path) -> serde_json::Value {
    let output = std::process::Command::new(common::SHIPPER)
        .args(["inspect", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

/// POSTs `body` to a shipper source on `port` (token `s3cret`) until it
/// listens; returns the status and the answer.
fn post_chunks(port: u16, producer: &str, body: &[u8]) -> (u16, String) {
    let headers = [
        ("Content-Type", "application/vnd.shipper.chunks"),
        ("Shipper-Protocol", "1"),
        ("Shipper-Producer", producer),
        ("Authorization", "Bearer s3cret"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match shipper_tests::http(port, "POST", "/v1/chunks", &headers, body) {
            Ok(answer) => return answer,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the shipper source never answered: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A chunk whose body passes the aggregator's frame check (`verify =
/// "frame"`, the default) but cannot be decoded — a peer damaged it on
/// purpose, CRC intact: the aggregator's file sink puts it in quarantine
/// and delivers the chunks around it; nothing stalls, nothing else is lost.
#[test]
fn a_chunk_no_sink_can_decode_goes_to_quarantine_and_the_rest_is_delivered() {
    use shipper_core::chunk::{lying_body_for_test, ChunkBuilder, ChunkOptions, ChunkView};
    use shipper_core::log::{Log, LogOptions, StoredChunk};

    let dir = tempfile::tempdir().unwrap();
    let sender = Log::open(dir.path().join("sender"), LogOptions::default()).unwrap();
    for c in 0..3u64 {
        let mut builder = ChunkBuilder::new("app", "files", ChunkOptions::default()).unwrap();
        for i in 0..50 {
            let seq = c * 50 + i;
            let line = format!(r#"{{"seq":{seq},"msg":"line number {seq}"}}"#);
            builder.push(line.as_bytes(), 1, None).unwrap();
        }
        let chunk = builder.finish().unwrap().unwrap();
        sender.append(chunk).unwrap().wait_durable().unwrap();
    }
    let chunks: Vec<StoredChunk> = sender.reader(0).map(Result::unwrap).collect();
    let lying = lying_body_for_test(chunks[1].frame());
    let mut body = chunks[0].frame().to_vec();
    body.extend_from_slice(&lying);
    body.extend_from_slice(chunks[2].frame());

    let port = free_port();
    let aggregator = Guard::start(&aggregator_config(dir.path(), port));
    let (status, answer) = post_chunks(port, &sender.producer_id().to_string(), &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""high_water":150"#), "{answer}");

    let out = dir.path().join("out/records.ndjson");
    let quarantine = dir.path().join("aggregator-data/quarantine/out.chunks");
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen(&out).len() < 100 || !quarantine.exists() {
        assert!(
            Instant::now() < deadline,
            "delivered {:?}",
            seen(&out).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = aggregator.terminate();
    let counts = seen(&out);
    let expected: Vec<u64> = (0..50).chain(100..150).collect();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), expected);
    assert!(counts.values().all(|&n| n == 1), "once");
    // The quarantine holds the chunk as the aggregator stored it: its
    // records' range and the very body that was sent.
    let held = std::fs::read(&quarantine).unwrap();
    let view = ChunkView::parse(&held).unwrap();
    assert_eq!(view.frame().len(), held.len(), "one chunk");
    assert_eq!(view.record_count(), 50);
    assert_eq!(view.body(), ChunkView::parse(&lying).unwrap().body());
    assert!(
        stderr.contains("cannot decode is in quarantine"),
        "{stderr}"
    );
}
