//! `shipper inspect`: a read-only look at a data directory. It takes no
//! lock and changes nothing, so it can run next to a live shipper; it reads
//! segment files with `read(2)`, never through a map.

use std::path::{Path, PathBuf};

use super::cursor::{self, CURSOR_SUFFIX};
use super::dir::{self, CURSORS_DIR, PRODUCER_ID_FILE, QUARANTINE_DIR, SEGMENTS_DIR};
use super::placement::{self, Probe};
use super::recovery;
use super::segment::{
    parse_segment_file_name, segment_file_name, SegmentHeader, PREPARED_SUFFIX, SEGMENT_HEADER_LEN,
};
use crate::{Error, Result};

/// Largest segment file inspect reads (8 GiB).
const MAX_INSPECT_BYTES: u64 = 8 << 30;

/// Whether a segment still takes appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    /// A later segment exists; this one never changes again.
    Sealed,
    /// The newest segment, where appends go.
    Active,
}

/// One segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentInfo {
    /// File name.
    pub file: String,
    /// Offset of its first record.
    pub base_offset: u64,
    /// One past the offset of its last readable record.
    pub end_offset: u64,
    /// Readable chunks.
    pub chunks: u64,
    /// Readable records.
    pub records: u64,
    /// File size.
    pub bytes: u64,
    /// Bytes up to the end of the last readable chunk.
    pub used_bytes: u64,
    /// Sealed or active.
    pub state: SegmentState,
    /// Earliest record timestamp (unix ns).
    pub min_ts: Option<u64>,
    /// Latest record timestamp (unix ns).
    pub max_ts: Option<u64>,
}

/// A cursor and how far behind the log it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CursorInfo {
    /// Cursor name.
    pub name: String,
    /// Committed offset, if readable.
    pub offset: Option<u64>,
    /// Records between the cursor and the end of the log.
    pub lag_records: Option<u64>,
}

/// Something wrong found on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The file concerned.
    pub path: PathBuf,
    /// What kind of problem.
    pub kind: &'static str,
    /// Byte position, where it applies.
    pub position: Option<u64>,
    /// Length of the damaged bytes, where it applies.
    pub length: Option<u64>,
    /// Details.
    pub detail: String,
    /// True for damage (what `--verify` fails on); false for notes.
    pub corruption: bool,
}

/// What `inspect` found in a data directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InspectReport {
    /// The data directory.
    pub dir: PathBuf,
    /// Its producer id.
    pub producer_id: Option<String>,
    /// Pid of the process holding the directory lock, if any.
    pub locked_by: Option<String>,
    /// Segments in offset order.
    pub segments: Vec<SegmentInfo>,
    /// Cursors by name.
    pub cursors: Vec<CursorInfo>,
    /// Oldest stored offset.
    pub start_offset: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
    /// Readable records stored.
    pub records: u64,
    /// Bytes of segment files.
    pub disk_bytes: u64,
    /// Files in the quarantine folder.
    pub quarantined_files: u64,
    /// Every problem found.
    pub findings: Vec<Finding>,
}

impl InspectReport {
    /// True when any finding is damage.
    pub fn has_corruption(&self) -> bool {
        self.findings.iter().any(|f| f.corruption)
    }
}

fn finding(path: &Path, kind: &'static str, detail: String, corruption: bool) -> Finding {
    Finding {
        path: path.to_owned(),
        kind,
        position: None,
        length: None,
        detail,
        corruption,
    }
}

/// Inspects the data directory `dir` without changing it.
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    if !dir.is_dir() {
        return Err(Error::io(
            "inspecting",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let locked_by = dir::lock_holder(dir);
    let live = locked_by.is_some();
    let mut findings = Vec::new();
    let producer_path = dir.join(PRODUCER_ID_FILE);
    let producer_id = dir::read_producer_id(dir).map(|id| id.to_string());
    if producer_id.is_none() && producer_path.exists() {
        findings.push(finding(
            &producer_path,
            "bad_producer_id",
            "unreadable producer id".into(),
            true,
        ));
    }

    // Cursors first: whether a hole in the offsets lost anything depends
    // on whether a cursor had passed it.
    let mut cursors = Vec::new();
    let cursors_dir = dir.join(CURSORS_DIR);
    if let Ok(entries) = std::fs::read_dir(&cursors_dir) {
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file_name.strip_suffix(CURSOR_SUFFIX) else {
                continue;
            };
            let decoded = std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| cursor::decode(&bytes));
            let offset = match decoded {
                Ok(offset) => Some(offset),
                Err(reason) => {
                    findings.push(finding(&entry.path(), "corrupt_cursor", reason, true));
                    None
                }
            };
            cursors.push(CursorInfo {
                name: name.to_owned(),
                offset,
                lag_records: None,
            });
        }
    }
    cursors.sort_by(|a, b| a.name.cmp(&b.name));

    let segments_dir = dir.join(SEGMENTS_DIR);
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&segments_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(PREPARED_SUFFIX) {
                continue;
            }
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                findings.push(finding(
                    &entry.path(),
                    "unknown_file",
                    "not a regular file (open moves it to quarantine)".into(),
                    true,
                ));
                continue;
            }
            files.push((name, entry.path()));
        }
    }
    files.sort();
    // Offsets that segments open would quarantine may have used: the next
    // offset starts above them.
    let mut floor = 0u64;
    let mut set_aside = Vec::new();
    let mut probed: Vec<(String, PathBuf, u64, Probe)> = Vec::new();
    for (name, path) in files {
        let name_base = parse_segment_file_name(&name);
        // inspect reads a whole segment into memory: refuse what no segment
        // of a sane log is (a sparse multi-terabyte file would exhaust memory).
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if len > MAX_INSPECT_BYTES {
            findings.push(finding(
                &path,
                "too_large",
                format!("{len} bytes: larger than inspect reads ({MAX_INSPECT_BYTES} bytes); open quarantines files larger than any segment"),
                true,
            ));
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                findings.push(finding(&path, "unreadable", e.to_string(), true));
                continue;
            }
        };
        let probe = (bytes.len() >= SEGMENT_HEADER_LEN).then(|| Probe::new(&bytes, name_base));
        let readable = probe.as_ref().is_some_and(|probe| match &probe.header {
            Ok(_) => true,
            Err(reason) if reason.contains("newer than this shipper") => false,
            Err(_) => probe.scan.chunks > 0 || !probe.scan.markers.is_empty(),
        });
        let Some(probe) = probe.filter(|_| readable) else {
            // What open removes (never written) or moves to quarantine.
            let reason = match SegmentHeader::decode(&bytes) {
                Err(reason) if reason.contains("newer than this shipper") => reason,
                Err(reason) => format!("{reason}, and no readable chunk"),
                Ok(_) => "unreadable".to_owned(),
            };
            let empty = recovery::dirty_end(&bytes) == 0;
            let (kind, what_open_does) = match (name_base, empty) {
                (None, _) => ("unknown_file", "not a segment: open moves it to quarantine"),
                (Some(_), true) => ("damaged_header", "never held a record: open removes it"),
                (Some(_), false) => ("damaged_header", "open moves it to quarantine"),
            };
            findings.push(Finding {
                position: Some(0),
                length: Some(SEGMENT_HEADER_LEN as u64),
                ..finding(&path, kind, format!("{reason} ({what_open_does})"), true)
            });
            if let (Some(base), false) = (name_base, empty) {
                floor = floor.max(base.saturating_add(1));
                set_aside.push((base, base));
            }
            continue;
        };
        probed.push((name, path, bytes.len() as u64, probe));
    }
    let probes: Vec<Probe> = probed
        .iter()
        .map(|(_, _, _, probe)| probe.clone())
        .collect();
    let placement = placement::place(&probes);
    for (index, reason) in &placement.displaced {
        let (_, path, _, probe) = &probed[*index];
        floor = floor.max(probe.end());
        set_aside.push((probe.base, probe.end()));
        findings.push(finding(
            path,
            "overlapping_segment",
            format!("{reason} (open moves it to quarantine)"),
            true,
        ));
    }
    let mut horizon = probes
        .iter()
        .filter(|p| p.header_disagrees.is_none())
        .map(Probe::durable_end)
        .max()
        .unwrap_or(0);
    let mut segments = Vec::new();
    let mut claimed = floor;
    let count = placement.placed.len();
    for (position, &index) in placement.placed.iter().enumerate() {
        let (name, path, len, probe) = &probed[index];
        let is_newest = position + 1 == count;
        let scan = &probe.scan;
        if !probe.well_named() {
            findings.push(finding(
                path,
                "misnamed_segment",
                format!(
                    "its records start at offset {}: named {} by open",
                    probe.base,
                    segment_file_name(probe.base)
                ),
                true,
            ));
        }
        let header_problem = match (&probe.header, &probe.header_disagrees) {
            (Err(reason), _) => Some(reason.clone()),
            (Ok(_), Some(disagreement)) => Some(disagreement.clone()),
            (Ok(_), None) => None,
        };
        if let Some(reason) = header_problem {
            findings.push(Finding {
                position: Some(0),
                length: Some(SEGMENT_HEADER_LEN as u64),
                ..finding(path, "damaged_header", reason, true)
            });
        }
        if probe.is_loss_segment() {
            findings.push(finding(
                path,
                "repaired_loss",
                format!(
                    "offsets {}..{} were lost; an earlier recovery reported them and wrote this down",
                    probe.base,
                    probe.end()
                ),
                false,
            ));
        }
        for (from, to) in &scan.markers {
            findings.push(finding(
                path,
                "repaired_loss",
                format!("offsets {from}..{to} were lost to damage an earlier recovery repaired"),
                false,
            ));
        }
        for damage in &scan.skipped {
            findings.push(Finding {
                position: Some(damage.position),
                length: Some(damage.length),
                ..finding(path, "corrupt_chunk", damage.reason.clone(), true)
            });
        }
        for (from, to) in &scan.gaps {
            findings.push(finding(
                path,
                "lost_offsets",
                format!("offsets {from}..{to} lost with damaged chunks"),
                true,
            ));
        }
        if let Some(tail) = &scan.tail {
            let (kind, detail, corruption) = if !is_newest {
                ("corrupt_chunk", tail.reason.clone(), true)
            } else if live {
                (
                    "tail_in_progress",
                    format!("{} (a live writer may be appending)", tail.reason),
                    false,
                )
            } else {
                ("torn_tail", tail.reason.clone(), true)
            };
            findings.push(Finding {
                position: Some(tail.position),
                length: Some(tail.length),
                ..finding(path, kind, detail, corruption)
            });
        }
        claimed = claimed.max(probe.end());
        if is_newest && probe.header_disagrees.is_none() {
            let claim = scan
                .tail_claim
                .map_or(0, |(_, end)| end)
                .max(probe.durable_end());
            claimed = claimed.max(claim);
            horizon = horizon.max(scan.tail_claim.map_or(0, |(_, end)| end));
        }
        segments.push(SegmentInfo {
            file: name.clone(),
            base_offset: probe.base,
            end_offset: probe.end(),
            chunks: scan.chunks,
            records: scan.records,
            bytes: *len,
            used_bytes: scan.valid_end as u64,
            state: if is_newest {
                SegmentState::Active
            } else {
                SegmentState::Sealed
            },
            min_ts: scan.min_ts,
            max_ts: scan.max_ts,
        });
    }
    let cursor_offsets: Vec<u64> = cursors.iter().filter_map(|c| c.offset).collect();
    let next_offset = cursor_offsets.iter().copied().fold(claimed, u64::max);
    let spans: Vec<(u64, u64)> = segments
        .iter()
        .map(|s| (s.base_offset, s.end_offset))
        .collect();
    let evidence = placement::Evidence {
        horizon,
        set_aside: &set_aside,
    };
    let lost = placement::lost_ranges(&spans, &cursor_offsets, next_offset, evidence);
    for &(from, to) in &lost {
        findings.push(finding(
            &segments_dir,
            "lost_offsets",
            format!(
                "offsets {from}..{to} ({} records) are in no segment although a cursor had not passed them",
                to - from
            ),
            true,
        ));
    }
    // Holes every cursor had passed: delivered, then removed.
    let mut previous_end: Option<u64> = None;
    for span in &spans {
        if let Some(end) = previous_end {
            if span.0 > end && !lost.iter().any(|&(from, to)| from < span.0 && to > end) {
                findings.push(finding(
                    &segments_dir,
                    "offset_gap",
                    format!(
                        "offsets {end}..{} are in no segment; every cursor had passed them",
                        span.0
                    ),
                    false,
                ));
            }
        }
        previous_end = Some(span.1);
    }
    for cursor in &mut cursors {
        cursor.lag_records = cursor.offset.map(|o| next_offset.saturating_sub(o));
    }
    let start_offset = segments.first().map_or(0, |s| s.base_offset);
    let quarantined_files =
        std::fs::read_dir(dir.join(QUARANTINE_DIR)).map_or(0, |e| e.count() as u64);
    Ok(InspectReport {
        dir: dir.to_owned(),
        producer_id,
        locked_by,
        records: segments.iter().map(|s| s.records).sum(),
        disk_bytes: segments.iter().map(|s| s.bytes).sum(),
        segments,
        cursors,
        start_offset,
        next_offset,
        quarantined_files,
        findings,
    })
}
