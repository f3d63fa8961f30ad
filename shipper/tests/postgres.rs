//! `shipper run` into the real PostgreSQL on 127.0.0.1:5432 (user postgres,
//! trust auth, database test): a generator's records arrive once each,
//! checked against the file sink's copy of the same records; and a file
//! source's lines arrive exactly once though shipper is SIGKILLed while it
//! delivers. Without a server the tests print why they skip, unless
//! `SHIPPER_REQUIRE_SERVICES=1`, which makes them fail instead.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{unique, Database, SERVER, SHIPPER};

/// A `shipper run` child; killed if the test fails while it runs.
struct Run(Option<Child>);

impl Run {
    fn start(config: &Path) -> Run {
        // Appended: the stderr of every start with this config.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("stderr"))
            .unwrap();
        let child = Command::new(SHIPPER)
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "warn,shipper_components::sinks::postgres=info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Run(Some(child))
    }

    fn kill(mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for the run to end by itself; it must exit 0.
    fn wait(mut self, config: &Path, patience: Duration) {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + patience;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}", stderr_of(config));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "exit {status:?}\n{}", stderr_of(config));
    }

    /// SIGTERM; the run must exit 0.
    fn terminate(mut self, config: &Path) {
        let mut child = self.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "exit {status:?}\n{}", stderr_of(config));
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stderr_of(config: &Path) -> String {
    std::fs::read_to_string(config.with_extension("stderr")).unwrap_or_default()
}

#[test]
fn generated_records_arrive_once_each_as_the_file_sink_got_them() {
    let Some(mut database) = Database::connect() else {
        return;
    };
    const COUNT: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    // The stream is the source's name: with a table per stream, the
    // records go to the table named after the source.
    let (source, table, hwm) = (unique("gen"), unique("default"), unique("hwm"));
    database.tables = vec![source.clone(), table.clone(), hwm.clone()];
    let out = dir.path().join("generated.ndjson");
    let config = dir.path().join("shipper.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[sources.{source}]
type = "generator"
format = "events"
count = {COUNT}
seed = 7

[sinks.rows]
type = "postgres"
inputs = ["{source}"]
connection = "{SERVER}"
table = "{table}"
hwm_table = "{hwm}"

[sinks.copy]
type = "file"
inputs = ["{source}"]
path = "{out}"
"#,
            data = dir.path().join("data").display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let started = Instant::now();
    Run::start(&config).wait(&config, Duration::from_secs(120));
    let elapsed = started.elapsed();
    eprintln!(
        "{COUNT} generated records into PostgreSQL in {elapsed:?} (the whole run: {:.0} rows/s)",
        COUNT as f64 / elapsed.as_secs_f64()
    );

    assert_eq!(database.rows(&source), COUNT);
    assert_eq!(database.rows(&table), 0);
    assert_eq!(
        database.number(&format!(
            "SELECT count(DISTINCT log_offset) + count(DISTINCT payload->>'seq') FROM {source}"
        )),
        2 * COUNT
    );
    assert_eq!(
        database.number(&format!("SELECT max(high_water) FROM {hwm}")),
        COUNT
    );
    // The payloads are the records the file sink wrote: the same multiset
    // of jsonb values (compared as text, which jsonb normalises).
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as i64, COUNT);
    let checksum =
        |sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]| -> (i64, i64) {
            let row = database
                .runtime
                .block_on(database.client.query_one(sql, params))
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            (row.get(0), row.get(1))
        };
    let stored = checksum(
        &format!(
            "SELECT sum(hashtext(payload::text))::bigint, \
                    sum(hashtext(md5(payload::text)))::bigint FROM {source}"
        ),
        &[],
    );
    let written = checksum(
        "SELECT sum(hashtext(line::jsonb::text))::bigint, \
                sum(hashtext(md5(line::jsonb::text)))::bigint FROM unnest($1::text[]) AS line",
        &[&lines],
    );
    assert_eq!(stored, written);
}

#[test]
fn sigkill_while_delivering_stores_every_line_exactly_once() {
    let Some(mut database) = Database::connect() else {
        return;
    };
    const LINES: i64 = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let (table, hwm) = (unique("lines"), unique("lines_hwm"));
    database.tables = vec![table.clone(), hwm.clone()];
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Lines arrive in bursts while shipper runs, so it delivers many small
    // batches and the kills land at every stage of a delivery.
    let path = logs.join("app.log");
    std::fs::File::create(&path).unwrap();
    let writer = std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        let mut burst = String::new();
        for seq in 0..LINES {
            burst.push_str(&format!(
                r#"{{"seq":{seq},"msg":"line {seq} of the test"}}"#
            ));
            burst.push('\n');
            if seq % 1000 == 999 || seq == LINES - 1 {
                file.write_all(burst.as_bytes()).unwrap();
                burst.clear();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let config = dir.path().join("shipper.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
durability = "interval"
interval_ms = 20

[sources.app]
type = "file"
include = ["{logs}/app.log"]

[sinks.rows]
type = "postgres"
inputs = ["app"]
connection = "{SERVER}"
table = "{table}"
table_per_stream = false
hwm_table = "{hwm}"
"#,
            data = dir.path().join("data").display(),
            logs = logs.display(),
        ),
    )
    .unwrap();
    // Killed every 120-310 ms while the lines arrive: inside a transaction,
    // between its COMMIT and the cursor's update, or idle. Each start
    // resumes from the cursor, which may lag the high-water mark.
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    let delays = [150, 230, 310, 170, 260, 120, 290];
    while !writer.is_finished() || kills < delays.len() {
        let run = Run::start(&config);
        std::thread::sleep(Duration::from_millis(delays[kills % delays.len()]));
        run.kill();
        kills += 1;
        assert!(Instant::now() < deadline, "{}", stderr_of(&config));
    }
    writer.join().unwrap();
    let run = Run::start(&config);
    while database.high_water(&hwm) < LINES {
        assert!(
            Instant::now() < deadline,
            "{} stored\n{}",
            database.high_water(&hwm),
            stderr_of(&config)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run.terminate(&config);
    let skipped = stderr_of(&config)
        .matches("stored already; they will be skipped")
        .count();
    eprintln!("killed {kills} times; {skipped} starts found records stored past the cursor");
    assert_eq!(database.rows(&table), LINES);
    assert_eq!(
        database.number(&format!(
            "SELECT count(DISTINCT (payload->>'seq')::bigint) FROM {table} \
             WHERE (payload->>'seq')::bigint BETWEEN 0 AND {LINES} - 1"
        )),
        LINES
    );
    assert_eq!(
        database.number(&format!("SELECT count(DISTINCT log_offset) FROM {table}")),
        LINES
    );
}
