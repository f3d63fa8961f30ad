use super::*;
use proptest::prelude::*;

/// `input` through a scanner with `options`: `Some(output)` if it found
/// anything.
fn run(options: RedactOptions, input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    Redact::new(options).redact(input, &mut out).then_some(out)
}

fn check_table(options: &RedactOptions, cases: &[(&str, &str, Option<&str>)]) {
    for &(name, input, expected) in cases {
        let got = run(options.clone(), input.as_bytes());
        let got = got.as_deref().map(|out| String::from_utf8_lossy(out));
        assert_eq!(got.as_deref(), expected, "case {name}: {input:?}");
    }
}

#[test]
fn cards() {
    check_table(
        &RedactOptions::default(),
        &[
            (
                "plain visa",
                r#"{"card":"4111111111111111"}"#,
                Some(r#"{"card":"[REDACTED]"}"#),
            ),
            (
                "spaced visa",
                r#"{"msg":"paid with 4111 1111 1111 1111 today"}"#,
                Some(r#"{"msg":"paid with [REDACTED] today"}"#),
            ),
            (
                "dashed visa",
                r#"{"msg":"card=4111-1111-1111-1111;"}"#,
                Some(r#"{"msg":"card=[REDACTED];"}"#),
            ),
            (
                "13-digit visa",
                "card 4222222222222",
                Some("card [REDACTED]"),
            ),
            ("mastercard", "5555555555554444", Some("[REDACTED]")),
            (
                "spaced mastercard",
                "mc: 5105 1051 0510 5100.",
                Some("mc: [REDACTED]."),
            ),
            (
                "amex",
                "amex 378282246310005 ok",
                Some("amex [REDACTED] ok"),
            ),
            (
                "amex in its 4-6-5 grouping",
                "amex 3782 822463 10005",
                Some("amex [REDACTED]"),
            ),
            ("19 digits", "(6304000000000000018)", Some("([REDACTED])")),
            (
                "after a JSON newline escape",
                r#"{"msg":"line\n4111111111111111"}"#,
                Some(r#"{"msg":"line\n[REDACTED]"}"#),
            ),
            (
                "after an escaped backslash",
                r#"{"path":"C:\\4111111111111111"}"#,
                Some(r#"{"path":"C:\\[REDACTED]"}"#),
            ),
            (
                "20 grouped digits: the first 16 end at a space",
                "4111 1111 1111 1111 1234",
                Some("[REDACTED] 1234"),
            ),
            (
                "a short group before the card",
                "ref 12 4111 1111 1111 1111",
                Some("ref 12 [REDACTED]"),
            ),
            ("fails luhn", r#"{"id":"4111111111111112"}"#, None),
            ("fails luhn, spaced", "4111 1111 1111 1112", None),
            (
                "millisecond timestamp",
                r#"{"ts":1718000000123,"n":1718000000124}"#,
                None,
            ),
            (
                "millisecond timestamp that passes luhn",
                r#"{"ts":1795000000004}"#,
                None,
            ),
            ("20-digit run", "41111111111111111111", None),
            (
                "20-digit run, luhn-valid tail",
                "04111111111111111111",
                None,
            ),
            ("12 digits", "411111111113", None),
            ("glued to letters before", "id4111111111111111", None),
            ("glued to letters after", "4111111111111111abc", None),
            ("glued after a group", "4111 1111 1111 1111x", None),
            ("mixed separators", "4111 1111-1111 1111", None),
            ("double space", "4111  1111 1111 1111", None),
            ("trailing separator only", "4111-1111-1111-", None),
            ("decimal fraction", r#"{"score":0.4111111111111111}"#, None),
            ("decimal integer part", r#"{"x":4111111111111111.5}"#, None),
            (
                "a literal backslash and n, glued",
                r#"{"msg":"\\n4111111111111111"}"#,
                None,
            ),
            ("unicode escape, glued", r#""\u00414111111111111111""#, None),
        ],
    );
}

#[test]
fn emails() {
    check_table(
        &RedactOptions::default(),
        &[
            (
                "whole string",
                r#"{"user":"alice@example.com"}"#,
                Some(r#"{"user":"[REDACTED]"}"#),
            ),
            (
                "start of string",
                r#"{"msg":"bob@example.org wrote"}"#,
                Some(r#"{"msg":"[REDACTED] wrote"}"#),
            ),
            (
                "end of string",
                r#"{"msg":"reply to carol@mail.example.net"}"#,
                Some(r#"{"msg":"reply to [REDACTED]"}"#),
            ),
            (
                "middle, plus and dots",
                r#"{"msg":"from first.last+tag@sub.example.co.uk to you"}"#,
                Some(r#"{"msg":"from [REDACTED] to you"}"#),
            ),
            (
                "percent, underscore, dash",
                "x_y%z-w@my-host.example.com",
                Some("[REDACTED]"),
            ),
            (
                "sentence end",
                "write to dave@example.com.",
                Some("write to [REDACTED]."),
            ),
            ("angle brackets", "<eve@example.io>", Some("<[REDACTED]>")),
            (
                "last label before a digit label",
                "a@example.com.x1",
                Some("[REDACTED].x1"),
            ),
            (
                "last label before a dash",
                "a@example.com-- bye",
                Some("[REDACTED]-- bye"),
            ),
            (
                "after a JSON newline escape",
                r#"{"msg":"hi\nbob@example.com"}"#,
                Some(r#"{"msg":"hi\n[REDACTED]"}"#),
            ),
            (
                "after a JSON unicode escape",
                r#"{"msg":"\u00e9bob@example.com"}"#,
                Some(r#"{"msg":"\u00e9[REDACTED]"}"#),
            ),
            ("no dot", r#"{"msg":"a@b"}"#, None),
            ("one-letter tld", r#"{"msg":"user@host.c"}"#, None),
            ("tld with a digit", "user@host.c0m", None),
            ("tld glued to a digit", "user@example.com1", None),
            ("empty local part", r#"{"msg":"@example.com"}"#, None),
            ("empty label", "user@.example.com", None),
            ("only an escape before @", r#""\n@example.com""#, None),
            ("at signs only", "@@@ @ @.", None),
        ],
    );
}

#[test]
fn mixed_and_options() {
    let default = RedactOptions::default();
    check_table(
        &default,
        &[
            (
                "several findings",
                r#"{"from":"a@example.com","to":"b.c@example.org","card":"4111 1111 1111 1111","amex":"378282246310005"}"#,
                Some(
                    r#"{"from":"[REDACTED]","to":"[REDACTED]","card":"[REDACTED]","amex":"[REDACTED]"}"#,
                ),
            ),
            (
                "a card as a local part",
                "4111111111111111@example.com",
                Some("[REDACTED]"),
            ),
            (
                "a card, then the rest of a local part",
                "x 4111 1111 1111 1111.a@example.com",
                Some("x [REDACTED][REDACTED]"),
            ),
            (
                "nothing",
                r#"{"level":"info","msg":"started in 12 ms","pid":4242}"#,
                None,
            ),
            ("empty", "", None),
        ],
    );
    check_table(
        &RedactOptions {
            replacement: "***".to_owned(),
            ..default.clone()
        },
        &[
            (
                "custom replacement",
                "a@example.com 4111111111111111",
                Some("*** ***"),
            ),
            (
                "mastercard and e-mail",
                r#"{"msg":"refund to 5500-0000-0000-0004 for bob.smith+shop@mail.example.org"}"#,
                Some(r#"{"msg":"refund to *** for ***"}"#),
            ),
            (
                "a 13-digit id failing luhn",
                r#"{"note":"nothing to hide","id":1234567890123}"#,
                None,
            ),
        ],
    );
    check_table(
        &RedactOptions {
            replacement: String::new(),
            ..default.clone()
        },
        &[(
            "empty replacement",
            r#"{"a":"x@example.com","b":"4111-1111-1111-1111"}"#,
            Some(r#"{"a":"","b":""}"#),
        )],
    );
    check_table(
        &RedactOptions {
            cards: false,
            ..default.clone()
        },
        &[
            ("cards off", "4111111111111111", None),
            (
                "cards off, e-mail still",
                "4111111111111111 a@example.com",
                Some("4111111111111111 [REDACTED]"),
            ),
        ],
    );
    check_table(
        &RedactOptions {
            emails: false,
            ..default
        },
        &[
            ("emails off", "a@example.com", None),
            (
                "emails off, card still",
                "a@example.com 4111111111111111",
                Some("a@example.com [REDACTED]"),
            ),
        ],
    );
}

#[test]
fn invalid_utf8_around_a_card() {
    let input = b"\xff\xfe4111111111111111\xc3(\x80 bob@example.com\xed\xa0\x80";
    let out = run(RedactOptions::default(), input).expect("findings");
    assert_eq!(out, b"\xff\xfe[REDACTED]\xc3(\x80 [REDACTED]\xed\xa0\x80");
}

#[test]
fn luhn_of_the_table_numbers() {
    let digits = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(u8::is_ascii_digit)
            .map(|byte| byte - b'0')
            .collect()
    };
    for valid in [
        "4111111111111111",
        "4222222222222",
        "5555555555554444",
        "378282246310005",
        "6304000000000000018",
    ] {
        assert!(luhn(&digits(valid)), "{valid}");
    }
    for invalid in ["4111111111111112", "1718000000123", "1718000000124"] {
        assert!(!luhn(&digits(invalid)), "{invalid}");
    }
}

#[test]
fn config() {
    let defaults = RedactOptions::default();
    assert_eq!(
        defaults,
        RedactOptions {
            cards: true,
            emails: true,
            replacement: "[REDACTED]".to_owned()
        }
    );
    assert_eq!(RedactOptions::from_json("{}").unwrap(), defaults);
    assert_eq!(RedactOptions::from_json("").unwrap(), defaults);
    assert_eq!(
        RedactOptions::from_json(r#"{"cards":false,"replacement":""}"#).unwrap(),
        RedactOptions {
            cards: false,
            emails: true,
            replacement: String::new()
        }
    );

    let fatal = |config: &str| match RedactPlugin::new(config) {
        Err(Error::Fatal(message)) => message,
        other => panic!("{config}: expected a fatal error, got {other:?}"),
    };
    let unknown = fatal(r#"{"replacement":"x","colour":"red"}"#);
    assert!(unknown.contains("unknown field `colour`"), "{unknown}");
    assert!(
        unknown.starts_with("redact: bad configuration"),
        "{unknown}"
    );
    let bad = fatal(r#"{"cards":"#);
    assert!(bad.starts_with("redact: bad configuration"), "{bad}");
    let wrong_type = fatal(r#"{"emails":"yes"}"#);
    assert!(wrong_type.contains("expected a boolean"), "{wrong_type}");
}

#[test]
fn plugin() {
    assert_eq!(RedactPlugin::NAME, "redact");
    assert_eq!(RedactPlugin::VERSION, env!("CARGO_PKG_VERSION"));
    let mut plugin = RedactPlugin::new(r#"{"replacement":"<cc>"}"#).unwrap();
    let record = |payload: &'static [u8]| Record {
        payload,
        stream: "app",
        timestamp_ns: 1,
        offset: 0,
    };
    let mut out = Vec::new();
    let action = plugin
        .transform(&record(br#"{"msg":"nothing here"}"#), &mut out)
        .unwrap();
    assert_eq!(action, Action::Keep);
    let action = plugin
        .transform(&record(br#"{"cc":"4111 1111 1111 1111"}"#), &mut out)
        .unwrap();
    assert_eq!(action, Action::Replace);
    assert_eq!(out, br#"{"cc":"<cc>"}"#);
}

/// A Luhn-valid card number of `len` digits from `body` (the first
/// `len - 1` digits are used), grouped by `separator` every four digits.
fn card_number(body: &[u8], len: usize, separator: Option<u8>) -> Vec<u8> {
    let mut digits: Vec<u8> = body[..len - 1].to_vec();
    // A network's first digit, 2 to 6.
    digits[0] = 2 + digits[0] % 5;
    for check in 0..10 {
        digits.push(check);
        if luhn(&digits) {
            break;
        }
        digits.pop();
    }
    let mut text = Vec::new();
    for (k, digit) in digits.iter().enumerate() {
        if k > 0 && k % 4 == 0 {
            text.extend(separator);
        }
        text.push(b'0' + digit);
    }
    text
}

/// Pieces of a record: noise that often touches the scanner's edge cases,
/// card numbers and e-mail addresses.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(b"0123456789 -.@abxyzAZ_+%\\\"{}:,nu".to_vec()),
            1 => any::<u8>(),
        ],
        0..12,
    );
    let card = (
        proptest::collection::vec(0u8..10, 18),
        CARD_MIN_DIGITS..=CARD_MAX_DIGITS,
        proptest::option::of(proptest::sample::select(vec![b' ', b'-'])),
    )
        .prop_map(|(body, len, separator)| card_number(&body, len, separator));
    let email = ("[a-z0-9._%+-]{1,8}", "[a-z0-9-]{1,6}", "[a-z]{2,4}")
        .prop_map(|(local, host, tld)| format!("{local}@{host}.{tld}").into_bytes());
    prop_oneof![3 => noise, 1 => card, 1 => email]
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(piece(), 0..8).prop_map(|pieces| pieces.concat())
}

/// `find_card` without the stretch pre-filter: every digit group is a
/// possible start.
fn find_card_naive(input: &[u8], from: usize) -> Option<Span> {
    (from..input.len())
        .filter(|&i| input[i].is_ascii_digit() && starts_number(input, i))
        .find_map(|i| card_at(input, i).map(|end| Span { start: i, end }))
}

proptest! {
    #[test]
    fn the_prefilter_changes_nothing(
        input in proptest::collection::vec(piece(), 0..8).prop_map(|pieces| pieces.concat()),
        from in 0usize..40,
    ) {
        let from = from.min(input.len());
        prop_assert_eq!(find_card(&input, from), find_card_naive(&input, from));
    }

    #[test]
    fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut out = Vec::new();
        Redact::default().redact(&input, &mut out);
    }

    #[test]
    fn idempotent(input in record()) {
        let redact = Redact::default();
        let mut out = Vec::new();
        if redact.redact(&input, &mut out) {
            let mut again = Vec::new();
            prop_assert!(
                !redact.redact(&out, &mut again),
                "{:?} -> {:?} -> {:?}",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&again),
            );
        }
    }

    #[test]
    fn idempotent_with_empty_replacement_on_separated_findings(
        pieces in proptest::collection::vec(piece(), 0..8),
    ) {
        // With an empty replacement findings glued by it could form new
        // ones; separated by a space they cannot.
        let input = pieces.join(&b' ');
        let redact = Redact::new(RedactOptions { replacement: String::new(), ..RedactOptions::default() });
        let mut out = Vec::new();
        if redact.redact(&input, &mut out) {
            let mut again = Vec::new();
            prop_assert!(
                !redact.redact(&out, &mut again),
                "{:?} -> {:?}",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&out),
            );
        }
    }

    #[test]
    fn a_separated_card_is_always_redacted(
        before in "[^0-9A-Za-z@]{0,10}",
        body in proptest::collection::vec(0u8..10, 18),
        len in CARD_MIN_DIGITS..=CARD_MAX_DIGITS,
        separator in proptest::option::of(proptest::sample::select(vec![b' ', b'-'])),
        after in "[^0-9A-Za-z@]{0,10}",
    ) {
        let card = card_number(&body, len, separator);
        let mut input = before.into_bytes();
        input.push(b' ');
        input.extend(&card);
        input.push(b' ');
        input.extend(after.as_bytes());
        let mut out = Vec::new();
        prop_assert!(Redact::default().redact(&input, &mut out));
        prop_assert!(!out.windows(card.len()).any(|window| window == card.as_slice()));
    }
}
