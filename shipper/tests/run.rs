//! `shipper run`: a real process, records through stdin → log → file and
//! blackhole sinks, and an orderly SIGTERM.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// Sends SIGTERM and waits: the run must drain and exit 0.
fn stop(child: std::process::Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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

#[test]
fn stdin_to_file_then_sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let (mut child, _guard) = start(&config, Stdio::piped());
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"seq":{i},"msg":"event number {i}"}}"#))
        .collect();
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in &lines {
            writeln!(stdin, "{line}").unwrap();
        }
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
    let config = write_config(
        dir.path(),
        r#"
[sinks.pg]
type = "postgres"
inputs = ["in"]
connection = "host=127.0.0.1 user=postgres dbname=test"
table = "records"
"#,
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
        stderr.contains("sink pg") && stderr.contains("not available in this build yet"),
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
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
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
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..1000 {
            writeln!(stdin, "{{\"n\":{i}}}").unwrap();
        }
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
    // The cursor of the second sink may trail by a delivery: wait for it.
    let metrics = loop {
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        if body.contains("shipper_sink_records_out_total{sink=\"void\"} 1000")
            || Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for expected in [
        "shipper_component_records_in_total{component=\"in\",kind=\"source\"} 1000",
        "shipper_sink_records_out_total{sink=\"out\"} 1000",
        "shipper_sink_records_out_total{sink=\"void\"} 1000",
        "shipper_sink_lag_records{sink=\"out\"} 0",
        "shipper_sink_errors_total{sink=\"out\"} 0",
        "shipper_log_records_appended_total 1000",
        "# TYPE shipper_sink_lag_seconds gauge",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
    stop(child);
}

#[test]
fn logging_as_json_lines_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "\n[logging]\nformat = \"json\"\nlevel = \"info\"\n",
    );
    let (child, _guard) = start(&config, Stdio::null());
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
