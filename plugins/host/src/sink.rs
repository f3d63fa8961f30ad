//! A sink plugin behind the engine's [`Sink`] trait.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use shipper_core::chunk::{decode_body, Decoder};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::StoredChunk;
use shipper_plugin::abi::{self, Slice};

use crate::instance::{CallError, Instance};
use crate::loader::{Kind, Plugin};
use crate::stats::PluginStats;

/// A dynamically loaded sink. The host decodes the stored chunks and hands
/// the plugin their records (borrowed byte slices with stream, timestamp
/// and offset); the plugin's `SHIPPER_OK` acknowledges the batch and the
/// runtime moves the cursor past it. Every call runs on tokio's blocking
/// pool, so a slow backend never stalls the runtime's workers.
///
/// A retryable failure offers the same batch again after a backoff; a
/// panic also replaces the instance (created and opened again) before the
/// batch is offered again; a fatal failure stops the sink.
///
/// A call into plugin code cannot be interrupted: a delivery the runtime
/// gave up on (a stop that timed out) runs on, and the sink's next
/// instance (a reload, a restart) must not open or deliver beside it. So
/// every call of a sink, from creating its instance to destroying it,
/// runs in that sink's [`Lane`] (one per data directory and sink name,
/// across instances): the next instance's first call waits for the last
/// one of the previous instance, whose writes its `open` then sees.
#[derive(Debug)]
pub struct DynamicSink {
    name: String,
    plugin: Arc<Plugin>,
    config: String,
    /// Between calls; taken while a call runs on the blocking pool.
    instance: Option<Instance>,
    /// Whether `instance` has been opened.
    opened: bool,
    context: Option<OwnedContext>,
    decoder: Decoder,
    stats: Arc<PluginStats>,
    /// Set by `open`, from the context.
    lane: Option<Arc<Lane>>,
}

/// One sink's calls into plugin code, one at a time, across the sink's
/// instances; see [`DynamicSink`].
#[derive(Debug, Default)]
struct Lane {
    busy: Mutex<bool>,
    free: Condvar,
}

/// A call's place in its [`Lane`]: the next call goes once it is dropped.
#[derive(Debug)]
struct InLane(Arc<Lane>);

impl Lane {
    /// The lane of sink `name` over `data_dir`, made on first use.
    fn of(data_dir: &str, name: &str) -> Arc<Lane> {
        static LANES: Mutex<BTreeMap<(String, String), Arc<Lane>>> = Mutex::new(BTreeMap::new());
        lock(&LANES)
            .entry((data_dir.to_owned(), name.to_owned()))
            .or_default()
            .clone()
    }

    /// Waits (blocking) until no other call is in the lane, and enters it.
    /// `sink` names the sink in the warning that a wait gets.
    fn enter(self: &Arc<Lane>, sink: &str) -> InLane {
        let mut busy = lock(&self.busy);
        if *busy {
            tracing::warn!(
                sink,
                "waiting for a call of the sink's previous instance to return first"
            );
        }
        while *busy {
            busy = self.free.wait(busy).unwrap_or_else(PoisonError::into_inner);
        }
        *busy = true;
        InLane(self.clone())
    }
}

impl Drop for InLane {
    fn drop(&mut self) {
        *lock(&self.0.busy) = false;
        self.0.free.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sink context, owned, to open new instances with.
#[derive(Debug, Clone)]
struct OwnedContext {
    name: String,
    producer_id: String,
    data_dir: String,
    committed: u64,
}

/// Decoded records of one delivery: all bytes in one buffer.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<BatchRecord>,
}

#[derive(Debug)]
struct BatchRecord {
    payload: Range<usize>,
    stream: Range<usize>,
    timestamp_ns: u64,
    offset: u64,
}

impl Batch {
    fn abi_records(&self) -> Vec<abi::Record> {
        self.records
            .iter()
            .map(|record| abi::Record {
                payload: Slice::of(&self.bytes[record.payload.clone()]),
                stream: Slice::of(&self.bytes[record.stream.clone()]),
                timestamp_ns: record.timestamp_ns,
                offset: record.offset,
            })
            .collect()
    }
}

fn plugin_error(error: CallError) -> ComponentError {
    match error {
        CallError::Retry(message) => ComponentError::Retryable(message),
        CallError::Fatal(message) => ComponentError::Fatal(message),
        CallError::Panicked(message) => ComponentError::Retryable(format!(
            "{message}; a new instance is offered the same records"
        )),
    }
}

impl DynamicSink {
    /// A sink named `name` running `plugin` (a sink) with `config` (a JSON
    /// object). The instance is created when the sink opens.
    pub fn new(name: &str, plugin: &Arc<Plugin>, config: &str) -> Result<Self, CallError> {
        if plugin.kind() != Kind::Sink {
            return Err(CallError::Fatal(format!(
                "{} is a {} plugin, not a sink",
                plugin.path().display(),
                plugin.kind()
            )));
        }
        Ok(DynamicSink {
            name: name.to_owned(),
            plugin: plugin.clone(),
            config: config.to_owned(),
            instance: None,
            opened: false,
            context: None,
            decoder: Decoder::default(),
            stats: Arc::default(),
            lane: None,
        })
    }

    /// Runs `call` with the instance on the blocking pool, creating and
    /// opening one first if there is none. The instance comes back unless
    /// the call panicked.
    async fn with_instance<R: Send + 'static>(
        &mut self,
        call: impl FnOnce(&mut Instance) -> Result<R, CallError> + Send + 'static,
    ) -> Result<R, ComponentError> {
        let instance = self.instance.take();
        // Cleared until the call comes back: an instance lost on the way
        // (the blocking task failed) must be opened again when recreated.
        let opened = std::mem::take(&mut self.opened);
        let plugin = self.plugin.clone();
        let config = self.config.clone();
        let context = self.context.clone();
        let lane = self.lane.clone();
        let name = self.name.clone();
        // What the call gives back; its fields drop in order, so a result
        // nobody waits for any more (the delivery was given up on) destroys
        // its instance before leaving the lane.
        type Outcome<R> = (Option<Instance>, bool, Result<R, CallError>, Option<InLane>);
        let joined = tokio::task::spawn_blocking(move || -> Outcome<R> {
            let in_lane = lane.as_ref().map(|lane| lane.enter(&name));
            let mut instance = match instance {
                Some(instance) => instance,
                None => match Instance::create(&plugin, &config) {
                    Ok(instance) => instance,
                    Err(error) => return (None, false, Err(error), in_lane),
                },
            };
            if !opened {
                if let Some(context) = &context {
                    let raw = abi::SinkContext {
                        name: Slice::of(context.name.as_bytes()),
                        producer_id: Slice::of(context.producer_id.as_bytes()),
                        data_dir: Slice::of(context.data_dir.as_bytes()),
                        committed: context.committed,
                    };
                    if let Err(error) = instance.sink_open(&raw) {
                        let keep = !matches!(error, CallError::Panicked(_));
                        return (keep.then_some(instance), false, Err(error), in_lane);
                    }
                }
            }
            let result = call(&mut instance);
            let keep = !matches!(result, Err(CallError::Panicked(_)));
            (keep.then_some(instance), true, result, in_lane)
        })
        .await;
        let (instance, opened, result, _in_lane) = joined.map_err(|e| {
            ComponentError::Fatal(format!("sink {}: the plugin call failed: {e}", self.name))
        })?;
        self.opened = instance.is_some() && opened;
        self.instance = instance;
        result.map_err(|error| {
            self.stats.failed(matches!(error, CallError::Panicked(_)));
            plugin_error(error)
        })
    }

    /// Takes the instance, if any, and returns what destroys it in the
    /// sink's lane (blocking: run it where blocking is allowed).
    fn destroyer(&mut self) -> Option<impl FnOnce() + Send + 'static> {
        let instance = self.instance.take()?;
        let lane = self.lane.clone();
        let name = self.name.clone();
        Some(move || {
            let _in_lane = lane.as_ref().map(|lane| lane.enter(&name));
            drop(instance);
        })
    }

    /// Decodes `chunks` into one buffer of records.
    fn decode(&mut self, chunks: &[StoredChunk]) -> Result<Batch, ComponentError> {
        let mut batch = Batch::default();
        for chunk in chunks {
            let view = chunk.view();
            let body = decode_body(&view, &mut self.decoder)
                .map_err(|e| ComponentError::undecodable(chunk.first_offset(), e))?;
            // The plugin is promised UTF-8 stream names (the SDK does not
            // check them again); a damaged stored name is the chunk's fault.
            if std::str::from_utf8(view.stream()).is_err() {
                return Err(ComponentError::undecodable(
                    chunk.first_offset(),
                    "its stream name is not UTF-8",
                ));
            }
            let stream_start = batch.bytes.len();
            batch.bytes.extend_from_slice(view.stream());
            let stream = stream_start..batch.bytes.len();
            for (offset, record) in (chunk.first_offset()..).zip(body.records()) {
                let record =
                    record.map_err(|e| ComponentError::undecodable(chunk.first_offset(), e))?;
                let start = batch.bytes.len();
                batch.bytes.extend_from_slice(record);
                batch.records.push(BatchRecord {
                    payload: start..batch.bytes.len(),
                    stream: stream.clone(),
                    timestamp_ns: view.max_ts(),
                    offset,
                });
            }
        }
        Ok(batch)
    }
}

impl Drop for DynamicSink {
    /// An instance still here (the sink failed for good, or its task was
    /// aborted between calls) is destroyed in the lane too, on the blocking
    /// pool where there is one (`destroy` may join threads).
    fn drop(&mut self) {
        let Some(destroy) = self.destroyer() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(destroy)),
            Err(_) => destroy(),
        }
    }
}

#[async_trait]
impl Sink for DynamicSink {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.stats.metrics(false)
    }

    async fn open(&mut self, cx: &SinkContext) -> Result<(), ComponentError> {
        self.decoder = cx.decoder();
        self.lane = Some(Lane::of(&cx.data_dir.to_string_lossy(), &cx.name));
        self.context = Some(OwnedContext {
            name: cx.name.clone(),
            producer_id: cx.producer_id.to_string(),
            data_dir: cx.data_dir.to_string_lossy().into_owned(),
            committed: cx.committed,
        });
        self.opened = false;
        self.with_instance(|_| Ok(())).await
    }

    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        let batch = self.decode(chunks)?;
        if batch.records.is_empty() {
            return Ok(());
        }
        self.with_instance(move |instance| instance.sink_deliver(&batch.abi_records()))
            .await
    }

    async fn close(&mut self) -> Result<(), ComponentError> {
        if self.instance.is_none() {
            return Ok(());
        }
        let result = self.with_instance(Instance::sink_close).await;
        // Destroyed on the blocking pool too: a plugin may join threads.
        if let Some(destroy) = self.destroyer() {
            let _ = tokio::task::spawn_blocking(destroy).await;
        }
        result
    }
}
