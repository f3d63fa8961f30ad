//! Secrets never reach shipper's own output: one config with every
//! secret-bearing key (tokens of the http sink, the http and shipper
//! sources and the admin endpoint, token files, a basic-auth password, a
//! password in a URL and in a PostgreSQL connection string), run at debug
//! level against backends that refuse it, and `shipper validate` of it
//! (text and JSON): no secret in the logs, the validate output or
//! `/metrics`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, SHIPPER};

/// Kills the run if the test fails before stopping it.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

/// Every secret the config holds, each unique enough to grep for.
const SECRETS: [&str; 9] = [
    "sink-bearer-7f3a",
    "basic-password-91c2",
    "uri-password-4d1e",
    "http-source-token-0b8f",
    "shipper-source-token-c6d5",
    "bound-token-e2a9",
    "admin-token-5f70",
    "file-token-a13c",
    "pg-password-88b4",
];

#[test]
fn no_secret_reaches_the_logs_validate_or_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", SECRETS[7])).unwrap();
    // Ports nothing listens on: every client fails, and says so in the log.
    let (dead, admin) = (free_port(), free_port());
    let (http_port, shipper_port) = (free_port(), free_port());
    let config = dir.path().join("shipper.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
shutdown_timeout_ms = 1000

[admin]
address = "127.0.0.1:{admin}"
auth = {{ strategy = "bearer", token = "{admin_token}" }}

[logging]
level = "debug"

[sources.gen]
type = "generator"
rate = 100

[sources.web]
type = "http"
address = "127.0.0.1:{http_port}"
auth = {{ strategy = "bearer", tokens = [{{ token = "{http_token}" }}, {{ token_file = {token_file:?} }}] }}

[sources.sidecars]
type = "shipper"
address = "127.0.0.1:{shipper_port}"
auth = {{ strategy = "bearer", tokens = [{{ token = "{shipper_token}" }}, {{ token = "{bound}", producers = ["0123456789abcdef0123456789abcdef"] }}] }}

[sinks.bearer]
type = "http"
inputs = ["gen", "web"]
uri = "http://127.0.0.1:{dead}/ingest"
protocol = "ndjson"
auth = {{ strategy = "bearer", token = "{sink_token}" }}
retry = {{ initial_ms = 50, max_ms = 100 }}

[sinks.basic]
type = "http"
inputs = ["gen"]
uri = "http://user:{uri_password}@127.0.0.1:{dead}/ingest"
protocol = "ndjson"
auth = {{ strategy = "basic", user = "u", password = "{basic_password}" }}
retry = {{ initial_ms = 50, max_ms = 100 }}

[sinks.db]
type = "postgres"
inputs = ["sidecars"]
connection = "host=127.0.0.1 port={dead} user=u password={pg_password} dbname=test"
table = "t"
"#,
            data = dir.path().join("data").display(),
            admin_token = SECRETS[6],
            http_token = SECRETS[3],
            shipper_token = SECRETS[4],
            bound = SECRETS[5],
            sink_token = SECRETS[0],
            uri_password = SECRETS[2],
            basic_password = SECRETS[1],
            pg_password = SECRETS[8],
        ),
    )
    .unwrap();

    let mut outputs = Vec::new();
    for json in [false, true] {
        let mut command = Command::new(SHIPPER);
        command.args(["validate", "-c"]).arg(&config);
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        outputs.push((
            format!("validate{}", if json { " --json" } else { "" }),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }

    let stderr_path = dir.path().join("shipper.stderr");
    let mut running = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(running.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let answer = shipper_tests::http(
            admin,
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {}", SECRETS[6]))],
            b"",
        );
        match answer {
            // Once the sinks have failed a few times.
            Ok((200, body)) if body.contains("shipper_component_errors_total") => break body,
            _ => {
                assert!(Instant::now() < deadline, "no /metrics: {answer:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // Refused requests, which the sources log.
    let _ = shipper_tests::http(
        http_port,
        "POST",
        "/",
        &[("Authorization", "Bearer guess")],
        b"{}\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    // A stop with sinks that cannot drain ends non-zero: what matters
    // here is what it wrote.
    Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .unwrap();
    running.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.contains("DEBUG"), "debug logging is on");
    assert!(
        stderr.contains("request failed"),
        "the sinks failed, and said so:\n{stderr}"
    );
    outputs.push(("logs".into(), stderr));
    outputs.push(("/metrics".into(), metrics));

    for (what, text) in &outputs {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
}
