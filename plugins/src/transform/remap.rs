//! `remap`: renames, deletes, redacts and adds fields.
//!
//! The steps run in this order, each over all its fields in the order
//! given:
//!
//! 1. **rename** `old → new`: the value moves to `new` (replacing what was
//!    there); missing `old` is a no-op. Objects on the way to `new` are
//!    created; if one of them is taken by a non-object value, the rename is
//!    skipped and the value stays at `old`.
//! 2. **delete**: the field is removed; missing is a no-op.
//! 3. **redact**: the value, whatever its type, becomes the marker string
//!    ([`RemapOptions::DEFAULT_REDACTION`] unless set); a missing field is
//!    not added.
//! 4. **add**: the field is set to a static value, replacing what was
//!    there and creating objects on the way, skipped like rename if a
//!    non-object value is in the way.
//!
//! So a renamed field can be deleted or redacted under its new name, and
//! added fields are never deleted or redacted.
//!
//! A record that is changed is parsed into a `serde_json::Value` and
//! written back into the caller's scratch buffer as compact JSON; its keys
//! come out in `serde_json`'s map order (sorted), and a repeated key keeps
//! its last value. A record that nothing applies to (every field missing,
//! no `add`) is passed on as the input bytes. A record that is not a JSON
//! object gets the remap's [`OnError`].

use serde_json::{Map, Value};

use super::{
    FieldPath, FieldValue, OnError, Result, Transform, TransformCounters, TransformError,
    TransformOutcome, TransformStats,
};

/// Configuration of a [`Remap`]; fields are dotted paths.
#[derive(Debug, Clone, PartialEq)]
pub struct RemapOptions {
    /// `(old, new)` pairs.
    pub rename: Vec<(String, String)>,
    /// Fields to remove.
    pub delete: Vec<String>,
    /// Fields whose values become `redaction`.
    pub redact: Vec<String>,
    /// What redacted values become.
    pub redaction: String,
    /// Fields to set to static values.
    pub add: Vec<(String, FieldValue)>,
    /// What happens to records that are not JSON objects.
    pub on_error: OnError,
}

impl RemapOptions {
    /// The default marker of redacted values.
    pub const DEFAULT_REDACTION: &'static str = "[REDACTED]";
}

impl Default for RemapOptions {
    fn default() -> Self {
        RemapOptions {
            rename: Vec::new(),
            delete: Vec::new(),
            redact: Vec::new(),
            redaction: Self::DEFAULT_REDACTION.to_owned(),
            add: Vec::new(),
            on_error: OnError::default(),
        }
    }
}

/// Renames, deletes, redacts and adds fields; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Remap {
    rename: Vec<(FieldPath, FieldPath)>,
    delete: Vec<FieldPath>,
    redact: Vec<FieldPath>,
    redaction: Value,
    add: Vec<(FieldPath, Value)>,
    on_error: OnError,
    counters: std::sync::Arc<TransformStats>,
}

impl Remap {
    /// Checks the options: every field a valid [`FieldPath`], every added
    /// float finite.
    pub fn new(options: RemapOptions) -> Result<Self> {
        let paths = |fields: &[String]| -> Result<Vec<FieldPath>> {
            fields.iter().map(|field| FieldPath::parse(field)).collect()
        };
        let rename = options
            .rename
            .iter()
            .map(|(old, new)| Ok((FieldPath::parse(old)?, FieldPath::parse(new)?)))
            .collect::<Result<Vec<_>>>()?;
        let add = options
            .add
            .iter()
            .map(|(field, value)| {
                let path = FieldPath::parse(field)?;
                value.check_finite(field)?;
                Ok((path, value.to_json()))
            })
            .collect::<Result<Vec<_>, TransformError>>()?;
        Ok(Remap {
            rename,
            delete: paths(&options.delete)?,
            redact: paths(&options.redact)?,
            redaction: Value::String(options.redaction),
            add,
            on_error: options.on_error,
            counters: std::sync::Arc::default(),
        })
    }

    /// Applies the steps to `record`; whether anything changed.
    fn change(&self, record: &mut Map<String, Value>) -> bool {
        let mut changed = false;
        for (old, new) in &self.rename {
            if let Some(value) = remove(record, old) {
                changed = true;
                if let Err(value) = insert(record, new, value) {
                    // `old`'s parents are objects: it was just removed from
                    // one, so putting it back cannot fail.
                    let _ = insert(record, old, value);
                }
            }
        }
        for field in &self.delete {
            changed |= remove(record, field).is_some();
        }
        for field in &self.redact {
            if let Some(value) = get_mut(record, field) {
                *value = self.redaction.clone();
                changed = true;
            }
        }
        for (field, value) in &self.add {
            changed |= insert(record, field, value.clone()).is_ok();
        }
        changed
    }
}

impl Remap {
    /// What this transform has done so far.
    pub fn counters(&self) -> TransformCounters {
        self.counters.snapshot()
    }
}

impl Transform for Remap {
    fn apply<'a>(&mut self, record: &'a [u8], scratch: &'a mut Vec<u8>) -> TransformOutcome<'a> {
        let outcome = match serde_json::from_slice::<Value>(record) {
            Ok(Value::Object(mut object)) => {
                if self.change(&mut object) {
                    scratch.clear();
                    match serde_json::to_writer(&mut *scratch, &object) {
                        Ok(()) => TransformOutcome::Replace(scratch),
                        // A map of strings to values always serializes;
                        // should it not, the record is unreadable.
                        Err(_) => {
                            self.counters.count_unreadable();
                            self.on_error.outcome(record)
                        }
                    }
                } else {
                    TransformOutcome::Keep(record)
                }
            }
            Ok(_) | Err(_) => {
                self.counters.count_unreadable();
                self.on_error.outcome(record)
            }
        };
        self.counters.count(&outcome);
        outcome
    }

    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.counters.metrics()
    }
}

/// The object holding `path`'s last key, if every key before it names an
/// object.
fn parent_mut<'v, 'p>(
    root: &'v mut Map<String, Value>,
    path: &'p FieldPath,
) -> Option<(&'v mut Map<String, Value>, &'p str)> {
    let (last, parents) = path.segments().split_last()?;
    let mut object = root;
    for key in parents {
        object = object.get_mut(key)?.as_object_mut()?;
    }
    Some((object, last))
}

fn get_mut<'v>(root: &'v mut Map<String, Value>, path: &FieldPath) -> Option<&'v mut Value> {
    let (parent, last) = parent_mut(root, path)?;
    parent.get_mut(last)
}

fn remove(root: &mut Map<String, Value>, path: &FieldPath) -> Option<Value> {
    let (parent, last) = parent_mut(root, path)?;
    parent.remove(last)
}

/// Sets `path` to `value`, creating missing objects on the way; gives the
/// value back, changing nothing, if a key on the way holds a non-object.
fn insert(
    root: &mut Map<String, Value>,
    path: &FieldPath,
    value: Value,
) -> std::result::Result<(), Value> {
    let Some((last, parents)) = path.segments().split_last() else {
        return Err(value);
    };
    // Check first, so that a failed insert creates no empty objects.
    let mut probe = &*root;
    for key in parents {
        match probe.get(key) {
            None => break,
            Some(Value::Object(inner)) => probe = inner,
            Some(_) => return Err(value),
        }
    }
    let mut object = root;
    for key in parents {
        let next = object
            .entry(key.as_str())
            .or_insert_with(|| Value::Object(Map::new()));
        match next {
            Value::Object(inner) => object = inner,
            _ => return Err(value),
        }
    }
    object.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|field| (*field).to_owned()).collect()
    }

    fn pairs<T: Clone>(pairs: &[(&str, T)]) -> Vec<(String, T)> {
        pairs
            .iter()
            .map(|(field, value)| ((*field).to_owned(), value.clone()))
            .collect()
    }

    fn run(remap: &mut Remap, record: &[u8]) -> Option<String> {
        let mut scratch = b"stale".to_vec();
        match remap.apply(record, &mut scratch) {
            TransformOutcome::Keep(bytes) => {
                assert_eq!(bytes, record, "keep borrows the input");
                Some(format!("same:{}", String::from_utf8_lossy(bytes)))
            }
            TransformOutcome::Replace(bytes) => Some(String::from_utf8(bytes.to_vec()).unwrap()),
            TransformOutcome::Drop => None,
        }
    }

    #[test]
    fn remaps_as_the_table_says() {
        let s = |text: &str| FieldValue::String(text.to_owned());
        // Name, options, record, result ("same:" = passed on unchanged).
        #[rustfmt::skip]
        let cases: Vec<(&str, RemapOptions, &str, &str)> = vec![
            ("rename", RemapOptions { rename: pairs(&[("a", "b".to_owned())]), ..Default::default() },
                r#"{"a":1,"c":2}"#, r#"{"b":1,"c":2}"#),
            ("rename replaces", RemapOptions { rename: pairs(&[("a", "b".to_owned())]), ..Default::default() },
                r#"{"a":1,"b":2}"#, r#"{"b":1}"#),
            ("rename nested out", RemapOptions { rename: pairs(&[("http.status", "status".to_owned())]), ..Default::default() },
                r#"{"http":{"status":200,"m":"GET"}}"#, r#"{"http":{"m":"GET"},"status":200}"#),
            ("rename creates objects", RemapOptions { rename: pairs(&[("status", "http.response.status".to_owned())]), ..Default::default() },
                r#"{"status":200}"#, r#"{"http":{"response":{"status":200}}}"#),
            ("rename blocked keeps the value", RemapOptions { rename: pairs(&[("a", "b.c".to_owned())]), ..Default::default() },
                r#"{"a":1,"b":"x"}"#, r#"{"a":1,"b":"x"}"#),
            ("rename missing", RemapOptions { rename: pairs(&[("a", "b".to_owned())]), ..Default::default() },
                r#"{"c":1}"#, r#"same:{"c":1}"#),
            ("rename chain in order", RemapOptions { rename: pairs(&[("a", "b".to_owned()), ("b", "c".to_owned())]), ..Default::default() },
                r#"{"a":1}"#, r#"{"c":1}"#),
            ("delete", RemapOptions { delete: strings(&["a", "x.y"]), ..Default::default() },
                r#"{"a":1,"x":{"y":2,"z":3}}"#, r#"{"x":{"z":3}}"#),
            ("delete object", RemapOptions { delete: strings(&["x"]), ..Default::default() },
                r#"{"a":1,"x":{"y":2}}"#, r#"{"a":1}"#),
            ("delete missing", RemapOptions { delete: strings(&["a.b", "q"]), ..Default::default() },
                r#"{"a":1}"#, r#"same:{"a":1}"#),
            ("redact", RemapOptions { redact: strings(&["user.password", "token"]), ..Default::default() },
                r#"{"user":{"password":"hunter2","name":"ann"},"token":{"k":1}}"#,
                r#"{"token":"[REDACTED]","user":{"name":"ann","password":"[REDACTED]"}}"#),
            ("redact with a marker", RemapOptions { redact: strings(&["p"]), redaction: "***".to_owned(), ..Default::default() },
                r#"{"p":12}"#, r#"{"p":"***"}"#),
            ("redact missing adds nothing", RemapOptions { redact: strings(&["p"]), ..Default::default() },
                r#"{"q":null}"#, r#"same:{"q":null}"#),
            ("add", RemapOptions { add: pairs(&[("env", s("prod")), ("meta.v", FieldValue::Integer(2))]), ..Default::default() },
                r#"{"a":1}"#, r#"{"a":1,"env":"prod","meta":{"v":2}}"#),
            ("add replaces", RemapOptions { add: pairs(&[("a", FieldValue::Boolean(true))]), ..Default::default() },
                r#"{"a":1}"#, r#"{"a":true}"#),
            ("add float", RemapOptions { add: pairs(&[("f", FieldValue::Float(0.5))]), ..Default::default() },
                r#"{}"#, r#"{"f":0.5}"#),
            ("add blocked", RemapOptions { add: pairs(&[("a.b", s("x"))]), ..Default::default() },
                r#"{"a":[1]}"#, r#"same:{"a":[1]}"#),
            ("order: rename, delete, redact, add", RemapOptions {
                rename: pairs(&[("pw", "secret".to_owned()), ("tmp", "gone".to_owned())]),
                delete: strings(&["gone", "env"]),
                redact: strings(&["secret", "env"]),
                add: pairs(&[("env", s("prod"))]),
                ..Default::default()
            }, r#"{"pw":"x","tmp":1,"env":"dev"}"#, r#"{"env":"prod","secret":"[REDACTED]"}"#),
            ("escapes survive", RemapOptions { delete: strings(&["a"]), ..Default::default() },
                r#"{"a":1,"b":"\u00e9\n\"q\""}"#, r#"{"b":"é\n\"q\""}"#),
            ("repeated key keeps the last", RemapOptions { delete: strings(&["b"]), ..Default::default() },
                r#"{"a":1,"a":2,"b":0}"#, r#"{"a":2}"#),
        ];
        for (name, options, record, expected) in cases {
            let mut remap = Remap::new(options).unwrap();
            assert_eq!(
                run(&mut remap, record.as_bytes()).as_deref(),
                Some(expected),
                "{name}"
            );
            assert_eq!(remap.counters().unreadable, 0, "{name}");
        }
    }

    #[test]
    fn unreadable_records_get_on_error_and_are_counted() {
        let records: [&[u8]; 7] = [
            b"plain text",
            b"[{\"a\":1}]",
            b"null",
            b"{\"a\":1",
            b"{\"a\":\"\xfe\"}",
            b"{\"a\":1}{}",
            // Deeper than serde_json's recursion limit (128).
            &[&b"{\"a\":"[..], &[b'['; 200], &[b']'; 200], b"}"].concat(),
        ];
        for on_error in [OnError::Keep, OnError::Drop] {
            let mut remap = Remap::new(RemapOptions {
                add: pairs(&[("a", FieldValue::Integer(1))]),
                on_error,
                ..Default::default()
            })
            .unwrap();
            for record in records {
                let mut scratch = Vec::new();
                let expected = match on_error {
                    OnError::Keep => TransformOutcome::Keep(record),
                    OnError::Drop => TransformOutcome::Drop,
                };
                assert_eq!(remap.apply(record, &mut scratch), expected, "{record:?}");
            }
            assert_eq!(remap.counters().unreadable, records.len() as u64);
        }
    }

    #[test]
    fn the_scratch_buffer_is_reused() {
        let mut remap = Remap::new(RemapOptions {
            add: pairs(&[("k", FieldValue::Integer(1))]),
            ..Default::default()
        })
        .unwrap();
        let mut scratch = Vec::with_capacity(1024);
        let buffer = scratch.as_ptr();
        for n in 0..100 {
            let record = format!(r#"{{"n":{n}}}"#);
            let bytes = remap
                .apply(record.as_bytes(), &mut scratch)
                .bytes()
                .unwrap();
            assert_eq!(bytes, format!(r#"{{"k":1,"n":{n}}}"#).as_bytes());
        }
        assert_eq!(scratch.as_ptr(), buffer, "no reallocation");
        assert_eq!(remap.counters().replaced, 100);
    }

    #[test]
    fn huge_records_are_remapped() {
        let pad = "z".repeat(16 << 20);
        let record = format!(r#"{{"pad":"{pad}","secret":"s"}}"#);
        let mut remap = Remap::new(RemapOptions {
            redact: strings(&["secret"]),
            ..Default::default()
        })
        .unwrap();
        let mut scratch = Vec::new();
        let bytes = remap
            .apply(record.as_bytes(), &mut scratch)
            .bytes()
            .unwrap();
        assert_eq!(
            bytes,
            format!(r#"{{"pad":"{pad}","secret":"[REDACTED]"}}"#).as_bytes()
        );
    }

    #[test]
    fn bad_options_are_errors() {
        let cases: Vec<(RemapOptions, &str)> = vec![
            (
                RemapOptions { rename: pairs(&[("a", "".to_owned())]), ..Default::default() },
                "invalid field path \"\": must not be empty",
            ),
            (
                RemapOptions { delete: strings(&["a."]), ..Default::default() },
                "invalid field path \"a.\": has an empty segment (a leading, trailing or doubled dot)",
            ),
            (
                RemapOptions { redact: strings(&[".a"]), ..Default::default() },
                "invalid field path \".a\": has an empty segment (a leading, trailing or doubled dot)",
            ),
            (
                RemapOptions {
                    add: pairs(&[("f", FieldValue::Float(f64::INFINITY))]),
                    ..Default::default()
                },
                "value of \"f\" must be a finite number",
            ),
        ];
        for (options, expected) in cases {
            assert_eq!(Remap::new(options).unwrap_err().to_string(), expected);
        }
    }
}

/// The `remap` transform's config: `[transforms.NAME] type = "remap"`.
/// Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use shipper_core::component::Transform;

    use super::{Remap, RemapOptions};
    use crate::config::{BuildContext, BuildError, Checks, TransformComponent};
    use crate::transform::{check_field, FieldValue};

    /// `type = "remap"`: renames, deletes, redacts and adds fields.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RemapTransformConfig {
        #[serde(default)]
        pub inputs: Vec<String>,
        /// Old name to new name.
        #[serde(default)]
        pub rename: BTreeMap<String, String>,
        #[serde(default)]
        pub delete: Vec<String>,
        /// Fields whose values are replaced by a fixed marker.
        #[serde(default)]
        pub redact: Vec<String>,
        #[serde(default)]
        pub add: BTreeMap<String, FieldValue>,
    }

    impl crate::config::Named for RemapTransformConfig {
        const TYPE: &'static str = "remap";
    }

    impl TransformComponent for RemapTransformConfig {
        fn inputs(&self) -> &[String] {
            &self.inputs
        }

        fn check(&self, check: &mut dyn Checks) {
            for (old, new) in &self.rename {
                check_field(check, &["rename", old], old);
                check_field(check, &["rename", old], new);
            }
            for field in &self.delete {
                check_field(check, &["delete"], field);
            }
            for field in &self.redact {
                check_field(check, &["redact"], field);
            }
            for field in self.add.keys() {
                check_field(check, &["add", field], field);
            }
            if self.rename.is_empty()
                && self.delete.is_empty()
                && self.redact.is_empty()
                && self.add.is_empty()
            {
                check.warning(
                    &[],
                    "does nothing: give `rename`, `delete`, `redact` or `add`",
                );
            }
        }

        fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Transform>, BuildError> {
            let remap = Remap::new(RemapOptions {
                rename: self
                    .rename
                    .iter()
                    .map(|(a, b)| (a.clone(), b.clone()))
                    .collect(),
                delete: self.delete.clone(),
                redact: self.redact.clone(),
                add: self
                    .add
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ..RemapOptions::default()
            })
            .map_err(|e| e.to_string())?;
            Ok(Box::new(remap))
        }
    }
}

pub use config::RemapTransformConfig;
