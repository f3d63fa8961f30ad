//! Embedded, write-only ingest: an application inserts objects, shipper
//! stores them in its own log on local disk and its sinks ship them, with
//! no sidecar process.
//!
//! ```no_run
//! use shipper::ingest::{Ingest, Ingestor};
//!
//! #[derive(serde::Serialize)]
//! struct Reading { sensor: u32, celsius: f32 }
//! impl Ingest for Reading { const STREAM: &'static str = "weather"; }
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let ingestor = Ingestor::open_toml(r#"
//!     data_dir = "./sensor-data"
//!     [sources.app]
//!     type = "sdk"
//!     [sinks.backend]
//!     type = "http"
//!     inputs = ["app"]
//!     uri = "http://aggregator:8687/v1/chunks"
//! "#)?;
//! ingestor.insert(&Reading { sensor: 7, celsius: 21.5 })?;
//! ingestor.wait_for_upload(std::time::Duration::from_secs(10)).await?;
//! ingestor.close().await?;
//! # Ok(()) }
//! ```
//!
//! Or derive the trait; the stream is required:
//!
//! ```
//! #[derive(serde::Serialize, shipper::ingest::Ingest)]
//! #[ingest(stream = "invoices")]
//! struct Invoice { number: u64, cents: i64 }
//! assert_eq!(<Invoice as shipper::ingest::Ingest>::STREAM, "invoices");
//! ```
//!
//! ```compile_fail
//! #[derive(serde::Serialize, shipper::ingest::Ingest)]
//! struct NoStream { number: u64 }
//! ```
//!
//! # Write-only
//!
//! There is no way to read, query, update or delete what was inserted.
//! That is the point: the log is a buffer on its way to a backend, not a
//! database. Objects leave the disk once every sink's backend has
//! acknowledged them; an API that read them back would have to keep them,
//! and one that changed them would make delivery into the backend
//! ambiguous (which version arrived?). Query the backend.
//!
//! # The hot path
//!
//! [`Ingestor::insert`] writes the object's JSON ([`Ingest::write_json`])
//! straight into the open chunk of the calling thread's own chunk builder
//! (with transforms configured, into a buffer they read first). The
//! builder is an [`Emitter`] only that thread inserts through (the
//! engine's linger thread closes its lingering chunks with `try_lock`,
//! never waiting): no syscall (the record's time is the coarse wall clock,
//! read from the vDSO) and no contended lock. A chunk that fills is
//! compressed on the process's compression pool and appended to the log; its durability follows
//! `[log] durability`. [`Ingestor::insert_durable`] waits until that
//! object is durable; it, [`Ingestor::flush`] and
//! [`Ingestor::wait_for_upload`] wait for the compression threads and the
//! log's writer on tokio's blocking pool, never on the caller's runtime
//! thread.
//!
//! `#[derive(Ingest)]` on a struct with named fields writes its JSON
//! itself: each key with its punctuation is a constant, and numbers,
//! strings and booleans go straight to the formatters serde_json uses, so
//! the bytes are serde_json's and it takes about half the time. It follows
//! `#[serde(rename_all)]` and, on fields, `rename`, `skip`,
//! `skip_serializing` and `skip_serializing_if`; a field of any other type
//! (a `Vec`, a nested struct) is written by its `Serialize` impl. With any
//! other serde attribute that shapes the output (`flatten`, `with`,
//! `tag`, ...) the type's `Serialize` impl writes the whole object. The
//! derive cannot see a hand-written `Serialize` impl: for such a type,
//! write `#[ingest(stream = "...", serde)]` (debug builds compare the two
//! on every insert and panic, naming the type, where they differ).
//!
//! # Offline first
//!
//! While the backend is unreachable, chunks accumulate in the log within
//! its budget (`[log] max_bytes`). When the budget is reached, `insert`
//! blocks until the sinks catch up (`when_full = "block"`, the default) or
//! returns [`InsertError::Full`] ([`IngestOptions::refuse_when_full`]).
//! Once a backend acknowledges them the segments are deleted.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use shipper_core::emit::Emitter;
use shipper_core::log::Log;

use crate::config::{Config, LogConfig, SinkConfig, SourceConfig};
use shipper_components::sources::sdk::SdkSourceConfig;

mod events;
mod json;
use crate::runtime::{build_emitter, start_embedded_sinks, EmbeddedSinks};
pub use events::EventLayer;

/// `#[derive(Ingest)]` with `#[ingest(stream = "...")]`.
pub use shipper_derive::Ingest;

/// What `#[derive(Ingest)]`'s generated code calls; not an API.
#[doc(hidden)]
pub mod __json {
    pub use super::json::{Fallback, Fast, Field};
    pub use serde_json::Error;
}

/// An object an application inserts: serializable, and naming the stream
/// (collection) it belongs to. Derive it with `#[derive(Ingest)]` and
/// `#[ingest(stream = "weather")]`, or implement it by hand.
pub trait Ingest: serde::Serialize {
    /// The stream: a table in PostgreSQL, a subject in NATS, a field of
    /// each chunk everywhere.
    const STREAM: &'static str;

    /// Appends the object's JSON to `out`: exactly the bytes
    /// `serde_json::to_writer(out, self)` writes, which is what the
    /// default does. `#[derive(Ingest)]` on a struct with named fields
    /// writes them without serde's visitor, its keys as constants (the
    /// derive's docs say which serde attributes it follows); debug builds
    /// check on every insert that the two agree.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, self)
    }

    /// Whether `write_json` is the derive's own writer, which debug builds
    /// check against the `Serialize` impl. Not an API.
    #[doc(hidden)]
    const DERIVED_JSON: bool = false;
}

/// Why an insert did not take the object.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The log is at its disk budget and the ingestor refuses instead of
    /// blocking ([`IngestOptions::refuse_when_full`]).
    #[error("the log is at its disk budget: the backend has not acknowledged enough yet")]
    Full,
    /// The ingestor was closed.
    #[error("the ingestor is closed")]
    Closed,
    /// The object did not serialize to JSON.
    #[error("serializing the object: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The log refused the record (too large, a failed disk).
    #[error(transparent)]
    Log(#[from] shipper_core::Error),
}

/// How an [`Ingestor`] behaves beyond its config file.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Return [`InsertError::Full`] instead of blocking when the log is at
    /// its disk budget.
    pub refuse_when_full: bool,
}

/// The handle an application inserts through; cheap to clone, usable from
/// any number of threads. See the module docs.
#[derive(Clone)]
pub struct Ingestor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("data_dir", &self.inner.log.dir())
            .field("component", &self.inner.component)
            .finish()
    }
}

struct Inner {
    id: u64,
    log: Log,
    config: Config,
    /// The `sdk` source's name: the component inserted records carry.
    component: String,
    options: IngestOptions,
    /// Every thread's emitter (threads keep theirs in a thread local).
    /// A handle on every inserting thread's emitter, for flushes.
    emitters: Mutex<Vec<Emitter>>,
    closed: AtomicBool,
    /// Runs the sinks' delivery tasks.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    sinks: Mutex<Option<EmbeddedSinks>>,
    sink_names: Vec<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's emitter, per ingestor.
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

struct Local {
    ingestor: u64,
    /// Gone once the ingestor is: the entry is dropped then.
    owner: Weak<Inner>,
    emitter: Emitter,
}

impl Ingestor {
    /// Opens an ingestor from a config file's text (the format of
    /// docs/config.md): `data_dir`, `[log]`, exactly one source of
    /// `type = "sdk"`, transforms and sinks. Starts the sinks; they ship
    /// what earlier runs left on disk too.
    pub fn open_toml(text: &str) -> anyhow::Result<Ingestor> {
        Ingestor::open_toml_with(text, IngestOptions::default())
    }

    /// [`Ingestor::open_toml`] of the file at `path`.
    pub fn open_file(path: &Path) -> anyhow::Result<Ingestor> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ingestor::open_toml(&text)
    }

    /// [`Ingestor::open_toml`] with options.
    pub fn open_toml_with(text: &str, options: IngestOptions) -> anyhow::Result<Ingestor> {
        let loaded = crate::config::parse(text, &|name| std::env::var(name).ok())
            .map_err(|invalid| anyhow!("{invalid}"))?;
        Ingestor::open_config(loaded.config, options)
    }

    /// Opens an ingestor from a parsed config.
    pub fn open_config(config: Config, options: IngestOptions) -> anyhow::Result<Ingestor> {
        // The pool is the process's: the first ingestor (or pipeline) sizes it.
        shipper_core::emit::set_compression_threads(config.log.compression_threads as usize);
        let mut sdk = config
            .sources
            .iter()
            .filter(|(_, source)| source.get::<SdkSourceConfig>().is_some());
        let Some((component, _)) = sdk.next() else {
            bail!("the config needs a source of type \"sdk\": the records the application inserts");
        };
        if let Some((other, _)) = sdk.next() {
            bail!("one source of type \"sdk\" per ingestor ({component} and {other})");
        }
        if let Some((name, source)) = config
            .sources
            .iter()
            .find(|(_, source)| source.get::<SdkSourceConfig>().is_none())
        {
            bail!(
                "source {name}: type {:?} runs in `shipper run`, not inside an application",
                source.type_name()
            );
        }
        let component = component.clone();
        let log = Log::open(&config.data_dir, config.log_options())
            .with_context(|| format!("opening data dir {}", config.data_dir.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shipper-ingest")
            .enable_all()
            .build()
            .context("starting the sinks' runtime")?;
        // `enter`, not `block_on`: the application may open the ingestor
        // from inside its own tokio runtime.
        let started = {
            let _context = runtime.enter();
            start_embedded_sinks(&config, &log)
        };
        let sinks = match started {
            Ok(sinks) => sinks,
            Err(error) => {
                // Dropping a runtime inside another one's task panics.
                runtime.shutdown_background();
                return Err(error);
            }
        };
        let sink_names = sinks.stats.iter().map(|(name, _)| name.clone()).collect();
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            log,
            config,
            component,
            options,
            emitters: Mutex::default(),
            closed: AtomicBool::new(false),
            runtime: Mutex::new(Some(runtime)),
            sinks: Mutex::new(Some(sinks)),
            sink_names,
        });
        Ok(Ingestor { inner })
    }

    /// Builds an ingestor in code instead of from a config file: the same
    /// settings, the sinks given as typed configs or as their TOML tables.
    ///
    /// ```no_run
    /// # fn demo() -> anyhow::Result<()> {
    /// use shipper::config::{DurabilityPolicy, LogConfig};
    /// let ingestor = shipper::ingest::Ingestor::builder("./sensor-data")
    ///     .log(LogConfig { durability: DurabilityPolicy::Always, ..LogConfig::default() })
    ///     .sink_toml("backend", r#"type = "http"
    ///                              uri = "http://aggregator:8687/v1/chunks""#)
    ///     .open()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(data_dir: impl Into<std::path::PathBuf>) -> IngestorBuilder {
        IngestorBuilder {
            config: Config {
                data_dir: data_dir.into(),
                ..Config::default()
            },
            options: IngestOptions::default(),
            errors: Vec::new(),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.inner.log.dir()
    }

    /// The log, for inspection (offsets, cursors).
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// What sink `name` has delivered so far and its backend acknowledged:
    /// records, and stored (compressed) bytes. `None` for a sink the
    /// config does not name, or once the ingestor is closed.
    pub fn delivered(&self, name: &str) -> Option<(u64, u64)> {
        let sinks = lock(&self.inner.sinks);
        let (_, stats) = sinks
            .as_ref()?
            .stats
            .iter()
            .find(|(sink, _)| sink == name)?;
        Some((
            stats.records.load(Ordering::Relaxed),
            stats.bytes.load(Ordering::Relaxed),
        ))
    }

    /// Serializes `object` (JSON) and stores it with the thread's open
    /// chunk; see the module docs. Durable per `[log] durability`.
    pub fn insert<T: Ingest + ?Sized>(&self, object: &T) -> Result<(), InsertError> {
        self.with_local(|local| local.emit_object(object))
    }

    /// Stores `record` (bytes as they are, e.g. JSON an application
    /// already has) in `stream`.
    pub fn insert_bytes(&self, stream: &str, record: &[u8]) -> Result<(), InsertError> {
        self.with_local(|local| {
            local.emitter.emit(stream, record, now(), None)?;
            Ok(())
        })
    }

    /// [`Ingestor::insert`], then waits until the object is durable on
    /// local disk (it closes the thread's open chunk to get there).
    pub async fn insert_durable<T: Ingest + ?Sized>(&self, object: &T) -> Result<(), InsertError> {
        let emitter = self.with_local(|local| {
            local.emit_object(object)?;
            Ok(local.emitter.clone())
        })?;
        let end = off_runtime(&self.inner, move || {
            let mut emitter = emitter;
            Ok(emitter.wait_stored()?)
        })
        .await?;
        self.durable(end).await
    }

    /// Closes every thread's open chunk and waits until everything
    /// inserted before the call is durable on local disk. The waits run on
    /// the blocking pool; a thread's emitter stays locked while its chunks
    /// are stored, so that thread's next insert waits for them too.
    pub async fn flush(&self) -> Result<(), InsertError> {
        let inner = self.inner.clone();
        let end = off_runtime(&self.inner, move || inner.close_all()).await?;
        self.durable(end).await
    }

    /// Waits until the log is durable up to `end` (nothing to wait for
    /// without one), asking for a flush now instead of at the interval.
    async fn durable(&self, end: Option<u64>) -> Result<(), InsertError> {
        if let Some(end) = end {
            self.inner.log.request_flush();
            self.inner.log.durable(end).await?;
        }
        Ok(())
    }

    /// Waits until every object inserted before the call is acknowledged
    /// by every sink's backend (and so removed from the disk when its
    /// segment is passed). Returns `false` if `timeout` passed first: the
    /// objects stay on disk and go out when the backend is back.
    pub async fn wait_for_upload(&self, timeout: Duration) -> Result<bool, InsertError> {
        let deadline = Instant::now() + timeout;
        let inner = self.inner.clone();
        let Some(end) = off_runtime(&self.inner, move || inner.close_all()).await? else {
            return Ok(true);
        };
        self.inner.log.request_flush();
        const POLL: Duration = Duration::from_millis(5);
        if tokio::runtime::Handle::try_current().is_err() {
            // Another executor: poll on the ingestor's blocking pool.
            let inner = self.inner.clone();
            return off_runtime(&self.inner, move || loop {
                if inner.uploaded(end) {
                    return Ok(true);
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(POLL);
            })
            .await;
        }
        loop {
            if self.inner.uploaded(end) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stores every open chunk, lets the sinks deliver for up to
    /// `shutdown_timeout_ms`, stops them and closes the log. What the
    /// backend has not acknowledged stays on disk for the next open.
    pub async fn close(self) -> anyhow::Result<()> {
        let inner = self.inner.clone();
        drop(self);
        let patience = inner.config.shutdown_timeout();
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("shipper-ingest-close".into())
            .spawn(move || {
                let _ = done.send(inner.shut_down(patience));
            })
            .context("starting the closing thread")?;
        finished
            .await
            .map_err(|_| anyhow!("closing the ingestor panicked"))?
    }

    /// Runs `insert` with this thread's emitter, creating it on first use.
    fn with_local<R>(
        &self,
        insert: impl FnOnce(&mut Local) -> Result<R, InsertError>,
    ) -> Result<R, InsertError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(InsertError::Closed);
        }
        if inner.options.refuse_when_full && inner.log.is_full() {
            return Err(InsertError::Full);
        }
        LOCAL.with(|cell| {
            let mut locals = cell.borrow_mut();
            let index = match locals.iter().position(|l| l.ingestor == inner.id) {
                Some(index) => index,
                None => {
                    locals.retain(|local| local.owner.strong_count() > 0);
                    let emitter = inner.new_emitter()?;
                    locals.push(Local {
                        ingestor: inner.id,
                        owner: Arc::downgrade(inner),
                        emitter,
                    });
                    locals.len() - 1
                }
            };
            insert(&mut locals[index])
        })
    }
}

impl Local {
    /// Writes `object`'s JSON into this thread's open chunk and emits it.
    fn emit_object<T: Ingest + ?Sized>(&mut self, object: &T) -> Result<(), InsertError> {
        let emitter = &mut self.emitter;
        // Straight into the open chunk when no transform reads it first.
        emitter.emit_with(T::STREAM, now(), |out: &mut Vec<u8>| {
            #[cfg(debug_assertions)]
            let start = out.len();
            object.write_json(out)?;
            #[cfg(debug_assertions)]
            if T::DERIVED_JSON {
                check_json(object, &out[start..]);
            }
            Ok::<(), InsertError>(())
        })?;
        Ok(())
    }
}

/// Runs `wait` (for the compression threads, the log's writer, another
/// thread's insert holding its emitter) on tokio's blocking pool: the
/// caller's runtime thread runs its other tasks meanwhile, be it one of
/// many workers or a current-thread runtime's only one. Outside a tokio
/// runtime (another executor) it uses the ingestor's own.
async fn off_runtime<R: Send + 'static>(
    inner: &Inner,
    wait: impl FnOnce() -> Result<R, InsertError> + Send + 'static,
) -> Result<R, InsertError> {
    let handle = match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => match lock(&inner.runtime).as_ref() {
            Some(runtime) => runtime.handle().clone(),
            None => return Err(InsertError::Closed),
        },
    };
    match handle.spawn_blocking(wait).await {
        Ok(outcome) => outcome,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(InsertError::Closed),
    }
}

/// Panics if the derived `T::write_json` wrote something else than its
/// `Serialize` impl does (a type with a hand-written `Serialize`).
#[cfg(debug_assertions)]
fn check_json<T: Ingest + ?Sized>(object: &T, written: &[u8]) {
    let serde = serde_json::to_vec(object).unwrap_or_default();
    if serde != written {
        panic!(
            "{}",
            json::Mismatch {
                type_name: std::any::type_name::<T>(),
                derived: written,
                serde: &serde,
            }
        );
    }
}

impl Inner {
    /// Whether every sink's backend has acknowledged the log up to `end`.
    fn uploaded(&self, end: u64) -> bool {
        self.sink_names
            .iter()
            .all(|name| self.log.cursor(name).is_some_and(|at| at >= end))
    }

    /// A new thread's emitter, registered for flushes.
    fn new_emitter(&self) -> Result<Emitter, InsertError> {
        let mut emitter = build_emitter(&self.config, &self.log, &self.component, 0)
            .map_err(|e| InsertError::Log(shipper_core::Error::Config(format!("{e:#}"))))?;
        emitter.compress_in_background()?;
        lock(&self.emitters).push(emitter.clone());
        Ok(emitter)
    }

    /// Closes every emitter's open chunks; returns the end offset of what
    /// they stored.
    fn close_all(&self) -> Result<Option<u64>, InsertError> {
        let emitters = lock(&self.emitters).clone();
        // Every thread's chunks are stored, whatever one of them reports;
        // the first error is the one returned.
        let mut first = Ok(());
        for mut emitter in emitters {
            if let Err(error) = emitter.wait_stored() {
                first = first.and(Err(error));
            }
        }
        first?;
        Ok(Some(self.log.next_offset()).filter(|&end| end > 0))
    }

    /// [`Ingestor::close`] on a thread of its own (it blocks).
    fn shut_down(&self, patience: Duration) -> anyhow::Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut failed = Vec::new();
        // Storing the open chunks waits for room in the log: at its budget
        // with a backend that does not acknowledge, that is forever. Give
        // it `patience` (at least a second), then close the log, which
        // ends the wait: those records were never acknowledged as durable.
        std::thread::scope(|scope| {
            let (done, outcome) = std::sync::mpsc::channel();
            scope.spawn(move || {
                let _ = done.send(self.close_all());
            });
            match outcome.recv_timeout(patience.max(Duration::from_secs(1))) {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => failed.push(format!("storing the last chunks: {error}")),
                Err(_) => {
                    failed.push(
                        "the log stayed at its disk budget: the last open chunks were not stored"
                            .into(),
                    );
                    let _ = self.log.close();
                }
            }
        });
        if let Err(error) = self.log.flush() {
            failed.push(format!("flushing the log: {error}"));
        }
        let runtime = lock(&self.runtime).take();
        if let (Some(runtime), Some(sinks)) = (runtime, lock(&self.sinks).take()) {
            failed.extend(runtime.block_on(sinks.shutdown(patience)));
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        // The emitters go with their threads or here; either way their
        // chunks were stored above.
        lock(&self.emitters).clear();
        if let Err(error) = self.log.close() {
            failed.push(format!("closing the log: {error}"));
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(failed.join("; ")))
        }
    }
}

impl Drop for Inner {
    /// The last handle went without `close`: store what is open, flush,
    /// stop the sinks without waiting for the backend. Nothing durable is
    /// lost; it ships on the next open.
    fn drop(&mut self) {
        // On a thread of its own: the last handle may go inside an async
        // task, where blocking on the sinks' runtime is not allowed.
        let this = &*self;
        std::thread::scope(|scope| {
            let closing = scope.spawn(|| this.shut_down(Duration::ZERO));
            if let Ok(Err(error)) = closing.join() {
                tracing::warn!(%error, "ingestor dropped without close");
            }
        });
    }
}

/// An ingestor's settings in code; see [`Ingestor::builder`]. Its source
/// is named [`IngestorBuilder::SOURCE`]; sinks read it.
#[derive(Debug, Clone)]
pub struct IngestorBuilder {
    config: Config,
    options: IngestOptions,
    errors: Vec<String>,
}

impl IngestorBuilder {
    /// The name of the builder's `sdk` source: the component of every
    /// inserted record, the input of every sink.
    pub const SOURCE: &'static str = "app";

    /// The `[log]` section (segment size, budget, durability, ...).
    pub fn log(mut self, log: LogConfig) -> Self {
        self.config.log = log;
        self
    }

    /// How long `close` lets the sinks deliver (`shutdown_timeout_ms`).
    pub fn shutdown_timeout(mut self, patience: Duration) -> Self {
        self.config.shutdown_timeout_ms = u64::try_from(patience.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Return [`InsertError::Full`] instead of blocking at the budget.
    pub fn refuse_when_full(mut self, refuse: bool) -> Self {
        self.options.refuse_when_full = refuse;
        self
    }

    /// A sink from its typed config; its `inputs` should name
    /// [`IngestorBuilder::SOURCE`].
    pub fn sink(mut self, name: &str, sink: SinkConfig) -> Self {
        self.config.sinks.insert(name.to_owned(), sink);
        self
    }

    /// A sink from its table as in a config file (docs/config.md), checked
    /// as the config file's would be; `inputs` defaults to the builder's
    /// source.
    pub fn sink_toml(mut self, name: &str, table: &str) -> Self {
        let inputs = if table
            .lines()
            .any(|line| line.trim_start().starts_with("inputs"))
        {
            String::new()
        } else {
            format!("inputs = [\"{}\"]\n", Self::SOURCE)
        };
        let text = format!(
            "[sources.{source}]\ntype = \"sdk\"\n[sinks.{name}]\n{inputs}{table}\n",
            source = Self::SOURCE
        );
        match crate::config::parse(&text, &|variable| std::env::var(variable).ok()) {
            Ok(mut loaded) => match loaded.config.sinks.remove(name) {
                Some(sink) => {
                    self.config.sinks.insert(name.to_owned(), sink);
                }
                None => self.errors.push(format!("sink {name}: not a sink table")),
            },
            Err(invalid) => self.errors.push(format!("sink {name}: {invalid}")),
        }
        self
    }

    /// Opens the ingestor (see [`Ingestor::open_config`]).
    pub fn open(mut self) -> anyhow::Result<Ingestor> {
        if !self.errors.is_empty() {
            bail!("{}", self.errors.join("; "));
        }
        if self.config.sinks.is_empty() {
            bail!("an ingestor needs at least one sink");
        }
        self.config.sources.insert(
            Self::SOURCE.to_owned(),
            SourceConfig::builtin(SdkSourceConfig {}),
        );
        Ingestor::open_config(self.config, self.options)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An inserted record's time: the coarse clock, a few milliseconds at
/// worst behind the precise one and a quarter of its cost (a chunk keeps
/// only the earliest and latest of its records' times).
fn now() -> u64 {
    shipper_core::chunk::coarse_now_nanos()
}
