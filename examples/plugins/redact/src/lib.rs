//! `redact`: an example shipper transform plugin that replaces credit-card
//! numbers and e-mail addresses in records before they are stored.
//!
//! It works on the raw bytes of a record (usually one JSON object), with a
//! hand-written scanner rather than a regex: it runs once per record on the
//! producing side, so a record with nothing to redact should cost two
//! quick passes over its bytes (one for `@`, one for long digit runs) and
//! no allocation or write.
//!
//! What counts as a finding:
//!
//! * **Credit-card number**: 13 to 19 digits, either contiguous or grouped
//!   with single spaces or single dashes (one kind per number:
//!   `4111 1111 1111 1111`, `4111-1111-1111-1111`, `4111111111111111`),
//!   that pass the Luhn check and are not glued to a letter or another
//!   digit. Numbers that fail Luhn and longer digit runs stay. Digits
//!   after `digit.` (the fraction of a decimal number, such as a JSON
//!   float) are not taken for a card either. The first digit must be 2
//!   to 6, as for the major networks: Luhn alone lets one number in ten
//!   through by chance, and millisecond, microsecond and nanosecond
//!   timestamps (13, 16 and 19 digits, starting with 1 this century)
//!   would lose that share. Other ids of card length that start with 2
//!   to 6 and pass Luhn are redacted: the transform errs on the side of
//!   hiding.
//! * **E-mail address**: a local part of `[A-Za-z0-9._%+-]`, `@`, then
//!   labels of `[A-Za-z0-9-]` separated by dots, at least two labels, the
//!   last one two or more letters (`a@b` and `user@host.c` stay).
//!
//! Each finding is replaced, as a whole, by the replacement text, verbatim.
//! JSON string escapes (`\n`, `\u00e9`) just before a finding are left
//! whole, so the output stays valid JSON as long as the replacement holds
//! no `"` or `\`. A card number written as a bare JSON *number* (not a
//! string) becomes the replacement text, which is not a JSON value: that
//! record is better broken than leaking the number.
//!
//! # Configuration
//!
//! The component's table (less `type`, `plugin` and `inputs`); every key
//! is optional and an unknown key is an error:
//!
//! | key           | type   | default        | meaning                          |
//! |---------------|--------|----------------|----------------------------------|
//! | `cards`       | bool   | `true`         | redact credit-card numbers       |
//! | `emails`      | bool   | `true`         | redact e-mail addresses          |
//! | `replacement` | string | `"[REDACTED]"` | what replaces each (may be `""`) |
//!
//! # Building and using it
//!
//! ```sh
//! cargo build --release -p shipper-redact
//! # -> target/release/libshipper_redact.so
//! ```
//!
//! ```toml
//! [transforms.scrub]
//! plugin = "target/release/libshipper_redact.so"
//! inputs = ["app"]
//! replacement = "[REDACTED]"
//! ```
//!
//! The crate is also an `rlib`, so a benchmark can call [`Redact`] directly
//! and compare it with the same code loaded through the C ABI.

// No `unsafe` here. `export_plugin!` expands to `#[unsafe(no_mangle)]`,
// which this lint would count, but lints do not look inside macros from
// other crates, so `forbid` still compiles; the SDK vouches for its
// expansion.
#![forbid(unsafe_code)]

use serde::Deserialize;
use shipper_plugin::{Action, Error, Record, TransformPlugin};

/// What [`Redact`] looks for and what it writes instead; the plugin's
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactOptions {
    /// Redact credit-card numbers.
    pub cards: bool,
    /// Redact e-mail addresses.
    pub emails: bool,
    /// Written, verbatim, in place of each finding. May be empty.
    pub replacement: String,
}

impl Default for RedactOptions {
    fn default() -> Self {
        RedactOptions {
            cards: true,
            emails: true,
            replacement: "[REDACTED]".to_owned(),
        }
    }
}

impl RedactOptions {
    /// Options from the plugin's JSON configuration. An empty (or blank)
    /// string counts as `{}`.
    pub fn from_json(config: &str) -> Result<Self, Error> {
        if config.trim().is_empty() {
            return Ok(RedactOptions::default());
        }
        // serde_json's message names the offending key ("unknown field
        // `colour`, expected one of ...") and where it is.
        serde_json::from_str(config)
            .map_err(|error| Error::fatal(format!("redact: bad configuration: {error}")))
    }
}

/// Fewest and most digits of a card number (ISO/IEC 7812).
const CARD_MIN_DIGITS: usize = 13;
const CARD_MAX_DIGITS: usize = 19;

/// One finding: `input[start..end]` is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// An e-mail finding and the `@` it was found from (kept to find it again
/// with a later lower bound without searching for the `@` anew).
#[derive(Debug, Clone, Copy)]
struct EmailSpan {
    span: Span,
    at: usize,
}

/// The scanner: finds credit-card numbers and e-mail addresses in a
/// record's bytes and writes the record with them replaced.
#[derive(Debug, Clone)]
pub struct Redact {
    cards: bool,
    emails: bool,
    replacement: Vec<u8>,
}

impl Default for Redact {
    fn default() -> Self {
        Redact::new(RedactOptions::default())
    }
}

impl Redact {
    /// A scanner with `options`.
    pub fn new(options: RedactOptions) -> Self {
        Redact {
            cards: options.cards,
            emails: options.emails,
            replacement: options.replacement.into_bytes(),
        }
    }

    /// Writes `input` to `out` (which the caller has cleared) with every
    /// finding replaced, and returns true, if there is any finding.
    /// Returns false otherwise; `out` is then unspecified (in practice
    /// untouched) and the input stands as it is.
    ///
    /// Any bytes are accepted, UTF-8 or not.
    pub fn redact(&self, input: &[u8], out: &mut Vec<u8>) -> bool {
        // Findings are taken leftmost first, an e-mail before a card at the
        // same place (the e-mail then covers the card: a local part can hold
        // digits and dashes, not spaces). After each one the search resumes
        // at its end, so findings never overlap, and an e-mail's local part
        // is not allowed to reach back into the previous finding: otherwise
        // redacting the output again could find what was cut off (`.x` of
        // `4111...1111.x@example.com`) and the transform would not be
        // idempotent.
        let mut pos = 0;
        let mut copied = 0;
        let mut found = false;
        let mut card: Option<Span> = None;
        let mut cards_left = self.cards;
        let mut email: Option<EmailSpan> = None;
        let mut emails_left = self.emails;
        loop {
            if cards_left && card.is_none_or(|card| card.start < pos) {
                card = find_card(input, pos);
                cards_left = card.is_some();
            }
            if emails_left && email.is_none_or(|email| email.span.start < pos) {
                // The '@' of a stale finding may still start one, with a
                // shorter local part.
                let from = email.map_or(pos, |email| email.at.max(pos));
                email = find_email(input, pos, from);
                emails_left = email.is_some();
            }
            let next = match (card, email) {
                (None, None) => break,
                (Some(card), None) => card,
                (None, Some(email)) => email.span,
                (Some(card), Some(email)) if email.span.start <= card.start => email.span,
                (Some(card), Some(_)) => card,
            };
            out.extend_from_slice(&input[copied..next.start]);
            out.extend_from_slice(&self.replacement);
            copied = next.end;
            pos = next.end;
            found = true;
        }
        if found {
            out.extend_from_slice(&input[copied..]);
        }
        found
    }
}

/// The first card number in `input` that starts at or after `from`.
fn find_card(input: &[u8], from: usize) -> Option<Span> {
    let mut i = from;
    while let Some(stretch) = next_stretch(input, i) {
        let mut g = stretch.start;
        while g < stretch.end {
            if starts_number(input, g) {
                if let Some(end) = card_at(input, g) {
                    return Some(Span { start: g, end });
                }
            }
            // The rest of this group cannot start a number; the next group
            // (after a separator) can.
            while g < stretch.end && input[g].is_ascii_digit() {
                g += 1;
            }
            while g < stretch.end && !input[g].is_ascii_digit() {
                g += 1;
            }
        }
        i = stretch.end;
    }
    None
}

/// The next stretch at or after `from` of at least 13 digits joined by
/// single spaces or dashes (of any mix): the only places a card number
/// can be. Most records have none, and this pass (which skips digit-free
/// blocks with a check the compiler vectorizes) is then all they cost;
/// the exact rules (boundaries, one kind of separator, Luhn) never run.
fn next_stretch(input: &[u8], from: usize) -> Option<Span> {
    const BLOCK: usize = 32;
    let mut start = from;
    let mut digits = 0;
    let mut after_digit = false;
    let mut offset = from;
    for block in input.get(from..)?.chunks(BLOCK) {
        // Not `any`: its early exit keeps the loop scalar.
        if digits == 0
            && !block
                .iter()
                .fold(false, |any, byte| any | byte.is_ascii_digit())
        {
            offset += block.len();
            continue;
        }
        for (k, &byte) in block.iter().enumerate() {
            if byte.is_ascii_digit() {
                if digits == 0 {
                    start = offset + k;
                }
                digits += 1;
                after_digit = true;
            } else if after_digit && (byte == b' ' || byte == b'-') {
                after_digit = false;
            } else {
                if digits >= CARD_MIN_DIGITS {
                    return Some(Span {
                        start,
                        end: offset + k,
                    });
                }
                digits = 0;
                after_digit = false;
            }
        }
        offset += block.len();
    }
    (digits >= CARD_MIN_DIGITS).then_some(Span {
        start,
        end: input.len(),
    })
}

/// The end of the longest card number starting at `start` (a digit at a
/// number boundary): groups of digits joined by one kind of single
/// separator, ending at a group's end that is a number boundary, with
/// 13 to 19 digits passing Luhn.
fn card_at(input: &[u8], start: usize) -> Option<usize> {
    // Card numbers start with 2 to 6 (Mastercard, Amex, Visa, Discover and
    // the rest of the major networks); timestamps of this century start
    // with 1 and would otherwise pass Luhn one time in ten.
    if !input
        .get(start)
        .is_some_and(|first| (b'2'..=b'6').contains(first))
    {
        return None;
    }
    let mut digits = [0u8; CARD_MAX_DIGITS];
    let mut len = 0;
    let mut separator = None;
    let mut best = None;
    let mut j = start;
    loop {
        while let Some(&byte) = input.get(j).filter(|byte| byte.is_ascii_digit()) {
            if len == CARD_MAX_DIGITS {
                // Too many digits for anything that ends from here on.
                return best;
            }
            digits[len] = byte - b'0';
            len += 1;
            j += 1;
        }
        if len >= CARD_MIN_DIGITS && ends_number(input, j) && luhn(&digits[..len]) {
            best = Some(j);
        }
        match input.get(j) {
            Some(&sep)
                if (sep == b' ' || sep == b'-')
                    && separator.is_none_or(|first| first == sep)
                    && input.get(j + 1).is_some_and(u8::is_ascii_digit) =>
            {
                separator = Some(sep);
                j += 1;
            }
            _ => return best,
        }
    }
}

/// Whether a number may start at `i` (a digit): nothing alphanumeric
/// right before it, except the letter of a JSON escape (`\n4111...` is a
/// newline, then the number), and not the fraction of a decimal number.
fn starts_number(input: &[u8], i: usize) -> bool {
    let Some(before) = i.checked_sub(1) else {
        return true;
    };
    let byte = input[before];
    if byte.is_ascii_alphanumeric() {
        return matches!(byte, b'b' | b'f' | b'n' | b'r' | b't') && escaped(input, before);
    }
    !(byte == b'.' && before > 0 && input[before - 1].is_ascii_digit())
}

/// Whether a number may end at `j` (just past a digit): nothing
/// alphanumeric after it, and not the integer part of a decimal number.
fn ends_number(input: &[u8], j: usize) -> bool {
    match input.get(j) {
        None => true,
        Some(byte) if byte.is_ascii_alphanumeric() => false,
        Some(b'.') => !input.get(j + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

/// Whether `input[i]` follows an odd number of backslashes, i.e. is the
/// first character of a JSON escape (`\\n` is a backslash, then `n`).
fn escaped(input: &[u8], i: usize) -> bool {
    let backslashes = input[..i]
        .iter()
        .rev()
        .take_while(|&&byte| byte == b'\\')
        .count();
    backslashes % 2 == 1
}

/// The Luhn check over `digits` (values 0 to 9, most significant first).
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &digit)| {
            let digit = u32::from(digit);
            if k % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                digit
            }
        })
        .sum();
    sum % 10 == 0
}

/// The first e-mail address around an `@` at or after `from` whose local
/// part starts at or after `floor`.
fn find_email(input: &[u8], floor: usize, from: usize) -> Option<EmailSpan> {
    let rest = input.get(from..)?;
    memchr::memchr_iter(b'@', rest).find_map(|offset| {
        let at = from + offset;
        email_at(input, floor, at).map(|span| EmailSpan { span, at })
    })
}

/// The e-mail address around the `@` at `at`, its local part starting no
/// earlier than `floor`.
fn email_at(input: &[u8], floor: usize, at: usize) -> Option<Span> {
    let mut start = at;
    while start > floor && is_local(input[start - 1]) {
        start -= 1;
    }
    // The local part must not begin inside a JSON escape: replacing
    // `nbob@...` in `\nbob@...` would leave `\[REDACTED]`, which is not JSON.
    if start < at && escaped(input, start) {
        if input[start] == b'u' {
            let hex = input[start + 1..at]
                .iter()
                .take(4)
                .take_while(|byte| byte.is_ascii_hexdigit())
                .count();
            start += 1 + hex;
        } else {
            start += 1;
        }
    }
    if start >= at {
        return None;
    }
    let end = domain_end(input, at + 1)?;
    Some(Span { start, end })
}

/// Bytes of an e-mail's local part.
fn is_local(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Bytes of a domain label.
fn is_label(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

/// The end of the longest domain starting at `from`: labels separated by
/// single dots, at least two, the last one two or more letters. The last
/// label may be the letters before a dash (`a@example.com-x` gives
/// `a@example.com`), not before a digit (`example.com1` is no domain).
fn domain_end(input: &[u8], from: usize) -> Option<usize> {
    let mut best = None;
    let mut j = from;
    let mut labels = 0;
    loop {
        let label = j;
        while input.get(j).copied().is_some_and(is_label) {
            j += 1;
        }
        if j == label {
            return best;
        }
        if labels > 0 {
            let letters = input[label..j]
                .iter()
                .take_while(|byte| byte.is_ascii_alphabetic())
                .count();
            let tld_end = label + letters;
            if letters >= 2 && (tld_end == j || input[tld_end] == b'-') {
                best = Some(tld_end);
            }
        }
        labels += 1;
        if input.get(j) == Some(&b'.') {
            j += 1;
        } else {
            return best;
        }
    }
}

/// The plugin: a [`Redact`] behind shipper's transform interface.
#[derive(Debug, Clone)]
pub struct RedactPlugin {
    redact: Redact,
}

impl RedactPlugin {
    /// The scanner the plugin runs.
    pub fn redact(&self) -> &Redact {
        &self.redact
    }
}

impl TransformPlugin for RedactPlugin {
    const NAME: &'static str = "redact";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(config: &str) -> Result<Self, Error> {
        Ok(RedactPlugin {
            redact: Redact::new(RedactOptions::from_json(config)?),
        })
    }

    fn transform(&mut self, record: &Record<'_>, out: &mut Vec<u8>) -> Result<Action, Error> {
        Ok(if self.redact.redact(record.payload, out) {
            Action::Replace
        } else {
            Action::Keep
        })
    }
}

shipper_plugin::export_plugin!(transform RedactPlugin);

#[cfg(test)]
mod tests;
