//! A source plugin behind the engine's [`Source`] trait, and the host
//! callbacks it emits through.

#![allow(unsafe_code)] // See the crate docs: this module is a C boundary.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shipper_core::component::{ComponentError, Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_plugin::abi::{self, ErrorOut, Slice};
use shipper_plugin::export::report;

use crate::instance::{CallError, Instance};
use crate::loader::{Kind, Plugin};
use crate::stats::PluginStats;

/// A dynamically loaded source. Its `run` is the plugin's: it blocks, so
/// it runs where blocking is allowed (`block_in_place`, and the runtime
/// starts plugin sources off its async workers). The plugin emits through
/// host callbacks into the source's emitter; when it returns, the host
/// makes what it emitted durable.
#[derive(Debug)]
pub struct DynamicSource {
    name: String,
    plugin: Arc<Plugin>,
    config: String,
    stats: Arc<PluginStats>,
}

impl DynamicSource {
    /// A source named `name` running `plugin` (a source) with `config`. The
    /// instance is created when it runs.
    pub fn new(name: &str, plugin: &Arc<Plugin>, config: &str) -> Result<Self, CallError> {
        if plugin.kind() != Kind::Source {
            return Err(CallError::Fatal(format!(
                "{} is a {} plugin, not a source",
                plugin.path().display(),
                plugin.kind()
            )));
        }
        Ok(DynamicSource {
            name: name.to_owned(),
            plugin: plugin.clone(),
            config: config.to_owned(),
            stats: Arc::default(),
        })
    }

    fn run_blocking(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        let mut instance = Instance::create(&self.plugin, &self.config)
            .map_err(|e| ComponentError::Fatal(format!("source {}: {e}", self.name)))?;
        let shutdown = cx.shutdown.clone();
        let emitter = Mutex::new(&mut cx.emitter);
        // The plugin may block in its own code for as long as it likes:
        // the engine closes the chunks it emitted at their linger time.
        let (ran, stopped) = {
            let mut state = HostState {
                emitter: &emitter,
                shutdown: &shutdown,
                refused_for_stop: false,
            };
            let host = abi::SourceHost {
                host: (&mut state as *mut HostState<'_, '_>).cast(),
                emit: host_emit,
                wait_durable: host_wait_durable,
                wait_stop: host_wait_stop,
            };
            let ran = instance.source_run(&host);
            (ran, state.refused_for_stop)
        };
        drop(instance);
        let mut ran = ran;
        if stopped && !matches!(ran, Err(CallError::Panicked(_))) {
            // The source returned the host's own "stopping" refusal (or
            // its own error after it): an orderly stop.
            ran = Ok(());
        }
        let durable = cx.emitter.wait_durable();
        if let Err(error) = &ran {
            self.stats.failed(matches!(error, CallError::Panicked(_)));
        }
        ran.map_err(|error| match error {
            CallError::Retry(message) => ComponentError::Retryable(message),
            CallError::Fatal(message) | CallError::Panicked(message) => {
                ComponentError::Fatal(message)
            }
        })?;
        durable?;
        Ok(())
    }
}

#[async_trait]
impl Source for DynamicSource {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.stats.metrics(false)
    }

    /// Blocks: call it on a multi-thread runtime or a blocking thread
    /// (`block_in_place` panics on a current-thread runtime); the runtime
    /// runs plugin sources on the blocking pool.
    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        tokio::task::block_in_place(|| self.run_blocking(cx))
    }
}

/// What the host callbacks reach through `SourceHost::host`.
struct HostState<'e, 'a> {
    /// Shared with the linger thread.
    emitter: &'e Mutex<&'a mut Emitter>,
    shutdown: &'e Shutdown,
    /// `emit` refused a record because the source was asked to stop.
    refused_for_stop: bool,
}

impl<'e, 'a> HostState<'e, 'a> {
    fn emitter(&self) -> std::sync::MutexGuard<'e, &'a mut Emitter> {
        self.emitter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs a callback body; a panic in the host (a broken invariant) becomes
/// a fatal status instead of unwinding into the plugin.
///
/// # Safety
///
/// `host` is the `HostState` of the running source, used by no one else
/// during the call; `error` is null or live.
unsafe fn callback(
    host: *mut c_void,
    error: *const ErrorOut,
    body: impl FnOnce(&mut HostState<'_, '_>) -> Result<(), String>,
) -> i32 {
    // SAFETY: the caller's promise; the plugin calls back only from the
    // thread inside `source_run`, while `run_blocking` waits for it.
    let state = unsafe { &mut *host.cast::<HostState<'_, '_>>() };
    let message = match catch_unwind(AssertUnwindSafe(|| body(state))) {
        Ok(Ok(())) => return abi::STATUS_OK,
        Ok(Err(message)) => message,
        Err(_) => "the host panicked in a callback".to_owned(),
    };
    // SAFETY: passed on from the caller.
    unsafe { report(error, &message) };
    abi::STATUS_FATAL
}

unsafe extern "C" fn host_emit(
    host: *mut c_void,
    stream: Slice,
    payload: Slice,
    timestamp_ns: u64,
    error: *const ErrorOut,
) -> i32 {
    // SAFETY: the plugin passes our host pointer and slices valid for the
    // call (the ABI's rule for `emit`).
    unsafe {
        callback(host, error, |state| {
            if state.shutdown.is_triggered() {
                // A source that only emits still stops: its next emit fails.
                state.refused_for_stop = true;
                return Err("the host is stopping: return from source_run".to_owned());
            }
            let stream = std::str::from_utf8(stream.as_bytes())
                .map_err(|_| "the stream name is not UTF-8".to_owned())?;
            state
                .emitter()
                .emit(stream, payload.as_bytes(), timestamp_ns, None)
                .map_err(|e| e.to_string())
        })
    }
}

unsafe extern "C" fn host_wait_durable(host: *mut c_void, error: *const ErrorOut) -> i32 {
    // SAFETY: the plugin passes our host pointer.
    unsafe {
        callback(host, error, |state| {
            state
                .emitter()
                .wait_durable()
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

unsafe extern "C" fn host_wait_stop(host: *mut c_void, timeout_ms: u64) -> i32 {
    let mut stopping = false;
    // SAFETY: the plugin passes our host pointer; there is no error out.
    let status = unsafe {
        callback(host, std::ptr::null(), |state| {
            // A very long timeout (u64::MAX: "until stopped") is waited a
            // day at a time; the linger thread closes chunks meanwhile.
            let timeout = Duration::from_millis(timeout_ms).min(Duration::from_secs(86_400));
            stopping = if timeout.is_zero() {
                state.shutdown.is_triggered()
            } else {
                state.shutdown.wait_timeout(timeout)
            };
            Ok(())
        })
    };
    i32::from(stopping || status != abi::STATUS_OK)
}
