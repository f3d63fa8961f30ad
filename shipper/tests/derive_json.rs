//! `#[derive(Ingest)]`'s JSON writer: for every struct shape and serde
//! attribute it follows, the bytes are serde_json's; for the attributes it
//! does not follow, the type's `Serialize` impl writes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Serialize;
use shipper::ingest::Ingest;

fn derived<T: Ingest>(value: &T) -> String {
    let mut out = Vec::new();
    value.write_json(&mut out).expect("writes");
    String::from_utf8(out).expect("UTF-8")
}

fn serde<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializes")
}

#[track_caller]
fn same<T: Ingest>(value: &T) {
    assert_eq!(derived(value), serde(value));
}

#[derive(Serialize, Ingest, Debug, Clone)]
#[ingest(stream = "everything")]
struct Everything {
    text: String,
    tiny: i8,
    wide: u128,
    signed: i64,
    real: f64,
    single: f32,
    flag: bool,
    letter: char,
    maybe: Option<u32>,
    maybe_text: Option<String>,
    boxed: Box<str>,
    list: Vec<u16>,
    map: BTreeMap<String, f64>,
    nested: Inner,
    unit: (),
    pair: (u8, String),
    r#type: &'static str,
}

#[derive(Serialize, Debug, Clone)]
struct Inner {
    a: f64,
    b: Option<Vec<String>>,
}

fn everything() -> impl Strategy<Value = Everything> {
    (
        (
            any::<String>(),
            any::<i8>(),
            any::<u128>(),
            any::<i64>(),
            any::<u64>().prop_map(f64::from_bits),
            any::<f32>(),
            any::<bool>(),
            any::<char>(),
        ),
        (
            any::<Option<u32>>(),
            any::<Option<String>>(),
            "[\\x00-\\x7f]{0,20}",
            prop::collection::vec(any::<u16>(), 0..4),
            prop::collection::btree_map(any::<String>(), any::<f64>(), 0..3),
            any::<f64>(),
            prop::option::of(prop::collection::vec(any::<String>(), 0..3)),
            any::<(u8, String)>(),
        ),
    )
        .prop_map(
            |(
                (text, tiny, wide, signed, real, single, flag, letter),
                (maybe, maybe_text, boxed, list, map, a, b, pair),
            )| Everything {
                text,
                tiny,
                wide,
                signed,
                real,
                single,
                flag,
                letter,
                maybe,
                maybe_text,
                boxed: boxed.into_boxed_str(),
                list,
                map,
                nested: Inner { a, b },
                unit: (),
                pair,
                r#type: "raw \"identifier\"",
            },
        )
}

proptest! {
    #[test]
    fn every_field_type_writes_what_serde_json_writes(value in everything()) {
        prop_assert_eq!(derived(&value), serde(&value));
    }
}

#[test]
fn non_finite_floats_and_escapes_match() {
    let mut value = Everything {
        text: "quote \" backslash \\ newline \n nul \u{0} del \u{7f} ✓".into(),
        tiny: -128,
        wide: u128::MAX,
        signed: i64::MIN,
        real: f64::NAN,
        single: f32::NEG_INFINITY,
        flag: false,
        letter: '"',
        maybe: None,
        maybe_text: Some("\t".into()),
        boxed: "".into(),
        list: vec![],
        map: BTreeMap::new(),
        nested: Inner {
            a: f64::INFINITY,
            b: None,
        },
        unit: (),
        pair: (0, "\u{1f}".into()),
        r#type: "",
    };
    same(&value);
    value.real = -0.0;
    value.single = 1e-45;
    same(&value);
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "renamed")]
#[serde(rename_all = "camelCase", deny_unknown_fields, rename = "Other")]
#[allow(dead_code)] // the skipped fields
struct Renamed {
    device_id: u32,
    #[serde(rename = "T\"emp\\\n\u{1}")]
    temperature_celsius: f64,
    #[serde(rename(serialize = "out", deserialize = "in"))]
    direction: &'static str,
    #[serde(default, alias = "old_name")]
    last_seen_at: u64,
    #[serde(skip)]
    secret: String,
    #[serde(skip_serializing)]
    also_secret: String,
    #[serde(skip_deserializing)]
    computed: bool,
}

#[test]
fn renames_and_skips_follow_serde() {
    let value = Renamed {
        device_id: 7,
        temperature_celsius: 21.5,
        direction: "north",
        last_seen_at: 3,
        secret: "hidden".into(),
        also_secret: "hidden".into(),
        computed: true,
    };
    same(&value);
    assert!(!derived(&value).contains("hidden"));
}

macro_rules! rename_all {
    ($($name:ident $rule:literal),* $(,)?) => {$(
        #[derive(Serialize, Ingest)]
        #[ingest(stream = "rules")]
        #[serde(rename_all = $rule)]
        #[allow(non_snake_case)]
        struct $name {
            sensor_id: u8,
            x: u8,
            two_words_here: u8,
            _leading: u8,
            trailing_: u8,
            HTTPStatus: u8,
        }
    )*
        #[test]
        fn every_rename_all_rule_follows_serde() {
            $(same(&$name { sensor_id: 1, x: 2, two_words_here: 3, _leading: 4, trailing_: 5, HTTPStatus: 6 });)*
        }
    };
}

rename_all!(
    Lower "lowercase",
    Upper "UPPERCASE",
    Pascal "PascalCase",
    Camel "camelCase",
    Snake "snake_case",
    ScreamingSnake "SCREAMING_SNAKE_CASE",
    Kebab "kebab-case",
    ScreamingKebab "SCREAMING-KEBAB-CASE",
);

#[derive(Serialize, Ingest)]
#[ingest(stream = "sparse")]
struct Sparse {
    #[serde(skip_serializing_if = "Option::is_none")]
    first: Option<u8>,
    #[serde(skip_serializing_if = "String::is_empty")]
    second: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    third: Vec<u8>,
}

#[test]
fn skip_serializing_if_leaves_fields_out_with_commas_right() {
    for first in [None, Some(1)] {
        for second in ["", "b"] {
            for third in [vec![], vec![3]] {
                same(&Sparse {
                    first,
                    second: second.into(),
                    third,
                });
            }
        }
    }
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "empty")]
struct Empty {}

#[derive(Serialize, Ingest)]
#[ingest(stream = "unit")]
struct Unit;

#[derive(Serialize, Ingest)]
#[ingest(stream = "tuple")]
struct Tuple(u8, String);

#[derive(Serialize, Ingest)]
#[ingest(stream = "newtype")]
struct Newtype(f64);

#[derive(Serialize, Ingest)]
#[ingest(stream = "enum")]
#[serde(tag = "kind")]
enum Event {
    Start { at: u64 },
    Stop,
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "borrowed")]
struct Borrowed<'a> {
    message: &'a str,
    labels: &'a [&'a str],
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "packed")]
#[repr(C, packed)]
struct Packed {
    flag: u8,
    value: u64,
    real: f64,
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "cow")]
struct Cows<'a> {
    text: std::borrow::Cow<'a, str>,
    owned: std::borrow::Cow<'a, str>,
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "generic")]
struct Generic<T: Serialize> {
    value: T,
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "flattened")]
struct Flattened {
    id: u8,
    #[serde(flatten)]
    inner: Inner,
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "tagged")]
#[serde(tag = "kind")]
struct TaggedStruct {
    id: u8,
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "transparent")]
#[serde(transparent)]
struct Transparent {
    id: u8,
}

#[derive(Serialize, Ingest)]
#[ingest(stream = "with")]
struct With {
    #[serde(serialize_with = "as_text")]
    id: u8,
}

fn as_text<S: serde::Serializer>(id: &u8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_string())
}

#[test]
fn other_shapes_and_attributes_write_what_serde_writes() {
    same(&Empty {});
    same(&Unit);
    same(&Tuple(1, "x".into()));
    same(&Newtype(2.5));
    same(&Event::Start { at: 9 });
    same(&Event::Stop);
    same(&Borrowed {
        message: "hi \"there\"",
        labels: &["a", "b"],
    });
    same(&Generic { value: vec![1, 2] });
    same(&Packed {
        flag: 1,
        value: u64::MAX,
        real: 0.1,
    });
    same(&Cows {
        text: "borrowed \"quote\"".into(),
        owned: String::from("owned\n").into(),
    });
    same(&Flattened {
        id: 1,
        inner: Inner {
            a: 0.5,
            b: Some(vec!["z".into()]),
        },
    });
    same(&TaggedStruct { id: 1 });
    same(&Transparent { id: 1 });
    same(&With { id: 1 });
}

/// A hand-written `Serialize` that is not the struct's fields.
#[derive(Ingest)]
#[ingest(stream = "custom")]
struct Custom {
    celsius: f64,
}

impl Serialize for Custom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.celsius * 9.0 / 5.0 + 32.0)
    }
}

#[derive(Ingest)]
#[ingest(stream = "custom", serde)]
struct CustomViaSerde {
    celsius: f64,
}

impl Serialize for CustomViaSerde {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.celsius * 9.0 / 5.0 + 32.0)
    }
}

#[test]
fn a_hand_written_serialize_needs_the_serde_flag() {
    // The derive writes the fields: it cannot see the impl. Debug builds
    // catch this on insert (tests/ingest.rs); `serde` fixes it.
    assert_eq!(derived(&Custom { celsius: 100.0 }), r#"{"celsius":100.0}"#);
    assert_eq!(derived(&CustomViaSerde { celsius: 100.0 }), "212.0");
}
