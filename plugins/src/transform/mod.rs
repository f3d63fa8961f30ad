//! Record transforms: [`filter`], [`sample`] and [`remap`].
//!
//! A record is a byte slice holding one JSON object (one NDJSON line,
//! with or without its trailing newline). Every transform implements
//! [`Transform`] (the component interface's transform trait): it takes
//! the record and returns a [`TransformOutcome`]:
//!
//! * [`TransformOutcome::Keep`] borrows the input unchanged (zero-copy);
//! * [`TransformOutcome::Drop`] removes the record;
//! * [`TransformOutcome::Replace`] borrows new bytes written into a caller-provided
//!   scratch `Vec<u8>`, which the caller reuses from record to record so
//!   the buffer is allocated once, not per record.
//!
//! ```
//! use shipper_components::transform::{
//!     Condition, FieldValue, Filter, FilterAction, FilterOptions, TransformOutcome, Transform,
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
//! assert_eq!(filter.apply(error, &mut scratch), TransformOutcome::Keep(&error[..]));
//! assert_eq!(filter.apply(br#"{"http":{"status":200}}"#, &mut scratch), TransformOutcome::Drop);
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
//! [`TransformCounters::unreadable`] (and exported as a metric). `sample` has no `OnError`: see [`sample`].
//!
//! `filter` and `sample` check the whole record's UTF-8 and JSON syntax but
//! decode only the values on their field's path, while `remap` builds the
//! whole record; so a number beyond `f64`'s range or nesting deeper than
//! 128 levels *off the path* leaves a record readable to the first two and
//! unreadable to `remap`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shipper_core::metrics::{counters_of, ComponentMetric};
use thiserror::Error;

pub mod filter;
pub mod path;
pub mod remap;
pub mod sample;

pub use filter::{Condition, Filter, FilterAction, FilterOptions, FilterTransformConfig};
pub use path::FieldPath;
pub use remap::{Remap, RemapOptions, RemapTransformConfig};
pub use sample::{Sample, SampleOptions, SampleTransformConfig};

pub use shipper_core::component::{Transform, TransformOutcome};

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
    fn outcome<'a>(self, record: &'a [u8]) -> TransformOutcome<'a> {
        match self {
            OnError::Keep => TransformOutcome::Keep(record),
            OnError::Drop => TransformOutcome::Drop,
        }
    }
}

/// Records seen by a transform, by outcome. `kept + dropped + replaced`
/// is every record; `unreadable` ones are also counted in `kept` or
/// `dropped`, as their [`OnError`] said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransformCounters {
    /// Passed through unchanged.
    pub kept: u64,
    /// Dropped.
    pub dropped: u64,
    /// Rewritten.
    pub replaced: u64,
    /// Not a JSON object.
    pub unreadable: u64,
}

/// A transform's live counts, shared with the metrics registry. Only the
/// transform's own thread writes them.
#[derive(Debug, Default)]
pub struct TransformStats {
    kept: AtomicU64,
    dropped: AtomicU64,
    replaced: AtomicU64,
    unreadable: AtomicU64,
}

impl TransformStats {
    fn count(&self, outcome: &TransformOutcome<'_>) {
        let counter = match outcome {
            TransformOutcome::Keep(_) => &self.kept,
            TransformOutcome::Drop => &self.dropped,
            TransformOutcome::Replace(_) => &self.replaced,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn count_unreadable(&self) {
        self.unreadable.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> TransformCounters {
        TransformCounters {
            kept: self.kept.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
            unreadable: self.unreadable.load(Ordering::Relaxed),
        }
    }

    /// The counts as metrics: `shipper_transform_records_total` by
    /// outcome, and the unreadable records.
    pub fn metrics(self: &Arc<Self>) -> Vec<ComponentMetric> {
        const NAME: &str = "shipper_transform_records_total";
        const HELP: &str = "Records a transform saw, by what it did with them.";
        counters_of(
            self,
            &[
                (NAME, HELP, &[("outcome", "kept")], |c| &c.kept),
                (NAME, HELP, &[("outcome", "dropped")], |c| &c.dropped),
                (NAME, HELP, &[("outcome", "replaced")], |c| &c.replaced),
                (
                    "shipper_transform_unreadable_records_total",
                    "Records that are not a JSON object (also counted as kept or dropped, as on_error says).",
                    &[],
                    |c| &c.unreadable,
                ),
            ],
        )
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

/// Read from the config: a string, integer, finite float or boolean.
impl<'de> serde::Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldValueVisitor;

        impl serde::de::Visitor<'_> for FieldValueVisitor {
            type Value = FieldValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<FieldValue, E> {
                Ok(FieldValue::String(value.to_owned()))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<FieldValue, E> {
                Ok(FieldValue::Integer(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<FieldValue, E> {
                i64::try_from(value)
                    .map(FieldValue::Integer)
                    .map_err(|_| E::custom("integer too large"))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<FieldValue, E> {
                // Records are JSON, which has no NaN or infinity; the
                // transforms refuse them too.
                if !value.is_finite() {
                    return Err(E::custom(format!(
                        "{value} is not a JSON number: give a finite one"
                    )));
                }
                Ok(FieldValue::Float(value))
            }

            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<FieldValue, E> {
                Ok(FieldValue::Boolean(value))
            }
        }

        deserializer.deserialize_any(FieldValueVisitor)
    }
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

/// Reports a field path the transforms' own parser refuses (an empty
/// path, an empty segment between dots) under `keys`.
fn check_field(check: &mut dyn crate::config::Checks, keys: &[&str], field: &str) {
    if let Err(error) = FieldPath::parse(field) {
        check.error(keys, error.to_string());
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
