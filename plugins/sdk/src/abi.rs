//! The C ABI between shipper and a plugin library, version [`ABI_VERSION`].
//! `include/shipper_plugin.h` declares the same types for C; the two must
//! stay byte-for-byte identical (a test in the host crate checks sizes and
//! offsets against the header). `docs/plugins.md` is the prose version.
//!
//! Rules both sides keep:
//!
//! * The library exports one symbol, [`ENTRY_SYMBOL`], a function that
//!   returns a pointer to a [`Descriptor`] that lives as long as the
//!   library. The host reads `abi_version` first and nothing else unless it
//!   equals its own.
//! * Each side frees only what it allocated. Bytes the host passes (config,
//!   records, context) are borrowed for the duration of the call. Bytes a
//!   plugin passes back (a replacement record) stay the plugin's, valid
//!   until its next call on the same instance or its `destroy`. Error
//!   messages are handed to the host's [`ErrorOut::set`], which copies them.
//! * Calls on one instance never overlap; they may come from different
//!   threads over the instance's life. Different instances may be used
//!   concurrently.
//! * Nothing unwinds across the boundary: a Rust plugin catches its panics
//!   (the SDK's wrappers do) and returns [`STATUS_PANICKED`].

use std::ffi::{c_char, c_void};

/// The ABI version this crate speaks. The host refuses any other.
pub const ABI_VERSION: u32 = 1;

/// The name of the exported entry function, NUL-terminated:
/// `const shipper_plugin_descriptor *shipper_plugin_entry(void)`.
pub const ENTRY_SYMBOL: &[u8] = b"shipper_plugin_entry\0";

/// The entry function's type.
pub type EntryFn = unsafe extern "C" fn() -> *const Descriptor;

/// Success: for a sink's `deliver`, the acknowledgement.
pub const STATUS_OK: i32 = 0;
/// A failure worth retrying later (a backend down). A sink is offered the
/// same records again after a backoff.
pub const STATUS_RETRY: i32 = 1;
/// A failure that will not get better: a sink or source stops; a
/// transform's record is dropped and counted.
pub const STATUS_FATAL: i32 = 2;
/// The plugin panicked (or hit the C equivalent of a broken invariant):
/// for a sink or transform the host destroys the instance, creates a new
/// one and treats the call as failed (a sink's batch is retried; a
/// transform's record is dropped and counted); a source ends with the
/// error.
pub const STATUS_PANICKED: i32 = 3;

/// A transform keeps the record as it is.
pub const ACTION_KEEP: u32 = 0;
/// A transform drops the record.
pub const ACTION_DROP: u32 = 1;
/// A transform replaces the record by the bytes it put in `replacement`.
pub const ACTION_REPLACE: u32 = 2;

/// The plugin reads input and emits records.
pub const KIND_SOURCE: u32 = 1;
/// The plugin rewrites or drops single records on the producing side.
pub const KIND_TRANSFORM: u32 = 2;
/// The plugin delivers records to a backend and acknowledges them.
pub const KIND_SINK: u32 = 3;

/// Borrowed bytes. `ptr` may be null when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    pub ptr: *const u8,
    pub len: usize,
}

impl Slice {
    /// A slice borrowing `bytes`.
    pub fn of(bytes: &[u8]) -> Slice {
        Slice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// No bytes.
    pub const EMPTY: Slice = Slice {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// The bytes.
    ///
    /// # Safety
    ///
    /// `ptr` is null with `len` 0, or points to `len` initialized bytes
    /// that stay valid and unchanged for `'a`.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller promises `ptr` points to `len` live bytes for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// One record crossing the boundary.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The record's bytes (usually one JSON object, without a newline).
    pub payload: Slice,
    /// Its stream (collection) name: valid UTF-8, which the host
    /// guarantees (the SDK relies on it without checking).
    pub stream: Slice,
    /// Unix nanoseconds. For a transform, when the record was emitted; for
    /// a sink, the newest timestamp of the stored chunk the record is in
    /// (the log keeps timestamps per chunk).
    pub timestamp_ns: u64,
    /// For a sink, the record's offset in the log: with the producer id, a
    /// key no other record has (for de-duplication). 0 for a transform.
    pub offset: u64,
}

/// Where a plugin reports the message of a failed call: it calls
/// `set(host, message, len)` (UTF-8; the host copies it) and returns a
/// non-zero status.
#[repr(C)]
#[derive(Debug)]
pub struct ErrorOut {
    pub host: *mut c_void,
    pub set: unsafe extern "C" fn(host: *mut c_void, message: *const u8, len: usize),
}

/// What the host tells a sink before its first delivery.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SinkContext {
    /// The sink's name in the config.
    pub name: Slice,
    /// The identity of the log the sink reads (text): with a record's
    /// offset, a key unique across producers.
    pub producer_id: Slice,
    /// The data directory; a sink may keep small state under `sinks/` there.
    pub data_dir: Slice,
    /// Every record below this offset was acknowledged before: records
    /// offered again from here on may have reached the backend already if
    /// the process died between the backend's write and the acknowledgement.
    pub committed: u64,
}

/// The host's side of a running source: how it emits records and learns
/// that it should stop. The functions may be called only from the thread
/// that is inside `source_run`, and only during that call.
#[repr(C)]
#[derive(Debug)]
pub struct SourceHost {
    pub host: *mut c_void,
    /// Stores one record (it is copied); blocks while the log is at its
    /// disk budget. Non-zero: the host is stopping or the log failed;
    /// the source should return.
    pub emit: unsafe extern "C" fn(
        host: *mut c_void,
        stream: Slice,
        payload: Slice,
        timestamp_ns: u64,
        error: *const ErrorOut,
    ) -> i32,
    /// Blocks until every record emitted so far is durable on local disk:
    /// the moment a source may acknowledge its input.
    pub wait_durable: unsafe extern "C" fn(host: *mut c_void, error: *const ErrorOut) -> i32,
    /// Sleeps until the host asks the source to stop or `timeout_ms`
    /// passes; returns 1 if the source should stop (0 otherwise). A
    /// `timeout_ms` of 0 only asks.
    pub wait_stop: unsafe extern "C" fn(host: *mut c_void, timeout_ms: u64) -> i32,
}

/// What the entry function returns.
#[repr(C)]
#[derive(Debug)]
pub struct Descriptor {
    /// [`ABI_VERSION`] of the SDK or header the plugin was built with.
    pub abi_version: u32,
    /// `sizeof` this struct as the plugin knows it: later minor versions
    /// append fields, and the host reads only those within `size`.
    pub size: u32,
    /// [`KIND_SOURCE`], [`KIND_TRANSFORM`] or [`KIND_SINK`].
    pub kind: u32,
    /// The plugin's name and version: NUL-terminated UTF-8, static.
    pub name: *const c_char,
    pub version: *const c_char,
    /// Creates an instance from its configuration (the component's TOML
    /// table, less `type`, `plugin` and `inputs`, as a JSON object).
    /// Returns null and reports through `error` if it cannot.
    ///
    /// Every function pointer is an `Option` (nullable in C): the host
    /// checks that the ones a kind needs are there before calling any.
    pub create: Option<unsafe extern "C" fn(config: Slice, error: *const ErrorOut) -> *mut c_void>,
    /// Frees an instance. Called once per instance, after its last call.
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    /// Transforms: decides about one record. Sets `*action`; with
    /// [`ACTION_REPLACE`] also `*replacement` (the plugin's bytes).
    pub transform: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            record: *const Record,
            action: *mut u32,
            replacement: *mut Slice,
            error: *const ErrorOut,
        ) -> i32,
    >,
    /// Sinks: called before the first delivery, and again after a failure
    /// that made the host create a new instance.
    pub sink_open: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            context: *const SinkContext,
            error: *const ErrorOut,
        ) -> i32,
    >,
    /// Sinks: delivers `count` records, in offset order. [`STATUS_OK`]
    /// acknowledges them: the backend holds them durably, the host moves
    /// the sink's cursor past them and the log may delete them.
    pub sink_deliver: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            records: *const Record,
            count: usize,
            error: *const ErrorOut,
        ) -> i32,
    >,
    /// Sinks: called once when the sink stops, after its last delivery.
    pub sink_close:
        Option<unsafe extern "C" fn(instance: *mut c_void, error: *const ErrorOut) -> i32>,
    /// Sources: reads and emits through `host` until its input ends or
    /// `host->wait_stop` says to stop, then returns. The host calls it on a
    /// thread of its own, where blocking is fine.
    pub source_run: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            host: *const SourceHost,
            error: *const ErrorOut,
        ) -> i32,
    >,
}

// SAFETY: a descriptor is immutable static data (pointers to static
// strings and functions) once the library returns it.
unsafe impl Sync for Descriptor {}
