//! Property tests of the transforms through the public API: no input
//! panics, outcomes are consistent, and remap turns every JSON object into
//! a JSON object.

use proptest::prelude::*;
use serde_json::{Map, Value};
use shipper_components::transform::{
    Condition, FieldValue, Filter, FilterAction, FilterOptions, OnError, Remap, RemapOptions,
    Sample, SampleOptions, Transform, TransformOutcome,
};

/// Keys drawn from a small set, so paths often hit.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("a.b".to_owned()),
        Just("é\n\"".to_owned()),
        "[a-z]{0,3}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN/inf become null
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), json_value()), 0..6)
        .prop_map(|entries| entries.into_iter().collect())
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..4)
        .prop_map(|segments| segments.join("."))
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        ".{0,4}".prop_map(FieldValue::String),
        any::<i64>().prop_map(FieldValue::Integer),
        (-1e6f64..1e6).prop_map(FieldValue::Float),
        any::<bool>().prop_map(FieldValue::Boolean),
    ]
}

fn remap_options() -> impl Strategy<Value = RemapOptions> {
    (
        prop::collection::vec((path(), path()), 0..3),
        prop::collection::vec(path(), 0..3),
        prop::collection::vec(path(), 0..3),
        prop::collection::vec((path(), field_value()), 0..3),
    )
        .prop_map(|(rename, delete, redact, add)| RemapOptions {
            rename,
            delete,
            redact,
            add,
            ..RemapOptions::default()
        })
}

/// Records that are JSON objects, JSON objects damaged in one byte, or
/// arbitrary bytes.
fn record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_object().prop_map(|object| serde_json::to_vec(&object).unwrap()),
        (json_object(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(object, at, byte)| {
                let mut bytes = serde_json::to_vec(&object).unwrap();
                let at = at.index(bytes.len());
                bytes[at] = byte;
                bytes
            }
        ),
        json_value().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Whether `serde_json` builds `record` into an object: remap's test.
fn strictly_readable(record: &[u8]) -> bool {
    serde_json::from_slice::<Value>(record).is_ok_and(|value| value.is_object())
}

/// Whether `record` is UTF-8 and one JSON object by syntax: everything
/// filter and sample need to read a field, when the field itself is in
/// range. Numbers out of `f64`'s range or nesting deeper than 128 off the
/// field's path pass this and fail [`strictly_readable`].
fn syntactically_readable(record: &[u8]) -> bool {
    std::str::from_utf8(record).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(record).is_ok()
        && record.trim_ascii_start().first() == Some(&b'{')
}

fn filters(field: &str, value: &FieldValue) -> Vec<Filter> {
    let mut filters = Vec::new();
    for condition in [
        Condition::Equals(value.clone()),
        Condition::NotEquals(value.clone()),
        Condition::Exists(true),
        Condition::Exists(false),
    ] {
        for action in [FilterAction::Keep, FilterAction::Drop] {
            filters
                .push(Filter::new(FilterOptions::new(field, condition.clone(), action)).unwrap());
        }
    }
    filters
}

proptest! {
    #[test]
    fn filter_and_sample_never_panic_and_never_rewrite(
        record in record(),
        field in path(),
        value in field_value(),
        rate in 1u64..5,
    ) {
        let mut scratch = Vec::new();
        let mut transforms: Vec<Box<dyn Transform>> = Vec::new();
        for filter in filters(&field, &value) {
            transforms.push(Box::new(filter));
        }
        transforms.push(Box::new(Sample::new(SampleOptions { rate, key: Some(field.clone()) }).unwrap()));
        transforms.push(Box::new(Sample::new(SampleOptions { rate, key: None }).unwrap()));
        for transform in &mut transforms {
            match transform.apply(&record, &mut scratch) {
                TransformOutcome::Keep(bytes) => prop_assert_eq!(bytes, &record[..]),
                TransformOutcome::Drop => {}
                TransformOutcome::Replace(_) => prop_assert!(false, "filter and sample never rewrite"),
            }
        }
        prop_assert!(scratch.is_empty());
        // The filters read what serde_json reads, and nothing that is not
        // a JSON object by syntax.
        for transform in &transforms[..8] {
            // What the transform exports to /metrics.
            let unreadable = transform
                .metrics()
                .iter()
                .find(|metric| metric.name == "shipper_transform_unreadable_records_total")
                .map(|metric| metric.value())
                .unwrap();
            if strictly_readable(&record) {
                prop_assert_eq!(unreadable, 0);
            }
            if !syntactically_readable(&record) {
                prop_assert_eq!(unreadable, 1);
            }
        }
    }

    #[test]
    fn equals_and_not_equals_are_opposites(record in record(), field in path(), value in field_value()) {
        let mut scratch = Vec::new();
        let options = |condition| FilterOptions {
            on_error: OnError::Drop,
            ..FilterOptions::new(field.clone(), condition, FilterAction::Keep)
        };
        let mut equals = Filter::new(options(Condition::Equals(value.clone()))).unwrap();
        let mut not_equals = Filter::new(options(Condition::NotEquals(value.clone()))).unwrap();
        let mut exists = Filter::new(options(Condition::Exists(true))).unwrap();
        let mut missing = Filter::new(options(Condition::Exists(false))).unwrap();
        let kept = |outcome: TransformOutcome<'_>| outcome != TransformOutcome::Drop;
        let e = kept(equals.apply(&record, &mut scratch));
        let n = kept(not_equals.apply(&record, &mut scratch));
        let x = kept(exists.apply(&record, &mut scratch));
        let m = kept(missing.apply(&record, &mut scratch));
        if strictly_readable(&record) {
            prop_assert!(e != n, "exactly one of equals and not_equals holds");
            prop_assert!(x != m, "exactly one of exists and missing holds");
            prop_assert!(!e || x, "equal implies present");
        }
        if !syntactically_readable(&record) {
            prop_assert!(!e && !n && !x && !m, "unreadable records get on_error = drop");
        }
    }

    #[test]
    fn remap_never_panics_and_keeps_objects_objects(record in record(), options in remap_options()) {
        let mut remap = Remap::new(options).unwrap();
        let mut scratch = Vec::new();
        let readable = strictly_readable(&record);
        match remap.apply(&record, &mut scratch) {
            TransformOutcome::Keep(bytes) => prop_assert_eq!(bytes, &record[..]),
            TransformOutcome::Replace(bytes) => {
                prop_assert!(readable, "only objects are rewritten");
                let output: Value = serde_json::from_slice(bytes).expect("remap writes JSON");
                prop_assert!(output.is_object(), "remap writes an object");
            }
            TransformOutcome::Drop => prop_assert!(false, "on_error = keep never drops"),
        }
        prop_assert_eq!(remap.counters().unreadable, u64::from(!readable));
    }

    #[test]
    fn remap_deletes_and_adds_what_it_says(object in json_object(), value in field_value()) {
        let mut remap = Remap::new(RemapOptions {
            delete: vec!["a".to_owned()],
            add: vec![("b".to_owned(), value.clone())],
            ..RemapOptions::default()
        })
        .unwrap();
        let record = serde_json::to_vec(&object).unwrap();
        let mut scratch = Vec::new();
        let bytes = remap.apply(&record, &mut scratch).bytes().unwrap();
        let output: Map<String, Value> = serde_json::from_slice(bytes).unwrap();
        let mut expected = object;
        expected.remove("a");
        let added = match value {
            FieldValue::String(text) => Value::String(text),
            FieldValue::Integer(number) => Value::from(number),
            FieldValue::Float(number) => Value::from(number),
            FieldValue::Boolean(flag) => Value::Bool(flag),
        };
        expected.insert("b".to_owned(), added);
        prop_assert_eq!(output, expected);
    }
}
