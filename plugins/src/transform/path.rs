//! Dotted field paths, and finding one field's value in a record in a
//! single pass without building the record.
//!
//! `lookup` drives `serde_json`'s deserializer with a visitor that
//! descends only into the keys on the path and skips every other value
//! with [`IgnoredAny`] (which still checks its syntax), so reading a field
//! allocates nothing and the whole record is validated as one JSON object.
//! `serde_json` skips ignored values with a loop, not recursion, so deeply
//! nested values off the path are read (and skipped) without any risk to
//! the stack; only the keys on the path recurse, and a path is short. (A
//! record nested deeper than `serde_json`'s recursion limit of 128 is
//! therefore readable here but unreadable to [`super::remap`], which builds
//! the whole record.)

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Result, TransformError};

/// A field named by keys joined with dots: `http.status` is the `status`
/// key of the object under the top-level key `http`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses `text`; it must be non-empty and have no empty segment
    /// (`a..b`, `.a`, `a.` are errors).
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason| TransformError::InvalidPath {
            path: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("must not be empty"));
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(invalid(
                "has an empty segment (a leading, trailing or doubled dot)",
            ));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The keys, outermost first; never empty.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A value found at a path, borrowed for the duration of the inspection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'s> {
    Null,
    Bool(bool),
    /// Any JSON integer (`serde_json` yields `i64` or `u64`).
    Integer(i128),
    Float(f64),
    String(&'s str),
    /// An object or an array.
    Composite,
}

/// The record is not one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unreadable;

/// Finds `path` in `record` and returns `inspect` applied to its value,
/// `Ok(None)` if the record has no such field, or [`Unreadable`] if the
/// record is not exactly one JSON object (surrounding whitespace allowed).
pub(crate) fn lookup<R>(
    record: &[u8],
    path: &FieldPath,
    mut inspect: impl FnMut(Scalar<'_>) -> R,
) -> Result<Option<R>, Unreadable> {
    // `serde_json` skips ignored strings without checking their UTF-8, so
    // check the whole record first: what is readable here is then exactly
    // what `serde_json::from_slice` accepts (up to nesting, see the module
    // docs).
    let text = std::str::from_utf8(record).map_err(|_| Unreadable)?;
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    PathSeed {
        path: path.segments(),
        top: true,
        found: &mut found,
        inspect: &mut inspect,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end())
    .map_err(|_| Unreadable)?;
    Ok(found)
}

/// Walks one value: descends along `path`, or inspects the value when
/// `path` is empty. `top` marks the record itself, which must be an object.
struct PathSeed<'p, 'r, R, F> {
    path: &'p [String],
    top: bool,
    found: &'r mut Option<R>,
    inspect: &'r mut F,
}

impl<R, F: FnMut(Scalar<'_>) -> R> PathSeed<'_, '_, R, F> {
    fn scalar<E: de::Error>(self, value: Scalar<'_>) -> Result<(), E> {
        if self.top {
            return Err(E::custom("the record is not a JSON object"));
        }
        if self.path.is_empty() {
            *self.found = Some((self.inspect)(value));
        }
        Ok(())
    }
}

impl<'de, R, F: FnMut(Scalar<'_>) -> R> DeserializeSeed<'de> for PathSeed<'_, '_, R, F> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, R, F: FnMut(Scalar<'_>) -> R> Visitor<'de> for PathSeed<'_, '_, R, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.top {
            "a JSON object"
        } else {
            "a JSON value"
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.scalar(Scalar::Integer(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.scalar(Scalar::Integer(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.scalar(Scalar::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.top {
            return Err(de::Error::custom("the record is not a JSON object"));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        if self.path.is_empty() {
            *self.found = Some((self.inspect)(Scalar::Composite));
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let PathSeed {
            path,
            found,
            inspect,
            ..
        } = self;
        let Some((first, rest)) = path.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            *found = Some(inspect(Scalar::Composite));
            return Ok(());
        };
        while let Some(matched) = map.next_key_seed(KeyIs(first))? {
            if matched {
                // A repeated key: the last one counts.
                *found = None;
                map.next_value_seed(PathSeed {
                    path: rest,
                    top: false,
                    found: &mut *found,
                    inspect: &mut *inspect,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Deserializes a map key into whether it equals the wanted key, without
/// allocating (escaped keys arrive unescaped in a transient buffer).
struct KeyIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> FieldPath {
        FieldPath::parse(text).expect("valid path")
    }

    /// What `lookup` reports, as an owned value for comparison.
    #[derive(Debug, PartialEq)]
    enum Got {
        Unreadable,
        Missing,
        Null,
        Bool(bool),
        Integer(i128),
        Float(f64),
        String(String),
        Composite,
    }

    fn got(record: &[u8], field: &str) -> Got {
        match lookup(record, &path(field), |scalar| match scalar {
            Scalar::Null => Got::Null,
            Scalar::Bool(value) => Got::Bool(value),
            Scalar::Integer(value) => Got::Integer(value),
            Scalar::Float(value) => Got::Float(value),
            Scalar::String(value) => Got::String(value.to_owned()),
            Scalar::Composite => Got::Composite,
        }) {
            Err(_) => Got::Unreadable,
            Ok(None) => Got::Missing,
            Ok(Some(value)) => value,
        }
    }

    #[test]
    fn finds_fields_as_the_table_says() {
        use Got::*;
        let s = |text: &str| String(text.to_owned());
        #[rustfmt::skip]
        let cases: Vec<(&str, &[u8], &str, Got)> = vec![
            ("top level", br#"{"a":1,"b":"x"}"#, "b", s("x")),
            ("nested", br#"{"http":{"status":404}}"#, "http.status", Integer(404)),
            ("deep", br#"{"a":{"b":{"c":{"d":true}}}}"#, "a.b.c.d", Bool(true)),
            ("negative", br#"{"n":-3}"#, "n", Integer(-3)),
            ("u64 max", br#"{"n":18446744073709551615}"#, "n", Integer(u64::MAX.into())),
            ("float", br#"{"n":1.5}"#, "n", Float(1.5)),
            ("null", br#"{"n":null}"#, "n", Null),
            ("object value", br#"{"a":{"b":1}}"#, "a", Composite),
            ("array value", br#"{"a":[1,{"b":2}]}"#, "a", Composite),
            ("no index into arrays", br#"{"a":[{"b":2}]}"#, "a.b", Missing),
            ("missing", br#"{"a":1}"#, "b", Missing),
            ("missing nested", br#"{"a":{"c":1}}"#, "a.b", Missing),
            ("parent is a scalar", br#"{"a":5}"#, "a.b", Missing),
            ("dotted key is not a path", br#"{"a.b":1}"#, "a.b", Missing),
            ("escaped key", br#"{"\u0061":"yes"}"#, "a", s("yes")),
            ("escaped value", br#"{"a":"x\ny\u00e9"}"#, "a", s("x\nyé")),
            ("last repeat wins", br#"{"a":1,"a":2}"#, "a", Integer(2)),
            ("last repeat wins, nested", br#"{"a":{"b":1},"a":{"c":2}}"#, "a.b", Missing),
            ("surrounding whitespace", b" {\"a\":1}\r\n", "a", Integer(1)),
            ("empty object", b"{}", "a", Missing),
            ("array record", br#"[{"a":1}]"#, "a", Unreadable),
            ("string record", br#""a""#, "a", Unreadable),
            ("number record", b"42", "a", Unreadable),
            ("empty", b"", "a", Unreadable),
            ("truncated", br#"{"a":1"#, "a", Unreadable),
            ("trailing bytes", br#"{"a":1} x"#, "a", Unreadable),
            ("two objects", br#"{"a":1}{"a":2}"#, "a", Unreadable),
            ("invalid utf-8 in a value", b"{\"a\":\"\xff\"}", "a", Unreadable),
            ("invalid utf-8 elsewhere", b"{\"a\":1,\"b\":\"\xc3\x28\"}", "a", Unreadable),
            ("bad syntax after the field", br#"{"a":1,"b":tru}"#, "a", Unreadable),
        ];
        for (name, record, field, expected) in cases {
            assert_eq!(got(record, field), expected, "{name}");
        }
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        let depth = 100_000;
        let mut record = b"{\"a\":".to_vec();
        record.extend(std::iter::repeat_n(b'[', depth));
        record.extend(std::iter::repeat_n(b']', depth));
        record.push(b'}');
        assert_eq!(got(&record, "a"), Got::Composite);
        assert_eq!(got(&record, "b"), Got::Missing);
        record.pop();
        assert_eq!(got(&record, "a"), Got::Unreadable, "unclosed");
    }

    #[test]
    fn huge_records_are_read() {
        let filler = "x".repeat(8 << 20);
        let record = format!(r#"{{"pad":"{filler}","deep":{{"pad":[{filler:?}],"k":7}}}}"#);
        assert_eq!(got(record.as_bytes(), "deep.k"), Got::Integer(7));
    }

    #[test]
    fn bad_paths_are_errors() {
        for text in ["", ".", "a.", ".a", "a..b"] {
            let error = FieldPath::parse(text).expect_err(text);
            assert!(
                error.to_string().starts_with("invalid field path"),
                "{text}: {error}"
            );
        }
        assert_eq!(path("a.b.c").segments(), ["a", "b", "c"]);
        assert_eq!(path("http.status").to_string(), "http.status");
    }
}
