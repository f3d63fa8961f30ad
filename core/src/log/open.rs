//! Opening a data directory: lock, producer id, recovery of every segment
//! and cursor, then the writer and preparer threads.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::cursor::{self, CURSOR_SUFFIX};
use super::dir::{self, DirLock, ProducerIdOutcome, CURSORS_DIR, SEGMENTS_DIR};
use super::mmap::{MapWriter, SegmentMap};
use super::positions::{Positions, POSITIONS_FILE};
use super::recovery::{self, CursorRepair, Damage, Quarantined, RecoveryReport, SegmentDamage};
use super::segment::{
    parse_segment_file_name, sync_dir, PreparedSegment, Segment, SegmentHeader, PREPARED_SUFFIX,
    SEGMENT_HEADER_LEN,
};
use super::writer::{self, Writer};
use super::{Command, Counters, LogOptions, Progress, Shared};
use crate::chunk::frame::{loss_marker, padded_len, FIXED_HEADER_LEN, FRAME_ALIGN, MAX_FRAME_LEN};
use crate::{Error, Result};

pub(crate) struct Opened {
    pub shared: Arc<Shared>,
    pub commands: Sender<Command>,
    pub threads: Vec<JoinHandle<()>>,
    pub report: RecoveryReport,
    pub lock: DirLock,
}

/// A segment file recovery kept, with the writer of its map.
struct Recovered {
    segment: Arc<Segment>,
    writer: MapWriter,
}

pub(crate) fn open(dir: &Path, options: LogOptions) -> Result<Opened> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating data directory", dir, e))?;
    let lock = DirLock::acquire(dir)?;
    let mut report = RecoveryReport::default();
    for (path, moved_to) in dir::create_layout(dir)? {
        report.quarantined.push(Quarantined {
            path,
            moved_to,
            reason: "not a directory".into(),
        });
    }
    let (producer_id, outcome) = dir::load_or_create_producer_id(dir)?;
    if let ProducerIdOutcome::Replaced { moved_to } = outcome {
        report.producer_id_replaced = Some(moved_to);
    }
    let segments_dir = dir.join(SEGMENTS_DIR);
    let cursors_dir = dir.join(CURSORS_DIR);
    let positions = match Positions::load(dir) {
        Ok(positions) => positions,
        Err(reason) => {
            let path = dir.join(POSITIONS_FILE);
            let moved_to = dir::quarantine(dir, &path)?;
            report.quarantined.push(Quarantined {
                path,
                moved_to,
                reason: format!("unusable positions file: {reason}"),
            });
            Positions::default()
        }
    };

    let (mut recovered, quarantined_floor) =
        recover_segments(dir, &segments_dir, &options, &mut report)?;
    let floor = recovered
        .last()
        .map_or(0, |r| r.segment.end_offset())
        .max(quarantined_floor);
    let cursors = recover_cursors(
        &cursors_dir,
        recovered.first().map_or(floor, |r| r.segment.base_offset),
        floor,
        &mut report,
    )?;
    // Offsets never go back, even when the newest data was lost: a cursor
    // may already point past it, and a receiver de-duplicates by offset.
    let next_offset = cursors.values().copied().fold(floor, u64::max);

    let faults = options.faults.clone();
    let counters = Counters::default();
    counters
        .chunks_skipped
        .store(report.skipped.len() as u64, Ordering::Relaxed);
    let disk_bytes: u64 = recovered.iter().map(|r| r.segment.file_bytes).sum();
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        segments_dir: segments_dir.clone(),
        cursors_dir,
        producer_id,
        segments: RwLock::new(Vec::new()),
        next_offset: AtomicU64::new(next_offset),
        durable_offset: AtomicU64::new(next_offset),
        progress: Mutex::new(Progress::default()),
        progress_changed: event_listener::Event::new(),
        space: Mutex::new(()),
        space_freed: Condvar::new(),
        cursors: Mutex::new(cursors),
        deleted_positions: Mutex::new(positions),
        dictionaries: crate::chunk::Dictionaries::open(
            &dir.join(crate::chunk::dictionary::DICTIONARIES_DIR),
        )?,
        disk_bytes: AtomicU64::new(disk_bytes),
        full: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        counters,
        options,
    });

    // The newest segment stays active when its records end at the next
    // offset and it has room; otherwise a fresh one starts at that offset.
    let reuse = recovered.last().is_some_and(|r| {
        r.segment.end_offset() == next_offset
            && r.writer.map().published() + 4096 <= r.segment.map.len()
            // Reserve its blocks again: a copied or restored directory can
            // hold sparse segments, and a write into a hole of a full disk
            // through the map would be a SIGBUS.
            && OpenOptions::new()
                .write(true)
                .open(&r.segment.path)
                .map_err(|e| Error::io("opening segment", &r.segment.path, e))
                .and_then(|file| {
                    super::segment::preallocate(&file, &r.segment.path, r.segment.file_bytes)
                })
                .inspect_err(|error| {
                    tracing::error!(%error, "cannot reserve the newest segment's blocks; starting a new segment");
                })
                .is_ok()
    });
    let mut force_roll = false;
    let (active, active_writer) = if reuse {
        let last = recovered.pop().expect("checked above");
        (last.segment, last.writer)
    } else {
        // A newest segment without records whose base is the next offset
        // (too short to append to) would share its name with the new one.
        if recovered
            .last()
            .is_some_and(|r| r.segment.base_offset == next_offset)
        {
            let empty = recovered.pop().expect("checked above");
            let path = empty.segment.path.clone();
            shared
                .disk_bytes
                .fetch_sub(empty.segment.file_bytes, Ordering::AcqRel);
            drop(empty);
            std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
            report.removed_files.push(path);
        }
        match create_active(&shared, &segments_dir, next_offset, &faults) {
            Ok(activated) => activated,
            Err(error @ Error::DiskFull { .. }) if !recovered.is_empty() => {
                // A full disk must not keep the log closed: sinks could
                // never drain it. Open on the newest segment, which takes no
                // appends; the first append creates the segment it needs,
                // and reports DiskFull itself while the disk stays full.
                tracing::error!(%error, "disk full: no new segment at open; appends fail until space is freed");
                force_roll = true;
                let last = recovered.pop().expect("checked above");
                (last.segment, last.writer)
            }
            Err(error) => return Err(error),
        }
    };
    {
        let mut segments = shared.segments.write().unwrap_or_else(|e| e.into_inner());
        segments.extend(recovered.into_iter().map(|r| r.segment));
        segments.push(active.clone());
    }
    super::budget::collect(&shared);
    report.log(dir);

    let (commands, receiver) = crossbeam_channel::bounded(shared.options.channel_capacity);
    let mut threads = Vec::new();
    let prepare = if shared.options.prepare_ahead {
        let (requests, request_rx) = crossbeam_channel::bounded(1);
        let (result_tx, results) = crossbeam_channel::bounded(1);
        let faults = faults.clone();
        threads.push(
            std::thread::Builder::new()
                .name("shipper-log-prepare".into())
                .spawn(move || writer::run_preparer(request_rx, result_tx, faults))
                .map_err(|e| Error::io("spawning thread", dir, e))?,
        );
        Some((requests, results))
    } else {
        None
    };
    let flushed_to = active_writer.map().published();
    if shared.options.prepare_ahead {
        // The first segment gets the same head start as prepared ones: its
        // pages are faulted in while the writer starts appending.
        let map = active.map.clone();
        threads.push(
            std::thread::Builder::new()
                .name("shipper-log-prefault".into())
                .spawn(move || map.prefault_from(flushed_to))
                .map_err(|e| Error::io("spawning thread", dir, e))?,
        );
    }
    let writer = Writer {
        shared: shared.clone(),
        commands: receiver,
        active,
        active_writer,
        unflushed: Vec::new(),
        flushed_to,
        dir_dirty: false,
        dirty: false,
        last_flush: Instant::now(),
        prepare,
        preparing: None,
        prepared: None,
        prepare_seq: 0,
        faults,
        force_roll,
    };
    threads.insert(
        0,
        std::thread::Builder::new()
            .name("shipper-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io("spawning thread", dir, e))?,
    );
    Ok(Opened {
        shared,
        commands,
        threads,
        report,
        lock,
    })
}

/// Creates the active segment at `base`, durable with its name.
fn create_active(
    shared: &Shared,
    segments_dir: &Path,
    base: u64,
    faults: &super::Faults,
) -> Result<(Arc<Segment>, MapWriter)> {
    let capacity = shared.options.segment_bytes;
    shared.disk_bytes.fetch_add(capacity, Ordering::AcqRel);
    let path = segments_dir.join(format!("open{PREPARED_SUFFIX}"));
    let prepared = PreparedSegment::create(path, capacity, faults).inspect_err(|_| {
        shared.disk_bytes.fetch_sub(capacity, Ordering::AcqRel);
    })?;
    let activated = prepared.activate(segments_dir, base, shared.producer_id.0)?;
    activated
        .0
        .map
        .flush(0, SEGMENT_HEADER_LEN)
        .map_err(|e| Error::io("flushing segment", &activated.0.path, e))?;
    sync_dir(segments_dir)?;
    Ok(activated)
}

fn recover_segments(
    dir: &Path,
    segments_dir: &Path,
    options: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<(Vec<Recovered>, u64)> {
    let mut named: Vec<(u64, PathBuf)> = Vec::new();
    let entries =
        std::fs::read_dir(segments_dir).map_err(|e| Error::io("listing", segments_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", segments_dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(PREPARED_SUFFIX) {
            // Never holds records: a segment gets its header and name before
            // its first chunk, and the rename is durable before any record.
            std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
            report.removed_files.push(path);
            continue;
        }
        match parse_segment_file_name(&name) {
            Some(base) => named.push((base, path)),
            None => {
                let moved_to = dir::quarantine(dir, &path)?;
                report.quarantined.push(Quarantined {
                    path,
                    moved_to,
                    reason: "not a segment file name".into(),
                });
            }
        }
    }
    named.sort();
    let next_bases: Vec<Option<u64>> = (0..named.len())
        .map(|i| named.get(i + 1).map(|(base, _)| *base))
        .collect();
    let mut quarantined_before = false;
    let mut recovered: Vec<Recovered> = Vec::new();
    let mut expected: Option<u64> = None;
    // Offsets a quarantined segment may have used must never be handed out
    // again; its record count is unknown, so take an upper bound.
    let mut quarantined_floor = 0u64;
    for ((base, path), next_base) in named.into_iter().zip(next_bases) {
        match recover_segment(&path, base, expected, next_base, options, report) {
            Ok(Some(segment)) => {
                if let Some(previous_end) = expected {
                    // A gap between segments is reported by the open that
                    // quarantined the segment between them; later opens only
                    // note it (inspect lists it too).
                    if segment.segment.base_offset > previous_end {
                        if quarantined_before {
                            report
                                .lost_offsets
                                .push((previous_end, segment.segment.base_offset));
                        } else {
                            tracing::info!(
                                from = previous_end,
                                to = segment.segment.base_offset,
                                "offsets in no segment (quarantined or removed earlier)"
                            );
                        }
                    }
                }
                quarantined_before = false;
                expected = Some(segment.segment.end_offset().max(expected.unwrap_or(0)));
                recovered.push(segment);
            }
            Ok(None) => {}
            Err(reason) => {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                quarantined_floor = quarantined_floor.max(max_end_offset(base, len));
                let moved_to = dir::quarantine(dir, &path)?;
                quarantined_before = true;
                report.quarantined.push(Quarantined {
                    path,
                    moved_to,
                    reason,
                });
            }
        }
    }
    Ok((recovered, quarantined_floor))
}

/// The highest end offset a segment file of `len` bytes starting at `base`
/// could hold: every chunk frame is at least a fixed header long and holds
/// at most `u32::MAX` records.
fn max_end_offset(base: u64, len: u64) -> u64 {
    let chunks = len / crate::chunk::frame::FIXED_HEADER_LEN as u64 + 1;
    base.saturating_add(chunks.saturating_mul(u64::from(u32::MAX)))
        .min(crate::chunk::frame::MAX_OFFSET)
}

/// Overwrites the damaged bytes `[from, to)` with a loss marker for the
/// offsets `[lost_from, lost_to)`. Returns false when the region is too
/// short for a marker or the loss too large for one.
fn heal(
    writer: &mut MapWriter,
    map: &SegmentMap,
    from: usize,
    to: usize,
    lost_from: u64,
    lost_to: u64,
) -> Result<bool, String> {
    let len = to - from;
    let Ok(lost) = u32::try_from(lost_to.saturating_sub(lost_from)) else {
        return Ok(false);
    };
    if len < FIXED_HEADER_LEN || len % FRAME_ALIGN != 0 || len > MAX_FRAME_LEN {
        return Ok(false);
    }
    writer.write(from, &loss_marker(lost_from, lost, len));
    map.flush(from, to)
        .map_err(|e| format!("cannot write loss marker: {e}"))?;
    Ok(true)
}

/// Checks and repairs one segment. `Err` means: move it to quarantine.
fn recover_segment(
    path: &Path,
    name_base: u64,
    expected: Option<u64>,
    next_base: Option<u64>,
    options: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<Option<Recovered>, String> {
    let is_newest = next_base.is_none();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len == 0 {
        // Created but never preallocated or named properly: holds nothing.
        drop(file);
        std::fs::remove_file(path).map_err(|e| format!("cannot remove empty segment: {e}"))?;
        report.removed_files.push(path.to_owned());
        return Ok(None);
    }
    if len < SEGMENT_HEADER_LEN as u64 {
        return Err(format!("{len} bytes: too short for a segment"));
    }
    if len > options.max_bytes.max(1 << 40) {
        return Err(format!(
            "{len} bytes: larger than any segment this log writes"
        ));
    }
    let (map, mut writer) =
        SegmentMap::map(&file, len as usize, 0).map_err(|e| format!("cannot map: {e}"))?;
    let image = writer.read_own(0, len as usize);
    let header = SegmentHeader::decode(image);
    let base = match &header {
        Ok(header) => header.base_offset,
        Err(reason) if reason.contains("newer than this shipper") => return Err(reason.clone()),
        Err(_) => name_base,
    };
    let start = expected.map_or(base, |e| e.max(base));
    let scan = recovery::scan(image, start);
    if header.is_err() && recovery::dirty_end(image) == 0 {
        // All zeros: created, then a power loss before its header reached
        // the disk. It never held a record.
        drop(writer);
        drop(map);
        drop(file);
        std::fs::remove_file(path).map_err(|e| format!("cannot remove empty segment: {e}"))?;
        report.removed_files.push(path.to_owned());
        return Ok(None);
    }
    if let Err(reason) = &header {
        if scan.chunks == 0 && scan.markers.is_empty() {
            return Err(format!("{reason}, and no readable chunk"));
        }
        report.damaged_headers.push(SegmentDamage {
            segment: path.to_owned(),
            damage: Damage {
                position: 0,
                length: SEGMENT_HEADER_LEN as u64,
                reason: reason.clone(),
            },
        });
        let producer = image
            .get(24..40)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 16]);
        let healed = SegmentHeader {
            version: super::segment::FormatVersion::CURRENT,
            base_offset: base,
            producer_id: producer,
            created_ms: crate::chunk::now_nanos() / 1_000_000,
        };
        writer.write(0, &healed.encode());
        map.flush(0, SEGMENT_HEADER_LEN)
            .map_err(|e| format!("cannot rewrite header: {e}"))?;
    }
    let mut holes = Vec::new();
    for (damage, &(lost_from, lost_to)) in scan.skipped.iter().zip(&scan.skipped_lost) {
        let from = damage.position as usize;
        let to = from + damage.length as usize;
        // Heal in place: a loss marker over the damaged bytes makes the
        // segment consistent again. A region too short for one stays a hole.
        match heal(&mut writer, &map, from, to, lost_from, lost_to) {
            Ok(true) => {}
            Ok(false) => holes.push((from, to)),
            Err(reason) => return Err(reason),
        }
        report.skipped.push(SegmentDamage {
            segment: path.to_owned(),
            damage: damage.clone(),
        });
    }
    report.lost_offsets.extend(scan.gaps.iter().copied());
    let mut valid_end = scan.valid_end;
    let mut end_offset = scan.end_offset.max(base);
    if let Some(tail) = &scan.tail {
        let from = tail.position as usize;
        let to = from + tail.length as usize;
        let lost_to = if is_newest {
            // A torn write is cut without a trace; a chunk that was whole
            // and then damaged may have been read already, so its offsets
            // are recorded as lost and never handed out again.
            scan.tail_claim
                .map_or(end_offset, |(_, end)| end.max(end_offset))
        } else {
            next_base.unwrap_or(end_offset).max(end_offset)
        };
        let marker_len = padded_len(tail.length as usize).max(FIXED_HEADER_LEN);
        if lost_to > end_offset && from + marker_len <= len as usize {
            // Records up to the next segment (sealed) or claimed by the
            // damaged last chunk (newest) are gone; record that on disk.
            writer.zero(from, to.max(from + marker_len));
            if heal(
                &mut writer,
                &map,
                from,
                from + marker_len,
                end_offset,
                lost_to,
            )? {
                valid_end = from + marker_len;
            } else {
                // No marker fits: the bytes stay zero, unpublished, and the
                // offsets are still never reused in this run.
                map.flush(from, to.max(from + marker_len))
                    .map_err(|e| format!("cannot truncate damaged tail: {e}"))?;
            }
            report.lost_offsets.push((end_offset, lost_to));
            end_offset = lost_to;
        } else {
            writer.zero(from, to);
            map.flush(from, to)
                .map_err(|e| format!("cannot truncate damaged tail: {e}"))?;
        }
        let damage = SegmentDamage {
            segment: path.to_owned(),
            damage: tail.clone(),
        };
        if is_newest {
            report.truncated.push(damage);
        } else {
            report.skipped.push(damage);
        }
    }
    writer.publish(valid_end);
    let segment = Arc::new(Segment::new(
        path.to_owned(),
        base,
        map,
        end_offset,
        holes,
        len,
        file,
    ));
    Ok(Some(Recovered { segment, writer }))
}

fn recover_cursors(
    cursors_dir: &Path,
    start: u64,
    end: u64,
    report: &mut RecoveryReport,
) -> Result<BTreeMap<String, u64>> {
    let mut cursors = BTreeMap::new();
    let entries =
        std::fs::read_dir(cursors_dir).map_err(|e| Error::io("listing", cursors_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", cursors_dir, e))?;
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file_name.strip_suffix(CURSOR_SUFFIX) else {
            if file_name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                report.removed_files.push(path);
            }
            continue;
        };
        if super::cursor::validate_cursor_name(name).is_err() {
            continue;
        }
        if entry.file_type().is_ok_and(|t| !t.is_file()) {
            // A directory or link named like a cursor: it cannot be
            // replaced atomically, so move it aside and reset the cursor.
            let moved_to = dir::quarantine(cursors_dir.parent().unwrap_or(cursors_dir), &path)?;
            report.quarantined.push(Quarantined {
                path: path.clone(),
                moved_to,
                reason: "cursor is not a regular file".into(),
            });
        }
        let decoded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| cursor::decode(&bytes));
        let offset = match decoded {
            Ok(offset) if offset <= end => offset,
            Ok(offset) => {
                // Records the consumer acknowledged were lost (a machine
                // crash under `never`): keep the cursor, offsets continue
                // above it.
                offset
            }
            Err(reason) => {
                // Replaying from the oldest stored record loses nothing; a
                // receiver that de-duplicates by offset drops the repeats.
                cursor::store(cursors_dir, name, start)?;
                report.cursor_repairs.push(CursorRepair {
                    name: name.to_owned(),
                    reason,
                    reset_to: start,
                });
                start
            }
        };
        cursors.insert(name.to_owned(), offset);
    }
    Ok(cursors)
}
