//! Helpers shared by the tests that run `shipper run` as real processes.

#![allow(dead_code)] // Each test file uses some of them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const SHIPPER: &str = env!("CARGO_BIN_EXE_shipper");

/// A `file` sink named `out` reading `input`, writing `dir/out/records.ndjson`.
pub fn file_sink(dir: &Path, input: &str) -> String {
    format!(
        r#"[sinks.out]
type = "file"
inputs = ["{input}"]
path = "{}"
"#,
        dir.join("out/records.ndjson").display()
    )
}

#[allow(unused_imports)] // Each test file uses some of them.
pub use shipper_tests::{free_port, unique};

/// A `shipper run` child whose stderr goes to `<config>.stderr` (a file, so
/// a chatty run never blocks on a full pipe); killed if the test fails.
pub struct Guard(Option<Child>, PathBuf);

impl Guard {
    pub fn start(config: &Path) -> Guard {
        let log = config.with_extension("stderr");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(SHIPPER)
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Guard(Some(child), log)
    }

    pub fn kill(mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for the run to end by itself (every source ended); it must
    /// exit 0.
    pub fn wait_for_exit(self, patience: Duration) -> String {
        let (status, stderr) = self.wait_for_end(patience);
        assert!(status.success(), "exit {status:?}\n{stderr}");
        stderr
    }

    /// Waits for the run to end by itself, however it ends: its exit
    /// status and stderr.
    pub fn wait_for_end(mut self, patience: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.0.take().unwrap();
        let deadline = std::time::Instant::now() + patience;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let stderr = std::fs::read_to_string(&self.1).unwrap_or_default();
                panic!("the run did not end within {patience:?}\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, std::fs::read_to_string(&self.1).unwrap_or_default())
    }

    /// SIGTERM; the run must exit 0. Returns everything the child (and
    /// earlier runs with the same config) wrote to stderr.
    pub fn terminate(mut self) -> String {
        let mut child = self.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(&self.1).unwrap_or_default();
        assert!(status.success(), "exit {status:?}\n{stderr}");
        stderr
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Appends `total` numbered lines to logs/app.log in bursts, rotating by
/// rename (app.log → app.log.N) every `rotate_every` lines.
pub fn writer(dir: PathBuf, total: u64, rotate_every: u64, done: Arc<AtomicBool>) {
    let logs = dir.join("logs");
    let path = logs.join("app.log");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut rotations = 0;
    for seq in 0..total {
        writeln!(
            file,
            r#"{{"seq":{seq},"msg":"line number {seq} of the test"}}"#
        )
        .unwrap();
        if seq % 500 == 499 {
            std::thread::sleep(Duration::from_millis(2));
        }
        if seq % rotate_every == rotate_every - 1 {
            rotations += 1;
            std::fs::rename(&path, logs.join(format!("app.log.{rotations}"))).unwrap();
            file = std::fs::File::create(&path).unwrap();
        }
    }
    done.store(true, Ordering::Release);
}

/// Asserts that `counts` (as [`seen`] returns) holds every sequence number
/// below `total` exactly once, naming the first lost and repeated ones.
pub fn assert_exactly_once(counts: &BTreeMap<u64, u32>, total: u64) {
    let missing: Vec<u64> = (0..total).filter(|s| !counts.contains_key(s)).collect();
    let twice: Vec<(&u64, &u32)> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        twice.is_empty(),
        "{} lines duplicated, first {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    assert_eq!(counts.len() as u64, total);
}

/// How often each sequence number appears in the output.
pub fn seen(out: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    let text = std::fs::read_to_string(out).unwrap_or_default();
    // A sink may be writing right now: a last line without its newline is
    // not complete yet (a finished output always ends with one).
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    for line in complete.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON in the output ({e}): {line:?}"));
        *counts.entry(value["seq"].as_u64().unwrap()).or_insert(0) += 1;
    }
    counts
}

/// A TCP proxy on 127.0.0.1 to a backend, which a test can cut: while cut,
/// it closes every connection (new and open), as a backend that became
/// unreachable would look to shipper.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub fn start(backend: std::net::SocketAddr) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::AtomicU64;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (cut2, generation2) = (cut.clone(), generation.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(backend) else {
                    continue;
                };
                let born = generation2.load(Ordering::Acquire);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (cut, generation) = (cut2.clone(), generation2.clone());
                    std::thread::spawn(move || pump(from, to, &cut, &generation, born));
                }
            }
        });
        Proxy {
            port,
            cut,
            generation,
        }
    }

    /// Closes every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    cut: &AtomicBool,
    generation: &std::sync::atomic::AtomicU64,
    born: u64,
) {
    use std::io::Read;
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        if cut.load(Ordering::Acquire) || generation.load(Ordering::Acquire) != born {
            break;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The test database: PostgreSQL on 127.0.0.1:5432, user postgres, trust
/// auth, database test.
pub const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A client of the test database on a runtime of its own.
pub struct Database {
    pub runtime: tokio::runtime::Runtime,
    pub client: tokio_postgres::Client,
    /// Tables dropped at the end, the test passed or not.
    pub tables: Vec<String>,
}

impl Database {
    /// `None` (skip) when there is no server; panics instead when services
    /// are required.
    pub fn connect() -> Option<Database> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let connected = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(
                &format!("{SERVER} connect_timeout=5"),
                tokio_postgres::NoTls,
            )
            .await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        });
        match connected {
            Ok(client) => Some(Database {
                runtime,
                client,
                tables: Vec::new(),
            }),
            Err(error) => {
                let reason = format!("PostgreSQL not reachable on 127.0.0.1:5432: {error}");
                shipper_tests::service_missing(&reason);
                None
            }
        }
    }

    /// The first column of the one row `sql` returns, as an `i64`.
    pub fn number(&self, sql: &str) -> i64 {
        self.runtime
            .block_on(self.client.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0)
    }

    /// How many rows `table` holds; 0 while it does not exist.
    pub fn rows(&self, table: &str) -> i64 {
        let exists = self.number(&format!(
            "SELECT (to_regclass('{table}') IS NOT NULL)::int::int8"
        ));
        if exists == 0 {
            return 0;
        }
        self.number(&format!("SELECT count(*) FROM {table}"))
    }

    /// The highest high-water mark in `hwm`; 0 while it does not exist.
    pub fn high_water(&self, hwm: &str) -> i64 {
        if self.rows(hwm) == 0 {
            return 0;
        }
        self.number(&format!("SELECT max(high_water) FROM {hwm}"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        for table in &self.tables {
            let drop = format!("DROP TABLE IF EXISTS {table}");
            if let Err(error) = self.runtime.block_on(self.client.batch_execute(&drop)) {
                eprintln!("{drop}: {error}");
            }
        }
    }
}

/// One HTTP/1.1 request without a body to the admin endpoint on `port`:
/// status and body.
pub fn http_request(port: u16, method: &str, path: &str) -> (u16, String) {
    shipper_tests::http(port, method, path, &[], b"").unwrap()
}
