//! Cursors, segment deletion and the disk budget, through the public API.
//!
//! Chunks here are uncompressed and of one fixed size, so that the number
//! of chunks a segment holds is known and segment boundaries fall at
//! offsets the tests can name.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shipper_core::log::{Durability, Log, LogOptions, WhenFull};
use shipper_core::Error;
use shipper_tests::records::{self, fixed_chunk, fixed_record};

const SEGMENT: u64 = 16 << 10;
const RECORDS_PER_CHUNK: u64 = 4;
const RECORD_LEN: usize = 1000;

fn options(max_bytes: u64, when_full: WhenFull) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT,
        max_bytes,
        when_full,
        durability: Durability::Always,
        ..LogOptions::default()
    }
}

fn unbounded() -> LogOptions {
    options(1 << 30, WhenFull::Block)
}

fn chunk(first: u64) -> shipper_core::chunk::ClosedChunk {
    fixed_chunk(first, RECORDS_PER_CHUNK, RECORD_LEN)
}

fn expected(offset: u64) -> Vec<u8> {
    fixed_record(offset, RECORD_LEN)
}

/// Chunks that fit in one segment after its 64-byte header.
fn chunks_per_segment() -> u64 {
    let padded = chunk(0).frame_len().div_ceil(8) * 8;
    let chunks = (SEGMENT as usize - 64) / padded;
    assert!(chunks >= 2, "test chunks too large for the segment");
    chunks as u64
}

/// Records per full segment.
fn segment_records() -> u64 {
    chunks_per_segment() * RECORDS_PER_CHUNK
}

/// Appends `chunks` chunks, each durable before the next, and returns the offsets.
fn append(log: &Log, chunks: u64) -> Range<u64> {
    let start = log.next_offset();
    for _ in 0..chunks {
        let first = log.next_offset();
        let range = log.append(chunk(first)).unwrap().wait_durable().unwrap();
        assert_eq!(range, first..first + RECORDS_PER_CHUNK);
    }
    start..log.next_offset()
}

/// Base offsets of the segment files on disk, ascending.
fn segment_files(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            shipper_core::log::segment::parse_segment_file_name(&name)
        })
        .collect();
    bases.sort();
    bases
}

/// The bases of segments `from..to` when every segment is full.
fn bases(from: u64, to: u64) -> Vec<u64> {
    (from..to).map(|i| i * segment_records()).collect()
}

/// Checks every stored record from the log's start to its end.
fn check_contents(log: &Log) {
    check_contents_from(log, log.start_offset());
}

/// [`check_contents`] of a log whose first record is `first` (offsets
/// below it recorded lost).
fn check_contents_from(log: &Log, first: u64) {
    let seen = records::read_and_check(log, first, expected);
    assert_eq!(seen.first, Some(first));
    assert_eq!(seen.end, Some(log.next_offset()));
}

/// Polls a condition the log exposes no wait for, failing after 10 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_segment_is_deleted_once_every_cursor_has_passed_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), unbounded()).unwrap();
    assert_eq!(log.open_cursor("fast").unwrap(), 0);
    assert_eq!(log.open_cursor("slow").unwrap(), 0);
    append(&log, 5 * chunks_per_segment());
    let b = bases(0, 5);
    assert_eq!(segment_files(dir.path()), b);
    let end = log.next_offset();

    // The fast cursor alone frees nothing: the slow one holds every segment.
    log.commit_cursor("fast", end).unwrap();
    assert_eq!(segment_files(dir.path()), b);
    assert_eq!(log.metrics().segments_deleted, 0);
    assert_eq!(log.start_offset(), 0);

    // One record of segment 0 not yet acknowledged: it stays.
    log.commit_cursor("slow", b[1] - 1).unwrap();
    assert_eq!(segment_files(dir.path()), b);
    assert_eq!(log.start_offset(), 0);

    log.commit_cursor("slow", b[1]).unwrap();
    assert_eq!(segment_files(dir.path()), b[1..]);
    assert_eq!(log.start_offset(), b[1]);
    assert_eq!(log.metrics().segments_deleted, 1);

    log.commit_cursor("slow", b[3] + 1).unwrap();
    assert_eq!(segment_files(dir.path()), b[3..]);
    assert_eq!(log.start_offset(), b[3]);

    // Everything acknowledged: the active segment is never deleted.
    log.commit_cursor("slow", end).unwrap();
    assert_eq!(segment_files(dir.path()), b[4..]);
    assert_eq!(log.metrics().segments_deleted, 4);
    assert_eq!(log.metrics().segments, 1);
    check_contents(&log);

    // A reader from a deleted offset starts at the oldest stored one and says so.
    let mut reader = log.reader(0);
    let first = reader.next().unwrap().unwrap();
    assert_eq!(first.first_offset(), b[4]);
    assert_eq!(reader.take_gap(), Some((0, b[4])));
    log.close().unwrap();
}

#[test]
fn a_log_without_cursors_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), unbounded()).unwrap();
    append(&log, 6 * chunks_per_segment() + 1);
    assert_eq!(segment_files(dir.path()), bases(0, 7));
    assert_eq!(log.metrics().segments_deleted, 0);
    let end = log.next_offset();
    log.close().unwrap();

    let log = Log::open(dir.path(), unbounded()).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    assert!(log.cursors().is_empty());
    assert_eq!((log.start_offset(), log.next_offset()), (0, end));
    assert_eq!(segment_files(dir.path()), bases(0, 7));
    check_contents(&log);
    log.close().unwrap();
}

#[test]
fn removing_a_cursor_releases_the_segments_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), unbounded()).unwrap();
    log.open_cursor("gone").unwrap();
    append(&log, 4 * chunks_per_segment());
    let b = bases(0, 4);
    log.commit_cursor("live", log.next_offset()).unwrap();
    assert_eq!(segment_files(dir.path()), b);

    assert!(log.remove_cursor("gone").unwrap());
    assert_eq!(segment_files(dir.path()), b[3..]);
    assert_eq!(log.start_offset(), b[3]);
    assert!(!log.remove_cursor("gone").unwrap());
    assert_eq!(log.cursors().keys().collect::<Vec<_>>(), ["live"]);
    assert!(!dir.path().join("cursors/gone.cur").exists());

    // With the last cursor gone the log keeps everything again.
    assert!(log.remove_cursor("live").unwrap());
    append(&log, 2 * chunks_per_segment());
    assert_eq!(segment_files(dir.path()), bases(3, 6));
    check_contents(&log);
    log.close().unwrap();

    let log = Log::open(dir.path(), unbounded()).unwrap();
    assert!(log.cursors().is_empty());
    assert_eq!(log.start_offset(), b[3]);
    log.close().unwrap();
}

#[test]
fn cursors_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), unbounded()).unwrap();
    append(&log, 4 * chunks_per_segment());
    let b = bases(0, 4);
    let end = log.next_offset();
    log.commit_cursor("file", b[2] + 3).unwrap();
    log.commit_cursor("http", end).unwrap();
    assert_eq!(segment_files(dir.path()), b[2..]);
    // A cursor cannot point beyond the log, and a refused commit changes nothing.
    assert!(matches!(
        log.commit_cursor("file", end + 1),
        Err(Error::Config(_))
    ));
    assert_eq!(log.cursor("file"), Some(b[2] + 3));
    log.close().unwrap();

    let log = Log::open(dir.path(), unbounded()).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    let cursors: Vec<(String, u64)> = log.cursors().into_iter().collect();
    assert_eq!(
        cursors,
        [("file".to_owned(), b[2] + 3), ("http".to_owned(), end)]
    );
    assert_eq!(log.open_cursor("file").unwrap(), b[2] + 3);
    assert_eq!(log.start_offset(), b[2]);
    assert_eq!(log.next_offset(), end);
    check_contents(&log);

    // Deletion goes on from the reopened cursors (the reopened log may
    // have started a fresh segment at `end`, the old active one being full).
    log.commit_cursor("file", end).unwrap();
    let start = log.start_offset();
    assert!(start >= b[3], "{start}");
    assert_eq!(segment_files(dir.path()), [start]);
    log.close().unwrap();
}

#[test]
fn block_waits_until_a_cursor_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options(3 * SEGMENT, WhenFull::Block)).unwrap();
    log.open_cursor("sink").unwrap();
    let cps = chunks_per_segment();
    // Three full segments are the whole budget.
    append(&log, 3 * cps);
    let b = bases(0, 3);
    assert_eq!(segment_files(dir.path()), b);
    assert!(!log.is_full());
    let end = log.next_offset();

    let (done_tx, done) = mpsc::channel();
    std::thread::scope(|scope| {
        let blocked_log = log.clone();
        scope.spawn(move || {
            let result = blocked_log
                .append(chunk(end))
                .and_then(|ticket| ticket.wait_durable());
            done_tx.send(result).unwrap();
        });
        wait_until("the log is full", || log.is_full());
        assert!(matches!(
            log.try_append(chunk(end)),
            Err(Error::Full { max_bytes }) if max_bytes == 3 * SEGMENT
        ));
        // Still blocked a while later (a bounded wait cannot prove "forever").
        assert_eq!(
            done.recv_timeout(Duration::from_millis(200)).err(),
            Some(mpsc::RecvTimeoutError::Timeout)
        );
        let metrics = log.metrics();
        assert_eq!(metrics.full_waits, 1);
        assert_eq!(metrics.next_offset, end);
        assert!(metrics.disk_bytes <= 3 * SEGMENT, "{metrics:?}");
        assert_eq!(segment_files(dir.path()), b);

        // The consumer acknowledges segment 0: the append goes through.
        log.commit_cursor("sink", b[1]).unwrap();
        let range = done
            .recv_timeout(Duration::from_secs(10))
            .expect("append still blocked after space was freed")
            .unwrap();
        assert_eq!(range, end..end + RECORDS_PER_CHUNK);
    });
    assert!(!log.is_full());
    assert_eq!(segment_files(dir.path()), bases(1, 4));
    let next = log.next_offset();
    let range = log.try_append(chunk(next)).unwrap().wait_durable().unwrap();
    assert_eq!(range.start, next);
    assert_eq!(log.start_offset(), b[1]);
    assert_eq!(log.metrics().records_dropped, 0);
    check_contents(&log);
    log.close().unwrap();
}

#[test]
fn drop_oldest_deletes_the_oldest_segment_and_counts_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options(3 * SEGMENT, WhenFull::DropOldest)).unwrap();
    // A cursor that acknowledges nothing does not hold data back under drop_oldest.
    log.open_cursor("sink").unwrap();
    let cps = chunks_per_segment();
    append(&log, 2);
    // A reader in the middle of segment 0 when it is dropped.
    let mut early = log.reader(0);
    let first = early.next().unwrap().unwrap();
    assert_eq!(first.first_offset(), 0);
    drop(first);

    append(&log, 8 * cps - 2);
    let total = log.next_offset();
    assert_eq!(total, 8 * segment_records());
    let metrics = log.metrics();
    // The budget holds three segments, all of them full of data, and the
    // dropped offsets are written down in one loss segment (not counted
    // against the budget) where the oldest dropped segment was.
    assert_eq!(segment_files(dir.path()), [vec![0], bases(5, 8)].concat());
    assert_eq!(metrics.segments, 4);
    assert!(metrics.disk_bytes <= 3 * SEGMENT, "{metrics:?}");
    let start = 5 * segment_records();
    let loss = std::fs::read(
        dir.path()
            .join("segments")
            .join(shipper_core::log::segment::segment_file_name(0)),
    )
    .unwrap();
    let header = shipper_core::log::segment::SegmentHeader::decode(&loss).unwrap();
    assert_eq!(loss.len(), 64, "a loss segment is a header alone");
    assert_eq!(header.flags, shipper_core::log::segment::SEGMENT_FLAG_LOSS);
    assert_eq!((header.base_offset, header.durable_end), (0, start));
    assert_eq!(
        log.start_offset(),
        0,
        "the oldest offset the log accounts for"
    );
    assert_eq!(
        metrics.records_dropped, start,
        "records dropped must be exactly the records lost"
    );
    assert_eq!(metrics.segments_dropped, 5);
    assert_eq!(metrics.segments_deleted, 0);
    assert_eq!(log.cursor("sink"), Some(0));
    // Nothing else lost.
    check_contents_from(&log, start);

    // A new reader from 0 is told about the gap.
    let mut reader = log.reader(0);
    assert_eq!(reader.next().unwrap().unwrap().first_offset(), start);
    assert_eq!(reader.take_gap(), Some((0, start)));

    // The early reader: every offset is either read, with the right bytes,
    // or inside a gap it was told about, in order.
    let mut covered = RECORDS_PER_CHUNK;
    let mut decoder = shipper_core::chunk::Decoder::default();
    while let Some(stored) = early.next() {
        let stored = stored.unwrap();
        if let Some((from, to)) = early.take_gap() {
            assert_eq!(from, covered, "gap starts where reading stopped");
            covered = to;
        }
        assert_eq!(stored.first_offset(), covered);
        let view = stored.view();
        let body = shipper_core::chunk::decode_body(&view, &mut decoder).unwrap();
        for (offset, record) in (stored.first_offset()..).zip(body.records()) {
            assert_eq!(
                record.unwrap(),
                expected(offset).as_slice(),
                "offset {offset}"
            );
        }
        covered = stored.end_offset();
    }
    assert_eq!(covered, total);
    log.close().unwrap();

    // After reopen: the same records, the same start.
    let log = Log::open(dir.path(), options(3 * SEGMENT, WhenFull::DropOldest)).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    assert_eq!((log.start_offset(), log.next_offset()), (0, total));
    check_contents_from(&log, start);
    // The sink's cursor passes the recorded loss like any gap, and the
    // loss segment goes once every cursor has passed it.
    log.commit_cursor("sink", start + 1).unwrap();
    assert_eq!(segment_files(dir.path())[..3], bases(5, 8));
    log.close().unwrap();
}

#[test]
fn a_chunk_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), unbounded()).unwrap();
    log.open_cursor("sink").unwrap();
    let big_records = 2 * SEGMENT / RECORD_LEN as u64;
    // First into the empty active segment, then after a small chunk.
    for _ in 0..2 {
        let first = log.next_offset();
        let big = fixed_chunk(first, big_records, RECORD_LEN);
        assert!(big.frame_len() as u64 > SEGMENT);
        let range = log.append(big).unwrap().wait_durable().unwrap();
        assert_eq!(range, first..first + big_records);
        append(&log, 1);
    }
    let end = log.next_offset();
    check_contents(&log);
    log.commit_cursor("sink", 1).unwrap();
    check_contents(&log);
    log.close().unwrap();

    let log = Log::open(dir.path(), unbounded()).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    assert_eq!((log.start_offset(), log.next_offset()), (0, end));
    check_contents(&log);
    log.close().unwrap();
}

#[test]
fn closing_a_full_log_releases_a_blocked_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options(3 * SEGMENT, WhenFull::Block)).unwrap();
    log.open_cursor("sink").unwrap();
    append(&log, 3 * chunks_per_segment());
    let end = log.next_offset();
    let (done_tx, done) = mpsc::channel();
    std::thread::scope(|scope| {
        let blocked_log = log.clone();
        scope.spawn(move || {
            let result = blocked_log
                .append(chunk(end))
                .and_then(|ticket| ticket.wait());
            done_tx.send(result).unwrap();
        });
        wait_until("the log is full", || log.is_full());
        log.close().unwrap();
        let result = done
            .recv_timeout(Duration::from_secs(10))
            .expect("append still blocked after close");
        assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    });
    // Nothing acknowledged was lost by closing while full.
    let log = Log::open(dir.path(), options(3 * SEGMENT, WhenFull::Block)).unwrap();
    assert_eq!(log.next_offset(), end);
    check_contents(&log);
    log.close().unwrap();
}

/// Dictionaries stay for good, so they count against the disk budget: one
/// that does not fit is refused (nothing written), and a reopened log
/// counts those it holds.
#[test]
fn dictionaries_count_against_the_disk_budget() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        prepare_ahead: false,
        ..options(4 * SEGMENT, WhenFull::Block)
    };
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let before = log.metrics().disk_bytes;
    let room = 4 * SEGMENT - before;
    let too_big = vec![7u8; room as usize + 1];
    let refused = log.dictionaries().insert(&too_big);
    assert!(
        matches!(refused, Err(shipper_core::Error::Full { .. })),
        "{refused:?}"
    );
    assert_eq!(log.dictionaries().len(), 0);
    let small = vec![9u8; 1000];
    log.dictionaries().insert(&small).unwrap();
    assert_eq!(log.metrics().disk_bytes, before + 1000);
    log.close().unwrap();
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(
        log.metrics().disk_bytes,
        before + 1000,
        "counted after a reopen"
    );
    log.close().unwrap();
}
