//! Byte sizes in the config: an integer of bytes, or a string with a unit
//! such as `"64MiB"`, `"10GiB"`, `"256KiB"` or `"4MB"`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Units a byte size string may carry, and their factors. Binary units
/// (`KiB`) are powers of 1024, decimal ones (`KB`) powers of 1000. Case
/// matters: `Mb` would read as megabits to some, so it is refused.
const UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// A number of bytes, written in the config as an integer or a string with
/// a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in UNITS.iter().rev() {
            if *factor > 1 && self.0 >= *factor && self.0 % factor == 0 && unit.contains('i') {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Parses `"64MiB"`, `"4 MB"`, `"512"` or `"512B"`.
pub fn parse_byte_size(text: &str) -> Result<ByteSize, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(format!(
            "invalid byte size `{text}`: expected a whole number and a unit, like \"64MiB\" or \"4MB\""
        ));
    }
    let factor = if unit.is_empty() {
        1
    } else {
        match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, factor)) => *factor,
            None => {
                let names: Vec<&str> = UNITS.iter().map(|(name, _)| *name).collect();
                return Err(format!(
                    "invalid byte size `{text}`: unknown unit `{unit}`, expected one of {}",
                    names.join(", ")
                ));
            }
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .map(ByteSize)
        .ok_or_else(|| format!("invalid byte size `{text}`: larger than 2^64 bytes"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size: an integer, or a string like \"64MiB\" or \"4MB\"")
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid byte size {value}: negative")))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                parse_byte_size(value).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_and_units() {
        for (text, bytes) in [
            ("0", 0),
            ("512", 512),
            ("512B", 512),
            ("64MiB", 64 << 20),
            ("10GiB", 10 << 30),
            ("256KiB", 256 << 10),
            ("4MB", 4_000_000),
            ("4 MB", 4_000_000),
            (" 1TiB ", 1 << 40),
            ("3KB", 3_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
        ] {
            assert_eq!(parse_byte_size(text), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_size() {
        for (text, needle) in [
            ("", "expected a whole number"),
            ("MiB", "expected a whole number"),
            ("-1MiB", "expected a whole number"),
            ("1.5GiB", "unknown unit `.5GiB`"),
            ("4mb", "unknown unit `mb`"),
            ("4Mb", "unknown unit `Mb`"),
            ("4 M", "unknown unit `M`"),
            ("64MiB extra", "unknown unit `MiB extra`"),
            ("20000000TiB", "larger than 2^64"),
            ("99999999999999999999", "larger than 2^64"),
        ] {
            let error = parse_byte_size(text).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn deserializes_from_toml_integers_and_strings() {
        #[derive(Debug, Deserialize)]
        struct Sizes {
            a: ByteSize,
            b: ByteSize,
        }
        let sizes: Sizes = toml::from_str("a = 4096\nb = \"4KiB\"").unwrap();
        assert_eq!((sizes.a, sizes.b), (ByteSize(4096), ByteSize::kib(4)));
        let error = toml::from_str::<Sizes>("a = -1\nb = 1").unwrap_err();
        assert!(error.message().contains("negative"), "{error}");
        let error = toml::from_str::<Sizes>("a = 1\nb = true").unwrap_err();
        assert!(error.message().contains("a byte size"), "{error}");
    }

    #[test]
    fn displays_in_the_largest_exact_binary_unit() {
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        assert_eq!(ByteSize::gib(10).to_string(), "10GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
    }
}
