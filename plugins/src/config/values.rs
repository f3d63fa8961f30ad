//! Value types shared by several components: durations, regular
//! expressions, field values and compression settings.

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::Checks;

/// The longest duration any `*_ms` key takes: 365 days, in milliseconds.
///
/// Every duration of the config passes through `Duration::from_millis`
/// and then `Instant` arithmetic, which panics on overflow: a bound keeps
/// `run` from failing on a value `validate` accepted. A year is longer than
/// any timeout, interval or window an operator means; a larger value is a
/// unit mixed up.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// A `*_ms` key: milliseconds, at most [`MAX_DURATION_MS`]. Every duration
/// of the config is read through it (fields of a `u64` with
/// [`duration_ms`]), so the bound holds for all of them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationMs(pub u64);

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ms = u64::deserialize(deserializer)?;
        if ms > MAX_DURATION_MS {
            return Err(de::Error::custom(format!(
                "{ms} ms is longer than 365 days ({MAX_DURATION_MS} ms), the longest duration shipper takes"
            )));
        }
        Ok(DurationMs(ms))
    }
}

/// `#[serde(deserialize_with = "duration_ms")]` for a `u64` of milliseconds.
pub fn duration_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    DurationMs::deserialize(deserializer).map(|DurationMs(ms)| ms)
}

/// A regular expression, compiled when the config is read so a bad one is
/// a config error.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex::Regex::new(&text).map(Pattern).map_err(|error| {
            // regex's message spans several lines (the pattern, a caret, the
            // reason): keep the reason, a diagnostic is one line.
            let full = error.to_string();
            let reason = full
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(full.lines().last().unwrap_or("invalid"));
            de::Error::custom(format!("invalid regex `{text}`: {reason}"))
        })
    }
}

pub use crate::transform::FieldValue;

/// A `mode` key: Unix permission bits, written as a TOML octal integer
/// (`0o640`) or an octal string (`"0640"`), at most `0o777`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for FileMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0o{:03o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u32),
            Text(String),
        }
        let bits = match Written::deserialize(deserializer)? {
            Written::Number(bits) => bits,
            Written::Text(text) => {
                let digits = text.strip_prefix("0o").unwrap_or(&text);
                u32::from_str_radix(digits, 8).map_err(|_| {
                    de::Error::custom(format!(
                        "`{text}` is not an octal mode like \"0640\" (or write 0o640)"
                    ))
                })?
            }
        };
        if bits > 0o777 {
            return Err(de::Error::custom(format!(
                "mode {bits:#o} has bits beyond 0o777 (write octal: 0o640 or \"0640\")"
            )));
        }
        Ok(FileMode(bits))
    }
}

/// A compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// zstd.
    Zstd,
    /// gzip.
    Gzip,
    /// No compression.
    None,
}

/// `compression = { codec = "zstd", level = 3 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    #[serde(default = "Compression::default_codec")]
    /// The codec.
    pub codec: Codec,
    /// The codec's level; `None` is the codec's default (zstd 3, gzip 6).
    #[serde(default)]
    pub level: Option<i32>,
}

impl Compression {
    fn default_codec() -> Codec {
        Codec::Zstd
    }

    /// zstd at its default level.
    pub fn zstd() -> Self {
        Compression {
            codec: Codec::Zstd,
            level: None,
        }
    }

    /// No compression.
    pub fn none() -> Self {
        Compression {
            codec: Codec::None,
            level: None,
        }
    }

    /// The level to use: the configured one or the codec's default.
    pub fn effective_level(&self) -> Option<i32> {
        match self.codec {
            Codec::Zstd => Some(self.level.unwrap_or(3)),
            Codec::Gzip => Some(self.level.unwrap_or(6)),
            Codec::None => None,
        }
    }

    /// Reports a level out of the codec's range, under `key`.
    pub fn check(&self, check: &mut dyn Checks, key: &str) {
        let range = match self.codec {
            Codec::Zstd => Some(1..=22),
            Codec::Gzip => Some(1..=9),
            Codec::None => None,
        };
        match (range, self.level) {
            (Some(range), Some(level)) if !range.contains(&level) => check.error(
                &[key, "level"],
                format!(
                    "level {level} is out of range for {:?}: {} to {}",
                    self.codec,
                    range.start(),
                    range.end()
                )
                .replace("Zstd", "zstd")
                .replace("Gzip", "gzip"),
            ),
            (None, Some(_)) => check.error(&[key, "level"], "codec \"none\" takes no level"),
            _ => {}
        }
    }
}
