//! The JSON writer behind `#[derive(Ingest)]`: the bytes
//! `serde_json::to_writer` writes, without serde's visitor between the
//! struct and the buffer.
//!
//! The derive knows the struct's keys at compile time, so each key with
//! its quotes, colon and comma is one constant copied in one go, never
//! escaped at run time. Each field's value goes through [`Field`]: values
//! of the types serde_json writes as plain scalars (integers, floats,
//! `bool`, strings, `char`, and `Option`s and references of those) are
//! written here with the same formatters serde_json uses (itoa, zmij);
//! any other type goes through its `Serialize` impl and serde_json. The
//! choice is made at compile time by autoref specialization on the
//! field's concrete type: the derive writes
//! `(&&Field(&self.x)).write_field(out)`, which resolves to [`Fast`] when
//! the type implements [`Scalar`] and to [`Fallback`] otherwise.
//!
//! Not an API: the derive's generated code calls it; hence `#[doc(hidden)]`
//! on the module.

/// A field's value on its way to the buffer; see the module docs.
#[allow(missing_debug_implementations)]
pub struct Field<'a, T: ?Sized>(pub &'a T);

/// Writes a field whose type is a `Scalar` (the preferred method: it is
/// implemented on `&&Field`).
pub trait Fast {
    /// Appends the value's JSON.
    fn write_field(self, out: &mut Vec<u8>) -> Result<(), serde_json::Error>;
}

/// Writes any other field with serde_json.
pub trait Fallback {
    /// Appends the value's JSON.
    fn write_field(self, out: &mut Vec<u8>) -> Result<(), serde_json::Error>;
}

impl<T: Scalar + ?Sized> Fast for &&Field<'_, T> {
    #[inline(always)]
    fn write_field(self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        self.0.write_scalar(out);
        Ok(())
    }
}

impl<T: serde::Serialize + ?Sized> Fallback for &Field<'_, T> {
    #[inline]
    fn write_field(self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, self.0)
    }
}

/// A type serde_json writes as one JSON scalar, and that this module
/// writes the same way, byte for byte.
pub trait Scalar {
    /// Appends the value's JSON.
    fn write_scalar(&self, out: &mut Vec<u8>);
}

macro_rules! integers {
    ($($t:ty)*) => {$(
        impl Scalar for $t {
            #[inline(always)]
            fn write_scalar(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}

integers!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize);

macro_rules! floats {
    ($($t:ty)*) => {$(
        impl Scalar for $t {
            /// Non-finite values are `null`, as serde_json writes them.
            #[inline(always)]
            fn write_scalar(&self, out: &mut Vec<u8>) {
                if self.is_finite() {
                    out.extend_from_slice(zmij::Buffer::new().format_finite(*self).as_bytes());
                } else {
                    out.extend_from_slice(b"null");
                }
            }
        }
    )*};
}

floats!(f32 f64);

impl Scalar for bool {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl Scalar for str {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

impl Scalar for String {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

impl Scalar for char {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        write_str(out, self.encode_utf8(&mut [0; 4]));
    }
}

impl<T: Scalar + ?Sized> Scalar for &T {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        (**self).write_scalar(out);
    }
}

impl<T: Scalar + ?Sized> Scalar for Box<T> {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        (**self).write_scalar(out);
    }
}

impl Scalar for std::borrow::Cow<'_, str> {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

impl<T: Scalar> Scalar for Option<T> {
    #[inline(always)]
    fn write_scalar(&self, out: &mut Vec<u8>) {
        match self {
            Some(value) => value.write_scalar(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

/// Appends `s` as a JSON string. Strings without a byte that needs
/// escaping (the common case) are copied as they are; the others are
/// written by serde_json, so the escapes are its own.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing into a Vec cannot fail, nor can serializing a str.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether JSON needs an escape for any byte of `bytes`: a control
/// character (below 0x20), `"` or `\`. Eight bytes at a time.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Whether any byte of `word` is zero (exact as a yes/no answer).
    #[inline(always)]
    fn has_zero(word: u64) -> bool {
        word.wrapping_sub(ONES) & !word & HIGH != 0
    }
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // Bytes below 0x20: subtracting 0x20 from each borrows into the
        // high bit of exactly those bytes that were below it (and had it
        // clear before).
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH != 0;
        if control || has_zero(word ^ (ONES * u64::from(b'"'))) || has_zero(word ^ (ONES * 0x5c)) {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Where a derived writer and the type's `Serialize` impl disagree
/// (debug builds compare them on every insert).
#[cfg(debug_assertions)]
pub(crate) struct Mismatch<'a> {
    pub type_name: &'static str,
    pub derived: &'a [u8],
    pub serde: &'a [u8],
}

#[cfg(debug_assertions)]
impl std::fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#[derive(Ingest)] on {} writes {} but its Serialize impl writes {}: \
             with a hand-written or customized Serialize, add `serde` to the attribute: \
             #[ingest(stream = \"...\", serde)]",
            self.type_name,
            String::from_utf8_lossy(self.derived),
            String::from_utf8_lossy(self.serde),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("serializes")
    }

    fn scalar_bytes<T: Scalar + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        value.write_scalar(&mut out);
        out
    }

    #[test]
    fn every_escape_matches_serde_json() {
        for byte in 0u8..0x80 {
            let text = format!("a{}bcdefghij{}", char::from(byte), char::from(byte));
            assert_eq!(
                scalar_bytes(text.as_str()),
                serde_bytes(&text),
                "byte {byte:#x}"
            );
            assert_eq!(
                needs_escape(text.as_bytes()),
                byte < 0x20 || byte == b'"' || byte == b'\\',
                "byte {byte:#x}"
            );
        }
        for text in [
            "",
            "plain",
            "ünïcödé ✓",
            "\u{7f}",
            "tab\there",
            "12345678\"",
            "1234567\\",
        ] {
            assert_eq!(scalar_bytes(text), serde_bytes(text), "{text:?}");
        }
    }

    #[test]
    fn non_finite_floats_are_null() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(scalar_bytes(&value), b"null");
            assert_eq!(scalar_bytes(&(value as f32)), b"null");
        }
        assert_eq!(scalar_bytes(&-0.0f64), serde_bytes(&-0.0f64));
    }

    #[test]
    #[allow(clippy::needless_borrow)] // the derive's call, as it writes it
    fn field_picks_the_fast_path_for_scalars_and_serde_for_the_rest() {
        let mut out = Vec::new();
        (&&Field(&1.5f64)).write_field(&mut out).unwrap();
        out.push(b' ');
        (&&Field(&vec![1u8, 2])).write_field(&mut out).unwrap();
        out.push(b' ');
        (&&Field(&Some("x"))).write_field(&mut out).unwrap();
        assert_eq!(out, b"1.5 [1,2] \"x\"");
    }

    proptest! {
        #[test]
        fn strings_match_serde_json(text in any::<String>()) {
            prop_assert_eq!(scalar_bytes(text.as_str()), serde_bytes(&text));
        }

        #[test]
        fn ascii_strings_match_serde_json(text in "[\\x00-\\x7f]{0,40}") {
            prop_assert_eq!(scalar_bytes(text.as_str()), serde_bytes(&text));
        }

        #[test]
        fn floats_match_serde_json(bits in any::<u64>(), small in any::<f32>()) {
            let value = f64::from_bits(bits);
            prop_assert_eq!(scalar_bytes(&value), serde_bytes(&value));
            prop_assert_eq!(scalar_bytes(&small), serde_bytes(&small));
        }

        #[test]
        fn integers_match_serde_json(a in any::<i64>(), b in any::<u128>(), c in any::<i8>()) {
            prop_assert_eq!(scalar_bytes(&a), serde_bytes(&a));
            prop_assert_eq!(scalar_bytes(&b), serde_bytes(&b));
            prop_assert_eq!(scalar_bytes(&c), serde_bytes(&c));
        }

        #[test]
        fn options_and_chars_match_serde_json(a in any::<Option<char>>(), b in any::<Option<bool>>()) {
            prop_assert_eq!(scalar_bytes(&a), serde_bytes(&a));
            prop_assert_eq!(scalar_bytes(&b), serde_bytes(&b));
        }
    }
}
