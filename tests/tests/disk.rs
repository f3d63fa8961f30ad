//! A full disk and a failing flush.
//!
//! * On a real, tiny tmpfs (when the test may mount one) the append that
//!   needs a segment the disk cannot hold fails with `DiskFull`; the process
//!   never takes a SIGBUS, what was durable reads back, and appends resume
//!   once space is freed.
//! * Through the fault seam, the same error path runs everywhere.
//! * A failed flush poisons the log for good (retrying an fsync is unsound,
//!   see `core/src/log/writer.rs`); reopening recovers every record that was
//!   acknowledged durable before it.

use std::ops::Range;
use std::time::Duration;

use shipper_core::log::{Durability, Faults, Log, LogOptions, OnDiskFull};
use shipper_core::Error;
use shipper_tests::records::{self, fixed_chunk, fixed_record};
use shipper_tests::TmpfsMount;

const SEGMENT: u64 = 16 << 10;
const RECORDS_PER_CHUNK: u64 = 4;
const RECORD_LEN: usize = 1000;

fn expected(offset: u64) -> Vec<u8> {
    fixed_record(offset, RECORD_LEN)
}

/// Appends one fixed-size chunk at the log's next offset and waits until it is durable.
fn append_one(log: &Log) -> shipper_core::Result<Range<u64>> {
    let first = log.next_offset();
    log.append(fixed_chunk(first, RECORDS_PER_CHUNK, RECORD_LEN))?
        .wait_durable()
}

fn chunks_per_segment() -> u64 {
    let padded = fixed_chunk(0, RECORDS_PER_CHUNK, RECORD_LEN)
        .frame_len()
        .div_ceil(8)
        * 8;
    ((SEGMENT as usize - 64) / padded) as u64
}

fn seam_options(faults: &Faults, prepare_ahead: bool, durability: Durability) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT,
        max_bytes: 1 << 30,
        durability,
        prepare_ahead,
        faults: faults.clone(),
        ..LogOptions::default()
    }
}

#[test]
fn a_real_full_disk_fails_the_append_and_recovers_when_space_is_freed() {
    let base = tempfile::tempdir().unwrap();
    let _mount = match TmpfsMount::mount(base.path(), "2m") {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("SKIPPED a_real_full_disk_fails_the_append...: cannot mount a 2 MiB tmpfs: {reason}");
            return;
        }
    };
    let dir = base.path().join("data");
    // Declared after the mount: dropped (closed, unmapped) before the unmount.
    let options = LogOptions {
        segment_bytes: 512 << 10,
        max_bytes: 1 << 30,
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let log = Log::open(&dir, options.clone()).unwrap();
    log.open_cursor("sink").unwrap();

    let mut acknowledged = 0;
    let full_at = loop {
        let first = log.next_offset();
        assert!(first < 1_000_000, "2 MiB never filled up");
        let chunk = records::chunk(first, records::chunk_len(first));
        match log.append(chunk).and_then(|ticket| ticket.wait_durable()) {
            Ok(range) => acknowledged = range.end,
            Err(Error::DiskFull { path, bytes, .. }) => {
                assert!(path.starts_with(&dir), "{}", path.display());
                assert!(bytes >= 512 << 10);
                break first;
            }
            Err(other) => panic!("append on a full disk: expected DiskFull, got {other}"),
        }
    };
    assert!(acknowledged > 0 && full_at == acknowledged);
    assert_eq!(
        log.next_offset(),
        acknowledged,
        "a failed append took no offsets"
    );
    // Still full: the same chunk fails again, with an error, not a crash.
    let again = log
        .append(records::chunk(full_at, records::chunk_len(full_at)))
        .and_then(|ticket| ticket.wait());
    assert!(matches!(again, Err(Error::DiskFull { .. })), "{again:?}");
    // What was durable reads back.
    let seen = records::read_and_check(&log, 0, records::record);
    assert_eq!(seen.end, Some(acknowledged));

    // The consumer acknowledges everything: sealed segments go, space returns.
    log.commit_cursor("sink", acknowledged).unwrap();
    assert!(log.metrics().segments_deleted > 0);
    let mut end = acknowledged;
    for _ in 0..20 {
        let count = records::chunk_len(end);
        let range = log
            .append(records::chunk(end, count))
            .and_then(|ticket| ticket.wait_durable())
            .expect("append after space was freed");
        assert_eq!(range, end..end + count);
        end = range.end;
    }
    let start = log.start_offset();
    assert_eq!(
        records::read_and_check(&log, start, records::record).end,
        Some(end)
    );
    log.close().unwrap();

    // Reopening deletes what the cursor passed meanwhile, nothing beyond it.
    let log = Log::open(&dir, options).unwrap();
    assert_eq!(log.next_offset(), end);
    let start = log.start_offset();
    assert!(start <= acknowledged, "{start}");
    let seen = records::read_and_check(&log, start, records::record);
    assert_eq!(seen.first, Some(start));
    assert_eq!(seen.end, Some(end));
    log.close().unwrap();
}

#[test]
fn injected_disk_full_fails_the_append_that_needs_a_segment() {
    let cps = chunks_per_segment();
    for prepare_ahead in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        let options = seam_options(&faults, prepare_ahead, Durability::Always);
        let log = Log::open(dir.path(), options).unwrap();
        append_one(&log).unwrap();
        faults.set_disk_full(true);
        let mut appended = 0;
        let error = loop {
            match append_one(&log) {
                Ok(_) => appended += 1,
                Err(error) => break error,
            }
            assert!(appended <= 2 * cps, "appends go on with the disk full");
        };
        // Without a prepared segment the first roll fails; with one, the
        // roll after it (the next preparation fails too).
        let allowed = if prepare_ahead {
            vec![cps - 1, 2 * cps - 1]
        } else {
            vec![cps - 1]
        };
        assert!(
            allowed.contains(&appended),
            "{appended} appends, expected {allowed:?}"
        );
        match &error {
            Error::DiskFull { path, .. } => {
                assert!(
                    path.starts_with(dir.path().join("segments")),
                    "{}",
                    path.display()
                )
            }
            other => panic!("expected DiskFull, got {other}"),
        }
        let failed_at = log.next_offset();
        assert!(matches!(append_one(&log), Err(Error::DiskFull { .. })));
        assert_eq!(log.next_offset(), failed_at);
        log.flush().unwrap();

        faults.set_disk_full(false);
        let range = append_one(&log).unwrap();
        assert_eq!(range.start, failed_at, "offsets continue without a gap");
        for _ in 0..2 * cps {
            append_one(&log).unwrap();
        }
        let end = log.next_offset();
        assert_eq!(records::read_and_check(&log, 0, expected).end, Some(end));
        log.close().unwrap();

        let log = Log::open(
            dir.path(),
            LogOptions {
                faults: Faults::default(),
                ..seam_options(&faults, prepare_ahead, Durability::Always)
            },
        )
        .unwrap();
        assert!(
            log.recovery_report().is_clean(),
            "{}",
            log.recovery_report()
        );
        assert_eq!(log.next_offset(), end);
        let seen = records::read_and_check(&log, 0, expected);
        assert_eq!((seen.first, seen.end), (Some(0), Some(end)));
        log.close().unwrap();
    }
}

#[test]
fn a_failed_flush_poisons_the_log_and_reopening_recovers_what_was_durable() {
    let cps = chunks_per_segment();
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(2)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        let log = Log::open(dir.path(), seam_options(&faults, true, durability)).unwrap();
        // Enough appends before the failure to cross a segment boundary.
        for _ in 0..cps + 1 {
            append_one(&log).unwrap();
        }
        faults.fail_flush_after(3);
        let mut acknowledged = log.next_offset();
        let mut durable_appends = 0;
        let error = loop {
            match append_one(&log) {
                Ok(range) => {
                    acknowledged = range.end;
                    durable_appends += 1;
                }
                Err(error) => break error,
            }
            assert!(durable_appends <= 100, "flushes never fail");
        };
        // One flush per durable append: the fourth one failed.
        assert_eq!(durable_appends, 3, "{durability:?}");
        assert!(
            matches!(error, Error::Poisoned(_)),
            "{durability:?}: {error}"
        );
        assert_eq!(log.durable_offset(), acknowledged);

        // Poisoned for good, and no flush is retried.
        let flushes = log.metrics().flushes;
        assert!(matches!(append_one(&log), Err(Error::Poisoned(_))));
        assert!(matches!(log.flush(), Err(Error::Poisoned(_))));
        assert!(matches!(
            log.wait_durable(log.next_offset()),
            Err(Error::Poisoned(_))
        ));
        assert!(matches!(
            log.wait_durable_timeout(log.next_offset(), Duration::from_secs(10)),
            Err(Error::Poisoned(_))
        ));
        assert_eq!(
            log.metrics().flushes,
            flushes,
            "a failed flush must not be retried"
        );
        // Readers see only what was durable.
        assert_eq!(
            records::read_and_check(&log, 0, expected).end,
            Some(acknowledged)
        );
        assert!(matches!(log.close(), Err(Error::Poisoned(_))));

        // Reopening recovers every acknowledged record; the chunk whose
        // flush failed may be there too, but then intact.
        let log = Log::open(
            dir.path(),
            seam_options(&Faults::default(), true, durability),
        )
        .unwrap();
        assert!(log.next_offset() >= acknowledged);
        let seen = records::read_and_check(&log, 0, expected);
        assert_eq!(seen.first, Some(0));
        assert_eq!(seen.end, Some(log.next_offset()));
        let range = append_one(&log).unwrap();
        assert_eq!(range.start, seen.end.unwrap());
        log.close().unwrap();
    }
}

/// Out of file descriptors (EMFILE) when a segment must be created: the
/// writer tries again with a backoff while the append waits, instead of
/// failing or stopping; the log stays healthy.
#[test]
fn a_segment_that_cannot_be_created_for_want_of_descriptors_is_tried_again() {
    let cps = chunks_per_segment();
    for prepare_ahead in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        let log = Log::open(
            dir.path(),
            seam_options(&faults, prepare_ahead, Durability::Always),
        )
        .unwrap();
        append_one(&log).unwrap();
        const EMFILE: i32 = 24; // Linux: "Too many open files"
        faults.fail_creations_with(EMFILE, 3);
        for _ in 0..3 * cps {
            append_one(&log).expect("appends wait for descriptors, they do not fail");
        }
        let metrics = log.metrics();
        assert!(metrics.transient_errors >= 1, "{metrics:?}");
        assert!(metrics.segments_created >= 2, "{metrics:?}");
        assert_eq!(log.poisoned(), None);
        let end = log.next_offset();
        assert_eq!(records::read_and_check(&log, 0, expected).end, Some(end));
        log.close().unwrap();
    }
}

/// Under `OnDiskFull::Wait` a full disk is backpressure, like the disk
/// budget: appends wait, the log says it is full, and everything resumes
/// by itself once a segment can be created again.
#[test]
fn under_wait_a_full_disk_makes_appends_wait_and_resume() {
    let cps = chunks_per_segment();
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let options = LogOptions {
        on_disk_full: OnDiskFull::Wait,
        ..seam_options(&faults, false, Durability::Always)
    };
    let log = Log::open(dir.path(), options).unwrap();
    append_one(&log).unwrap();
    faults.set_disk_full(true);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let appender = scope.spawn(|| {
            for _ in 0..2 * cps {
                append_one(&log).unwrap();
            }
            done.send(()).unwrap();
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !log.disk_full() {
            assert!(std::time::Instant::now() < deadline, "never reported full");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(log.is_full());
        assert_eq!(
            finished.recv_timeout(Duration::from_millis(300)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout),
            "appends wait while the disk is full"
        );
        faults.set_disk_full(false);
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("appends resume once space is freed");
        appender.join().unwrap();
    });
    assert!(!log.disk_full() && !log.is_full());
    let metrics = log.metrics();
    assert_eq!((metrics.disk_full_waits, metrics.disk_full), (1, 0));
    let end = log.next_offset();
    assert_eq!(records::read_and_check(&log, 0, expected).end, Some(end));
    log.close().unwrap();
}
