//! The dead-letter file: where a batch the backend refused for good goes,
//! so that the sink can move on without losing it.
//!
//! Each refused batch is appended as its records, one per line (NDJSON,
//! decoded), followed by one trailer line that says why:
//!
//! ```text
//! {"shipper_dead_letter":{"sink":"web","uri":"https://...","status":413,"answer":"...","first_offset":0,"end_offset":120,"records":120,"unix_ms":1718000000000}}
//! ```
//!
//! The file is synced before the delivery is acknowledged: once the
//! cursor moves past the batch, this file is the only copy.

use std::io::Write;
use std::path::Path;

use shipper_core::component::ComponentError;
use shipper_core::log::StoredChunk;

use super::encode::Encoder;

/// The longest piece of an answer kept in the trailer.
pub const MAX_ANSWER_KEPT: usize = 4096;

/// Why a batch was refused.
#[derive(Debug)]
pub(super) struct Refusal<'a> {
    pub sink: &'a str,
    pub uri: &'a str,
    pub status: u16,
    /// The answer's body, as far as it was read.
    pub answer: &'a str,
}

/// The answer as it goes into a trailer and a log line: lossy UTF-8, cut
/// at [`MAX_ANSWER_KEPT`] bytes (on a character boundary).
pub(super) fn answer_text(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let mut end = text.len().min(MAX_ANSWER_KEPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Appends `chunks`' records and the trailer to `path` and syncs it.
/// Returns the number of records written. A file that would pass `limit`
/// bytes is not written: a retryable error, so the batch stays in the log.
pub(super) fn append(
    path: &Path,
    limit: u64,
    encoder: &mut Encoder,
    chunks: &[StoredChunk],
    refusal: &Refusal<'_>,
) -> Result<u64, ComponentError> {
    let mut out = Vec::new();
    for chunk in chunks {
        encoder.ndjson_into(chunk, &mut out)?;
    }
    let records: u64 = chunks
        .iter()
        .map(|chunk| chunk.end_offset() - chunk.first_offset())
        .sum();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let trailer = serde_json::json!({
        "shipper_dead_letter": {
            "sink": refusal.sink,
            "uri": refusal.uri,
            "status": refusal.status,
            "answer": refusal.answer,
            "first_offset": chunks.first().map_or(0, StoredChunk::first_offset),
            "end_offset": chunks.last().map_or(0, StoredChunk::end_offset),
            "records": records,
            "unix_ms": unix_ms,
        }
    });
    serde_json::to_writer(&mut out, &trailer).expect("a JSON value serializes");
    out.push(b'\n');
    let error = |e: std::io::Error| {
        ComponentError::Retryable(format!(
            "http sink: writing the dead-letter file {}: {e}",
            path.display()
        ))
    };
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    if size + out.len() as u64 > limit {
        return Err(ComponentError::Retryable(format!(
            "http sink: the dead-letter file {} holds {size} bytes; this refused batch \
             ({} bytes) would pass dead_letter_max_bytes ({limit}): it stays in the log and \
             is tried again — move the file away or raise the limit",
            path.display(),
            out.len(),
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        shipper_core::log::modes::create_dir(parent).map_err(error)?;
    }
    // Records refused by the backend: as private as the log they came from.
    let mut file = shipper_core::log::modes::file_options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(error)?;
    file.write_all(&out)
        .and_then(|()| file.sync_data())
        .map_err(error)?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_cut_on_a_character_boundary() {
        assert_eq!(answer_text(b"too large"), "too large");
        assert_eq!(answer_text(b"\xffx"), "\u{fffd}x");
        let long = "é".repeat(MAX_ANSWER_KEPT);
        let cut = answer_text(long.as_bytes());
        assert!(cut.len() <= MAX_ANSWER_KEPT && cut.len() >= MAX_ANSWER_KEPT - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
