//! Segment files: naming, the segment header, creation with preallocation.
//!
//! ```text
//! segment header, 64 bytes, little-endian
//! off len field
//!   0   8 magic "SHIPSEG\0"
//!   8   2 format version (1)
//!  10   2 header length (64)
//!  12   4 reserved (0)
//!  16   8 base offset: the offset of the segment's first record
//!  24  16 producer id
//!  40   8 creation time, unix milliseconds
//!  48   8 durable end: every record of the log below this offset was
//!         durable when the header was last written (0: unknown)
//!  56   4 flags (bit 0: loss segment, see below; others 0)
//!  60   4 crc32c of bytes [0, 60)
//! ```
//!
//! Chunks follow at byte 64, each starting at a multiple of 8. The header
//! is the writer's alone: readers never borrow it, and the writer rewrites
//! the active segment's durable end in place after flushes (see
//! `writer.rs`), so recovery can tell records that were lost (below the
//! highest durable end of any header) from ones that never reached the
//! disk (a power loss under `interval` or `never`).
//!
//! A *loss segment* (flag bit 0) holds no chunks: recovery writes one for
//! offsets `[base offset, durable end)` that no segment holds any more
//! although a cursor had not passed them, after reporting them lost, so
//! the loss is on disk and later opens note it instead of reporting it
//! again. Readers step over it like over a gap.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::FallocateFlags;

use super::fault::Faults;
use super::mmap::{MapWriter, SegmentMap};
use crate::{Error, Result};

/// Segment header flag: a loss segment (see the module docs).
pub const SEGMENT_FLAG_LOSS: u32 = 1;
const KNOWN_SEGMENT_FLAGS: u32 = SEGMENT_FLAG_LOSS;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHIPSEG\0";
/// Length of the segment header; the first chunk starts here.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// File name suffix of segments being prepared (never hold records).
pub const PREPARED_SUFFIX: &str = ".prep";

/// On-disk format versions. A newer shipper reads every older version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u16)]
pub enum FormatVersion {
    /// The first format.
    V1 = 1,
}

impl FormatVersion {
    /// The version this build writes.
    pub const CURRENT: FormatVersion = FormatVersion::V1;

    fn from_u16(value: u16) -> Option<Self> {
        match value {
            1 => Some(FormatVersion::V1),
            _ => None,
        }
    }
}

/// A parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version of the segment.
    pub version: FormatVersion,
    /// Offset of the first record.
    pub base_offset: u64,
    /// The producer that wrote it.
    pub producer_id: [u8; 16],
    /// Creation time, unix milliseconds.
    pub created_ms: u64,
    /// Every record of the log below this offset was durable when the
    /// header was last written; 0 when unknown (never written, or written
    /// by a shipper that left these bytes reserved).
    pub durable_end: u64,
    /// [`SEGMENT_FLAG_LOSS`] or 0.
    pub flags: u32,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&(self.version as u16).to_le_bytes());
        out[10..12].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        out[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        out[24..40].copy_from_slice(&self.producer_id);
        out[40..48].copy_from_slice(&self.created_ms.to_le_bytes());
        out[48..56].copy_from_slice(&self.durable_end.to_le_bytes());
        out[56..60].copy_from_slice(&self.flags.to_le_bytes());
        let crc = crc32c::crc32c(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(format!(
                "file too short for a segment header ({} bytes)",
                bytes.len()
            ));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        let stored = u32::from_le_bytes(bytes[60..64].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[..60]);
        if stored != computed {
            return Err(format!(
                "segment header crc mismatch ({stored:#010x} != {computed:#010x})"
            ));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        let version = FormatVersion::from_u16(version).ok_or_else(|| {
            format!("segment format version {version} is newer than this shipper")
        })?;
        let header_len = u16::from_le_bytes([bytes[10], bytes[11]]) as usize;
        if header_len != SEGMENT_HEADER_LEN {
            return Err(format!("unexpected segment header length {header_len}"));
        }
        let base_offset = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        if base_offset > crate::chunk::frame::MAX_OFFSET {
            return Err(format!(
                "segment base offset {base_offset} is beyond the largest offset"
            ));
        }
        let flags = u32::from_le_bytes(bytes[56..60].try_into().expect("4 bytes"));
        if flags & !KNOWN_SEGMENT_FLAGS != 0 {
            return Err(format!(
                "segment flags {flags:#x} are newer than this shipper"
            ));
        }
        Ok(SegmentHeader {
            version,
            base_offset,
            producer_id: bytes[24..40].try_into().expect("16 bytes"),
            created_ms: u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes")),
            durable_end: u64::from_le_bytes(bytes[48..56].try_into().expect("8 bytes"))
                .min(crate::chunk::frame::MAX_OFFSET),
            flags,
        })
    }
}

/// Rewrites the durable end in the header of the segment `writer` writes
/// (see [`SegmentHeader::durable_end`]). The caller flushes the header.
/// A header that does not decode (damaged after it was read) is left alone.
pub(crate) fn write_durable_end(writer: &mut MapWriter, durable_end: u64) {
    if let Ok(mut header) = SegmentHeader::decode(writer.read_own(0, SEGMENT_HEADER_LEN)) {
        if header.durable_end != durable_end {
            header.durable_end = durable_end;
            writer.write_head(0, &header.encode());
        }
    }
}

/// The file name of the segment whose first record is `base_offset`.
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{SEGMENT_SUFFIX}")
}

/// The base offset in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|&base| base <= crate::chunk::frame::MAX_OFFSET)
}

/// Reserves `len` bytes of disk for `file`, so that writes through a map
/// never hit a full disk. Falls back to writing zeros where the filesystem
/// has no fallocate.
pub(crate) fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(
            errno @ (rustix::io::Errno::NOSPC | rustix::io::Errno::FBIG | rustix::io::Errno::DQUOT),
        ) => Err(Error::DiskFull {
            path: path.to_owned(),
            bytes: len,
            source: std::io::Error::from_raw_os_error(errno.raw_os_error()),
        }),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
            write_zeros(file, path, len)
        }
        Err(errno) => Err(Error::io(
            "preallocating",
            path,
            std::io::Error::from_raw_os_error(errno.raw_os_error()),
        )),
    }
}

fn write_zeros(file: &File, path: &Path, len: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    let mut at = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(|e| match e.raw_os_error() {
                Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => Error::DiskFull {
                    path: path.to_owned(),
                    bytes: len,
                    source: e,
                },
                _ => Error::io("preallocating", path, e),
            })?;
        at += n as u64;
    }
    Ok(())
}

/// fsync of a directory, so that a created, renamed or deleted entry is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// A segment in the log: its file, its map and what the log knows of it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub base_offset: u64,
    pub map: Arc<SegmentMap>,
    /// One past the last record offset published in this segment (for a
    /// loss segment: one past the offsets it records lost).
    pub end_offset: AtomicU64,
    /// Byte ranges `[from, to)` recovery found damaged; readers skip them.
    pub holes: Vec<(usize, usize)>,
    /// Bytes the file occupies (its preallocated length).
    pub file_bytes: u64,
    /// A loss segment: no chunks, only offsets recorded lost.
    pub loss: bool,
    // No file descriptor is kept: the mapping holds the file, so segments
    // cost no descriptors however many the budget keeps.
}

impl Segment {
    /// What the segment counts against the disk budget: its file, except
    /// for a loss segment, whose 64 bytes are not counted (so a budget of
    /// exactly N segments still holds N segments of records).
    pub(crate) fn budget_bytes(&self) -> u64 {
        if self.loss {
            0
        } else {
            self.file_bytes
        }
    }

    pub(crate) fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }
    pub(crate) fn set_end_offset(&self, end: u64) {
        self.end_offset.store(end, Ordering::Release);
    }
}

/// A prepared, preallocated and mapped segment file that holds no records yet.
#[derive(Debug)]
pub(crate) struct PreparedSegment {
    path: PathBuf,
    map: Arc<SegmentMap>,
    writer: MapWriter,
    len: u64,
}

impl PreparedSegment {
    /// Creates, preallocates and maps `path` with `len` bytes.
    pub(crate) fn create(path: PathBuf, len: u64, faults: &Faults) -> Result<Self> {
        faults.before_allocate(&path, len)?;
        let file = super::modes::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io("creating segment", &path, e))?;
        if let Err(error) = preallocate(&file, &path, len) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        let (map, writer) = SegmentMap::map(&file, len as usize, SEGMENT_HEADER_LEN, 0)
            .map_err(|e| Error::io("mapping segment", &path, e))?;
        Ok(PreparedSegment {
            path,
            map,
            writer,
            len,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Faults the mapping in ahead of use.
    pub(crate) fn prefault(&self) {
        self.map.prefault();
    }

    /// Writes the header for `base_offset` and renames the file to its
    /// segment name in `dir`. The caller syncs the directory before any
    /// record in it is reported durable.
    pub(crate) fn activate(
        mut self,
        dir: &Path,
        base_offset: u64,
        producer_id: [u8; 16],
    ) -> Result<(Arc<Segment>, MapWriter)> {
        let header = SegmentHeader {
            version: FormatVersion::CURRENT,
            base_offset,
            producer_id,
            created_ms: crate::chunk::now_nanos() / 1_000_000,
            durable_end: 0,
            flags: 0,
        };
        self.writer.write_head(0, &header.encode());
        self.writer.publish(SEGMENT_HEADER_LEN);
        let path = dir.join(segment_file_name(base_offset));
        std::fs::rename(&self.path, &path)
            .map_err(|e| Error::io("renaming segment", &self.path, e))?;
        let segment = Arc::new(Segment {
            path,
            base_offset,
            map: self.map,
            end_offset: AtomicU64::new(base_offset),
            holes: Vec::new(),
            file_bytes: self.len,
            loss: false,
        });
        Ok((segment, self.writer))
    }

    /// Makes this file a loss segment for the offsets `[from, to)` (see the
    /// module docs): a header and nothing else, renamed to its segment
    /// name in `dir`. The caller flushes the header and syncs the folder.
    pub(crate) fn activate_loss(
        mut self,
        dir: &Path,
        from: u64,
        to: u64,
        producer_id: [u8; 16],
    ) -> Result<(Arc<Segment>, MapWriter)> {
        let header = SegmentHeader {
            version: FormatVersion::CURRENT,
            base_offset: from,
            producer_id,
            created_ms: crate::chunk::now_nanos() / 1_000_000,
            durable_end: to,
            flags: SEGMENT_FLAG_LOSS,
        };
        self.writer.write_head(0, &header.encode());
        self.writer.publish(SEGMENT_HEADER_LEN);
        self.map
            .flush(0, SEGMENT_HEADER_LEN)
            .map_err(|e| Error::io("flushing segment", &self.path, e))?;
        let path = dir.join(segment_file_name(from));
        std::fs::rename(&self.path, &path)
            .map_err(|e| Error::io("renaming segment", &self.path, e))?;
        let segment = Arc::new(Segment {
            path,
            base_offset: from,
            map: self.map,
            end_offset: AtomicU64::new(to),
            holes: Vec::new(),
            file_bytes: self.len,
            loss: true,
        });
        Ok((segment, self.writer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            version: FormatVersion::V1,
            base_offset: 42,
            producer_id: [7; 16],
            created_ms: 1_700_000_000_000,
            durable_end: 4242,
            flags: SEGMENT_FLAG_LOSS,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for at in 0..SEGMENT_HEADER_LEN {
            let mut damaged = bytes;
            damaged[at] ^= 0x20;
            assert!(
                SegmentHeader::decode(&damaged).is_err(),
                "flip at {at} not detected"
            );
        }
        assert!(SegmentHeader::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(5), "00000000000000000005.seg");
        let max = crate::chunk::frame::MAX_OFFSET;
        assert_eq!(parse_segment_file_name(&segment_file_name(max)), Some(max));
        // Beyond the largest offset: not a name this log writes.
        assert_eq!(parse_segment_file_name(&segment_file_name(max + 1)), None);
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), None);
        for bad in [
            "5.seg",
            "0000000000000000000x.seg",
            "00000000000000000005.tmp",
            "",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }
}
