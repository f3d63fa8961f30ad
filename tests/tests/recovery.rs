//! Recovery: whatever is done to the bytes of a closed data directory, the
//! log opens, returns exactly the records that were written whole (at their
//! offsets), reports what it repaired, and takes appends again.
//!
//! * every cut (truncation or zeroing to the end) of the newest segment
//!   within its last chunks;
//! * random byte flips anywhere in the segment files (seeded);
//! * garbage files: random, empty, misnamed and truncated segments, a
//!   corrupt cursor and a corrupt producer id, which `inspect` must report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shipper_core::chunk::frame::padded_len;
use shipper_core::chunk::{
    decode_body, ChunkBuilder, ChunkOptions, ChunkView, Compression, Decoder,
};
use shipper_core::log::segment::{
    parse_segment_file_name, segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN,
};
use shipper_core::log::{inspect, Durability, Log, LogOptions, RecoveryReport};
use shipper_tests::copy_dir;

const SEGMENT_BYTES: u64 = 8192;
const CURSOR: &str = "sink";
/// Opening and reading a damaged directory must finish within this.
const HANG_LIMIT: Duration = Duration::from_secs(20);

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_bytes: 1 << 30,
        durability: Durability::Never,
        prepare_ahead: false,
        ..LogOptions::default()
    }
}

/// Where one chunk sits in a segment file.
#[derive(Debug, Clone, Copy)]
struct ChunkPos {
    start: usize,
    frame_end: usize,
    first: u64,
    end: u64,
}

#[derive(Debug)]
struct SegmentLayout {
    name: String,
    base: u64,
    chunks: Vec<ChunkPos>,
}

/// A closed log written once and copied for every damage.
struct Pristine {
    dir: tempfile::TempDir,
    /// Record bytes by offset.
    records: Vec<Vec<u8>>,
    segments: Vec<SegmentLayout>,
}

impl Pristine {
    fn end(&self) -> u64 {
        self.records.len() as u64
    }

    fn copy_to(&self, to: &Path) {
        if to.exists() {
            std::fs::remove_dir_all(to).unwrap();
        }
        copy_dir(self.dir.path(), to);
    }

    fn newest(&self) -> &SegmentLayout {
        self.segments.last().unwrap()
    }
}

/// Writes 130 small chunks (1-4 short records, some multi-line, some zstd)
/// into segments of 8 KiB: three segments, chunks of well under 300 bytes.
fn write_pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let log = Log::open(dir.path(), options()).unwrap();
    log.commit_cursor(CURSOR, 0).unwrap();
    let mut records = Vec::new();
    for chunk_index in 0..130 {
        let compression = if chunk_index % 3 == 0 {
            Compression::Zstd { level: 1 }
        } else {
            Compression::None
        };
        let chunk_options = ChunkOptions {
            compression,
            ..ChunkOptions::default()
        };
        let mut builder = ChunkBuilder::new("app", "recovery", chunk_options).unwrap();
        let count = rng.random_range(1..=4);
        let mut these = Vec::new();
        for r in 0..count {
            let len = rng.random_range(0..40);
            let mut record: Vec<u8> = (0..len).map(|_| rng.random_range(b' '..=b'~')).collect();
            if len > 2 && rng.random_bool(0.2) {
                record[len / 2] = b'\n';
            }
            builder
                .push(&record, (chunk_index * 10 + r) as u64, None)
                .unwrap();
            these.push(record);
        }
        let range = log
            .append(builder.finish().unwrap().unwrap())
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(
            range,
            records.len() as u64..(records.len() + these.len()) as u64
        );
        records.extend(these);
    }
    log.close().unwrap();
    drop(log);
    let segments = layout(dir.path());
    assert!(segments.len() >= 3, "{segments:?}");
    assert_eq!(
        segments.last().unwrap().chunks.last().unwrap().end,
        records.len() as u64
    );
    for chunk in &segments.last().unwrap().chunks {
        assert!(chunk.frame_end - chunk.start < 300);
    }
    Pristine {
        dir,
        records,
        segments,
    }
}

/// The chunks of every segment file in `dir`, parsed from the bytes.
fn layout(dir: &Path) -> Vec<SegmentLayout> {
    let mut segments: Vec<SegmentLayout> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let base = parse_segment_file_name(&name)?;
            Some(SegmentLayout {
                name,
                base,
                chunks: Vec::new(),
            })
        })
        .collect();
    segments.sort_by_key(|s| s.base);
    for segment in &mut segments {
        let bytes = std::fs::read(dir.join("segments").join(&segment.name)).unwrap();
        let mut pos = SEGMENT_HEADER_LEN;
        while let Ok(view) = ChunkView::parse(&bytes[pos..]) {
            segment.chunks.push(ChunkPos {
                start: pos,
                frame_end: pos + view.frame().len(),
                first: view.first_offset(),
                end: view.end_offset(),
            });
            pos += padded_len(view.frame().len());
        }
    }
    segments
}

/// Runs `work` on another thread and fails if it does not finish in
/// [`HANG_LIMIT`]; a panic in `work` is re-raised here.
fn without_hang<T: Send + 'static>(what: String, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = done.send(work());
    });
    match result.recv_timeout(HANG_LIMIT) {
        Ok(value) => {
            handle.join().unwrap();
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: did not finish within {HANG_LIMIT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
    }
}

/// Every record the log returns from `offset`, with its offset.
fn read_all(log: &Log, offset: u64) -> Vec<(u64, Vec<u8>)> {
    let mut decoder = Decoder::default();
    let mut records = Vec::new();
    for chunk in log.reader(offset) {
        let chunk = chunk.expect("recovery leaves no damage for readers to find");
        let view = chunk.view();
        let body = decode_body(&view, &mut decoder).expect("a stored chunk decodes");
        let before = records.len();
        for (offset, record) in (chunk.first_offset()..).zip(body.records()) {
            records.push((
                offset,
                record.expect("a stored chunk's records decode").to_vec(),
            ));
        }
        assert_eq!(
            (records.len() - before) as u64,
            chunk.end_offset() - chunk.first_offset()
        );
    }
    records
}

/// Opens `dir` (guarded against hangs) and reads everything.
fn open_and_read(dir: &Path) -> (Log, Vec<(u64, Vec<u8>)>) {
    let dir = dir.to_owned();
    without_hang(format!("opening {}", dir.display()), move || {
        let log = Log::open(&dir, options()).expect("a damaged directory still opens");
        let records = read_all(&log, 0);
        (log, records)
    })
}

/// Appends a chunk and checks it gets the next offset and reads back.
fn check_appends_continue(log: &Log) -> u64 {
    let next = log.next_offset();
    let mut builder = ChunkBuilder::new("app", "after", ChunkOptions::default()).unwrap();
    builder.push(b"after recovery", 1, None).unwrap();
    builder.push(b"two\nlines", 2, None).unwrap();
    let range = log
        .append(builder.finish().unwrap().unwrap())
        .unwrap()
        .wait_durable()
        .unwrap();
    assert_eq!(range, next..next + 2);
    let read = read_all(log, next);
    assert_eq!(
        read,
        vec![
            (next, b"after recovery".to_vec()),
            (next + 1, b"two\nlines".to_vec())
        ]
    );
    next
}

fn records_below(pristine: &Pristine, end: u64) -> Vec<(u64, Vec<u8>)> {
    (0..end)
        .map(|o| (o, pristine.records[o as usize].clone()))
        .collect()
}

fn report_without_truncations(report: &RecoveryReport) -> RecoveryReport {
    RecoveryReport {
        truncated: Vec::new(),
        removed_files: Vec::new(),
        ..report.clone()
    }
}

/// Sets the durable end in the header of the segment at `path` to
/// `durable_end` (0: unknown, as after a crash before the writer first
/// wrote one).
fn set_durable_end(path: &Path, durable_end: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut header = SegmentHeader::decode(&bytes).unwrap();
    header.durable_end = durable_end;
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
    std::fs::write(path, &bytes).unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The file ends at the position.
    Truncate,
    /// Zeros from the position to the end (a preallocated file after a crash).
    Zero,
}

#[test]
fn every_cut_of_the_newest_segment_keeps_what_was_whole() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    let newest = pristine.newest();
    let chunks = &newest.chunks;
    let tail = &chunks[chunks.len().saturating_sub(3)..];
    let from = tail[0].start;
    let to = padded_len(tail.last().unwrap().frame_end) + 8;
    let mut truncations = 0;
    let original = std::fs::read(pristine.dir.path().join("segments").join(&newest.name)).unwrap();
    for cut in [Cut::Truncate, Cut::Zero] {
        for position in from..=to {
            pristine.copy_to(&work);
            let path = work.join("segments").join(&newest.name);
            // A crash before the writer recorded anything durable: what
            // is cut is a torn tail (`a_tail_destroyed_after_it_was_durable_is_lost_and_counted`
            // covers a header that says otherwise).
            set_durable_end(&path, 0);
            match cut {
                Cut::Truncate => {
                    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    file.set_len(position as u64).unwrap();
                }
                Cut::Zero => {
                    let mut bytes = std::fs::read(&path).unwrap();
                    bytes[position..].fill(0);
                    std::fs::write(&path, &bytes).unwrap();
                }
            }
            // Zeroing bytes that are zero already changes nothing: the
            // cut is effectively at the first non-zero byte.
            let position = match cut {
                Cut::Truncate => position,
                Cut::Zero => original[position..]
                    .iter()
                    .position(|&b| b != 0)
                    .map_or(original.len(), |p| position + p),
            };
            let context = format!("{cut:?} at byte {position}");
            // Chunks wholly before the cut survive; one cut through the
            // middle is a torn tail.
            let whole_end = chunks
                .iter()
                .filter(|c| c.frame_end <= position)
                .map(|c| c.end)
                .max()
                .unwrap_or(newest.base);
            let torn = chunks
                .iter()
                .find(|c| c.start < position && position < c.frame_end);

            let inspected = inspect(&work).unwrap();
            assert_eq!(
                inspected.has_corruption(),
                torn.is_some(),
                "{context}: {:?}",
                inspected.findings
            );
            assert_eq!(inspected.next_offset, whole_end, "{context}");

            let (log, read) = open_and_read(&work);
            let report = log.recovery_report();
            assert!(
                report_without_truncations(report).is_clean(),
                "{context}: {report}"
            );
            match torn {
                Some(chunk) => {
                    truncations += 1;
                    assert_eq!(report.truncated.len(), 1, "{context}: {report}");
                    assert_eq!(
                        report.truncated[0].damage.position, chunk.start as u64,
                        "{context}"
                    );
                    assert!(
                        report.to_string().contains("truncated"),
                        "{context}: {report}"
                    );
                }
                None => assert!(report.truncated.is_empty(), "{context}: {report}"),
            }
            assert_eq!(read.len() as u64, whole_end, "{context}");
            assert!(
                read == records_below(&pristine, whole_end),
                "{context}: records differ"
            );
            assert_eq!(log.next_offset(), whole_end, "{context}");
            assert_eq!(check_appends_continue(&log), whole_end, "{context}");
            log.close().unwrap();
            // And the repaired directory opens clean.
            let again = Log::open(&work, options()).unwrap();
            assert!(
                report_without_truncations(again.recovery_report()).is_clean(),
                "{context}"
            );
            assert!(
                again.recovery_report().truncated.is_empty(),
                "{context}: {}",
                again.recovery_report()
            );
            assert_eq!(again.next_offset(), whole_end + 2, "{context}");
            again.close().unwrap();
        }
    }
    assert!(
        truncations > 500,
        "only {truncations} cuts went through a chunk"
    );
}

#[test]
fn flipped_bytes_never_lose_untouched_chunks() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut detected = 0;
    for iteration in 0..200 {
        pristine.copy_to(&work);
        let mut touched_chunks: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut touched_header = false;
        let mut flips = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let index = rng.random_range(0..pristine.segments.len());
            let segment = &pristine.segments[index];
            let path = work.join("segments").join(&segment.name);
            let mut bytes = std::fs::read(&path).unwrap();
            let used = segment
                .chunks
                .last()
                .map_or(SEGMENT_HEADER_LEN, |c| padded_len(c.frame_end));
            let position = if rng.random_bool(0.8) {
                rng.random_range(0..used)
            } else {
                rng.random_range(0..bytes.len())
            };
            bytes[position] ^= rng.random_range(1..=255u8);
            std::fs::write(&path, &bytes).unwrap();
            flips.push((segment.name.clone(), position));
            if position < SEGMENT_HEADER_LEN {
                touched_header = true;
            }
            for (c, chunk) in segment.chunks.iter().enumerate() {
                if chunk.start <= position && position < chunk.frame_end {
                    touched_chunks.insert((index, c));
                }
            }
        }
        let context = format!("iteration {iteration}, flips {flips:?}");
        if touched_header || !touched_chunks.is_empty() {
            detected += 1;
            let inspected = inspect(&work).unwrap();
            assert!(
                inspected.has_corruption(),
                "{context}: {:?}",
                inspected.findings
            );
        }

        let (log, read) = open_and_read(&work);
        // Whatever comes back was written, at that offset, byte for byte.
        let mut previous = None;
        for (offset, record) in &read {
            assert!(previous < Some(*offset), "{context}: offsets out of order");
            previous = Some(*offset);
            assert!(
                pristine.records.get(*offset as usize) == Some(record),
                "{context}: record at {offset} was never written"
            );
        }
        // Nothing untouched is lost.
        let read_offsets: BTreeSet<u64> = read.iter().map(|(offset, _)| *offset).collect();
        let mut untouched_end = 0;
        for (index, segment) in pristine.segments.iter().enumerate() {
            for (c, chunk) in segment.chunks.iter().enumerate() {
                if touched_chunks.contains(&(index, c)) {
                    continue;
                }
                untouched_end = untouched_end.max(chunk.end);
                for offset in chunk.first..chunk.end {
                    assert!(
                        read_offsets.contains(&offset),
                        "{context}: record {offset} of an untouched chunk is missing; report: {}",
                        log.recovery_report()
                    );
                }
            }
        }
        if !touched_chunks.is_empty() {
            assert!(
                !log.recovery_report().is_clean(),
                "{context}: damage not reported"
            );
        }
        let next = check_appends_continue(&log);
        assert!(
            next >= untouched_end,
            "{context}: next offset {next} < {untouched_end}"
        );
        log.close().unwrap();
    }
    assert!(
        detected > 150,
        "only {detected} of 200 iterations damaged something"
    );
}

/// One kind of damage done to a copy of the pristine directory.
struct Garbage {
    name: &'static str,
    /// Damages the directory; returns the file `inspect` must name.
    damage: fn(&Path, &Pristine) -> PathBuf,
    /// The finding kind `inspect` reports for it.
    finding: &'static str,
    /// Checks the recovery report mentions it.
    reported: fn(&RecoveryReport, &Path) -> bool,
}

fn random_segment(dir: &Path, pristine: &Pristine) -> PathBuf {
    let path = dir
        .join("segments")
        .join(segment_file_name(pristine.end() + 7));
    let mut rng = StdRng::seed_from_u64(99);
    let mut bytes = vec![0u8; SEGMENT_BYTES as usize];
    rng.fill(&mut bytes[..]);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn empty_segment(dir: &Path, pristine: &Pristine) -> PathBuf {
    let path = dir
        .join("segments")
        .join(segment_file_name(pristine.end() + 5));
    std::fs::write(&path, b"").unwrap();
    path
}

fn misnamed_file(dir: &Path, _: &Pristine) -> PathBuf {
    let path = dir.join("segments").join("notes.txt");
    std::fs::write(&path, b"not a segment").unwrap();
    path
}

fn truncated_segment(dir: &Path, pristine: &Pristine) -> PathBuf {
    let path = dir.join("segments").join(&pristine.newest().name);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    path
}

fn corrupt_cursor(dir: &Path, _: &Pristine) -> PathBuf {
    let path = dir.join("cursors").join(format!("{CURSOR}.cur"));
    std::fs::write(&path, b"garbage").unwrap();
    path
}

fn corrupt_producer_id(dir: &Path, _: &Pristine) -> PathBuf {
    let path = dir.join("producer_id");
    std::fs::write(&path, b"not a producer id\n").unwrap();
    path
}

fn quarantined(report: &RecoveryReport, path: &Path) -> bool {
    report
        .quarantined
        .iter()
        .any(|q| q.path.file_name() == path.file_name() && q.moved_to.exists())
}

const GARBAGE: &[Garbage] = &[
    Garbage {
        name: "segment of random bytes",
        damage: random_segment,
        finding: "damaged_header",
        reported: quarantined,
    },
    Garbage {
        name: "empty segment",
        damage: empty_segment,
        finding: "damaged_header",
        reported: |report, path| {
            report
                .removed_files
                .iter()
                .any(|r| r.file_name() == path.file_name())
        },
    },
    Garbage {
        name: "file with a bad name",
        damage: misnamed_file,
        finding: "unknown_file",
        reported: quarantined,
    },
    Garbage {
        name: "segment truncated to 10 bytes",
        damage: truncated_segment,
        finding: "damaged_header",
        reported: quarantined,
    },
    Garbage {
        name: "corrupt cursor",
        damage: corrupt_cursor,
        finding: "corrupt_cursor",
        reported: |report, _| {
            report
                .cursor_repairs
                .iter()
                .any(|c| c.name == CURSOR && c.reset_to == 0)
        },
    },
    Garbage {
        name: "corrupt producer id",
        damage: corrupt_producer_id,
        finding: "bad_producer_id",
        reported: |report, _| {
            report
                .producer_id_replaced
                .as_ref()
                .is_some_and(|p| p.exists())
        },
    },
];

#[test]
fn garbage_files_are_reported_and_set_aside() {
    let pristine = write_pristine();
    let original_producer = shipper_core::log::dir::read_producer_id(pristine.dir.path()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    // Each damage alone, then all of them together.
    let mut plans: Vec<Vec<&Garbage>> = GARBAGE.iter().map(|g| vec![g]).collect();
    plans.push(GARBAGE.iter().collect());
    for plan in plans {
        pristine.copy_to(&work);
        let context = plan.iter().map(|g| g.name).collect::<Vec<_>>().join(" + ");
        let damaged: Vec<(&Garbage, PathBuf)> = plan
            .iter()
            .map(|g| (*g, (g.damage)(&work, &pristine)))
            .collect();

        let inspected = inspect(&work).unwrap();
        assert!(
            inspected.has_corruption(),
            "{context}: {:?}",
            inspected.findings
        );
        for (garbage, path) in &damaged {
            assert!(
                inspected.findings.iter().any(|f| f.kind == garbage.finding
                    && f.corruption
                    && f.path.file_name() == path.file_name()),
                "{context}: no {} finding for {}: {:?}",
                garbage.finding,
                path.display(),
                inspected.findings
            );
        }

        let (log, read) = open_and_read(&work);
        let report = log.recovery_report().clone();
        for (garbage, path) in &damaged {
            assert!(
                (garbage.reported)(&report, path),
                "{context}: {} not in the report: {report}",
                garbage.name
            );
        }
        assert!(
            !report.is_clean() || plan.iter().all(|g| g.name == "empty segment"),
            "{context}"
        );
        // The truncated segment's records are gone; everything else is intact.
        let lost_newest = plan
            .iter()
            .any(|g| g.name == "segment truncated to 10 bytes");
        let survive_end = if lost_newest {
            pristine.newest().base
        } else {
            pristine.end()
        };
        assert!(
            read == records_below(&pristine, survive_end),
            "{context}: records differ"
        );
        assert!(log.next_offset() >= survive_end, "{context}");
        if plan.iter().any(|g| g.name == "corrupt cursor") {
            assert_eq!(log.cursor(CURSOR), Some(0), "{context}");
        } else {
            assert_eq!(log.cursor(CURSOR), Some(0));
        }
        if plan.iter().any(|g| g.name == "corrupt producer id") {
            assert_ne!(log.producer_id(), original_producer, "{context}");
        } else {
            assert_eq!(log.producer_id(), original_producer, "{context}");
        }
        check_appends_continue(&log);
        log.close().unwrap();

        // Everything was set aside: the directory is healthy now, except
        // that the lost segment's offsets stay reported as lost.
        let inspected = inspect(&work).unwrap();
        // A quarantined segment may have held any offsets above its base:
        // they stay reported as lost.
        let quarantined_segment =
            lost_newest || plan.iter().any(|g| g.name == "segment of random bytes");
        for finding in inspected.findings.iter().filter(|f| f.corruption) {
            assert!(
                quarantined_segment && finding.kind == "lost_offsets",
                "{context}: {finding:?}"
            );
        }
        let again = Log::open(&work, options()).unwrap();
        let report = again.recovery_report();
        let without_losses = RecoveryReport {
            lost_offsets: Vec::new(),
            ..report.clone()
        };
        assert!(without_losses.is_clean(), "{context}: {report}");
        assert!(
            quarantined_segment || report.is_clean(),
            "{context}: {report}"
        );
        again.close().unwrap();
    }
}

/// Damage recovery repaired stays repaired: the first open reports it, the
/// bytes are healed with a loss marker, and later opens and `inspect` find a
/// consistent log that notes the loss instead of failing on it.
#[test]
fn repaired_damage_is_healed_on_disk() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    // Case 0: a chunk in the middle of a sealed segment; case 1: the last
    // chunk of a sealed segment (no valid chunk follows it in that file).
    for case in 0..2 {
        let work = scratch.path().join(format!("heal-{case}"));
        pristine.copy_to(&work);
        let sealed = &pristine.segments[0];
        let victim = match case {
            0 => sealed.chunks[sealed.chunks.len() / 2],
            _ => *sealed.chunks.last().unwrap(),
        };
        let path = work.join("segments").join(&sealed.name);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[victim.start + 60] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();

        let before = shipper_core::log::inspect(&work).unwrap();
        assert!(
            before.has_corruption(),
            "case {case}: {:?}",
            before.findings
        );

        let (log, records) = open_and_read(&work);
        let report = log.recovery_report().clone();
        assert_eq!(report.skipped.len(), 1, "case {case}: {report}");
        assert_eq!(
            report.lost_offsets,
            vec![(victim.first, victim.end)],
            "case {case}: {report}"
        );
        let expected: Vec<_> = records_below(&pristine, pristine.end())
            .into_iter()
            .filter(|(offset, _)| !(victim.first..victim.end).contains(offset))
            .collect();
        assert_eq!(records, expected, "case {case}");
        for chunk in log.reader(0) {
            chunk.unwrap();
        }
        log.close().unwrap();
        drop(log);

        let after = shipper_core::log::inspect(&work).unwrap();
        assert!(!after.has_corruption(), "case {case}: {:?}", after.findings);
        assert!(
            after.findings.iter().any(|f| f.kind == "repaired_loss"),
            "case {case}: {:?}",
            after.findings
        );
        let (log, again) = open_and_read(&work);
        assert!(
            log.recovery_report().is_clean(),
            "case {case}: {}",
            log.recovery_report()
        );
        assert_eq!(again, expected, "case {case}");
        let mut reader = log.reader(victim.first);
        let chunk = reader.next().unwrap().unwrap();
        assert_eq!(chunk.first_offset(), victim.end, "case {case}");
        assert_eq!(
            reader.take_gap(),
            Some((victim.first, victim.end)),
            "case {case}"
        );
        check_appends_continue(&log);
    }
}

/// Entries of the wrong kind where the layout expects a file or a folder
/// (a file named `segments`, a directory named `lock` or like a cursor)
/// are set aside and reported; the log still opens and works.
#[test]
fn layout_entries_of_the_wrong_kind_are_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("cursors/sink.cur")).unwrap();
    std::fs::create_dir_all(data.join("lock")).unwrap();
    std::fs::write(data.join("segments"), b"not a folder").unwrap();

    let (log, records) = open_and_read(&data);
    assert!(records.is_empty());
    let report = log.recovery_report().clone();
    for name in ["segments", "sink.cur"] {
        assert!(
            report
                .quarantined
                .iter()
                .any(|q| q.path.ends_with(name) && q.moved_to.exists()),
            "{name} not quarantined: {report}"
        );
    }
    assert_eq!(log.cursor("sink"), Some(0), "{report}");
    assert!(data.join("lock").is_file());
    check_appends_continue(&log);
    log.close().unwrap();
    drop(log);
    let (log, records) = open_and_read(&data);
    assert!(
        log.recovery_report().is_clean(),
        "{}",
        log.recovery_report()
    );
    assert_eq!(records.len(), 2);
}

/// The findings of `inspect` that are damage, by kind.
fn corruption_kinds(dir: &Path) -> Vec<&'static str> {
    inspect(dir)
        .unwrap()
        .findings
        .iter()
        .filter(|f| f.corruption)
        .map(|f| f.kind)
        .collect()
}

/// Every record of the pristine log is read back, and the directory opens
/// clean the next time.
fn check_intact_after_open(pristine: &Pristine, work: &Path, context: &str) -> RecoveryReport {
    let (log, read) = open_and_read(work);
    let report = log.recovery_report().clone();
    assert!(report.lost_offsets.is_empty(), "{context}: {report}");
    assert!(
        read == records_below(pristine, pristine.end()),
        "{context}: records differ"
    );
    assert_eq!(log.next_offset(), pristine.end(), "{context}");
    check_appends_continue(&log);
    log.close().unwrap();
    assert!(corruption_kinds(work).is_empty(), "{context}");
    let again = Log::open(work, options()).unwrap();
    assert!(
        again.recovery_report().is_clean(),
        "{context}: {}",
        again.recovery_report()
    );
    again.close().unwrap();
    report
}

#[test]
fn a_segment_renamed_above_the_end_is_placed_by_its_offsets() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    pristine.copy_to(&work);
    let middle = &pristine.segments[1];
    let renamed = work.join("segments").join(segment_file_name(99_999_999));
    std::fs::rename(work.join("segments").join(&middle.name), &renamed).unwrap();

    assert_eq!(corruption_kinds(&work), vec!["misnamed_segment"]);
    let report = check_intact_after_open(&pristine, &work, "renamed above the end");
    assert_eq!(report.renamed.len(), 1, "{report}");
    assert_eq!(
        report.renamed[0].to.file_name().unwrap().to_string_lossy(),
        middle.name
    );
    assert!(
        report.quarantined.is_empty() && report.truncated.is_empty(),
        "{report}"
    );
    assert!(!renamed.exists());
}

#[test]
fn a_segment_renamed_below_its_base_is_placed_by_its_offsets() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    pristine.copy_to(&work);
    // The newest segment, renamed just above the first one's base.
    let newest = pristine.newest();
    std::fs::rename(
        work.join("segments").join(&newest.name),
        work.join("segments").join(segment_file_name(1)),
    )
    .unwrap();
    assert_eq!(corruption_kinds(&work), vec!["misnamed_segment"]);
    let report = check_intact_after_open(&pristine, &work, "renamed below its base");
    assert_eq!(report.renamed.len(), 1, "{report}");
    assert!(
        report.skipped.is_empty() && report.truncated.is_empty(),
        "{report}"
    );
}

#[test]
fn segments_that_swapped_names_swap_back() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    pristine.copy_to(&work);
    let segments = work.join("segments");
    let (a, b) = (&pristine.segments[0].name, &pristine.segments[1].name);
    std::fs::rename(segments.join(a), segments.join("swap")).unwrap();
    std::fs::rename(segments.join(b), segments.join(a)).unwrap();
    std::fs::rename(segments.join("swap"), segments.join(b)).unwrap();
    let report = check_intact_after_open(&pristine, &work, "swapped names");
    assert_eq!(report.renamed.len(), 2, "{report}");
    assert_eq!(layout(&work).len(), pristine.segments.len());
}

#[test]
fn a_copy_of_a_segment_is_set_aside_whole() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    pristine.copy_to(&work);
    let original = work.join("segments").join(&pristine.segments[0].name);
    let copy = work
        .join("segments")
        .join(segment_file_name(pristine.end() + 100));
    std::fs::copy(&original, &copy).unwrap();
    assert_eq!(corruption_kinds(&work), vec!["overlapping_segment"]);
    let report = check_intact_after_open(&pristine, &work, "a copy");
    assert_eq!(report.quarantined.len(), 1, "{report}");
    let moved = &report.quarantined[0].moved_to;
    assert_eq!(
        std::fs::read(moved).unwrap(),
        std::fs::read(&original).unwrap(),
        "the copy is in quarantine, byte for byte"
    );
}

#[test]
fn a_deleted_middle_segment_is_lost_for_inspect_and_for_open() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    pristine.copy_to(&work);
    let middle = &pristine.segments[1];
    let (from, to) = (middle.base, pristine.segments[2].base);
    std::fs::remove_file(work.join("segments").join(&middle.name)).unwrap();

    let inspected = inspect(&work).unwrap();
    let lost: Vec<_> = inspected
        .findings
        .iter()
        .filter(|f| f.kind == "lost_offsets" && f.corruption)
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", inspected.findings);
    assert!(
        lost[0]
            .detail
            .contains(&format!("{from}..{to} ({} records)", to - from)),
        "{:?}",
        lost[0]
    );

    let (log, read) = open_and_read(&work);
    assert_eq!(log.recovery_report().lost_offsets, vec![(from, to)]);
    let expected: Vec<_> = records_below(&pristine, pristine.end())
        .into_iter()
        .filter(|(offset, _)| *offset < from || *offset >= to)
        .collect();
    assert!(read == expected, "every other record is intact");
    let mut reader = log.reader(0);
    while reader.next().is_some() {}
    assert_eq!(reader.take_gap(), Some((from, to)));
    log.close().unwrap();

    // Written down: a note from now on, and no second report.
    assert!(corruption_kinds(&work).is_empty());
    let again = Log::open(&work, options()).unwrap();
    assert!(
        again.recovery_report().is_clean(),
        "{}",
        again.recovery_report()
    );
    again.close().unwrap();
}

#[test]
fn a_deleted_segment_every_cursor_had_passed_is_no_loss() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    pristine.copy_to(&work);
    let middle = &pristine.segments[1];
    std::fs::remove_file(work.join("segments").join(&middle.name)).unwrap();
    let log = Log::open(&work, options()).unwrap();
    log.commit_cursor(CURSOR, pristine.segments[2].base)
        .unwrap();
    log.close().unwrap();
    // (That commit deleted the first segment too: nothing before the
    // cursor is kept.)
    assert!(corruption_kinds(&work).is_empty());
}

/// The newest segment's tail is overwritten with garbage after a clean
/// close: its header says how far the records went, so exactly those are
/// lost, a loss segment records them, and a reader, hence a sink's
/// cursor, passes them.
#[test]
fn a_tail_destroyed_after_it_was_durable_is_lost_and_counted() {
    let pristine = write_pristine();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("data");
    let newest = pristine.newest();
    let mut rng = StdRng::seed_from_u64(4);
    for (case, chunk) in newest.chunks.iter().enumerate().skip(1).step_by(3) {
        pristine.copy_to(&work);
        let path = work.join("segments").join(&newest.name);
        let mut bytes = std::fs::read(&path).unwrap();
        // From inside this chunk's body (its header intact or not) to the
        // end of the file.
        let from = chunk.start + rng.random_range(8..(chunk.frame_end - chunk.start));
        rng.fill(&mut bytes[from..]);
        std::fs::write(&path, &bytes).unwrap();
        let context = format!("case {case}: garbage from byte {from}");

        let lost_from = chunk.first;
        let inspected = inspect(&work).unwrap();
        assert!(inspected.has_corruption(), "{context}");
        assert_eq!(inspected.next_offset, pristine.end(), "{context}");

        let (log, read) = open_and_read(&work);
        let report = log.recovery_report().clone();
        assert_eq!(
            report.lost_offsets,
            vec![(lost_from, pristine.end())],
            "{context}: {report}"
        );
        assert!(read == records_below(&pristine, lost_from), "{context}");
        assert_eq!(log.next_offset(), pristine.end(), "{context}");
        // A consumer at the damage passes it.
        let mut reader = log.reader(lost_from);
        assert!(reader.next().is_none(), "{context}");
        assert_eq!(reader.take_gap(), Some((lost_from, pristine.end())));
        log.commit_cursor(CURSOR, reader.next_offset()).unwrap();
        assert_eq!(check_appends_continue(&log), pristine.end(), "{context}");
        log.close().unwrap();

        let again = Log::open(&work, options()).unwrap();
        assert!(
            again.recovery_report().is_clean(),
            "{context}: {}",
            again.recovery_report()
        );
        again.close().unwrap();
    }
}
