//! Records and chunks: records are grouped into chunks where they are
//! produced, and each chunk is compressed once.
//!
//! ```
//! use shipper_core::chunk::{decode_body, ChunkBuilder, ChunkOptions, ChunkView, Decoder};
//!
//! let mut builder = ChunkBuilder::new("weather", "sensor", ChunkOptions::default()).unwrap();
//! builder.push(br#"{"temp":21.5}"#, 1, None).unwrap();
//! builder.push(br#"{"temp":21.7}"#, 2, None).unwrap();
//! let chunk = builder.finish().unwrap().expect("two records");
//! // The log stamps the offset; a frame read back is validated by parse.
//! let mut frame = chunk.into_frame();
//! shipper_core::chunk::seal_for_test(&mut frame, 0);
//! let view = ChunkView::parse(&frame).unwrap();
//! let mut decoder = Decoder::default();
//! let body = decode_body(&view, &mut decoder).unwrap();
//! let records: Vec<&[u8]> = body.records().map(|r| r.unwrap()).collect();
//! assert_eq!(records, [&br#"{"temp":21.5}"#[..], br#"{"temp":21.7}"#]);
//! ```

mod body;
mod builder;
pub mod dictionary;
pub mod frame;

pub use body::{check_body, decode_body, record_capacity, Body, Decoder, RecordError, Records};
pub use builder::{ChunkBuilder, ChunkOptions, ClosedChunk, Compressors, OpenChunk};
pub use dictionary::{Dictionaries, DictionaryTraining};
pub use frame::{BodyLayout, ChunkView, FrameError};

/// The compression codec of a chunk body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    pub(crate) fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A codec with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// zstd at a level (1 is fastest; 3 is zstd's default).
    Zstd { level: i32 },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 1 }
    }
}

/// Stamps a first offset and CRC into a frame built by [`ChunkBuilder`], as
/// the log writer does. For tests and examples that build frames without a log.
pub fn seal_for_test(frame: &mut [u8], first_offset: u64) {
    frame::seal_frame(frame, first_offset);
}

/// A copy of the sealed zstd chunk `frame` whose body is replaced by a zstd
/// frame that declares the chunk's uncompressed size but decodes to 1 MiB
/// of zeros, sealed again: its CRC and frame header are valid, only a
/// decoder finds it out. For tests of what receivers and sinks do with a
/// chunk damaged on purpose.
pub fn lying_body_for_test(frame: &[u8]) -> Vec<u8> {
    let view = ChunkView::parse(frame).expect("a sealed chunk frame");
    let header_len = frame.len() - view.body().len();
    let mut body = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).expect("zstd compresses");
    // Frame header: magic (4), descriptor, [window], [dictionary id], size.
    let descriptor = body[4];
    assert_eq!(descriptor >> 6, 2, "a 4-byte content size field");
    let window = usize::from(descriptor & 0x20 == 0);
    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let at = 5 + window + dictionary;
    let declared = u32::try_from(view.uncompressed_len()).expect("a small chunk");
    body[at..at + 4].copy_from_slice(&declared.to_le_bytes());
    let mut lying = frame[..header_len].to_vec();
    lying.extend_from_slice(&body);
    let len = u32::try_from(lying.len()).expect("a small chunk");
    lying[8..12].copy_from_slice(&len.to_le_bytes());
    seal_for_test(&mut lying, view.first_offset());
    lying
}

/// Current wall-clock time in unix nanoseconds (0 before 1970).
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Wall-clock time in unix nanoseconds as of the kernel's last timer tick
/// (`CLOCK_REALTIME_COARSE`: up to one tick, 1 to 4 ms, behind
/// [`now_nanos`], at a quarter of its cost). Enough for what a chunk
/// keeps of time, its records' earliest and latest, where a record
/// produced millions of times a second pays for every clock read.
pub fn coarse_now_nanos() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        u64::try_from(now.tv_sec)
            .map(|secs| secs * 1_000_000_000 + now.tv_nsec as u64)
            .unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        now_nanos()
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn the_coarse_clock_is_the_wall_clock_a_tick_late() {
        let before = now_nanos();
        let coarse = coarse_now_nanos();
        let after = now_nanos();
        assert!(coarse <= after, "coarse {coarse} after {after}");
        // A tick is at most 10 ms (HZ=100); a second leaves room for a
        // preempted test thread, not for a different clock.
        assert!(
            coarse + 1_000_000_000 >= before,
            "coarse {coarse} before {before}"
        );
    }
}
