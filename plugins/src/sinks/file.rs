//! `file`: appends records to local files as NDJSON, plain or as zstd
//! frames (one frame per delivery; concatenated frames are one valid zstd
//! stream). The path may name a file per period with `%Y`, `%m`, `%d` and
//! `%H` (UTC, from each chunk's latest record time), and `%%` for a `%`.
//! A delivery is acknowledged only after `fdatasync` of the files written.
//!
//! # Exactly once
//!
//! With a journal ([`FileSinkOptions::journal`]) every record lands in the
//! output exactly once, whatever kills the process. Before a delivery
//! writes, it records an *intent* in the journal (the offsets it covers
//! and the length of every file it is about to write) and syncs it. A
//! delivery that is offered again — after a crash before the runtime
//! persisted the cursor, or a retry after a failed write — finds its own
//! intent (`intent.first <= first offset < intent.end`) and first cuts each
//! file back to the recorded length, then writes. Deliveries run one at a
//! time and the cursor is persisted before the next one starts, so one
//! intent is all the journal holds. A torn intent (crash while writing it)
//! fails its checksum; its delivery had not written anything yet.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use shipper_core::chunk::{decode_body, BodyLayout, Decoder};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::StoredChunk;

/// How the file sink compresses what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCompression {
    /// Plain NDJSON.
    None,
    /// One zstd frame per delivery, at this level.
    Zstd {
        /// zstd level.
        level: i32,
    },
}

/// Options of a [`FileSink`].
#[derive(Debug, Clone)]
pub struct FileSinkOptions {
    /// The path template.
    pub path: String,
    /// Compression of the output.
    pub compression: FileCompression,
    /// Where the sink keeps its intent journal (see the module docs);
    /// without one a crash can duplicate the last delivery.
    pub journal: Option<PathBuf>,
    /// Permission bits of the files it creates, whatever the umask.
    pub mode: u32,
}

/// What a delivery is about to write: its offsets and, per file, the
/// length before it (and whether the file existed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Intent {
    first: u64,
    end: u64,
    files: Vec<(PathBuf, u64, bool)>,
}

const JOURNAL_MAGIC: [u8; 8] = *b"SHFSJ1\0\0";

impl Intent {
    fn encode(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        out.extend_from_slice(&JOURNAL_MAGIC);
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        out.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for (path, len, existed) in &self.files {
            let bytes = path.as_os_str().as_bytes();
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(&len.to_le_bytes());
            out.push(u8::from(*existed));
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Intent> {
        use std::os::unix::ffi::OsStrExt;
        let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
        if crc32c::crc32c(body).to_le_bytes() != crc || body.get(..8)? != JOURNAL_MAGIC {
            return None;
        }
        let mut rest = &body[8..];
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            rest = tail;
            Some(head)
        };
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let first = u64_of(take(8)?);
        let end = u64_of(take(8)?);
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let mut files = Vec::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(take(len)?));
            let size = u64_of(take(8)?);
            let existed = take(1)?[0] == 1;
            files.push((path, size, existed));
        }
        Some(Intent { first, end, files })
    }

    /// Reads the journal; a missing or torn one holds no intent.
    fn load(path: &Path) -> Result<Option<Intent>, ComponentError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let intent = Intent::decode(&bytes);
                if intent.is_none() && !bytes.is_empty() {
                    tracing::warn!(journal = %path.display(), "torn file sink journal ignored (its delivery had written nothing)");
                }
                Ok(intent)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ComponentError::Retryable(format!(
                "reading {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Appends NDJSON to local files.
#[derive(Debug)]
pub struct FileSink {
    options: FileSinkOptions,
    decoder: Decoder,
    files: BTreeMap<PathBuf, File>,
    /// The journal's intent, once read.
    intent: Option<Option<Intent>>,
}

impl FileSink {
    /// A sink writing to `options.path`; checks the template.
    pub fn new(options: FileSinkOptions) -> Result<Self, ComponentError> {
        check_path(&options.path).map_err(ComponentError::Fatal)?;
        Ok(FileSink {
            options,
            decoder: Decoder::default(),
            files: BTreeMap::new(),
            intent: None,
        })
    }

    fn file(&mut self, path: &PathBuf) -> Result<&mut File, ComponentError> {
        if !self.files.contains_key(path) {
            if self.files.len() >= 16 {
                // Keep few files open: periods move on.
                self.files.clear();
            }
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    ComponentError::Retryable(format!("creating {}: {e}", parent.display()))
                })?;
            }
            let opening = |e: std::io::Error| {
                ComponentError::Retryable(format!("opening {}: {e}", path.display()))
            };
            let existed = path.exists();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(self.options.mode)
                .open(path)
                .map_err(opening)?;
            if !existed {
                // Exactly `mode`: the umask may have taken bits from it.
                file.set_permissions(std::fs::Permissions::from_mode(self.options.mode))
                    .map_err(opening)?;
            }
            self.files.insert(path.clone(), file);
        }
        Ok(self.files.get_mut(path).expect("inserted above"))
    }

    fn write_all(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        let mut outputs: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        for chunk in chunks {
            let view = chunk.view();
            let path = PathBuf::from(
                render(&self.options.path, view.max_ts()).map_err(ComponentError::Fatal)?,
            );
            let out = outputs.entry(path).or_default();
            let body = decode_body(&view, &mut self.decoder)
                .map_err(|e| ComponentError::undecodable(chunk.first_offset(), e))?;
            match body.layout() {
                // Stored newline-terminated: the body is NDJSON as it is.
                BodyLayout::Lines => out.extend_from_slice(body.bytes()),
                BodyLayout::LengthPrefixed => {
                    for record in body.records() {
                        let record = record
                            .map_err(|e| ComponentError::undecodable(chunk.first_offset(), e))?;
                        out.extend_from_slice(record);
                        out.push(b'\n');
                    }
                }
            }
        }
        if let Some(journal) = self.options.journal.clone() {
            let first = chunks.first().map_or(0, StoredChunk::first_offset);
            let end = chunks.last().map_or(0, StoredChunk::end_offset);
            self.undo_redelivered(&journal, first)?;
            let mut files = Vec::new();
            for path in outputs.keys() {
                let (len, existed) = match std::fs::metadata(path) {
                    Ok(metadata) => (metadata.len(), true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, false),
                    Err(e) => {
                        return Err(ComponentError::Retryable(format!(
                            "{}: {e}",
                            path.display()
                        )))
                    }
                };
                files.push((path.clone(), len, existed));
            }
            let intent = Intent { first, end, files };
            write_synced(&journal, &intent.encode())?;
            self.intent = Some(Some(intent));
        }
        for (path, bytes) in outputs {
            let bytes = match self.options.compression {
                FileCompression::None => bytes,
                FileCompression::Zstd { level } => zstd::bulk::compress(&bytes, level)
                    .map_err(|e| ComponentError::Fatal(format!("zstd level {level}: {e}")))?,
            };
            let file = self.file(&path)?;
            let written = file.write_all(&bytes).and_then(|_| file.sync_data());
            if let Err(e) = written {
                // The file may hold part of this delivery; the retry cuts it
                // back to the length in the intent (with a journal).
                self.files.remove(&path);
                return Err(ComponentError::Retryable(format!(
                    "writing {}: {e}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// If the chunks from `first` on were written before (the intent covers
    /// `first`), cuts each file back to its length before that delivery.
    fn undo_redelivered(&mut self, journal: &Path, first: u64) -> Result<(), ComponentError> {
        if self.intent.is_none() {
            self.intent = Some(Intent::load(journal)?);
        }
        let Some(Some(intent)) = &self.intent else {
            return Ok(());
        };
        if !(intent.first <= first && first < intent.end) {
            return Ok(());
        }
        self.files.clear();
        for (path, len, existed) in &intent.files {
            let cut = if *existed {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|file| file.set_len(*len).and_then(|()| file.sync_all()))
            } else {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            };
            cut.map_err(|e| {
                ComponentError::Retryable(format!(
                    "cutting {} back to {len} bytes: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(file = %path.display(), len, "file sink: delivery offered again; its earlier write cut off");
        }
        Ok(())
    }
}

/// Replaces the content of `path` and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ComponentError> {
    let error =
        |e: std::io::Error| ComponentError::Retryable(format!("writing {}: {e}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        shipper_core::log::modes::create_dir(parent).map_err(error)?;
    }
    let mut file = shipper_core::log::modes::file_options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(error)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(error)
}

#[async_trait]
impl Sink for FileSink {
    async fn open(&mut self, cx: &SinkContext) -> Result<(), ComponentError> {
        self.decoder = cx.decoder();
        Ok(())
    }

    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        // File I/O and fdatasync block: keep them off the async workers' queue.
        tokio::task::block_in_place(|| self.write_all(chunks))
    }
}

/// Checks a `path` template as [`FileSink::new`] does: its only fields
/// are `%Y %m %d %H %%`.
pub fn check_path(template: &str) -> Result<(), String> {
    render(template, 0).map(drop)
}

/// The path for a record time of `nanos` (unix nanoseconds, UTC).
fn render(template: &str, nanos: u64) -> Result<String, String> {
    let seconds = nanos / 1_000_000_000;
    let (year, month, day) = shipper_core::time::civil_from_days((seconds / 86_400) as i64);
    let hour = (seconds % 86_400) / 3_600;
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{year:04}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(format!(
                    "path {template:?}: unsupported field %{other} (use %Y %m %d %H %%)"
                ))
            }
            None => return Err(format!("path {template:?}: ends with a lone %")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipper_core::chunk::{ChunkBuilder, ChunkOptions};
    use shipper_core::log::{Log, LogOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_redelivered_batch_is_cut_back_first_and_a_torn_journal_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("data"), LogOptions::default()).unwrap();
        for batch in 0..2 {
            let mut builder = ChunkBuilder::new("s", "in", ChunkOptions::default()).unwrap();
            for i in 0..3 {
                builder
                    .push(format!("r{batch}-{i}").as_bytes(), 1, None)
                    .unwrap();
            }
            log.append(builder.finish().unwrap().unwrap())
                .unwrap()
                .wait_durable()
                .unwrap();
        }
        let chunks: Vec<StoredChunk> = log.reader(0).map(Result::unwrap).collect();
        let out = dir.path().join("out.ndjson");
        let journal = dir.path().join("sink.journal");
        let options = FileSinkOptions {
            path: out.display().to_string(),
            compression: FileCompression::None,
            journal: Some(journal.clone()),
            mode: 0o640,
        };
        let mut sink = FileSink::new(options.clone()).unwrap();
        sink.deliver(&chunks[..1]).await.unwrap();
        sink.deliver(&chunks[1..]).await.unwrap();
        // A crash before the cursor of the second delivery was persisted:
        // a new sink is offered the second chunk again.
        let mut sink = FileSink::new(options.clone()).unwrap();
        sink.deliver(&chunks[1..]).await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, "r0-0\nr0-1\nr0-2\nr1-0\nr1-1\nr1-2\n");
        // A torn journal: the delivery it belonged to wrote nothing.
        let bytes = std::fs::read(&journal).unwrap();
        std::fs::write(&journal, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(Intent::load(&journal).unwrap(), None);
        let intent = Intent::decode(&bytes).unwrap();
        assert_eq!((intent.first, intent.end), (3, 6));
        assert_eq!(intent.files, [(out.clone(), 15, true)]);
    }

    #[test]
    fn templates_render_utc_dates() {
        // 2024-02-29T13:05:00Z
        let nanos = 1_709_211_900u64 * 1_000_000_000;
        let cases = [
            ("out/%Y-%m-%d.ndjson", Ok("out/2024-02-29.ndjson")),
            ("%Y/%m/%d/%H.log", Ok("2024/02/29/13.log")),
            ("plain.ndjson", Ok("plain.ndjson")),
            ("100%%.log", Ok("100%.log")),
        ];
        for (template, expected) in cases {
            assert_eq!(
                render(template, nanos).as_deref(),
                expected.map(|s: &str| s),
                "{template}"
            );
        }
        assert!(render("bad-%Q", nanos).is_err());
        assert!(render("bad-%", nanos).is_err());
        assert_eq!(shipper_core::time::civil_from_days(0), (1970, 1, 1));
        assert_eq!(shipper_core::time::civil_from_days(-1), (1969, 12, 31));
        assert_eq!(shipper_core::time::civil_from_days(11_016), (2000, 2, 29));
    }
}

pub use config::{Encoding, FileSinkConfig};

/// The `file` sink's config: `[sinks.NAME] type = "file"`. Every key is
/// described in docs/config.md, the one place they are documented.
#[allow(missing_docs)]
mod config {
    use serde::Deserialize;
    use shipper_core::component::Sink;

    use super::{check_path, FileCompression, FileSink, FileSinkOptions};
    use crate::config::{
        BuildContext, BuildError, Checks, Codec, Compression, FileMode, SinkComponent,
    };

    /// Line format of a file sink.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Encoding {
        #[default]
        Ndjson,
        Json,
    }

    /// `type = "file"`: appends records to local files.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FileSinkConfig {
        #[serde(default)]
        pub inputs: Vec<String>,
        /// Output path; strftime fields (`%Y-%m-%d`) name a file per period.
        pub path: String,
        #[serde(default)]
        pub encoding: Encoding,
        #[serde(default = "Compression::none")]
        pub compression: Compression,
        /// Permission bits of the files the sink creates.
        #[serde(default = "default_file_mode")]
        pub mode: FileMode,
    }

    fn default_file_mode() -> FileMode {
        FileMode(0o640)
    }

    impl crate::config::Named for FileSinkConfig {
        const TYPE: &'static str = "file";
    }

    impl SinkComponent for FileSinkConfig {
        fn inputs(&self) -> &[String] {
            &self.inputs
        }

        fn check(&self, check: &mut dyn Checks) {
            if self.path.is_empty() {
                check.error(&["path"], "must not be empty");
            } else if let Err(reason) = check_path(&self.path) {
                check.error(&["path"], reason);
            }
            // What `run` refuses of the file sink, as it words it.
            if self.encoding != Encoding::Ndjson {
                check.error(
                    &["encoding"],
                    "encoding \"json\" is not available (use ndjson)",
                );
            }
            if self.compression.codec == Codec::Gzip {
                check.error(
                    &["compression", "codec"],
                    "gzip is not available (use zstd or none)",
                );
            }
            self.compression.check(check, "compression");
        }

        fn exclusive(&self) -> Vec<(&'static str, String)> {
            vec![("path", format!("file {}", self.path))]
        }

        fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
            if self.encoding != Encoding::Ndjson {
                return Err(format!(
                    "encoding {:?} is not available (use ndjson)",
                    self.encoding
                ));
            }
            let compression = match self.compression.codec {
                Codec::None => FileCompression::None,
                Codec::Zstd => FileCompression::Zstd {
                    level: self.compression.level.unwrap_or(3),
                },
                Codec::Gzip => return Err("gzip is not available (use zstd or none)".into()),
            };
            let options = FileSinkOptions {
                path: self.path.clone(),
                compression,
                // Beside the log, so a new data dir starts a new journal.
                journal: Some(
                    cx.data_dir
                        .join("sinks")
                        .join(format!("{}.journal", cx.name)),
                ),
                mode: self.mode.bits(),
            };
            Ok(Box::new(FileSink::new(options).map_err(|e| e.to_string())?))
        }
    }
}
