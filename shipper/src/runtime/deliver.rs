//! One sink's delivery loop: read durable chunks from its cursor, keep
//! those of its inputs, gather a batch under the sink's [`BatchPolicy`],
//! deliver it, retry a retryable failure with capped backoff (never
//! dropping a batch), put a chunk the sink cannot decode in quarantine and
//! deliver the rest, and commit the cursor after each acknowledged batch.
//! It knows no sink type: [`DeliveryStats`] are every sink's metrics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use shipper_core::chunk::now_nanos;
use shipper_core::component::{BatchPolicy, ComponentError, Shutdown, Sink, SinkContext};
use shipper_core::log::Log;
use shipper_core::metrics::{counters_of, ComponentMetric, Histogram};

/// Chunks a sink is given at most per delivery.
const MAX_BATCH_CHUNKS: usize = 256;
/// Stored bytes a sink is given at most per delivery.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Live counters of one sink's delivery loop.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Records acknowledged by the backend.
    pub records: AtomicU64,
    /// Stored (compressed) bytes acknowledged.
    pub bytes: AtomicU64,
    /// Deliveries acknowledged.
    pub batches: AtomicU64,
    /// Deliveries retried after a retryable failure.
    pub retries: AtomicU64,
    /// Deliveries that failed (retryable or not).
    pub errors: AtomicU64,
    /// Chunks the sink could not decode, put in quarantine.
    pub quarantined: AtomicU64,
    /// Uncompressed bytes (record bytes plus framing) acknowledged: with
    /// `bytes`, the compression ratio of what the sink delivered.
    pub raw_bytes: AtomicU64,
    /// How long each acknowledged `deliver` call took, retries inside the
    /// sink included.
    pub deliver_seconds: Arc<Histogram>,
}

impl DeliveryStats {
    /// The delivery loop's metrics of sink `name` reading `log`: the
    /// counters, the delivery-time histogram, and its lag (records from
    /// its cursor; seconds from the oldest unacknowledged record's time).
    pub fn metrics(self: &Arc<Self>, log: &Log, name: &str) -> Vec<ComponentMetric> {
        let mut metrics = counters_of(
            self,
            &[
                (
                    "shipper_component_sent_records_total",
                    "Records the backend acknowledged.",
                    &[],
                    |s| &s.records,
                ),
                (
                    "shipper_component_sent_bytes_total",
                    "Stored (compressed) bytes the backend acknowledged.",
                    &[],
                    |s| &s.bytes,
                ),
                (
                    "shipper_component_sent_uncompressed_bytes_total",
                    "Uncompressed bytes the backend acknowledged.",
                    &[],
                    |s| &s.raw_bytes,
                ),
                (
                    "shipper_component_sent_batches_total",
                    "Deliveries the backend acknowledged.",
                    &[],
                    |s| &s.batches,
                ),
                (
                    "shipper_component_retries_total",
                    "Deliveries retried after a retryable failure.",
                    &[],
                    |s| &s.retries,
                ),
                (
                    "shipper_component_errors_total",
                    "Deliveries that failed.",
                    &[],
                    |s| &s.errors,
                ),
                (
                    "shipper_component_quarantined_chunks_total",
                    "Chunks the sink could not decode, moved to DATA_DIR/quarantine.",
                    &[],
                    |s| &s.quarantined,
                ),
            ],
        );
        metrics.push(ComponentMetric::histogram(
            "shipper_component_deliver_seconds",
            "Time of each acknowledged delivery, the sink's own retries included.",
            &[],
            self.deliver_seconds.clone(),
        ));
        let stats = self.clone();
        metrics.push(ComponentMetric::gauge_f64(
            "shipper_component_compression_ratio",
            "Uncompressed over stored bytes of what the sink delivered.",
            &[],
            move || {
                let stored = stats.bytes.load(Ordering::Relaxed);
                let raw = stats.raw_bytes.load(Ordering::Relaxed);
                Some(if stored == 0 {
                    0.0
                } else {
                    raw as f64 / stored as f64
                })
            },
        ));
        let (lag_log, cursor) = (log.clone(), name.to_owned());
        metrics.push(ComponentMetric::gauge_f64(
            "shipper_component_lag_records",
            "Records stored but not yet acknowledged by the sink.",
            &[],
            move || {
                let position = lag_log.cursor(&cursor)?;
                Some(lag_log.next_offset().saturating_sub(position) as f64)
            },
        ));
        let (lag_log, cursor) = (log.clone(), name.to_owned());
        metrics.push(ComponentMetric::gauge_f64(
            "shipper_component_lag_seconds",
            "Age of the oldest record the sink has not had acknowledged.",
            &[],
            move || {
                let position = lag_log.cursor(&cursor)?;
                Some(match lag_log.record_time_at(position) {
                    Some(time) if position < lag_log.next_offset() => {
                        now_nanos().saturating_sub(time) as f64 / 1e9
                    }
                    _ => 0.0,
                })
            },
        ));
        metrics
    }
}

/// Where sink `sink` keeps the chunks it could not decode.
pub fn quarantine_path(data_dir: &Path, sink: &str) -> PathBuf {
    data_dir.join("quarantine").join(format!("{sink}.chunks"))
}

/// Appends `frame` (a whole stored chunk, self-describing) to the
/// quarantine file at `path` and syncs it: the log may delete the chunk
/// once the cursor passes it.
fn quarantine(path: &Path, frame: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        shipper_core::log::modes::create_dir(dir)?;
    }
    let mut file = shipper_core::log::modes::file_options()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(frame)?;
    file.sync_data()?;
    // The file's name, if it was just created, is durable too.
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Commits cursor `name` at `offset` and returns true. A passing failure
/// (out of file descriptors or memory) is tried again with a backoff
/// rather than ending the sink; `stop` ends the waiting with false (the
/// next start delivers the batch again, and receivers drop the repeat).
async fn commit_cursor(
    log: &Log,
    name: &str,
    offset: u64,
    stop: &Shutdown,
) -> anyhow::Result<bool> {
    let mut backoff = Duration::from_millis(10);
    loop {
        let outcome = tokio::task::block_in_place(|| log.commit_cursor(name, offset));
        match outcome {
            Ok(()) => return Ok(true),
            Err(error) if error.is_transient() => {
                tracing::warn!(sink = %name, %error, retry_in = ?backoff, "cannot commit the cursor for now; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.wait() => return Ok(false),
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(error) => {
                return Err(anyhow!(error)).with_context(|| format!("committing cursor {name}"))
            }
        }
    }
}

/// What one sink's delivery task runs with.
pub(crate) struct SinkTask {
    pub log: Log,
    pub name: String,
    pub sink: Box<dyn Sink>,
    pub inputs: Vec<String>,
    pub batch: Option<BatchPolicy>,
    /// The sink's committed cursor.
    pub start: u64,
    pub stats: Arc<DeliveryStats>,
    /// Shutdown: stop once caught up with the durable end of the log.
    pub drain: Shutdown,
    /// A reload replaced or removed the sink: stop after the current
    /// delivery, caught up or not.
    pub stop: Shutdown,
}

/// One sink's delivery loop: read chunks from its cursor, keep those of its
/// inputs, deliver them in batches, and move the cursor after each
/// acknowledged batch. A retryable failure is retried with capped backoff,
/// never dropped. Once `drain` is triggered it stops when caught up; once
/// `stop` is, after the delivery in progress (a batch waiting for a retry
/// is left unacknowledged, for whoever reads the cursor next).
pub(crate) async fn deliver(task: SinkTask) -> anyhow::Result<()> {
    let SinkTask {
        log,
        name,
        mut sink,
        inputs,
        batch: policy,
        start,
        stats,
        drain,
        stop,
    } = task;
    let cx = SinkContext::new(&name, &log, start);
    let mut backoff = Duration::from_millis(100);
    loop {
        match sink.open(&cx).await {
            Ok(()) => break,
            Err(ComponentError::Retryable(reason)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = %name, %reason, retry_in = ?backoff, "sink cannot start yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.wait() => return Ok(()),
                    () = drain.wait(), if !drain.is_triggered() => {}
                }
                // Draining with nothing to deliver ends the sink; with
                // records waiting it goes on trying to start, as a sink
                // that started goes on trying to deliver, until the
                // shutdown's patience runs out (the run then fails: what
                // is left stays on disk).
                if drain.is_triggered() && start >= log.durable_offset() {
                    return Ok(());
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(anyhow!(error)).context("the sink cannot start"),
        }
    }
    let inputs: BTreeSet<Vec<u8>> = inputs.into_iter().map(String::into_bytes).collect();
    let mut reader = log.reader(start);
    let mut committed = start;
    'deliver: loop {
        if stop.is_triggered() {
            break;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut records = 0;
        let mut end = committed;
        let mut caught_up;
        let mut linger_until = None;
        // Until the batch is full, or caught up and (with a linger) as
        // full as the sink's batch or as old as its `max_age_ms`.
        loop {
            caught_up = false;
            while batch.len() < MAX_BATCH_CHUNKS && bytes < MAX_BATCH_BYTES {
                match reader.next() {
                    Some(Ok(chunk)) => {
                        end = chunk.end_offset();
                        if inputs.contains(chunk.view().component()) {
                            bytes += chunk.frame().len();
                            records += chunk.end_offset() - chunk.first_offset();
                            batch.push(chunk);
                        }
                    }
                    Some(Err(error)) => {
                        tracing::error!(sink = %name, %error, "corrupt chunk skipped")
                    }
                    None => {
                        caught_up = true;
                        break;
                    }
                }
            }
            let Some(linger) = policy else { break };
            if batch.is_empty()
                || !caught_up
                || !linger.wants_more(records, bytes as u64)
                || drain.is_triggered()
            {
                break;
            }
            if stop.is_triggered() {
                // Nothing is in progress: the next start delivers it.
                break 'deliver;
            }
            // Fixed when the wait begins, so a chunk stamped by a clock
            // ahead of this one waits `max_age` at most, not again and again.
            let deadline = *linger_until.get_or_insert_with(|| {
                let oldest = batch.iter().map(|c| c.view().min_ts()).min();
                tokio::time::Instant::now() + linger.remaining(oldest.unwrap_or(0))
            });
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                ready = reader.ready() => ready?,
                () = tokio::time::sleep_until(deadline) => {}
                () = drain.wait() => {}
                () = stop.wait() => {}
            }
        }
        if let Some((from, to)) = reader.take_gap() {
            tracing::error!(sink = %name, from, to, records = to - from, "records no longer stored were skipped");
        }
        // Offsets the reader stepped over (lost, or recorded lost) are
        // passed with what was read: a cursor never waits at a loss.
        end = end.max(reader.next_offset());
        if !batch.is_empty() {
            let mut backoff = Duration::from_millis(100);
            loop {
                let started = Instant::now();
                match sink.deliver(&batch).await {
                    Ok(()) => {
                        stats.deliver_seconds.observe(started.elapsed());
                        let records: u64 = batch
                            .iter()
                            .map(|c| c.end_offset() - c.first_offset())
                            .sum();
                        let raw: u64 = batch
                            .iter()
                            .map(|c| c.view().uncompressed_len() as u64)
                            .sum();
                        stats.records.fetch_add(records, Ordering::Relaxed);
                        stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                        stats.raw_bytes.fetch_add(raw, Ordering::Relaxed);
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(ComponentError::Undecodable {
                        first_offset,
                        reason,
                    }) => {
                        let Some(index) =
                            batch.iter().position(|c| c.first_offset() == first_offset)
                        else {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            return Err(anyhow!(
                                "the sink reports chunk {first_offset} undecodable, which it was not given: {reason}"
                            ));
                        };
                        let chunk = batch.remove(index);
                        bytes -= chunk.frame().len();
                        let path = quarantine_path(log.dir(), &name);
                        tokio::task::block_in_place(|| quarantine(&path, chunk.frame()))
                            .with_context(|| {
                                format!(
                                    "putting chunk {first_offset} in quarantine at {}",
                                    path.display()
                                )
                            })?;
                        stats.quarantined.fetch_add(1, Ordering::Relaxed);
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            sink = %name,
                            first_offset,
                            end_offset = chunk.end_offset(),
                            %reason,
                            quarantine = %path.display(),
                            "a chunk the sink cannot decode is in quarantine; delivering the rest"
                        );
                        if batch.is_empty() {
                            break;
                        }
                    }
                    Err(ComponentError::Retryable(reason)) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sink = %name, %reason, retry_in = ?backoff, "delivery failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = stop.wait() => break 'deliver,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(error) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        return Err(anyhow!(error)).context("delivery failed for good");
                    }
                }
            }
        }
        if end > committed {
            if !commit_cursor(&log, &name, end, &stop).await? {
                break;
            }
            committed = end;
        }
        if caught_up {
            if drain.is_triggered() && committed >= log.durable_offset() {
                break;
            }
            tokio::select! {
                ready = reader.ready() => ready?,
                () = drain.wait(), if !drain.is_triggered() => {}
                () = stop.wait() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
    sink.close().await.map_err(|e| anyhow!(e))
}

/// How long a sink told to stop at the drain deadline gets to finish its
/// delivery in progress, and then, aborted, to reach its next await.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A sink's running delivery task.
pub(crate) struct RunningDelivery {
    pub name: String,
    /// Tells the task to stop after the delivery in progress.
    pub stop: Shutdown,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The shutdown of sinks, the same for `shipper run` and an embedded
/// pipeline: `drain` tells every sink to deliver what is durable and stop
/// once caught up; one still busy after `patience` fails the shutdown (its
/// records stay on disk for the next start), is told to stop after its
/// delivery in progress, and is aborted if that takes longer than
/// [`STOP_GRACE`], then awaited as long again, so none runs on while the
/// log closes. Returns what failed.
pub(crate) async fn drain_sinks(
    drain: &Shutdown,
    sinks: Vec<RunningDelivery>,
    patience: Duration,
) -> Vec<String> {
    drain.trigger();
    let deadline = tokio::time::Instant::now() + patience;
    let mut failed = Vec::new();
    for RunningDelivery {
        name,
        stop,
        mut task,
    } in sinks
    {
        let outcome = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(outcome) => outcome,
            Err(_) => {
                failed.push(format!(
                    "sink {name} did not drain within {patience:?}; \
                     its records stay on disk for the next start"
                ));
                stop.trigger();
                match tokio::time::timeout(STOP_GRACE, &mut task).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        task.abort();
                        // An aborted task ends at its next await; one in
                        // blocking work (a cursor commit) once that is done.
                        if tokio::time::timeout(STOP_GRACE, task).await.is_err() {
                            tracing::warn!(sink = %name, "an aborted sink is still busy; stopping without it");
                        }
                        continue;
                    }
                }
            }
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failed.push(format!("sink {name}: {error:#}")),
            Err(panic) => failed.push(format!("sink {name} panicked: {panic}")),
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    //! The delivery loop driven in one process: a real log in a temporary
    //! directory, a sink that does what each test scripts.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use shipper_core::chunk::ChunkOptions;
    use shipper_core::emit::Emitter;
    use shipper_core::log::{LogOptions, StoredChunk};
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// What the scripted sink does with one `deliver` call.
    enum Step {
        Ok,
        Retry,
        /// Reports the batch's chunk at this index undecodable.
        Undecodable(usize),
        /// Waits for the test's word, then answers with it.
        Hold(oneshot::Receiver<bool>),
    }

    /// A sink that answers as scripted (then `Ok`), and reports each call:
    /// the first offsets of the batch it was given.
    struct ScriptedSink {
        script: VecDeque<Step>,
        calls: mpsc::UnboundedSender<Vec<u64>>,
        acknowledged: Arc<Mutex<Vec<u64>>>,
    }

    #[async_trait]
    impl Sink for ScriptedSink {
        async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
            let offsets: Vec<u64> = chunks.iter().map(StoredChunk::first_offset).collect();
            let _ = self.calls.send(offsets.clone());
            let ok = match self.script.pop_front().unwrap_or(Step::Ok) {
                Step::Ok => true,
                Step::Retry => false,
                Step::Undecodable(index) => {
                    return Err(ComponentError::undecodable(
                        chunks[index].first_offset(),
                        "scripted",
                    ))
                }
                Step::Hold(word) => word.await.unwrap_or(false),
            };
            if !ok {
                return Err(ComponentError::Retryable("scripted".into()));
            }
            self.acknowledged.lock().unwrap().extend(offsets);
            Ok(())
        }
    }

    struct Harness {
        _dir: tempfile::TempDir,
        log: Log,
        /// First offset and frame of each chunk appended.
        chunks: Vec<(u64, Vec<u8>)>,
        calls: mpsc::UnboundedReceiver<Vec<u64>>,
        acknowledged: Arc<Mutex<Vec<u64>>>,
        stats: Arc<DeliveryStats>,
        drain: Shutdown,
        stop: Shutdown,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    /// A log holding `chunks` chunks of 10 records each, durable, and the
    /// delivery task of a sink `out` scripted with `script`.
    fn start(chunks: usize, script: Vec<Step>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let mut emitter = Emitter::new(log.clone(), "in", ChunkOptions::default()).unwrap();
        for chunk in 0..chunks {
            for record in 0..10 {
                let line = format!("{{\"chunk\":{chunk},\"record\":{record}}}");
                emitter.emit("s", line.as_bytes(), 1, None).unwrap();
            }
            emitter.close_chunks().unwrap();
        }
        emitter.wait_durable().unwrap();
        drop(emitter);
        let stored = log
            .reader(0)
            .map(|chunk| {
                let chunk = chunk.unwrap();
                (chunk.first_offset(), chunk.frame().to_vec())
            })
            .collect();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let acknowledged = Arc::default();
        let sink = ScriptedSink {
            script: script.into(),
            calls: calls_tx,
            acknowledged: Arc::clone(&acknowledged),
        };
        let stats = Arc::new(DeliveryStats::default());
        let (drain, stop) = (Shutdown::new(), Shutdown::new());
        let start = log.open_cursor("out").unwrap();
        let task = tokio::spawn(deliver(SinkTask {
            log: log.clone(),
            name: "out".to_owned(),
            sink: Box::new(sink),
            inputs: vec!["in".to_owned()],
            batch: None,
            start,
            stats: stats.clone(),
            drain: drain.clone(),
            stop: stop.clone(),
        }));
        Harness {
            _dir: dir,
            log,
            chunks: stored,
            calls,
            acknowledged,
            stats,
            drain,
            stop,
            task,
        }
    }

    impl Harness {
        fn first_offsets(&self) -> Vec<u64> {
            self.chunks.iter().map(|(offset, _)| *offset).collect()
        }

        fn counted(&self, counter: fn(&DeliveryStats) -> &AtomicU64) -> u64 {
            counter(&self.stats).load(Ordering::Relaxed)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retryable_failure_offers_the_same_batch_again_and_delivers_it_once() {
        let mut h = start(3, vec![Step::Retry]);
        let all = h.first_offsets();
        assert_eq!(h.calls.recv().await.unwrap(), all);
        assert_eq!(h.calls.recv().await.unwrap(), all, "the same batch again");
        h.drain.trigger();
        (&mut h.task).await.unwrap().unwrap();
        assert_eq!(*h.acknowledged.lock().unwrap(), all);
        assert_eq!(h.log.cursor("out"), Some(30));
        assert_eq!(h.counted(|s| &s.retries), 1);
        assert_eq!(h.counted(|s| &s.errors), 1);
        assert_eq!(h.counted(|s| &s.records), 30);
        assert_eq!(h.counted(|s| &s.batches), 1);
        h.log.close().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_during_a_delivery_waits_for_it_and_commits_what_it_acknowledged() {
        let (word, held) = oneshot::channel();
        let mut h = start(2, vec![Step::Hold(held)]);
        assert_eq!(h.calls.recv().await.unwrap(), h.first_offsets());
        h.stop.trigger();
        // The delivery in progress is not cut short.
        tokio::task::yield_now().await;
        assert!(!h.task.is_finished());
        word.send(true).unwrap();
        (&mut h.task).await.unwrap().unwrap();
        assert_eq!(h.log.cursor("out"), Some(20), "the acknowledged batch");
        assert_eq!(h.counted(|s| &s.records), 20);
        h.log.close().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_during_a_delivery_that_fails_leaves_the_batch_for_the_next_start() {
        let (word, held) = oneshot::channel();
        let mut h = start(2, vec![Step::Hold(held)]);
        assert_eq!(h.calls.recv().await.unwrap(), h.first_offsets());
        h.stop.trigger();
        word.send(false).unwrap();
        (&mut h.task).await.unwrap().unwrap();
        assert_eq!(h.log.cursor("out"), Some(0), "nothing acknowledged");
        assert!(h.acknowledged.lock().unwrap().is_empty());
        assert_eq!(h.counted(|s| &s.records), 0);
        assert!(h.calls.try_recv().is_err(), "no retry after the stop");
        h.log.close().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_undecodable_chunk_in_the_middle_goes_to_quarantine_and_the_rest_is_delivered() {
        let mut h = start(3, vec![Step::Undecodable(1)]);
        let all = h.first_offsets();
        assert_eq!(h.calls.recv().await.unwrap(), all);
        assert_eq!(
            h.calls.recv().await.unwrap(),
            vec![all[0], all[2]],
            "offered again at once without the bad chunk"
        );
        h.drain.trigger();
        (&mut h.task).await.unwrap().unwrap();
        assert_eq!(*h.acknowledged.lock().unwrap(), vec![all[0], all[2]]);
        assert_eq!(h.log.cursor("out"), Some(30), "the cursor passes it");
        let quarantined = std::fs::read(quarantine_path(h.log.dir(), "out")).unwrap();
        assert_eq!(quarantined, h.chunks[1].1, "the whole frame, as stored");
        assert_eq!(h.counted(|s| &s.quarantined), 1);
        assert_eq!(h.counted(|s| &s.records), 20);
        h.log.close().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_that_cannot_drain_in_time_fails_the_shutdown_and_is_stopped() {
        let script = (0..1000).map(|_| Step::Retry).collect();
        let mut h = start(1, script);
        h.calls.recv().await.unwrap();
        let running = RunningDelivery {
            name: "out".to_owned(),
            stop: h.stop.clone(),
            task: h.task,
        };
        let started = Instant::now();
        let failed = drain_sinks(&h.drain, vec![running], Duration::from_millis(300)).await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("did not drain within"), "{failed:?}");
        assert!(
            started.elapsed() < STOP_GRACE,
            "the stop ended its retrying, no abort was needed"
        );
        assert_eq!(h.log.cursor("out"), Some(0));
        h.log.close().unwrap();
    }

    /// A source that emits one record and then blocks for ever (it never
    /// calls its emitter again) still has the record delivered: the
    /// engine closes the chunk at its linger time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_of_a_source_that_then_blocks_is_delivered() {
        let mut h = start(0, Vec::new());
        let options = ChunkOptions {
            linger: Duration::from_millis(20),
            ..ChunkOptions::default()
        };
        let mut blocked = Emitter::new(h.log.clone(), "in", options).unwrap();
        blocked.compress_in_background().unwrap();
        blocked.emit("s", b"{\"only\":1}", 1, None).unwrap();
        // From here the source is blocked: nothing touches `blocked`.
        let batch = tokio::time::timeout(Duration::from_secs(60), h.calls.recv())
            .await
            .expect("the record was never delivered")
            .unwrap();
        assert_eq!(batch, vec![0]);
        h.drain.trigger();
        (&mut h.task).await.unwrap().unwrap();
        assert_eq!(h.log.cursor("out"), Some(1));
        drop(blocked);
        h.log.close().unwrap();
    }
}
