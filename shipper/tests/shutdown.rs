//! `shipper run` with a full log and a sink that can never deliver: the
//! runtime stays responsive while the sources wait for disk space, and
//! SIGTERM still ends the process within `shutdown_timeout_ms`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SHIPPER: &str = env!("CARGO_BIN_EXE_shipper");

/// Sends SIGKILL to `pid` when dropped (after a normal exit the pid is
/// gone and the kill does nothing).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
}

#[test]
fn a_full_log_with_a_dead_sink_keeps_the_runtime_responsive_and_sigterm_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    // The sink's directory is a file: every delivery fails, retryably.
    std::fs::write(dir.path().join("blocker"), b"not a directory").unwrap();
    let config = format!(
        r#"data_dir = "{data}"
shutdown_timeout_ms = 2000

[admin]
address = "127.0.0.1:0"

[log]
segment_bytes = "1MiB"
max_bytes = "4MiB"

[sources.one]
type = "generator"
format = "iot"

[sources.two]
type = "generator"
format = "events"

[sinks.dead]
type = "file"
inputs = ["one", "two"]
path = "{out}"
"#,
        data = dir.path().join("data").display(),
        out = dir.path().join("blocker/out.ndjson").display(),
    );
    let config_path = dir.path().join("shipper.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Killed if an assertion below fails, so no shipper outlives the test.
    let _guard = KillOnDrop(pid);
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let address: SocketAddr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no admin address; stderr so far: {seen:#?}"));
        if line.contains("admin endpoint listening") {
            let at = line.find("address=").expect("address field") + "address=".len();
            break line[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
        seen.push(line);
    };

    // Both sources soon wait for space; the endpoint must still answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let answer = shipper_tests::http(address.port(), "GET", "/health", &[], b"").ok();
        if let Some((503, body)) = &answer {
            break body.clone();
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the log never reported full: last answer {answer:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.contains("disk budget reached"), "{health}");
    // Still responsive a while later, with both sources blocked.
    std::thread::sleep(Duration::from_millis(500));
    let (status, metrics) = shipper_tests::http(address.port(), "GET", "/metrics", &[], b"")
        .expect("metrics answer while the log is full");
    assert_eq!(status, 200, "{metrics}");

    let stopped_at = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM did not end shipper within 30 s with a full log");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = stopped_at.elapsed();
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    let text = rest.join("\n");
    assert!(
        took < Duration::from_secs(15),
        "took {took:?} to stop (timeouts are 2 s): {text}"
    );
    assert!(text.contains("the log is full"), "{text}");
    // The undelivered records stay on disk: a failure, reported as such.
    assert!(!status.success(), "{text}");
    assert!(text.contains("did not drain"), "{text}");
}
