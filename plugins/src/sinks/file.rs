//! `file`: appends records to local files as NDJSON, plain or as zstd
//! frames (one frame per delivery; concatenated frames are one valid zstd
//! stream). The path may name a file per period with `%Y`, `%m`, `%d` and
//! `%H` (UTC, from each chunk's latest record time), and `%%` for a `%`.
//! A delivery is acknowledged only after `fdatasync` of the files written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use shipper_core::chunk::{decode_body, BodyLayout, Decoder};
use shipper_core::log::StoredChunk;
use shipper_core::plugin::{PluginError, Sink};

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
}

/// Appends NDJSON to local files.
#[derive(Debug)]
pub struct FileSink {
    options: FileSinkOptions,
    decoder: Decoder,
    files: BTreeMap<PathBuf, File>,
}

impl FileSink {
    /// A sink writing to `options.path`; checks the template.
    pub fn new(options: FileSinkOptions) -> Result<Self, PluginError> {
        render(&options.path, 0).map_err(PluginError::Fatal)?;
        Ok(FileSink {
            options,
            decoder: Decoder::default(),
            files: BTreeMap::new(),
        })
    }

    fn file(&mut self, path: &PathBuf) -> Result<&mut File, PluginError> {
        if !self.files.contains_key(path) {
            if self.files.len() >= 16 {
                // Keep few files open: periods move on.
                self.files.clear();
            }
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    PluginError::Retryable(format!("creating {}: {e}", parent.display()))
                })?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| PluginError::Retryable(format!("opening {}: {e}", path.display())))?;
            self.files.insert(path.clone(), file);
        }
        Ok(self.files.get_mut(path).expect("inserted above"))
    }

    fn write_all(&mut self, chunks: &[StoredChunk]) -> Result<(), PluginError> {
        let mut outputs: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        for chunk in chunks {
            let view = chunk.view();
            let path = PathBuf::from(
                render(&self.options.path, view.max_ts()).map_err(PluginError::Fatal)?,
            );
            let out = outputs.entry(path).or_default();
            let body = decode_body(&view, &mut self.decoder).map_err(|e| {
                PluginError::Fatal(format!("chunk at offset {}: {e}", chunk.first_offset()))
            })?;
            match body.layout() {
                // Stored newline-terminated: the body is NDJSON as it is.
                BodyLayout::Lines => out.extend_from_slice(body.bytes()),
                BodyLayout::LengthPrefixed => {
                    for record in body.records() {
                        let record = record.map_err(|e| {
                            PluginError::Fatal(format!(
                                "chunk at offset {}: {e}",
                                chunk.first_offset()
                            ))
                        })?;
                        out.extend_from_slice(record);
                        out.push(b'\n');
                    }
                }
            }
        }
        for (path, bytes) in outputs {
            let bytes = match self.options.compression {
                FileCompression::None => bytes,
                FileCompression::Zstd { level } => zstd::bulk::compress(&bytes, level)
                    .map_err(|e| PluginError::Fatal(format!("zstd level {level}: {e}")))?,
            };
            let file = self.file(&path)?;
            let written = file.write_all(&bytes).and_then(|_| file.sync_data());
            if let Err(e) = written {
                // The file may hold part of this delivery; reopen it next
                // time. The retry writes the whole delivery again.
                self.files.remove(&path);
                return Err(PluginError::Retryable(format!(
                    "writing {}: {e}",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), PluginError> {
        // File I/O and fdatasync block: keep them off the async workers' queue.
        tokio::task::block_in_place(|| self.write_all(chunks))
    }
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
