//! One plugin instance and every call into it. The ABI's rules are kept
//! here: inputs are borrowed for the call, a transform's replacement is
//! read before the next call on the instance, calls never overlap
//! (`&mut self`), and `destroy` runs once, last (Drop).

#![allow(unsafe_code)] // See the crate docs: this module is a C boundary.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

use shipper_plugin::abi::{self, Record, Slice};
use shipper_plugin::ErrorSlot;

use crate::loader::Plugin;

/// Why a call into a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin asks to be called again later (`SHIPPER_RETRY`).
    #[error("{0}")]
    Retry(String),
    /// The plugin gives up (`SHIPPER_FATAL`, or a status it should not return).
    #[error("{0}")]
    Fatal(String),
    /// The plugin panicked (`SHIPPER_PANICKED`): the instance must not be
    /// used again.
    #[error("{0}")]
    Panicked(String),
}

/// Whether `plugin` takes `config` (a JSON object): creates an instance
/// from it and destroys it, as the component would at its start. The ABI
/// keeps `create` to parsing its configuration, so this runs no backend
/// I/O; `shipper validate` calls it for every plugin a config names.
pub fn check_config(plugin: &Arc<Plugin>, config: &str) -> Result<(), CallError> {
    Instance::create(plugin, config).map(drop)
}

/// What a transform decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision<'a> {
    Keep,
    Drop,
    /// The plugin's bytes, valid until the next call on the instance.
    Replace(&'a [u8]),
}

/// A live instance of a loaded plugin.
#[derive(Debug)]
pub(crate) struct Instance {
    plugin: Arc<Plugin>,
    raw: NonNull<c_void>,
    /// Where every call on this instance reports its error: boxed, so the
    /// `ErrorOut` pointing at it stays valid wherever the instance moves,
    /// and made once instead of per call (a transform is called per record).
    slot: NonNull<ErrorSlot>,
    out: abi::ErrorOut,
}

// SAFETY: the ABI lets an instance be called from any thread as long as
// calls never overlap; every call takes `&mut self`, so they cannot. `slot`
// (and `out`, which points at it) is this instance's alone.
unsafe impl Send for Instance {}

/// The error of a call that returned `status` (not OK), with what it reported.
#[cold]
fn failure(plugin: &Plugin, status: i32, slot: &mut ErrorSlot) -> CallError {
    let message = slot
        .take()
        .unwrap_or_else(|| format!("failed (status {status}) without a message"));
    match status {
        abi::STATUS_RETRY => CallError::Retry(message),
        abi::STATUS_FATAL => CallError::Fatal(message),
        abi::STATUS_PANICKED => CallError::Panicked(message),
        other => CallError::Fatal(format!(
            "plugin {} returned unknown status {other}: {message}",
            plugin.name()
        )),
    }
}

impl Instance {
    /// Creates an instance from its configuration (a JSON object).
    pub(crate) fn create(plugin: &Arc<Plugin>, config: &str) -> Result<Instance, CallError> {
        let create = plugin.descriptor().create.expect("checked at load");
        let mut slot = ErrorSlot::default();
        let out = slot.out();
        // SAFETY: the config is borrowed for the call; `out` points at
        // `slot`, which outlives it.
        let raw = unsafe { create(Slice::of(config.as_bytes()), &out) };
        match NonNull::new(raw) {
            Some(raw) => {
                // Reached only through this pointer (never reborrowed from
                // the Box), which `out` holds too; freed in Drop.
                let slot = NonNull::from(Box::leak(Box::new(ErrorSlot::default())));
                let out = ErrorSlot::out_at(slot.as_ptr());
                Ok(Instance {
                    plugin: plugin.clone(),
                    raw,
                    slot,
                    out,
                })
            }
            None => Err(CallError::Fatal(slot.take().unwrap_or_else(|| {
                format!("plugin {} could not create an instance", plugin.name())
            }))),
        }
    }

    /// Runs one call, which reports its error through the instance's slot.
    #[inline]
    fn call(
        &mut self,
        function: impl FnOnce(*mut c_void, *const abi::ErrorOut) -> i32,
    ) -> Result<(), CallError> {
        let status = function(self.raw.as_ptr(), &self.out);
        if status == abi::STATUS_OK {
            // A message set by a call that then succeeded must not be
            // blamed on a later failure.
            // SAFETY: the slot lives until Drop; no call is running, so
            // nothing else writes it.
            drop(unsafe { (*self.slot.as_ptr()).take() });
            return Ok(());
        }
        // SAFETY: as above.
        Err(failure(&self.plugin, status, unsafe {
            &mut *self.slot.as_ptr()
        }))
    }

    /// Asks a transform about one record.
    #[inline]
    pub(crate) fn transform(&mut self, record: &Record) -> Result<Decision<'_>, CallError> {
        let transform = self.plugin.descriptor().transform.expect("checked at load");
        let mut action = abi::ACTION_KEEP;
        let mut replacement = Slice::EMPTY;
        self.call(|instance, error| {
            // SAFETY: our instance, a record borrowed for the call, and
            // out-pointers to locals.
            unsafe { transform(instance, record, &mut action, &mut replacement, error) }
        })?;
        match action {
            abi::ACTION_KEEP => Ok(Decision::Keep),
            abi::ACTION_DROP => Ok(Decision::Drop),
            // SAFETY: the ABI keeps the replacement valid until the next
            // call on this instance, which `&mut self` (borrowed by the
            // returned slice) rules out meanwhile.
            abi::ACTION_REPLACE => Ok(Decision::Replace(unsafe { replacement.as_bytes() })),
            other => Err(CallError::Fatal(format!(
                "plugin {} returned unknown action {other}",
                self.plugin.name()
            ))),
        }
    }

    /// Opens a sink.
    pub(crate) fn sink_open(&mut self, context: &abi::SinkContext) -> Result<(), CallError> {
        let open = self.plugin.descriptor().sink_open.expect("checked at load");
        self.call(|instance, error| {
            // SAFETY: our instance and a context borrowed for the call.
            unsafe { open(instance, context, error) }
        })
    }

    /// Delivers records to a sink; `Ok` is the acknowledgement.
    pub(crate) fn sink_deliver(&mut self, records: &[Record]) -> Result<(), CallError> {
        let deliver = self
            .plugin
            .descriptor()
            .sink_deliver
            .expect("checked at load");
        self.call(|instance, error| {
            // SAFETY: our instance and records borrowed for the call.
            unsafe { deliver(instance, records.as_ptr(), records.len(), error) }
        })
    }

    /// Closes a sink.
    pub(crate) fn sink_close(&mut self) -> Result<(), CallError> {
        let close = self
            .plugin
            .descriptor()
            .sink_close
            .expect("checked at load");
        self.call(|instance, error| {
            // SAFETY: our instance.
            unsafe { close(instance, error) }
        })
    }

    /// Runs a source until it returns.
    pub(crate) fn source_run(&mut self, host: &abi::SourceHost) -> Result<(), CallError> {
        let run = self
            .plugin
            .descriptor()
            .source_run
            .expect("checked at load");
        self.call(|instance, error| {
            // SAFETY: our instance and a host table that outlives the call.
            unsafe { run(instance, host, error) }
        })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let destroy = self.plugin.descriptor().destroy.expect("checked at load");
        // SAFETY: the instance came from this plugin's `create`, and this
        // is its last use.
        unsafe { destroy(self.raw.as_ptr()) };
        // SAFETY: leaked from a Box in `create`; the plugin is gone, so no
        // one reports through `out` any more.
        drop(unsafe { Box::from_raw(self.slot.as_ptr()) });
    }
}
