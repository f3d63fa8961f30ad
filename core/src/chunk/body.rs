//! Decoding a chunk body back into records, with a bound on the
//! decompressed size (a zstd bomb costs no memory beyond what the header
//! declares, and the header's figure is itself bounded).

use std::collections::HashMap;
use std::sync::Arc;

use super::dictionary::Dictionaries;
use super::frame::{BodyLayout, ChunkView, MAX_UNCOMPRESSED_LEN};
use super::Codec;
use crate::{Error, Result};

/// A reusable decompression context and output buffer, and the
/// dictionaries it may decode with.
#[derive(Default)]
pub struct Decoder {
    context: Option<zstd::bulk::Decompressor<'static>>,
    buffer: Vec<u8>,
    dictionaries: Option<Arc<Dictionaries>>,
    /// A context per dictionary used so far, the dictionary loaded.
    with_dictionary: HashMap<u32, zstd::bulk::Decompressor<'static>>,
}

impl Decoder {
    /// A decoder that finds the dictionaries chunks name in `dictionaries`
    /// (a log's, [`crate::log::Log::dictionaries`]). A default decoder
    /// refuses chunks compressed with a dictionary.
    pub fn with_dictionaries(dictionaries: Arc<Dictionaries>) -> Decoder {
        Decoder {
            dictionaries: Some(dictionaries),
            ..Decoder::default()
        }
    }

    /// The context for `chunk`: the plain one, or the one of its dictionary.
    fn context_for(
        &mut self,
        chunk: &ChunkView<'_>,
    ) -> Result<&mut zstd::bulk::Decompressor<'static>> {
        let id = chunk.dict_id();
        if id == 0 {
            return match self.context {
                Some(ref mut context) => Ok(context),
                None => Ok(self.context.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| Error::Codec(format!("zstd context: {e}")))?,
                )),
            };
        }
        if !self.with_dictionary.contains_key(&id) {
            let dictionary = self
                .dictionaries
                .as_ref()
                .and_then(|d| d.get(id))
                .ok_or_else(|| {
                    Error::Codec(format!(
                        "chunk at offset {} needs zstd dictionary {id}, which this reader does not hold",
                        chunk.first_offset()
                    ))
                })?;
            let context = zstd::bulk::Decompressor::with_dictionary(&dictionary)
                .map_err(|e| Error::Codec(format!("zstd dictionary {id}: {e}")))?;
            self.with_dictionary.insert(id, context);
        }
        Ok(self.with_dictionary.get_mut(&id).expect("inserted above"))
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffer_capacity", &self.buffer.capacity())
            .finish()
    }
}

/// A decoded chunk body; borrows the chunk (codec `none`) or the decoder.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    bytes: &'a [u8],
    layout: BodyLayout,
    record_count: u32,
}

/// The most records the body `chunk` declares can hold: a record takes at
/// least one byte (its newline) in a `Lines` body, four (its length) in a
/// length-prefixed one.
pub fn record_capacity(chunk: &ChunkView<'_>) -> usize {
    match chunk.layout() {
        BodyLayout::Lines => chunk.uncompressed_len(),
        BodyLayout::LengthPrefixed => chunk.uncompressed_len() / 4,
    }
}

/// Checks, without decompressing, that the body of `chunk` is what its
/// header says: for zstd exactly one frame whose header declares the
/// chunk's uncompressed size (which zstd enforces when it decodes: a body
/// that inflates beyond it fails instead of allocating); for `none` a body
/// of that size. Costs a walk over the frame's block headers.
///
/// The record count is bounded by that size too: a record takes at least
/// one byte (its newline) in a `Lines` body and four (its length) in a
/// length-prefixed one, so a header cannot claim more records than its
/// body can hold (each record takes an offset wherever it is stored).
///
/// A body can pass this and still fail to decode (its compressed blocks
/// can be damaged on purpose with a valid CRC); [`decode_body`] is the full
/// check.
pub fn check_body(chunk: &ChunkView<'_>) -> Result<()> {
    let declared = chunk.uncompressed_len();
    let body = chunk.body();
    let at = chunk.first_offset();
    if !chunk.is_loss_marker() && chunk.record_count() as usize > record_capacity(chunk) {
        return Err(Error::Corruption(format!(
            "chunk at offset {at} declares {} records, more than its {declared}-byte body can hold",
            chunk.record_count()
        )));
    }
    match chunk.codec() {
        _ if chunk.is_loss_marker() => Ok(()),
        Codec::None if body.len() == declared => Ok(()),
        Codec::None => Err(Error::Corruption(format!(
            "chunk at offset {at} declares {declared} bytes but stores {}",
            body.len()
        ))),
        Codec::Zstd => {
            if declared > MAX_UNCOMPRESSED_LEN {
                return Err(Error::Corruption(format!(
                    "chunk at offset {at}: declared body size {declared} too large"
                )));
            }
            match zstd::zstd_safe::get_frame_content_size(body) {
                Ok(Some(size)) if size == declared as u64 => {}
                Ok(Some(size)) => {
                    return Err(Error::Corruption(format!(
                        "chunk at offset {at}: its zstd frame declares {size} bytes, the chunk {declared}"
                    )))
                }
                Ok(None) => {
                    return Err(Error::Corruption(format!(
                        "chunk at offset {at}: its zstd frame does not declare its size"
                    )))
                }
                Err(_) => {
                    return Err(Error::Corruption(format!(
                        "chunk at offset {at}: its body is not a zstd frame"
                    )))
                }
            }
            match zstd::zstd_safe::find_frame_compressed_size(body) {
                Ok(len) if len == body.len() => Ok(()),
                Ok(len) => Err(Error::Corruption(format!(
                    "chunk at offset {at}: its zstd frame ends at byte {len} of a {}-byte body",
                    body.len()
                ))),
                Err(code) => Err(Error::Corruption(format!(
                    "chunk at offset {at}: broken zstd frame: {}",
                    zstd::zstd_safe::get_error_name(code)
                ))),
            }
        }
    }
}

/// Decompresses (if needed) the body of `chunk`, checking that it has the
/// declared size. The result borrows `decoder`'s buffer or the chunk.
pub fn decode_body<'a>(chunk: &ChunkView<'a>, decoder: &'a mut Decoder) -> Result<Body<'a>> {
    let declared = chunk.uncompressed_len();
    if chunk.is_loss_marker() {
        return Ok(Body {
            bytes: &[],
            layout: BodyLayout::Lines,
            record_count: 0,
        });
    }
    let bytes: &'a [u8] = match chunk.codec() {
        Codec::None => {
            if chunk.body().len() != declared {
                return Err(Error::Corruption(format!(
                    "chunk at offset {} declares {declared} bytes but stores {}",
                    chunk.first_offset(),
                    chunk.body().len()
                )));
            }
            chunk.body()
        }
        Codec::Zstd => {
            if declared > MAX_UNCOMPRESSED_LEN {
                return Err(Error::Corruption(format!(
                    "declared body size {declared} too large"
                )));
            }
            let mut buffer = std::mem::take(&mut decoder.buffer);
            buffer.clear();
            buffer.reserve(declared);
            let context = match decoder.context_for(chunk) {
                Ok(context) => context,
                Err(error) => {
                    decoder.buffer = buffer;
                    return Err(error);
                }
            };
            // decompress_to_buffer never writes past the Vec's capacity, so a
            // body that inflates beyond its declared size fails here instead
            // of allocating.
            let written = context.decompress_to_buffer(chunk.body(), &mut buffer);
            decoder.buffer = buffer;
            let written = written
                .map_err(|e| {
                    Error::Corruption(format!(
                        "chunk at offset {}: zstd body does not decode to its declared {declared} bytes: {e}",
                        chunk.first_offset()
                    ))
                })?;
            if written != declared {
                return Err(Error::Corruption(format!(
                    "chunk at offset {} decodes to {written} bytes, header says {declared}",
                    chunk.first_offset()
                )));
            }
            &decoder.buffer[..]
        }
    };
    Ok(Body {
        bytes,
        layout: chunk.layout(),
        record_count: chunk.record_count(),
    })
}

impl<'a> Body<'a> {
    /// The uncompressed body bytes (NDJSON when the layout is `Lines`).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The layout of the records.
    pub fn layout(&self) -> BodyLayout {
        self.layout
    }
    /// Iterates the record payloads (without their newline or length prefix).
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.bytes,
            layout: self.layout,
            remaining: self.record_count,
        }
    }
}

/// Why a body does not hold the records its header declares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The body ended before the declared number of records.
    #[error("body ends with {missing} declared records missing")]
    Short { missing: u32 },
    /// Bytes remain after the declared number of records.
    #[error("{0} bytes after the last declared record")]
    Trailing(usize),
}

/// Iterator over the records of a [`Body`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    layout: BodyLayout,
    remaining: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.rest.is_empty() {
                return None;
            }
            let trailing = self.rest.len();
            self.rest = &[];
            return Some(Err(RecordError::Trailing(trailing)));
        }
        let record = match self.layout {
            BodyLayout::Lines => match memchr::memchr(b'\n', self.rest) {
                Some(end) => {
                    let record = &self.rest[..end];
                    self.rest = &self.rest[end + 1..];
                    Some(record)
                }
                None => None,
            },
            BodyLayout::LengthPrefixed => {
                if self.rest.len() < 4 {
                    None
                } else {
                    let len =
                        u32::from_le_bytes(self.rest[..4].try_into().expect("4 bytes")) as usize;
                    if self.rest.len() - 4 < len {
                        None
                    } else {
                        let record = &self.rest[4..4 + len];
                        self.rest = &self.rest[4 + len..];
                        Some(record)
                    }
                }
            }
        };
        match record {
            Some(record) => {
                self.remaining -= 1;
                Some(Ok(record))
            }
            None => {
                let error = RecordError::Short {
                    missing: self.remaining,
                };
                self.remaining = 0;
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::frame::HeaderFields;
    use crate::chunk::seal_for_test;

    fn frame_with(
        body: &[u8],
        codec: Codec,
        layout: BodyLayout,
        count: u32,
        declared: u32,
    ) -> Vec<u8> {
        let header = HeaderFields {
            codec,
            layout,
            record_count: count,
            dict_id: 0,
            min_ts: 0,
            max_ts: 0,
            uncompressed_len: declared,
            stream: "s",
            component: "c",
            source_position: &[],
        };
        let mut frame = Vec::new();
        header.write(body.len(), &mut frame);
        frame.extend_from_slice(body);
        seal_for_test(&mut frame, 0);
        frame
    }

    #[test]
    fn zstd_bomb_is_refused_without_inflating() {
        // 64 MiB of zeros compress to a few KiB; the header claims 1 KiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
        let frame = frame_with(&bomb, Codec::Zstd, BodyLayout::Lines, 1, 1024);
        let view = ChunkView::parse(&frame).unwrap();
        let mut decoder = Decoder::default();
        let error = decode_body(&view, &mut decoder).unwrap_err();
        assert!(error.is_corruption(), "{error}");
        assert!(
            decoder.buffer.capacity() < 1 << 20,
            "decoder grew to {}",
            decoder.buffer.capacity()
        );
    }

    #[test]
    fn bodies_that_disagree_with_their_header_are_errors() {
        let frame = frame_with(b"a\nb\n", Codec::None, BodyLayout::Lines, 3, 4);
        let view = ChunkView::parse(&frame).unwrap();
        let mut decoder = Decoder::default();
        let body = decode_body(&view, &mut decoder).unwrap();
        let results: Vec<_> = body.records().collect();
        assert_eq!(
            results.last(),
            Some(&Err(RecordError::Short { missing: 1 }))
        );

        let frame = frame_with(b"a\nb\nc\n", Codec::None, BodyLayout::Lines, 2, 6);
        let view = ChunkView::parse(&frame).unwrap();
        let body = decode_body(&view, &mut decoder).unwrap();
        assert_eq!(body.records().last(), Some(Err(RecordError::Trailing(2))));

        let frame = frame_with(
            &[200, 0, 0, 0, 1],
            Codec::None,
            BodyLayout::LengthPrefixed,
            1,
            5,
        );
        let view = ChunkView::parse(&frame).unwrap();
        let body = decode_body(&view, &mut decoder).unwrap();
        assert!(body.records().next().unwrap().is_err());

        let frame = frame_with(b"abc", Codec::None, BodyLayout::Lines, 1, 9);
        let view = ChunkView::parse(&frame).unwrap();
        assert!(decode_body(&view, &mut decoder)
            .unwrap_err()
            .is_corruption());

        let frame = frame_with(b"not zstd", Codec::Zstd, BodyLayout::Lines, 1, 9);
        let view = ChunkView::parse(&frame).unwrap();
        assert!(decode_body(&view, &mut decoder)
            .unwrap_err()
            .is_corruption());
    }

    #[test]
    fn every_flipped_bit_in_a_frame_is_detected() {
        let frame = frame_with(b"x\ny\n", Codec::None, BodyLayout::Lines, 2, 4);
        for at in 0..frame.len() {
            for bit in 0..8 {
                let mut damaged = frame.clone();
                damaged[at] ^= 1 << bit;
                assert!(
                    ChunkView::parse(&damaged).is_err(),
                    "flip of bit {bit} at {at} not detected"
                );
            }
        }
    }
}
