//! Placement: which segment files hold which offsets, decided from their
//! own bytes. Opening a log (`open.rs`) and `shipper inspect` (`inspect.rs`)
//! both go through here, so they agree on what a directory holds.
//!
//! The rules:
//!
//! * A segment's offsets come from its bytes, never from its file name: the
//!   first chunk's first offset, else the header's base offset, else (no
//!   readable header or chunk) the name. A file renamed by hand is placed
//!   where its records belong and given its right name again.
//! * Segments are placed in offset order. One whose offsets overlap a
//!   segment placed before it (a copy, or a file renamed onto another's
//!   range) cannot be placed: it is moved to `quarantine/` whole, never
//!   zeroed.
//! * Offsets between placed segments, or between a cursor and the first
//!   segment, that no segment holds are *lost* when a cursor had not passed
//!   them (or when the log has no cursor at all, which keeps everything):
//!   recovery reports them and records them on disk as a loss segment, so
//!   the next open and `inspect --verify` see a repaired loss, not damage.
//!   Offsets every cursor had passed were delivered; nothing is lost.
//! * In the newest segment, records the header's durable end (or the
//!   chain of damaged frames' own headers) says were there, but whose bytes
//!   are gone, are lost, counted exactly; a tail that never reached the
//!   disk (a torn write, beyond the durable end) is cut without a trace.

use std::cmp::Reverse;

use super::recovery::{self, Scan};
use super::segment::{SegmentHeader, SEGMENT_FLAG_LOSS, SEGMENT_HEADER_LEN};
use crate::chunk::frame::ChunkView;

/// What the bytes of one segment file say about it.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// The base offset in the file name, if the name is a segment name.
    pub name_base: Option<u64>,
    /// The header, or why it cannot be read.
    pub header: Result<SegmentHeader, String>,
    /// Where its records start, from its bytes (see the module docs).
    pub base: u64,
    /// Why the header's base offset was not used although it was readable.
    pub header_disagrees: Option<String>,
    /// Its chunks, scanned from `base`.
    pub scan: Scan,
}

impl Probe {
    /// Reads a segment image (the whole file, header included).
    pub(crate) fn new(image: &[u8], name_base: Option<u64>) -> Probe {
        let header = SegmentHeader::decode(image);
        let first_frame = image
            .get(SEGMENT_HEADER_LEN..)
            .and_then(|rest| ChunkView::parse(rest).ok())
            .map(|view| view.first_offset());
        let mut header_disagrees = None;
        let base = match (&header, first_frame) {
            (Ok(header), Some(first)) if first != header.base_offset => {
                header_disagrees = Some(format!(
                    "header says base offset {}, its first chunk starts at {first}",
                    header.base_offset
                ));
                first
            }
            (Ok(header), _) => header.base_offset,
            (Err(_), Some(first)) => first,
            (Err(_), None) => recovery::first_valid_offset(image).unwrap_or(name_base.unwrap_or(0)),
        };
        let scan = recovery::scan(image, base);
        Probe {
            name_base,
            header,
            base,
            header_disagrees,
            scan,
        }
    }

    /// True for a loss segment written by an earlier recovery.
    pub(crate) fn is_loss_segment(&self) -> bool {
        self.header
            .as_ref()
            .is_ok_and(|h| h.flags & SEGMENT_FLAG_LOSS != 0)
    }

    /// The durable end its header records (0: unknown).
    pub(crate) fn durable_end(&self) -> u64 {
        self.header.as_ref().map_or(0, |h| h.durable_end)
    }

    /// One past the last offset the segment accounts for: its chunks and
    /// loss markers, or for a loss segment the offsets it records lost.
    pub(crate) fn end(&self) -> u64 {
        let end = self.scan.end_offset.max(self.base);
        if self.is_loss_segment() {
            end.max(self.durable_end())
        } else {
            end
        }
    }

    /// True when the file's name is the one its base offset gives.
    pub(crate) fn well_named(&self) -> bool {
        self.name_base == Some(self.base)
    }
}

/// The outcome of placing segments.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Indices into the probes, in offset order.
    pub placed: Vec<usize>,
    /// Probes that overlap a placed segment, with why.
    pub displaced: Vec<(usize, String)>,
}

/// Orders `probes` by offset and sets aside those whose offsets overlap a
/// segment placed before them. Among segments starting at the same offset
/// the one whose name fits, then the one with more records, is kept.
pub(crate) fn place(probes: &[Probe]) -> Placement {
    let mut order: Vec<usize> = (0..probes.len()).collect();
    order.sort_by_key(|&i| {
        let probe = &probes[i];
        (
            probe.base,
            !probe.well_named(),
            Reverse(probe.scan.records),
            probe.name_base,
        )
    });
    let mut placement = Placement::default();
    let mut end = 0u64;
    let mut last: Option<usize> = None;
    for index in order {
        let probe = &probes[index];
        if let Some(previous) = last {
            let holder = &probes[previous];
            if probe.base < end || probe.base == holder.base {
                placement.displaced.push((
                    index,
                    format!(
                        "its offsets {}..{} overlap those of the segment at {} (up to {end})",
                        probe.base,
                        probe.end(),
                        holder.base
                    ),
                ));
                continue;
            }
        }
        end = end.max(probe.end());
        last = Some(index);
        placement.placed.push(index);
    }
    placement
}

/// What is known, besides the segments, about which offsets were durable.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Evidence<'a> {
    /// Every offset below this was durable at some point: the highest
    /// durable end in any header, or what whole damaged frames claim.
    pub horizon: u64,
    /// Offset ranges of segment files set aside (unreadable, overlapping):
    /// a hole next to one held records that are gone, durable or not.
    pub set_aside: &'a [(u64, u64)],
}

/// Offsets `[from, to)` that no segment holds, from the lowest cursor (or
/// the first segment) up to `next_offset`, which are lost: a cursor had
/// not passed them (or there is no cursor: the log keeps everything), and
/// they had been durable (below the horizon) or lie next to a segment file
/// set aside. A hole above the horizon is what a power loss took before it
/// was durable: cut without a trace, as a torn tail is. `segments` are the
/// placed segments' `(base, end)` in order; `cursors` every cursor's offset.
pub(crate) fn lost_ranges(
    segments: &[(u64, u64)],
    cursors: &[u64],
    next_offset: u64,
    evidence: Evidence<'_>,
) -> Vec<(u64, u64)> {
    let lowest_cursor = cursors.iter().copied().min();
    let mut holes = Vec::new();
    let mut at = match (lowest_cursor, segments.first()) {
        (Some(cursor), Some(&(base, _))) => cursor.min(base),
        (Some(cursor), None) => cursor,
        (None, Some(&(base, _))) => base,
        (None, None) => next_offset,
    };
    for &(base, end) in segments {
        if base > at {
            holes.push((at, base));
        }
        at = at.max(end);
    }
    if next_offset > at {
        holes.push((at, next_offset));
    }
    let mut lost = Vec::new();
    for (from, to) in holes {
        let from = from.max(lowest_cursor.unwrap_or(from));
        if from >= to {
            continue;
        }
        let beside_set_aside = evidence
            .set_aside
            .iter()
            .any(|&(start, end)| start <= to && end >= from);
        if beside_set_aside {
            lost.push((from, to));
        } else if from < evidence.horizon {
            lost.push((from, to.min(evidence.horizon)));
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(base: u64, records: u64, name_base: Option<u64>) -> Probe {
        Probe {
            name_base,
            header: Err("test".into()),
            base,
            header_disagrees: None,
            scan: Scan {
                end_offset: base + records,
                records,
                ..Scan::default()
            },
        }
    }

    #[test]
    fn segments_are_placed_by_their_offsets_not_their_names() {
        // A file renamed above the end, and one renamed below its base.
        let probes = [
            probe(0, 10, Some(0)),
            probe(20, 10, Some(5)),
            probe(10, 10, Some(999)),
        ];
        let placement = place(&probes);
        assert_eq!(placement.placed, vec![0, 2, 1]);
        assert!(placement.displaced.is_empty());
    }

    #[test]
    fn an_overlapping_copy_is_displaced_and_the_well_named_one_kept() {
        let probes = [
            probe(0, 10, Some(0)),
            probe(10, 10, Some(77)),
            probe(10, 10, Some(10)),
            probe(15, 10, Some(15)),
        ];
        let placement = place(&probes);
        assert_eq!(placement.placed, vec![0, 2]);
        let displaced: Vec<usize> = placement.displaced.iter().map(|(i, _)| *i).collect();
        assert_eq!(displaced, vec![1, 3]);
    }

    #[test]
    fn holes_are_lost_only_where_a_cursor_had_not_passed() {
        let segments = [(0, 10), (20, 30), (40, 50)];
        let durable = Evidence {
            horizon: 50,
            set_aside: &[],
        };
        // No cursors: every hole between segments.
        assert_eq!(
            lost_ranges(&segments, &[], 50, durable),
            vec![(10, 20), (30, 40)]
        );
        // A cursor at 25: the hole below it was delivered.
        assert_eq!(
            lost_ranges(&segments, &[25, 45], 50, durable),
            vec![(30, 40)]
        );
        // Every cursor past every hole: nothing lost.
        assert_eq!(lost_ranges(&segments, &[40], 50, durable), vec![]);
        // A cursor below the first segment: the front is lost too.
        let far = Evidence {
            horizon: 110,
            set_aside: &[],
        };
        assert_eq!(lost_ranges(&[(100, 110)], &[60], 110, far), vec![(60, 100)]);
        // Offsets up to the next offset that no segment holds.
        assert_eq!(
            lost_ranges(
                &segments,
                &[0],
                70,
                Evidence {
                    horizon: 70,
                    ..durable
                }
            ),
            vec![(10, 20), (30, 40), (50, 70)]
        );
        // A hole that straddles the lowest cursor: only its part above it.
        assert_eq!(
            lost_ranges(&segments, &[15], 50, durable),
            vec![(15, 20), (30, 40)]
        );
    }

    #[test]
    fn holes_that_were_never_durable_are_not_lost() {
        let segments = [(0, 10), (20, 30), (40, 50)];
        // Durable up to 25: the hole above that was a power loss's.
        let partly = Evidence {
            horizon: 15,
            set_aside: &[],
        };
        assert_eq!(lost_ranges(&segments, &[0], 50, partly), vec![(10, 15)]);
        // Nothing known durable (a log of an older format): nothing lost...
        let unknown = Evidence::default();
        assert_eq!(lost_ranges(&segments, &[0], 50, unknown), vec![]);
        // ...except beside a segment file set aside.
        let set_aside = [(30, 31)];
        let quarantined = Evidence {
            horizon: 0,
            set_aside: &set_aside,
        };
        assert_eq!(
            lost_ranges(&segments, &[0], 50, quarantined),
            vec![(30, 40)]
        );
    }
}
