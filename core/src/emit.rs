//! The emitter: how a source puts records into the log. It keeps one chunk
//! builder per stream, closes chunks at their size (in the source's call)
//! or linger time (the process's linger thread, whatever the source is
//! doing), compresses them (in the source's thread, or on the process's
//! compression pool), appends them in order, and lets the source wait
//! until everything it emitted is durable (for example before answering
//! an HTTP client).
//!
//! ```
//! use shipper_core::chunk::ChunkOptions;
//! use shipper_core::emit::Emitter;
//! use shipper_core::log::{Log, LogOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), LogOptions::default()).unwrap();
//! let mut emitter = Emitter::new(log.clone(), "app", ChunkOptions::default()).unwrap();
//! emitter.emit("events", br#"{"door":"open"}"#, 1, None).unwrap();
//! emitter.emit("sensors", br#"{"temp":21.5}"#, 2, None).unwrap();
//! let end = emitter.wait_durable().unwrap();
//! assert_eq!(end, Some(2));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::chunk::{ChunkBuilder, ChunkOptions, ClosedChunk, OpenChunk};
use crate::log::{AppendTicket, Log, Offer};
use crate::transform::{Transform, TransformOutcome};
use crate::{Error, Result};

mod linger;
mod pool;

pub use pool::set_compression_threads;

/// Counters of one emitter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmitterCounters {
    /// Records accepted.
    pub records: u64,
    /// Payload bytes accepted.
    pub bytes: u64,
    /// Chunks handed to the log.
    pub chunks: u64,
}

/// Live counters of one emitter, shared with whoever reports metrics.
#[derive(Debug, Default)]
pub struct EmitterStats {
    records: AtomicU64,
    bytes: AtomicU64,
    chunks: AtomicU64,
}

impl EmitterStats {
    /// Counts one record of `bytes`. A load and a store instead of a
    /// locked read-modify-write, which costs as much as the rest of
    /// counting a record: only the emitter that owns these counters
    /// writes them, and it calls this through `&mut self`, so no other
    /// write can come between (readers see either count).
    #[inline]
    fn count_record(&self, bytes: usize) {
        let records = self.records.load(Ordering::Relaxed);
        self.records.store(records + 1, Ordering::Relaxed);
        let total = self.bytes.load(Ordering::Relaxed);
        self.bytes.store(total + bytes as u64, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> EmitterCounters {
        EmitterCounters {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
        }
    }

    /// The counters as the metrics of the source or transform whose
    /// records they count.
    pub fn metrics(self: &Arc<Self>) -> Vec<crate::metrics::ComponentMetric> {
        crate::metrics::counters_of(
            self,
            &[
                (
                    "shipper_component_received_records_total",
                    "Records a source or transform put into the pipeline (as the log accepted them).",
                    &[],
                    |s| &s.records,
                ),
                (
                    "shipper_component_received_bytes_total",
                    "Record payload bytes a source or transform put into the pipeline.",
                    &[],
                    |s| &s.bytes,
                ),
                (
                    "shipper_component_stored_chunks_total",
                    "Compressed chunks a source or transform appended to the log.",
                    &[],
                    |s| &s.chunks,
                ),
            ],
        )
    }
}

/// What an emitter holds, behind the lock its handles and the linger
/// thread share.
struct Core {
    log: Log,
    component: String,
    /// Whether records are stored under this component (some consumer
    /// reads it), or only passed on to the routes.
    store: bool,
    /// Transforms that consume this component's records.
    routes: Vec<Route>,
    options: ChunkOptions,
    builders: Vec<ChunkBuilder>,
    /// Appended chunks whose outcome is not known yet, oldest first, with
    /// what they counted.
    in_flight: VecDeque<(AppendTicket, Counted)>,
    /// Closed chunks the log's queue had no room for while the linger
    /// thread held the emitter (it never waits): appended first, in order,
    /// by the next append or close.
    stalled: VecDeque<ClosedChunk>,
    /// Set while the linger thread polls: nothing may wait.
    lingering: bool,
    /// One past the last offset known to be stored.
    stored_end: Option<u64>,
    stats: Arc<EmitterStats>,
    blocking: Option<BlockingHook>,
    /// This emitter's chunks on the compression pool, if
    /// [`Emitter::compress_in_background`] was called.
    compressing: Option<Compressing>,
    /// Room for compression on the caller's thread.
    scratch: Vec<u8>,
    /// [`Emitter::emit_with`]'s record when it cannot write in place.
    record: Vec<u8>,
    /// An error the linger thread met closing a chunk: returned by the
    /// next call of the source.
    deferred: Option<Error>,
}

/// Compression threads and their queues. Threads take chunks in the order
/// they were closed; the answers are put back in that order before they
/// are appended, so the log sees the same order as without them.
struct Compressing {
    /// Where the pool sends this emitter's compressed chunks.
    reply: crossbeam_channel::Sender<CompressedResult>,
    results: crossbeam_channel::Receiver<CompressedResult>,
    /// Sequence number of the next chunk handed over, and of the next to append.
    next_sent: u64,
    next_appended: u64,
    /// Answers that came back ahead of an earlier chunk's.
    early: BTreeMap<u64, (usize, Compressed)>,
}

/// A compressed chunk with its body buffer, or why compression failed.
type Compressed = Result<(ClosedChunk, Vec<u8>)>;
/// A compression thread's answer: sequence number, builder, outcome.
type CompressedResult = (u64, usize, Compressed);

impl Compressing {
    fn pending(&self) -> u64 {
        self.next_sent - self.next_appended
    }
}

/// Chunks waiting for a compression thread at most.
const COMPRESSING_DEPTH: usize = 4;

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("component", &self.component)
            .field("counters", &self.stats.snapshot())
            .finish()
    }
}

/// A transform that consumes an emitter's records, and the emitter of the
/// transform's own output.
pub struct Route {
    transform: Box<dyn Transform>,
    emitter: Emitter,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("emitter", &self.emitter)
            .finish()
    }
}

impl Route {
    /// Records pass through `transform`; what it keeps goes to `emitter`
    /// (whose component is the transform's name).
    pub fn new(transform: Box<dyn Transform>, emitter: Emitter) -> Self {
        Route {
            transform,
            emitter,
            scratch: Vec::new(),
        }
    }
}

/// Runs a wait that may block (the log's writer queue is full, or the
/// oldest append is unanswered) on behalf of an emitter. An async runtime
/// installs one that moves the wait off its worker threads (tokio's
/// `block_in_place`), so a full log pauses the source, not the runtime.
pub type BlockingHook = Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

/// The records and payload bytes one closed chunk added to an emitter's
/// counters, taken back if the log does not store it.
#[derive(Debug, Clone, Copy)]
struct Counted {
    records: u64,
    bytes: u64,
}

impl Counted {
    fn of(chunk: &ClosedChunk) -> Counted {
        let records = u64::from(chunk.record_count());
        // The body holds the records and their framing: a newline, or a
        // 4-byte length, each.
        let framing = match chunk.layout() {
            crate::chunk::BodyLayout::Lines => records,
            crate::chunk::BodyLayout::LengthPrefixed => 4 * records,
        };
        Counted {
            records,
            bytes: (chunk.uncompressed_len() as u64).saturating_sub(framing),
        }
    }
}

/// Tickets kept before the oldest answered ones are collected.
const MAX_IN_FLIGHT: usize = 64;

impl Core {
    fn new(log: Log, component: &str, options: ChunkOptions) -> Result<Self> {
        // Validates the options and the component name once, up front.
        ChunkBuilder::new("", component, options.clone())?;
        Ok(Core {
            log,
            component: component.to_owned(),
            store: true,
            routes: Vec::new(),
            options,
            builders: Vec::new(),
            in_flight: VecDeque::new(),
            stalled: VecDeque::new(),
            lingering: false,
            stored_end: None,
            stats: Arc::default(),
            blocking: None,
            compressing: None,
            scratch: Vec::new(),
            record: Vec::new(),
            deferred: None,
        })
    }

    /// The error the linger thread met, if any (once); the thread looks at
    /// this emitter again from now on.
    fn deferred(&mut self) -> Result<()> {
        match self.deferred.take() {
            Some(error) => {
                linger::wake();
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// What the linger thread does: close the chunks whose time has come
    /// and append what is compressed, never waiting (a chunk the log's
    /// queue has no room for waits in `stalled`); an error waits for the
    /// source's next call, and until then the thread leaves the emitter be.
    fn linger(&mut self, now: Instant) {
        if self.deferred.is_some() {
            return;
        }
        self.lingering = true;
        let polled = self.poll_lingering(now);
        self.lingering = false;
        if let Err(error) = polled {
            self.deferred = Some(error);
        }
    }

    /// [`Core::poll`] as the linger thread runs it, routes included.
    fn poll_lingering(&mut self, now: Instant) -> Result<()> {
        for route in &mut self.routes {
            let mut child = route.emitter.core();
            child.linger(now);
            child.deferred()?;
        }
        for index in 0..self.builders.len() {
            if let Some(open) = self.builders[index].poll_open(now) {
                self.hand_over(index, open)?;
            }
        }
        while self.take_compressed(false)? {}
        self.flush_stalled()
    }

    /// Installs `hook` to run this emitter's (and its transforms')
    /// blocking waits; see [`BlockingHook`]. Without one they block the
    /// calling thread.
    pub fn set_blocking_hook(&mut self, hook: BlockingHook) {
        for route in &mut self.routes {
            route.emitter.set_blocking_hook(hook.clone());
        }
        self.blocking = Some(hook);
    }

    fn compress_in_background(&mut self) -> Result<()> {
        for route in &mut self.routes {
            route.emitter.compress_in_background()?;
        }
        if self.compressing.is_none() {
            let (reply, results) = crossbeam_channel::unbounded::<CompressedResult>();
            self.compressing = Some(Compressing {
                reply,
                results,
                next_sent: 0,
                next_appended: 0,
                early: BTreeMap::new(),
            });
        }
        Ok(())
    }

    /// Hands a closed chunk of builder `index` on: compressed here, or by
    /// the compression threads; appends whatever is compressed by now.
    fn hand_over(&mut self, index: usize, open: OpenChunk) -> Result<()> {
        if self.compressing.is_none() {
            let (chunk, body) = open.compress(&mut self.scratch)?;
            self.builders[index].give_back(body);
            return self.append(chunk);
        }
        // At most COMPRESSING_DEPTH of this emitter's chunks wait for the
        // pool besides those being compressed: a busy source waits for its
        // oldest rather than piling up.
        let most = (COMPRESSING_DEPTH + pool::threads()) as u64;
        while !self.lingering
            && self
                .compressing
                .as_ref()
                .is_some_and(|c| c.pending() >= most)
        {
            self.take_compressed(true)?;
        }
        let compressing = self.compressing.as_mut().expect("checked above");
        let seq = compressing.next_sent;
        compressing.next_sent += 1;
        pool::submit(pool::Job {
            seq,
            index,
            open,
            reply: compressing.reply.clone(),
        });
        while self.take_compressed(false)? {}
        Ok(())
    }

    /// Appends the next compressed chunk in order (waiting for it if
    /// `wait`); returns whether there was one.
    fn take_compressed(&mut self, wait: bool) -> Result<bool> {
        let Some(compressing) = self.compressing.as_mut() else {
            return Ok(false);
        };
        if compressing.pending() == 0 {
            return Ok(false);
        }
        let next = compressing.next_appended;
        let (index, result) = loop {
            let compressing = self.compressing.as_mut().expect("checked above");
            if let Some(ready) = compressing.early.remove(&next) {
                break ready;
            }
            let results = compressing.results.clone();
            let received = if wait {
                self.blocking(|| results.recv().ok())
            } else {
                results.try_recv().ok()
            };
            let Some((seq, index, result)) = received else {
                if wait {
                    return Err(Error::Config("the compression pool stopped".into()));
                }
                return Ok(false);
            };
            let compressing = self.compressing.as_mut().expect("checked above");
            if seq == next {
                break (index, result);
            }
            compressing.early.insert(seq, (index, result));
        };
        if let Some(compressing) = self.compressing.as_mut() {
            compressing.next_appended += 1;
        }
        let (chunk, body) = result?;
        self.builders[index].give_back(body);
        self.append(chunk)?;
        Ok(true)
    }

    /// Waits until every chunk handed to the compression threads is appended.
    fn drain_compressed(&mut self) -> Result<()> {
        while self.take_compressed(true)? {}
        Ok(())
    }

    /// Runs `wait` through the blocking hook, if one is installed.
    fn blocking<T>(&self, wait: impl FnOnce() -> T) -> T {
        match &self.blocking {
            None => wait(),
            Some(hook) => {
                let mut wait = Some(wait);
                let mut out = None;
                hook(&mut || {
                    if let Some(wait) = wait.take() {
                        out = Some(wait());
                    }
                });
                // A hook that did not run the wait is a bug in the hook.
                out.expect("the blocking hook runs the wait it is given")
            }
        }
    }

    /// The live counters of this emitter and of every transform's emitter
    /// under it, by component name (for metrics).
    pub fn stats(&self) -> Vec<(String, Arc<EmitterStats>)> {
        let mut all = vec![(self.component.clone(), self.stats.clone())];
        for route in &self.routes {
            all.extend(route.emitter.stats());
        }
        all
    }

    /// The metrics of this emitter's component and of every transform
    /// under it, by component name: each emitter's counters, and each
    /// transform's own metrics under the transform's name.
    pub fn metrics(&self) -> Vec<(String, Vec<crate::metrics::ComponentMetric>)> {
        let mut all = vec![(self.component.clone(), self.stats.metrics())];
        for route in &self.routes {
            let mut under = route.emitter.metrics();
            if let Some((_, first)) = under.first_mut() {
                first.extend(route.transform.metrics());
            }
            all.extend(under);
        }
        all
    }

    /// Adds a record to `stream`. A chunk that reaches its size is closed
    /// and appended here. An error of an earlier append (a full disk, a
    /// poisoned log) is returned by the next call after it is known.
    pub fn emit(
        &mut self,
        stream: &str,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
    ) -> Result<()> {
        self.emit_skipping(stream, payload, timestamp, source_position, &[])
    }

    /// Whether [`Emitter::emit_with`] writes records straight into the
    /// chunk: no transform reads them first, and they are stored.
    pub fn writes_in_place(&self) -> bool {
        self.routes.is_empty() && self.store
    }

    /// [`Emitter::emit`] of a record that `write` appends to the vector it
    /// is given: with [`Emitter::writes_in_place`], the open chunk's body
    /// (no copy); otherwise a buffer of the emitter's, emitted as usual.
    /// `write` must only append; nothing of a failed write is stored.
    pub fn emit_with<E: From<Error>>(
        &mut self,
        stream: &str,
        timestamp: u64,
        write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.deferred()?;
        if !self.writes_in_place() {
            let mut record = std::mem::take(&mut self.record);
            record.clear();
            let written = write(&mut record);
            let emitted = match written {
                Ok(()) => self.emit(stream, &record, timestamp, None).map_err(E::from),
                Err(error) => Err(error),
            };
            self.record = record;
            return emitted;
        }
        let index = self.builder_index(stream)?;
        let opening = self.builders[index].deadline().is_none();
        let (closed, len) = self.builders[index].push_open_with(timestamp, write)?;
        self.stats.count_record(len);
        if opening {
            linger::wake();
        }
        if let Some(open) = closed {
            self.hand_over(index, open)?;
        }
        Ok(())
    }

    /// The index of `stream`'s chunk builder, made on first use.
    fn builder_index(&mut self, stream: &str) -> Result<usize> {
        if let Some(index) = self.builders.iter().position(|b| b.stream() == stream) {
            return Ok(index);
        }
        let mut builder = ChunkBuilder::new(stream, &self.component, self.options.clone())?;
        if self.options.dictionary.is_some() {
            builder.set_dictionaries(self.log.dictionaries());
        }
        self.builders.push(builder);
        Ok(self.builders.len() - 1)
    }

    /// The stored components of this emitter and of the transforms under
    /// it: the components whose chunks carry this emitter's source
    /// positions.
    pub fn stored_components(&self) -> Vec<String> {
        let mut all = Vec::new();
        if self.store {
            all.push(self.component.clone());
        }
        for route in &self.routes {
            all.extend(route.emitter.stored_components());
        }
        all
    }

    /// [`Emitter::emit`], except that the components named in `skip` do
    /// not store the record (transforms still see it). A resuming source
    /// uses it for records some of its components stored before a restart
    /// and others did not.
    pub fn emit_skipping(
        &mut self,
        stream: &str,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
        skip: &[String],
    ) -> Result<()> {
        self.deferred()?;
        for route in &mut self.routes {
            let Route {
                transform,
                emitter,
                scratch,
            } = route;
            match transform.apply_record(stream, timestamp, payload, scratch) {
                TransformOutcome::Keep(bytes) | TransformOutcome::Replace(bytes) => {
                    emitter.emit_skipping(stream, bytes, timestamp, source_position, skip)?
                }
                TransformOutcome::Drop => {}
            }
        }
        if !skip.is_empty() && skip.contains(&self.component) {
            return Ok(());
        }
        if !self.store {
            self.stats.count_record(payload.len());
            return Ok(());
        }
        let index = self.builder_index(stream)?;
        let opening = self.builders[index].deadline().is_none();
        let closed = self.builders[index].push_open(payload, timestamp, source_position)?;
        self.stats.count_record(payload.len());
        if opening {
            linger::wake();
        }
        if let Some(open) = closed {
            self.hand_over(index, open)?;
        }
        Ok(())
    }

    /// When the oldest open chunk's linger time ends, if a chunk is open.
    pub fn deadline(&self) -> Option<Instant> {
        let own = self
            .builders
            .iter()
            .filter_map(ChunkBuilder::deadline)
            .min();
        let routed = self
            .routes
            .iter()
            .filter_map(|r| r.emitter.deadline())
            .min();
        // A chunk being compressed is appended at the source's next call,
        // or by the linger thread a linger time from now if none comes.
        let compressing = self
            .compressing
            .as_ref()
            .filter(|c| c.pending() > 0)
            .map(|_| Instant::now() + self.options.linger);
        // Stalled chunks are tried again a linger time from now.
        let stalled = (!self.stalled.is_empty()).then(|| Instant::now() + self.options.linger);
        own.into_iter()
            .chain(routed)
            .chain(compressing)
            .chain(stalled)
            .min()
    }

    /// Closes and appends every open chunk whose linger time has passed.
    pub fn poll(&mut self, now: Instant) -> Result<()> {
        for route in &mut self.routes {
            route.emitter.poll(now)?;
        }
        for index in 0..self.builders.len() {
            if let Some(open) = self.builders[index].poll_open(now) {
                self.hand_over(index, open)?;
            }
        }
        while self.take_compressed(false)? {}
        Ok(())
    }

    /// Closes and appends every open chunk; an error the linger thread
    /// met is returned after that (nothing open is left behind for it).
    pub fn close_chunks(&mut self) -> Result<()> {
        let earlier = self.deferred.take();
        let mut first: Result<()> = Ok(());
        for route in &mut self.routes {
            if let Err(error) = route.emitter.close_chunks() {
                first = first.and(Err(error));
            }
        }
        for index in 0..self.builders.len() {
            if let Some(open) = self.builders[index].take_open() {
                if let Err(error) = self.hand_over(index, open) {
                    first = first.and(Err(error));
                }
            }
        }
        let drained = self.drain_compressed().and_then(|()| self.flush_stalled());
        match earlier {
            Some(error) => Err(error),
            None => first.and(drained),
        }
    }

    /// Appends `chunk` after any stalled ones, in order.
    fn append(&mut self, chunk: ClosedChunk) -> Result<()> {
        self.stalled.push_back(chunk);
        self.flush_stalled()
    }

    /// Appends the stalled chunks, oldest first. Waits for room in the
    /// log's queue, except on the linger thread, which leaves what does
    /// not fit for later.
    fn flush_stalled(&mut self) -> Result<()> {
        while let Some(chunk) = self.stalled.pop_front() {
            if !self.append_one(chunk)? {
                break;
            }
        }
        Ok(())
    }

    /// Appends one chunk; false when it went back to `stalled` (lingering,
    /// and the log's queue is full).
    fn append_one(&mut self, chunk: ClosedChunk) -> Result<bool> {
        let counted = Counted::of(&chunk);
        if let Err(error) = self.collect_answered() {
            // An earlier chunk was refused: this one is not appended either.
            self.uncount(counted);
            return Err(error);
        }
        let ticket = match self.log.offer(chunk) {
            Ok(Offer::Queued(ticket)) => ticket,
            Ok(Offer::QueueFull(chunk)) if self.lingering => {
                // Its counts stay: it is appended later, in order.
                self.stalled.push_front(chunk);
                return Ok(false);
            }
            Ok(Offer::QueueFull(chunk)) => {
                let log = &self.log;
                match self.blocking(|| log.append(chunk)) {
                    Ok(ticket) => ticket,
                    Err(error) => {
                        self.uncount(counted);
                        return Err(error);
                    }
                }
            }
            Err(error) => {
                self.uncount(counted);
                return Err(error);
            }
        };
        self.stats.chunks.fetch_add(1, Ordering::Relaxed);
        self.in_flight.push_back((ticket, counted));
        if self.in_flight.len() > MAX_IN_FLIGHT && !self.lingering {
            // Bound the bookkeeping: wait for the oldest answer.
            let (mut oldest, counted) = self.in_flight.pop_front().expect("non-empty");
            let outcome = match oldest.try_outcome() {
                Some(outcome) => outcome,
                None => self.blocking(|| oldest.wait()),
            };
            self.note(outcome, counted)?;
        }
        Ok(true)
    }

    /// Takes back the counts of a chunk the log did not store: the
    /// counters say what was accepted, not what was attempted.
    fn uncount(&self, counted: Counted) {
        let stats = &self.stats;
        let records = stats.records.load(Ordering::Relaxed);
        stats
            .records
            .store(records.saturating_sub(counted.records), Ordering::Relaxed);
        let bytes = stats.bytes.load(Ordering::Relaxed);
        stats
            .bytes
            .store(bytes.saturating_sub(counted.bytes), Ordering::Relaxed);
    }

    fn note(&mut self, outcome: Result<Range<u64>>, counted: Counted) -> Result<()> {
        let range = match outcome {
            Ok(range) => range,
            Err(error) => {
                self.uncount(counted);
                self.stats.chunks.fetch_sub(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        self.stored_end = Some(self.stored_end.map_or(range.end, |end| end.max(range.end)));
        Ok(())
    }

    /// Takes the answers already given, oldest first (each refused chunk
    /// uncounted), returning the first error among them.
    fn collect_answered(&mut self) -> Result<()> {
        let mut first_error = Ok(());
        while let Some((ticket, _)) = self.in_flight.front_mut() {
            match ticket.try_outcome() {
                Some(outcome) => {
                    let (_, counted) = self.in_flight.pop_front().expect("front exists");
                    let noted = self.note(outcome, counted);
                    if first_error.is_ok() {
                        first_error = noted;
                    }
                }
                None => break,
            }
        }
        first_error
    }

    /// Closes every open chunk and waits until everything emitted so far is
    /// in the log; returns one past the last offset stored, if any.
    pub fn wait_stored(&mut self) -> Result<Option<u64>> {
        let closed = self.close_chunks();
        let mut end = None;
        for route in &mut self.routes {
            end = end.max(route.emitter.wait_stored()?);
        }
        // Every answer is taken, so every refused chunk is uncounted; the
        // first error is the one returned.
        let mut first_error = closed;
        while let Some((ticket, counted)) = self.in_flight.pop_front() {
            let noted = self.note(ticket.wait(), counted);
            if first_error.is_ok() {
                first_error = noted;
            }
        }
        first_error?;
        Ok(end.max(self.stored_end))
    }
}

/// `core`, locked; a panic while it was locked left it usable.
fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Core {
    /// Open chunks are appended, not lost, when an emitter goes away; their
    /// durability follows the log's policy.
    fn drop(&mut self) {
        if let Err(error) = self.close_chunks() {
            if !matches!(error, Error::Closed) {
                tracing::error!(component = %self.component, %error, "records of a dropped emitter could not be appended");
            }
        }
    }
}

/// Puts one component's records into the log; see the module docs.
///
/// Appends wait while the log's writer queue is full, so a source that
/// emits faster than the disk takes stops reading its input: backpressure.
///
/// A chunk left open closes at its linger time whatever the source does:
/// the process's linger thread closes it if the source does not call the
/// emitter again in time (it blocks on its input, or has nothing to read).
/// So a source never keeps a timer of its own.
pub struct Emitter {
    core: Arc<Mutex<Core>>,
    /// Counts the handles (the linger thread holds none): the last one to
    /// go closes the open chunks on its own thread.
    owners: Arc<()>,
    log: Log,
    component: String,
    stats: Arc<EmitterStats>,
}

impl Drop for Emitter {
    /// The last handle appends the open chunks, here and now: not later on
    /// the linger thread, which may hold the core for a moment.
    fn drop(&mut self) {
        if Arc::get_mut(&mut self.owners).is_none() {
            return;
        }
        if let Err(error) = self.core().close_chunks() {
            if !matches!(error, Error::Closed) {
                tracing::error!(component = %self.component, %error, "records of a dropped emitter could not be appended");
            }
        }
    }
}

/// An [`Emitter`] held for a run of records; see [`Emitter::batch`].
pub struct Batch<'a>(MutexGuard<'a, Core>);

impl Batch<'_> {
    /// [`Emitter::emit`].
    pub fn emit(
        &mut self,
        stream: &str,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
    ) -> Result<()> {
        self.0
            .emit_skipping(stream, payload, timestamp, source_position, &[])
    }

    /// [`Emitter::emit_skipping`].
    pub fn emit_skipping(
        &mut self,
        stream: &str,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
        skip: &[String],
    ) -> Result<()> {
        self.0
            .emit_skipping(stream, payload, timestamp, source_position, skip)
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("component", &self.0.component)
            .finish()
    }
}

impl Clone for Emitter {
    /// Another handle on the same emitter (its chunks, counters, routes):
    /// calls through either are serialized. The last handle to go closes
    /// the open chunks.
    fn clone(&self) -> Self {
        Emitter {
            core: self.core.clone(),
            owners: self.owners.clone(),
            log: self.log.clone(),
            component: self.component.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl Emitter {
    fn wrap(core: Core) -> Self {
        let (log, component, stats) =
            (core.log.clone(), core.component.clone(), core.stats.clone());
        let core = Arc::new(Mutex::new(core));
        linger::register(&core);
        Emitter {
            core,
            owners: Arc::new(()),
            log,
            component,
            stats,
        }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// An emitter for `component` (the source or transform name stored in
    /// every chunk header).
    pub fn new(log: Log, component: &str, options: ChunkOptions) -> Result<Self> {
        Ok(Emitter::wrap(Core::new(log, component, options)?))
    }

    /// An emitter that stores its records only when `store` is set, and
    /// passes each record through `routes` (transforms consuming this
    /// component), whose output their own emitters store and route on.
    pub fn with_routes(
        log: Log,
        component: &str,
        options: ChunkOptions,
        store: bool,
        routes: Vec<Route>,
    ) -> Result<Self> {
        let mut core = Core::new(log, component, options)?;
        core.store = store;
        core.routes = routes;
        Ok(Emitter::wrap(core))
    }

    /// Installs `hook` to run this emitter's (and its transforms')
    /// blocking waits; see [`BlockingHook`]. Without one they block the
    /// calling thread.
    pub fn set_blocking_hook(&mut self, hook: BlockingHook) {
        self.core().set_blocking_hook(hook);
    }

    /// Compresses this emitter's chunks (and its transforms') on the
    /// process's compression pool ([`set_compression_threads`]), so a busy
    /// source keeps splitting and copying records while its previous
    /// chunks are compressed. Chunks are still appended in the order they
    /// closed.
    pub fn compress_in_background(&mut self) -> Result<()> {
        self.core().compress_in_background()
    }

    /// The component name.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Counts records a source stored itself, bypassing the builders (an
    /// aggregator appending received chunks as they are), so its metrics
    /// still move.
    pub fn count_stored(&self, records: u64, bytes: u64, chunks: u64) {
        self.stats.records.fetch_add(records, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.stats.chunks.fetch_add(chunks, Ordering::Relaxed);
    }

    /// Counters so far.
    pub fn counters(&self) -> EmitterCounters {
        self.stats.snapshot()
    }

    /// The live counters of this emitter and of every transform's emitter
    /// under it, by component name (for metrics).
    pub fn stats(&self) -> Vec<(String, Arc<EmitterStats>)> {
        self.core().stats()
    }

    /// The metrics of this emitter's component and of every transform
    /// under it, by component name: each emitter's counters, and each
    /// transform's own metrics under the transform's name.
    pub fn metrics(&self) -> Vec<(String, Vec<crate::metrics::ComponentMetric>)> {
        self.core().metrics()
    }

    /// Adds a record to `stream`. A chunk that reaches its size is closed
    /// and appended here. An error of an earlier append (a full disk, a
    /// poisoned log) is returned by the next call after it is known.
    pub fn emit(
        &mut self,
        stream: &str,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
    ) -> Result<()> {
        self.core()
            .emit_skipping(stream, payload, timestamp, source_position, &[])
    }

    /// Whether [`Emitter::emit_with`] writes records straight into the
    /// chunk: no transform reads them first, and they are stored.
    pub fn writes_in_place(&self) -> bool {
        self.core().writes_in_place()
    }

    /// The emitter, held for a run of records (a source that splits a read
    /// into many lines): one lock for all of them instead of one each. The
    /// linger thread waits while it is held.
    pub fn batch(&mut self) -> Batch<'_> {
        Batch(self.core())
    }

    /// [`Emitter::emit`] of a record that `write` appends to the vector it
    /// is given: with [`Emitter::writes_in_place`], the open chunk's body
    /// (no copy); otherwise a buffer of the emitter's, emitted as usual.
    /// `write` must only append; nothing of a failed write is stored.
    pub fn emit_with<E: From<Error>>(
        &mut self,
        stream: &str,
        timestamp: u64,
        write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.core().emit_with(stream, timestamp, write)
    }

    /// The stored components of this emitter and of the transforms under
    /// it: the components whose chunks carry this emitter's source
    /// positions.
    pub fn stored_components(&self) -> Vec<String> {
        self.core().stored_components()
    }

    /// [`Emitter::emit`], except that the components named in `skip` do
    /// not store the record (transforms still see it). A resuming source
    /// uses it for records some of its components stored before a restart
    /// and others did not.
    pub fn emit_skipping(
        &mut self,
        stream: &str,
        payload: &[u8],
        timestamp: u64,
        source_position: Option<&[u8]>,
        skip: &[String],
    ) -> Result<()> {
        self.core()
            .emit_skipping(stream, payload, timestamp, source_position, skip)
    }

    /// When the oldest open chunk's linger time ends, if a chunk is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.core().deadline()
    }

    /// Closes and appends every open chunk whose linger time has passed
    /// (the linger thread does it too; a source may call it when it likes).
    pub fn poll(&mut self, now: Instant) -> Result<()> {
        let mut core = self.core();
        core.deferred()?;
        core.poll(now)
    }

    /// Closes and appends every open chunk.
    pub fn close_chunks(&mut self) -> Result<()> {
        self.core().close_chunks()
    }

    /// Closes every open chunk and waits until everything emitted so far is
    /// in the log; returns one past the last offset stored, if any.
    pub fn wait_stored(&mut self) -> Result<Option<u64>> {
        self.core().wait_stored()
    }

    /// Closes every open chunk and waits until everything emitted so far is
    /// durable under the log's policy (blocking).
    pub fn wait_durable(&mut self) -> Result<Option<u64>> {
        let end = self.wait_stored()?;
        if let Some(end) = end {
            self.log.wait_durable(end)?;
        }
        Ok(end)
    }

    /// The log this emitter appends to.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// This emitter's core and those of every transform's emitter under it.
    fn tree(&self) -> Vec<Arc<Mutex<Core>>> {
        let mut all = vec![self.core.clone()];
        for route in &self.core().routes {
            all.extend(route.emitter.tree());
        }
        all
    }

    /// Closes every open chunk and waits (async) until everything emitted
    /// so far is in the log, not yet durable; returns one past the last
    /// offset stored, if any. Pair with [`Log::durable`] to acknowledge a
    /// batch once durable without holding the emitter.
    pub async fn written(&mut self) -> Result<Option<u64>> {
        self.close_chunks()?;
        let mut end = None;
        let mut first: Result<()> = Ok(());
        // Every emitter of the tree; no lock is held across an await. Every
        // answer is noted (a refused chunk uncounted); the first error is
        // the one returned.
        for core in self.tree() {
            let tickets: Vec<(AppendTicket, Counted)> = lock(&core).in_flight.drain(..).collect();
            for (ticket, counted) in tickets {
                let outcome = ticket.written().await;
                if let Err(error) = lock(&core).note(outcome, counted) {
                    first = first.and(Err(error));
                }
            }
            end = end.max(lock(&core).stored_end);
        }
        first.map(|()| end)
    }

    /// Async [`Emitter::wait_durable`]: closing chunks and handing them to
    /// the log may wait for queue space; the waits for the writer and for
    /// durability never block the runtime thread.
    pub async fn durable(&mut self) -> Result<Option<u64>> {
        let end = self.written().await?;
        if let Some(end) = end {
            self.log.durable(end).await?;
        }
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chunk::decode_body;
    use crate::chunk::Decoder;
    use crate::log::{Durability, Faults, LogOptions};

    #[test]
    fn background_compression_keeps_the_order_of_every_stream() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let mut emitter = Emitter::new(
            log.clone(),
            "src",
            ChunkOptions {
                max_bytes: 4 << 10,
                ..ChunkOptions::default()
            },
        )
        .unwrap();
        emitter.compress_in_background().unwrap();
        for i in 0..20_000u32 {
            let stream = ["a", "b", "c"][i as usize % 3];
            let position = i.to_le_bytes();
            emitter
                .emit(stream, format!("record {i}").as_bytes(), 1, Some(&position))
                .unwrap();
            if i % 5_000 == 0 {
                emitter
                    .poll(Instant::now() + Duration::from_secs(1))
                    .unwrap();
            }
        }
        assert_eq!(emitter.wait_durable().unwrap(), Some(20_000));
        let mut decoder = Decoder::default();
        let mut last = [None::<u32>; 3];
        let mut count = 0;
        for chunk in log.reader(0) {
            let chunk = chunk.unwrap();
            let view = chunk.view();
            let stream = (view.stream()[0] - b'a') as usize;
            let position = u32::from_le_bytes(view.source_position().unwrap().try_into().unwrap());
            for record in decode_body(&view, &mut decoder).unwrap().records() {
                let text = std::str::from_utf8(record.unwrap()).unwrap();
                let i: u32 = text.strip_prefix("record ").unwrap().parse().unwrap();
                assert_eq!(i as usize % 3, stream);
                assert!(last[stream].is_none_or(|l| l < i), "stream order kept");
                last[stream] = Some(i);
                count += 1;
            }
            // The position is the one of the chunk's last record.
            assert_eq!(Some(position), last[stream]);
        }
        assert_eq!(count, 20_000);
        drop(emitter);
    }

    #[test]
    fn a_trained_dictionary_compresses_small_chunks_and_decodes_after_a_reopen() {
        use crate::chunk::DictionaryTraining;
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let options = ChunkOptions {
            // Small chunks: a quiet source's linger-time chunks.
            max_bytes: 2 << 10,
            dictionary: Some(DictionaryTraining {
                sample_records: 500,
                max_bytes: 16 << 10,
            }),
            ..ChunkOptions::default()
        };
        let mut emitter = Emitter::new(log.clone(), "src", options.clone()).unwrap();
        let record = |i: u32| {
            format!(
                r#"{{"ts":"2026-11-27T10:{:02}:{:02}Z","host":"web-{}","method":"GET","path":"/api/v1/items/{}","status":{},"bytes":{}}}"#,
                i / 60 % 60,
                i % 60,
                i % 7,
                i * 31 % 1000,
                [200, 200, 404, 500][i as usize % 4],
                i * 17 % 5000
            )
        };
        for i in 0..3_000 {
            emitter.emit("web", record(i).as_bytes(), 1, None).unwrap();
        }
        emitter.wait_durable().unwrap();
        assert_eq!(log.dictionaries().len(), 1);
        let (mut with, mut without) = ((0usize, 0usize), (0usize, 0usize));
        let mut decoder = Decoder::with_dictionaries(log.dictionaries());
        let mut plain = Decoder::default();
        let mut seen = 0u32;
        for chunk in log.reader(0) {
            let chunk = chunk.unwrap();
            let view = chunk.view();
            let sizes = (view.uncompressed_len(), view.body().len());
            if view.dict_id() != 0 {
                with = (with.0 + sizes.0, with.1 + sizes.1);
                let error = decode_body(&view, &mut plain).unwrap_err().to_string();
                assert!(error.contains("needs zstd dictionary"), "{error}");
            } else {
                without = (without.0 + sizes.0, without.1 + sizes.1);
            }
            for got in decode_body(&view, &mut decoder).unwrap().records() {
                assert_eq!(got.unwrap(), record(seen).as_bytes());
                seen += 1;
            }
        }
        assert_eq!(seen, 3_000);
        let ratio = |(raw, stored): (usize, usize)| raw as f64 / stored as f64;
        assert!(
            ratio(with) > ratio(without) * 1.2,
            "with a dictionary {:.2}, without {:.2}",
            ratio(with),
            ratio(without)
        );
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let mut decoder = Decoder::with_dictionaries(log.dictionaries());
        let last = log.reader(0).last().unwrap().unwrap();
        let trained = last.view().dict_id();
        assert_ne!(trained, 0);
        decode_body(&last.view(), &mut decoder).unwrap();
        // Restarted, the stream goes on with its dictionary from its first
        // chunk: nothing trained, nothing new stored (or sent).
        let mut emitter = Emitter::new(log.clone(), "src", options).unwrap();
        let resumed = log.next_offset();
        for i in 0..100 {
            emitter.emit("web", record(i).as_bytes(), 1, None).unwrap();
        }
        emitter.wait_durable().unwrap();
        assert_eq!(log.dictionaries().len(), 1);
        for chunk in log.reader(resumed) {
            assert_eq!(chunk.unwrap().view().dict_id(), trained);
        }
    }

    /// Emits `records` incompressible 100-byte records (a log's budget
    /// fills quickly) and waits until they are durable.
    fn fill(emitter: &mut Emitter, records: u64) {
        let mut x = 1u64;
        for _ in 0..records {
            let record: Vec<u8> = (0..100)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 56) as u8
                })
                .collect();
            emitter.emit("s", &record, 1, None).unwrap();
        }
        emitter.wait_durable().unwrap();
    }

    #[test]
    fn a_full_log_waits_through_the_blocking_hook_and_flush_times_out() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions {
                segment_bytes: 64 << 10,
                max_bytes: 256 << 10,
                channel_capacity: 1,
                ..LogOptions::default()
            },
        )
        .unwrap();
        log.open_cursor("slow").unwrap();
        let waits = Arc::new(AtomicUsize::new(0));
        let mut emitter = Emitter::new(
            log.clone(),
            "src",
            ChunkOptions {
                max_bytes: 8 << 10,
                ..ChunkOptions::default()
            },
        )
        .unwrap();
        {
            let waits = waits.clone();
            emitter.set_blocking_hook(Arc::new(move |wait: &mut dyn FnMut()| {
                waits.fetch_add(1, Ordering::SeqCst);
                wait();
            }));
        }
        const RECORDS: u64 = 20_000;
        let producer = std::thread::spawn(move || fill(&mut emitter, RECORDS));
        let deadline = Instant::now() + Duration::from_secs(20);
        // The queue may fill while the writer is merely busy; wait until
        // the log is at its budget too.
        while waits.load(Ordering::SeqCst) == 0 || !log.is_full() {
            assert!(Instant::now() < deadline, "the producer never waited");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The writer waits for space: a flush cannot complete.
        assert!(!log.flush_timeout(Duration::from_millis(200)).unwrap());
        // A consumer frees space: everything arrives.
        while !producer.is_finished() {
            assert!(Instant::now() < deadline, "the producer never finished");
            log.commit_cursor("slow", log.durable_offset()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        producer.join().unwrap();
        assert_eq!(log.durable_offset(), RECORDS);
        assert!(log.flush_timeout(Duration::from_secs(5)).unwrap());
    }

    fn records(log: &Log) -> Vec<(String, Vec<u8>)> {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for chunk in log.reader(0) {
            let chunk = chunk.unwrap();
            let view = chunk.view();
            let stream = view.stream_str().into_owned();
            assert_eq!(view.component(), b"src");
            for record in decode_body(&view, &mut decoder).unwrap().records() {
                out.push((stream.clone(), record.unwrap().to_vec()));
            }
        }
        out
    }

    #[test]
    fn streams_get_chunks_of_their_own_and_everything_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let options = ChunkOptions {
            max_bytes: 1000,
            ..ChunkOptions::default()
        };
        let mut emitter = Emitter::new(log.clone(), "src", options).unwrap();
        let mut expected = Vec::new();
        for i in 0..500 {
            let stream = ["a", "b", "c"][i % 3];
            let record = format!("record {i} of {stream}").into_bytes();
            emitter.emit(stream, &record, i as u64, None).unwrap();
            expected.push((stream.to_owned(), record));
        }
        assert_eq!(emitter.wait_durable().unwrap(), Some(500));
        let mut got = records(&log);
        let key = |r: &(String, Vec<u8>)| (r.0.clone(), r.1.clone());
        got.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(got, expected);
        let counters = emitter.counters();
        assert_eq!(counters.records, 500);
        assert!(counters.chunks > 3, "{counters:?}");
    }

    /// Upper-cases records (a transform for the route below).
    struct Shout;

    impl crate::transform::Transform for Shout {
        fn apply<'a>(
            &mut self,
            record: &'a [u8],
            scratch: &'a mut Vec<u8>,
        ) -> crate::transform::TransformOutcome<'a> {
            scratch.clear();
            scratch.extend(record.iter().map(u8::to_ascii_uppercase));
            crate::transform::TransformOutcome::Replace(scratch)
        }
    }

    #[test]
    fn emit_with_writes_in_place_or_through_the_routes() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let write = |text: &'static str| {
            move |out: &mut Vec<u8>| {
                out.extend_from_slice(text.as_bytes());
                Ok::<(), Error>(())
            }
        };
        let mut plain = Emitter::new(log.clone(), "plain", ChunkOptions::default()).unwrap();
        assert!(plain.writes_in_place());
        plain.emit_with("s", 1, write("in place")).unwrap();
        let failed = plain.emit_with("s", 2, |out: &mut Vec<u8>| {
            out.extend_from_slice(b"never stored");
            Err(Error::Closed)
        });
        assert!(matches!(failed, Err(Error::Closed)));
        assert_eq!(plain.counters().records, 1);
        let shout = Emitter::new(log.clone(), "shout", ChunkOptions::default()).unwrap();
        let mut routed = Emitter::with_routes(
            log.clone(),
            "routed",
            ChunkOptions::default(),
            false,
            vec![Route::new(Box::new(Shout), shout)],
        )
        .unwrap();
        assert!(!routed.writes_in_place());
        routed.emit_with("s", 3, write("through a route")).unwrap();
        plain.wait_durable().unwrap();
        routed.wait_durable().unwrap();
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for chunk in log.reader(0) {
            let chunk = chunk.unwrap();
            let view = chunk.view();
            let component = String::from_utf8(view.component().to_vec()).unwrap();
            for record in decode_body(&view, &mut decoder).unwrap().records() {
                got.push((component.clone(), record.unwrap().to_vec()));
            }
        }
        assert_eq!(
            got,
            [
                ("plain".to_owned(), b"in place".to_vec()),
                ("shout".to_owned(), b"THROUGH A ROUTE".to_vec())
            ]
        );
    }

    #[test]
    fn lingering_chunks_close_on_poll_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions {
                durability: Durability::Never,
                ..LogOptions::default()
            },
        )
        .unwrap();
        // Long enough that the linger thread leaves it to these polls.
        let options = ChunkOptions {
            linger: Duration::from_secs(600),
            ..ChunkOptions::default()
        };
        let mut emitter = Emitter::new(log.clone(), "src", options).unwrap();
        emitter.emit("s", b"one", 1, None).unwrap();
        let deadline = emitter.deadline().unwrap();
        emitter.poll(deadline - Duration::from_millis(1)).unwrap();
        assert_eq!(emitter.counters().chunks, 0);
        emitter.poll(deadline).unwrap();
        assert_eq!(emitter.counters().chunks, 1);
        emitter.emit("s", b"two", 2, None).unwrap();
        drop(emitter);
        log.flush().unwrap();
        assert_eq!(records(&log).len(), 2);
    }

    /// A source that emits a record and then never calls its emitter again
    /// (blocked on its input) still has the record stored: the linger
    /// thread closes the chunk at its linger time.
    #[test]
    fn a_chunk_closes_at_its_linger_time_while_the_source_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let options = ChunkOptions {
            linger: Duration::from_millis(20),
            ..ChunkOptions::default()
        };
        let mut emitter = Emitter::new(log.clone(), "src", options).unwrap();
        emitter.compress_in_background().unwrap();
        emitter.emit("s", b"only", 1, None).unwrap();
        // The source blocks from here on; the test only watches the log.
        let mut reader = log.reader(0);
        let started = std::time::Instant::now();
        let chunk = loop {
            match reader.next() {
                Some(chunk) => break chunk.unwrap(),
                None => {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "the record was never stored"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        assert_eq!((chunk.first_offset(), chunk.end_offset()), (0, 1));
        assert_eq!(emitter.counters().chunks, 1);
        drop(emitter);
    }

    /// The linger thread never waits for the log: with the writer's queue
    /// full (the log at its budget), a quiet source's chunks wait inside
    /// its emitter, the source can still call its emitter, and everything
    /// is stored once there is room.
    #[test]
    fn the_linger_thread_never_waits_on_a_full_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions {
                segment_bytes: 64 << 10,
                max_bytes: 256 << 10,
                channel_capacity: 1,
                ..LogOptions::default()
            },
        )
        .unwrap();
        log.open_cursor("slow").unwrap();
        // A busy source fills the log to its budget and waits there.
        let small = ChunkOptions {
            max_bytes: 8 << 10,
            ..ChunkOptions::default()
        };
        let mut filler = Emitter::new(log.clone(), "filler", small).unwrap();
        let filling = std::thread::spawn(move || fill(&mut filler, 20_000));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !log.is_full() {
            assert!(Instant::now() < deadline, "the log never filled");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A quiet source: each record is closed by the linger thread.
        let options = ChunkOptions {
            linger: Duration::from_millis(2),
            ..ChunkOptions::default()
        };
        let quiet = Emitter::new(log.clone(), "quiet", options).unwrap();
        let (done, finished) = crossbeam_channel::bounded(1);
        let calls = {
            let mut quiet = quiet.clone();
            std::thread::spawn(move || {
                for n in 0..5u8 {
                    // Would wait for ever if the linger thread held the
                    // emitter while waiting for the log.
                    quiet.emit("q", &[b'0' + n], 1, None).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = done.send(());
            })
        };
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the source could not call its emitter: the linger thread held it");
        calls.join().unwrap();
        // Room again: everything arrives, in order.
        while !filling.is_finished() {
            assert!(Instant::now() < deadline, "the filler never finished");
            log.commit_cursor("slow", log.durable_offset()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        filling.join().unwrap();
        let mut quiet = quiet;
        let stored = std::thread::spawn(move || {
            let end = quiet.wait_durable().unwrap();
            (quiet, end)
        });
        while !stored.is_finished() {
            assert!(Instant::now() < deadline, "the quiet records never arrived");
            log.commit_cursor("slow", log.durable_offset()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let (quiet, end) = stored.join().unwrap();
        // Every record was stored (the log deleted what the cursor passed,
        // so the counters say it): none was lost while it waited.
        assert!(end.is_some());
        assert_eq!(quiet.counters().records, 5);
        assert!(quiet.counters().chunks >= 1);
        drop(quiet);
        log.close().unwrap();
    }

    /// A log whose disk can be made full, and an emitter of 4 KiB chunks
    /// into it.
    fn emitter_on_a_disk_that_fills(dir: &std::path::Path) -> (Log, Faults, Emitter) {
        let faults = Faults::default();
        let log = Log::open(
            dir,
            LogOptions {
                segment_bytes: 64 * 1024,
                max_bytes: 1 << 20,
                faults: faults.clone(),
                prepare_ahead: false,
                ..LogOptions::default()
            },
        )
        .unwrap();
        let options = ChunkOptions {
            max_bytes: 4096,
            compression: crate::chunk::Compression::None,
            ..ChunkOptions::default()
        };
        let emitter = Emitter::new(log.clone(), "src", options).unwrap();
        (log, faults, emitter)
    }

    #[test]
    fn an_append_error_reaches_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, faults, mut emitter) = emitter_on_a_disk_that_fills(dir.path());
        faults.set_disk_full(true);
        let record = vec![b'x'; 1000];
        let outcome = (0..1000)
            .map(|i| emitter.emit("s", &record, i, None))
            .find(Result::is_err)
            .unwrap_or_else(|| emitter.wait_durable().map(|_| ()));
        assert!(
            matches!(outcome, Err(Error::DiskFull { .. })),
            "{outcome:?}"
        );
    }

    /// The emitter's counters say what the log took: records of a chunk
    /// whose append failed are taken back (an http source's `records_in`
    /// used to count 2,275 records of which 107 were stored).
    #[test]
    fn records_of_a_chunk_the_log_refused_are_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults, mut emitter) = emitter_on_a_disk_that_fills(dir.path());
        let stats = emitter.stats()[0].1.clone();
        let record = vec![b'x'; 1000];
        faults.set_disk_full(true);
        let mut emitted = 0u64;
        let mut failed = false;
        for i in 0..1000 {
            emitted += 1;
            if emitter.emit("s", &record, i, None).is_err() {
                failed = true;
                break;
            }
        }
        if !failed {
            assert!(emitter.wait_durable().is_err());
        }
        // Whatever is still in flight gets its answer.
        let _ = emitter.wait_stored();
        log.flush().unwrap();
        let stored = log.next_offset();
        let counted = stats.snapshot();
        assert!(
            emitted > stored,
            "some records were refused ({emitted}, {stored})"
        );
        assert_eq!(counted.records, stored, "counted what the log stored");
        assert_eq!(counted.bytes, counted.records * 1000);
    }

    #[test]
    fn invalid_component_names_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        assert!(Emitter::new(log, &"x".repeat(300), ChunkOptions::default()).is_err());
    }
}
