//! `file`: tails the files matching glob patterns, one record per line (or
//! per multiline record), and resumes after a restart exactly after the
//! last durable record.
//!
//! # Files and their identity
//!
//! The patterns are expanded every `glob_interval`; a file found for the
//! first time is read from its beginning (from its end only for the files
//! present at the very first start with `read_from = end`). A file is
//! known by its device and inode plus a *fingerprint*: the length and
//! CRC-32C of its first `fingerprint_bytes` bytes (fewer while the file is
//! shorter; the fingerprint grows with the file). The fingerprint tells a
//! new file that reuses a deleted file's inode from the old one.
//!
//! # Rotation
//!
//! * **Rename** (`app.log` → `app.log.1`, a new `app.log`): the open file
//!   keeps being read to its end under whatever name it has now; the new
//!   file at the old path is a new identity, read from its beginning. A
//!   file that no longer matches the patterns (renamed away or deleted) is
//!   read until it has been idle at its end for `rotate_wait`, its last
//!   unterminated line is emitted, and it is closed.
//! * **Copy and truncate**: a file that becomes shorter than the position
//!   read is read again from its beginning (counted in `truncations`).
//!
//! # Positions and resuming
//!
//! Every record is emitted with a source position (see
//! [`shipper_core::log::source_position`]) that holds, for *every* file the
//! source tracks, its identity and the offset just after the last record
//! emitted from it. The chunk header keeps the position of its last
//! record, so the last durable chunk of each component is a complete
//! checkpoint of the source. At start the source asks the log for those
//! ([`shipper_core::log::Log::source_positions`], which also remembers the
//! positions of deleted segments) and continues each file there: no line
//! is lost and none is stored twice. When the components fed by the
//! source (the source itself, or the transforms after it) stopped at
//! different points, reading starts at the earliest one and each component
//! skips what it already holds.
//!
//! A line not yet terminated by `\n` is not emitted until its newline
//! arrives (or the file is closed after rotation), and a pending multiline
//! record is not emitted at shutdown: both are read again after a restart.
//!
//! # Limits
//!
//! Lines longer than `max_line_bytes` are truncated or dropped (counted);
//! invalid UTF-8 is kept as bytes or replaced with U+FFFD (counted). At
//! most `max_files` files are tracked at once. Memory per file is bounded
//! by the line (or multiline record) limit.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shipper_core::chunk::now_nanos;
use shipper_core::component::{ComponentError, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::source_position;

use crate::framing::lines::{LineOptions, LineSplitter};
use crate::multiline::{Joiner, JoinerOptions};

/// Where reading starts in a file present at the first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// From the first byte.
    #[default]
    Beginning,
    /// From the end: only what is written after the first start.
    End,
}

/// What happens to a line that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidUtf8 {
    /// Stored as the bytes read.
    #[default]
    Keep,
    /// Invalid sequences replaced with U+FFFD.
    Replace,
}

/// Options of a [`FileSource`].
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Glob patterns of the files to read.
    pub include: Vec<String>,
    /// Glob patterns of files to leave out.
    pub exclude: Vec<String>,
    /// Where reading starts in files present at the first start.
    pub read_from: ReadFrom,
    /// Line length limit and policy.
    pub lines: LineOptions,
    /// Multiline joining: the start-of-record pattern and the timeout.
    pub multiline: Option<(String, Duration)>,
    /// Invalid UTF-8 handling.
    pub invalid_utf8: InvalidUtf8,
    /// How often the patterns are expanded again.
    pub glob_interval: Duration,
    /// The longest wait between reads of an idle file.
    pub poll_interval: Duration,
    /// Bytes at the start of a file that identify it with its inode.
    pub fingerprint_bytes: usize,
    /// How long a file that no longer matches is read after its last growth.
    pub rotate_wait: Duration,
    /// The most files tracked at once.
    pub max_files: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            read_from: ReadFrom::Beginning,
            lines: LineOptions::default(),
            multiline: None,
            invalid_utf8: InvalidUtf8::Keep,
            glob_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
            fingerprint_bytes: 256,
            rotate_wait: Duration::from_secs(5),
            max_files: 1024,
        }
    }
}

/// Counters of a file source.
#[derive(Debug, Default)]
pub struct FileStats {
    /// Files opened (new, or again after a restart).
    pub files_opened: AtomicU64,
    /// Files closed after they left the patterns and went idle.
    pub files_closed: AtomicU64,
    /// Files found shorter than the position read (copy and truncate).
    pub truncations: AtomicU64,
    /// Lines cut to `max_line_bytes`.
    pub lines_truncated: AtomicU64,
    /// Lines dropped for being longer than `max_line_bytes`.
    pub lines_dropped: AtomicU64,
    /// Records with invalid UTF-8 (kept or replaced, as configured).
    pub invalid_utf8: AtomicU64,
    /// Files not tracked because `max_files` was reached.
    pub files_refused: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    if by > 0 {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// Why a file source cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// A glob pattern does not parse.
    #[error("pattern {pattern:?}: {error}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        error: glob::PatternError,
    },
    /// The multiline pattern does not compile.
    #[error(transparent)]
    Multiline(#[from] crate::multiline::JoinerError),
    /// An option is out of range.
    #[error("{0}")]
    Option(String),
}

/// Identity and offset of one file in a position: 30 bytes.
const ENTRY_LEN: usize = 30;
const POSITION_VERSION: u8 = 1;
/// Bytes read from one file before the next file gets its turn.
const READ_BUDGET: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Identity {
    dev: u64,
    ino: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u16,
    crc: u32,
}

impl Fingerprint {
    /// The fingerprint of the first `max` bytes of `file` (fewer if shorter).
    fn of(file: &File, max: usize) -> std::io::Result<Fingerprint> {
        let mut buffer = vec![0u8; max];
        let mut filled = 0;
        while filled < max {
            match file.read_at(&mut buffer[filled..], filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(Fingerprint {
            len: filled as u16,
            crc: crc32c::crc32c(&buffer[..filled]),
        })
    }

    /// Whether `file` starts with the bytes this fingerprint was taken of.
    fn matches(&self, file: &File) -> std::io::Result<bool> {
        let now = Fingerprint::of(file, usize::from(self.len))?;
        Ok(now == *self)
    }
}

/// One file being read.
#[derive(Debug)]
struct Tracked {
    path: PathBuf,
    identity: Identity,
    fingerprint: Fingerprint,
    file: File,
    splitter: LineSplitter,
    joiner: Option<Joiner>,
    /// End offset of the last line pushed into the joiner.
    joined_end: u64,
    /// Matched by the last expansion of the patterns.
    in_glob: bool,
    /// When the file last grew (or was opened).
    active_at: Instant,
    /// The offset just after the last record emitted from this file.
    emitted: u64,
    /// Components that already hold this file's records up to an offset
    /// (after a restart where components stopped at different points).
    skip: Vec<(String, u64)>,
}

/// What the log says about where each file was, at start.
#[derive(Debug, Default)]
struct Resume {
    /// Per identity: per component, its fingerprint and offset.
    files: HashMap<Identity, Vec<(String, Fingerprint, u64)>>,
    /// No component has a position: this is the first start.
    first_start: bool,
}

fn decode_entries(payload: &[u8]) -> Option<Vec<(Identity, Fingerprint, u64)>> {
    let (&version, entries) = payload.split_first()?;
    if version != POSITION_VERSION || entries.len() % ENTRY_LEN != 0 {
        return None;
    }
    let u64_at = |e: &[u8], at: usize| u64::from_le_bytes(e[at..at + 8].try_into().expect("8"));
    Some(
        entries
            .chunks_exact(ENTRY_LEN)
            .map(|e| {
                (
                    Identity {
                        dev: u64_at(e, 0),
                        ino: u64_at(e, 8),
                    },
                    Fingerprint {
                        len: u16::from_le_bytes([e[16], e[17]]),
                        crc: u32::from_le_bytes(e[18..22].try_into().expect("4")),
                    },
                    u64_at(e, 22),
                )
            })
            .collect(),
    )
}

/// Tails files; see the module docs.
pub struct FileSource {
    name: String,
    options: FileOptions,
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    multiline: Option<regex::bytes::Regex>,
    files: Vec<Tracked>,
    /// The position emitted with every record: `name NUL version entries`.
    position: Vec<u8>,
    prefix_len: usize,
    stats: Arc<FileStats>,
    /// Logs dropped overlong lines at most once per ten seconds.
    dropped_log: crate::throttle::Throttle,
    warned_full: bool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("name", &self.name)
            .field("include", &self.include)
            .field("files", &self.files.len())
            .finish()
    }
}

impl FileSource {
    /// A source named `name` (its stream, and the owner of its positions).
    pub fn new(options: FileOptions, name: &str) -> Result<Self, FileSourceError> {
        if options.include.is_empty() {
            return Err(FileSourceError::Option("needs at least one pattern".into()));
        }
        if options.fingerprint_bytes == 0 || options.fingerprint_bytes > usize::from(u16::MAX) {
            return Err(FileSourceError::Option(
                "fingerprint_bytes must be within 1..=65535".into(),
            ));
        }
        let max_entries = (usize::from(u16::MAX) - name.len() - 2) / ENTRY_LEN;
        if options.max_files == 0 || options.max_files > max_entries {
            return Err(FileSourceError::Option(format!(
                "max_files must be within 1..={max_entries}"
            )));
        }
        for pattern in &options.include {
            glob::Pattern::new(pattern).map_err(|error| FileSourceError::Pattern {
                pattern: pattern.clone(),
                error,
            })?;
        }
        let exclude = options
            .exclude
            .iter()
            .map(|pattern| {
                glob::Pattern::new(pattern).map_err(|error| FileSourceError::Pattern {
                    pattern: pattern.clone(),
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
        let multiline = match &options.multiline {
            Some((pattern, _)) => Some(
                regex::bytes::Regex::new(pattern)
                    .map_err(|e| FileSourceError::Multiline(e.into()))?,
            ),
            None => None,
        };
        let mut position = source_position(name, &[POSITION_VERSION]);
        position.reserve(ENTRY_LEN * 4);
        Ok(FileSource {
            name: name.to_owned(),
            include: options.include.clone(),
            options,
            exclude,
            multiline,
            files: Vec::new(),
            prefix_len: position.len(),
            position,
            stats: Arc::default(),
            dropped_log: crate::throttle::Throttle::default(),
            warned_full: false,
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<FileStats> {
        self.stats.clone()
    }

    /// Where each file was, from the positions the log holds for the
    /// components this source feeds.
    fn resume(&self, emitter: &Emitter) -> Resume {
        let positions = emitter.log().source_positions(&self.name);
        let components = emitter.stored_components();
        let mut mine: Vec<_> = positions
            .iter()
            .filter(|(component, _)| components.contains(component))
            .collect();
        if mine.is_empty() {
            // The components changed (a transform replaced): where the
            // source got to under the old ones still says what it read.
            mine = positions.iter().collect();
        }
        let mut resume = Resume {
            first_start: mine.is_empty(),
            ..Resume::default()
        };
        for (component, payload) in mine {
            let Some(entries) = decode_entries(payload) else {
                tracing::warn!(source = %self.name, %component, "unreadable file position ignored");
                continue;
            };
            for (identity, fingerprint, offset) in entries {
                resume.files.entry(identity).or_default().push((
                    component.clone(),
                    fingerprint,
                    offset,
                ));
            }
        }
        resume
    }

    /// Expands the patterns: tracks new files, notes renamed ones.
    fn scan(&mut self, resume: &mut Resume, initial: bool) {
        for tracked in &mut self.files {
            tracked.in_glob = false;
        }
        let mut changed = false;
        for pattern in self.include.clone() {
            let paths = match glob::glob(&pattern) {
                Ok(paths) => paths,
                Err(error) => {
                    tracing::error!(source = %self.name, %pattern, %error, "bad pattern");
                    continue;
                }
            };
            for path in paths.flatten() {
                if self.exclude.iter().any(|p| p.matches_path(&path)) {
                    continue;
                }
                let Ok(metadata) = std::fs::metadata(&path) else {
                    continue;
                };
                if !metadata.is_file() {
                    continue;
                }
                let identity = Identity {
                    dev: metadata.dev(),
                    ino: metadata.ino(),
                };
                if let Some(tracked) = self.files.iter_mut().find(|t| t.identity == identity) {
                    if tracked.path != path {
                        tracing::debug!(source = %self.name, from = %tracked.path.display(), to = %path.display(), "file renamed");
                        tracked.path = path;
                    }
                    tracked.in_glob = true;
                    continue;
                }
                if self.files.len() >= self.options.max_files {
                    self.stats.files_refused.fetch_add(1, Ordering::Relaxed);
                    if !self.warned_full {
                        self.warned_full = true;
                        tracing::warn!(source = %self.name, max_files = self.options.max_files, path = %path.display(), "too many files; not reading more until some are closed");
                    }
                    continue;
                }
                match self.open(&path, resume, initial) {
                    Ok(Some(tracked)) => {
                        self.files.push(tracked);
                        changed = true;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(source = %self.name, path = %path.display(), %error, "cannot open file")
                    }
                }
            }
        }
        if changed {
            self.rebuild_position();
        }
    }

    /// Opens a newly found file at the offset it resumes from.
    fn open(
        &mut self,
        path: &Path,
        resume: &mut Resume,
        initial: bool,
    ) -> std::io::Result<Option<Tracked>> {
        let file = File::open(path)?;
        let metadata = file.metadata()?;
        let identity = Identity {
            dev: metadata.dev(),
            ino: metadata.ino(),
        };
        if self.files.iter().any(|t| t.identity == identity) {
            // Renamed between the expansion and the open: already tracked.
            return Ok(None);
        }
        let len = metadata.len();
        let mut skip = Vec::new();
        let mut start = None;
        if let Some(known) = resume.files.remove(&identity) {
            let mut offsets = Vec::new();
            for (component, fingerprint, offset) in known {
                if fingerprint.matches(&file)? {
                    offsets.push((component, offset));
                }
            }
            if let Some(&min) = offsets.iter().map(|(_, offset)| offset).min() {
                if len < min {
                    tracing::warn!(source = %self.name, path = %path.display(), position = min, len, "file shorter than its position (truncated while stopped); reading from its beginning");
                    self.stats.truncations.fetch_add(1, Ordering::Relaxed);
                    start = Some(0);
                } else {
                    skip = offsets
                        .into_iter()
                        .filter(|&(_, offset)| offset > min)
                        .collect();
                    start = Some(min);
                }
            } else {
                tracing::info!(source = %self.name, path = %path.display(), "inode reused by a new file; reading it from its beginning");
            }
        }
        let start = start.unwrap_or(if initial && resume.first_start {
            match self.options.read_from {
                ReadFrom::Beginning => 0,
                ReadFrom::End => len,
            }
        } else {
            0
        });
        let fingerprint = Fingerprint::of(&file, self.options.fingerprint_bytes)?;
        let mut file = file;
        if start > 0 {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(start))?;
        }
        self.stats.files_opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = %self.name, path = %path.display(), offset = start, "reading file");
        let joiner = match (&self.multiline, &self.options.multiline) {
            (Some(regex), Some((_, timeout))) => Some(Joiner::with_regex(
                regex.clone(),
                JoinerOptions {
                    max_record_bytes: self.options.lines.max_line_bytes,
                    timeout: *timeout,
                },
            )),
            _ => None,
        };
        Ok(Some(Tracked {
            path: path.to_owned(),
            identity,
            fingerprint,
            file,
            splitter: LineSplitter::starting_at(self.options.lines, start),
            joiner,
            joined_end: start,
            emitted: start,
            in_glob: true,
            active_at: Instant::now(),
            skip,
        }))
    }

    /// Re-encodes the position from the tracked files.
    fn rebuild_position(&mut self) {
        self.position.truncate(self.prefix_len);
        for tracked in &self.files {
            let entry = &mut [0u8; ENTRY_LEN];
            entry[0..8].copy_from_slice(&tracked.identity.dev.to_le_bytes());
            entry[8..16].copy_from_slice(&tracked.identity.ino.to_le_bytes());
            entry[16..18].copy_from_slice(&tracked.fingerprint.len.to_le_bytes());
            entry[18..22].copy_from_slice(&tracked.fingerprint.crc.to_le_bytes());
            entry[22..30].copy_from_slice(&tracked.emitted.to_le_bytes());
            self.position.extend_from_slice(entry);
        }
    }

    /// Checks that each tracked file still starts with the bytes it was
    /// fingerprinted by (a file replaced by copy-and-truncate and written
    /// past the old position is caught here), and lengthens fingerprints
    /// of files that have grown.
    fn check_fingerprints(&mut self, emitter: &mut Emitter) -> Result<(), ComponentError> {
        let mut changed = false;
        for index in 0..self.files.len() {
            let tracked = &self.files[index];
            let current = match Fingerprint::of(&tracked.file, self.options.fingerprint_bytes) {
                Ok(current) => current,
                Err(error) => {
                    tracing::warn!(source = %self.name, path = %tracked.path.display(), %error, "cannot read file");
                    continue;
                }
            };
            let old = tracked.fingerprint;
            if current == old {
                continue;
            }
            let prefix_matches = current.len >= old.len
                && tracked.fingerprint.matches(&tracked.file).unwrap_or(false);
            if prefix_matches {
                self.files[index].fingerprint = current;
            } else {
                self.restart_file(index, emitter, "its first bytes changed")?;
            }
            changed = true;
        }
        if changed {
            self.rebuild_position();
        }
        Ok(())
    }

    /// Reads a truncated or replaced file again from its beginning.
    fn restart_file(
        &mut self,
        index: usize,
        emitter: &mut Emitter,
        why: &str,
    ) -> Result<(), ComponentError> {
        self.flush_joiner(index, emitter)?;
        let fingerprint_bytes = self.options.fingerprint_bytes;
        let lines = self.options.lines;
        let tracked = &mut self.files[index];
        tracing::warn!(source = %self.name, path = %tracked.path.display(), offset = tracked.splitter.offset(), "file truncated ({why}); reading it from its beginning");
        self.stats.truncations.fetch_add(1, Ordering::Relaxed);
        use std::io::Seek;
        tracked
            .file
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| ComponentError::Retryable(format!("{}: {e}", tracked.path.display())))?;
        tracked.splitter = LineSplitter::starting_at(lines, 0);
        tracked.joined_end = 0;
        tracked.emitted = 0;
        tracked.skip.clear();
        tracked.fingerprint = Fingerprint::of(&tracked.file, fingerprint_bytes)
            .unwrap_or(Fingerprint { len: 0, crc: 0 });
        self.rebuild_position();
        Ok(())
    }

    fn output<'a>(&'a mut self, emitter: &'a mut Emitter) -> (&'a mut Vec<Tracked>, Out<'a>) {
        (
            &mut self.files,
            Out {
                emitter: emitter.batch(),
                stream: &self.name,
                position: &mut self.position,
                prefix_len: self.prefix_len,
                invalid_utf8: self.options.invalid_utf8,
                stats: &self.stats,
                dropped_log: &self.dropped_log,
            },
        )
    }

    /// Emits the pending multiline record of file `index`, if any.
    fn flush_joiner(&mut self, index: usize, emitter: &mut Emitter) -> Result<(), ComponentError> {
        let (files, mut out) = self.output(emitter);
        let tracked = &mut files[index];
        if let Some(record) = tracked.joiner.as_mut().and_then(Joiner::finish) {
            out.record(
                index,
                tracked,
                tracked.joined_end,
                &record.bytes,
                now_nanos(),
            )?;
        }
        Ok(())
    }

    /// Reads every file once, up to a budget each. Returns whether any
    /// bytes were read.
    fn read_files(
        &mut self,
        emitter: &mut Emitter,
        buffer: &mut [u8],
    ) -> Result<bool, ComponentError> {
        let mut progressed = false;
        let mut truncated = Vec::new();
        {
            let (files, mut out) = self.output(emitter);
            for (index, tracked) in files.iter_mut().enumerate() {
                match read_file(index, tracked, &mut out, buffer)? {
                    ReadOutcome::Some => progressed = true,
                    ReadOutcome::End => {}
                    ReadOutcome::Truncated => truncated.push(index),
                }
            }
        }
        for index in truncated {
            self.restart_file(index, emitter, "shorter than the position read")?;
            progressed = true;
        }
        Ok(progressed)
    }

    /// Emits multiline records whose timeout passed, and closes files that
    /// left the patterns and stayed idle for `rotate_wait`.
    fn expire(&mut self, emitter: &mut Emitter, now: Instant) -> Result<(), ComponentError> {
        let rotate_wait = self.options.rotate_wait;
        let mut done = Vec::new();
        {
            let (files, mut out) = self.output(emitter);
            for (index, tracked) in files.iter_mut().enumerate() {
                if let Some(record) = tracked.joiner.as_mut().and_then(|j| j.poll(now)) {
                    let end = tracked.joined_end;
                    out.record(index, tracked, end, &record.bytes, now_nanos())?;
                }
                if !tracked.in_glob
                    && now.saturating_duration_since(tracked.active_at) >= rotate_wait
                {
                    // The last line may lack its newline: the file is done.
                    let end = tracked.splitter.offset();
                    if let Some(line) = tracked.splitter.finish() {
                        let bytes = line.bytes.to_vec();
                        out.line(index, tracked, &bytes, end, now)?;
                    }
                    if let Some(record) = tracked.joiner.as_mut().and_then(Joiner::finish) {
                        let end = tracked.joined_end;
                        out.record(index, tracked, end, &record.bytes, now_nanos())?;
                    }
                    done.push(index);
                }
            }
        }
        if !done.is_empty() {
            for &index in done.iter().rev() {
                let tracked = self.files.remove(index);
                self.stats.files_closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(source = %self.name, path = %tracked.path.display(), offset = tracked.emitted, "file finished (no longer matched); closed");
            }
            self.warned_full = false;
            self.rebuild_position();
        }
        Ok(())
    }

    /// The earliest multiline timeout.
    fn joiner_deadline(&self) -> Option<Instant> {
        self.files
            .iter()
            .filter_map(|t| t.joiner.as_ref().and_then(Joiner::deadline))
            .min()
    }
}

enum ReadOutcome {
    Some,
    End,
    Truncated,
}

/// Reads one file up to [`READ_BUDGET`] bytes and emits its lines.
fn read_file(
    index: usize,
    tracked: &mut Tracked,
    out: &mut Out<'_>,
    buffer: &mut [u8],
) -> Result<ReadOutcome, ComponentError> {
    let mut total = 0;
    let now = Instant::now();
    let dropped_before = tracked.splitter.dropped_lines();
    let result = loop {
        let n = match tracked.file.read(buffer) {
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(path = %tracked.path.display(), %error, "cannot read file");
                break ReadOutcome::End;
            }
        };
        if n == 0 {
            let shorter = tracked
                .file
                .metadata()
                .is_ok_and(|m| m.len() < tracked.splitter.offset());
            break if shorter {
                ReadOutcome::Truncated
            } else if total > 0 {
                ReadOutcome::Some
            } else {
                ReadOutcome::End
            };
        }
        total += n;
        tracked.active_at = now;
        let timestamp = now_nanos();
        let Tracked {
            splitter,
            joiner,
            joined_end,
            emitted,
            skip,
            ..
        } = tracked;
        let mut lines = splitter.feed(&buffer[..n]);
        while let Some(line) = lines.next() {
            if line.truncated {
                out.stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
            }
            match joiner {
                Some(joiner) => {
                    if let Some(record) = joiner.push(line.bytes, now) {
                        out.emit(index, skip, *joined_end, &record.bytes, timestamp)?;
                        *emitted = *joined_end;
                    }
                    *joined_end = line.end_offset;
                }
                None => {
                    out.emit(index, skip, line.end_offset, line.bytes, timestamp)?;
                    *emitted = line.end_offset;
                }
            }
        }
        if total >= READ_BUDGET {
            break ReadOutcome::Some;
        }
    };
    let dropped = tracked.splitter.dropped_lines() - dropped_before;
    bump(&out.stats.lines_dropped, dropped);
    if dropped > 0 {
        if let Some(suppressed) = out.dropped_log.allow() {
            tracing::warn!(
                path = %tracked.path.display(),
                dropped,
                suppressed,
                "file source: lines longer than max_line_bytes were dropped"
            );
        }
    }
    Ok(result)
}

/// Where records go: the emitter, with the position updated for each.
struct Out<'a> {
    emitter: shipper_core::emit::Batch<'a>,
    stream: &'a str,
    position: &'a mut Vec<u8>,
    prefix_len: usize,
    invalid_utf8: InvalidUtf8,
    stats: &'a FileStats,
    dropped_log: &'a crate::throttle::Throttle,
}

impl Out<'_> {
    /// One line of file `index` ending at `end`, through its joiner if any.
    fn line(
        &mut self,
        index: usize,
        tracked: &mut Tracked,
        bytes: &[u8],
        end: u64,
        now: Instant,
    ) -> Result<(), ComponentError> {
        match &mut tracked.joiner {
            Some(joiner) => {
                if let Some(record) = joiner.push(bytes, now) {
                    let at = tracked.joined_end;
                    self.record(index, tracked, at, &record.bytes, now_nanos())?;
                }
                tracked.joined_end = end;
                Ok(())
            }
            None => self.record(index, tracked, end, bytes, now_nanos()),
        }
    }

    /// Emits a record of file `index` that ends at offset `end`.
    fn record(
        &mut self,
        index: usize,
        tracked: &mut Tracked,
        end: u64,
        bytes: &[u8],
        timestamp: u64,
    ) -> Result<(), ComponentError> {
        self.emit(index, &mut tracked.skip, end, bytes, timestamp)?;
        tracked.emitted = end;
        Ok(())
    }

    fn emit(
        &mut self,
        index: usize,
        skip: &mut Vec<(String, u64)>,
        end: u64,
        bytes: &[u8],
        timestamp: u64,
    ) -> Result<(), ComponentError> {
        let at = self.prefix_len + index * ENTRY_LEN + 22;
        self.position[at..at + 8].copy_from_slice(&end.to_le_bytes());
        let payload: Cow<'_, [u8]> = match self.invalid_utf8 {
            InvalidUtf8::Keep => Cow::Borrowed(bytes),
            InvalidUtf8::Replace => match String::from_utf8_lossy(bytes) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(replaced) => {
                    self.stats.invalid_utf8.fetch_add(1, Ordering::Relaxed);
                    Cow::Owned(replaced.into_bytes())
                }
            },
        };
        if skip.is_empty() {
            self.emitter
                .emit(self.stream, &payload, timestamp, Some(self.position))?;
        } else {
            let held: Vec<String> = skip
                .iter()
                .filter(|(_, upto)| end <= *upto)
                .map(|(component, _)| component.clone())
                .collect();
            skip.retain(|(_, upto)| *upto > end);
            self.emitter.emit_skipping(
                self.stream,
                &payload,
                timestamp,
                Some(self.position),
                &held,
            )?;
        }
        Ok(())
    }
}

impl FileStats {
    /// The counters as metrics.
    pub fn metrics(self: &Arc<Self>) -> Vec<shipper_core::metrics::ComponentMetric> {
        const LINES: &str = "shipper_source_lines_total";
        const FILES: &str = "shipper_source_files_total";
        shipper_core::metrics::counters_of(
            self,
            &[
                (FILES, "Files the source opened, closed or refused.", &[("event", "opened")], |c| &c.files_opened),
                (FILES, "Files the source opened, closed or refused.", &[("event", "closed")], |c| &c.files_closed),
                (FILES, "Files the source opened, closed or refused.", &[("event", "refused")], |c| &c.files_refused),
                (
                    "shipper_source_truncations_total",
                    "Files found shorter than the position read (copy and truncate): read again from the start.",
                    &[],
                    |c| &c.truncations,
                ),
                (LINES, "Lines the source altered or dropped.", &[("outcome", "truncated")], |c| &c.lines_truncated),
                (LINES, "Lines the source altered or dropped.", &[("outcome", "dropped")], |c| &c.lines_dropped),
                (
                    "shipper_source_invalid_utf8_records_total",
                    "Records holding invalid UTF-8 (kept or replaced, as invalid_utf8 says).",
                    &[],
                    |c| &c.invalid_utf8,
                ),
            ],
        )
    }
}

#[async_trait]
impl Source for FileSource {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.stats.metrics()
    }

    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        const MIN_IDLE: Duration = Duration::from_millis(5);
        let mut resume = self.resume(&cx.emitter);
        self.scan(&mut resume, true);
        let mut next_scan = Instant::now() + self.options.glob_interval;
        let mut buffer = vec![0u8; 64 << 10];
        let mut idle = MIN_IDLE;
        while !cx.shutdown.is_triggered() {
            let now = Instant::now();
            if now >= next_scan {
                self.scan(&mut resume, false);
                self.check_fingerprints(&mut cx.emitter)?;
                next_scan = now + self.options.glob_interval;
            }
            let progressed = self.read_files(&mut cx.emitter, &mut buffer)?;
            let now = Instant::now();
            self.expire(&mut cx.emitter, now)?;
            if progressed {
                idle = MIN_IDLE;
                tokio::task::yield_now().await;
                continue;
            }
            let wake = [Some(next_scan), Some(now + idle), self.joiner_deadline()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + idle);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = cx.shutdown.wait() => break,
            }
            idle = (idle * 2).min(self.options.poll_interval);
        }
        cx.emitter.durable().await?;
        Ok(())
    }
}

/// The `file` source's config: `[sources.NAME] type = "file"`. Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use std::time::Duration;

    use serde::Deserialize;
    use shipper_core::component::Source;

    use super::{FileOptions, FileSource, InvalidUtf8, ReadFrom};
    use crate::config::{
        duration_ms, BuildContext, BuildError, ByteSize, Checks, Pattern, SourceComponent,
    };
    use crate::framing::lines::{LineOptions, Overlong};

    /// `multiline = { start_pattern = "^\\d{4}-", timeout_ms = 1000 }`.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Multiline {
        /// A line matching this starts a new record; others join the previous one.
        pub start_pattern: Pattern,
        /// A record waiting for its next line is emitted after this long.
        #[serde(
            default = "default_multiline_timeout_ms",
            deserialize_with = "duration_ms"
        )]
        pub timeout_ms: u64,
    }

    fn default_multiline_timeout_ms() -> u64 {
        1000
    }

    fn default_max_line_bytes() -> ByteSize {
        ByteSize::mib(1)
    }

    /// `type = "file"`: tails files matching glob patterns.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FileSourceConfig {
        pub include: Vec<String>,
        #[serde(default)]
        pub exclude: Vec<String>,
        #[serde(default)]
        pub read_from: ReadFrom,
        #[serde(default)]
        pub multiline: Option<Multiline>,
        #[serde(default = "default_max_line_bytes")]
        pub max_line_bytes: ByteSize,
        #[serde(default)]
        pub on_long_line: Overlong,
        /// Lines that are not valid UTF-8: kept as bytes or replaced.
        #[serde(default)]
        pub invalid_utf8: InvalidUtf8,
        /// How often the patterns are expanded to find new files.
        #[serde(default = "default_glob_interval_ms", deserialize_with = "duration_ms")]
        pub glob_interval_ms: u64,
        /// How long a file that no longer matches (rotated away, deleted) is
        /// still read after it last grew.
        #[serde(default = "default_rotate_wait_ms", deserialize_with = "duration_ms")]
        pub rotate_wait_ms: u64,
        /// Bytes at the start of a file that identify it with its inode.
        #[serde(default = "default_fingerprint_bytes")]
        pub fingerprint_bytes: u32,
        /// The most files tracked at once.
        #[serde(default = "default_max_files")]
        pub max_files: u32,
    }

    fn default_glob_interval_ms() -> u64 {
        1000
    }

    fn default_rotate_wait_ms() -> u64 {
        5000
    }

    fn default_fingerprint_bytes() -> u32 {
        256
    }

    fn default_max_files() -> u32 {
        1024
    }

    impl crate::config::Named for FileSourceConfig {
        const TYPE: &'static str = "file";
    }

    #[async_trait::async_trait]
    impl SourceComponent for FileSourceConfig {
        fn check(&self, check: &mut dyn Checks) {
            if self.include.is_empty() {
                check.error(&["include"], "needs at least one glob pattern");
            }
            if self.include.iter().any(String::is_empty) {
                check.error(&["include"], "a pattern is empty");
            }
            if self.max_line_bytes.bytes() == 0 {
                check.error(&["max_line_bytes"], "must be at least 1 byte");
            }
            if self.multiline.as_ref().is_some_and(|m| m.timeout_ms == 0) {
                check.error(&["multiline", "timeout_ms"], "must be at least 1");
            }
            if self.glob_interval_ms == 0 {
                check.error(&["glob_interval_ms"], "must be at least 1");
            }
            if !(1..=65535).contains(&self.fingerprint_bytes) {
                check.error(&["fingerprint_bytes"], "must be within 1..=65535");
            }
            if !(1..=2000).contains(&self.max_files) {
                check.error(&["max_files"], "must be within 1..=2000");
            }
            for (key, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
                for pattern in patterns {
                    if let Err(error) = glob::Pattern::new(pattern) {
                        check.error(&[key], format!("bad pattern {pattern:?}: {error}"));
                    }
                }
            }
        }

        async fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
            let max_line_bytes = usize::try_from(self.max_line_bytes.bytes()).unwrap_or(usize::MAX);
            let options = FileOptions {
                include: self.include.clone(),
                exclude: self.exclude.clone(),
                read_from: self.read_from,
                lines: LineOptions {
                    max_line_bytes,
                    overlong: self.on_long_line,
                    ..LineOptions::default()
                },
                multiline: self.multiline.as_ref().map(|m| {
                    (
                        m.start_pattern.0.as_str().to_owned(),
                        Duration::from_millis(m.timeout_ms),
                    )
                }),
                invalid_utf8: self.invalid_utf8,
                glob_interval: Duration::from_millis(self.glob_interval_ms),
                rotate_wait: Duration::from_millis(self.rotate_wait_ms),
                fingerprint_bytes: self.fingerprint_bytes as usize,
                max_files: self.max_files as usize,
                ..FileOptions::default()
            };
            Ok(Box::new(
                FileSource::new(options, cx.name).map_err(|e| e.to_string())?,
            ))
        }
    }
}

pub use config::{FileSourceConfig, Multiline};
