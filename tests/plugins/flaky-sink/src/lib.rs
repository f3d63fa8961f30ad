//! `flaky-sink`: a test fixture for the plugin host's tests, not a sink
//! for real use. It appends each record to a file as one line,
//! `OFFSET<TAB>STREAM<TAB>PAYLOAD`, and acknowledges a delivery only after
//! the write and an fsync. Like `examples/plugins/c-file-sink`, it is
//! exactly once across restarts: `open` cuts off a torn last line and takes
//! the offset of the last complete line as a high-water mark, and
//! deliveries skip records at or below it.
//!
//! It misbehaves on purpose, as its config (a JSON object) says:
//!
//! * `"path"` (required): the file.
//! * `"fail_times": N` (default 0): the first N deliveries in this process
//!   fail with `Error::Retryable("backend unavailable (simulated)")`,
//!   writing nothing.
//! * `"panic_on": "TEXT"`: a delivery in which any payload contains TEXT
//!   panics ("flaky-sink: panic_on matched") before writing — only the
//!   first `"panic_times"` (default 1) times in this process.
//! * `"fatal_on": "TEXT"`: a delivery in which any payload contains TEXT
//!   fails with `Error::Fatal("flaky-sink: fatal_on matched")`.
//! * `"block_ms": N`: the first `"block_times"` (default 1) deliveries in
//!   this process create the file `PATH.blocked`, sleep N ms, then write
//!   their records (a backend that takes its time).
//!
//! The host replaces an instance after a panic, so the counters behind
//! `fail_times`, `panic_times` and `block_times` live in process-wide
//! statics, one set per
//! `path` (two sinks with different files do not share them). Any other
//! key is a fatal error naming it.

// The `#[unsafe(no_mangle)]` that `export_plugin!` expands to comes from
// another crate's macro, where rustc does not report `unsafe_code`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use shipper_plugin::{export_plugin, Error, Record, SinkContext, SinkPlugin};

/// The sink's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: PathBuf,
    #[serde(default)]
    fail_times: u64,
    panic_on: Option<String>,
    #[serde(default = "one")]
    panic_times: u64,
    fatal_on: Option<String>,
    block_ms: Option<u64>,
    #[serde(default = "one")]
    block_times: u64,
}

fn one() -> u64 {
    1
}

/// How often this process has misbehaved so far, for one path.
#[derive(Debug, Default)]
struct Counters {
    failures: AtomicU64,
    panics: AtomicU64,
    blocks: AtomicU64,
}

impl Counters {
    /// The counters of `path`, shared by every instance in the process.
    fn of(path: &Path) -> Arc<Counters> {
        static BY_PATH: Mutex<BTreeMap<PathBuf, Arc<Counters>>> = Mutex::new(BTreeMap::new());
        let mut by_path = BY_PATH.lock().unwrap_or_else(PoisonError::into_inner);
        by_path.entry(path.to_owned()).or_default().clone()
    }
}

/// Takes one of `limit` uses of `counter`: whether one was left.
fn take(counter: &AtomicU64, limit: u64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            (used < limit).then_some(used + 1)
        })
        .is_ok()
}

/// Whether any record's payload contains `text`.
fn any_contains(records: &[Record<'_>], text: &str) -> bool {
    let needle = text.as_bytes();
    records.iter().any(|record| {
        needle.is_empty()
            || record
                .payload
                .windows(needle.len())
                .any(|window| window == needle)
    })
}

/// The offset at the start of a line (`OFFSET<TAB>...`), if it has one.
fn line_offset(line: &[u8]) -> Option<u64> {
    let tab = line.iter().position(|&b| b == b'\t')?;
    let digits = &line[..tab];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The open file and what it holds.
#[derive(Debug)]
struct Output {
    file: File,
    /// The length holding only acknowledged, synced lines.
    size: u64,
    /// The largest offset in the file.
    high_water: Option<u64>,
    /// A failed write may have left bytes after `size`.
    dirty: bool,
}

impl Output {
    /// Cuts the file back to `size` after a failed write.
    fn roll_back(&mut self) -> std::io::Result<()> {
        self.dirty = true;
        self.file.set_len(self.size)?;
        self.file.sync_all()?;
        self.dirty = false;
        Ok(())
    }
}

/// The sink.
#[derive(Debug)]
struct FlakySink {
    config: Config,
    counters: Arc<Counters>,
    output: Option<Output>,
}

impl FlakySink {
    fn io_error(&self, what: &str, error: &std::io::Error) -> Error {
        let message = format!("flaky-sink: {what} {}: {error}", self.config.path.display());
        match error.kind() {
            ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::IsADirectory
            | ErrorKind::NotADirectory
            | ErrorKind::ReadOnlyFilesystem => Error::Fatal(message),
            _ => Error::Retryable(message),
        }
    }

    fn open_output(&self) -> Result<Output, Error> {
        let path = &self.config.path;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| self.io_error("cannot open", &e))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(|e| self.io_error("cannot read", &e))?;
        // Everything after the last newline is a line torn by a crash.
        let complete = contents
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        let size = complete as u64;
        if complete < contents.len() {
            file.set_len(size)
                .map_err(|e| self.io_error("cannot cut the torn last line of", &e))?;
        }
        // What a previous process wrote but did not sync becomes durable
        // before the high-water mark counts it as delivered.
        file.sync_all()
            .map_err(|e| self.io_error("cannot fsync", &e))?;
        let high_water = contents[..complete]
            .split(|&b| b == b'\n')
            .filter_map(line_offset)
            .max();
        Ok(Output {
            file,
            size,
            high_water,
            dirty: false,
        })
    }
}

impl SinkPlugin for FlakySink {
    const NAME: &'static str = "flaky-sink";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(config: &str) -> Result<Self, Error> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| Error::Fatal(format!("flaky-sink: invalid config: {e}")))?;
        let counters = Counters::of(&config.path);
        Ok(FlakySink {
            config,
            counters,
            output: None,
        })
    }

    fn open(&mut self, _context: &SinkContext) -> Result<(), Error> {
        self.output = None;
        self.output = Some(self.open_output()?);
        Ok(())
    }

    fn deliver(&mut self, records: &[Record<'_>]) -> Result<(), Error> {
        if take(&self.counters.failures, self.config.fail_times) {
            return Err(Error::retryable("backend unavailable (simulated)"));
        }
        if let Some(text) = &self.config.panic_on {
            if any_contains(records, text) && take(&self.counters.panics, self.config.panic_times) {
                panic!("flaky-sink: panic_on matched");
            }
        }
        if let Some(text) = &self.config.fatal_on {
            if any_contains(records, text) {
                return Err(Error::fatal("flaky-sink: fatal_on matched"));
            }
        }

        if let Some(block_ms) = self.config.block_ms {
            if take(&self.counters.blocks, self.config.block_times) {
                let mut marker = self.config.path.clone().into_os_string();
                marker.push(".blocked");
                std::fs::write(&marker, b"")
                    .map_err(|e| self.io_error("cannot create the marker of", &e))?;
                std::thread::sleep(std::time::Duration::from_millis(block_ms));
            }
        }

        let path = self.config.path.display().to_string();
        let Some(output) = self.output.as_mut() else {
            return Err(Error::fatal("flaky-sink: deliver before open"));
        };
        if output.dirty {
            output.roll_back().map_err(|e| {
                Error::Retryable(format!(
                    "flaky-sink: cannot cut back a failed write to {path}: {e}"
                ))
            })?;
        }
        let mut lines = Vec::new();
        let mut high_water = output.high_water;
        for record in records {
            if output.high_water.is_some_and(|mark| record.offset <= mark) {
                continue;
            }
            lines.extend_from_slice(record.offset.to_string().as_bytes());
            lines.push(b'\t');
            lines.extend_from_slice(record.stream.as_bytes());
            lines.push(b'\t');
            lines.extend_from_slice(record.payload);
            lines.push(b'\n');
            high_water = high_water.max(Some(record.offset));
        }
        if lines.is_empty() {
            return Ok(()); // all in the file already
        }
        let written = output
            .file
            .write_all(&lines)
            .and_then(|()| output.file.sync_all());
        if let Err(e) = written {
            // After a failed write or fsync, nothing past `size` can be
            // trusted: cut it off (or try again next time) and retry.
            let _ = output.roll_back();
            return Err(Error::Retryable(format!(
                "flaky-sink: cannot write to {path}: {e}"
            )));
        }
        output.size += lines.len() as u64;
        output.high_water = high_water;
        Ok(())
    }

    fn close(&mut self) -> Result<(), Error> {
        self.output = None; // every acknowledged line was synced already
        Ok(())
    }
}

export_plugin!(sink FlakySink);
