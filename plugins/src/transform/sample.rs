//! `sample`: keeps 1 record in `rate`.
//!
//! Without a key, a counter keeps the 1st, `rate + 1`-th, `2 rate + 1`-th,
//! ... record, and the record is not parsed at all.
//!
//! With a key field, the decision is a function of the field's value alone:
//! a record is kept when a hash of the value is `0` modulo `rate`, so every
//! record with the same value gets the same decision, in every process and
//! on every run (all records of one request, user or trace are kept or
//! dropped together). The hash is 64-bit FNV-1a over a type tag and the
//! value's bytes, finished with the SplitMix64 mixer so its low bits are
//! well spread; both are fixed here and must not change, or the kept set
//! would change with a shipper upgrade. Values are hashed by JSON type and
//! value: `"42"` and `42` differ, `42` and `42.0` are the same.
//!
//! Records without a usable key (the field is missing, `null`, an object or
//! an array, or the record is not a JSON object) are sampled by the counter
//! instead, and counted in [`Sample::unkeyed`] (and in
//! [`TransformCounters::unreadable`] when the record is not a JSON object): they are
//! neither all kept nor all dropped.
//!
//! `rate = 1` keeps everything without parsing.

use super::path::{lookup, Scalar};
use super::{
    FieldPath, Result, Transform, TransformCounters, TransformError, TransformOutcome,
    TransformStats,
};

/// Configuration of a [`Sample`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleOptions {
    /// Keep 1 record in this many; at least 1.
    pub rate: u64,
    /// A field whose value decides, deterministically, which records are
    /// kept.
    pub key: Option<String>,
}

/// Keeps 1 record in N; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Sample {
    rate: u64,
    key: Option<FieldPath>,
    /// Records decided by the counter so far.
    seen: u64,
    unkeyed: u64,
    counters: std::sync::Arc<TransformStats>,
}

impl Sample {
    /// Checks the options: `rate` at least 1, `key` a valid [`FieldPath`].
    pub fn new(options: SampleOptions) -> Result<Self> {
        if options.rate == 0 {
            return Err(TransformError::ZeroRate);
        }
        let key = options.key.as_deref().map(FieldPath::parse).transpose()?;
        Ok(Sample {
            rate: options.rate,
            key,
            seen: 0,
            unkeyed: 0,
            counters: std::sync::Arc::default(),
        })
    }

    /// Records that had a key field configured but no usable key value.
    pub fn unkeyed(&self) -> u64 {
        self.unkeyed
    }

    fn by_counter(&mut self) -> bool {
        let keep = self.seen % self.rate == 0;
        self.seen = self.seen.wrapping_add(1);
        keep
    }

    fn keep(&mut self, record: &[u8]) -> bool {
        if self.rate == 1 {
            return true;
        }
        let Some(key) = &self.key else {
            return self.by_counter();
        };
        match lookup(record, key, key_hash) {
            Ok(Some(Some(hash))) => hash % self.rate == 0,
            Ok(_) => {
                self.unkeyed += 1;
                self.by_counter()
            }
            Err(_) => {
                self.unkeyed += 1;
                self.counters.count_unreadable();
                self.by_counter()
            }
        }
    }
}

impl Sample {
    /// What this transform has done so far.
    pub fn counters(&self) -> TransformCounters {
        self.counters.snapshot()
    }
}

impl Transform for Sample {
    fn apply<'a>(&mut self, record: &'a [u8], _scratch: &'a mut Vec<u8>) -> TransformOutcome<'a> {
        let outcome = if self.keep(record) {
            TransformOutcome::Keep(record)
        } else {
            TransformOutcome::Drop
        };
        self.counters.count(&outcome);
        outcome
    }

    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.counters.metrics()
    }
}

/// The stable hash of a key value, or `None` for values that are not keys.
fn key_hash(value: Scalar<'_>) -> Option<u64> {
    let mut hash = Fnv1a::new();
    match value {
        Scalar::Null | Scalar::Composite => return None,
        Scalar::Bool(flag) => hash.write(&[b'b', u8::from(flag)]),
        Scalar::Integer(number) => {
            hash.write(b"i");
            hash.write(&number.to_le_bytes());
        }
        // Whole floats hash as the integer they equal (i128 holds every
        // whole f64 below 1.7e38).
        Scalar::Float(number) if number.fract() == 0.0 && number.abs() < 1e38 => {
            hash.write(b"i");
            hash.write(&(number as i128).to_le_bytes());
        }
        Scalar::Float(number) => {
            hash.write(b"f");
            hash.write(&number.to_bits().to_le_bytes());
        }
        Scalar::String(text) => {
            hash.write(b"s");
            hash.write(text.as_bytes());
        }
    }
    Some(splitmix64(hash.0))
}

/// 64-bit FNV-1a (offset basis and prime from the FNV specification).
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(Self::PRIME);
        }
    }
}

/// The SplitMix64 finaliser: spreads every input bit over the output.
fn splitmix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: u64, key: Option<&str>) -> Sample {
        Sample::new(SampleOptions {
            rate,
            key: key.map(str::to_owned),
        })
        .expect("valid options")
    }

    fn kept(sample: &mut Sample, record: &[u8]) -> bool {
        sample.apply(record, &mut Vec::new()) != TransformOutcome::Drop
    }

    #[test]
    fn the_hash_is_pinned() {
        // FNV-1a's published test vectors.
        let fnv = |bytes: &[u8]| {
            let mut hash = Fnv1a::new();
            hash.write(bytes);
            hash.0
        };
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
        // SplitMix64's first output from seed 0 (state += golden gamma).
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        // Equal JSON values hash equally; different types differ.
        assert_eq!(key_hash(Scalar::Integer(42)), key_hash(Scalar::Float(42.0)));
        assert_ne!(
            key_hash(Scalar::Integer(42)),
            key_hash(Scalar::String("42"))
        );
        assert_ne!(key_hash(Scalar::Bool(true)), key_hash(Scalar::Bool(false)));
        assert_eq!(key_hash(Scalar::Null), None);
        assert_eq!(key_hash(Scalar::Composite), None);
    }

    #[test]
    fn counter_keeps_one_in_rate() {
        #[rustfmt::skip]
        let cases: [(u64, usize, &str); 4] = [
            (1, 5, "KKKKK"),
            (2, 5, "KDKDK"),
            (3, 7, "KDDKDDK"),
            (10, 3, "KDD"),
        ];
        for (rate, records, expected) in cases {
            let mut sample = sample(rate, None);
            let got: String = (0..records)
                .map(|_| {
                    if kept(&mut sample, b"not even json") {
                        'K'
                    } else {
                        'D'
                    }
                })
                .collect();
            assert_eq!(got, expected, "rate {rate}");
            assert_eq!(sample.counters().unreadable, 0, "unparsed");
        }
    }

    #[test]
    fn same_key_same_decision() {
        for rate in [2, 3, 10, 100] {
            let mut first = sample(rate, Some("user.id"));
            let mut second = sample(rate, Some("user.id"));
            for id in 0..2_000 {
                let record = format!(r#"{{"user":{{"id":"u{id}"}},"n":{id}}}"#);
                let other = format!(r#"{{"n":-1,"user":{{"name":"x","id":"u{id}"}}}}"#);
                let decision = kept(&mut first, record.as_bytes());
                assert_eq!(kept(&mut first, record.as_bytes()), decision, "repeat");
                assert_eq!(kept(&mut first, other.as_bytes()), decision, "other fields");
                assert_eq!(kept(&mut second, record.as_bytes()), decision, "instance");
            }
            assert_eq!(first.unkeyed(), 0);
        }
    }

    #[test]
    fn keyed_ratio_is_close_to_the_rate() {
        // Deterministic: the same keys always give the same count, so
        // the bounds (±10 %, about 6 standard deviations at these sizes)
        // are checked on fixed numbers, not on a random draw.
        let keys = 200_000u64;
        for rate in [2u64, 7, 10, 100] {
            let mut sample = sample(rate, Some("trace"));
            let kept_count = (0..keys)
                .filter(|id| kept(&mut sample, format!(r#"{{"trace":"t-{id}"}}"#).as_bytes()))
                .count() as f64;
            let expected = keys as f64 / rate as f64;
            assert!(
                (kept_count - expected).abs() <= expected * 0.10,
                "rate {rate}: kept {kept_count}, expected about {expected}"
            );
            // Integer keys spread as well.
            let mut sample = self::sample(rate, Some("n"));
            let kept_count = (0..keys)
                .filter(|id| kept(&mut sample, format!(r#"{{"n":{id}}}"#).as_bytes()))
                .count() as f64;
            assert!(
                (kept_count - expected).abs() <= expected * 0.10,
                "integer keys, rate {rate}: kept {kept_count}"
            );
        }
    }

    #[test]
    fn records_without_a_key_use_the_counter() {
        let mut sample = sample(2, Some("k"));
        // Name, record, unreadable.
        #[rustfmt::skip]
        let cases: [(&str, &[u8], bool); 6] = [
            ("missing", br#"{"other":1}"#, false),
            ("null", br#"{"k":null}"#, false),
            ("object", br#"{"k":{"a":1}}"#, false),
            ("array", br#"{"k":[1]}"#, false),
            ("not json", b"k=1", true),
            ("invalid utf-8", b"{\"k\":\"\xff\"}", true),
        ];
        let mut unreadable = 0;
        for (index, (name, record, is_unreadable)) in cases.into_iter().enumerate() {
            assert_eq!(kept(&mut sample, record), index % 2 == 0, "{name}");
            unreadable += u64::from(is_unreadable);
            assert_eq!(sample.counters().unreadable, unreadable, "{name}");
        }
        assert_eq!(sample.unkeyed(), cases.len() as u64);
    }

    #[test]
    fn zero_rate_and_bad_key_are_errors() {
        let error = Sample::new(SampleOptions { rate: 0, key: None }).unwrap_err();
        assert_eq!(error, TransformError::ZeroRate);
        let error = Sample::new(SampleOptions {
            rate: 2,
            key: Some("a.".to_owned()),
        })
        .unwrap_err();
        assert!(
            matches!(error, TransformError::InvalidPath { .. }),
            "{error}"
        );
    }
}

/// The `sample` transform's config: `[transforms.NAME] type = "sample"`.
/// Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use serde::Deserialize;
    use shipper_core::component::Transform;

    use super::{Sample, SampleOptions};
    use crate::config::{BuildContext, BuildError, Checks, TransformComponent};
    use crate::transform::check_field;

    /// `type = "sample"`: keeps 1 record in `rate`.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SampleTransformConfig {
        #[serde(default)]
        pub inputs: Vec<String>,
        pub rate: u64,
        /// Field whose value decides, deterministically, which records are kept.
        #[serde(default)]
        pub key: Option<String>,
    }

    impl crate::config::Named for SampleTransformConfig {
        const TYPE: &'static str = "sample";
    }

    impl TransformComponent for SampleTransformConfig {
        fn inputs(&self) -> &[String] {
            &self.inputs
        }

        fn check(&self, check: &mut dyn Checks) {
            if self.rate == 0 {
                check.error(&["rate"], "must be at least 1 (keep 1 record in `rate`)");
            }
            if let Some(key) = &self.key {
                check_field(check, &["key"], key);
            }
        }

        fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Transform>, BuildError> {
            let sample = Sample::new(SampleOptions {
                rate: self.rate,
                key: self.key.clone(),
            })
            .map_err(|e| e.to_string())?;
            Ok(Box::new(sample))
        }
    }
}

pub use config::SampleTransformConfig;
