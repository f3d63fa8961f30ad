//! End to end: real `shipper run` processes on a file of JSON access-log
//! lines, as deployed.
//!
//! 1. **file → http (ndjson, zstd 1) → receiver**: a sidecar tails the file
//!    and POSTs NDJSON to a receiver inside this process, which decompresses
//!    every body and counts its lines (the Fluent Bit comparison workload).
//! 2. **sidecar → aggregator**: the same sidecar with `protocol = "shipper"`
//!    to a second `shipper run` whose `shipper` source feeds a blackhole.
//! 3. **file → blackhole**: one process, for reference.
//! 4. **file → PostgreSQL** (when the local server answers).
//! 5. **sidecar → aggregator over mutual TLS** with a bearer token: 2 with
//!    certificates made by the bench, for the cost of TLS beside it.
//!
//! Each scenario is timed from spawning the (last) process until every
//! record has arrived (counted by the receiver, or by the blackhole's
//! `shipper_component_sent_records_total` on `/metrics`). For every process it
//! reports CPU (user + system from `/proc/PID/stat`, read just before
//! SIGTERM) per GB and per line, and its peak RSS (`VmHWM`) next to
//! `RssAnon` and `RssFile` at the end: the log's mapped segments count in
//! RSS although they are file pages the kernel can reclaim. The
//! compression ratio on the wire is raw bytes over request body bytes. The
//! receiver's CPU is this process's CPU over the scenario, labelled so.
//!
//! A `/metrics` scrape is not free for the process polled (each sink's lag
//! opens a log reader at its cursor, which CRC-checks every chunk from the
//! start of the cursor's segment), so completion is polled rarely while far
//! from the end and often near it, and the table shows, per polled process,
//! how many scrapes it served and what one costs it after the run.
//!
//! The same-run baseline is zstd level 1 on one thread over the same file
//! in 256 KiB pieces with one reused context: the one cost no pipeline of
//! this shape can avoid. MB = 10^6 bytes of record payload (newlines not
//! counted), for shipper and the baseline alike.
//!
//! `cargo bench -p shipper --bench e2e` (2,000,000 lines of 230 bytes;
//! `SHIPPER_E2E_RECORDS` changes the count). Without `--bench` (`cargo test
//! --benches`) it runs 20,000 lines. Prints a table and writes
//! `target/shipper-e2e.json` (`target/shipper-e2e-quick.json` without
//! `--bench`).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use shipper::harness::{baseline, free_port, sample, Process};
use shipper::procstat::{usage, Usage};
use shipper_core::corpus::{Corpus, CorpusKind};

const SHIPPER: &str = env!("CARGO_BIN_EXE_shipper");
const SEED: u64 = 0x5eed_0e2e;
const RECORD_BYTES: usize = 230;
const FULL_RECORDS: u64 = 2_000_000;
const QUICK_RECORDS: u64 = 20_000;
/// How long a scenario may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(600);
/// Scrapes timed after a run to measure what one costs.
const SCRAPES_TIMED: u32 = 50;

/// An http sink's requests and their mean latency, from its process's
/// `/metrics`.
fn http_sink_requests(metrics: &str, sink: &str) -> (Option<u64>, Option<f64>) {
    let requests = sample(metrics, "shipper_http_requests_total", sink);
    let sum = sample(metrics, "shipper_component_request_seconds_sum", sink);
    let count = sample(metrics, "shipper_component_request_seconds_count", sink);
    let mean = sum
        .zip(count)
        .filter(|&(_, count)| count > 0.0)
        .map(|(sum, count)| sum / count);
    (requests.map(|r| r as u64), mean)
}

/// Starts `shipper run` as `label` (data in `DIR/LABEL-data`, admin on a
/// free port, `interval` durability, then `pipeline`).
fn start(dir: &Path, label: &str, pipeline: &str) -> Process {
    let admin = free_port().expect("a free port");
    let config = format!(
        "data_dir = \"{data}\"\n{admin_section}\n[log]\ndurability = \"interval\"\n\n{pipeline}",
        data = dir.join(format!("{label}-data")).display(),
        admin_section = Process::admin_section(admin),
    );
    Process::start(Path::new(SHIPPER), dir, label, &config, admin)
        .unwrap_or_else(|e| panic!("{label}: {e}"))
}

/// Panics, with its log, if `process` has exited.
fn check_running(process: &mut Process) {
    process.check_running().unwrap_or_else(|e| panic!("{e}"));
}

/// Polls `process` until its `name{component_id=component}` reaches `target`.
fn wait_for(process: &mut Process, name: &str, component: &str, target: u64) -> Instant {
    process
        .wait_for(name, component, target, DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// SIGTERM; the run must exit 0. Returns its log.
fn stop(process: Process) -> String {
    process.stop().unwrap_or_else(|e| panic!("{e}"))
}

/// The lines of a log worth showing: warnings, errors and the run summary.
fn notable(label: &str, log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            line.contains("WARN") || line.contains("ERROR") || line.contains("run summary")
        })
        .map(|line| format!("{label}: {line}"))
        .collect()
}

/// The receiver of scenario 1's NDJSON requests.
#[derive(Debug, Default)]
struct Receiver {
    expected: u64,
    lines: AtomicU64,
    raw_bytes: AtomicU64,
    wire_bytes: AtomicU64,
    requests: AtomicU64,
    /// When the last expected line arrived, and why a request was refused.
    state: Mutex<ReceiverState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ReceiverState {
    done: Option<Instant>,
    errors: Vec<String>,
}

impl Receiver {
    fn refuse(&self, status: StatusCode, why: String) -> StatusCode {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.errors.push(why);
        self.changed.notify_all();
        status
    }
}

async fn ingest(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let encoding = headers.get(header::CONTENT_ENCODING);
    if encoding.is_none_or(|value| value != "zstd") {
        return receiver.refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding:?}, expected zstd"),
        );
    }
    let mut decoder = match zstd::stream::read::Decoder::with_buffer(&body[..]) {
        Ok(decoder) => decoder,
        Err(e) => return receiver.refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut buffer = vec![0u8; 256 << 10];
    let (mut lines, mut raw) = (0u64, 0u64);
    loop {
        match decoder.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                raw += n as u64;
                lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
            Err(e) => {
                return receiver.refuse(StatusCode::BAD_REQUEST, format!("bad zstd body: {e}"))
            }
        }
    }
    receiver.requests.fetch_add(1, Ordering::Relaxed);
    receiver.raw_bytes.fetch_add(raw, Ordering::Relaxed);
    receiver
        .wire_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let total = receiver.lines.fetch_add(lines, Ordering::AcqRel) + lines;
    if total >= receiver.expected {
        let mut state = receiver
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.done.get_or_insert_with(Instant::now);
        receiver.changed.notify_all();
    }
    StatusCode::OK
}

/// One process's share of a scenario.
#[derive(Debug)]
struct ProcessResult {
    label: &'static str,
    /// A shipper process (counted in the scenario's shipper CPU), or the
    /// bench process.
    shipper: bool,
    usage: Usage,
    /// `/metrics` scrapes during the run, and what one costs the process
    /// at the end of it (CPU seconds), for a process polled for completion.
    scrapes: u32,
    scrape_cost: Option<f64>,
}

impl ProcessResult {
    fn new(label: &'static str, shipper: bool, usage: Usage) -> Self {
        ProcessResult {
            label,
            shipper,
            usage,
            scrapes: 0,
            scrape_cost: None,
        }
    }

    fn polled(label: &'static str, process: &Process, usage: Usage) -> Self {
        ProcessResult {
            scrapes: process.scrapes(),
            scrape_cost: Some(process.scrape_cost(SCRAPES_TIMED)),
            ..ProcessResult::new(label, true, usage)
        }
    }
}

#[derive(Debug)]
struct ScenarioResult {
    key: &'static str,
    name: &'static str,
    seconds: f64,
    /// Raw bytes over request body bytes, where records cross a wire.
    wire_ratio: Option<f64>,
    /// The sidecar's http sink: requests, and their mean time from sending
    /// to having read the answer.
    requests: Option<u64>,
    mean_request_seconds: Option<f64>,
    processes: Vec<ProcessResult>,
    notes: Vec<String>,
}

impl ScenarioResult {
    fn shipper_cpu_seconds(&self) -> f64 {
        self.processes
            .iter()
            .filter(|p| p.shipper)
            .map(|p| p.usage.cpu_seconds)
            .sum()
    }
}

/// The input file and what it holds.
#[derive(Debug)]
struct Input {
    path: PathBuf,
    records: u64,
    /// Record bytes, newlines not counted.
    payload_bytes: u64,
}

fn write_input(dir: &Path, records: u64) -> Input {
    let path = dir.join("app.log");
    let file = File::create(&path).expect("creating the input file");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut corpus = Corpus::new(CorpusKind::AccessLog, SEED).with_record_bytes(RECORD_BYTES);
    let mut record = Vec::with_capacity(RECORD_BYTES * 2);
    let mut payload_bytes = 0;
    for _ in 0..records {
        record.clear();
        corpus.next_into(&mut record);
        payload_bytes += record.len() as u64;
        record.push(b'\n');
        out.write_all(&record).expect("writing the input file");
    }
    let file = out.into_inner().expect("flushing the input file");
    // Written back now, not while a scenario runs.
    file.sync_all().expect("syncing the input file");
    Input {
        path,
        records,
        payload_bytes,
    }
}

#[derive(Debug)]
struct Baseline {
    /// Seconds of each run.
    runs: Vec<f64>,
    ratio: f64,
}

impl Baseline {
    fn median_seconds(&self) -> f64 {
        let mut runs = self.runs.clone();
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    }
}

/// zstd level 1, one thread, one reused context, over `input` in 256 KiB
/// pieces (the harness's zstd baseline), `times` times.
fn zstd_baseline(input: &Input, times: usize, baseline: &mut Baseline) {
    let bytes = std::fs::read(&input.path).expect("reading the input file");
    for _ in 0..times {
        let zstd = baseline::zstd(&bytes, 1).expect("compressing");
        baseline.runs.push(bytes.len() as f64 / zstd.rate);
        baseline.ratio = zstd.ratio;
    }
}

fn file_source(input: &Input) -> String {
    format!(
        r#"[sources.app]
type = "file"
include = ["{}"]
"#,
        input.path.display()
    )
}

/// Scenario 1: file → http (ndjson, zstd 1) → a receiver in this process.
fn file_to_http_receiver(dir: &Path, input: &Input) -> ScenarioResult {
    let receiver = Arc::new(Receiver {
        expected: input.records,
        ..Receiver::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binding the receiver");
    let port = listener.local_addr().expect("receiver address").port();
    let router = Router::new()
        .route("/ingest", post(ingest))
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });

    // The peak RSS of this process from here on, not the baseline's buffer.
    shipper::procstat::reset_peak();
    let bench_before = usage("self");
    let started = Instant::now();
    let mut sidecar = start(
        dir,
        "s1-sidecar",
        &format!(
            r#"{source}
[sinks.out]
type = "http"
inputs = ["app"]
uri = "http://127.0.0.1:{port}/ingest"
protocol = "ndjson"
compression = {{ codec = "zstd", level = 1 }}
"#,
            source = file_source(input)
        ),
    );
    let deadline = started + DEADLINE;
    let done = {
        let mut state = receiver
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            assert!(
                state.errors.is_empty(),
                "the receiver refused requests: {:?}\n{}",
                state.errors,
                sidecar.log()
            );
            if let Some(done) = state.done {
                break done;
            }
            drop(state);
            check_running(&mut sidecar);
            assert!(
                Instant::now() < deadline,
                "the receiver counted {} of {} lines after {DEADLINE:?}:\n{}",
                receiver.lines.load(Ordering::Acquire),
                input.records,
                sidecar.log()
            );
            state = receiver
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state = receiver
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    };
    let sidecar_usage = sidecar.usage();
    let bench_after = usage("self");
    let sidecar_metrics = sidecar.metrics().unwrap_or_default();
    let log = stop(sidecar);
    runtime.shutdown_timeout(Duration::from_secs(5));

    let lines = receiver.lines.load(Ordering::Acquire);
    assert_eq!(lines, input.records, "lines counted by the receiver");
    let raw = receiver.raw_bytes.load(Ordering::Acquire);
    assert_eq!(
        raw,
        input.payload_bytes + input.records,
        "bytes decompressed by the receiver"
    );
    let wire = receiver.wire_bytes.load(Ordering::Acquire);
    let requests = receiver.requests.load(Ordering::Acquire);
    let (_, mean_request_seconds) = http_sink_requests(&sidecar_metrics, "out");
    ScenarioResult {
        key: "file_http_receiver",
        name: "1 file → http ndjson zstd-1 → receiver",
        seconds: (done - started).as_secs_f64(),
        wire_ratio: Some(raw as f64 / wire as f64),
        requests: Some(requests),
        mean_request_seconds,
        processes: vec![
            ProcessResult::new("sidecar", true, sidecar_usage),
            ProcessResult::new(
                "receiver (bench process)",
                false,
                Usage {
                    cpu_seconds: bench_after.cpu_seconds - bench_before.cpu_seconds,
                    ..bench_after
                },
            ),
        ],
        notes: notable("sidecar", &log),
    }
}

/// Scenario 2: a sidecar sends stored chunks to an aggregator's `shipper`
/// source, which feeds a blackhole.
/// Scenario 2 (and 5, `tls`: the same over mutual TLS, with a bearer
/// token, certificates made here).
fn sidecar_to_aggregator(dir: &Path, input: &Input, tls: bool) -> ScenarioResult {
    let source_port = free_port().expect("a free port");
    let (label, (listener, client, scheme)) = if tls {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).expect("a pki directory");
        let ca = shipper_tests::pki::Ca::new(&pki, "ca");
        let (server, sidecar) = (ca.server(&pki, "aggregator"), ca.client(&pki, "sidecar"));
        (
            "s5",
            (
                format!(
                    "tls = {{ crt_file = {:?}, key_file = {:?}, ca_file = {:?}, verify_client = true }}\nauth = {{ strategy = \"bearer\", token = \"e2e-token\" }}\n",
                    server.crt, server.key, ca.crt
                ),
                format!(
                    "tls = {{ ca_file = {:?}, crt_file = {:?}, key_file = {:?} }}\nauth = {{ strategy = \"bearer\", token = \"e2e-token\" }}\n",
                    ca.crt, sidecar.crt, sidecar.key
                ),
                "https://localhost",
            ),
        )
    } else {
        ("s2", (String::new(), String::new(), "http://127.0.0.1"))
    };
    let mut aggregator = start(
        dir,
        &format!("{label}-aggregator"),
        &format!(
            r#"[sources.sidecars]
type = "shipper"
address = "127.0.0.1:{source_port}"
{listener}
[sinks.void]
type = "blackhole"
inputs = ["sidecars"]
"#
        ),
    );
    aggregator
        .wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    // `/health` can answer before the source listens: wait for that too,
    // so the sidecar's first request does not meet a refused connection.
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", source_port)).is_err() {
        check_running(&mut aggregator);
        assert!(
            Instant::now() < deadline,
            "the shipper source never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let mut sidecar = start(
        dir,
        &format!("{label}-sidecar"),
        &format!(
            r#"{source}
[sinks.out]
type = "http"
inputs = ["app"]
uri = "{scheme}:{source_port}/v1/chunks"
protocol = "shipper"
{client}"#,
            source = file_source(input)
        ),
    );
    let done = wait_for(
        &mut aggregator,
        "shipper_component_sent_records_total",
        "void",
        input.records,
    );
    let sidecar_usage = sidecar.usage();
    let aggregator_usage = aggregator.usage();
    check_running(&mut sidecar);
    let sidecar_metrics = sidecar.metrics().unwrap_or_default();
    let aggregator_metrics = aggregator.metrics().unwrap_or_default();
    let aggregator_result = ProcessResult::polled("aggregator", &aggregator, aggregator_usage);
    let sidecar_log = stop(sidecar);
    let aggregator_log = stop(aggregator);

    let out = sample(
        &aggregator_metrics,
        "shipper_component_sent_records_total",
        "void",
    )
    .unwrap_or(0.0) as u64;
    assert_eq!(out, input.records, "records out of the aggregator");
    let body = sample(
        &sidecar_metrics,
        "shipper_http_request_body_bytes_total",
        "out",
    );
    let raw = sample(
        &sidecar_metrics,
        "shipper_http_request_uncompressed_bytes_total",
        "out",
    );
    let (requests, mean_request_seconds) = http_sink_requests(&sidecar_metrics, "out");
    let mut notes = notable("sidecar", &sidecar_log);
    notes.extend(notable("aggregator", &aggregator_log));
    if let Some(flushes) = sample(&aggregator_metrics, "shipper_log_flushes_total", "") {
        notes.push(format!(
            "aggregator: {flushes} log flushes for {} requests",
            requests.unwrap_or(0)
        ));
    }
    ScenarioResult {
        key: if tls {
            "sidecar_aggregator_tls"
        } else {
            "sidecar_aggregator"
        },
        name: if tls {
            "5 sidecar → aggregator over mutual TLS + token → blackhole"
        } else {
            "2 sidecar → aggregator (shipper protocol) → blackhole"
        },
        seconds: (done - started).as_secs_f64(),
        wire_ratio: raw.zip(body).map(|(raw, body)| raw / body),
        requests,
        mean_request_seconds,
        processes: vec![
            ProcessResult::new("sidecar", true, sidecar_usage),
            aggregator_result,
        ],
        notes,
    }
}

/// Scenario 3: file → blackhole in one process.
fn file_to_blackhole(dir: &Path, input: &Input) -> ScenarioResult {
    let started = Instant::now();
    let mut shipper = start(
        dir,
        "s3-shipper",
        &format!(
            r#"{source}
[sinks.void]
type = "blackhole"
inputs = ["app"]
"#,
            source = file_source(input)
        ),
    );
    let done = wait_for(
        &mut shipper,
        "shipper_component_sent_records_total",
        "void",
        input.records,
    );
    let shipper_usage = shipper.usage();
    let result = ProcessResult::polled("shipper", &shipper, shipper_usage);
    let log = stop(shipper);
    ScenarioResult {
        key: "file_blackhole",
        name: "3 file → blackhole",
        seconds: (done - started).as_secs_f64(),
        wire_ratio: None,
        requests: None,
        mean_request_seconds: None,
        processes: vec![result],
        notes: notable("shipper", &log),
    }
}

/// Scenario 4: file → log → `postgres` sink (binary COPY, exactly once),
/// into the local PostgreSQL; `None` when it cannot be reached.
fn file_to_postgres(dir: &Path, input: &Input) -> Option<ScenarioResult> {
    const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let client = match runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(
            &format!("{SERVER} connect_timeout=3"),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    }) {
        Ok(client) => client,
        Err(error) => {
            eprintln!(
                "e2e: scenario 4 skipped: PostgreSQL not reachable on 127.0.0.1:5432: {error}"
            );
            return None;
        }
    };
    let table = format!("shipper_e2e_{}", std::process::id());
    let hwm = format!("{table}_hwm");
    let drop_tables = |client: &tokio_postgres::Client| {
        let sql = format!("DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {hwm}");
        let _ = runtime.block_on(client.batch_execute(&sql));
    };
    drop_tables(&client);
    let started = Instant::now();
    let mut shipper = start(
        dir,
        "s4-shipper",
        &format!(
            r#"{source}
[sinks.db]
type = "postgres"
inputs = ["app"]
connection = "{SERVER}"
table = "{table}"
table_per_stream = false
hwm_table = "{hwm}"
"#,
            source = file_source(input)
        ),
    );
    let done = wait_for(
        &mut shipper,
        "shipper_component_sent_records_total",
        "db",
        input.records,
    );
    let shipper_usage = shipper.usage();
    let result = ProcessResult::polled("shipper", &shipper, shipper_usage);
    let log = stop(shipper);
    let rows: i64 = runtime
        .block_on(client.query_one(&format!("SELECT count(*) FROM {table}"), &[]))
        .map(|row| row.get(0))
        .unwrap_or(-1);
    drop_tables(&client);
    let mut notes = notable("shipper", &log);
    notes.push(format!(
        "postgres: {rows} rows in the table (expected {})",
        input.records
    ));
    Some(ScenarioResult {
        key: "file_postgres",
        name: "4 file → log → PostgreSQL (COPY, exactly once)",
        seconds: (done - started).as_secs_f64(),
        wire_ratio: None,
        requests: None,
        mean_request_seconds: None,
        processes: vec![result],
        notes,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn check(ok: bool) -> &'static str {
    if ok {
        "✔"
    } else {
        "✘"
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let records = std::env::var("SHIPPER_E2E_RECORDS")
        .ok()
        .map(|v| v.parse::<u64>().expect("SHIPPER_E2E_RECORDS: a count"))
        .unwrap_or(if quick { QUICK_RECORDS } else { FULL_RECORDS });
    let dir = tempfile::tempdir().expect("a temp dir");

    let started = Instant::now();
    let input = write_input(dir.path(), records);
    let file_bytes = std::fs::metadata(&input.path).map_or(0, |m| m.len());
    eprintln!(
        "e2e: {} lines, {:.1} MB of payload ({file_bytes} bytes in {}), written in {:.1} s; shipper binary {SHIPPER}",
        input.records,
        input.payload_bytes as f64 / 1e6,
        input.path.display(),
        started.elapsed().as_secs_f64()
    );

    let mut baseline = Baseline {
        runs: Vec::new(),
        ratio: 0.0,
    };
    zstd_baseline(&input, 3, &mut baseline);
    // SHIPPER_E2E_SCENARIOS=2,3 runs only those (all by default).
    let selected = std::env::var("SHIPPER_E2E_SCENARIOS").ok();
    let wanted = |n: char| selected.as_deref().is_none_or(|list| list.contains(n));
    let mut scenarios = Vec::new();
    if wanted('1') {
        scenarios.push(file_to_http_receiver(dir.path(), &input));
    }
    if wanted('2') {
        scenarios.push(sidecar_to_aggregator(dir.path(), &input, false));
    }
    if wanted('5') {
        scenarios.push(sidecar_to_aggregator(dir.path(), &input, true));
    }
    if wanted('3') {
        scenarios.push(file_to_blackhole(dir.path(), &input));
    }
    if wanted('4') {
        scenarios.extend(file_to_postgres(dir.path(), &input));
    }
    // Again after the scenarios: the machine's load may have moved.
    zstd_baseline(&input, 3, &mut baseline);

    let payload = input.payload_bytes as f64;
    let lines = input.records as f64;
    let baseline_seconds = baseline.median_seconds();
    let baseline_mbps = payload / baseline_seconds / 1e6;
    let spread = |pick: fn(f64, f64) -> f64| {
        baseline
            .runs
            .iter()
            .map(|s| payload / s / 1e6)
            .fold(None, |acc: Option<f64>, x| {
                Some(acc.map_or(x, |a| pick(a, x)))
            })
            .unwrap_or(0.0)
    };

    println!();
    println!(
        "shipper end to end: {} JSON access-log lines of {RECORD_BYTES} B ({:.1} MB payload){}",
        input.records,
        payload / 1e6,
        if quick {
            " — quick run, not a measurement"
        } else {
            ""
        }
    );
    println!(
        "baseline: zstd level 1, one thread, 256 KiB pieces: {baseline_mbps:.0} MB/s (median of {}; {:.0}-{:.0}), ratio {:.2}",
        baseline.runs.len(),
        spread(f64::min),
        spread(f64::max),
        baseline.ratio
    );
    println!();
    println!(
        "| scenario | time | records/s | MB/s | ÷ zstd-1 | wire ratio | requests | mean request | shipper CPU µs/line |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &scenarios {
        println!(
            "| {} | {:.2} s | {:.2} M | {:.0} | {:.2} | {} | {} | {} | {:.2} |",
            s.name,
            s.seconds,
            lines / s.seconds / 1e6,
            payload / s.seconds / 1e6,
            baseline_seconds / s.seconds,
            s.wire_ratio.map_or("—".to_owned(), |r| format!("{r:.2}")),
            s.requests.map_or("—".to_owned(), |r| r.to_string()),
            s.mean_request_seconds
                .map_or("—".to_owned(), |m| format!("{:.1} ms", m * 1e3)),
            s.shipper_cpu_seconds() * 1e6 / lines,
        );
    }
    println!();
    println!(
        "| scenario | process | CPU s | CPU s/GB | CPU µs/line | peak RSS (VmHWM) | VmRSS | RssAnon | RssFile | /metrics scrapes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &scenarios {
        for p in &s.processes {
            let u = &p.usage;
            let scrapes = match p.scrape_cost {
                Some(cost) => format!("{} × {:.2} ms CPU", p.scrapes, cost * 1e3),
                None => "—".to_owned(),
            };
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {scrapes} |",
                s.key,
                p.label,
                u.cpu_seconds,
                u.cpu_seconds / (payload / 1e9),
                u.cpu_seconds * 1e6 / lines,
                mib(u.vm_hwm),
                mib(u.vm_rss),
                mib(u.rss_anon),
                mib(u.rss_file),
            );
        }
    }

    // Issue 4's targets, against Fluent Bit 5.1 on the scenario-1 workload,
    // measured on the development machine while this baseline ran at
    // 677 MB/s: ~150 MB/s and ~2 µs CPU per line. The machine is shared and
    // its speed moves (the baseline has ranged 280-680 MB/s), so the targets
    // (3× the throughput, half the CPU per line) scale with this run's
    // baseline.
    const BASELINE_WHEN_MEASURED: f64 = 677.0;
    let speed = baseline_mbps / BASELINE_WHEN_MEASURED;
    let find = |key: &str| scenarios.iter().find(|s| s.key == key);
    println!();
    println!(
        "issue 4 targets (Fluent Bit 5.1: ~150 MB/s, ~2 µs CPU/line, 309 MB peak RSS, with zstd-1 at {BASELINE_WHEN_MEASURED} MB/s; this run's zstd-1: {baseline_mbps:.0} MB/s, so × {speed:.2}):"
    );
    if let Some(one) = find("file_http_receiver") {
        let one_mbps = payload / one.seconds / 1e6;
        let one_cpu_line = one.shipper_cpu_seconds() * 1e6 / lines;
        let one_hwm = one.processes[0].usage.vm_hwm;
        let (want_mbps, want_cpu) = (450.0 * speed, 1.0 / speed);
        println!(
            "  scenario 1 throughput ≥ 3× Fluent Bit ({want_mbps:.0} MB/s): {one_mbps:.0} MB/s {}",
            check(one_mbps >= want_mbps)
        );
        println!(
            "  scenario 1 sidecar CPU ≤ ½ Fluent Bit's ({want_cpu:.2} µs/line): {one_cpu_line:.2} µs {}",
            check(one_cpu_line <= want_cpu)
        );
        println!(
            "  scenario 1 sidecar peak RSS < 64 MiB: {} (RssAnon at the end {}) {}",
            mib(one_hwm),
            mib(one.processes[0].usage.rss_anon),
            check(one_hwm < 64 << 20)
        );
    }
    if let Some(two) = find("sidecar_aggregator") {
        let two_ratio = baseline_seconds / two.seconds;
        println!(
            "  scenario 2 ≥ 0.70 of zstd-1: {two_ratio:.2} {}",
            check(two_ratio >= 0.70)
        );
    }
    let notes: Vec<&String> = scenarios.iter().flat_map(|s| &s.notes).collect();
    if !notes.is_empty() {
        println!();
        println!("from the processes' logs:");
        for note in notes {
            println!("  {note}");
        }
    }

    let report = json!({
        "quick": quick,
        "records": input.records,
        "record_bytes": RECORD_BYTES,
        "payload_bytes": input.payload_bytes,
        "file_bytes": file_bytes,
        "baseline": {
            "what": "zstd level 1, one thread, 256 KiB pieces, reused context",
            "mb_per_s": baseline_mbps,
            "runs_s": baseline.runs,
            "ratio": baseline.ratio,
        },
        "scenarios": scenarios.iter().map(|s| json!({
            "key": s.key,
            "name": s.name,
            "seconds": s.seconds,
            "records_per_s": lines / s.seconds,
            "mb_per_s": payload / s.seconds / 1e6,
            "vs_zstd1": baseline_seconds / s.seconds,
            "wire_ratio": s.wire_ratio,
            "requests": s.requests,
            "mean_request_s": s.mean_request_seconds,
            "shipper_cpu_us_per_line": s.shipper_cpu_seconds() * 1e6 / lines,
            "processes": s.processes.iter().map(|p| json!({
                "label": p.label,
                "shipper": p.shipper,
                "cpu_s": p.usage.cpu_seconds,
                "cpu_s_per_gb": p.usage.cpu_seconds / (payload / 1e9),
                "cpu_us_per_line": p.usage.cpu_seconds * 1e6 / lines,
                "vm_hwm_bytes": p.usage.vm_hwm,
                "vm_rss_bytes": p.usage.vm_rss,
                "rss_anon_bytes": p.usage.rss_anon,
                "rss_file_bytes": p.usage.rss_file,
                "metrics_scrapes": p.scrapes,
                "metrics_scrape_cpu_s": p.scrape_cost,
            })).collect::<Vec<_>>(),
            "log_notes": s.notes,
        })).collect::<Vec<_>>(),
    });
    // The shipper binary is TARGET/PROFILE/shipper.
    let target = Path::new(SHIPPER)
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target"));
    let path = target.join(if quick {
        "shipper-e2e-quick.json"
    } else {
        "shipper-e2e.json"
    });
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).expect("JSON") + "\n",
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!();
    println!("wrote {}", path.display());
}
