//! Recovery: what the log does with whatever it finds on disk.
//!
//! The rules, applied on every open (and, read-only, by `shipper inspect`):
//!
//! * A chunk is valid when its magic, lengths and CRC check and its first
//!   offset is not below the offset the previous valid chunk ended at.
//! * In the **newest** segment, the first invalid chunk after which no valid
//!   chunk follows is a **torn tail**: it and everything after it is cut
//!   (overwritten with zeros), and the cut is reported.
//! * An invalid chunk followed by a valid one (found by searching forward
//!   for the chunk magic at 8-byte boundaries) is **skipped**: counted,
//!   logged and remembered, so readers step over it. The records it held are
//!   reported as an offset gap, never silently.
//! * A damaged region is then **healed on disk**: recovery overwrites it
//!   with a loss marker (a valid frame that holds no records and names the
//!   lost offsets), so the next open, and `shipper inspect --verify`, find
//!   a consistent segment and report the loss as a note, not as damage.
//!   A region too short for a marker (under 56 bytes) stays a hole that is
//!   skipped again on every open.
//! * A segment that cannot be opened or mapped, or whose header and chunks
//!   are all unreadable, is moved to `quarantine/`.
//! * Nothing found on disk stops the log from opening.

use std::path::PathBuf;

use crate::chunk::frame::{padded_len, ChunkView, CHUNK_MAGIC, FRAME_ALIGN};

use super::segment::SEGMENT_HEADER_LEN;

/// A region of a segment recovery found damaged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// Byte position where the damage starts.
    pub position: u64,
    /// Length of the damaged region.
    pub length: u64,
    /// What was wrong.
    pub reason: String,
}

/// The result of scanning a segment's bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    /// Position after the last valid chunk (and its padding).
    pub valid_end: usize,
    /// One past the last record offset of the valid chunks.
    pub end_offset: u64,
    pub chunks: u64,
    pub records: u64,
    /// Damaged regions followed by valid chunks.
    pub skipped: Vec<Damage>,
    /// Damage at the end: no valid chunk follows.
    pub tail: Option<Damage>,
    /// Offsets between chunks that no valid chunk covers: `[from, to)`.
    pub gaps: Vec<(u64, u64)>,
    /// For each entry of `skipped`: the offsets lost with it.
    pub skipped_lost: Vec<(u64, u64)>,
    /// Loss markers found (damage repaired by an earlier open): `[from, to)`.
    pub markers: Vec<(u64, u64)>,
    /// When the damage at the end is a chunk that was written whole and
    /// then damaged (not a torn write): the offsets its header, and the
    /// headers of whole frames after it, claim.
    pub tail_claim: Option<(u64, u64)>,
    pub min_ts: Option<u64>,
    pub max_ts: Option<u64>,
}

/// True when `bytes` holds nothing but zeros.
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    let (prefix, words, suffix) = {
        let split = bytes.len() / 8 * 8;
        let (head, tail) = bytes.split_at(split);
        (head, head.chunks_exact(8), tail)
    };
    let _ = prefix;
    suffix.iter().all(|&b| b == 0)
        && words
            .into_iter()
            .all(|w| u64::from_ne_bytes(w.try_into().expect("8")) == 0)
}

/// Position one past the last non-zero byte of `bytes`, or 0.
pub(crate) fn dirty_end(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    while end >= 8 {
        let word = u64::from_ne_bytes(bytes[end - 8..end].try_into().expect("8"));
        if word != 0 {
            break;
        }
        end -= 8;
    }
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    end
}

fn describe(error: &crate::chunk::FrameError) -> String {
    error.to_string()
}

/// Finds the next valid chunk at or after `from` whose first offset is at
/// least `min_offset`.
///
/// Each candidate costs a CRC over the length it declares; `crc_budget`
/// bounds the bytes checksummed in one scan, so crafted bytes (the magic
/// every few bytes, each declaring a huge frame) cannot make recovery
/// quadratic. When the budget is spent, the rest counts as damage.
fn resync(bytes: &[u8], from: usize, min_offset: u64, crc_budget: &mut usize) -> Option<usize> {
    let finder = memchr::memmem::Finder::new(&CHUNK_MAGIC);
    let mut at = from;
    while at < bytes.len() {
        let found = at + finder.find(&bytes[at..])?;
        if found % FRAME_ALIGN == 0 {
            let declared = crate::chunk::frame::peek_frame_len(&bytes[found..]).unwrap_or(0);
            if declared.min(bytes.len() - found) > *crc_budget {
                return None;
            }
            *crc_budget -= declared.min(bytes.len() - found);
            if let Ok(view) = ChunkView::parse(&bytes[found..]) {
                if view.first_offset() >= min_offset {
                    return Some(found);
                }
            }
        }
        at = found + 1;
    }
    None
}

/// The offsets a damaged frame at the start of `bytes` claims, if it looks
/// written whole: plausible magic and lengths, a first offset that follows
/// the previous chunk exactly, and a last byte that is not zero. A torn
/// write (a crash while the frame was being copied forward into the
/// preallocated, zeroed file) has not written its last byte yet; a frame
/// that was complete and then damaged (bit rot, or a page lost in a power
/// failure) has, and readers may already have shipped its records, so its
/// offsets must never be handed out again. (A complete frame whose last
/// byte is zero is taken for torn: the old behaviour, no worse.)
fn complete_frame_claim(bytes: &[u8], min_offset: u64) -> Option<(u64, u64)> {
    use crate::chunk::frame::{FIXED_HEADER_LEN, MAX_FRAME_LEN, MAX_OFFSET};
    let frame_len = crate::chunk::frame::peek_frame_len(bytes)?;
    if !(FIXED_HEADER_LEN..=MAX_FRAME_LEN).contains(&frame_len) || frame_len > bytes.len() {
        return None;
    }
    let first = u64::from_le_bytes(bytes[16..24].try_into().ok()?);
    let count = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
    let end = first
        .checked_add(u64::from(count))
        .filter(|&end| end <= MAX_OFFSET)?;
    if first != min_offset || count == 0 || bytes[frame_len - 1] == 0 {
        return None;
    }
    Some((first, end))
}

/// The first offset of the first valid chunk anywhere in a segment image
/// (`bytes` includes the segment header), whatever its offset.
pub(crate) fn first_valid_offset(bytes: &[u8]) -> Option<u64> {
    let mut crc_budget = bytes.len().saturating_mul(4).saturating_add(64 << 20);
    let at = resync(bytes, SEGMENT_HEADER_LEN, 0, &mut crc_budget)?;
    ChunkView::parse(&bytes[at..])
        .ok()
        .map(|view| view.first_offset())
}

/// The offsets a run of damaged frames at the start of `bytes` claims:
/// [`complete_frame_claim`] of the first, then of each frame its length
/// leads to whose first offset follows on, so damage that spared the
/// headers of several frames is counted whole.
fn claim_chain(bytes: &[u8], min_offset: u64) -> Option<(u64, u64)> {
    let (first, mut end) = complete_frame_claim(bytes, min_offset)?;
    let mut at = padded_len(crate::chunk::frame::peek_frame_len(bytes)?);
    while at < bytes.len() {
        let Some((_, next_end)) = complete_frame_claim(&bytes[at..], end) else {
            break;
        };
        end = next_end;
        match crate::chunk::frame::peek_frame_len(&bytes[at..]) {
            Some(len) => at += padded_len(len),
            None => break,
        }
    }
    Some((first, end))
}

/// Scans the chunks of a segment image (`bytes` includes the segment
/// header) whose records start at `expected_offset`.
pub(crate) fn scan(bytes: &[u8], expected_offset: u64) -> Scan {
    let mut scan = Scan {
        valid_end: SEGMENT_HEADER_LEN.min(bytes.len()),
        end_offset: expected_offset,
        ..Scan::default()
    };
    let mut pos = SEGMENT_HEADER_LEN;
    let mut crc_budget = bytes.len().saturating_mul(4).saturating_add(64 << 20);
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let failure = if rest.len() >= 4 && rest[..4] == [0; 4] || rest.len() < 4 && all_zero(rest)
        {
            // Zeros: the end of the data, unless something follows.
            let dirty = dirty_end(rest);
            if dirty == 0 {
                break;
            }
            "zeros where a chunk should start".to_owned()
        } else {
            match ChunkView::parse(rest) {
                Ok(view) if view.first_offset() >= scan.end_offset => {
                    if view.first_offset() > scan.end_offset {
                        scan.gaps.push((scan.end_offset, view.first_offset()));
                    }
                    if view.is_loss_marker() {
                        scan.markers.push((view.first_offset(), view.end_offset()));
                        scan.end_offset = view.end_offset();
                        pos += padded_len(view.frame().len());
                        scan.valid_end = pos.min(bytes.len());
                        continue;
                    }
                    scan.chunks += 1;
                    scan.records += u64::from(view.record_count());
                    scan.end_offset = view.end_offset();
                    if view.record_count() > 0 {
                        scan.min_ts =
                            Some(scan.min_ts.map_or(view.min_ts(), |t| t.min(view.min_ts())));
                        scan.max_ts =
                            Some(scan.max_ts.map_or(view.max_ts(), |t| t.max(view.max_ts())));
                    }
                    pos += padded_len(view.frame().len());
                    scan.valid_end = pos.min(bytes.len());
                    continue;
                }
                Ok(view) => format!(
                    "stale chunk: first offset {} is below the expected {}",
                    view.first_offset(),
                    scan.end_offset
                ),
                Err(error) => describe(&error),
            }
        };
        match resync(bytes, pos + FRAME_ALIGN, scan.end_offset, &mut crc_budget) {
            Some(next) => {
                let next_first =
                    ChunkView::parse(&bytes[next..]).map_or(scan.end_offset, |v| v.first_offset());
                scan.skipped_lost.push((scan.end_offset, next_first));
                scan.skipped.push(Damage {
                    position: pos as u64,
                    length: (next - pos) as u64,
                    reason: failure,
                });
                pos = next;
            }
            None => {
                let end = pos + dirty_end(&bytes[pos..]);
                scan.tail_claim = claim_chain(&bytes[pos..], scan.end_offset);
                scan.tail = Some(Damage {
                    position: pos as u64,
                    length: (end.max(pos) - pos) as u64,
                    reason: failure,
                });
                break;
            }
        }
    }
    scan
}

/// A segment file moved aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    /// Where the file was.
    pub path: PathBuf,
    /// Where it is now.
    pub moved_to: PathBuf,
    /// Why.
    pub reason: String,
}

/// A segment file whose name did not match its offsets, renamed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Renamed {
    /// Its name before.
    pub from: PathBuf,
    /// Its name now.
    pub to: PathBuf,
    /// The offset of its first record, read from its bytes.
    pub base_offset: u64,
}

/// Damage found in one segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentDamage {
    /// The segment file.
    pub segment: PathBuf,
    /// The damaged region.
    pub damage: Damage,
}

/// A cursor file that could not be read and what it was reset to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CursorRepair {
    /// The cursor name.
    pub name: String,
    /// Why it was reset.
    pub reason: String,
    /// The offset it now holds.
    pub reset_to: u64,
}

/// Everything recovery repaired when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Torn tails cut from the newest segment.
    pub truncated: Vec<SegmentDamage>,
    /// Damaged chunks skipped inside segments.
    pub skipped: Vec<SegmentDamage>,
    /// Segment headers that were damaged but whose chunks were kept.
    pub damaged_headers: Vec<SegmentDamage>,
    /// Files moved (or, before a repair, copied) to the quarantine folder.
    pub quarantined: Vec<Quarantined>,
    /// Segment files given the name their offsets give.
    pub renamed: Vec<Renamed>,
    /// Offset ranges `[from, to)` whose records were lost to damage.
    pub lost_offsets: Vec<(u64, u64)>,
    /// Leftover files from an interrupted segment roll, removed.
    pub removed_files: Vec<PathBuf>,
    /// Cursors that were unreadable and were reset.
    pub cursor_repairs: Vec<CursorRepair>,
    /// The producer id file was unreadable and replaced.
    pub producer_id_replaced: Option<PathBuf>,
}

impl RecoveryReport {
    /// True when nothing had to be repaired (a torn tail after a crash is a
    /// repair too).
    pub fn is_clean(&self) -> bool {
        self.truncated.is_empty()
            && self.skipped.is_empty()
            && self.damaged_headers.is_empty()
            && self.quarantined.is_empty()
            && self.renamed.is_empty()
            && self.lost_offsets.is_empty()
            && self.cursor_repairs.is_empty()
            && self.producer_id_replaced.is_none()
    }

    /// Logs every repair, one event each.
    pub(crate) fn log(&self, dir: &std::path::Path) {
        for t in &self.truncated {
            tracing::warn!(dir = %dir.display(), segment = %t.segment.display(), position = t.damage.position, bytes = t.damage.length, reason = %t.damage.reason, "torn tail truncated");
        }
        for s in &self.skipped {
            tracing::error!(dir = %dir.display(), segment = %s.segment.display(), position = s.damage.position, bytes = s.damage.length, reason = %s.damage.reason, "corrupt chunk skipped");
        }
        for h in &self.damaged_headers {
            tracing::error!(segment = %h.segment.display(), reason = %h.damage.reason, "segment header damaged; chunks kept");
        }
        for q in &self.quarantined {
            tracing::error!(path = %q.path.display(), moved_to = %q.moved_to.display(), reason = %q.reason, "segment quarantined");
        }
        for r in &self.renamed {
            tracing::warn!(from = %r.from.display(), to = %r.to.display(), base_offset = r.base_offset, "segment renamed to fit its offsets");
        }
        for (from, to) in &self.lost_offsets {
            tracing::error!(from, to, records = to - from, "records lost to damage");
        }
        for c in &self.cursor_repairs {
            tracing::error!(cursor = %c.name, reason = %c.reason, reset_to = c.reset_to, "cursor reset");
        }
        if let Some(path) = &self.producer_id_replaced {
            tracing::error!(moved_to = %path.display(), "producer id unreadable; a new one was created");
        }
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_clean() {
            return f.write_str("clean: nothing to repair");
        }
        for t in &self.truncated {
            writeln!(
                f,
                "truncated torn tail of {} at byte {} ({} bytes): {}",
                t.segment.display(),
                t.damage.position,
                t.damage.length,
                t.damage.reason
            )?;
        }
        for s in &self.skipped {
            writeln!(
                f,
                "skipped corrupt chunk in {} at byte {} ({} bytes): {}",
                s.segment.display(),
                s.damage.position,
                s.damage.length,
                s.damage.reason
            )?;
        }
        for h in &self.damaged_headers {
            writeln!(
                f,
                "damaged header in {}: {}",
                h.segment.display(),
                h.damage.reason
            )?;
        }
        for q in &self.quarantined {
            writeln!(
                f,
                "quarantined {} -> {}: {}",
                q.path.display(),
                q.moved_to.display(),
                q.reason
            )?;
        }
        for r in &self.renamed {
            writeln!(
                f,
                "renamed {} -> {}: its records start at offset {}",
                r.from.display(),
                r.to.display(),
                r.base_offset
            )?;
        }
        for (from, to) in &self.lost_offsets {
            writeln!(
                f,
                "lost records at offsets {from}..{to} ({} records)",
                to - from
            )?;
        }
        for c in &self.cursor_repairs {
            writeln!(
                f,
                "reset cursor {} to offset {}: {}",
                c.name, c.reset_to, c.reason
            )?;
        }
        if let Some(path) = &self.producer_id_replaced {
            writeln!(
                f,
                "replaced unreadable producer id (old file at {})",
                path.display()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{ChunkBuilder, ChunkOptions};

    fn segment_image(records_per_chunk: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut image = vec![0u8; SEGMENT_HEADER_LEN];
        let mut starts = Vec::new();
        let mut offset = 0;
        for (c, &n) in records_per_chunk.iter().enumerate() {
            let mut builder = ChunkBuilder::new("s", "t", ChunkOptions::default()).unwrap();
            for r in 0..n {
                builder
                    .push(format!("chunk {c} record {r}").as_bytes(), 1, None)
                    .unwrap();
            }
            let mut frame = builder.finish().unwrap().unwrap().into_frame();
            crate::chunk::frame::seal_frame(&mut frame, offset);
            offset += n as u64;
            starts.push(image.len());
            image.extend_from_slice(&frame);
            image.resize(padded_len(image.len()), 0);
        }
        image.resize(image.len() + 4096, 0);
        (image, starts)
    }

    #[test]
    fn clean_image_scans_whole() {
        let (image, _) = segment_image(&[3, 4, 5]);
        let scan = scan(&image, 0);
        assert_eq!((scan.chunks, scan.records, scan.end_offset), (3, 12, 12));
        assert!(scan.tail.is_none() && scan.skipped.is_empty());
    }

    #[test]
    fn damage_in_the_middle_is_skipped_and_at_the_end_is_a_tail() {
        let (mut image, starts) = segment_image(&[3, 4, 5]);
        image[starts[1] + 60] ^= 1;
        let scanned = scan(&image, 0);
        assert_eq!(
            (scanned.chunks, scanned.records, scanned.end_offset),
            (2, 8, 12)
        );
        assert_eq!(scanned.skipped.len(), 1);
        assert_eq!(scanned.gaps, vec![(3, 7)]);
        let (mut image, starts) = segment_image(&[3, 4, 5]);
        image[starts[2] + 70] ^= 1;
        let scanned = scan(&image, 0);
        assert_eq!((scanned.chunks, scanned.end_offset), (2, 7));
        let tail = scanned.tail.unwrap();
        assert_eq!(tail.position as usize, starts[2]);
    }

    #[test]
    fn stray_bytes_after_the_end_are_a_tail() {
        let (mut image, _) = segment_image(&[2]);
        let last = image.len() - 100;
        image[last] = 9;
        let scanned = scan(&image, 0);
        assert_eq!(scanned.records, 2);
        assert!(scanned.tail.is_some());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// No byte sequence makes the scanner or the frame parser panic or
        /// loop, and whatever it accepts is consistent.
        #[test]
        fn arbitrary_bytes_never_panic(noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096), cut in 0usize..4096) {
            let scanned = scan(&noise, 0);
            proptest::prop_assert!(scanned.valid_end <= noise.len().max(SEGMENT_HEADER_LEN));
            let _ = ChunkView::parse(&noise);
            // Valid chunks followed by noise: the valid prefix survives.
            let (mut image, starts) = segment_image(&[2, 3]);
            let keep = starts[1] + (cut % 64);
            image.truncate(keep);
            image.extend_from_slice(&noise);
            let scanned = scan(&image, 0);
            proptest::prop_assert!(scanned.records >= 2);
        }
    }

    #[test]
    fn zero_helpers() {
        assert!(all_zero(&[0; 17]));
        assert!(!all_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
        assert_eq!(dirty_end(&[0; 20]), 0);
        assert_eq!(dirty_end(&[1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 4);
    }
}
