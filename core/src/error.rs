//! Errors of the engine.
//!
//! `Corruption` (bad bytes found on disk) is kept apart from `Io` (the
//! operating system refused an operation): callers react differently. The
//! log repairs corruption itself and reports it; an I/O error is surfaced.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an operation on a path.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk or on the wire are not what the format says.
    #[error("corrupt data: {0}")]
    Corruption(String),
    /// Another process holds the data directory.
    #[error("data directory {} is locked by another shipper process (pid {pid}); stop it or choose another data_dir", dir.display())]
    Locked { dir: PathBuf, pid: String },
    /// A segment could not be allocated because the filesystem is full.
    #[error("disk full: cannot allocate {bytes} bytes for segment {}: {source}", path.display())]
    DiskFull {
        path: PathBuf,
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
    /// The log reached its disk budget and the caller asked not to wait.
    #[error("log is full: disk budget of {max_bytes} bytes reached")]
    Full { max_bytes: u64 },
    /// A chunk needs a segment larger than the disk budget can ever hold
    /// beside the active segment.
    #[error("chunk of {bytes} bytes can never fit the disk budget of {max_bytes} bytes; raise max_bytes or lower max_record_bytes")]
    ChunkTooLarge { bytes: u64, max_bytes: u64 },
    /// A record is larger than the configured maximum.
    #[error("record of {len} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// A stream or component name does not fit the format.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// Options that cannot work together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Compression or decompression failed.
    #[error("codec error: {0}")]
    Codec(String),
    /// A flush to stable storage failed earlier. The log refuses further
    /// writes: after a failed fsync the kernel may have dropped the dirty
    /// pages and marked them clean, so a retried fsync can report success for
    /// data that never reached the disk. Reopen the log to recover.
    #[error("log writer stopped after a failed flush; reopen the data directory to recover: {0}")]
    Poisoned(String),
    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error describes bad bytes rather than a failing system.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption(_))
    }

    /// True when the operating system refused for a passing reason: no
    /// file descriptor or memory to spare right now (EMFILE, ENFILE,
    /// ENOMEM), or a signal (EINTR, EAGAIN). Nothing was done, so the same
    /// operation may simply be tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { source, .. } => is_transient_io(source),
            _ => false,
        }
    }
}

/// [`Error::is_transient`] for a bare I/O error.
pub fn is_transient_io(error: &std::io::Error) -> bool {
    use rustix::io::Errno;
    error.raw_os_error().is_some_and(|code| {
        [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOMEM,
            Errno::INTR,
            Errno::AGAIN,
        ]
        .iter()
        .any(|errno| errno.raw_os_error() == code)
    })
}
