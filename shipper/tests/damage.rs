//! `shipper run` over data directories damaged between runs, and sinks
//! that cannot deliver at shutdown: nothing intact is lost, a loss is
//! counted exactly and never holds the pipeline up, and the exit code says
//! whether everything was delivered.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, seen, Guard};
use shipper_core::chunk::ChunkView;
use shipper_core::log::segment::{parse_segment_file_name, segment_file_name, SEGMENT_HEADER_LEN};

const RECORDS: u64 = 40_000;

/// A config: `data_dir` under `dir`, small segments, the admin endpoint on
/// any port, then `rest`.
fn config(dir: &Path, name: &str, rest: &str) -> std::path::PathBuf {
    config_with_timeout(dir, name, 5000, rest)
}

/// [`config`] with `shutdown_timeout_ms`.
fn config_with_timeout(
    dir: &Path,
    name: &str,
    shutdown_timeout_ms: u64,
    rest: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "{}"
shutdown_timeout_ms = {shutdown_timeout_ms}

[log]
segment_bytes = "128KiB"
max_bytes = "64MiB"

[admin]
address = "127.0.0.1:0"

{rest}"#,
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Writes `RECORDS` generated records into the log of `dir` with a sink
/// `out` that cannot deliver (nothing listens where it sends): they stay
/// on disk, the sink's cursor at 0.
fn fill_undelivered(dir: &Path) {
    let config = config(
        dir,
        "fill.toml",
        &format!(
            r#"[sources.gen]
type = "generator"
format = "events"
count = {RECORDS}

[sinks.out]
type = "http"
inputs = ["gen"]
uri = "http://127.0.0.1:{}/nowhere"
"#,
            free_port()
        ),
    );
    let (status, stderr) = Guard::start(&config).wait_for_end(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "the sink cannot drain\n{stderr}");
    assert!(stderr.contains("did not drain"), "{stderr}");
}

/// A config that delivers what the log holds to a file sink `out` (the
/// same sink name, so the same cursor). Its source `gen` (a listener no
/// one sends to) adds nothing.
fn drain_to_file(dir: &Path) -> std::path::PathBuf {
    config(
        dir,
        "drain.toml",
        &format!(
            r#"[sources.gen]
type = "socket"
mode = "tcp"
address = "127.0.0.1:{}"

[sinks.out]
type = "file"
inputs = ["gen"]
path = "{}"
"#,
            free_port(),
            dir.join("out.ndjson").display()
        ),
    )
}

/// Segment files of the log in `dir`, by name order.
fn segment_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("data/segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| parse_segment_file_name(name).is_some())
        .collect();
    names.sort();
    names
}

/// Waits until the file sink's output holds `count` records.
fn wait_for_output(dir: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = seen(&dir.join("out.ndjson"));
        if seen.len() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} records delivered",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A segment renamed to a name far above the log's end: the next run puts
/// it back where its records belong and delivers every record exactly
/// once, with no panic and nothing zeroed or deleted.
#[test]
fn a_segment_renamed_above_the_end_loses_nothing_through_a_run() {
    let dir = tempfile::tempdir().unwrap();
    fill_undelivered(dir.path());
    let names = segment_names(dir.path());
    assert!(names.len() > 5, "{names:?}");
    let segments = dir.path().join("data/segments");
    std::fs::rename(
        segments.join(&names[names.len() / 2]),
        segments.join(segment_file_name(1 << 40)),
    )
    .unwrap();

    let run = Guard::start(&drain_to_file(dir.path()));
    wait_for_output(dir.path(), RECORDS as usize);
    let stderr = run.terminate();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("segment renamed to fit its offsets"),
        "{stderr}"
    );
    common::assert_exactly_once(&seen(&dir.path().join("out.ndjson")), RECORDS);
}

/// The newest segment's tail overwritten with garbage after the run that
/// wrote it closed: the records from the damaged chunk on are reported
/// lost, exactly, the sink's cursor passes them, and SIGTERM drains at
/// once (it used to wait `shutdown_timeout_ms` for a lag that never moved,
/// then exit 2).
#[test]
fn a_loss_at_the_tail_is_counted_exactly_and_never_holds_the_sink_up() {
    let dir = tempfile::tempdir().unwrap();
    fill_undelivered(dir.path());
    let newest = segment_names(dir.path()).pop().unwrap();
    let path = dir.path().join("data/segments").join(&newest);
    let mut bytes = std::fs::read(&path).unwrap();
    // The first chunk's body and everything after it, to the end of the
    // file, become garbage.
    let first = ChunkView::parse(&bytes[SEGMENT_HEADER_LEN..]).unwrap();
    let lost_from = first.first_offset();
    assert!(lost_from < RECORDS);
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut bytes[SEGMENT_HEADER_LEN + 100..] {
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        *byte = noise as u8;
    }
    std::fs::write(&path, &bytes).unwrap();

    let started = Instant::now();
    let run = Guard::start(&drain_to_file(dir.path()));
    wait_for_output(dir.path(), lost_from as usize);
    let stderr = run.terminate();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the drain waited for the lost records: {:?}\n{stderr}",
        started.elapsed()
    );
    let lost = RECORDS - lost_from;
    assert!(
        stderr.contains(&format!(
            "lost records at offsets {lost_from}..{RECORDS} ({lost} records)"
        )),
        "the loss is reported exactly\n{stderr}"
    );
    let seen = seen(&dir.path().join("out.ndjson"));
    common::assert_exactly_once(&seen, lost_from);

    // The next run has nothing left to report or deliver.
    let run = Guard::start(&drain_to_file(dir.path()));
    std::thread::sleep(Duration::from_millis(300));
    let stderr = run.terminate();
    assert_eq!(
        stderr.matches("lost records at offsets").count(),
        1,
        "reported once, by the first run\n{stderr}"
    );
}

/// At shutdown a sink that cannot even connect keeps trying for
/// `shutdown_timeout_ms`, like one that connected and cannot deliver, and
/// the run then fails (exit 2), its records kept: it used to stop at once
/// and exit 0 as if it had drained.
#[test]
fn a_sink_that_cannot_connect_at_shutdown_fails_the_run() {
    for sink in [
        format!(
            r#"type = "postgres"
connection = "host=127.0.0.1 port={} user=postgres dbname=test connect_timeout=1"
table = "never""#,
            free_port()
        ),
        format!(
            r#"type = "http"
uri = "http://127.0.0.1:{}/nowhere""#,
            free_port()
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with_timeout(
            dir.path(),
            "dead.toml",
            1000,
            &format!(
                r#"[sources.gen]
type = "generator"
format = "events"
count = 10

[sinks.out]
inputs = ["gen"]
{sink}
"#
            ),
        );
        let started = Instant::now();
        let (status, stderr) = Guard::start(&config).wait_for_end(Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{sink}\n{stderr}");
        assert!(
            stderr.contains("sink out did not drain"),
            "{sink}\n{stderr}"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{sink}: gave up before shutdown_timeout_ms"
        );
        let report = shipper_core::log::inspect(&dir.path().join("data")).unwrap();
        assert_eq!(
            report.cursors[0].lag_records,
            Some(10),
            "{sink}: records kept"
        );
    }
}
