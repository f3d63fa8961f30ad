//! The component interface: what every source, transform and sink
//! implements (built-in or behind a dynamic plugin), and the context the
//! runtime hands them. ("Plugin" names only a library loaded at run time.)
//!
//! Records cross as byte slices plus a few scalar fields (stream, timestamp,
//! source position), and sinks receive stored chunks, so the dynamic-plugin
//! C ABI can wrap these traits without a redesign. Plugins never start a
//! runtime of their own: the host owns the threads and the runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_listener::{Event, Listener};

use crate::emit::Emitter;
use crate::log::StoredChunk;
pub use crate::transform::{Transform, TransformOutcome};

/// Tells plugins to stop. Clones share the signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<ShutdownState>);

#[derive(Debug, Default)]
struct ShutdownState {
    triggered: AtomicBool,
    event: Event,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Triggers the signal; every waiter wakes.
    pub fn trigger(&self) {
        self.0.triggered.store(true, Ordering::Release);
        self.0.event.notify(usize::MAX);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::Acquire)
    }

    /// Resolves once triggered.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.0.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }

    /// Blocks until triggered or `timeout` passes; returns whether it was triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_triggered() {
                return true;
            }
            let listener = self.0.event.listen();
            if self.is_triggered() {
                return true;
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.is_triggered();
            }
        }
    }
}

/// An error a plugin reports.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// Worth trying again later (a backend that is down, a timeout). A sink
    /// is offered the same chunks again; nothing is dropped.
    #[error("{0}")]
    Retryable(String),
    /// Will not get better by retrying (bad configuration, a backend that
    /// refuses the data for good). The plugin stops.
    #[error("{0}")]
    Fatal(String),
    /// The log refused an operation.
    #[error(transparent)]
    Log(#[from] crate::Error),
    /// A sink cannot decode the chunk that starts at `first_offset`: its
    /// body is damaged although its CRC holds (a peer sent it so; see the
    /// `shipper` source's `verify`). The runtime puts that chunk in
    /// quarantine, counts it and offers the rest of the batch again: one
    /// bad chunk never stalls a sink or costs the records around it.
    #[error("chunk at offset {first_offset} cannot be decoded: {reason}")]
    Undecodable {
        /// The chunk's first offset.
        first_offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

impl ComponentError {
    /// [`ComponentError::Undecodable`] for the chunk starting at `first_offset`.
    pub fn undecodable(first_offset: u64, reason: impl std::fmt::Display) -> ComponentError {
        ComponentError::Undecodable {
            first_offset,
            reason: reason.to_string(),
        }
    }
}

/// What the runtime hands a source.
#[derive(Debug)]
pub struct SourceContext {
    /// Where the source puts its records.
    pub emitter: Emitter,
    /// Triggered when the source should stop reading.
    pub shutdown: Shutdown,
}

/// A source reads input and emits records.
#[async_trait]
pub trait Source: Send {
    /// Reads and emits until the input ends or `cx.shutdown` is triggered,
    /// then returns once everything it emitted is durable
    /// ([`Emitter::durable`]), so that its input can be acknowledged.
    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError>;

    /// The source's own metrics (drops, refusals, timeouts), read at each
    /// scrape of `/metrics`; asked once, when it is built, before `run`.
    fn metrics(&self) -> Vec<crate::metrics::ComponentMetric> {
        Vec::new()
    }
}

/// What the runtime tells a sink before its first delivery.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The sink's name (its cursor's name).
    pub name: String,
    /// The identity of the log the sink reads: with a chunk's offsets, a
    /// key no other log produces, for de-duplication in the backend.
    pub producer_id: crate::log::ProducerId,
    /// The log's data directory; a sink may keep small state under
    /// `sinks/` there.
    pub data_dir: std::path::PathBuf,
    /// The sink's committed cursor: every record below it was acknowledged.
    pub committed: u64,
    /// The log's trained dictionaries: a sink that decodes chunks builds
    /// its [`crate::chunk::Decoder`] with them.
    pub dictionaries: std::sync::Arc<crate::chunk::Dictionaries>,
    /// Where the log ends: no offset at or above it was ever stored, so a
    /// backend that claims to hold one contradicts the log.
    pub log_end: crate::log::LogEnd,
}

impl SinkContext {
    /// The context of sink `name` reading `log`, its cursor at `committed`.
    pub fn new(name: &str, log: &crate::log::Log, committed: u64) -> Self {
        SinkContext {
            name: name.to_owned(),
            producer_id: log.producer_id(),
            data_dir: log.dir().to_owned(),
            committed,
            dictionaries: log.dictionaries(),
            log_end: log.end(),
        }
    }

    /// A decoder for the chunks this sink is given.
    pub fn decoder(&self) -> crate::chunk::Decoder {
        crate::chunk::Decoder::with_dictionaries(self.dictionaries.clone())
    }
}

/// A sink's batch limits and how long a batch below them waits for more
/// records before it goes (`batch.max_age_ms`).
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// How long a batch below the limits waits for more records.
    pub max_age: Duration,
    /// Records a batch holds at most.
    pub max_records: u64,
    /// Stored bytes a batch holds at most.
    pub max_bytes: u64,
}

impl BatchPolicy {
    /// Whether a batch of `records` taking `bytes` (stored) has room left.
    pub fn wants_more(&self, records: u64, bytes: u64) -> bool {
        records < self.max_records && bytes < self.max_bytes
    }

    /// How much longer a batch whose oldest record was produced at
    /// `oldest_ns` (unix nanoseconds) may wait: `max_age` less its age, at
    /// most `max_age` (a clock ahead of this one does not stretch it).
    pub fn remaining(&self, oldest_ns: u64) -> Duration {
        let age = Duration::from_nanos(crate::chunk::now_nanos().saturating_sub(oldest_ns));
        self.max_age.saturating_sub(age)
    }
}

/// A sink delivers stored chunks to a backend.
#[async_trait]
pub trait Sink: Send {
    /// Called once before the first delivery (and again after a restart of
    /// the sink by a reload). A sink that keeps a high-water mark in its
    /// backend reads it here. A `Retryable` error is retried with backoff.
    async fn open(&mut self, cx: &SinkContext) -> Result<(), ComponentError> {
        let _ = cx;
        Ok(())
    }

    /// Delivers `chunks` (all from this sink's inputs, in offset order).
    /// `Ok` means the backend holds every record in them durably: the
    /// runtime then moves the sink's cursor past them, and the log may
    /// delete them. A `Retryable` error makes the runtime offer the same
    /// chunks again after a backoff; `Fatal` stops the sink.
    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError>;

    /// Called once when the sink stops, after its last delivery.
    async fn close(&mut self) -> Result<(), ComponentError> {
        Ok(())
    }

    /// The sink's own metrics (requests, rows, refusals), read at each
    /// scrape of `/metrics`; asked once, when it is built. The delivery
    /// loop's records, bytes, retries and latency are counted for every
    /// sink besides these.
    fn metrics(&self) -> Vec<crate::metrics::ComponentMetric> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_wakes_blocking_waiters() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(1)));
        let waiter = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.wait_timeout(Duration::from_secs(30)))
        };
        shutdown.trigger();
        assert!(waiter.join().unwrap());
        assert!(shutdown.is_triggered());
    }
}
