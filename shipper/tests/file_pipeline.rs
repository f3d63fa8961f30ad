//! `shipper run` with the file source and the file sink as real processes:
//! a writer appends and rotates while shipper is killed (SIGKILL) at
//! random moments and restarted; at the end every line is in the output
//! exactly once. Then SIGTERM while busy: nothing lost.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_exactly_once, seen, writer, Guard};

fn write_config(dir: &Path) -> PathBuf {
    let config = format!(
        r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
durability = "interval"
interval_ms = 20
segment_bytes = "1MiB"

[sources.app]
type = "file"
include = ["{logs}/app.log*"]
glob_interval_ms = 50
rotate_wait_ms = 500

[sinks.out]
type = "file"
inputs = ["app"]
path = "{out}"
"#,
        data = dir.join("data").display(),
        logs = dir.join("logs").display(),
        out = dir.join("out/records.ndjson").display(),
    );
    let path = dir.join("shipper.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_no_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let config = write_config(dir.path());
    let out = dir.path().join("out/records.ndjson");
    const TOTAL: u64 = 200_000;
    let done = Arc::new(AtomicBool::new(false));
    let writing = {
        let dir = dir.path().to_owned();
        let done = done.clone();
        std::thread::spawn(move || writer(dir, TOTAL, 60_000, done))
    };
    // Pseudo-random kill times, fixed by the seed so a failure replays.
    let mut x: u64 = 0x5eed;
    for round in 0..8 {
        let shipper = Guard::start(&config);
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let alive = 150 + (x >> 33) % 600;
        std::thread::sleep(Duration::from_millis(alive));
        shipper.kill();
        eprintln!("round {round}: killed after {alive} ms");
    }
    writing.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    let shipper = Guard::start(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = seen(&out);
        if counts.len() as u64 >= TOTAL || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    shipper.terminate();
    assert_exactly_once(&seen(&out), TOTAL);
}

#[test]
fn sigterm_while_busy_loses_nothing_and_the_restart_finishes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let config = write_config(dir.path());
    let out = dir.path().join("out/records.ndjson");
    const TOTAL: u64 = 100_000;
    let done = Arc::new(AtomicBool::new(false));
    let shipper = Guard::start(&config);
    let writing = {
        let dir = dir.path().to_owned();
        let done = done.clone();
        std::thread::spawn(move || writer(dir, TOTAL, u64::MAX, done))
    };
    std::thread::sleep(Duration::from_millis(300));
    let stderr = shipper.terminate();
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let after_stop = seen(&out);
    assert!(
        after_stop.values().all(|&n| n == 1),
        "duplicates after SIGTERM"
    );
    writing.join().unwrap();
    let shipper = Guard::start(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (seen(&out).len() as u64) < TOTAL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    shipper.terminate();
    let counts = seen(&out);
    assert_eq!(counts.len() as u64, TOTAL, "every line arrived");
    assert!(counts.values().all(|&n| n == 1), "and only once");
}

#[test]
fn records_compressed_with_a_trained_dictionary_reach_the_sink_intact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let config = dir.path().join("shipper.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
dictionary = {{ sample_records = 500, max_bytes = "16KiB" }}

[sources.gen]
type = "generator"
format = "iot"
count = 20000

[sinks.out]
type = "file"
inputs = ["gen"]
path = "{out}"
"#,
            data = dir.path().join("data").display(),
            out = out.display(),
        ),
    )
    .unwrap();
    Guard::start(&config).wait_for_exit(Duration::from_secs(60));
    let counts = seen(&out);
    assert_eq!(counts.len(), 20_000);
    assert!(counts.values().all(|&n| n == 1));
    let dictionaries: Vec<_> = std::fs::read_dir(dir.path().join("data/dictionaries"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".zdict"))
        .collect();
    assert_eq!(dictionaries.len(), 1, "one stream, one dictionary");
}
