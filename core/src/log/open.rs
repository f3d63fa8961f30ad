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
use super::placement::{self, Probe};
use super::positions::{Positions, POSITIONS_FILE};
use super::recovery::{
    self, CursorRepair, Damage, Quarantined, RecoveryReport, Renamed, SegmentDamage,
};
use super::segment::{
    parse_segment_file_name, segment_file_name, sync_dir, PreparedSegment, Segment, SegmentHeader,
    PREPARED_SUFFIX, SEGMENT_HEADER_LEN,
};
use super::writer::{self, Writer};
use super::{Command, Counters, LogOptions, Progress, Shared};
use crate::chunk::frame::{loss_marker, FIXED_HEADER_LEN, FRAME_ALIGN, MAX_FRAME_LEN};
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
    /// One past the last offset the segment held, readable or not (see
    /// `repair_segment`): offsets below it are never handed out again.
    claimed_end: u64,
    /// One past the last offset whole damaged frames at its tail claim.
    tail_claim: u64,
}

pub(crate) fn open(dir: &Path, options: LogOptions) -> Result<Opened> {
    super::modes::create_dir(dir).map_err(|e| Error::io("creating data directory", dir, e))?;
    match super::modes::tighten(dir) {
        Ok(changed) if !changed.is_empty() => tracing::warn!(
            dir = %dir.display(),
            changed = changed.len(),
            first = %changed[0].display(),
            "the data directory was readable by others: its directories are now 0700 and its files 0600"
        ),
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot check the data directory's file modes")
        }
    }
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

    let Found {
        mut recovered,
        floor: quarantined_floor,
        horizon,
        set_aside,
    } = recover_segments(dir, &segments_dir, &options, &mut report)?;
    let floor = recovered
        .iter()
        .map(|r| r.claimed_end)
        .fold(quarantined_floor, u64::max);
    // Whole damaged frames at the newest tail were written, so they count
    // as evidence too.
    let horizon = recovered
        .last()
        .map_or(horizon, |r| horizon.max(r.tail_claim));
    let cursors = recover_cursors(
        &cursors_dir,
        recovered.first().map_or(floor, |r| r.segment.base_offset),
        floor,
        &mut report,
    )?;
    // Offsets never go back, even when the newest data was lost: a cursor
    // may already point past it, and a receiver de-duplicates by offset.
    let next_offset = cursors.values().copied().fold(floor, u64::max);
    // Offsets no segment holds that a cursor had not passed are lost:
    // reported once, and written down as loss segments so that the next
    // open (and inspect) find the loss recorded, not a hole.
    let spans: Vec<(u64, u64)> = recovered
        .iter()
        .map(|r| (r.segment.base_offset, r.segment.end_offset()))
        .collect();
    let cursor_offsets: Vec<u64> = cursors.values().copied().collect();
    let evidence = placement::Evidence {
        horizon,
        set_aside: &set_aside,
    };
    for (from, to) in placement::lost_ranges(&spans, &cursor_offsets, next_offset, evidence) {
        report.lost_offsets.push((from, to));
        // A segment without records where the loss starts (created just
        // before its records were lost) gives its name to the loss segment.
        if let Some(index) = recovered.iter().position(|r| {
            r.segment.base_offset == from && r.segment.end_offset() == from && !r.segment.loss
        }) {
            let empty = recovered.remove(index);
            let path = empty.segment.path.clone();
            drop(empty);
            std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
            report.removed_files.push(path);
        }
        match write_loss_segment(&segments_dir, from, to, producer_id.0, &options.faults) {
            Ok(loss) => {
                let at = recovered.partition_point(|r| r.segment.base_offset < from);
                recovered.insert(at, loss);
            }
            Err(error) => {
                tracing::error!(%error, from, to, "cannot write down lost offsets; the next open reports them again");
            }
        }
    }

    let faults = options.faults.clone();
    let counters = Counters::default();
    counters
        .chunks_skipped
        .store(report.skipped.len() as u64, Ordering::Relaxed);
    counters.records_lost.store(
        report
            .lost_offsets
            .iter()
            .map(|(from, to)| to - from)
            .fold(0u64, u64::saturating_add),
        Ordering::Relaxed,
    );
    let dictionaries =
        crate::chunk::Dictionaries::open(&dir.join(crate::chunk::dictionary::DICTIONARIES_DIR))?;
    // Dictionaries are kept for good: they count against the budget.
    let disk_bytes: u64 = recovered
        .iter()
        .map(|r| r.segment.budget_bytes())
        .sum::<u64>()
        + dictionaries.total_bytes();
    let segments_dir_handle =
        std::fs::File::open(&segments_dir).map_err(|e| Error::io("opening", &segments_dir, e))?;
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        segments_dir: segments_dir.clone(),
        segments_dir_handle,
        cursors_dir,
        producer_id,
        segments: RwLock::new(Vec::new()),
        next_offset: AtomicU64::new(next_offset),
        durable_offset: AtomicU64::new(next_offset),
        progress: Mutex::new(Progress::default()),
        poisoned_flag: AtomicBool::new(false),
        progress_changed: event_listener::Event::new(),
        space: Mutex::new(()),
        space_freed: Condvar::new(),
        cursors: Mutex::new(cursors),
        deleted_positions: Mutex::new(positions),
        dictionaries,
        disk_bytes: AtomicU64::new(disk_bytes),
        full: AtomicBool::new(false),
        disk_full: AtomicBool::new(false),
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
                .fetch_sub(empty.segment.budget_bytes(), Ordering::AcqRel);
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
    {
        let budget = Arc::downgrade(&shared);
        shared.dictionaries.set_budget(Arc::new(move |bytes| {
            let shared = budget.upgrade().ok_or(Error::Closed)?;
            if super::budget::try_reserve(&shared, bytes) {
                Ok(())
            } else {
                Err(Error::Full {
                    max_bytes: shared.options.max_bytes,
                })
            }
        }));
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
        durable_end_written: Instant::now(),
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

/// A segment file mapped for recovery, with what its bytes say.
struct Candidate {
    path: PathBuf,
    map: Arc<SegmentMap>,
    writer: MapWriter,
    len: u64,
    probe: Probe,
}

/// What recovery found in `segments/`.
struct Found {
    /// The segments kept, in offset order.
    recovered: Vec<Recovered>,
    /// No offset below this may be handed out again: quarantined segments
    /// may have used them.
    floor: u64,
    /// The highest durable end any header records (see `placement`).
    horizon: u64,
    /// Offset ranges of the segment files quarantined.
    set_aside: Vec<(u64, u64)>,
}

/// Finds, places and repairs every segment (see `placement` and
/// `recovery`).
fn recover_segments(
    dir: &Path,
    segments_dir: &Path,
    options: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<Found> {
    let mut candidates: Vec<Candidate> = Vec::new();
    // Offsets a quarantined segment may have used must never be handed out
    // again; where its records cannot be read, take an upper bound.
    let mut floor = 0u64;
    let mut set_aside = Vec::new();
    let entries =
        std::fs::read_dir(segments_dir).map_err(|e| Error::io("listing", segments_dir, e))?;
    let mut entries: Vec<_> = entries
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("listing", segments_dir, e))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(PREPARED_SUFFIX) {
            // Never holds records: a segment gets its header and name before
            // its first chunk, and the rename is durable before any record.
            std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
            report.removed_files.push(path);
            continue;
        }
        let name_base = parse_segment_file_name(&name);
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let outcome = if is_file {
            probe_segment(&path, name_base, options, report)
        } else {
            Err("not a regular file".to_owned())
        };
        match outcome {
            Ok(Some(candidate)) => candidates.push(candidate),
            Ok(None) => {}
            Err(reason) => {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                if let Some(base) = name_base {
                    floor = floor.max(max_end_offset(base, len));
                    set_aside.push((base, base));
                }
                let reason = match name_base {
                    None if is_file => format!("not a segment file name, and {reason}"),
                    _ => reason,
                };
                quarantine_segment(dir, path, reason, report)?;
            }
        }
    }

    let probes: Vec<Probe> = candidates.iter().map(|c| c.probe.clone()).collect();
    let horizon = probes
        .iter()
        .filter(|p| p.header_disagrees.is_none())
        .map(Probe::durable_end)
        .max()
        .unwrap_or(0);
    let placement = placement::place(&probes);
    let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
    for (index, reason) in &placement.displaced {
        let candidate = slots[*index].take().expect("each probe is placed once");
        floor = floor.max(candidate.probe.end());
        set_aside.push((candidate.probe.base, candidate.probe.end()));
        let path = candidate.path.clone();
        drop(candidate);
        quarantine_segment(dir, path, reason.clone(), report)?;
    }
    let mut placed: Vec<Candidate> = placement
        .placed
        .iter()
        .map(|&index| slots[index].take().expect("each probe is placed once"))
        .collect();
    rename_misnamed(segments_dir, &mut placed, report)?;

    let mut recovered = Vec::with_capacity(placed.len());
    let next_bases: Vec<Option<u64>> = (0..placed.len())
        .map(|i| placed.get(i + 1).map(|c| c.probe.base))
        .collect();
    for (candidate, next_base) in placed.into_iter().zip(next_bases) {
        let path = candidate.path.clone();
        let base = candidate.probe.base;
        let len = candidate.len;
        match repair_segment(dir, candidate, next_base, report) {
            Ok(segment) => recovered.push(segment),
            Err(reason) => {
                floor = floor.max(max_end_offset(base, len));
                set_aside.push((base, base));
                quarantine_segment(dir, path, reason, report)?;
            }
        }
    }
    Ok(Found {
        recovered,
        floor,
        horizon,
        set_aside,
    })
}

/// Moves a segment file to `quarantine/` and reports it.
fn quarantine_segment(
    dir: &Path,
    path: PathBuf,
    reason: String,
    report: &mut RecoveryReport,
) -> Result<()> {
    let moved_to = dir::quarantine(dir, &path)?;
    report.quarantined.push(Quarantined {
        path,
        moved_to,
        reason,
    });
    Ok(())
}

/// Gives every placed segment the name its base offset gives. Two steps
/// (first aside under a name no segment has, then into place), so that two
/// files with each other's names swap without one replacing the other; a
/// crash in between leaves names the next open places again.
fn rename_misnamed(
    segments_dir: &Path,
    placed: &mut [Candidate],
    report: &mut RecoveryReport,
) -> Result<()> {
    let misnamed: Vec<usize> = (0..placed.len())
        .filter(|&i| {
            placed[i]
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                != Some(segment_file_name(placed[i].probe.base))
        })
        .collect();
    if misnamed.is_empty() {
        return Ok(());
    }
    let mut original = Vec::with_capacity(misnamed.len());
    for (step, &index) in misnamed.iter().enumerate() {
        let candidate = &mut placed[index];
        let aside = segments_dir.join(format!("renaming-{step}{}", super::segment::SEGMENT_SUFFIX));
        std::fs::rename(&candidate.path, &aside)
            .map_err(|e| Error::io("renaming segment", &candidate.path, e))?;
        original.push(std::mem::replace(&mut candidate.path, aside));
    }
    for (&index, from) in misnamed.iter().zip(original) {
        let candidate = &mut placed[index];
        let to = segments_dir.join(segment_file_name(candidate.probe.base));
        std::fs::rename(&candidate.path, &to)
            .map_err(|e| Error::io("renaming segment", &candidate.path, e))?;
        candidate.path = to.clone();
        report.renamed.push(Renamed {
            from,
            to,
            base_offset: candidate.probe.base,
        });
    }
    sync_dir(segments_dir)
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

/// Opens and maps a segment file and reads what its bytes say. `Ok(None)`:
/// it never held a record and was removed. `Err`: move it to quarantine.
fn probe_segment(
    path: &Path,
    name_base: Option<u64>,
    options: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<Option<Candidate>, String> {
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
    let (map, writer) = SegmentMap::map(&file, len as usize, SEGMENT_HEADER_LEN, 0)
        .map_err(|e| format!("cannot map: {e}"))?;
    let image = writer.read_own(0, len as usize);
    let probe = Probe::new(image, name_base);
    if let Err(reason) = &probe.header {
        if reason.contains("newer than this shipper") {
            return Err(reason.clone());
        }
        if recovery::dirty_end(image) == 0 {
            // All zeros: created, then a power loss before its header reached
            // the disk. It never held a record.
            drop(writer);
            drop(map);
            drop(file);
            std::fs::remove_file(path).map_err(|e| format!("cannot remove empty segment: {e}"))?;
            report.removed_files.push(path.to_owned());
            return Ok(None);
        }
        if probe.scan.chunks == 0 && probe.scan.markers.is_empty() {
            return Err(format!("{reason}, and no readable chunk"));
        }
    }
    Ok(Some(Candidate {
        path: path.to_owned(),
        map,
        writer,
        len,
        probe,
    }))
}

/// True when a region of a segment image holds a frame whose CRC holds
/// (a whole chunk some repair would destroy), or may: the CRCs checked are
/// bounded as the scan's are (crafted bytes, the magic every few bytes each
/// declaring a long frame, cannot make this quadratic), and a region that
/// spends the budget counts as holding one.
fn holds_valid_frame(image: &[u8], from: usize, to: usize) -> bool {
    use crate::chunk::frame::{peek_frame_len, ChunkView, CHUNK_MAGIC};
    let to = to.min(image.len());
    let mut budget = image.len().saturating_mul(4).saturating_add(64 << 20);
    let mut at = from.next_multiple_of(FRAME_ALIGN);
    while at + FIXED_HEADER_LEN <= to {
        if image[at..at + 4] == CHUNK_MAGIC {
            let declared = peek_frame_len(&image[at..])
                .unwrap_or(0)
                .min(image.len() - at);
            if declared > budget {
                return true;
            }
            budget -= declared;
            if ChunkView::parse(&image[at..]).is_ok() {
                return true;
            }
        }
        at += FRAME_ALIGN;
    }
    false
}

/// Repairs one placed segment (header, damaged chunks, damaged tail) and
/// returns it ready for the log. `next_base`: where the next placed segment
/// starts; `None` for the newest. `Err` means: move it to quarantine.
fn repair_segment(
    dir: &Path,
    candidate: Candidate,
    next_base: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<Recovered, String> {
    let Candidate {
        path,
        map,
        mut writer,
        len,
        probe,
    } = candidate;
    let is_newest = next_base.is_none();
    let image = writer.read_own(0, len as usize);
    let base = probe.base;
    let scan = &probe.scan;
    // Nothing whose CRC holds is destroyed: a copy of the file goes to
    // quarantine first.
    let mut regions: Vec<(usize, usize)> = scan
        .skipped
        .iter()
        .chain(scan.tail.iter())
        .map(|d| (d.position as usize, (d.position + d.length) as usize))
        .collect();
    regions.sort_unstable();
    if regions
        .iter()
        .any(|&(from, to)| holds_valid_frame(image, from, to))
    {
        let copy = dir::quarantine_copy(dir, &path)
            .map_err(|e| format!("cannot copy to quarantine before repairing: {e}"))?;
        report.quarantined.push(Quarantined {
            path: path.clone(),
            moved_to: copy,
            reason:
                "a copy before repair: damaged regions hold chunks whose CRC holds, out of order"
                    .into(),
        });
    }
    let header_problem = match (&probe.header, &probe.header_disagrees) {
        (Err(reason), _) => Some(reason.clone()),
        (Ok(_), Some(disagreement)) => Some(disagreement.clone()),
        (Ok(_), None) => None,
    };
    if let Some(reason) = header_problem {
        report.damaged_headers.push(SegmentDamage {
            segment: path.clone(),
            damage: Damage {
                position: 0,
                length: SEGMENT_HEADER_LEN as u64,
                reason,
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
            durable_end: 0,
            flags: 0,
        };
        writer.write_head(0, &healed.encode());
        map.flush(0, SEGMENT_HEADER_LEN)
            .map_err(|e| format!("cannot rewrite header: {e}"))?;
    }
    let durable_end = if probe.header_disagrees.is_some() {
        0
    } else {
        probe.durable_end()
    };
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
            segment: path.clone(),
            damage: damage.clone(),
        });
    }
    report.lost_offsets.extend(scan.gaps.iter().copied());
    let content_end = probe.end();
    // Offsets the segment's own bytes say it held beyond what is readable
    // now: for the newest, what the damaged frames' headers claim and what
    // its header says was durable (a torn write beyond both is cut
    // without a trace); a sealed one is followed by the next segment.
    // Whatever no segment holds below the next offset is then a hole,
    // which `open` reports lost unless every cursor had passed it.
    let mut claimed_end = content_end;
    if is_newest {
        let claim = scan.tail_claim.map_or(0, |(_, end)| end).max(durable_end);
        claimed_end = claimed_end.max(claim);
    }
    if let Some(tail) = &scan.tail {
        let from = tail.position as usize;
        let to = from + tail.length as usize;
        writer.zero(from, to);
        map.flush(from, to)
            .map_err(|e| format!("cannot truncate damaged tail: {e}"))?;
        let damage = SegmentDamage {
            segment: path.clone(),
            damage: tail.clone(),
        };
        if is_newest {
            report.truncated.push(damage);
        } else {
            report.skipped.push(damage);
        }
    }
    if durable_end > content_end {
        // The loss is recorded where the hole is (a loss segment); the
        // header no longer claims what the segment does not hold.
        super::segment::write_durable_end(&mut writer, content_end);
        map.flush(0, SEGMENT_HEADER_LEN)
            .map_err(|e| format!("cannot rewrite header: {e}"))?;
    }
    let valid_end = scan.valid_end;
    writer.publish(valid_end);
    let segment = Arc::new(Segment {
        path,
        base_offset: base,
        map,
        end_offset: AtomicU64::new(content_end),
        holes,
        file_bytes: len,
        loss: probe.is_loss_segment(),
    });
    Ok(Recovered {
        segment,
        writer,
        claimed_end,
        tail_claim: scan.tail_claim.map_or(0, |(_, end)| end),
    })
}

/// Writes a loss segment for the offsets `[from, to)`: records that no
/// segment holds although a cursor had not passed them (see `placement`).
fn write_loss_segment(
    segments_dir: &Path,
    from: u64,
    to: u64,
    producer_id: [u8; 16],
    faults: &super::Faults,
) -> Result<Recovered> {
    let path = segments_dir.join(format!("loss{PREPARED_SUFFIX}"));
    let prepared = PreparedSegment::create(path, SEGMENT_HEADER_LEN as u64, faults)?;
    let (segment, writer) = prepared.activate_loss(segments_dir, from, to, producer_id)?;
    segment
        .map
        .flush(0, SEGMENT_HEADER_LEN)
        .map_err(|e| Error::io("flushing segment", &segment.path, e))?;
    Ok(Recovered {
        segment,
        writer,
        claimed_end: to,
        tail_claim: 0,
    })
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
