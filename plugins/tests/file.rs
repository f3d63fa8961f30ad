//! The file source on real files: discovery, rotation by rename and by
//! copy-and-truncate, inode reuse, exact resume after a restart (also once
//! the segments holding the positions are deleted), partial lines, long
//! lines, invalid UTF-8 and multiline records.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shipper_components::framing::lines::{LineOptions, Overlong};
use shipper_components::sources::file::{
    FileOptions, FileSource, FileStats, InvalidUtf8, ReadFrom,
};
use shipper_core::chunk::{decode_body, ChunkOptions, Decoder};
use shipper_core::component::{Shutdown, Source, SourceContext, Transform, TransformOutcome};
use shipper_core::emit::{Emitter, Route};
use shipper_core::log::{Log, LogOptions};

fn options(dir: &Path, pattern: &str) -> FileOptions {
    FileOptions {
        include: vec![dir.join(pattern).display().to_string()],
        glob_interval: Duration::from_millis(30),
        poll_interval: Duration::from_millis(20),
        rotate_wait: Duration::from_millis(300),
        ..FileOptions::default()
    }
}

/// Every stored record, by component, in log order.
fn records(log: &Log) -> BTreeMap<String, Vec<String>> {
    records_from(log, log.start_offset())
}

/// The stored records from `offset` on, by component.
fn records_from(log: &Log, offset: u64) -> BTreeMap<String, Vec<String>> {
    let mut decoder = Decoder::default();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in log.reader(offset) {
        let chunk = chunk.unwrap();
        let view = chunk.view();
        let component = String::from_utf8(view.component().to_vec()).unwrap();
        for record in decode_body(&view, &mut decoder).unwrap().records() {
            out.entry(component.clone())
                .or_default()
                .push(String::from_utf8_lossy(record.unwrap()).into_owned());
        }
    }
    out
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn numbered(prefix: &str, range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{prefix} {i}\n")).collect()
}

/// Numbered lines with a poorly compressible tail, to fill segments.
fn noisy(prefix: &str, range: std::ops::Range<u32>) -> String {
    range
        .map(|i| {
            let x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!(
                "{prefix} {i} {:016x}{:016x}\n",
                x,
                x.rotate_left(29) ^ 0xabcdef
            )
        })
        .collect()
}

/// A transform that passes every record on (a second component).
struct Copy;

impl Transform for Copy {
    fn apply<'a>(&mut self, record: &'a [u8], _: &'a mut Vec<u8>) -> TransformOutcome<'a> {
        TransformOutcome::Keep(record)
    }
}

/// A running file source.
struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    stats: std::sync::Arc<FileStats>,
}

fn start(log: &Log, options: FileOptions, with_copy: bool) -> Running {
    let mut source = FileSource::new(options, "files").unwrap();
    let stats = source.stats();
    let routes = if with_copy {
        vec![Route::new(
            Box::new(Copy),
            Emitter::new(log.clone(), "copy", ChunkOptions::default()).unwrap(),
        )]
    } else {
        Vec::new()
    };
    let emitter =
        Emitter::with_routes(log.clone(), "files", ChunkOptions::default(), true, routes).unwrap();
    let shutdown = Shutdown::new();
    let mut cx = SourceContext {
        emitter,
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(async move { source.run(&mut cx).await.unwrap() });
    Running {
        shutdown,
        task,
        stats,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap();
    }
}

/// Waits until component `files` holds `count` records (bounded).
async fn wait_for(log: &Log, component: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        log.flush().unwrap();
        let got = records(log).remove(component).unwrap_or_default();
        if got.len() >= count || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn open_log(dir: &Path) -> Log {
    Log::open(
        dir.join("data"),
        LogOptions {
            segment_bytes: 64 << 10,
            ..LogOptions::default()
        },
    )
    .unwrap()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_are_found_and_every_line_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    append(&dir.path().join("a.log"), &numbered("a", 0..500));
    append(&dir.path().join("skip.txt"), "not matched\n");
    let running = start(&log, options(dir.path(), "*.log"), false);
    wait_for(&log, "files", 500).await;
    append(&dir.path().join("b.log"), &numbered("b", 0..500));
    append(&dir.path().join("a.log"), &numbered("a", 500..1000));
    let got = wait_for(&log, "files", 1500).await;
    running.stop().await;
    let mut expected: Vec<String> = numbered("a", 0..1000)
        .lines()
        .chain(numbered("b", 0..500).lines())
        .map(String::from)
        .collect();
    expected.sort();
    assert_eq!(sorted(got), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_finishes_the_old_file_then_follows_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let path = dir.path().join("app.log");
    append(&path, &numbered("old", 0..100));
    let running = start(&log, options(dir.path(), "app.log"), false);
    wait_for(&log, "files", 100).await;
    // The writer still holds the old file: it writes a few more lines
    // after the rename, then reopens at the path.
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
    writer
        .write_all(numbered("old", 100..150).as_bytes())
        .unwrap();
    writer.write_all(b"old unterminated").unwrap();
    drop(writer);
    append(&path, &numbered("new", 0..100));
    let got = wait_for(&log, "files", 251).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = wait_for(&log, "files", 251).await;
    assert_eq!(got.len(), got_after.len(), "nothing more arrived");
    let stats = running.stats.clone();
    running.stop().await;
    let old: Vec<&String> = got.iter().filter(|l| l.starts_with("old")).collect();
    let new: Vec<&String> = got.iter().filter(|l| l.starts_with("new")).collect();
    assert_eq!(
        old.len(),
        151,
        "every old line once, the unterminated one too"
    );
    assert_eq!(old[150], "old unterminated");
    assert_eq!(new.len(), 100);
    for (i, line) in new.iter().enumerate() {
        assert_eq!(**line, format!("new {i}"));
    }
    assert_eq!(stats.files_closed.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_truncate_is_detected_and_the_file_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let path = dir.path().join("app.log");
    append(&path, &numbered("before", 0..200));
    let running = start(&log, options(dir.path(), "app.log"), false);
    wait_for(&log, "files", 200).await;
    std::fs::copy(&path, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // Wait until the source noticed, then write the new content.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.stats.truncations.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    append(&path, &numbered("after", 0..50));
    let got = wait_for(&log, "files", 250).await;
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(stats.truncations.load(Ordering::Relaxed), 1);
    assert_eq!(got.len(), 250);
    assert_eq!(got[200], "after 0");
    assert_eq!(got[249], "after 49");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_exactly_after_the_last_durable_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    append(&path, &noisy("line", 0..10_000));
    append(&path, "partial at the end");
    {
        let log = open_log(dir.path());
        let running = start(&log, options(dir.path(), "app.log"), false);
        wait_for(&log, "files", 10_000).await;
        running.stop().await;
        log.close().unwrap();
    }
    // The writer finishes the partial line and writes more while shipper
    // is down.
    append(&path, " and finished\n");
    append(&path, &noisy("line", 10_000..11_000));
    let log = open_log(dir.path());
    let running = start(&log, options(dir.path(), "app.log"), false);
    let got = wait_for(&log, "files", 11_001).await;
    running.stop().await;
    assert_eq!(got.len(), 11_001, "no line twice, none lost");
    assert_eq!(got[10_000], "partial at the end and finished");
    assert!(got[11_000].starts_with("line 10999 "));

    // Acknowledge everything: the segments go, their positions stay.
    log.commit_cursor("sink", log.next_offset()).unwrap();
    assert!(log.metrics().segments_deleted > 0);
    log.close().unwrap();
    drop(log);
    append(&path, &numbered("late", 0..10));
    let log = open_log(dir.path());
    let mark = log.next_offset();
    let running = start(&log, options(dir.path(), "app.log"), false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.durable_offset() < mark + 10 && Instant::now() < deadline {
        log.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.stop().await;
    let got_after = records_from(&log, mark).remove("files").unwrap_or_default();
    assert_eq!(
        got_after.len(),
        10,
        "{:?}",
        &got_after[..got_after.len().min(3)]
    );
    assert_eq!(got_after[0], "late 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_inode_with_new_content_is_read_from_its_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    append(&path, &numbered("first file", 0..10));
    {
        let log = open_log(dir.path());
        let running = start(&log, options(dir.path(), "app.log"), false);
        wait_for(&log, "files", 10).await;
        running.stop().await;
        log.close().unwrap();
    }
    // Same device and inode, other content longer than the old position:
    // what a new file reusing a deleted file's inode looks like.
    std::fs::write(&path, numbered("second file", 0..30)).unwrap();
    let log = open_log(dir.path());
    let running = start(&log, options(dir.path(), "app.log"), false);
    let got = wait_for(&log, "files", 40).await;
    running.stop().await;
    assert_eq!(got.len(), 40);
    assert_eq!(got[10], "second file 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_applies_only_to_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    append(&path, &numbered("history", 0..100));
    let log = open_log(dir.path());
    let mut opts = options(dir.path(), "*.log");
    opts.read_from = ReadFrom::End;
    let running = start(&log, opts.clone(), false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    append(&path, &numbered("fresh", 0..5));
    append(&dir.path().join("other.log"), &numbered("new file", 0..5));
    let got = wait_for(&log, "files", 10).await;
    running.stop().await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|l| !l.starts_with("history")));
    // A restart resumes from the stored positions, not from the end.
    append(&path, &numbered("while down", 0..3));
    let running = start(&log, opts, false);
    let got = wait_for(&log, "files", 13).await;
    running.stop().await;
    assert_eq!(got.len(), 13);
    assert_eq!(got[10], "while down 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_and_invalid_utf8_follow_their_policies() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let long = "x".repeat(100);
    let mut content = format!("short\n{long}\n").into_bytes();
    content.extend_from_slice(b"bad \xff\xfe bytes\nend\n");
    std::fs::write(dir.path().join("t.log"), &content).unwrap();
    std::fs::write(dir.path().join("d.txt"), &content).unwrap();

    let mut truncate = options(dir.path(), "t.log");
    truncate.lines = LineOptions {
        max_line_bytes: 10,
        overlong: Overlong::Truncate,
        ..LineOptions::default()
    };
    truncate.invalid_utf8 = InvalidUtf8::Replace;
    let running = start(&log, truncate, false);
    let got = wait_for(&log, "files", 4).await;
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(
        got,
        ["short", "xxxxxxxxxx", "bad \u{fffd}\u{fffd} byt", "end"]
    );
    assert_eq!(stats.lines_truncated.load(Ordering::Relaxed), 2);
    assert_eq!(stats.invalid_utf8.load(Ordering::Relaxed), 1);

    let dir2 = tempfile::tempdir().unwrap();
    let log2 = open_log(dir2.path());
    let mut drop = options(dir.path(), "d.txt");
    drop.lines = LineOptions {
        max_line_bytes: 20,
        overlong: Overlong::Drop,
        ..LineOptions::default()
    };
    let running = start(&log2, drop, false);
    wait_for(&log2, "files", 3).await;
    let stats = running.stats.clone();
    running.stop().await;
    // Kept as bytes: read the raw records.
    let mut decoder = Decoder::default();
    let mut raw = Vec::new();
    for chunk in log2.reader(0) {
        let chunk = chunk.unwrap();
        for record in decode_body(&chunk.view(), &mut decoder).unwrap().records() {
            raw.push(record.unwrap().to_vec());
        }
    }
    assert_eq!(
        raw,
        [
            b"short".to_vec(),
            b"bad \xff\xfe bytes".to_vec(),
            b"end".to_vec()
        ]
    );
    assert_eq!(stats.lines_dropped.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiline_records_join_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let path = dir.path().join("app.log");
    let mut opts = options(dir.path(), "app.log");
    opts.multiline = Some((r"^\d{4}-".into(), Duration::from_millis(200)));
    append(
        &path,
        "2024-01-01 boom\n  at a\n  at b\n2024-01-01 second\n  at c\n",
    );
    let running = start(&log, opts, false);
    let got = wait_for(&log, "files", 2).await;
    running.stop().await;
    assert_eq!(
        got,
        [
            "2024-01-01 boom\n  at a\n  at b",
            "2024-01-01 second\n  at c"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_multiline_record_is_read_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let mut opts = options(dir.path(), "app.log");
    opts.multiline = Some((r"^\d{4}-".into(), Duration::from_secs(60)));
    append(&path, "2024-01-01 one\n  at a\n2024-01-01 two\n  at b\n");
    {
        let log = open_log(dir.path());
        let running = start(&log, opts.clone(), false);
        let got = wait_for(&log, "files", 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        running.stop().await;
        assert_eq!(got, ["2024-01-01 one\n  at a"]);
        log.close().unwrap();
    }
    append(&path, "  at c\n2024-01-01 three\n");
    let log = open_log(dir.path());
    let running = start(&log, opts, false);
    let got = wait_for(&log, "files", 2).await;
    running.stop().await;
    assert_eq!(
        got,
        ["2024-01-01 one\n  at a", "2024-01-01 two\n  at b\n  at c"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_that_stopped_at_different_lines_each_get_the_rest_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let log = open_log(dir.path());
    append(&path, &numbered("phase1", 0..100));
    let running = start(&log, options(dir.path(), "app.log"), true);
    wait_for(&log, "copy", 100).await;
    running.stop().await;
    // The transform is taken out of the pipeline for a while...
    append(&path, &numbered("phase2", 0..100));
    let running = start(&log, options(dir.path(), "app.log"), false);
    wait_for(&log, "files", 200).await;
    running.stop().await;
    // ...and comes back: it gets what it missed, `files` nothing twice.
    append(&path, &numbered("phase3", 0..100));
    let running = start(&log, options(dir.path(), "app.log"), true);
    wait_for(&log, "files", 300).await;
    let copy = wait_for(&log, "copy", 300).await;
    running.stop().await;
    let files = records(&log).remove("files").unwrap();
    let expected: Vec<String> = numbered("phase1", 0..100)
        .lines()
        .chain(numbered("phase2", 0..100).lines())
        .chain(numbered("phase3", 0..100).lines())
        .map(String::from)
        .collect();
    assert_eq!(files, expected);
    assert_eq!(copy, expected);
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_makes_the_source_pause_instead_of_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    // ~60 MB of poorly compressible lines: far more than the disk budget.
    {
        let mut file = std::fs::File::create(&path).unwrap();
        for block in 0..60u32 {
            file.write_all(noisy("big", block * 20_000..(block + 1) * 20_000).as_bytes())
                .unwrap();
        }
    }
    let total = 1_200_000;
    let log = Log::open(
        dir.path().join("data"),
        LogOptions {
            segment_bytes: 1 << 20,
            max_bytes: 4 << 20,
            ..LogOptions::default()
        },
    )
    .unwrap();
    log.open_cursor("slow").unwrap();
    let before = rss_bytes();
    let running = start(&log, options(dir.path(), "big.log"), false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Nobody acknowledged: the log is at its budget and the source waits.
    let stalled = log.next_offset();
    assert!(log.is_full(), "{:?}", log.metrics());
    assert!(log.metrics().disk_bytes <= 4 << 20, "{:?}", log.metrics());
    assert!(stalled < total / 4, "the source kept reading: {stalled}");
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "memory grew by {grown} bytes while paused"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log.next_offset(), stalled, "still paused");
    // The slow sink catches up, slowly: everything arrives, once.
    let mut reader = log.reader(0);
    let mut seen = 0u64;
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < total && Instant::now() < deadline {
        // No `log.flush()` here: the writer is waiting for space, and the
        // reader only returns durable chunks anyway.
        match reader.next() {
            Some(chunk) => {
                let chunk = chunk.unwrap();
                let mut decoder = Decoder::default();
                for record in decode_body(&chunk.view(), &mut decoder).unwrap().records() {
                    let line = String::from_utf8_lossy(record.unwrap()).into_owned();
                    let number: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
                    assert_eq!(Some(number), last.map_or(Some(0), |l: u64| Some(l + 1)));
                    last = Some(number);
                    seen += 1;
                }
                log.commit_cursor("slow", chunk.end_offset()).unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    running.stop().await;
    assert_eq!(seen, total);
}
