//! Record transforms: [`filter`], [`sample`] and [`remap`].
//!
//! A record is a byte slice holding one JSON object (one NDJSON line,
//! with or without its trailing newline). Every transform implements
//! [`RecordTransform`]: it takes the record and returns an [`Outcome`]:
//!
//! * [`Outcome::Keep`] borrows the input unchanged (zero-copy);
//! * [`Outcome::Drop`] removes the record;
//! * [`Outcome::Replace`] borrows new bytes written into a caller-provided
//!   scratch `Vec<u8>`, which the caller reuses from record to record so
//!   the buffer is allocated once, not per record.
//!
//! ```
//! use shipper_plugins::transform::{
//!     Condition, FieldValue, Filter, FilterAction, FilterOptions, Outcome, RecordTransform,
//! };
//!
//! let mut filter = Filter::new(FilterOptions::new(
//!     "http.status",
//!     Condition::Equals(FieldValue::Integer(500)),
//!     FilterAction::Keep,
//! ))
//! .unwrap();
//! let mut scratch = Vec::new();
//! let error = br#"{"http":{"status":500},"msg":"boom"}"#;
//! assert_eq!(filter.apply(error, &mut scratch), Outcome::Keep(&error[..]));
//! assert_eq!(filter.apply(br#"{"http":{"status":200}}"#, &mut scratch), Outcome::Drop);
//! ```
//!
//! # Field paths
//!
//! Fields are named by [`FieldPath`]s: names joined by dots, each dot
//! stepping into a nested object (`http.status` is the `status` key of the
//! object under `http`). Arrays are not indexed. A key that itself contains
//! a dot cannot be addressed. When an object repeats a key, the last one
//! counts (as in `serde_json`).
//!
//! # Unreadable records
//!
//! A record that is not a JSON object (invalid JSON, invalid UTF-8 in a
//! string, trailing bytes after the object, or valid JSON that is an array,
//! string, number, ...) is *unreadable*. It never panics a transform; what
//! happens to it is the transform's [`OnError`] (default
//! [`OnError::Keep`]: pass it through unchanged, so a shipper never loses
//! what it cannot read by default), and it is counted in
//! [`Counters::unreadable`]. `sample` has no `OnError`: see [`sample`].
//!
//! `filter` and `sample` check the whole record's UTF-8 and JSON syntax but
//! decode only the values on their field's path, while `remap` builds the
//! whole record; so a number beyond `f64`'s range or nesting deeper than
//! 128 levels *off the path* leaves a record readable to the first two and
//! unreadable to `remap`.

use thiserror::Error;

pub mod filter;
pub mod path;
pub mod remap;
pub mod sample;

pub use filter::{Condition, Filter, FilterAction, FilterOptions};
pub use path::FieldPath;
pub use remap::{Remap, RemapOptions};
pub use sample::{Sample, SampleOptions};

/// What a transform did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The record goes on unchanged: these are the input bytes.
    Keep(&'a [u8]),
    /// The record is dropped.
    Drop,
    /// The record goes on as these bytes, held in the caller's scratch
    /// buffer.
    Replace(&'a [u8]),
}

impl<'a> Outcome<'a> {
    /// The bytes that go on, if the record was not dropped.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Outcome::Keep(bytes) | Outcome::Replace(bytes) => Some(bytes),
            Outcome::Drop => None,
        }
    }
}

/// A transform of single records.
pub trait RecordTransform: Send {
    /// Transforms one record. `scratch` is cleared and written to only when
    /// the outcome is [`Outcome::Replace`]; pass the same buffer every time.
    fn apply<'a>(&mut self, record: &'a [u8], scratch: &'a mut Vec<u8>) -> Outcome<'a>;

    /// What this transform has done so far.
    fn counters(&self) -> &Counters;
}

/// What happens to a record that is not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Pass it through unchanged.
    #[default]
    Keep,
    /// Drop it.
    Drop,
}

impl OnError {
    fn outcome<'a>(self, record: &'a [u8]) -> Outcome<'a> {
        match self {
            OnError::Keep => Outcome::Keep(record),
            OnError::Drop => Outcome::Drop,
        }
    }
}

/// Records seen by a transform, by outcome. `kept + dropped + replaced`
/// is every record; `unreadable` ones are also counted in `kept` or
/// `dropped`, as their [`OnError`] said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Passed through unchanged.
    pub kept: u64,
    /// Dropped.
    pub dropped: u64,
    /// Rewritten.
    pub replaced: u64,
    /// Not a JSON object.
    pub unreadable: u64,
}

impl Counters {
    fn count(&mut self, outcome: &Outcome<'_>) {
        match outcome {
            Outcome::Keep(_) => self.kept += 1,
            Outcome::Drop => self.dropped += 1,
            Outcome::Replace(_) => self.replaced += 1,
        }
    }
}

/// A scalar value: what [`Condition`]s compare with and [`RemapOptions`]
/// add.
///
/// Comparison is by JSON type: a string never equals a number (`"200"` is
/// not `200`); numbers compare by value, so `Integer(5)` equals both `5`
/// and `5.0` in a record.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A JSON string.
    String(String),
    /// A JSON integer.
    Integer(i64),
    /// A JSON number with a fraction; must be finite.
    Float(f64),
    /// `true` or `false`.
    Boolean(bool),
}

impl FieldValue {
    /// Whether the record's value `found` is this value.
    fn matches(&self, found: &path::Scalar<'_>) -> bool {
        use path::Scalar;
        match (self, found) {
            (FieldValue::String(want), Scalar::String(got)) => want == got,
            (FieldValue::Boolean(want), Scalar::Bool(got)) => want == got,
            (FieldValue::Integer(want), Scalar::Integer(got)) => i128::from(*want) == *got,
            (FieldValue::Integer(want), Scalar::Float(got)) => *want as f64 == *got,
            (FieldValue::Float(want), Scalar::Float(got)) => want == got,
            (FieldValue::Float(want), Scalar::Integer(got)) => *want == *got as f64,
            _ => false,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::String(text) => serde_json::Value::String(text.clone()),
            FieldValue::Integer(number) => serde_json::Value::from(*number),
            FieldValue::Float(number) => serde_json::Number::from_f64(*number)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            FieldValue::Boolean(flag) => serde_json::Value::Bool(*flag),
        }
    }

    fn check_finite(&self, field: &str) -> Result<(), TransformError> {
        match self {
            FieldValue::Float(number) if !number.is_finite() => {
                Err(TransformError::NonFiniteNumber {
                    field: field.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// A transform's options are invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransformError {
    /// A field path is empty or has an empty segment.
    #[error("invalid field path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A sample rate of 0.
    #[error("sample rate must be at least 1 (keep 1 record in `rate`)")]
    ZeroRate,
    /// A float that JSON cannot hold (NaN or infinite).
    #[error("value of {field:?} must be a finite number")]
    NonFiniteNumber {
        /// The field whose value it is.
        field: String,
    },
}

/// The `Result` of building a transform.
pub type Result<T, E = TransformError> = std::result::Result<T, E>;
