//! Source positions that outlive their segments.
//!
//! A source that can resume (the file source) stores, with every chunk, the
//! position in its input after the chunk's last record (the chunk header's
//! `source_position`). By convention that position starts with the
//! source's name and a NUL byte, so chunks of one component fed by several
//! sources keep their positions apart. After a restart the source asks the
//! log for the last position of each (component, source) pair
//! ([`super::Log::source_positions`]) and continues exactly after it.
//!
//! The retained chunks answer for themselves. For the chunks of deleted
//! segments the log keeps the last position of every pair in the file
//! `positions` of the data directory, written atomically before a segment
//! is deleted. A source whose records were all shipped and deleted long ago
//! still resumes where it stopped.
//!
//! File format: magic `SHPOS\0\0\x01`, a u32 entry count, then per entry
//! three u16-length-prefixed byte strings (component, source, payload), and
//! a CRC-32C of everything before it. All integers little-endian.

use std::collections::BTreeMap;
use std::path::Path;

use super::segment::{Segment, SEGMENT_HEADER_LEN};
use crate::chunk::frame::{padded_len, ChunkView};
use crate::Result;

/// The file name in the data directory.
pub const POSITIONS_FILE: &str = "positions";
const MAGIC: [u8; 8] = *b"SHPOS\0\0\x01";

/// Splits a stored source position into the source's name and its payload,
/// if it follows the `name NUL payload` convention.
pub fn split_source_position(position: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = memchr::memchr(0, position)?;
    Some((&position[..nul], &position[nul + 1..]))
}

/// Builds a position for `source` with `payload`, in the convention
/// [`split_source_position`] reads.
pub fn source_position(source: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(source.len() + 1 + payload.len());
    out.extend_from_slice(source.as_bytes());
    out.push(0);
    out.extend_from_slice(payload);
    out
}

/// The last payload of each (component, source) pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Positions {
    map: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
}

impl Positions {
    /// Records the position of `view`, if it carries one in the convention.
    /// Later calls win: feed chunks in offset order.
    pub(crate) fn note(&mut self, view: &ChunkView<'_>) {
        let Some((source, payload)) = view.source_position().and_then(split_source_position) else {
            return;
        };
        let key = (view.component().to_vec(), source.to_vec());
        match self.map.get_mut(&key) {
            Some(old) => {
                old.clear();
                old.extend_from_slice(payload);
            }
            None => {
                self.map.insert(key, payload.to_vec());
            }
        }
    }

    /// Notes every chunk of `segment` that ends at or below `durable`, in
    /// order. Stops at the first frame that does not parse (damage found
    /// after open; readers report it).
    pub(crate) fn note_segment(&mut self, segment: &Segment, durable: u64) {
        let bytes = segment.map.published_bytes();
        let mut position = SEGMENT_HEADER_LEN;
        while position < bytes.len() {
            if let Some(&(_, to)) = segment.holes.iter().find(|(from, _)| *from == position) {
                position = to;
                continue;
            }
            // Verified when the log was opened (or written by this
            // process); below the watermark the bytes never change.
            match ChunkView::parse_without_crc(bytes.from(position)) {
                Ok(view) if view.end_offset() > durable && view.record_count() > 0 => break,
                Ok(view) => {
                    if !view.is_loss_marker() {
                        self.note(&view);
                    }
                    position += padded_len(view.frame().len());
                }
                Err(_) => break,
            }
        }
    }

    /// The payloads stored by `source`, by component.
    pub(crate) fn of_source(&self, source: &[u8]) -> BTreeMap<String, Vec<u8>> {
        self.map
            .iter()
            .filter(|((_, s), _)| s == source)
            .map(|((component, _), payload)| {
                (
                    String::from_utf8_lossy(component).into_owned(),
                    payload.clone(),
                )
            })
            .collect()
    }

    /// The payloads stored by every source whose name starts with
    /// `prefix`, as (source, component, payload).
    pub(crate) fn with_source_prefix(&self, prefix: &[u8]) -> Vec<(String, String, Vec<u8>)> {
        self.map
            .iter()
            .filter(|((_, s), _)| s.starts_with(prefix))
            .map(|((component, source), payload)| {
                (
                    String::from_utf8_lossy(source).into_owned(),
                    String::from_utf8_lossy(component).into_owned(),
                    payload.clone(),
                )
            })
            .collect()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(self.map.len() as u32).to_le_bytes());
        for ((component, source), payload) in &self.map {
            for part in [component, source, payload] {
                out.extend_from_slice(&(part.len() as u16).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Positions, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .filter(|&n| n >= MAGIC.len() + 4)
            .ok_or("too short")?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        if body[..8] != MAGIC {
            return Err("not a positions file (bad magic)".into());
        }
        let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        let mut rest = &body[12..];
        let mut take = || -> std::result::Result<Vec<u8>, String> {
            let len_bytes = rest.get(..2).ok_or("truncated entry")?;
            let len = u16::from_le_bytes([len_bytes[0], len_bytes[1]]) as usize;
            let part = rest.get(2..2 + len).ok_or("truncated entry")?.to_vec();
            rest = &rest[2 + len..];
            Ok(part)
        };
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let component = take()?;
            let source = take()?;
            let payload = take()?;
            map.insert((component, source), payload);
        }
        Ok(Positions { map })
    }

    /// Loads the file of `dir`; a missing file is empty. `Err` says why the
    /// file is unusable (the caller quarantines it and starts empty).
    pub(crate) fn load(dir: &Path) -> std::result::Result<Positions, String> {
        let path = dir.join(POSITIONS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Positions::decode(&bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Positions::default()),
            Err(error) => Err(error.to_string()),
        }
    }

    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        super::dir::write_atomically(dir, POSITIONS_FILE, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let mut positions = Positions::default();
        positions
            .map
            .insert((b"app".to_vec(), b"files".to_vec()), b"\x01\x02".to_vec());
        positions
            .map
            .insert((b"scrub".to_vec(), b"files".to_vec()), Vec::new());
        let bytes = positions.encode();
        assert_eq!(Positions::decode(&bytes).unwrap(), positions);
        for cut in 0..bytes.len() {
            assert!(Positions::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[14] ^= 1;
        assert_eq!(
            Positions::decode(&flipped).unwrap_err(),
            "checksum mismatch"
        );
        assert_eq!(
            positions.of_source(b"files").keys().collect::<Vec<_>>(),
            ["app", "scrub"]
        );
    }

    fn chunk(component: &str, position: &[u8], records: u32) -> crate::chunk::ClosedChunk {
        let mut builder = crate::chunk::ChunkBuilder::new(
            "stream",
            component,
            crate::chunk::ChunkOptions::default(),
        )
        .unwrap();
        let mut x = u64::from(records) ^ position.len() as u64;
        for _ in 0..records {
            // Incompressible, so the test fills segments quickly.
            let record: Vec<u8> = (0..100)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            builder.push(&record, 1, Some(position)).unwrap();
        }
        builder.finish().unwrap().unwrap()
    }

    #[test]
    fn positions_outlive_deleted_segments_and_reopen() {
        use crate::log::{Log, LogOptions};
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 64 << 10,
            ..LogOptions::default()
        };
        let log = Log::open(dir.path(), options.clone()).unwrap();
        assert!(log.source_positions("files").is_empty());
        for i in 0..200u32 {
            let position = source_position("files", &i.to_le_bytes());
            log.append(chunk("app", &position, 50)).unwrap();
            let other = source_position("other", b"x");
            log.append(chunk("app", &other, 1)).unwrap();
        }
        log.append(chunk("scrub", &source_position("files", b"s"), 1))
            .unwrap()
            .wait_durable()
            .unwrap();
        let expected = |last: &[u8]| {
            [
                ("app".to_owned(), last.to_vec()),
                ("scrub".to_owned(), b"s".to_vec()),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            log.source_positions("files"),
            expected(&199u32.to_le_bytes())
        );
        // Acknowledge everything: every segment but the active one goes.
        log.commit_cursor("sink", log.next_offset()).unwrap();
        assert!(log.metrics().segments_deleted > 10, "{:?}", log.metrics());
        assert_eq!(
            log.source_positions("files"),
            expected(&199u32.to_le_bytes())
        );
        assert_eq!(log.source_positions("other")["app"], b"x");
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), options.clone()).unwrap();
        assert_eq!(
            log.source_positions("files"),
            expected(&199u32.to_le_bytes())
        );
        log.close().unwrap();
        drop(log);
        // A damaged positions file is set aside, never fatal.
        std::fs::write(dir.path().join(POSITIONS_FILE), b"garbage").unwrap();
        let log = Log::open(dir.path(), options).unwrap();
        assert_eq!(log.recovery_report().quarantined.len(), 1);
        log.close().unwrap();
    }

    #[test]
    fn positions_split_at_the_first_nul() {
        let position = source_position("files", b"\x00payload");
        assert_eq!(
            split_source_position(&position),
            Some((&b"files"[..], &b"\x00payload"[..]))
        );
        assert_eq!(split_source_position(b"no convention"), None);
    }
}
