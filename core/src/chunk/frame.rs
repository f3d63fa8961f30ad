//! The chunk frame: the unit stored in a segment and sent on the wire.
//!
//! Byte layout (little-endian, see `docs/format.md`):
//!
//! ```text
//! off len field
//!   0   4 magic "SHC1"
//!   4   4 crc32c of bytes [24, frame_len) then bytes [8, 24)
//!   8   4 frame_len: header + body (padding after it not included)
//!  12   2 header_len: fixed part + stream + component + source position
//!  14   1 codec (0 none, 1 zstd)
//!  15   1 flags (bit 0: body is length-prefixed, else newline-terminated)
//!  16   8 first_offset
//!  24   4 record_count
//!  28   4 dictionary id (0: none)
//!  32   8 min_ts (unix nanoseconds)
//!  40   8 max_ts (unix nanoseconds)
//!  48   4 uncompressed body length
//!  52   1 stream name length
//!  53   1 component name length
//!  54   2 source position length
//!  56   . stream name, component name, source position, then the body
//! ```
//!
//! The CRC covers everything after itself, so a damaged length, offset or
//! body byte is detected. It runs over the part after the first offset
//! first and the 16 bytes from the frame length to the first offset last:
//! the producer checksums the (large) rest once, in its own thread, and the
//! log writer, which stamps the offset, only extends that by 16 bytes; the magic lets recovery find the next chunk after
//! a damaged one.

use super::Codec;

/// Magic at the start of every chunk frame.
pub const CHUNK_MAGIC: [u8; 4] = *b"SHC1";
/// Size of the fixed part of the chunk header.
pub const FIXED_HEADER_LEN: usize = 56;
/// Chunks start at multiples of this in a segment.
pub const FRAME_ALIGN: usize = 8;
/// Largest frame the format accepts (1 GiB); anything larger is corruption.
pub const MAX_FRAME_LEN: usize = 1 << 30;
/// Largest uncompressed body a chunk may declare (1 GiB); bounds decompression.
pub const MAX_UNCOMPRESSED_LEN: usize = 1 << 30;

/// Offsets stay below this (2^62). A larger offset anywhere on disk (chunk,
/// cursor, segment) is corruption: it leaves room so that no arithmetic on
/// offsets can overflow, whatever the bytes say.
pub const MAX_OFFSET: u64 = 1 << 62;

/// Flag: the body is a sequence of `u32` length-prefixed records.
pub const FLAG_LENGTH_PREFIXED: u8 = 1;
/// Flag: a loss marker. Recovery writes it over damaged bytes it repaired;
/// it holds no records and says that offsets `[first_offset, first_offset +
/// record_count)` were lost. Readers step over it and report the gap.
pub const FLAG_LOST: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_LENGTH_PREFIXED | FLAG_LOST;

pub(crate) const OFF_CRC: usize = 4;
pub(crate) const OFF_FRAME_LEN: usize = 8;
pub(crate) const OFF_FIRST_OFFSET: usize = 16;

/// How records are laid out in an uncompressed chunk body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyLayout {
    /// Every record is one line, terminated by `\n`: the body is NDJSON-ready.
    Lines,
    /// Every record is a little-endian `u32` length followed by its bytes.
    LengthPrefixed,
}

/// Why bytes are not a valid chunk frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame needs; at the end of a log this is a torn write.
    Truncated { needed: usize, available: usize },
    /// The magic is wrong: not the start of a chunk.
    BadMagic,
    /// A length field is out of range.
    BadLength(&'static str),
    /// The checksum does not match.
    BadCrc { stored: u32, computed: u32 },
    /// Unknown codec or flags: written by a newer format, or damaged.
    Unsupported(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { needed, available } => {
                write!(
                    f,
                    "truncated chunk: needs {needed} bytes, {available} present"
                )
            }
            FrameError::BadMagic => f.write_str("no chunk magic"),
            FrameError::BadLength(what) => write!(f, "invalid {what}"),
            FrameError::BadCrc { stored, computed } => {
                write!(
                    f,
                    "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            FrameError::Unsupported(what) => write!(f, "unsupported {what}"),
        }
    }
}

/// Metadata written into a chunk header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderFields<'a> {
    pub codec: Codec,
    pub layout: BodyLayout,
    pub record_count: u32,
    pub dict_id: u32,
    pub min_ts: u64,
    pub max_ts: u64,
    pub uncompressed_len: u32,
    pub stream: &'a str,
    pub component: &'a str,
    pub source_position: &'a [u8],
}

impl HeaderFields<'_> {
    pub(crate) fn header_len(&self) -> usize {
        FIXED_HEADER_LEN + self.stream.len() + self.component.len() + self.source_position.len()
    }

    /// Appends the header to `out`. The frame length is written for a body of
    /// `body_len` bytes; first offset and CRC are left zero for
    /// [`seal_frame`].
    pub(crate) fn write(&self, body_len: usize, out: &mut Vec<u8>) {
        let header_len = self.header_len();
        let frame_len = (header_len + body_len) as u32;
        out.extend_from_slice(&CHUNK_MAGIC);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&frame_len.to_le_bytes());
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
        out.push(self.codec as u8);
        out.push(match self.layout {
            BodyLayout::Lines => 0,
            BodyLayout::LengthPrefixed => FLAG_LENGTH_PREFIXED,
        });
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&self.record_count.to_le_bytes());
        out.extend_from_slice(&self.dict_id.to_le_bytes());
        out.extend_from_slice(&self.min_ts.to_le_bytes());
        out.extend_from_slice(&self.max_ts.to_le_bytes());
        out.extend_from_slice(&self.uncompressed_len.to_le_bytes());
        out.push(self.stream.len() as u8);
        out.push(self.component.len() as u8);
        out.extend_from_slice(&(self.source_position.len() as u16).to_le_bytes());
        out.extend_from_slice(self.stream.as_bytes());
        out.extend_from_slice(self.component.as_bytes());
        out.extend_from_slice(self.source_position);
    }
}

/// Stamps the first offset into a complete frame and computes its CRC.
///
/// # Panics
/// If `frame` is shorter than a fixed header (an internal invariant: frames
/// are only built by [`HeaderFields::write`]).
pub(crate) fn seal_frame(frame: &mut [u8], first_offset: u64) {
    let tail = tail_crc(frame);
    seal_frame_with(frame, first_offset, tail);
}

/// A loss marker of exactly `len` bytes (at least [`FIXED_HEADER_LEN`],
/// a multiple of [`FRAME_ALIGN`]) for the lost offsets `[first, first + lost)`.
pub(crate) fn loss_marker(first: u64, lost: u32, len: usize) -> Vec<u8> {
    debug_assert!(len >= FIXED_HEADER_LEN && len % FRAME_ALIGN == 0);
    let body_len = len - FIXED_HEADER_LEN;
    let header = HeaderFields {
        codec: Codec::None,
        layout: BodyLayout::Lines,
        record_count: lost,
        dict_id: 0,
        min_ts: 0,
        max_ts: 0,
        uncompressed_len: body_len as u32,
        stream: "",
        component: "",
        source_position: &[],
    };
    let mut frame = Vec::with_capacity(len);
    header.write(body_len, &mut frame);
    frame[15] |= FLAG_LOST;
    frame.resize(len, 0);
    seal_frame(&mut frame, first);
    frame
}

/// CRC-32C of the frame bytes after the first-offset field (`[24, len)`),
/// computed by the producer so the log writer only has to extend it by 16
/// bytes (see [`seal_frame_with`]).
pub(crate) fn tail_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c(&frame[OFF_FIRST_OFFSET + 8..])
}

/// [`seal_frame`] with the CRC of `[24, len)` already known: the writer's
/// cost no longer grows with the frame.
pub(crate) fn seal_frame_with(frame: &mut [u8], first_offset: u64, tail_crc: u32) {
    let tail = OFF_FIRST_OFFSET + 8;
    frame[OFF_FIRST_OFFSET..tail].copy_from_slice(&first_offset.to_le_bytes());
    let crc = crc32c::crc32c_append(tail_crc, &frame[OFF_FRAME_LEN..tail]);
    frame[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC a frame should carry: `[24, len)` then `[8, 24)`.
fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(tail_crc(frame), &frame[OFF_FRAME_LEN..OFF_FIRST_OFFSET + 8])
}

/// Rounds a frame length up to the next chunk boundary.
pub const fn padded_len(frame_len: usize) -> usize {
    (frame_len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the frame length at the start of `bytes` without validating the
/// frame; `None` when fewer than a fixed header is present or the magic is
/// absent.
pub fn peek_frame_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < FIXED_HEADER_LEN || bytes[..4] != CHUNK_MAGIC {
        return None;
    }
    Some(u32_at(bytes, OFF_FRAME_LEN) as usize)
}

/// A validated chunk frame borrowed from a segment, a request body or a buffer.
#[derive(Clone, Copy)]
pub struct ChunkView<'a> {
    frame: &'a [u8],
}

impl std::fmt::Debug for ChunkView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkView")
            .field("first_offset", &self.first_offset())
            .field("record_count", &self.record_count())
            .field("stream", &String::from_utf8_lossy(self.stream()))
            .field("codec", &self.codec())
            .field("frame_len", &self.frame.len())
            .finish()
    }
}

impl<'a> ChunkView<'a> {
    /// Validates the frame at the start of `bytes` (magic, lengths, CRC, codec)
    /// and returns it. Trailing bytes after the frame are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FrameError> {
        Self::parse_checked(bytes, true)
    }

    /// [`ChunkView::parse`] without the CRC: every length and field is
    /// still checked, so reading the header is safe, but the bytes may be
    /// damaged. For scans of a log's own segments, which were verified
    /// when it was opened and never change below the watermark.
    pub(crate) fn parse_without_crc(bytes: &'a [u8]) -> Result<Self, FrameError> {
        Self::parse_checked(bytes, false)
    }

    fn parse_checked(bytes: &'a [u8], check_crc: bool) -> Result<Self, FrameError> {
        if bytes.len() < FIXED_HEADER_LEN {
            if bytes.len() >= 4 && bytes[..4] != CHUNK_MAGIC {
                return Err(FrameError::BadMagic);
            }
            return Err(FrameError::Truncated {
                needed: FIXED_HEADER_LEN,
                available: bytes.len(),
            });
        }
        if bytes[..4] != CHUNK_MAGIC {
            return Err(FrameError::BadMagic);
        }
        let frame_len = u32_at(bytes, OFF_FRAME_LEN) as usize;
        let header_len = u16_at(bytes, 12) as usize;
        if !(FIXED_HEADER_LEN..=MAX_FRAME_LEN).contains(&frame_len) {
            return Err(FrameError::BadLength("frame length"));
        }
        if header_len < FIXED_HEADER_LEN || header_len > frame_len {
            return Err(FrameError::BadLength("header length"));
        }
        if frame_len > bytes.len() {
            return Err(FrameError::Truncated {
                needed: frame_len,
                available: bytes.len(),
            });
        }
        let frame = &bytes[..frame_len];
        let first = u64_at(frame, OFF_FIRST_OFFSET);
        match first.checked_add(u64::from(u32_at(frame, 24))) {
            Some(end) if end <= MAX_OFFSET => {}
            _ => return Err(FrameError::BadLength("offset range")),
        }
        if check_crc {
            let stored = u32_at(frame, OFF_CRC);
            let computed = frame_crc(frame);
            if stored != computed {
                return Err(FrameError::BadCrc { stored, computed });
            }
        }
        let variable = frame[52] as usize + frame[53] as usize + u16_at(frame, 54) as usize;
        if FIXED_HEADER_LEN + variable != header_len {
            return Err(FrameError::BadLength("header field lengths"));
        }
        if Codec::from_u8(frame[14]).is_none() {
            return Err(FrameError::Unsupported("codec"));
        }
        if frame[15] & !KNOWN_FLAGS != 0 {
            return Err(FrameError::Unsupported("flags"));
        }
        if u32_at(frame, 48) as usize > MAX_UNCOMPRESSED_LEN {
            return Err(FrameError::BadLength("uncompressed length"));
        }
        Ok(ChunkView { frame })
    }

    /// A view whose fixed header fields may be read without any check
    /// (the body and names are not looked at): for header-only scans of
    /// frames already verified when the log was opened.
    pub(crate) fn trusted_header(frame: &'a [u8]) -> Self {
        ChunkView { frame }
    }

    /// A frame that was validated before and has not changed since (bytes
    /// below a segment's watermark never change).
    pub(crate) fn trusted(frame: &'a [u8]) -> Self {
        debug_assert!(ChunkView::parse(frame).is_ok());
        ChunkView { frame }
    }

    /// The whole frame: header and compressed body, as stored and sent.
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }
    /// Offset of the first record.
    pub fn first_offset(&self) -> u64 {
        u64_at(self.frame, OFF_FIRST_OFFSET)
    }
    /// Number of records in the chunk.
    pub fn record_count(&self) -> u32 {
        u32_at(self.frame, 24)
    }
    /// One past the offset of the last record.
    pub fn end_offset(&self) -> u64 {
        self.first_offset() + u64::from(self.record_count())
    }
    /// Dictionary the body was compressed with (0: none).
    pub fn dict_id(&self) -> u32 {
        u32_at(self.frame, 28)
    }
    /// Earliest record timestamp, unix nanoseconds.
    pub fn min_ts(&self) -> u64 {
        u64_at(self.frame, 32)
    }
    /// Latest record timestamp, unix nanoseconds.
    pub fn max_ts(&self) -> u64 {
        u64_at(self.frame, 40)
    }
    /// Length of the body once decompressed.
    pub fn uncompressed_len(&self) -> usize {
        u32_at(self.frame, 48) as usize
    }
    /// The codec of the body.
    pub fn codec(&self) -> Codec {
        Codec::from_u8(self.frame[14]).expect("validated in parse")
    }
    /// How records are laid out in the body.
    pub fn layout(&self) -> BodyLayout {
        if self.frame[15] & FLAG_LENGTH_PREFIXED != 0 {
            BodyLayout::LengthPrefixed
        } else {
            BodyLayout::Lines
        }
    }
    /// True for a loss marker written by recovery: it holds no records, and
    /// its offset range names records lost to damage.
    pub fn is_loss_marker(&self) -> bool {
        self.frame[15] & FLAG_LOST != 0
    }

    /// The stream (collection) name. Bytes, as stored; see [`Self::stream_str`].
    pub fn stream(&self) -> &'a [u8] {
        let len = self.frame[52] as usize;
        &self.frame[FIXED_HEADER_LEN..FIXED_HEADER_LEN + len]
    }
    /// The stream name as text (names are validated as UTF-8 when written).
    pub fn stream_str(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.stream())
    }
    /// The component (source or transform) that produced the chunk.
    pub fn component(&self) -> &'a [u8] {
        let start = FIXED_HEADER_LEN + self.frame[52] as usize;
        &self.frame[start..start + self.frame[53] as usize]
    }
    /// The source position after the last record, if the source has one.
    pub fn source_position(&self) -> Option<&'a [u8]> {
        let start = FIXED_HEADER_LEN + self.frame[52] as usize + self.frame[53] as usize;
        let len = u16_at(self.frame, 54) as usize;
        (len > 0).then(|| &self.frame[start..start + len])
    }
    /// The stored (possibly compressed) body.
    pub fn body(&self) -> &'a [u8] {
        &self.frame[u16_at(self.frame, 12) as usize..]
    }
}
