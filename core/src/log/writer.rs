//! The log writer: one thread per data directory. It receives closed
//! chunks through a bounded channel, stamps their offsets, copies them into
//! the active segment and group-commits: one flush covers every chunk that
//! arrived since the last one.
//!
//! A failed flush stops the writer for good (see [`Error::Poisoned`]): after
//! a failed fsync Linux may have dropped the dirty pages and marked them
//! clean, so retrying could report success for bytes that never reached the
//! disk. Reopening the log runs recovery, which trusts only what it reads.
//!
//! Everything else the writer does is tried again rather than given up:
//! a flush interrupted by a signal (EINTR: nothing was written back) runs
//! again at once; a segment that cannot be created for a passing reason
//! (out of file descriptors or memory) is tried again with a backoff while
//! appends wait; a full filesystem fails the append that needed the
//! segment, or, under [`OnDiskFull::Wait`], makes appends wait as at the
//! disk budget. The folder of segments is synced through a descriptor held
//! open for the log's life, so a flush needs no new descriptor.
//!
//! The active segment's header carries a *durable end* (see `segment.rs`):
//! once a flush has made its bytes durable, and at most once a second (or
//! after a new segment was created), the header is rewritten with what
//! that flush made durable and flushed on its own — after the records, so
//! it never claims more than the disk holds. Closing the log writes it
//! last. Recovery uses it to count records lost from a damaged tail
//! exactly, and to tell lost records from ones a power loss took before
//! they were durable.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::budget;
use super::fault::Faults;
use super::mmap::MapWriter;
use super::segment::{
    write_durable_end, PreparedSegment, Segment, PREPARED_SUFFIX, SEGMENT_HEADER_LEN,
};
use super::{AppendRequest, Command, Durability, OnDiskFull, Shared, WhenFull};
use crate::chunk::frame::{padded_len, seal_frame_with};
use crate::{Error, Result};

/// Most chunks taken from the channel before a group commit.
const MAX_GROUP: usize = 1024;
/// How often at most a flush rewrites the active segment's durable end.
const DURABLE_END_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two tries to create a segment.
const MAX_CREATE_BACKOFF: Duration = Duration::from_secs(1);

/// A request to the preparer thread: create this file with this length.
pub(crate) struct PrepareRequest {
    pub path: PathBuf,
    pub len: u64,
}

/// Runs on its own thread: creates, preallocates and faults in the next
/// segment while the writer fills the current one.
pub(crate) fn run_preparer(
    requests: Receiver<PrepareRequest>,
    results: Sender<Result<PreparedSegment>>,
    faults: Faults,
) {
    for request in requests {
        let prepared = PreparedSegment::create(request.path, request.len, &faults);
        if let Ok(prepared) = &prepared {
            prepared.prefault();
        }
        if results.send(prepared).is_err() {
            break;
        }
    }
}

/// Flush requests taken from the queue and not answered yet. If the
/// writer panics while holding them, the log is poisoned *before* they are
/// answered, so whoever learns from them that the writer is gone finds the
/// log refusing appends too.
struct FlushReplies<'a> {
    shared: &'a Shared,
    replies: Vec<Sender<Result<()>>>,
}

impl Drop for FlushReplies<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let reason = "the log writer thread panicked";
        self.shared.poison(reason.into());
        for reply in self.replies.drain(..) {
            let _ = reply.send(Err(Error::Poisoned(reason.into())));
        }
    }
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub commands: Receiver<Command>,
    pub active: Arc<Segment>,
    pub active_writer: MapWriter,
    /// Segments sealed since the last flush, with their unflushed range.
    /// Weak: a sealed segment deleted meanwhile (every cursor passed it, or
    /// `drop_oldest`) needs no flush, and holding it would keep the deleted
    /// file mapped and its disk space allocated — forever under `never`,
    /// where nothing drains this list.
    pub unflushed: Vec<(Weak<Segment>, usize, usize)>,
    /// Start of the active segment's unflushed bytes.
    pub flushed_to: usize,
    pub dir_dirty: bool,
    pub dirty: bool,
    pub last_flush: Instant,
    /// When a flush last rewrote the active segment's durable end.
    pub durable_end_written: Instant,
    pub prepare: Option<(Sender<PrepareRequest>, Receiver<Result<PreparedSegment>>)>,
    pub preparing: Option<u64>,
    pub prepared: Option<PreparedSegment>,
    pub prepare_seq: u64,
    pub faults: Faults,
    /// The active segment takes no appends (opened on a full disk): the
    /// first append creates a new one.
    pub force_roll: bool,
}

impl Writer {
    pub(crate) fn run(mut self) {
        /// Poisons the log if the writer thread unwinds, so that nobody
        /// waits for a durability that will never come.
        struct PanicGuard<'a>(&'a Shared);
        impl Drop for PanicGuard<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.poison("the log writer thread panicked".into());
                }
            }
        }
        let shared = self.shared.clone();
        let _guard = PanicGuard(&shared);
        self.request_prepare();
        loop {
            let command = match self.next_flush_deadline() {
                Some(deadline) => match self.commands.recv_deadline(deadline) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Command::Shutdown),
                },
                None => Some(self.commands.recv().unwrap_or(Command::Shutdown)),
            };
            let mut flush_replies = FlushReplies {
                shared: &shared,
                replies: Vec::new(),
            };
            let mut shutdown = false;
            if let Some(command) = command {
                let mut next = Some(command);
                let mut taken = 0;
                while let Some(command) = next.take() {
                    match command {
                        Command::Append(request) => self.append(request),
                        Command::Flush(reply) => flush_replies.replies.push(reply),
                        Command::Shutdown => {
                            shutdown = true;
                            break;
                        }
                    }
                    taken += 1;
                    if taken < MAX_GROUP {
                        next = self.commands.try_recv().ok();
                    }
                }
            }
            let flush_now = shutdown
                || !flush_replies.replies.is_empty()
                || match self.shared.options.durability {
                    Durability::Always => true,
                    Durability::Interval(every) => self.last_flush.elapsed() >= every,
                    Durability::Never => false,
                };
            if flush_now {
                let result = self.flush();
                for reply in std::mem::take(&mut flush_replies.replies) {
                    let _ = reply.send(
                        result
                            .as_ref()
                            .map(|_| ())
                            .map_err(|e| Error::Poisoned(e.to_string())),
                    );
                }
            } else if self.shared.options.durability == Durability::Never {
                self.publish_durable();
            }
            if shutdown {
                self.write_final_durable_end();
                self.discard_prepared();
                // Appends queued behind the shutdown are answered `Closed`
                // now (their replies answer when dropped); one that still
                // slips in sees the log closed (`AppendTicket::outcome`).
                while let Ok(command) = self.commands.try_recv() {
                    drop(command);
                }
                return;
            }
        }
    }

    fn next_flush_deadline(&self) -> Option<Instant> {
        match self.shared.options.durability {
            Durability::Interval(every) if self.dirty => Some(self.last_flush + every),
            _ => None,
        }
    }

    fn append(&mut self, request: AppendRequest) {
        let AppendRequest { mut chunk, reply } = request;
        let records = chunk.record_count();
        let tail_crc = chunk.tail_crc();
        let result = self.write_chunk(chunk.frame_mut(), records, tail_crc);
        reply.send(result);
    }

    fn write_chunk(
        &mut self,
        frame: &mut [u8],
        record_count: u32,
        tail_crc: u32,
    ) -> Result<Range<u64>> {
        if let Some(reason) = self.shared.poisoned() {
            return Err(Error::Poisoned(reason));
        }
        let padded = padded_len(frame.len());
        // A chunk that needs a segment larger than the budget leaves beside
        // the active one can never be stored: refuse it now, instead of
        // waiting forever (`block`) or dropping everything (`drop_oldest`).
        let capacity = self
            .shared
            .options
            .segment_bytes
            .max((SEGMENT_HEADER_LEN + padded) as u64);
        let needs_roll = self.force_roll
            || self.active_writer.map().published() + padded > self.active.map.len();
        if needs_roll && self.active.file_bytes + capacity > self.shared.options.max_bytes {
            return Err(Error::ChunkTooLarge {
                bytes: frame.len() as u64,
                max_bytes: self.shared.options.max_bytes,
            });
        }
        let first = self.shared.next_offset.load(Ordering::Relaxed);
        let end = match first.checked_add(u64::from(record_count)) {
            Some(end) if end <= crate::chunk::frame::MAX_OFFSET => end,
            _ => {
                return Err(Error::Config(format!(
                    "offsets exhausted: {first} + {record_count} passes the largest offset"
                )))
            }
        };
        if needs_roll {
            self.roll(padded)?;
            self.force_roll = false;
        }
        seal_frame_with(frame, first, tail_crc);
        let at = self.active_writer.map().published();
        self.active_writer.write(at, frame);
        if padded > frame.len() {
            self.active_writer.zero(at + frame.len(), at + padded);
        }
        self.active_writer.publish(at + padded);
        self.active.set_end_offset(end);
        self.shared.next_offset.store(end, Ordering::Release);
        let counters = &self.shared.counters;
        counters.chunks_appended.fetch_add(1, Ordering::Relaxed);
        counters
            .records_appended
            .fetch_add(u64::from(record_count), Ordering::Relaxed);
        counters
            .bytes_appended
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.dirty = true;
        self.shared.notify_progress();
        Ok(first..end)
    }

    /// Seals the active segment and starts a new one that fits `needed` bytes.
    fn roll(&mut self, needed: usize) -> Result<()> {
        let options = &self.shared.options;
        let capacity = options
            .segment_bytes
            .max((SEGMENT_HEADER_LEN + needed) as u64);
        let prepared = match self.take_prepared() {
            Some(prepared) if prepared.len() >= capacity => prepared,
            other => {
                if let Some(small) = other {
                    self.discard(small);
                }
                self.create_segment(capacity)?
            }
        };
        let base = self.shared.next_offset.load(Ordering::Relaxed);
        let (prepared_path, prepared_len) = (prepared.path().to_owned(), prepared.len());
        let (segment, writer) =
            match prepared.activate(&self.shared.segments_dir, base, self.shared.producer_id.0) {
                Ok(activated) => activated,
                Err(error) => {
                    // Give back the reservation and the file, or the budget
                    // drifts and a `.prep` file stays behind.
                    let _ = std::fs::remove_file(&prepared_path);
                    self.shared
                        .disk_bytes
                        .fetch_sub(prepared_len, Ordering::AcqRel);
                    return Err(error);
                }
            };
        let old = std::mem::replace(&mut self.active, segment.clone());
        let old_end = self.active_writer.map().published();
        self.active_writer = writer;
        // An active segment without records (a chunk too large for the
        // segment opened by `Log::open`) has the same base, so the rename
        // above replaced its file: retire it instead of sealing it, or the
        // log would list two segments with one path and deleting the older
        // would delete the new one.
        let replaced = old.base_offset == base;
        if replaced {
            self.shared
                .disk_bytes
                .fetch_sub(old.file_bytes, Ordering::AcqRel);
        } else {
            self.unflushed
                .retain(|(sealed, _, _)| sealed.strong_count() > 0);
            self.unflushed
                .push((Arc::downgrade(&old), self.flushed_to, old_end));
        }
        self.flushed_to = 0;
        self.dir_dirty = true;
        self.dirty = true;
        {
            let mut segments = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if replaced {
                segments.retain(|s| !Arc::ptr_eq(s, &old));
            }
            segments.push(segment);
        }
        self.shared
            .counters
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(base, capacity, "segment created");
        self.request_prepare();
        Ok(())
    }

    /// Creates a segment file of `capacity` bytes within the budget. A
    /// passing error (out of descriptors or memory) is tried again with a
    /// backoff, appends waiting meanwhile; a full filesystem fails the
    /// append or, under [`OnDiskFull::Wait`], is waited out the same way
    /// (under `drop_oldest`, after deleting the oldest segment). Gives up
    /// when the log closes.
    fn create_segment(&mut self, capacity: u64) -> Result<PreparedSegment> {
        let mut backoff = Duration::from_millis(10);
        let mut waiting = false;
        loop {
            let shared = self.shared.clone();
            budget::reserve(&shared, capacity, || self.flush_quietly())?;
            let path = self.next_prepared_path();
            let error = match PreparedSegment::create(path, capacity, &self.faults) {
                Ok(prepared) => {
                    if self.shared.disk_full.swap(false, Ordering::AcqRel) {
                        tracing::info!(dir = %self.shared.dir.display(), "space on disk again: a segment was created; appends resume");
                    } else if waiting {
                        tracing::info!(dir = %self.shared.dir.display(), "a segment was created; appends resume");
                    }
                    return Ok(prepared);
                }
                Err(error) => error,
            };
            self.shared.disk_bytes.fetch_sub(capacity, Ordering::AcqRel);
            let disk_full = matches!(error, Error::DiskFull { .. });
            let counters = &self.shared.counters;
            if disk_full {
                if self.shared.options.on_disk_full == OnDiskFull::Fail {
                    if let Error::DiskFull { path, bytes, .. } = &error {
                        tracing::error!(path = %path.display(), bytes, "disk full: cannot create segment");
                    }
                    return Err(error);
                }
                if !self.shared.disk_full.swap(true, Ordering::AcqRel) {
                    counters.disk_full_waits.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(dir = %self.shared.dir.display(), %error, "disk full: appends wait until space is freed");
                }
                if self.shared.options.when_full == WhenFull::DropOldest
                    && budget::drop_oldest(&self.shared)
                {
                    continue;
                }
            } else if error.is_transient() {
                counters.transient_errors.fetch_add(1, Ordering::Relaxed);
                if !waiting {
                    tracing::warn!(dir = %self.shared.dir.display(), %error, "cannot create a segment for now; appends wait and it is tried again");
                }
            } else {
                return Err(error);
            }
            waiting = true;
            if self.shared.closing.load(Ordering::Acquire) {
                return Err(error);
            }
            // Appends wait; what was appended before becomes durable.
            self.flush_quietly();
            let guard = self.shared.space.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self
                .shared
                .space_freed
                .wait_timeout(guard, backoff)
                .unwrap_or_else(|e| e.into_inner());
            backoff = (backoff * 2).min(MAX_CREATE_BACKOFF);
        }
    }

    fn next_prepared_path(&mut self) -> PathBuf {
        self.prepare_seq += 1;
        self.shared
            .segments_dir
            .join(format!("next-{}{PREPARED_SUFFIX}", self.prepare_seq))
    }

    /// Asks the preparer for the next segment when the budget has room for it.
    fn request_prepare(&mut self) {
        if self.preparing.is_some() || self.prepared.is_some() {
            return;
        }
        let len = self.shared.options.segment_bytes;
        if !budget::try_reserve(&self.shared, len) {
            return;
        }
        let path = self.next_prepared_path();
        match &self.prepare {
            Some((requests, _)) if requests.send(PrepareRequest { path, len }).is_ok() => {
                self.preparing = Some(len);
            }
            _ => {
                self.shared.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            }
        }
    }

    fn take_prepared(&mut self) -> Option<PreparedSegment> {
        if self.prepared.is_none() {
            if let (Some(len), Some((_, results))) = (self.preparing, &self.prepare) {
                // The roll needs it now: wait for the preparer to finish.
                match results.recv() {
                    Ok(Ok(prepared)) => self.prepared = Some(prepared),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "preparing the next segment failed; creating it in line");
                        self.shared.disk_bytes.fetch_sub(len, Ordering::AcqRel);
                    }
                    Err(_) => {
                        self.shared.disk_bytes.fetch_sub(len, Ordering::AcqRel);
                    }
                }
                self.preparing = None;
            }
        }
        self.prepared.take()
    }

    fn discard(&self, prepared: PreparedSegment) {
        let path = prepared.path().to_owned();
        let len = prepared.len();
        drop(prepared);
        let _ = std::fs::remove_file(&path);
        self.shared.disk_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    fn discard_prepared(&mut self) {
        if let Some((requests, results)) = self.prepare.take() {
            drop(requests);
            if let Some(len) = self.preparing.take() {
                match results.recv() {
                    Ok(Ok(prepared)) => self.discard(prepared),
                    _ => {
                        self.shared.disk_bytes.fetch_sub(len, Ordering::AcqRel);
                    }
                }
            }
        }
        if let Some(prepared) = self.prepared.take() {
            self.discard(prepared);
        }
    }

    fn flush_quietly(&mut self) {
        let _ = self.flush();
    }

    /// Flushes every unflushed byte, then the directory if segments were
    /// created, then publishes the durable offset. A failure poisons the log.
    fn flush(&mut self) -> Result<()> {
        if let Some(reason) = self.shared.poisoned() {
            return Err(Error::Poisoned(reason));
        }
        if !self.dirty {
            self.publish_durable();
            return Ok(());
        }
        let target = self.shared.next_offset.load(Ordering::Acquire);
        let started = Instant::now();
        let result = self.flush_inner();
        let counters = &self.shared.counters;
        counters.flushes.fetch_add(1, Ordering::Relaxed);
        counters
            .flush_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.last_flush = Instant::now();
        match result {
            Ok(()) => {
                self.dirty = false;
                self.shared.durable_offset.store(target, Ordering::Release);
                self.shared.notify_progress();
                Ok(())
            }
            Err(error) => {
                self.shared.poison(error.to_string());
                Err(error)
            }
        }
    }

    fn flush_inner(&mut self) -> Result<()> {
        self.faults.before_flush()?;
        for (segment, from, to) in self.unflushed.drain(..) {
            let Some(segment) = segment.upgrade() else {
                continue;
            };
            retry_interrupted(|| segment.map.flush(from, to))
                .map_err(|e| Error::io("flushing segment", &segment.path, e))?;
            // Sealed and durable: its pages leave the resident set until a
            // reader touches them (they stay in the page cache).
            segment.map.release_pages();
        }
        let to = self.active_writer.map().published();
        retry_interrupted(|| self.active.map.flush(self.flushed_to, to))
            .map_err(|e| Error::io("flushing segment", &self.active.path, e))?;
        self.flushed_to = to;
        let rolled = self.dir_dirty;
        if self.dir_dirty {
            retry_interrupted(|| self.shared.segments_dir_handle.sync_all())
                .map_err(|e| Error::io("syncing directory", &self.shared.segments_dir, e))?;
            self.dir_dirty = false;
        }
        if rolled || self.durable_end_written.elapsed() >= DURABLE_END_EVERY {
            // Everything appended so far is durable now: say so in the
            // header, flushed on its own after the records.
            let durable = self.active.end_offset();
            self.write_durable_end(durable)?;
        }
        Ok(())
    }

    /// Writes `durable` into the active segment's header and flushes it.
    fn write_durable_end(&mut self, durable: u64) -> Result<()> {
        write_durable_end(&mut self.active_writer, durable);
        self.durable_end_written = Instant::now();
        retry_interrupted(|| self.active.map.flush(0, SEGMENT_HEADER_LEN))
            .map_err(|e| Error::io("flushing segment header", &self.active.path, e))
    }

    /// After the last flush: the active segment's header gets the end of
    /// everything in it, now durable.
    fn write_final_durable_end(&mut self) {
        if self.shared.poisoned().is_some() || self.dirty {
            return;
        }
        let end = self.active.end_offset();
        if let Err(error) = self.write_durable_end(end) {
            tracing::warn!(segment = %self.active.path.display(), %error, "cannot write the segment's durable end at close");
        }
    }

    fn publish_durable(&self) {
        let next = self.shared.next_offset.load(Ordering::Acquire);
        if self.shared.durable_offset.swap(next, Ordering::AcqRel) != next {
            self.shared.notify_progress();
        }
    }
}

/// Runs `operation` again while it fails with EINTR: interrupted before it
/// did anything, so running it again is sound, even for a flush.
fn retry_interrupted(mut operation: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    loop {
        match operation() {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::chunk::{ChunkBuilder, ChunkOptions, Compression};
    use crate::log::{Durability, Log, LogOptions};

    /// Mappings of files under `dir` that have been deleted.
    fn deleted_mappings(dir: &std::path::Path) -> usize {
        let dir = dir.to_string_lossy();
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|line| line.contains(&*dir) && line.ends_with("(deleted)"))
            .count()
    }

    #[test]
    fn deleted_segments_are_unmapped_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 64 + 4096,
            max_bytes: 1 << 20,
            durability: Durability::Never,
            ..LogOptions::default()
        };
        let log = Log::open(dir.path(), options).unwrap();
        let chunk_options = ChunkOptions {
            compression: Compression::None,
            ..ChunkOptions::default()
        };
        let mut builder = ChunkBuilder::new("s", "c", chunk_options).unwrap();
        for _ in 0..8 {
            builder.push(&[b'x'; 3000], 0, None).unwrap();
            log.append(builder.finish().unwrap().unwrap())
                .unwrap()
                .wait()
                .unwrap();
        }
        assert!(log.metrics().segments_created >= 7);
        log.commit_cursor("sink", log.next_offset()).unwrap();
        assert!(log.metrics().segments_deleted >= 6);
        // Under `never` nothing flushes, so nothing may keep a sealed
        // segment alive once every cursor has passed it.
        assert_eq!(deleted_mappings(dir.path()), 0);
        log.close().unwrap();
    }
}
