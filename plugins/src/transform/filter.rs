//! `filter`: keeps or drops records by one field condition.
//!
//! A [`Filter`] tests one [`Condition`] on one field and applies its
//! [`FilterAction`] to the records that meet it; the records that do not
//! meet it get the opposite. So `action = Keep` keeps only matching
//! records and `action = Drop` drops only them.
//!
//! | condition | met when the field |
//! |---|---|
//! | `Equals(v)` | exists and equals `v` (by JSON type, see [`FieldValue`]) |
//! | `NotEquals(v)` | is missing, or does not equal `v` |
//! | `Exists(true)` | is present (any value, `null` included) |
//! | `Exists(false)` | is missing |
//!
//! A record that is not a JSON object meets no condition: it gets the
//! filter's [`OnError`] and is counted as unreadable. The field is found
//! in one pass without building the record (see [`super::path`]), and a
//! kept record is passed on as the input bytes.

use super::path::{lookup, Scalar};
use super::{
    FieldPath, FieldValue, OnError, Result, Transform, TransformCounters, TransformOutcome,
    TransformStats,
};

/// The test a [`Filter`] applies to its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The field exists and has this value.
    Equals(FieldValue),
    /// The field is missing or has another value.
    NotEquals(FieldValue),
    /// The field is present (`true`) or missing (`false`).
    Exists(bool),
}

/// What a [`Filter`] does with records that meet its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Keep them, drop the rest.
    #[default]
    Keep,
    /// Drop them, keep the rest.
    Drop,
}

/// Configuration of a [`Filter`].
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOptions {
    /// The field to test, as a dotted path.
    pub field: String,
    /// The test.
    pub condition: Condition,
    /// What happens to records that pass the test.
    pub action: FilterAction,
    /// What happens to records that are not JSON objects.
    pub on_error: OnError,
}

impl FilterOptions {
    /// Options with the default [`OnError`].
    pub fn new(field: impl Into<String>, condition: Condition, action: FilterAction) -> Self {
        FilterOptions {
            field: field.into(),
            condition,
            action,
            on_error: OnError::default(),
        }
    }
}

/// Keeps or drops records by one field condition; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Filter {
    field: FieldPath,
    condition: Condition,
    action: FilterAction,
    on_error: OnError,
    counters: std::sync::Arc<TransformStats>,
}

impl Filter {
    /// Checks the options: the field must be a valid [`FieldPath`] and a
    /// float to compare with must be finite.
    pub fn new(options: FilterOptions) -> Result<Self> {
        let field = FieldPath::parse(&options.field)?;
        if let Condition::Equals(value) | Condition::NotEquals(value) = &options.condition {
            value.check_finite(&options.field)?;
        }
        Ok(Filter {
            field,
            condition: options.condition,
            action: options.action,
            on_error: options.on_error,
            counters: std::sync::Arc::default(),
        })
    }

    /// Whether `record` meets the condition, or `None` if it is not a
    /// JSON object.
    fn meets(&self, record: &[u8]) -> Option<bool> {
        let found = lookup(record, &self.field, |value: Scalar<'_>| {
            match &self.condition {
                Condition::Equals(want) => want.matches(&value),
                Condition::NotEquals(want) => !want.matches(&value),
                Condition::Exists(want) => *want,
            }
        })
        .ok()?;
        Some(found.unwrap_or(match &self.condition {
            Condition::Equals(_) => false,
            Condition::NotEquals(_) => true,
            Condition::Exists(want) => !want,
        }))
    }
}

impl Filter {
    /// What this transform has done so far.
    pub fn counters(&self) -> TransformCounters {
        self.counters.snapshot()
    }
}

impl Transform for Filter {
    fn apply<'a>(&mut self, record: &'a [u8], _scratch: &'a mut Vec<u8>) -> TransformOutcome<'a> {
        let outcome = match self.meets(record) {
            None => {
                self.counters.count_unreadable();
                self.on_error.outcome(record)
            }
            Some(met) => {
                let keep = met == (self.action == FilterAction::Keep);
                if keep {
                    TransformOutcome::Keep(record)
                } else {
                    TransformOutcome::Drop
                }
            }
        };
        self.counters.count(&outcome);
        outcome
    }

    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.counters.metrics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::TransformError;

    fn string(text: &str) -> FieldValue {
        FieldValue::String(text.to_owned())
    }

    #[test]
    fn decides_as_the_table_says() {
        use Condition::{Equals, Exists, NotEquals};
        use FieldValue::{Boolean, Float, Integer};
        const K: bool = true;
        const D: bool = false;
        // Name, field, condition, record, kept under `action = Keep`.
        // Under `action = Drop` every readable record gets the opposite.
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, Condition, &[u8], bool)> = vec![
            ("string equal", "level", Equals(string("error")), br#"{"level":"error"}"#, K),
            ("string differs", "level", Equals(string("error")), br#"{"level":"info"}"#, D),
            ("escaped string equal", "level", Equals(string("é")), br#"{"level":"\u00e9"}"#, K),
            ("nested integer", "http.status", Equals(Integer(500)), br#"{"http":{"status":500}}"#, K),
            ("nested integer differs", "http.status", Equals(Integer(500)), br#"{"http":{"status":200}}"#, D),
            ("integer equals float form", "n", Equals(Integer(5)), br#"{"n":5.0}"#, K),
            ("float equals integer form", "n", Equals(Float(5.0)), br#"{"n":5}"#, K),
            ("float", "n", Equals(Float(0.25)), br#"{"n":0.25}"#, K),
            ("string is not a number", "n", Equals(Integer(200)), br#"{"n":"200"}"#, D),
            ("number is not a string", "n", Equals(string("200")), br#"{"n":200}"#, D),
            ("boolean", "ok", Equals(Boolean(false)), br#"{"ok":false}"#, K),
            ("null equals nothing", "n", Equals(string("null")), br#"{"n":null}"#, D),
            ("object equals nothing", "n", Equals(string("{}")), br#"{"n":{}}"#, D),
            ("equals on missing", "level", Equals(string("error")), br#"{"msg":"x"}"#, D),
            ("equals on missing parent", "a.b", Equals(Integer(1)), br#"{"a":1}"#, D),
            ("not equals", "level", NotEquals(string("debug")), br#"{"level":"info"}"#, K),
            ("not equals, equal", "level", NotEquals(string("debug")), br#"{"level":"debug"}"#, D),
            ("not equals on missing", "level", NotEquals(string("debug")), br#"{}"#, K),
            ("not equals, other type", "n", NotEquals(Integer(1)), br#"{"n":"1"}"#, K),
            ("exists", "trace.id", Exists(true), br#"{"trace":{"id":null}}"#, K),
            ("exists, missing", "trace.id", Exists(true), br#"{"trace":{}}"#, D),
            ("not exists, missing", "trace.id", Exists(false), br#"{"trace":1}"#, K),
            ("not exists, present", "trace", Exists(false), br#"{"trace":[]}"#, D),
        ];
        let mut scratch = Vec::new();
        for (name, field, condition, record, kept) in cases {
            for action in [FilterAction::Keep, FilterAction::Drop] {
                let mut filter =
                    Filter::new(FilterOptions::new(field, condition.clone(), action)).unwrap();
                let keep = kept == (action == FilterAction::Keep);
                let expected = if keep {
                    TransformOutcome::Keep(record)
                } else {
                    TransformOutcome::Drop
                };
                assert_eq!(
                    filter.apply(record, &mut scratch),
                    expected,
                    "{name}, {action:?}"
                );
                assert!(scratch.is_empty(), "{name}: scratch untouched");
                assert_eq!(filter.counters().unreadable, 0, "{name}");
            }
        }
    }

    #[test]
    fn unreadable_records_get_on_error_and_are_counted() {
        let records: [&[u8]; 7] = [
            b"not json",
            b"[1,2]",
            b"\"level\"",
            b"{\"level\":\"error\"",
            b"{\"level\":\"\xff\"}",
            b"{\"level\":\"error\"} trailing",
            b"",
        ];
        for on_error in [OnError::Keep, OnError::Drop] {
            for condition in [
                Condition::Equals(string("error")),
                Condition::NotEquals(string("error")),
                Condition::Exists(false),
            ] {
                let mut filter = Filter::new(FilterOptions {
                    on_error,
                    ..FilterOptions::new("level", condition, FilterAction::Keep)
                })
                .unwrap();
                let mut scratch = Vec::new();
                for record in records {
                    let expected = match on_error {
                        OnError::Keep => TransformOutcome::Keep(record),
                        OnError::Drop => TransformOutcome::Drop,
                    };
                    assert_eq!(filter.apply(record, &mut scratch), expected, "{record:?}");
                }
                let counters = filter.counters();
                assert_eq!(counters.unreadable, records.len() as u64);
                assert_eq!(
                    counters.kept + counters.dropped,
                    records.len() as u64,
                    "{counters:?}"
                );
            }
        }
    }

    #[test]
    fn counts_outcomes() {
        let mut filter = Filter::new(FilterOptions::new(
            "a",
            Condition::Exists(true),
            FilterAction::Keep,
        ))
        .unwrap();
        let mut scratch = Vec::new();
        for record in [&br#"{"a":1}"#[..], br#"{"b":1}"#, br#"{"a":2}"#, b"x"] {
            filter.apply(record, &mut scratch);
        }
        assert_eq!(
            filter.counters(),
            TransformCounters {
                kept: 3,
                dropped: 1,
                replaced: 0,
                unreadable: 1
            }
        );
    }

    #[test]
    fn huge_records_are_filtered() {
        let record = format!(r#"{{"pad":"{}","level":"error"}}"#, "y".repeat(16 << 20));
        let mut filter = Filter::new(FilterOptions::new(
            "level",
            Condition::Equals(string("error")),
            FilterAction::Drop,
        ))
        .unwrap();
        assert_eq!(
            filter.apply(record.as_bytes(), &mut Vec::new()),
            TransformOutcome::Drop
        );
    }

    #[test]
    fn bad_options_are_errors() {
        let error = Filter::new(FilterOptions::new(
            "a..b",
            Condition::Exists(true),
            FilterAction::Keep,
        ))
        .unwrap_err();
        assert!(
            matches!(error, TransformError::InvalidPath { .. }),
            "{error}"
        );
        let error = Filter::new(FilterOptions::new(
            "n",
            Condition::Equals(FieldValue::Float(f64::NAN)),
            FilterAction::Keep,
        ))
        .unwrap_err();
        assert_eq!(error.to_string(), "value of \"n\" must be a finite number");
    }
}

/// The `filter` transform's config: `[transforms.NAME] type = "filter"`.
/// Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use serde::Deserialize;
    use shipper_core::component::Transform;

    use super::{Condition, Filter, FilterAction, FilterOptions};
    use crate::config::{BuildContext, BuildError, Checks, TransformComponent};
    use crate::transform::{check_field, FieldValue};

    /// `type = "filter"`: keeps or drops records by one field condition.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FilterTransformConfig {
        #[serde(default)]
        pub inputs: Vec<String>,
        pub field: String,
        #[serde(default)]
        pub equals: Option<FieldValue>,
        #[serde(default)]
        pub not_equals: Option<FieldValue>,
        #[serde(default)]
        pub exists: Option<bool>,
        #[serde(default)]
        pub action: FilterAction,
    }

    impl crate::config::Named for FilterTransformConfig {
        const TYPE: &'static str = "filter";
    }

    impl TransformComponent for FilterTransformConfig {
        fn inputs(&self) -> &[String] {
            &self.inputs
        }

        fn check(&self, check: &mut dyn Checks) {
            let conditions = [
                self.equals.is_some(),
                self.not_equals.is_some(),
                self.exists.is_some(),
            ];
            if conditions.iter().filter(|set| **set).count() != 1 {
                check.error(
                    &[],
                    "needs exactly one condition: `equals`, `not_equals` or `exists`",
                );
            }
            check_field(check, &["field"], &self.field);
        }

        fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Transform>, BuildError> {
            let condition = match (&self.equals, &self.not_equals, self.exists) {
                (Some(value), None, None) => Condition::Equals(value.clone()),
                (None, Some(value), None) => Condition::NotEquals(value.clone()),
                (None, None, Some(exists)) => Condition::Exists(exists),
                _ => return Err("a filter takes exactly one of equals, not_equals, exists".into()),
            };
            let options = FilterOptions::new(self.field.clone(), condition, self.action);
            Ok(Box::new(Filter::new(options).map_err(|e| e.to_string())?))
        }
    }
}

pub use config::FilterTransformConfig;
