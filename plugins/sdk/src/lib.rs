//! Write a shipper plugin in Rust: implement [`TransformPlugin`],
//! [`SinkPlugin`] or [`SourcePlugin`] for a type, export it with
//! [`export_plugin!`], build the crate as a `cdylib`, and point a
//! component of the config at the library:
//!
//! ```
//! use shipper_plugin::{export_plugin, Action, Error, Record, TransformPlugin};
//!
//! /// Drops records that mention "debug".
//! struct NoDebug;
//!
//! impl TransformPlugin for NoDebug {
//!     const NAME: &'static str = "no-debug";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!
//!     fn new(_config: &str) -> Result<Self, Error> {
//!         Ok(NoDebug)
//!     }
//!
//!     fn transform(&mut self, record: &Record<'_>, _out: &mut Vec<u8>) -> Result<Action, Error> {
//!         let debug = record.payload.windows(5).any(|w| w == b"debug");
//!         Ok(if debug { Action::Drop } else { Action::Keep })
//!     }
//! }
//!
//! export_plugin!(transform NoDebug);
//! ```
//!
//! ```toml
//! [transforms.no_debug]
//! plugin = "target/release/libno_debug.so"
//! inputs = ["app"]
//! ```
//!
//! Only the C ABI in [`abi`] crosses between shipper and the library, so a
//! plugin built with another rustc (or written in C, against
//! `include/shipper_plugin.h`) loads as well. The plugin needs no tokio:
//! the host calls it on threads it owns, where blocking is fine.
//!
//! A panic inside the plugin is caught in the exported wrappers: the call
//! fails with [`abi::STATUS_PANICKED`], the host discards the instance and
//! creates a new one. Build plugins with `panic = "unwind"` (the default);
//! with `panic = "abort"` a panic ends the whole process.

pub mod abi;
#[doc(hidden)]
pub mod export;

pub use export::ErrorSlot;

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Worth trying again later (a backend that is down). A sink is offered
    /// the same records again after a backoff.
    Retryable(String),
    /// Will not get better: the component stops (a sink), or the record is
    /// dropped and counted (a transform).
    Fatal(String),
}

impl Error {
    /// A [`Error::Retryable`] error.
    pub fn retryable(message: impl std::fmt::Display) -> Error {
        Error::Retryable(message.to_string())
    }

    /// A [`Error::Fatal`] error.
    pub fn fatal(message: impl std::fmt::Display) -> Error {
        Error::Fatal(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Error::Retryable(message) | Error::Fatal(message) => message,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// One record, borrowed from the host for the duration of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's bytes (usually one JSON object, no newline).
    pub payload: &'a [u8],
    /// Its stream (collection).
    pub stream: &'a str,
    /// Unix nanoseconds; see [`abi::Record::timestamp_ns`].
    pub timestamp_ns: u64,
    /// Its offset in the log (sinks only; 0 for transforms).
    pub offset: u64,
}

/// What a transform does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The record goes on unchanged.
    Keep,
    /// The record is dropped.
    Drop,
    /// The record goes on as the bytes the transform wrote to `out`.
    Replace,
}

/// A transform: runs on the producing side, once per record, before the
/// record is compressed and stored.
pub trait TransformPlugin: Sized + Send + 'static {
    /// The plugin's name and version, as `shipper plugin inspect` shows them.
    const NAME: &'static str;
    const VERSION: &'static str;

    /// An instance from its configuration: the component's TOML table
    /// (less `type`, `plugin` and `inputs`) as a JSON object.
    fn new(config: &str) -> Result<Self, Error>;

    /// Decides about one record. For [`Action::Replace`], write the new
    /// record into `out` (empty on entry, reused across calls).
    fn transform(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Result<Action, Error>;
}

/// What the host tells a sink before its first delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkContext {
    /// The sink's name in the config.
    pub name: String,
    /// The identity of the log the sink reads: with an offset, a key no
    /// other producer's record has.
    pub producer_id: String,
    /// The data directory; keep small state under `sinks/` there.
    pub data_dir: std::path::PathBuf,
    /// Every record below this offset was acknowledged before.
    pub committed: u64,
}

/// A sink: delivers records to a backend and acknowledges them.
pub trait SinkPlugin: Sized + Send + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;

    /// An instance from its configuration (a JSON object). Any error is
    /// fatal (the component cannot start) and the host may call this on an
    /// async thread: parse the config here, connect later (`open`, `run`).
    fn new(config: &str) -> Result<Self, Error>;

    /// Called before the first delivery, and again on a new instance after
    /// a panic. A sink that keeps a high-water mark in its backend reads it
    /// here.
    fn open(&mut self, context: &SinkContext) -> Result<(), Error> {
        let _ = context;
        Ok(())
    }

    /// Delivers `records`, in offset order. Return `Ok` only once the
    /// backend holds them durably: that acknowledges them, and the log may
    /// delete them.
    fn deliver(&mut self, records: &[Record<'_>]) -> Result<(), Error>;

    /// Called once when the sink stops.
    fn close(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// A source: reads input and emits records until its input ends or the
/// host asks it to stop. It runs on a thread of its own; blocking is fine.
pub trait SourcePlugin: Sized + Send + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;

    /// An instance from its configuration (a JSON object). Any error is
    /// fatal (the component cannot start) and the host may call this on an
    /// async thread: parse the config here, connect later (`open`, `run`).
    fn new(config: &str) -> Result<Self, Error>;

    /// Reads and emits through `host` until the input ends or
    /// [`SourceHost::should_stop`] says so. Acknowledge input only after
    /// [`SourceHost::wait_durable`]. The host makes what was emitted
    /// durable after `run` returns.
    fn run(&mut self, host: &SourceHost<'_>) -> Result<(), Error>;
}

/// The host's side of a running source.
#[derive(Debug)]
pub struct SourceHost<'a> {
    raw: &'a abi::SourceHost,
}

impl SourceHost<'_> {
    /// Stores one record (copied) in `stream`; blocks while the log is at
    /// its disk budget. An error means the host is stopping or the log
    /// failed: return from `run`.
    pub fn emit(&self, stream: &str, payload: &[u8], timestamp_ns: u64) -> Result<(), Error> {
        let mut failure = export::ErrorSlot::default();
        let out = failure.out();
        // SAFETY: `raw` came from the host for the duration of `run`, on
        // this thread; the slices outlive the call.
        let status = unsafe {
            (self.raw.emit)(
                self.raw.host,
                abi::Slice::of(stream.as_bytes()),
                abi::Slice::of(payload),
                timestamp_ns,
                &out,
            )
        };
        failure.into_result(status)
    }

    /// Blocks until everything emitted so far is durable on local disk.
    pub fn wait_durable(&self) -> Result<(), Error> {
        let mut failure = export::ErrorSlot::default();
        let out = failure.out();
        // SAFETY: as in `emit`.
        let status = unsafe { (self.raw.wait_durable)(self.raw.host, &out) };
        failure.into_result(status)
    }

    /// Whether the host asks the source to stop.
    pub fn should_stop(&self) -> bool {
        // SAFETY: as in `emit`.
        unsafe { (self.raw.wait_stop)(self.raw.host, 0) != 0 }
    }

    /// Sleeps until the host asks the source to stop (true) or `timeout`
    /// passes (false).
    pub fn wait_stop(&self, timeout: std::time::Duration) -> bool {
        let millis = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // SAFETY: as in `emit`.
        unsafe { (self.raw.wait_stop)(self.raw.host, millis) != 0 }
    }
}

/// Unix nanoseconds now, for [`SourceHost::emit`].
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// Exports a plugin type from a `cdylib`: `export_plugin!(transform T)`,
/// `export_plugin!(sink T)` or `export_plugin!(source T)`, where `T`
/// implements [`TransformPlugin`], [`SinkPlugin`] or [`SourcePlugin`].
/// Defines the entry symbol `shipper_plugin_entry`; one per library.
#[macro_export]
macro_rules! export_plugin {
    (transform $plugin:ty) => {
        $crate::export_plugin!(@entry $plugin, TransformPlugin, transform_descriptor);
    };
    (sink $plugin:ty) => {
        $crate::export_plugin!(@entry $plugin, SinkPlugin, sink_descriptor);
    };
    (source $plugin:ty) => {
        $crate::export_plugin!(@entry $plugin, SourcePlugin, source_descriptor);
    };
    (@entry $plugin:ty, $kind:ident, $descriptor:ident) => {
        /// The plugin's entry point (see `shipper_plugin::abi`).
        #[unsafe(no_mangle)]
        pub extern "C" fn shipper_plugin_entry() -> *const $crate::abi::Descriptor {
            const NAME_LEN: usize = <$plugin as $crate::$kind>::NAME.len() + 1;
            const VERSION_LEN: usize = <$plugin as $crate::$kind>::VERSION.len() + 1;
            static NAME: [u8; NAME_LEN] =
                $crate::export::nul_terminated(<$plugin as $crate::$kind>::NAME);
            static VERSION: [u8; VERSION_LEN] =
                $crate::export::nul_terminated(<$plugin as $crate::$kind>::VERSION);
            static DESCRIPTOR: $crate::abi::Descriptor = $crate::export::$descriptor::<$plugin>(
                NAME.as_ptr().cast(),
                VERSION.as_ptr().cast(),
            );
            &DESCRIPTOR
        }
    };
}
