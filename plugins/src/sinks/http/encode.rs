//! Request bodies: stored frames as they are (shipper protocol), stored
//! zstd bodies back to back (NDJSON over zstd), or records decoded and
//! encoded again (everything else).
//!
//! A body is a list of [`Bytes`] pieces. A piece taken from the log is
//! `Bytes::from_owner` of the [`StoredChunk`] (sliced to its body where
//! only the body goes): it points into the segment's mapping and keeps the
//! mapping alive, so the compressed bytes are never copied by the sink.

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use shipper_core::chunk::{decode_body, BodyLayout, ChunkView, Codec, Decoder};
use shipper_core::component::ComponentError;
use shipper_core::log::StoredChunk;

/// What a request body is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpProtocol {
    /// Stored chunk frames back to back (`docs/protocol.md`).
    #[default]
    Shipper,
    /// One record per line.
    Ndjson,
    /// One JSON array of the records.
    Json,
}

/// How an NDJSON or JSON body is compressed (`Content-Encoding`). The
/// shipper protocol sends stored frames as they are and ignores this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCompression {
    /// Plain.
    None,
    /// gzip at a level (1-9).
    Gzip {
        /// The level.
        level: u32,
    },
    /// zstd at a level (1-22); chunks stored as zstd lines pass through.
    Zstd {
        /// The level, for what has to be compressed again.
        level: i32,
    },
}

impl HttpCompression {
    /// The `Content-Encoding` value, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            HttpCompression::None => None,
            HttpCompression::Gzip { .. } => Some("gzip"),
            HttpCompression::Zstd { .. } => Some("zstd"),
        }
    }
}

/// One request, ready to be sent (and sent again: cloning the pieces only
/// counts references).
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub pieces: Vec<Bytes>,
    /// Body length.
    pub len: u64,
    /// The records' uncompressed size (NDJSON bytes, newlines included).
    pub raw_len: u64,
    /// Offset of the first record of the first chunk.
    pub first_offset: u64,
    /// One past the last record of the last chunk.
    pub end_offset: u64,
    /// Records in the request (its chunks may leave gaps between them).
    pub records: u64,
    /// `Shipper-After`: the end offset of the request sent before this one
    /// and still unanswered (pipelined shipper-protocol requests).
    pub after: Option<u64>,
    /// `Shipper-From`: where the sink's data for the receiver continues
    /// (every record below was acknowledged), for a request that follows
    /// no unanswered one.
    pub from: Option<u64>,
}

/// Builds request bodies; keeps its decompression and compression
/// contexts across requests.
#[derive(Default)]
pub(super) struct Encoder {
    decoder: Decoder,
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

impl Encoder {
    /// Decodes with `decoder` from now on (one that holds the log's
    /// dictionaries).
    pub(super) fn set_decoder(&mut self, decoder: Decoder) {
        self.decoder = decoder;
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

/// The stored chunk as a zero-copy piece, from byte `from` of its frame.
fn stored_piece(chunk: &StoredChunk, from: usize) -> Bytes {
    Bytes::from_owner(chunk.clone()).slice(from..)
}

/// Where the body starts in a frame.
fn body_start(view: &ChunkView<'_>) -> usize {
    view.frame().len() - view.body().len()
}

/// True when the chunk's stored body is already NDJSON in `codec`, so that
/// it can be sent as it is: newline-terminated records, that codec, no
/// dictionary.
fn passes_through(view: &ChunkView<'_>, codec: Codec) -> bool {
    view.layout() == BodyLayout::Lines && view.codec() == codec && view.dict_id() == 0
}

/// True when a request of these chunks needs CPU work (decompression,
/// compression) rather than only references to stored bytes.
pub(super) fn needs_work(
    protocol: HttpProtocol,
    compression: HttpCompression,
    chunks: &[StoredChunk],
) -> bool {
    let passthrough = match (protocol, compression) {
        (HttpProtocol::Shipper, _) => return false,
        (HttpProtocol::Ndjson, HttpCompression::Zstd { .. }) => Codec::Zstd,
        (HttpProtocol::Ndjson, HttpCompression::None) => Codec::None,
        _ => return true,
    };
    !chunks
        .iter()
        .all(|chunk| passes_through(&chunk.view(), passthrough))
}

fn corrupt(chunk: &StoredChunk, error: impl std::fmt::Display) -> ComponentError {
    ComponentError::undecodable(chunk.first_offset(), error)
}

impl Encoder {
    /// Appends the records of `chunk` to `out`, one per line.
    pub fn ndjson_into(
        &mut self,
        chunk: &StoredChunk,
        out: &mut Vec<u8>,
    ) -> Result<(), ComponentError> {
        let view = chunk.view();
        let body = decode_body(&view, &mut self.decoder).map_err(|e| corrupt(chunk, e))?;
        match body.layout() {
            BodyLayout::Lines => out.extend_from_slice(body.bytes()),
            BodyLayout::LengthPrefixed => {
                for record in body.records() {
                    out.extend_from_slice(record.map_err(|e| corrupt(chunk, e))?);
                    out.push(b'\n');
                }
            }
        }
        Ok(())
    }

    /// Appends the records of `chunk` to `out` as JSON array elements;
    /// `written` counts the elements so far.
    fn json_into(
        &mut self,
        chunk: &StoredChunk,
        out: &mut Vec<u8>,
        written: &mut u64,
    ) -> Result<(), ComponentError> {
        let view = chunk.view();
        let body = decode_body(&view, &mut self.decoder).map_err(|e| corrupt(chunk, e))?;
        for record in body.records() {
            if *written > 0 {
                out.push(b',');
            }
            out.extend_from_slice(record.map_err(|e| corrupt(chunk, e))?);
            *written += 1;
        }
        Ok(())
    }

    fn zstd_frame(&mut self, level: i32, plain: &[u8]) -> Result<Bytes, ComponentError> {
        if self.zstd.as_ref().is_none_or(|(l, _)| *l != level) {
            let compressor = zstd::bulk::Compressor::new(level)
                .map_err(|e| ComponentError::Fatal(format!("zstd level {level}: {e}")))?;
            self.zstd = Some((level, compressor));
        }
        let (_, compressor) = self.zstd.as_mut().expect("set above");
        compressor
            .compress(plain)
            .map(Bytes::from)
            .map_err(|e| ComponentError::Fatal(format!("zstd level {level}: {e}")))
    }

    fn compress(
        &mut self,
        compression: HttpCompression,
        plain: Vec<u8>,
    ) -> Result<Bytes, ComponentError> {
        match compression {
            HttpCompression::None => Ok(Bytes::from(plain)),
            HttpCompression::Zstd { level } => self.zstd_frame(level, &plain),
            HttpCompression::Gzip { level } => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(plain.len() / 4),
                    flate2::Compression::new(level),
                );
                encoder
                    .write_all(&plain)
                    .and_then(|()| encoder.finish())
                    .map(Bytes::from)
                    .map_err(|e| ComponentError::Fatal(format!("gzip: {e}")))
            }
        }
    }

    /// The request for `chunks` (at least one, in offset order).
    pub fn encode(
        &mut self,
        protocol: HttpProtocol,
        compression: HttpCompression,
        chunks: &[StoredChunk],
    ) -> Result<Request, ComponentError> {
        let mut pieces = Vec::new();
        let mut raw_len = 0u64;
        match (protocol, compression) {
            (HttpProtocol::Shipper, _) => {
                for chunk in chunks {
                    raw_len += chunk.view().uncompressed_len() as u64;
                    pieces.push(stored_piece(chunk, 0));
                }
            }
            (HttpProtocol::Ndjson, HttpCompression::Zstd { .. } | HttpCompression::None) => {
                let codec = match compression {
                    HttpCompression::None => Codec::None,
                    _ => Codec::Zstd,
                };
                // Runs of chunks that cannot pass through are decoded into
                // `pending` and become one piece (one zstd frame) each:
                // concatenated zstd frames decompress as one stream.
                let mut pending = Vec::new();
                for chunk in chunks {
                    let view = chunk.view();
                    if passes_through(&view, codec) {
                        if !pending.is_empty() {
                            let plain = std::mem::take(&mut pending);
                            raw_len += plain.len() as u64;
                            pieces.push(self.compress(compression, plain)?);
                        }
                        raw_len += view.uncompressed_len() as u64;
                        pieces.push(stored_piece(chunk, body_start(&view)));
                    } else {
                        self.ndjson_into(chunk, &mut pending)?;
                    }
                }
                if !pending.is_empty() {
                    raw_len += pending.len() as u64;
                    pieces.push(self.compress(compression, pending)?);
                }
            }
            (HttpProtocol::Ndjson, HttpCompression::Gzip { .. }) => {
                let mut plain = Vec::new();
                for chunk in chunks {
                    self.ndjson_into(chunk, &mut plain)?;
                }
                raw_len = plain.len() as u64;
                pieces.push(self.compress(compression, plain)?);
            }
            (HttpProtocol::Json, _) => {
                let mut plain = vec![b'['];
                let mut written = 0;
                for chunk in chunks {
                    self.json_into(chunk, &mut plain, &mut written)?;
                }
                plain.push(b']');
                raw_len = plain.len() as u64;
                pieces.push(self.compress(compression, plain)?);
            }
        }
        pieces.retain(|piece| !piece.is_empty());
        Ok(Request {
            len: pieces.iter().map(|piece| piece.len() as u64).sum(),
            pieces,
            raw_len,
            first_offset: chunks.first().map_or(0, StoredChunk::first_offset),
            end_offset: chunks.last().map_or(0, StoredChunk::end_offset),
            records: chunks
                .iter()
                .map(|chunk| chunk.end_offset() - chunk.first_offset())
                .sum(),
            after: None,
            from: None,
        })
    }
}

/// A request body of pieces, sent in order, with its exact length (so the
/// request carries `Content-Length`, as `docs/protocol.md` shows).
#[derive(Debug)]
pub(super) struct Pieces {
    pieces: VecDeque<Bytes>,
    remaining: u64,
}

impl Pieces {
    pub fn new(request: &Request) -> Self {
        Pieces {
            pieces: request.pieces.iter().cloned().collect(),
            remaining: request.len,
        }
    }
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.pieces.pop_front().map(|piece| {
            self.remaining -= piece.len() as u64;
            Ok(Frame::data(piece))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Splits `chunks` into requests of at most `max_records` records and
/// `max_bytes` stored bytes each; a chunk is never split, so a chunk larger
/// than a limit goes alone.
pub(super) fn split(
    sizes: impl IntoIterator<Item = (u64, u64)>,
    max_records: u64,
    max_bytes: u64,
) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut records, mut bytes) = (0, 0u64, 0u64);
    let mut count = 0;
    for (index, (chunk_records, chunk_bytes)) in sizes.into_iter().enumerate() {
        if index > start
            && (records + chunk_records > max_records || bytes + chunk_bytes > max_bytes)
        {
            ranges.push(start..index);
            (start, records, bytes) = (index, 0, 0);
        }
        records += chunk_records;
        bytes += chunk_bytes;
        count = index + 1;
    }
    if count > start {
        ranges.push(start..count);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_by_records_and_bytes_never_inside_a_chunk() {
        // (chunk sizes as (records, bytes), max_records, max_bytes, requests
        // as (first chunk, end chunk))
        type Case = (&'static [(u64, u64)], u64, u64, &'static [(usize, usize)]);
        let cases: [Case; 6] = [
            (&[], 10, 100, &[]),
            (&[(5, 10), (5, 10), (5, 10)], 10, 100, &[(0, 2), (2, 3)]),
            (&[(5, 10), (5, 10), (5, 10)], 100, 25, &[(0, 2), (2, 3)]),
            (&[(5, 10), (5, 10), (5, 10)], 100, 100, &[(0, 3)]),
            (&[(50, 10), (1, 10)], 10, 100, &[(0, 1), (1, 2)]),
            (&[(1, 500), (1, 10), (1, 10)], 10, 100, &[(0, 1), (1, 3)]),
        ];
        for (sizes, max_records, max_bytes, expected) in cases {
            let requests: Vec<(usize, usize)> =
                split(sizes.iter().copied(), max_records, max_bytes)
                    .into_iter()
                    .map(|range| (range.start, range.end))
                    .collect();
            assert_eq!(requests, expected, "{sizes:?} {max_records} {max_bytes}");
        }
    }
}
