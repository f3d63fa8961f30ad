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

fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
}

#[test]
fn stdin_to_file_then_sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut child = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\n{stderr}",
        output.status
    );
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
