//! Hostile sizes and bytes found in review: each case once made the log
//! lose data, reuse offsets, panic or hang. Every test here failed before
//! its fix.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use shipper_core::chunk::{ChunkBuilder, ChunkOptions, ClosedChunk, Compression};
use shipper_core::log::segment::{FormatVersion, SegmentHeader};
use shipper_core::log::{Durability, Faults, Log, LogOptions, WhenFull};
use shipper_core::Error;

/// Opening and reading must finish within this, whatever the bytes.
const HANG_LIMIT: Duration = Duration::from_secs(30);

fn chunk_of(len: usize, count: usize, fill: u8) -> ClosedChunk {
    let options = ChunkOptions {
        max_bytes: 64 << 20,
        compression: Compression::None,
        ..ChunkOptions::default()
    };
    let mut builder = ChunkBuilder::new("s", "c", options).unwrap();
    for i in 0..count {
        let mut record = vec![fill; len];
        record[0] = b'0' + (i % 10) as u8;
        assert!(builder.push(&record, 1, None).unwrap().is_none());
    }
    builder.finish().unwrap().unwrap()
}

fn header(base: u64) -> [u8; 64] {
    SegmentHeader {
        version: FormatVersion::V1,
        base_offset: base,
        producer_id: [0; 16],
        created_ms: 0,
        durable_end: 0,
        flags: 0,
    }
    .encode()
}

fn write_cursor(dir: &Path, name: &str, offset: u64) {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(b"SHCURSR1");
    out[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c(&out[..28]);
    out[28..].copy_from_slice(&crc.to_le_bytes());
    std::fs::create_dir_all(dir.join("cursors")).unwrap();
    std::fs::write(dir.join("cursors").join(format!("{name}.cur")), out).unwrap();
}

/// CRC-32C, bit by bit: independent of the code under test.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn within_limit<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(HANG_LIMIT)
        .expect("finished within the hang limit")
}

const SEGMENT: u64 = 16 << 10;

fn budget_options(when_full: WhenFull) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT,
        max_bytes: 3 * SEGMENT,
        when_full,
        durability: Durability::Always,
        ..LogOptions::default()
    }
}

#[test]
fn a_chunk_that_can_never_fit_the_budget_is_refused_and_drops_nothing() {
    for when_full in [WhenFull::DropOldest, WhenFull::Block] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), budget_options(when_full)).unwrap();
        for _ in 0..5 {
            log.append(chunk_of(3000, 2, b'x'))
                .unwrap()
                .wait_durable()
                .unwrap();
        }
        // 40 KiB: the active segment (16 KiB) plus a segment for it exceed
        // the 48 KiB budget whatever is deleted.
        let ticket = log.append(chunk_of(20_000, 2, b'y')).unwrap();
        let outcome = within_limit(move || ticket.wait());
        assert!(
            matches!(outcome, Err(Error::ChunkTooLarge { .. })),
            "{when_full:?}: {outcome:?}"
        );
        let metrics = log.metrics();
        assert_eq!(metrics.records_dropped, 0, "{when_full:?}");
        assert!(!log.is_full(), "{when_full:?}");
        // The log goes on.
        let range = log
            .append(chunk_of(100, 1, b'z'))
            .unwrap()
            .wait_durable()
            .unwrap();
        assert_eq!(range, 10..11, "{when_full:?}");
    }
}

#[test]
fn offsets_near_the_end_of_the_range_on_disk_are_corruption_not_a_panic() {
    // A valid-looking cursor at u64::MAX - 1.
    let dir = tempfile::tempdir().unwrap();
    write_cursor(dir.path(), "evil", u64::MAX - 1);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(
        log.recovery_report().cursor_repairs.len(),
        1,
        "{}",
        log.recovery_report()
    );
    assert_eq!(
        log.append(chunk_of(10, 5, b'a')).unwrap().wait().unwrap(),
        0..5
    );
    log.close().unwrap();

    // A garbage file named like a segment near u64::MAX.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    std::fs::write(
        dir.path().join("segments/18446744073709551000.seg"),
        vec![0xAA; 128],
    )
    .unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.recovery_report().quarantined.len(), 1);
    assert_eq!(
        log.append(chunk_of(10, 5, b'a')).unwrap().wait().unwrap(),
        0..5
    );
    log.close().unwrap();

    // A chunk with a correct CRC whose offsets run past the largest offset.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    let mut frame = chunk_of(10, 5, b'a').into_frame();
    shipper_core::chunk::seal_for_test(&mut frame, u64::MAX - 2);
    let mut bytes = header(0).to_vec();
    bytes.extend_from_slice(&frame);
    bytes.resize(1 << 16, 0);
    std::fs::write(dir.path().join("segments/00000000000000000000.seg"), bytes).unwrap();
    let path = dir.path().to_owned();
    let log = within_limit(move || Log::open(&path, LogOptions::default()).unwrap());
    assert!(!log.recovery_report().is_clean());
    assert_eq!(log.reader(0).count(), 0);
    assert_eq!(
        log.append(chunk_of(10, 5, b'a')).unwrap().wait().unwrap(),
        0..5
    );
}

#[test]
fn a_short_empty_newest_segment_is_replaced_not_shadowed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    let mut bytes = header(0).to_vec();
    bytes.resize(64 + 100, 0);
    std::fs::write(dir.path().join("segments/00000000000000000000.seg"), bytes).unwrap();
    let options = LogOptions {
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options.clone()).unwrap();
    assert_eq!(log.metrics().segments, 1);
    log.commit_cursor("sink", 0).unwrap();
    let range = log
        .append(chunk_of(100, 10, b'a'))
        .unwrap()
        .wait_durable()
        .unwrap();
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), options).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    assert_eq!(log.next_offset(), range.end);
    assert_eq!(log.reader(0).count(), 1, "durable chunk {range:?} lost");
}

#[test]
fn crafted_magic_everywhere_cannot_make_recovery_quadratic() {
    // The chunk magic every 16 bytes, each copy declaring a 1 MiB frame:
    // took about 50 s to open in a debug build before the CRC budget.
    let mut bytes = header(0).to_vec();
    while bytes.len() + 16 <= 2 << 20 {
        bytes.extend_from_slice(b"SHC1");
        bytes.extend_from_slice(&[0xEE; 4]);
        bytes.extend_from_slice(&(1u32 << 20).to_le_bytes());
        bytes.extend_from_slice(&56u16.to_le_bytes());
        bytes.extend_from_slice(&[0, 0]);
    }
    bytes.resize(2 << 20, 0xEE);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    std::fs::write(dir.path().join("segments/00000000000000000000.seg"), bytes).unwrap();
    let path = dir.path().to_owned();
    let report = within_limit(move || {
        let report = shipper_core::log::inspect(&path).unwrap();
        let log = Log::open(&path, LogOptions::default()).unwrap();
        assert_eq!(
            log.append(chunk_of(10, 1, b'a'))
                .unwrap()
                .wait()
                .unwrap()
                .start,
            0
        );
        report
    });
    assert!(report.has_corruption());
}

#[test]
fn a_damaged_last_chunk_that_was_durable_never_gets_its_offsets_reused() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options.clone()).unwrap();
    log.append(chunk_of(100, 5, b'a'))
        .unwrap()
        .wait_durable()
        .unwrap();
    let shipped = log
        .append(chunk_of(100, 5, b'b'))
        .unwrap()
        .wait_durable()
        .unwrap();
    assert_eq!(
        log.reader(0).count(),
        2,
        "both chunks were readable, so shippable"
    );
    log.close().unwrap();
    drop(log);
    let path = dir.path().join("segments/00000000000000000000.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.iter().rposition(|&b| b == b'b').unwrap();
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let log = Log::open(dir.path(), options.clone()).unwrap();
    assert_eq!(
        log.recovery_report().lost_offsets,
        vec![(shipped.start, shipped.end)]
    );
    let next = log
        .append(chunk_of(100, 5, b'c'))
        .unwrap()
        .wait_durable()
        .unwrap();
    assert!(
        next.start >= shipped.end,
        "{next:?} reuses offsets of {shipped:?}"
    );
    log.close().unwrap();
    drop(log);
    // The repair is on disk: the next open is clean and the gap is known.
    let log = Log::open(dir.path(), options).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    let mut reader = log.reader(0);
    assert_eq!(reader.next().unwrap().unwrap().end_offset(), 5);
    assert_eq!(reader.next().unwrap().unwrap().first_offset(), next.start);
    assert_eq!(reader.take_gap(), Some((shipped.start, shipped.end)));
}

#[test]
fn a_segment_of_zeros_is_an_interrupted_creation_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(chunk_of(10, 3, b'a'))
        .unwrap()
        .wait_durable()
        .unwrap();
    log.close().unwrap();
    drop(log);
    // A segment renamed into place whose header never reached the disk.
    let zeros = dir.path().join("segments/00000000000000000003.seg");
    std::fs::write(&zeros, vec![0u8; 1 << 16]).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let report = log.recovery_report();
    assert!(report.quarantined.is_empty(), "{report}");
    assert_eq!(report.removed_files, vec![zeros.clone()]);
    assert!(!zeros.exists());
    assert_eq!(log.next_offset(), 3);
}

#[test]
fn a_panicking_writer_releases_everybody_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let log = Log::open(
        dir.path(),
        LogOptions {
            durability: Durability::Interval(Duration::from_secs(3600)),
            faults: faults.clone(),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let waiter = {
        let log = log.clone();
        std::thread::spawn(move || log.wait_durable(1))
    };
    log.append(chunk_of(10, 1, b'a')).unwrap().wait().unwrap();
    faults.panic_on_flush();
    assert!(log.flush().is_err());
    let outcome = within_limit(move || waiter.join().unwrap());
    assert!(matches!(outcome, Err(Error::Poisoned(_))), "{outcome:?}");
    assert!(log.append(chunk_of(10, 1, b'a')).is_err());
}

#[test]
fn a_full_disk_at_open_does_not_keep_the_log_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(chunk_of(10, 3, b'a'))
        .unwrap()
        .wait_durable()
        .unwrap();
    log.close().unwrap();
    drop(log);
    // A cursor ahead of the data (records acknowledged, then lost in a
    // machine crash under `never`) makes open start a new segment at 100;
    // the disk is full.
    write_cursor(dir.path(), "sink", 100);
    let faults = Faults::default();
    faults.set_disk_full(true);
    let options = LogOptions {
        faults: faults.clone(),
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).expect("a full disk does not stop the open");
    assert_eq!(log.next_offset(), 100);
    assert_eq!(
        log.reader(0).count(),
        1,
        "stored data stays readable for sinks"
    );
    let refused = log.append(chunk_of(10, 1, b'b')).unwrap().wait();
    assert!(
        matches!(refused, Err(Error::DiskFull { .. })),
        "{refused:?}"
    );
    faults.set_disk_full(false);
    let range = log
        .append(chunk_of(10, 2, b'c'))
        .unwrap()
        .wait_durable()
        .unwrap();
    assert_eq!(range, 100..102);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), 102);
    // The cursor at 100 had acknowledged the first segment: now deleted.
    assert_eq!(log.start_offset(), 100);
    let ends: Vec<u64> = log.reader(0).map(|c| c.unwrap().end_offset()).collect();
    assert_eq!(ends, vec![102]);
}

#[test]
fn inspect_refuses_a_huge_sparse_segment_instead_of_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    let huge = dir.path().join("segments/00000000000000000000.seg");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(9 << 30)
        .unwrap();
    let report = within_limit({
        let path = dir.path().to_owned();
        move || shipper_core::log::inspect(&path).unwrap()
    });
    assert!(report.has_corruption());
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == "too_large" && f.path == huge),
        "{:?}",
        report.findings
    );
}
