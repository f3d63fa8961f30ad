//! What [`export_plugin!`](crate::export_plugin) expands to: the
//! `extern "C"` wrappers around a plugin type, each a failure boundary
//! (errors become a status and a message, panics are caught), and the
//! descriptors that point at them.

use std::any::Any;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::{self, Descriptor, ErrorOut, Slice};
use crate::{
    Action, Error, Record, SinkContext, SinkPlugin, SourceHost, SourcePlugin, TransformPlugin,
};

/// Collects the message a call reports through an [`ErrorOut`]: the host
/// uses one per call into a plugin, the SDK one per call into the host.
#[derive(Debug, Default)]
pub struct ErrorSlot {
    message: Option<String>,
}

impl ErrorSlot {
    /// The [`ErrorOut`] to pass with a call; it points at this slot, which
    /// must stay where it is until the call returns.
    pub fn out(&mut self) -> ErrorOut {
        ErrorOut {
            host: (self as *mut ErrorSlot).cast(),
            set: error_slot_set,
        }
    }

    /// [`ErrorSlot::out`] for a slot behind a raw pointer, without
    /// reborrowing it: for a slot the caller keeps reaching through that
    /// same pointer (a reborrow would invalidate the one `ErrorOut` holds).
    /// `slot` must stay valid while the `ErrorOut` is used.
    pub fn out_at(slot: *mut ErrorSlot) -> ErrorOut {
        ErrorOut {
            host: slot.cast(),
            set: error_slot_set,
        }
    }

    /// The message reported, if any.
    pub fn take(&mut self) -> Option<String> {
        self.message.take()
    }

    /// The outcome of a call that returned `status`.
    pub fn into_result(mut self, status: i32) -> Result<(), Error> {
        let mut message = || {
            self.take()
                .unwrap_or_else(|| format!("failed with status {status} and no message"))
        };
        match status {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_RETRY => Err(Error::Retryable(message())),
            _ => Err(Error::Fatal(message())),
        }
    }
}

unsafe extern "C" fn error_slot_set(host: *mut c_void, message: *const u8, len: usize) {
    if host.is_null() {
        return;
    }
    // SAFETY: `host` is the `ErrorSlot` that `ErrorSlot::out` pointed it
    // at, alive for the call; the caller promises `len` bytes at `message`.
    let (slot, bytes) = unsafe {
        (
            &mut *host.cast::<ErrorSlot>(),
            Slice { ptr: message, len }.as_bytes(),
        )
    };
    slot.message = Some(String::from_utf8_lossy(bytes).into_owned());
}

/// Reports `message` through `error` (if the host gave one).
///
/// # Safety
///
/// `error` is null or points to a live [`ErrorOut`].
pub unsafe fn report(error: *const ErrorOut, message: &str) {
    // SAFETY: the caller promises `error` is null or valid.
    if let Some(error) = unsafe { error.as_ref() } {
        // SAFETY: the host's `set` copies `len` bytes from `message`.
        unsafe { (error.set)(error.host, message.as_ptr(), message.len()) };
    }
}

/// A panic's message.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("the plugin panicked: {text}")
}

/// Runs `call`, turning its error or panic into a status and a message.
///
/// # Safety
///
/// `error` is null or points to a live [`ErrorOut`].
#[inline]
unsafe fn boundary(error: *const ErrorOut, call: impl FnOnce() -> Result<(), Error>) -> i32 {
    let (status, message) = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(())) => return abi::STATUS_OK,
        Ok(Err(Error::Retryable(message))) => (abi::STATUS_RETRY, message),
        Ok(Err(Error::Fatal(message))) => (abi::STATUS_FATAL, message),
        Err(payload) => (abi::STATUS_PANICKED, panic_message(payload.as_ref())),
    };
    // SAFETY: passed on from the caller.
    unsafe { report(error, &message) };
    status
}

/// A record as the SDK shows it.
///
/// # Safety
///
/// `record`'s slices are valid for `'a` (the host's promise for a call),
/// and its stream is UTF-8 (the ABI's promise: the host's stream names are
/// Rust strings).
#[inline]
unsafe fn record<'a>(record: &abi::Record) -> Record<'a> {
    // SAFETY: passed on from the caller.
    let (payload, stream) = unsafe { (record.payload.as_bytes(), record.stream.as_bytes()) };
    Record {
        payload,
        // SAFETY: the host passes UTF-8 stream names (see above); checking
        // them again here would cost every record of every transform.
        stream: unsafe { std::str::from_utf8_unchecked(stream) },
        timestamp_ns: record.timestamp_ns,
        offset: record.offset,
    }
}

/// `s` NUL-terminated, for the descriptor's name and version.
///
/// # Panics
///
/// At compile time, if `N` is not `s.len() + 1` or `s` holds a NUL.
pub const fn nul_terminated<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    assert!(bytes.len() + 1 == N, "N is the length plus the NUL");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] != 0, "a plugin's name and version hold no NUL");
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Creates an instance of `I` from the config and `make`.
///
/// # Safety
///
/// `config` is valid for the call; `error` is null or live.
unsafe fn create<I>(
    config: Slice,
    error: *const ErrorOut,
    make: impl FnOnce(&str) -> Result<I, Error>,
) -> *mut c_void {
    let mut instance = None;
    // SAFETY: the host passes a config valid for the call.
    let bytes = unsafe { config.as_bytes() };
    // SAFETY: `error` is passed on from the caller.
    let status = unsafe {
        boundary(error, || {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| Error::fatal("the configuration is not UTF-8"))?;
            instance = Some(make(text)?);
            Ok(())
        })
    };
    match instance {
        Some(instance) if status == abi::STATUS_OK => Box::into_raw(Box::new(instance)).cast(),
        _ => std::ptr::null_mut(),
    }
}

/// Frees an instance made by `create::<I>`.
///
/// # Safety
///
/// `instance` came from `create::<I>` and is not used again.
unsafe extern "C" fn destroy<I>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the caller hands over the box `create` leaked.
    let instance = unsafe { Box::from_raw(instance.cast::<I>()) };
    // A panicking Drop must not unwind into the host; the instance is gone
    // either way.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
}

/// A transform's instance: the plugin and its output buffer, which backs
/// the replacement slice until the next call.
struct TransformInstance<T> {
    plugin: T,
    out: Vec<u8>,
}

unsafe extern "C" fn transform_create<T: TransformPlugin>(
    config: Slice,
    error: *const ErrorOut,
) -> *mut c_void {
    // SAFETY: the host's promises for `create` are `create`'s.
    unsafe {
        create(config, error, |text| {
            Ok(TransformInstance {
                plugin: T::new(text)?,
                out: Vec::new(),
            })
        })
    }
}

unsafe extern "C" fn transform_apply<T: TransformPlugin>(
    instance: *mut c_void,
    input: *const abi::Record,
    action: *mut u32,
    replacement: *mut Slice,
    error: *const ErrorOut,
) -> i32 {
    // SAFETY: the host passes its instance (no other call on it runs), a
    // live record, and out-pointers valid for the call.
    unsafe {
        boundary(error, || {
            let instance = &mut *instance.cast::<TransformInstance<T>>();
            let input = record(&*input);
            instance.out.clear();
            let decided = instance.plugin.transform(&input, &mut instance.out)?;
            *action = match decided {
                Action::Keep => abi::ACTION_KEEP,
                Action::Drop => abi::ACTION_DROP,
                Action::Replace => {
                    *replacement = Slice::of(&instance.out);
                    abi::ACTION_REPLACE
                }
            };
            Ok(())
        })
    }
}

/// The descriptor of transform `T`; `name` and `version` are static
/// NUL-terminated strings.
pub const fn transform_descriptor<T: TransformPlugin>(
    name: *const c_char,
    version: *const c_char,
) -> Descriptor {
    Descriptor {
        transform: Some(transform_apply::<T>),
        ..empty_descriptor(
            abi::KIND_TRANSFORM,
            name,
            version,
            transform_create::<T>,
            destroy::<TransformInstance<T>>,
        )
    }
}

const fn empty_descriptor(
    kind: u32,
    name: *const c_char,
    version: *const c_char,
    create: unsafe extern "C" fn(Slice, *const ErrorOut) -> *mut c_void,
    destroy: unsafe extern "C" fn(*mut c_void),
) -> Descriptor {
    Descriptor {
        abi_version: abi::ABI_VERSION,
        size: std::mem::size_of::<Descriptor>() as u32,
        kind,
        name,
        version,
        create: Some(create),
        destroy: Some(destroy),
        transform: None,
        sink_open: None,
        sink_deliver: None,
        sink_close: None,
        source_run: None,
    }
}

unsafe extern "C" fn sink_create<T: SinkPlugin>(
    config: Slice,
    error: *const ErrorOut,
) -> *mut c_void {
    // SAFETY: the host's promises for `create` are `create`'s.
    unsafe { create(config, error, T::new) }
}

unsafe extern "C" fn sink_open<T: SinkPlugin>(
    instance: *mut c_void,
    context: *const abi::SinkContext,
    error: *const ErrorOut,
) -> i32 {
    // SAFETY: the host passes its instance and a context valid for the call.
    unsafe {
        boundary(error, || {
            let plugin = &mut *instance.cast::<T>();
            let context = &*context;
            let text = |slice: Slice| String::from_utf8_lossy(slice.as_bytes()).into_owned();
            plugin.open(&SinkContext {
                name: text(context.name),
                producer_id: text(context.producer_id),
                data_dir: text(context.data_dir).into(),
                committed: context.committed,
            })
        })
    }
}

unsafe extern "C" fn sink_deliver<T: SinkPlugin>(
    instance: *mut c_void,
    records: *const abi::Record,
    count: usize,
    error: *const ErrorOut,
) -> i32 {
    // SAFETY: the host passes its instance and `count` records valid for
    // the call.
    unsafe {
        boundary(error, || {
            let plugin = &mut *instance.cast::<T>();
            let raw: &[abi::Record] = if count == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(records, count)
            };
            let records: Vec<Record<'_>> = raw.iter().map(|r| record(r)).collect();
            plugin.deliver(&records)
        })
    }
}

unsafe extern "C" fn sink_close<T: SinkPlugin>(
    instance: *mut c_void,
    error: *const ErrorOut,
) -> i32 {
    // SAFETY: the host passes its instance.
    unsafe { boundary(error, || (*instance.cast::<T>()).close()) }
}

/// The descriptor of sink `T`.
pub const fn sink_descriptor<T: SinkPlugin>(
    name: *const c_char,
    version: *const c_char,
) -> Descriptor {
    Descriptor {
        sink_open: Some(sink_open::<T>),
        sink_deliver: Some(sink_deliver::<T>),
        sink_close: Some(sink_close::<T>),
        ..empty_descriptor(
            abi::KIND_SINK,
            name,
            version,
            sink_create::<T>,
            destroy::<T>,
        )
    }
}

unsafe extern "C" fn source_create<T: SourcePlugin>(
    config: Slice,
    error: *const ErrorOut,
) -> *mut c_void {
    // SAFETY: the host's promises for `create` are `create`'s.
    unsafe { create(config, error, T::new) }
}

unsafe extern "C" fn source_run<T: SourcePlugin>(
    instance: *mut c_void,
    host: *const abi::SourceHost,
    error: *const ErrorOut,
) -> i32 {
    // SAFETY: the host passes its instance and a host table valid for the call.
    unsafe {
        boundary(error, || {
            let plugin = &mut *instance.cast::<T>();
            plugin.run(&SourceHost { raw: &*host })
        })
    }
}

/// The descriptor of source `T`.
pub const fn source_descriptor<T: SourcePlugin>(
    name: *const c_char,
    version: *const c_char,
) -> Descriptor {
    Descriptor {
        source_run: Some(source_run::<T>),
        ..empty_descriptor(
            abi::KIND_SOURCE,
            name,
            version,
            source_create::<T>,
            destroy::<T>,
        )
    }
}
