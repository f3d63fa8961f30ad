//! The segmented log: compressed chunks in memory-mapped, preallocated
//! segment files, one writer thread with group commit, zero-copy readers,
//! named cursors, a disk budget and self-healing recovery.
//!
//! ```
//! use shipper_core::chunk::{ChunkBuilder, ChunkOptions};
//! use shipper_core::log::{Log, LogOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), LogOptions::default()).unwrap();
//! let mut builder = ChunkBuilder::new("app", "demo", ChunkOptions::default()).unwrap();
//! builder.push(b"hello", 1, None).unwrap();
//! let range = log.append(builder.finish().unwrap().unwrap()).unwrap().wait_durable().unwrap();
//! assert_eq!(range, 0..1);
//!
//! let mut reader = log.reader(0);
//! let chunk = reader.next().unwrap().unwrap();
//! assert_eq!(chunk.first_offset(), 0);
//! log.commit_cursor("sink", chunk.end_offset()).unwrap();
//! log.close().unwrap();
//! ```

mod budget;
mod cursor;
pub mod dir;
mod fault;
mod inspect;
mod mmap;
pub mod modes;
mod open;
mod placement;
mod positions;
mod reader;
pub mod recovery;
pub mod segment;
mod writer;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use event_listener::{Event, Listener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

pub use cursor::validate_cursor_name;
pub use dir::ProducerId;
pub use fault::Faults;
pub use inspect::{inspect, CursorInfo, Finding, InspectReport, SegmentInfo, SegmentState};
pub use positions::{source_position, split_source_position, POSITIONS_FILE};
pub use reader::{Reader, StoredChunk};
pub use recovery::RecoveryReport;

use crate::chunk::ClosedChunk;
use crate::{Error, Result};
use segment::Segment;

/// Where a log ends, for whoever must check a claim against it (a sink
/// judging a backend's answer) without holding the log itself.
#[derive(Clone)]
pub struct LogEnd(Arc<Shared>);

impl LogEnd {
    /// The offset the next record will get: no record at or above it was
    /// ever stored (offsets never go back, not even across crashes).
    pub fn next_offset(&self) -> u64 {
        self.0.next_offset.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for LogEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogEnd").field(&self.next_offset()).finish()
    }
}

/// When appended chunks are flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every append is durable before it is acknowledged; appends that
    /// arrive together share one flush (group commit).
    Always,
    /// Flush at most this often; an append is acknowledged as durable after
    /// the next flush.
    Interval(Duration),
    /// Never flush: the kernel writes back when it likes. Appends survive a
    /// crash of the process, not of the machine.
    Never,
}

/// What an append does when the log has reached its disk budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait until consumers acknowledge and segments are deleted.
    Block,
    /// Delete the oldest segment, acknowledged or not; counted and logged.
    DropOldest,
}

/// What the writer does when the filesystem has no room for a new
/// segment (ENOSPC), as opposed to the log reaching its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDiskFull {
    /// The append that needed the segment fails with [`Error::DiskFull`];
    /// the next one tries again.
    Fail,
    /// Appends wait, as at the disk budget: the writer tries again with a
    /// backoff until space is freed (under [`WhenFull::DropOldest`] it
    /// first deletes the oldest segment), [`Log::is_full`] and
    /// [`Log::disk_full`] say so meanwhile, and producers resume by
    /// themselves once a segment could be created.
    Wait,
}

/// Options of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Size of a segment file (a chunk larger than this gets a segment of its own size).
    pub segment_bytes: u64,
    /// Disk budget for all segment files; at least 3 × `segment_bytes`.
    pub max_bytes: u64,
    /// Policy when the budget is reached.
    pub when_full: WhenFull,
    /// Flush policy.
    pub durability: Durability,
    /// What appends do when the filesystem is full.
    pub on_disk_full: OnDiskFull,
    /// Closed chunks that may wait for the writer before `append` blocks.
    pub channel_capacity: usize,
    /// Create and fault in the next segment ahead of time on a helper
    /// thread, so that appends never take a page fault.
    pub prepare_ahead: bool,
    /// Injected I/O faults, for tests; none by default.
    pub faults: Faults,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 4 << 20,
            max_bytes: 10 << 30,
            when_full: WhenFull::Block,
            durability: Durability::Interval(Duration::from_millis(100)),
            on_disk_full: OnDiskFull::Fail,
            channel_capacity: 64,
            prepare_ahead: true,
            faults: Faults::default(),
        }
    }
}

impl LogOptions {
    fn validate(&self) -> Result<()> {
        let min_segment = (segment::SEGMENT_HEADER_LEN + 4096) as u64;
        if self.segment_bytes < min_segment || self.segment_bytes > 1 << 40 {
            return Err(Error::Config(format!(
                "segment_bytes must be between {min_segment} bytes and 1 TiB, got {}",
                self.segment_bytes
            )));
        }
        if self.max_bytes < 3 * self.segment_bytes {
            return Err(Error::Config(format!(
                "max_bytes ({}) must be at least 3 × segment_bytes ({}): one active segment, one prepared and one to drain",
                self.max_bytes,
                3 * self.segment_bytes
            )));
        }
        if self.channel_capacity == 0 {
            return Err(Error::Config("channel_capacity must be at least 1".into()));
        }
        Ok(())
    }
}

/// Counters of the log, for metrics and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub chunks_appended: AtomicU64,
    pub records_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_nanos: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub records_dropped: AtomicU64,
    pub segments_dropped: AtomicU64,
    pub chunks_skipped: AtomicU64,
    pub full_waits: AtomicU64,
    pub disk_full_waits: AtomicU64,
    pub transient_errors: AtomicU64,
    pub records_lost: AtomicU64,
}

/// A snapshot of the log's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogMetrics {
    /// Chunks appended since open.
    pub chunks_appended: u64,
    /// Records appended since open.
    pub records_appended: u64,
    /// Frame bytes (compressed) appended since open.
    pub bytes_appended: u64,
    /// Flushes to stable storage since open.
    pub flushes: u64,
    /// Total time spent in flushes, nanoseconds.
    pub flush_nanos: u64,
    /// Segments created since open.
    pub segments_created: u64,
    /// Segments deleted after every cursor passed them.
    pub segments_deleted: u64,
    /// Records deleted unacknowledged by `drop_oldest`.
    pub records_dropped: u64,
    /// Segments deleted unacknowledged by `drop_oldest`.
    pub segments_dropped: u64,
    /// Damaged chunks skipped (recovery and reads).
    pub chunks_skipped: u64,
    /// Times the writer waited for space under `block`.
    pub full_waits: u64,
    /// Times the writer waited for the filesystem to have room for a
    /// segment ([`OnDiskFull::Wait`]).
    pub disk_full_waits: u64,
    /// Operations the writer tried again after a passing error (out of
    /// file descriptors or memory, interrupted).
    pub transient_errors: u64,
    /// 1 while the filesystem has no room for a new segment, else 0.
    pub disk_full: u64,
    /// Records recovery found lost when the log was opened.
    pub records_lost: u64,
    /// Segment files on disk now.
    pub segments: u64,
    /// Bytes of segment files on disk now (including a prepared one).
    pub disk_bytes: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
    /// Every record below this offset is durable.
    pub durable_offset: u64,
    /// Oldest offset still stored.
    pub start_offset: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub poisoned: Option<String>,
    pub closed: bool,
}

/// State shared by the log handle, the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub segments_dir: PathBuf,
    /// `segments/`, open for its whole life: syncing the folder after a
    /// segment is created or deleted then needs no new file descriptor,
    /// so running out of them cannot fail a flush.
    pub segments_dir_handle: std::fs::File,
    pub cursors_dir: PathBuf,
    pub options: LogOptions,
    pub producer_id: ProducerId,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    pub next_offset: AtomicU64,
    pub durable_offset: AtomicU64,
    pub progress: Mutex<Progress>,
    /// Set with `progress.poisoned`: appends check it without a lock.
    pub poisoned_flag: AtomicBool,
    /// Notified when the durable or written offset moves, or the log is
    /// poisoned or closed. Serves blocking and async waiters alike.
    pub progress_changed: Event,
    pub space: Mutex<()>,
    pub space_freed: Condvar,
    pub cursors: Mutex<BTreeMap<String, u64>>,
    /// The last source positions of deleted segments; also serialises
    /// segment deletion (see `budget`).
    pub deleted_positions: Mutex<positions::Positions>,
    /// Trained zstd dictionaries, in `DATA_DIR/dictionaries`.
    pub dictionaries: Arc<crate::chunk::Dictionaries>,
    pub disk_bytes: AtomicU64,
    pub full: AtomicBool,
    /// The filesystem had no room for the last segment the writer tried
    /// to create (cleared once one is created).
    pub disk_full: AtomicBool,
    pub closing: AtomicBool,
    pub counters: Counters,
}

impl Shared {
    /// Wakes everybody waiting for progress (durability, new data, errors).
    pub(crate) fn notify_progress(&self) {
        self.progress_changed.notify(usize::MAX);
    }

    pub(crate) fn poison(&self, reason: String) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if progress.poisoned.is_none() {
            tracing::error!(dir = %self.dir.display(), %reason, "log writer stopped: flush failed");
            progress.poisoned = Some(reason);
            self.poisoned_flag.store(true, Ordering::Release);
        }
        drop(progress);
        self.notify_progress();
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poisoned
            .clone()
    }

    /// `Ok(true)` once `offset` is durable; an error once the log is
    /// poisoned or closed short of it; `Ok(false)` while waiting makes sense.
    fn durable_reached(&self, offset: u64) -> Result<bool> {
        if self.durable_offset.load(Ordering::Acquire) >= offset {
            return Ok(true);
        }
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &progress.poisoned {
            return Err(Error::Poisoned(reason.clone()));
        }
        if progress.closed {
            return Err(Error::Closed);
        }
        Ok(false)
    }

    /// Waits until `offset` is durable, the log is poisoned or closed, or the deadline passes.
    pub(crate) fn wait_durable(&self, offset: u64, deadline: Option<Instant>) -> Result<bool> {
        loop {
            if self.durable_reached(offset)? {
                return Ok(true);
            }
            // Listen, then check again: a notification between the first
            // check and `listen` is not lost.
            let listener = self.progress_changed.listen();
            if self.durable_reached(offset)? {
                return Ok(true);
            }
            match deadline {
                None => listener.wait(),
                Some(deadline) => {
                    if listener.wait_deadline(deadline).is_none() {
                        return self.durable_reached(offset);
                    }
                }
            }
        }
    }

    /// Async form of [`Shared::wait_durable`] without a deadline (use the
    /// runtime's timeout); it never blocks a thread.
    pub(crate) async fn durable(&self, offset: u64) -> Result<()> {
        loop {
            if self.durable_reached(offset)? {
                return Ok(());
            }
            let listener = self.progress_changed.listen();
            if self.durable_reached(offset)? {
                return Ok(());
            }
            listener.await;
        }
    }

    pub(crate) fn start_offset(&self) -> u64 {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segments.first().map_or(0, |s| s.base_offset)
    }
}

pub(crate) enum Command {
    Append(AppendRequest),
    Flush(Sender<Result<()>>),
    Shutdown,
}

pub(crate) struct AppendRequest {
    pub chunk: ClosedChunk,
    pub reply: Reply,
}

/// Where the writer leaves the outcome of one append.
#[derive(Debug, Default)]
pub(crate) struct TicketSlot {
    outcome: Mutex<Option<Result<Range<u64>>>>,
    ready: Event,
}

impl TicketSlot {
    fn take(&self) -> Option<Result<Range<u64>>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The writer's side of a ticket. Dropped unanswered (a request still
/// queued when the log closes), it answers [`Error::Closed`], so no ticket
/// waits forever.
#[derive(Debug)]
pub(crate) struct Reply(Option<Arc<TicketSlot>>);

impl Reply {
    pub(crate) fn send(mut self, outcome: Result<Range<u64>>) {
        if let Some(slot) = self.0.take() {
            *slot.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
            slot.ready.notify(usize::MAX);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            *slot.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(Err(Error::Closed));
            slot.ready.notify(usize::MAX);
        }
    }
}

/// A pending append: resolves to the chunk's offset range once the writer
/// has stored it, and can wait until that range is durable. Every wait has
/// a blocking form and an async one that never blocks a runtime thread.
#[derive(Debug)]
pub struct AppendTicket {
    slot: Arc<TicketSlot>,
    shared: Arc<Shared>,
}

impl AppendTicket {
    fn new(shared: &Arc<Shared>) -> (AppendTicket, Reply) {
        let slot = Arc::new(TicketSlot::default());
        let reply = Reply(Some(slot.clone()));
        (
            AppendTicket {
                slot,
                shared: shared.clone(),
            },
            reply,
        )
    }

    /// The outcome if the writer has already answered: `Ok` with the
    /// range or the append's error. `None` while the chunk is queued. Once
    /// it returned `Some`, later calls (and `wait`) see nothing more: the
    /// outcome is handed out once.
    pub fn try_outcome(&mut self) -> Option<Result<Range<u64>>> {
        self.slot.take()
    }

    /// The outcome, or `Closed` once the log has closed without answering:
    /// an append queued just as the writer stopped is never answered by
    /// it (its reply goes only with the last handle to the log).
    fn outcome(&self) -> Option<Result<Range<u64>>> {
        if let Some(outcome) = self.slot.take() {
            return Some(outcome);
        }
        let closed = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed;
        // The writer may have answered before the log was marked closed.
        closed.then(|| self.slot.take().unwrap_or(Err(Error::Closed)))
    }

    /// Waits until the chunk is in the log (readable, not yet durable) and
    /// returns its offset range.
    pub fn wait(self) -> Result<Range<u64>> {
        loop {
            let listener = self.slot.ready.listen();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            // The answer wakes this at once; a close is seen within 50 ms.
            let _ = listener.wait_timeout(Duration::from_millis(50));
        }
    }

    /// Waits until the chunk is durable under the log's policy.
    pub fn wait_durable(self) -> Result<Range<u64>> {
        let shared = self.shared.clone();
        let range = self.wait()?;
        shared.wait_durable(range.end, None)?;
        Ok(range)
    }

    /// Async [`AppendTicket::wait`].
    pub async fn written(self) -> Result<Range<u64>> {
        loop {
            let mut answered = self.slot.ready.listen();
            let mut closed = self.shared.progress_changed.listen();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            // The answer, or the log closing (or any other progress).
            std::future::poll_fn(|cx| {
                let woken = std::future::Future::poll(std::pin::Pin::new(&mut answered), cx)
                    .is_ready()
                    || std::future::Future::poll(std::pin::Pin::new(&mut closed), cx).is_ready();
                if woken {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
        }
    }

    /// Async [`AppendTicket::wait_durable`].
    pub async fn durable(self) -> Result<Range<u64>> {
        let shared = self.shared.clone();
        let range = self.written().await?;
        shared.durable(range.end).await?;
        Ok(range)
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    report: RecoveryReport,
    lock: Mutex<Option<dir::DirLock>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = shutdown(&self.shared, &self.commands, &self.threads);
    }
}

fn shutdown(
    shared: &Shared,
    commands: &Sender<Command>,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) -> Result<()> {
    shared.closing.store(true, Ordering::Release);
    {
        let _guard = shared.space.lock().unwrap_or_else(|e| e.into_inner());
        shared.space_freed.notify_all();
    }
    let _ = commands.send(Command::Shutdown);
    let handles: Vec<_> = std::mem::take(&mut *threads.lock().unwrap_or_else(|e| e.into_inner()));
    for handle in handles {
        let _ = handle.join();
    }
    {
        let mut progress = shared.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.closed = true;
    }
    shared.notify_progress();
    match shared.poisoned() {
        Some(reason) => Err(Error::Poisoned(reason)),
        None => Ok(()),
    }
}

/// What [`Log::offer`] did with a chunk.
#[derive(Debug)]
pub enum Offer {
    /// Queued for the writer.
    Queued(AppendTicket),
    /// The writer's queue is full: the chunk, given back.
    QueueFull(ClosedChunk),
}

/// A handle to an open log. Clones share the same log; it closes when the
/// last clone is dropped or [`Log::close`] is called.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, repairing whatever it
    /// finds there; see [`Log::recovery_report`]. Fails only for reasons of
    /// the system (permissions, the directory locked by another process,
    /// invalid options), never because of the bytes in it.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        options.validate()?;
        let opened = open::open(dir.as_ref(), options)?;
        Ok(Log {
            inner: Arc::new(Inner {
                shared: opened.shared,
                commands: opened.commands,
                threads: Mutex::new(opened.threads),
                report: opened.report,
                lock: Mutex::new(Some(opened.lock)),
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared().dir
    }

    /// The producer id of the data directory.
    pub fn producer_id(&self) -> ProducerId {
        self.shared().producer_id
    }

    /// The log's dictionary store: where builders put trained dictionaries
    /// and where a [`crate::chunk::Decoder`] of its chunks finds them.
    pub fn dictionaries(&self) -> Arc<crate::chunk::Dictionaries> {
        self.shared().dictionaries.clone()
    }

    /// What recovery repaired when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Hands a closed chunk to the writer, waiting while the writer's queue
    /// is full. The ticket resolves to the chunk's offset range.
    pub fn append(&self, chunk: ClosedChunk) -> Result<AppendTicket> {
        self.refuse_if_poisoned()?;
        let (ticket, reply) = AppendTicket::new(self.shared());
        self.inner
            .commands
            .send(Command::Append(AppendRequest { chunk, reply }))
            .map_err(|_| self.closed_error())?;
        Ok(ticket)
    }

    /// Hands `chunk` to the writer if its queue has room; otherwise gives
    /// the chunk back ([`Offer::QueueFull`]) so the caller can wait for
    /// room in a way that suits it (an async runtime moves the wait off
    /// its workers) and then [`Log::append`] it.
    pub fn offer(&self, chunk: ClosedChunk) -> Result<Offer> {
        self.refuse_if_poisoned()?;
        let (ticket, reply) = AppendTicket::new(self.shared());
        match self
            .inner
            .commands
            .try_send(Command::Append(AppendRequest { chunk, reply }))
        {
            Ok(()) => Ok(Offer::Queued(ticket)),
            Err(TrySendError::Full(Command::Append(request))) => {
                Ok(Offer::QueueFull(request.chunk))
            }
            Err(TrySendError::Full(_)) => unreachable!("the command sent was an append"),
            Err(TrySendError::Disconnected(_)) => Err(self.closed_error()),
        }
    }

    /// Like [`Log::append`] but returns [`Error::Full`] instead of waiting
    /// when the log is at its disk budget or the writer's queue is full.
    pub fn try_append(&self, chunk: ClosedChunk) -> Result<AppendTicket> {
        self.refuse_if_poisoned()?;
        if self.shared().full.load(Ordering::Acquire) {
            return Err(Error::Full {
                max_bytes: self.shared().options.max_bytes,
            });
        }
        let (ticket, reply) = AppendTicket::new(self.shared());
        match self
            .inner
            .commands
            .try_send(Command::Append(AppendRequest { chunk, reply }))
        {
            Ok(()) => Ok(ticket),
            Err(TrySendError::Full(_)) => Err(Error::Full {
                max_bytes: self.shared().options.max_bytes,
            }),
            Err(TrySendError::Disconnected(_)) => Err(self.closed_error()),
        }
    }

    /// `Error::Poisoned` once a flush failed (or the writer died): the
    /// writer may still be unwinding, its queue open, but takes nothing more.
    fn refuse_if_poisoned(&self) -> Result<()> {
        if self.shared().poisoned_flag.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        Ok(())
    }

    fn closed_error(&self) -> Error {
        match self.shared().poisoned() {
            Some(reason) => Error::Poisoned(reason),
            None => Error::Closed,
        }
    }

    /// Flushes everything appended so far to stable storage, whatever the
    /// policy, and returns when it is durable.
    pub fn flush(&self) -> Result<()> {
        let (reply, done) = crossbeam_channel::bounded(1);
        self.inner
            .commands
            .send(Command::Flush(reply))
            .map_err(|_| self.closed_error())?;
        done.recv().unwrap_or_else(|_| Err(self.closed_error()))
    }

    /// Asks the writer to flush once it has written what is queued before
    /// this request, without waiting (group commit: one flush serves every
    /// append before it). Returns false when the writer's queue is full;
    /// the caller may then [`Log::flush`] on a thread that can block.
    /// Under `interval` durability, someone who must answer only once data
    /// is durable (an aggregator's receiver) asks for this instead of
    /// waiting up to the interval.
    pub fn request_flush(&self) -> bool {
        let (reply, _ignored) = crossbeam_channel::bounded(1);
        match self.inner.commands.try_send(Command::Flush(reply)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            // Closed: whoever waits for durability learns it there.
            Err(TrySendError::Disconnected(_)) => true,
        }
    }

    /// [`Log::flush`] that gives up after `timeout` and returns whether
    /// the flush completed. A writer waiting for disk space (the log is at
    /// its budget under `block`) answers no flush until space frees; what
    /// was appended before the chunk it waits with is durable already.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let (reply, done) = crossbeam_channel::bounded(1);
        match self
            .inner
            .commands
            .send_deadline(Command::Flush(reply), deadline)
        {
            Ok(()) => {}
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => return Ok(false),
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                return Err(self.closed_error())
            }
        }
        match done.recv_deadline(deadline) {
            Ok(result) => result.map(|()| true),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(false),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(self.closed_error()),
        }
    }

    /// Waits until every record below `offset` is durable.
    pub fn wait_durable(&self, offset: u64) -> Result<()> {
        self.shared().wait_durable(offset, None).map(|_| ())
    }

    /// Async [`Log::wait_durable`]: never blocks a runtime thread.
    pub async fn durable(&self, offset: u64) -> Result<()> {
        self.shared().durable(offset).await
    }

    /// Waits until every record below `offset` is durable or `timeout`
    /// passes; returns whether it became durable.
    pub fn wait_durable_timeout(&self, offset: u64, timeout: Duration) -> Result<bool> {
        self.shared()
            .wait_durable(offset, Some(Instant::now() + timeout))
    }

    /// The offset the next record will get.
    pub fn next_offset(&self) -> u64 {
        self.shared().next_offset.load(Ordering::Acquire)
    }

    /// A read-only view of where the log ends.
    pub fn end(&self) -> LogEnd {
        LogEnd(self.shared().clone())
    }

    /// Every record below this offset is durable.
    pub fn durable_offset(&self) -> u64 {
        self.shared().durable_offset.load(Ordering::Acquire)
    }

    /// The oldest offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.shared().start_offset()
    }

    /// The earliest record time (unix nanoseconds) of the first durable
    /// chunk ending after `offset`, read from chunk headers only: no CRC
    /// check and no decompression, so a metrics scrape can ask it often.
    /// `None` when no such chunk is stored.
    pub fn record_time_at(&self, offset: u64) -> Option<u64> {
        use crate::chunk::frame::{padded_len, peek_frame_len, ChunkView, FIXED_HEADER_LEN};
        let shared = self.shared();
        let durable = shared.durable_offset.load(Ordering::Acquire);
        let segments = shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let first = segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for segment in &segments[first..] {
            let bytes = segment.map.published_bytes();
            let mut position = segment::SEGMENT_HEADER_LEN;
            while position < bytes.len() {
                if let Some(&(_, to)) = segment.holes.iter().find(|(from, _)| *from == position) {
                    position = to;
                    continue;
                }
                let len = match peek_frame_len(bytes.from(position)) {
                    Some(len) if len >= FIXED_HEADER_LEN && position + len <= bytes.len() => len,
                    _ => break,
                };
                let view = ChunkView::trusted_header(bytes.range(position, position + len));
                if view.end_offset() > durable && view.record_count() > 0 {
                    return None;
                }
                if view.end_offset() > offset && !view.is_loss_marker() && view.record_count() > 0 {
                    return Some(view.min_ts());
                }
                position += padded_len(len);
            }
        }
        None
    }

    /// A reader of durable chunks from `offset` (the chunk holding `offset`
    /// comes first; offsets already deleted start at the oldest stored).
    pub fn reader(&self, offset: u64) -> Reader {
        Reader::new(self.shared().clone(), offset)
    }

    /// The committed offset of cursor `name`, if it exists.
    pub fn cursor(&self, name: &str) -> Option<u64> {
        self.shared()
            .cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// All cursors and their committed offsets.
    pub fn cursors(&self) -> BTreeMap<String, u64> {
        self.shared()
            .cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Creates cursor `name` at the oldest stored offset if it does not
    /// exist, and returns its offset. Segments are deleted only once every
    /// cursor has passed them; a log without cursors keeps everything.
    pub fn open_cursor(&self, name: &str) -> Result<u64> {
        validate_cursor_name(name)?;
        let shared = self.shared();
        let mut cursors = shared.cursors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&offset) = cursors.get(name) {
            return Ok(offset);
        }
        let offset = shared.start_offset();
        cursor::store(&shared.cursors_dir, name, offset)?;
        cursors.insert(name.to_owned(), offset);
        Ok(offset)
    }

    /// Persists that every record below `offset` is acknowledged by
    /// consumer `name` (creating the cursor if needed), then deletes the
    /// segments every cursor has passed.
    pub fn commit_cursor(&self, name: &str, offset: u64) -> Result<()> {
        validate_cursor_name(name)?;
        let shared = self.shared();
        let next = shared.next_offset.load(Ordering::Acquire);
        if offset > next {
            return Err(Error::Config(format!(
                "cursor {name}: offset {offset} is beyond the end of the log ({next})"
            )));
        }
        {
            let mut cursors = shared.cursors.lock().unwrap_or_else(|e| e.into_inner());
            cursor::store(&shared.cursors_dir, name, offset)?;
            cursors.insert(name.to_owned(), offset);
        }
        budget::collect(shared);
        Ok(())
    }

    /// Removes cursor `name` (its consumer is gone); segments it held back
    /// may be deleted.
    pub fn remove_cursor(&self, name: &str) -> Result<bool> {
        validate_cursor_name(name)?;
        let shared = self.shared();
        let removed = {
            let mut cursors = shared.cursors.lock().unwrap_or_else(|e| e.into_inner());
            let path = shared
                .cursors_dir
                .join(format!("{name}{}", cursor::CURSOR_SUFFIX));
            // The file goes first: a cursor still on disk must keep holding
            // its segments, or a restart would find it pointing into
            // deleted data.
            match std::fs::remove_file(&path) {
                Ok(()) => segment::sync_dir(&shared.cursors_dir)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing cursor", path, e)),
            }
            cursors.remove(name).is_some()
        };
        budget::collect(shared);
        Ok(removed)
    }

    /// The last source position `source` stored under each component
    /// (source positions follow the convention of [`source_position`]),
    /// from the durable chunks still stored and, for deleted segments, the
    /// positions file. A source reads this once at start to resume exactly
    /// after its last durable record.
    pub fn source_positions(&self, source: &str) -> BTreeMap<String, Vec<u8>> {
        self.scan_positions().of_source(source.as_bytes())
    }

    /// [`Log::source_positions`] of every source whose name starts with
    /// `prefix`, as (source, component, payload): an aggregator keeps one
    /// source name per producer it receives from.
    pub fn source_positions_with_prefix(&self, prefix: &str) -> Vec<(String, String, Vec<u8>)> {
        self.scan_positions().with_source_prefix(prefix.as_bytes())
    }

    fn scan_positions(&self) -> positions::Positions {
        let shared = self.shared();
        // Held while scanning, so no segment is deleted between the saved
        // positions and the scan.
        let deleted = shared
            .deleted_positions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut positions = deleted.clone();
        let segments = shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let durable = shared.durable_offset.load(Ordering::Acquire);
        for segment in &segments {
            positions.note_segment(segment, durable);
        }
        drop(deleted);
        positions
    }

    /// Counters and gauges.
    pub fn metrics(&self) -> LogMetrics {
        let shared = self.shared();
        let c = &shared.counters;
        let segments = shared.segments.read().unwrap_or_else(|e| e.into_inner());
        LogMetrics {
            chunks_appended: c.chunks_appended.load(Ordering::Relaxed),
            records_appended: c.records_appended.load(Ordering::Relaxed),
            bytes_appended: c.bytes_appended.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_nanos: c.flush_nanos.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
            records_dropped: c.records_dropped.load(Ordering::Relaxed),
            segments_dropped: c.segments_dropped.load(Ordering::Relaxed),
            chunks_skipped: c.chunks_skipped.load(Ordering::Relaxed),
            full_waits: c.full_waits.load(Ordering::Relaxed),
            disk_full_waits: c.disk_full_waits.load(Ordering::Relaxed),
            transient_errors: c.transient_errors.load(Ordering::Relaxed),
            disk_full: u64::from(shared.disk_full.load(Ordering::Acquire)),
            records_lost: c.records_lost.load(Ordering::Relaxed),
            segments: segments.len() as u64,
            disk_bytes: shared.disk_bytes.load(Ordering::Relaxed),
            next_offset: shared.next_offset.load(Ordering::Acquire),
            durable_offset: shared.durable_offset.load(Ordering::Acquire),
            start_offset: segments.first().map_or(0, |s| s.base_offset),
        }
    }

    /// Why the log no longer takes appends, if a flush failed (see
    /// [`Error::Poisoned`]).
    pub fn poisoned(&self) -> Option<String> {
        self.shared().poisoned()
    }

    /// True while appends wait for room: the log is at its disk budget
    /// (`block`), or the filesystem is full ([`OnDiskFull::Wait`]).
    pub fn is_full(&self) -> bool {
        let shared = self.shared();
        shared.full.load(Ordering::Acquire) || shared.disk_full.load(Ordering::Acquire)
    }

    /// True while the filesystem has no room for the segment the writer
    /// needs next (cleared once one is created).
    pub fn disk_full(&self) -> bool {
        self.shared().disk_full.load(Ordering::Acquire)
    }

    /// Flushes, stops the writer and releases the directory. Other clones
    /// of this handle see [`Error::Closed`] afterwards.
    pub fn close(&self) -> Result<()> {
        let result = shutdown(
            &self.inner.shared,
            &self.inner.commands,
            &self.inner.threads,
        );
        self.inner
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        result
    }
}

#[cfg(test)]
mod ticket_tests {
    use super::*;

    /// Polls `future` on this thread until it is ready.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut context = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
            std::thread::park();
        }
    }

    /// A ticket whose append the writer never took (queued just as it
    /// stopped; its reply still held) ends with `Closed` when the log
    /// closes, waiting or not, blocking or async.
    #[test]
    fn a_ticket_the_writer_never_answers_ends_when_the_log_closes() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let (waiting, waiting_reply) = AppendTicket::new(log.shared());
        let (asynchronous, asynchronous_reply) = AppendTicket::new(log.shared());
        let (after, after_reply) = AppendTicket::new(log.shared());
        std::thread::scope(|scope| {
            let blocked = scope.spawn(|| waiting.wait());
            let awaited = scope.spawn(|| block_on(asynchronous.written()));
            std::thread::sleep(Duration::from_millis(100));
            log.close().unwrap();
            assert!(matches!(blocked.join().unwrap(), Err(Error::Closed)));
            assert!(matches!(awaited.join().unwrap(), Err(Error::Closed)));
        });
        assert!(matches!(after.wait(), Err(Error::Closed)));
        drop((waiting_reply, asynchronous_reply, after_reply));
    }
}
