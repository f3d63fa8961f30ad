//! `shipper run`: a real process, records through stdin → log → file and
//! blackhole sinks, an orderly SIGTERM, a run that ends with its input, and
//! reloads (SIGHUP, `POST /reload`).

mod common;

use shipper::metrics::sample;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::http_request;

const SHIPPER: &str = env!("CARGO_BIN_EXE_shipper");

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
durability = "always"
segment_bytes = "1MiB"

[sources.in]
type = "stdin"

[sinks.out]
type = "file"
inputs = ["in"]
path = "{out}"

[sinks.void]
type = "blackhole"
inputs = ["in"]
{extra}"#,
        data = dir.join("data").display(),
        out = dir.join("out/records.ndjson").display(),
    );
    let path = dir.join("shipper.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Kills a `shipper run` child if the test fails before stopping it, so
/// no orphan keeps running (or keeps a port) after a failed assertion.
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
}

/// Starts `shipper run -c config` with `stdin`, stderr captured.
fn start(config: &Path, stdin: Stdio) -> (std::process::Child, KillOnPanic) {
    let child = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .env_remove("RUST_LOG")
        .stdin(stdin)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnPanic(child.id());
    (child, guard)
}

/// Sends `signal` (`TERM`, `HUP`) to the child.
fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM and waits: the run must drain and exit 0.
fn stop(child: std::process::Child) -> String {
    send_signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\n{stderr}",
        output.status
    );
    stderr
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
}

/// A child's stderr, read line by line on a thread, so a test can wait for
/// a line while the child runs.
struct Stderr {
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    reader: std::thread::JoinHandle<()>,
}

impl Stderr {
    fn take(child: &mut Child) -> Stderr {
        let pipe = child.stderr.take().unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let shared = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let (lines, arrived) = &*shared;
                lines.lock().unwrap().push(line);
                arrived.notify_all();
            }
        });
        Stderr { lines, reader }
    }

    /// Waits until `count` lines contain `needle`; returns the last of them.
    fn wait_for(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (lines, arrived) = &*self.lines;
        let mut lines = lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().filter(|l| l.contains(needle)).nth(count - 1) {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {count} lines with {needle:?} in\n{}",
                lines.join("\n")
            );
            lines = arrived.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Everything the child wrote, once it has exited.
    fn text(self) -> String {
        self.reader.join().unwrap();
        self.lines.0.lock().unwrap().join("\n")
    }
}

/// The admin endpoint's port, from the line the run logs once it listens.
fn admin_port(stderr: &Stderr) -> u16 {
    let line = stderr.wait_for("admin endpoint listening", 1);
    let address = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in {line}"));
    address.parse::<std::net::SocketAddr>().unwrap().port()
}

/// Waits for the child to exit on its own.
fn wait_for_exit(mut child: Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "shipper did not exit on its own");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_lines(path: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while line_count(path) < lines {
        assert!(
            Instant::now() < deadline,
            "{} got {} of {lines} lines",
            path.display(),
            line_count(path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stdin_to_file_then_sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let (mut child, _guard) = start(&config, Stdio::piped());
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"seq":{i},"msg":"event number {i}"}}"#))
        .collect();
    // Kept open: the run ends by SIGTERM here, not by the end of its input.
    let mut stdin = child.stdin.take().unwrap();
    for line in &lines {
        writeln!(stdin, "{line}").unwrap();
    }
    let out = dir.path().join("out/records.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    while line_count(&out) < lines.len() {
        assert!(
            Instant::now() < deadline,
            "the file sink got {} of {} lines",
            line_count(&out),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = stop(child);
    drop(stdin);
    assert!(stderr.contains("shipper stopped cleanly"), "{stderr}");

    let written = std::fs::read_to_string(&out).unwrap();
    let written: Vec<&str> = written.lines().collect();
    assert_eq!(
        written,
        lines.iter().map(String::as_str).collect::<Vec<_>>()
    );

    let report = Command::new(SHIPPER)
        .args(["inspect", "--json"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let cursors = report["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 2, "{report:#}");
    for cursor in cursors {
        assert_eq!(cursor["lag_records"], 0, "{report:#}");
    }
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["corruption"] == false));
}

#[test]
fn a_component_type_not_built_yet_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    // Every sink type is built now; the file sink's `json` encoding is not.
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[sinks.pg]
type = "file"
inputs = ["in"]
path = "{}"
encoding = "json"
"#,
            dir.path().join("out.json").display()
        ),
    );
    let output = Command::new(SHIPPER)
        .args(["run", "-c"])
        .stdout(Stdio::null())
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        // Refused with the config's own checks, as `validate` refuses it.
        stderr.contains("sinks.pg.encoding") && stderr.contains("is not available"),
        "{stderr}"
    );
}

#[test]
fn transforms_run_before_storage_and_each_sink_gets_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[sources.in]
type = "stdin"

[transforms.scrub]
type = "remap"
inputs = ["in"]
redact = ["password"]
add = {{ env = "test" }}

[transforms.errors]
type = "filter"
inputs = ["scrub"]
field = "status"
equals = 500

[sinks.raw]
type = "file"
inputs = ["in"]
path = "{raw}"

[sinks.clean]
type = "file"
inputs = ["scrub"]
path = "{clean}"

[sinks.alerts]
type = "file"
inputs = ["errors"]
path = "{alerts}"
compression = {{ codec = "zstd", level = 3 }}
"#,
        data = dir.path().join("data").display(),
        raw = dir.path().join("raw.ndjson").display(),
        clean = dir.path().join("clean.ndjson").display(),
        alerts = dir.path().join("alerts.ndjson.zst").display(),
    );
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, config).unwrap();
    let (mut child, _guard) = start(&config_path, Stdio::piped());
    let lines: Vec<String> = (0..3_000)
        .map(|i| {
            let status = if i % 10 == 0 { 500 } else { 200 };
            format!(r#"{{"seq":{i},"status":{status},"password":"hunter{i}"}}"#)
        })
        .collect();
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in &lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let clean = dir.path().join("clean.ndjson");
    let raw = dir.path().join("raw.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    while line_count(&clean) < lines.len() || line_count(&raw) < lines.len() {
        assert!(
            Instant::now() < deadline,
            "sinks got {} and {} lines",
            line_count(&raw),
            line_count(&clean)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(child);

    // The source's own version, untouched.
    let raw_text = std::fs::read_to_string(&raw).unwrap();
    assert_eq!(
        raw_text.lines().collect::<Vec<_>>(),
        lines.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // The remapped version: redacted, with the added field, in order.
    let clean_records: Vec<serde_json::Value> = std::fs::read_to_string(&clean)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(clean_records.len(), lines.len());
    for (i, record) in clean_records.iter().enumerate() {
        assert_eq!(record["seq"], i);
        assert_eq!(record["password"], "[REDACTED]");
        assert_eq!(record["env"], "test");
    }
    // The filter after the remap: only status 500, as zstd frames.
    let compressed = std::fs::read(dir.path().join("alerts.ndjson.zst")).unwrap();
    let alerts = zstd_decode(&compressed);
    let alerts: Vec<serde_json::Value> = alerts
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), lines.len() / 10);
    assert!(alerts
        .iter()
        .all(|a| a["status"] == 500 && a["password"] == "[REDACTED]"));
}

fn zstd_decode(bytes: &[u8]) -> String {
    // Concatenated zstd frames are one valid zstd stream.
    String::from_utf8(zstd::stream::decode_all(bytes).unwrap()).unwrap()
}

#[test]
fn tcp_socket_source_to_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[sources.net]
type = "socket"
mode = "tcp"
address = "127.0.0.1:{port}"

[sinks.out]
type = "file"
inputs = ["net"]
path = "{out}"
"#,
        data = dir.path().join("data").display(),
        out = dir.path().join("net.ndjson").display(),
    );
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, config).unwrap();
    let (child, _guard) = start(&config_path, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(error) => {
                assert!(Instant::now() < deadline, "shipper never listened: {error}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let lines: Vec<String> = (0..5_000).map(|i| format!("tcp line {i}")).collect();
    for line in &lines {
        writeln!(stream, "{line}").unwrap();
    }
    drop(stream);
    let out = dir.path().join("net.ndjson");
    while line_count(&out) < lines.len() {
        assert!(
            Instant::now() < deadline,
            "the file sink got {} lines",
            line_count(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(child);
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        written.lines().collect::<Vec<_>>(),
        lines.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path)
}

#[test]
fn the_admin_endpoint_reports_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, text).unwrap();
    let (mut child, _guard) = start(&config, Stdio::piped());
    // Kept open, or the run would end with its input.
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..1000 {
        writeln!(stdin, "{{\"n\":{i}}}").unwrap();
    }
    let out = dir.path().join("out/records.ndjson");
    let deadline = Instant::now() + Duration::from_secs(30);
    while line_count(&out) < 1000 {
        assert!(
            Instant::now() < deadline,
            "the file sink got {} lines",
            line_count(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = http_get(port, "/health");
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ready\"}"));
    // The lines are in the file before its delivery has returned (the
    // counters move after it), and the other sink may trail by a
    // delivery: wait for both.
    let metrics = loop {
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        let sent = |sink| {
            sample(
                &body,
                "shipper_component_sent_records_total",
                &[("component_id", sink)],
            )
        };
        if (sent("void") == Some(1000.0) && sent("out") == Some(1000.0))
            || Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let value = |name: &str, labels: &[(&str, &str)]| sample(&metrics, name, labels);
    for (name, component, expected) in [
        (
            "shipper_component_received_records_total",
            "in",
            Some(1000.0),
        ),
        ("shipper_component_sent_records_total", "out", Some(1000.0)),
        ("shipper_component_sent_records_total", "void", Some(1000.0)),
        ("shipper_component_lag_records", "out", Some(0.0)),
        ("shipper_component_errors_total", "out", Some(0.0)),
    ] {
        assert_eq!(
            value(name, &[("component_id", component)]),
            expected,
            "{name} of {component} in\n{metrics}"
        );
    }
    assert_eq!(
        value("shipper_log_appended_records_total", &[]),
        Some(1000.0)
    );
    for (name, component) in [
        ("shipper_component_deliver_seconds_count", "out"),
        ("shipper_component_sent_uncompressed_bytes_total", "out"),
        ("shipper_component_compression_ratio", "out"),
        ("shipper_component_lag_seconds", "out"),
    ] {
        assert!(
            value(name, &[("component_id", component)]).is_some(),
            "missing {name} of {component} in\n{metrics}"
        );
    }
    for expected in [
        "# TYPE shipper_component_lag_seconds gauge",
        "# TYPE shipper_component_deliver_seconds histogram",
        "shipper_component_deliver_seconds_bucket{component_id=\"out\",component_kind=\"sink\",component_type=\"file\",le=\"+Inf\"}",
        "shipper_component_received_records_total{component_id=\"in\",component_kind=\"source\",component_type=\"stdin\"} 1000",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
    stop(child);
    drop(stdin);
}

#[test]
fn logging_as_json_lines_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "\n[logging]\nformat = \"json\"\nlevel = \"info\"\n",
    );
    let (mut child, _guard) = start(&config, Stdio::piped());
    // Kept open, or the run would end with its input.
    let stdin = child.stdin.take();
    // Running once the data directory is locked by the child.
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = Command::new(SHIPPER)
            .args(["inspect", "--json"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let locked = serde_json::from_slice::<serde_json::Value>(&report.stdout)
            .is_ok_and(|r| r["locked_by"].as_str() == Some(pid.as_str()));
        if locked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shipper run never opened its data directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = stop(child);
    drop(stdin);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "shipper stopped cleanly"),
        "{stderr}"
    );
}

#[test]
fn http_source_to_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[sources.web]
type = "http"
address = "127.0.0.1:{port}"
path = "/ingest"

[sinks.out]
type = "file"
inputs = ["web"]
path = "{out}"
"#,
        data = dir.path().join("data").display(),
        out = dir.path().join("web.ndjson").display(),
    );
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, config).unwrap();
    let (child, _guard) = start(&config_path, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(30);
    let body: String = (0..100).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let response = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                use std::io::Read;
                write!(
                    stream,
                    "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                break response;
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "shipper never listened: {error}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let out = dir.path().join("web.ndjson");
    while line_count(&out) < 100 {
        assert!(
            Instant::now() < deadline,
            "the file sink got {} lines",
            line_count(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(child);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), body);
}

#[test]
fn generator_to_file_writes_exactly_count_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[sources.gen]
type = "generator"
count = 10_000
seed = 42

[sinks.out]
type = "file"
inputs = ["gen"]
path = "{out}"
"#,
        data = dir.path().join("data").display(),
        out = dir.path().join("generated.ndjson").display(),
    );
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, config).unwrap();
    let (child, _guard) = start(&config_path, Stdio::null());
    let out = dir.path().join("generated.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    while line_count(&out) < 10_000 {
        assert!(
            Instant::now() < deadline,
            "the file sink got {} lines",
            line_count(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(child);
    // Exactly the generated records: each once, in order, valid JSON.
    let written = std::fs::read_to_string(&out).unwrap();
    let records: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(records.len(), 10_000);
    for (seq, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], seq);
        assert!(record["req"].is_string(), "{record}");
    }
}

/// Whether Mosquitto answers on 127.0.0.1:1883; with
/// `SHIPPER_REQUIRE_SERVICES=1` its absence is a failure, not a skip.
fn mosquitto_available() -> bool {
    shipper_tests::service_available("Mosquitto", "127.0.0.1:1883")
}

#[test]
fn mqtt_source_to_file() {
    if !mosquitto_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let base = format!("shipper-run-test-{}-{nanos}", std::process::id());
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
durability = "always"

[sources.broker]
type = "mqtt"
url = "mqtt://127.0.0.1:1883"
topics = ["{base}/#"]
client_id = "{base}-shipper"

[sinks.out]
type = "file"
inputs = ["broker"]
path = "{out}"
"#,
        data = dir.path().join("data").display(),
        out = dir.path().join("mqtt.ndjson").display(),
    );
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, config).unwrap();
    let (child, _guard) = start(&config_path, Stdio::null());
    let out = dir.path().join("mqtt.ndjson");
    let mut publisher = shipper_tests::mqtt::Publisher::new(&format!("{base}-publisher"));

    // Until shipper has subscribed, a message has no subscriber and is
    // gone: probe until one reaches the file.
    let probe = format!("{base}/probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while line_count(&out) == 0 {
        assert!(Instant::now() < deadline, "no probe reached the file");
        publisher.publish(&probe, &["\"probe\"".to_owned()]);
        std::thread::sleep(Duration::from_millis(100));
    }

    let data = format!("{base}/data");
    let payloads: Vec<String> = (0..1000).map(|seq| format!("{{\"seq\":{seq}}}")).collect();
    publisher.publish(&data, &payloads);
    let data_lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .filter(|record: &serde_json::Value| record["topic"] == data.as_str())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = data_lines(&std::fs::read_to_string(&out).unwrap()).len();
        if got >= payloads.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the file sink got {got} of 1000 messages"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = stop(child);
    assert!(stderr.contains("shipper stopped cleanly"), "{stderr}");

    // Every message once, in publishing order, its JSON payload kept.
    let records = data_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(records.len(), 1000);
    for (seq, record) in records.iter().enumerate() {
        assert_eq!(
            record["payload"],
            serde_json::json!({ "seq": seq }),
            "{record}"
        );
    }
}

/// The lines of `path`, or none if it does not exist.
fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The `seq` of a JSON line.
fn seq_of(line: &str) -> usize {
    let record: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    record["seq"].as_u64().unwrap() as usize
}

#[test]
fn sighup_reloads_while_lines_flow_and_nothing_is_lost_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let original = std::fs::read_to_string(&config).unwrap();
    let late = dir.path().join("late.ndjson");
    let tagged = dir.path().join("tagged.ndjson");
    let late_sink = format!(
        "\n[sinks.late]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\n",
        late.display()
    );
    let tag = format!(
        "\n[transforms.tag]\ntype = \"remap\"\ninputs = [\"in\"]\nadd = {{ via = \"tag\" }}\n\
         \n[sinks.tagged]\ntype = \"file\"\ninputs = [\"tag\"]\npath = \"{}\"\n",
        tagged.display()
    );
    // `out` writes to `out_file`; `void` is gone; `extra` is appended.
    let rewrite = |out_file: &str, extra: &str| {
        let text = original.replace("out/records.ndjson", out_file).replace(
            "[sinks.void]\ntype = \"blackhole\"\ninputs = [\"in\"]\n",
            "",
        );
        std::fs::write(&config, format!("{text}{extra}")).unwrap();
    };

    let (mut child, _guard) = start(&config, Stdio::piped());
    let stderr = Stderr::take(&mut child);
    admin_port(&stderr);
    // Lines flow from a writer thread through the child's stdin pipe
    // until the test has done its reloads; then the input ends.
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stdin = child.stdin.take().unwrap();
        let (written, done) = (written.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seq = 0;
            while !done.load(Ordering::Relaxed) {
                let batch: String = (seq..seq + 50)
                    .map(|i| format!("{{\"seq\":{i}}}\n"))
                    .collect();
                stdin.write_all(batch.as_bytes()).unwrap();
                seq += 50;
                written.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            seq
        })
    };
    let flow = |more: usize| {
        let target = written.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while written.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the writer is stuck");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    flow(2000);
    // Change `out`'s path, remove `void`, add `late`.
    rewrite("out/records-1.ndjson", &late_sink);
    send_signal(&child, "HUP");
    let reloaded = stderr.wait_for("reloaded:", 1);
    assert!(
        reloaded
            .contains("reloaded: started [late], stopped [void], restarted [out], unchanged [in]"),
        "{reloaded}"
    );
    let written_when_late_started = written.load(Ordering::Relaxed);

    flow(2000);
    // A transform on `in` and a sink reading it: `in` restarts.
    rewrite("out/records-1.ndjson", &format!("{late_sink}{tag}"));
    send_signal(&child, "HUP");
    let reloaded = stderr.wait_for("reloaded:", 2);
    assert!(
        reloaded.contains(
            "reloaded: started [tag, tagged], stopped [], restarted [in], unchanged [late, out]"
        ),
        "{reloaded}"
    );
    flow(2000);
    wait_for_lines(&tagged, 1);

    // Remove them again, and move `out` once more.
    rewrite("out/records-3.ndjson", &late_sink);
    send_signal(&child, "HUP");
    let reloaded = stderr.wait_for("reloaded:", 3);
    assert!(
        reloaded.contains(
            "reloaded: started [], stopped [tag, tagged], restarted [in, out], unchanged [late]"
        ),
        "{reloaded}"
    );

    flow(2000);
    // The same file again, twice in a row: nothing changes.
    send_signal(&child, "HUP");
    send_signal(&child, "HUP");
    let reloaded = stderr.wait_for("reloaded:", 4);
    assert!(reloaded.contains("unchanged [in, late, out]"), "{reloaded}");
    flow(2000);

    done.store(true, Ordering::Relaxed);
    let total = writer.join().unwrap();
    // The end of the input ends the run.
    let status = wait_for_exit(child);
    let stderr = stderr.text();
    assert!(status.success(), "exit {status:?}\n{stderr}");
    assert!(stderr.contains("every source has ended"), "{stderr}");
    assert!(
        stderr.contains(&format!("records in in={total};")),
        "{stderr}"
    );
    let expected: Vec<String> = (0..total).map(|i| format!("{{\"seq\":{i}}}")).collect();

    // `out` existed the whole time, under three paths: every line exactly
    // once, in order, across them.
    let out: Vec<String> = ["records.ndjson", "records-1.ndjson", "records-3.ndjson"]
        .iter()
        .flat_map(|file| lines_of(&dir.path().join("out").join(file)))
        .collect();
    assert_eq!(out.len(), expected.len());
    assert!(out == expected, "out differs from what was written");

    // `late` started with a new cursor, which `open_cursor` puts at the
    // oldest record still stored: no later than the end of the log when
    // it started. From there on it has every line once, in order.
    let late = lines_of(&late);
    let first = seq_of(&late[0]);
    assert!(
        first <= written_when_late_started,
        "late starts at {first}, after the {written_when_late_started} lines written when it started"
    );
    assert!(late == expected[first..], "late is not a contiguous tail");

    // `tagged` read `tag` while it existed: a contiguous run of lines,
    // each with the field `tag` added. It was stopped, not drained, when
    // removed, so where it ends is not fixed.
    let tagged = lines_of(&tagged);
    let first = seq_of(&tagged[0]);
    for (i, line) in tagged.iter().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["seq"], first + i, "{line}");
        assert_eq!(record["via"], "tag", "{line}");
    }

    // The cursors of the removed sinks are gone; the others are caught up.
    let report = Command::new(SHIPPER)
        .args(["inspect", "--json"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let cursors: Vec<(&str, u64)> = report["cursors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["lag_records"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(cursors, [("late", 0), ("out", 0)], "{report:#}");
}

#[test]
fn post_reload_refuses_invalid_and_restart_only_configs_and_applies_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let valid = std::fs::read_to_string(&config).unwrap();
    let (mut child, _guard) = start(&config, Stdio::piped());
    let stderr = Stderr::take(&mut child);
    let port = admin_port(&stderr);
    let mut stdin = child.stdin.take().unwrap();
    let out = dir.path().join("out/records.ndjson");
    let mut sent = 0;
    let mut send = |lines: usize| {
        for _ in 0..lines {
            writeln!(stdin, "{{\"seq\":{sent}}}").unwrap();
            sent += 1;
        }
        stdin.flush().unwrap();
        sent
    };
    wait_for_lines(&out, send(100));

    // Invalid: 400 with every diagnostic and its line; the old pipeline runs on.
    std::fs::write(
        &config,
        valid.replace("inputs = [\"in\"]\npath", "inputs = [\"nowhere\"]\npath"),
    )
    .unwrap();
    let (status, body) = http_request(port, "POST", "/reload");
    let diagnostic =
        "shipper.toml:15: sinks.out.inputs: `nowhere` is not the name of a source or transform";
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(diagnostic), "{body}");
    stderr.wait_for(diagnostic, 1);
    wait_for_lines(&out, send(100));

    // A key only a restart applies: refused, named.
    std::fs::write(
        &config,
        valid.replace(
            &dir.path().join("data").display().to_string(),
            &dir.path().join("elsewhere").display().to_string(),
        ),
    )
    .unwrap();
    let (status, body) = http_request(port, "POST", "/reload");
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("data_dir changed: restart shipper to apply"),
        "{body}"
    );
    wait_for_lines(&out, send(100));

    // A valid change: 200 and what it did.
    let second = dir.path().join("second.ndjson");
    let with_second = format!(
        "{valid}\n[sinks.second]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\n",
        second.display()
    );
    std::fs::write(&config, &with_second).unwrap();
    let (status, body) = http_request(port, "POST", "/reload");
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "reloaded: started [second], stopped [], restarted [], unchanged [in, out, void]\n"
        )
    );

    // A source that cannot bind its address: the reply names it, the rest
    // runs on, and a reload once the address is free starts it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    std::fs::write(
        &config,
        format!(
            "{with_second}\n[sources.net]\ntype = \"socket\"\nmode = \"tcp\"\naddress = \"{address}\"\n\n[sinks.net_out]\ntype = \"blackhole\"\ninputs = [\"net\"]\n"
        ),
    )
    .unwrap();
    let (status, body) = http_request(port, "POST", "/reload");
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with(
            "reloaded: started [net_out], stopped [], restarted [], unchanged [in, out, second, void], failed [net]\nnet: source net: "
        ),
        "{body}"
    );
    drop(taken);
    let (status, body) = http_request(port, "POST", "/reload");
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "reloaded: started [net], stopped [], restarted [], unchanged [in, net_out, out, second, void]\n"
        )
    );

    let total = send(100);
    wait_for_lines(&out, total);
    wait_for_lines(&second, 1);
    let expected: Vec<String> = (0..total).map(|i| format!("{{\"seq\":{i}}}")).collect();
    assert!(lines_of(&out) == expected);
    // `second` started at the oldest stored record and reads on to the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let lines = lines_of(&second);
        if lines.last() == expected.last() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let first = seq_of(&second[0]);
    assert!(
        second == expected[first..],
        "second is not a contiguous tail"
    );

    // /metrics follows the reloads.
    let (_, metrics) = http_get(port, "/metrics");
    let value =
        |name: &str, component: &str| sample(&metrics, name, &[("component_id", component)]);
    assert!(
        value("shipper_component_sent_records_total", "second").is_some(),
        "{metrics}"
    );
    assert_eq!(
        value("shipper_component_received_records_total", "net"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        value("shipper_component_received_records_total", "in"),
        Some(total as f64),
        "{metrics}"
    );
    stop(child);
    drop(stdin);
    let stderr = stderr.text();
    assert!(stderr.contains("shipper stopped cleanly"), "{stderr}");
}

#[test]
fn the_end_of_stdin_ends_the_run_after_the_sinks_drained() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let (mut child, _guard) = start(&config, Stdio::piped());
    let stderr = Stderr::take(&mut child);
    let lines: Vec<String> = (0..5_000).map(|i| format!("{{\"seq\":{i}}}")).collect();
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in &lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let status = wait_for_exit(child);
    let stderr = stderr.text();
    assert!(status.success(), "exit {status:?}\n{stderr}");
    assert!(stderr.contains("every source has ended"), "{stderr}");
    assert!(
        stderr.contains("run summary: records in in=5000; records out out=5000 void=5000;"),
        "{stderr}"
    );
    assert!(stderr.contains("shipper stopped cleanly"), "{stderr}");
    assert_eq!(lines_of(&dir.path().join("out/records.ndjson")), lines);
}

/// A bare HTTP/1.1 endpoint on 127.0.0.1: answers every request `200`
/// (keep-alive, `Content-Length` bodies only) and keeps the bodies.
fn ndjson_endpoint() -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let shared = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let shared = shared.clone();
            std::thread::spawn(move || serve_connection(stream, &shared));
        }
    });
    (address, bodies)
}

fn serve_connection(stream: std::net::TcpStream, bodies: &Mutex<Vec<u8>>) {
    use std::io::Read;
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            match line.trim_end().split_once(':') {
                None => break,
                Some((name, value)) if name.eq_ignore_ascii_case("content-length") => {
                    length = value.trim().parse().unwrap();
                }
                Some(_) => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        bodies.lock().unwrap().extend_from_slice(&body);
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    }
}

#[test]
fn stdin_to_an_http_sink_with_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (address, bodies) = ndjson_endpoint();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[sinks.web]
type = "http"
inputs = ["in"]
uri = "http://{address}/ingest"
protocol = "ndjson"
compression = {{ codec = "none" }}
batch = {{ max_records = 100 }}
"#
        ),
    );
    let (mut child, _guard) = start(&config, Stdio::piped());
    let stderr = Stderr::take(&mut child);
    let port = admin_port(&stderr);
    // Kept open, or the run would end with its input.
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..1000 {
        writeln!(stdin, "{{\"n\":{i}}}").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let received = loop {
        let text = String::from_utf8(bodies.lock().unwrap().clone()).unwrap();
        if text.lines().count() >= 1000 {
            break text;
        }
        assert!(Instant::now() < deadline, "the endpoint got {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let expected: String = (0..1000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    assert_eq!(received, expected);
    let metrics = loop {
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        let web = [("component_id", "web")];
        if sample(&body, "shipper_component_sent_records_total", &web) == Some(1000.0)
            || Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let web = [("component_id", "web")];
    let value = |name: &str| sample(&metrics, name, &web);
    assert_eq!(value("shipper_component_sent_records_total"), Some(1000.0));
    assert!(metrics.contains("# TYPE shipper_component_request_seconds histogram"));
    assert_eq!(value("shipper_http_dead_lettered_batches_total"), Some(0.0));
    assert_eq!(value("shipper_http_request_retries_total"), Some(0.0));
    assert_eq!(
        value("shipper_http_request_uncompressed_bytes_total"),
        Some(expected.len() as f64)
    );
    let requests = value("shipper_http_requests_total").unwrap();
    // A chunk is never split: how many requests depends on how stdin's
    // lines fell into chunks.
    assert!(requests >= 1.0, "{requests} requests");
    assert_eq!(
        value("shipper_component_request_seconds_count"),
        Some(requests)
    );
    assert_eq!(
        sample(
            &metrics,
            "shipper_http_requests_total",
            &[("component_id", "out")]
        ),
        None
    );
    send_signal(&child, "TERM");
    assert!(wait_for_exit(child).success());
    drop(stdin);
    assert!(stderr.text().contains("shipper stopped cleanly"));
}

/// The requests an http sink named `web` has sent, from `/metrics`.
fn http_requests(port: u16) -> u64 {
    let (status, metrics) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    sample(
        &metrics,
        "shipper_http_requests_total",
        &[("component_id", "web")],
    )
    .map_or(0, |count| count as u64)
}

/// Waits until the endpoint has received `count` lines; returns them.
fn received_lines(bodies: &Mutex<Vec<u8>>, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = String::from_utf8(bodies.lock().unwrap().clone()).unwrap();
        if text.lines().count() >= count {
            return text.lines().map(str::to_owned).collect();
        }
        assert!(Instant::now() < deadline, "the endpoint got {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn web_sink(address: std::net::SocketAddr, batch: &str) -> String {
    format!(
        r#"
[sinks.web]
type = "http"
inputs = ["in"]
uri = "http://{address}/ingest"
protocol = "ndjson"
compression = {{ codec = "none" }}
batch = {{ {batch} }}
"#
    )
}

/// `shipper run` reading stdin, with an http sink `web` (ndjson, batch
/// settings `batch`) posting to an endpoint of the test's own.
struct WebRun {
    child: Child,
    _guard: KillOnPanic,
    stderr: Stderr,
    port: u16,
    stdin: std::process::ChildStdin,
    bodies: Arc<Mutex<Vec<u8>>>,
}

impl WebRun {
    fn start(dir: &Path, batch: &str) -> WebRun {
        let (address, bodies) = ndjson_endpoint();
        let config = write_config(dir, &web_sink(address, batch));
        let (mut child, _guard) = start(&config, Stdio::piped());
        let stderr = Stderr::take(&mut child);
        let port = admin_port(&stderr);
        let stdin = child.stdin.take().unwrap();
        WebRun {
            child,
            _guard,
            stderr,
            port,
            stdin,
            bodies,
        }
    }
}

#[test]
fn a_small_http_batch_waits_up_to_max_age_ms_for_more_records() {
    let dir = tempfile::tempdir().unwrap();
    let WebRun {
        child,
        _guard,
        port,
        mut stdin,
        bodies,
        ..
    } = WebRun::start(dir.path(), "max_records = 1000, max_age_ms = 3000");
    // Ten lines a tenth of a second apart: ten chunks (the source closes a
    // chunk after 5 ms), which without `max_age_ms` would be ten requests.
    for i in 0..10 {
        writeln!(stdin, "{{\"n\":{i}}}").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = received_lines(&bodies, 10);
    assert_eq!(received.len(), 10, "{received:?}");
    let requests = http_requests(port);
    assert!(
        (1..=2).contains(&requests),
        "{requests} requests for ten records in one max_age_ms"
    );
    send_signal(&child, "TERM");
    assert!(wait_for_exit(child).success());
    drop(stdin);
}

#[test]
fn a_full_http_batch_goes_at_once_and_a_shutdown_sends_a_lingering_one() {
    let dir = tempfile::tempdir().unwrap();
    // Ten minutes of linger: only a full batch or the shutdown sends.
    let WebRun {
        child,
        _guard,
        stderr,
        port,
        mut stdin,
        bodies,
    } = WebRun::start(dir.path(), "max_records = 4, max_age_ms = 600000");
    for i in 0..4 {
        writeln!(stdin, "{{\"n\":{i}}}").unwrap();
    }
    // Four records fill the batch: they go without waiting.
    received_lines(&bodies, 4);
    // Two more wait for company; the file sink shows they are stored.
    for i in 4..6 {
        writeln!(stdin, "{{\"n\":{i}}}").unwrap();
    }
    let out = dir.path().join("out/records.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines_of(&out).len() < 6 {
        assert!(
            Instant::now() < deadline,
            "the file sink got {:?}",
            lines_of(&out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(received_lines(&bodies, 4).len(), 4, "the two linger");
    let before = http_requests(port);
    // The shutdown drains: the lingering batch goes before the exit.
    send_signal(&child, "TERM");
    assert!(wait_for_exit(child).success());
    drop(stdin);
    let received = received_lines(&bodies, 6);
    let expected: Vec<String> = (0..6).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(received, expected);
    assert!(before >= 1);
    assert!(stderr.text().contains("shipper stopped cleanly"));
}
