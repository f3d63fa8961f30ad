//! Readers: iterate the durable chunks of the log from any offset,
//! zero-copy from the mapped segments, while the writer appends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::segment::{Segment, SEGMENT_HEADER_LEN};
use super::Shared;
use crate::chunk::frame::{padded_len, ChunkView, FRAME_ALIGN};
use crate::{Error, Result};

/// A chunk stored in the log, borrowed from its segment's mapping. Holding
/// it keeps the mapping alive even if the segment is deleted meanwhile.
#[derive(Clone)]
pub struct StoredChunk {
    segment: Arc<Segment>,
    start: usize,
    end: usize,
    first_offset: u64,
    end_offset: u64,
}

impl std::fmt::Debug for StoredChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredChunk")
            .field("segment", &self.segment.path)
            .field("position", &self.start)
            .field("offsets", &(self.first_offset..self.end_offset))
            .finish()
    }
}

impl StoredChunk {
    /// The validated chunk.
    pub fn view(&self) -> ChunkView<'_> {
        ChunkView::trusted(self.frame())
    }
    /// The frame bytes, exactly as stored.
    pub fn frame(&self) -> &[u8] {
        self.segment
            .map
            .published_bytes()
            .range(self.start, self.end)
    }
    /// Offset of the first record.
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }
    /// One past the offset of the last record.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }
}

/// The frame bytes: lets an HTTP client send a stored chunk straight from
/// the mapping (e.g. `bytes::Bytes::from_owner(chunk)`), with no copy.
impl AsRef<[u8]> for StoredChunk {
    fn as_ref(&self) -> &[u8] {
        self.frame()
    }
}

/// Iterates durable chunks in offset order. `next` returns `None` when the
/// reader has caught up; call it again (or [`Reader::wait`]) for more.
/// A chunk found damaged after the log was opened is reported once as an
/// `Err` and skipped.
pub struct Reader {
    shared: Arc<Shared>,
    segment: Option<Arc<Segment>>,
    position: usize,
    next_offset: u64,
    gap: Option<(u64, u64)>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("next_offset", &self.next_offset)
            .field("position", &self.position)
            .finish()
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64) -> Self {
        Reader {
            shared,
            segment: None,
            position: SEGMENT_HEADER_LEN,
            next_offset: offset,
            gap: None,
        }
    }

    /// The offset the reader continues from.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Offsets `[from, to)` the reader stepped over because they were no
    /// longer stored (deleted by `drop_oldest` or lost to damage), since the
    /// last call.
    pub fn take_gap(&mut self) -> Option<(u64, u64)> {
        self.gap.take()
    }

    /// Waits until a record at or after the reader's position is durable,
    /// or `timeout` passes. Returns whether there is more to read.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        self.shared
            .wait_durable(self.next_offset + 1, Some(Instant::now() + timeout))
    }

    /// Async [`Reader::wait`] without a timeout (use the runtime's): resolves
    /// once a record at or after the reader's position is durable.
    pub async fn ready(&self) -> Result<()> {
        self.shared.durable(self.next_offset + 1).await
    }

    fn locate(&self, after_base: Option<u64>) -> Option<Arc<Segment>> {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        match after_base {
            Some(base) => segments.iter().find(|s| s.base_offset > base).cloned(),
            None => {
                let index = segments.partition_point(|s| s.base_offset <= self.next_offset);
                segments.get(index.saturating_sub(1)).cloned()
            }
        }
    }

    fn has_next_segment(&self, base: u64) -> bool {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        segments.last().is_some_and(|s| s.base_offset > base)
    }

    /// True when `segment` is no longer in the log although no later
    /// segment exists: the writer replaced it.
    fn is_retired(&self, segment: &Arc<Segment>) -> bool {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        !segments.iter().any(|s| Arc::ptr_eq(s, segment))
    }

    fn note_gap(&mut self, to: u64) {
        if to > self.next_offset {
            let from = self.gap.map_or(self.next_offset, |(from, _)| from);
            self.gap = Some((from, to));
            self.next_offset = to;
        }
    }
}

impl Iterator for Reader {
    type Item = Result<StoredChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let segment = match &self.segment {
                Some(segment) => segment.clone(),
                None => {
                    let segment = self.locate(None)?;
                    self.note_gap(segment.base_offset);
                    self.position = SEGMENT_HEADER_LEN;
                    self.segment = Some(segment.clone());
                    segment
                }
            };
            // Check for a later segment before reading the watermark: once a
            // later segment exists, this one never grows again.
            let sealed = self.has_next_segment(segment.base_offset);
            let bytes = segment.map.published_bytes();
            if let Some(&(_, to)) = segment
                .holes
                .iter()
                .find(|(from, _)| *from == self.position)
            {
                self.position = to;
                continue;
            }
            if self.position >= bytes.len() {
                if !sealed {
                    if self.is_retired(&segment) {
                        // Replaced by a segment with the same base before it
                        // held a record (see `Writer::roll`): find that one.
                        self.segment = None;
                        continue;
                    }
                    return None;
                }
                let next = self.locate(Some(segment.base_offset))?;
                self.note_gap(next.base_offset);
                self.segment = Some(next);
                self.position = SEGMENT_HEADER_LEN;
                continue;
            }
            match ChunkView::parse(bytes.from(self.position)) {
                Ok(view) if view.is_loss_marker() => {
                    self.position =
                        (self.position + padded_len(view.frame().len())).min(bytes.len());
                    self.note_gap(view.end_offset());
                }
                Ok(view) => {
                    let durable = self.shared.durable_offset.load(Ordering::Acquire);
                    if view.end_offset() > durable && view.record_count() > 0 {
                        return None;
                    }
                    let start = self.position;
                    let end = start + view.frame().len();
                    self.position = (start + padded_len(view.frame().len())).min(bytes.len());
                    if view.end_offset() <= self.next_offset {
                        continue;
                    }
                    if view.first_offset() > self.next_offset {
                        self.note_gap(view.first_offset());
                    }
                    self.next_offset = view.end_offset();
                    return Some(Ok(StoredChunk {
                        first_offset: view.first_offset(),
                        end_offset: view.end_offset(),
                        segment,
                        start,
                        end,
                    }));
                }
                Err(error) => {
                    // Damage that appeared after recovery checked the
                    // segment (bit rot): report it, then resume at the next
                    // chunk boundary that parses.
                    self.shared
                        .counters
                        .chunks_skipped
                        .fetch_add(1, Ordering::Relaxed);
                    let at = self.position;
                    let mut next = bytes.len();
                    let mut probe = at + FRAME_ALIGN;
                    while probe + 4 <= bytes.len() {
                        if ChunkView::parse(bytes.from(probe)).is_ok() {
                            next = probe;
                            break;
                        }
                        probe += FRAME_ALIGN;
                    }
                    self.position = next;
                    tracing::error!(segment = %segment.path.display(), position = at, %error, "corrupt chunk skipped while reading");
                    return Some(Err(Error::Corruption(format!(
                        "chunk at byte {at} of {}: {error}",
                        segment.path.display()
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::chunk::{ChunkBuilder, ChunkOptions};
    use crate::log::{Log, LogOptions};

    #[test]
    fn record_time_at_reads_the_header_of_the_chunk_holding_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert_eq!(log.record_time_at(0), None);
        for (chunk, time) in [(0u64, 1_000u64), (1, 2_000), (2, 3_000)] {
            let mut builder = ChunkBuilder::new("s", "c", ChunkOptions::default()).unwrap();
            for i in 0..10 {
                builder.push(b"record", time + i, None).unwrap();
            }
            let range = log
                .append(builder.finish().unwrap().unwrap())
                .unwrap()
                .wait_durable()
                .unwrap();
            assert_eq!(range.start, chunk * 10);
        }
        assert_eq!(log.record_time_at(0), Some(1_000));
        assert_eq!(log.record_time_at(9), Some(1_000));
        assert_eq!(log.record_time_at(10), Some(2_000));
        assert_eq!(log.record_time_at(25), Some(3_000));
        assert_eq!(log.record_time_at(30), None);
    }
}
