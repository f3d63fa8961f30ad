//! Named cursors: how far each consumer has acknowledged, persisted
//! atomically (temp file, fsync, rename, fsync of the directory).
//!
//! ```text
//! cursor file, 32 bytes, little-endian
//! off len field
//!   0   8 magic "SHCURSR1"
//!   8   8 offset: every record below it is acknowledged
//!  16   8 update time, unix milliseconds
//!  24   4 reserved (0)
//!  28   4 crc32c of bytes [0, 28)
//! ```

use std::path::Path;

use super::dir::write_atomically;
use crate::{Error, Result};

/// Magic of a cursor file.
pub const CURSOR_MAGIC: [u8; 8] = *b"SHCURSR1";
/// File name suffix of cursors.
pub const CURSOR_SUFFIX: &str = ".cur";
const CURSOR_LEN: usize = 32;

/// Checks a cursor name: 1-128 characters of `[A-Za-z0-9_.-]`, not starting with a dot.
pub fn validate_cursor_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason:
                "cursor names are 1-128 characters of A-Z a-z 0-9 _ . - and do not start with a dot",
        })
    }
}

pub(crate) fn encode(offset: u64) -> [u8; CURSOR_LEN] {
    let mut out = [0u8; CURSOR_LEN];
    out[..8].copy_from_slice(&CURSOR_MAGIC);
    out[8..16].copy_from_slice(&offset.to_le_bytes());
    out[16..24].copy_from_slice(&(crate::chunk::now_nanos() / 1_000_000).to_le_bytes());
    let crc = crc32c::crc32c(&out[..28]);
    out[28..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a cursor file; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() != CURSOR_LEN {
        return Err(format!(
            "cursor file has {} bytes, expected {CURSOR_LEN}",
            bytes.len()
        ));
    }
    if bytes[..8] != CURSOR_MAGIC {
        return Err("bad cursor magic".into());
    }
    let stored = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
    if stored != crc32c::crc32c(&bytes[..28]) {
        return Err("cursor crc mismatch".into());
    }
    let offset = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if offset > crate::chunk::frame::MAX_OFFSET {
        return Err(format!(
            "cursor offset {offset} is beyond the largest offset"
        ));
    }
    Ok(offset)
}

pub(crate) fn store(cursors_dir: &Path, name: &str, offset: u64) -> Result<()> {
    write_atomically(
        cursors_dir,
        &format!("{name}{CURSOR_SUFFIX}"),
        &encode(offset),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_detects_damage() {
        let bytes = encode(12345);
        assert_eq!(decode(&bytes), Ok(12345));
        for at in 0..CURSOR_LEN {
            let mut damaged = bytes;
            damaged[at] ^= 4;
            assert!(decode(&damaged).is_err(), "flip at {at}");
        }
        assert!(decode(&bytes[..31]).is_err());
    }

    #[test]
    fn names() {
        for good in ["http", "sink-1", "a.b_c"] {
            validate_cursor_name(good).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "x y", &"x".repeat(129)] {
            assert!(validate_cursor_name(bad).is_err(), "{bad}");
        }
    }
}
