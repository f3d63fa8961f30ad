//! `${VAR}` and `${VAR:-default}` from the environment, applied to the
//! config text before it is parsed; `$$` is a literal `$`. Comments are
//! left alone.
//!
//! Substitution changes lengths (and may add lines), so the result keeps a
//! map from its byte offsets back to the original text: every line number
//! shipper reports is a line of the file the user wrote.

/// One substitution: `original` bytes of the file became `replaced` bytes
/// of the interpolated text.
#[derive(Debug, Clone, Copy)]
struct Edit {
    /// Offset in the interpolated text.
    at: usize,
    replaced: usize,
    /// Offset in the original text.
    original_at: usize,
    original: usize,
}

/// A `${VAR}` that could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    /// Byte offset of the `$` in the original text.
    pub offset: usize,
    /// Byte offset of the (empty) substitution in the interpolated text.
    pub interpolated_offset: usize,
    pub message: String,
}

/// The interpolated text and how to map its offsets back.
#[derive(Debug)]
pub struct Interpolated {
    pub text: String,
    edits: Vec<Edit>,
}

impl Interpolated {
    /// The offset in the original text that `offset` of the interpolated
    /// text came from. An offset inside a substituted value maps to the
    /// `$` that produced it.
    pub fn original_offset(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for edit in &self.edits {
            if offset < edit.at {
                break;
            }
            if offset < edit.at + edit.replaced {
                return edit.original_at;
            }
            shift = edit.original_at as isize + edit.original as isize
                - (edit.at + edit.replaced) as isize;
        }
        (offset as isize + shift).max(0) as usize
    }
}

fn is_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Substitutes every `${VAR}`, `${VAR:-default}` and `$$` in `text`.
///
/// `${VAR:-default}` uses the default when `VAR` is unset or empty, as in
/// the shell. A `$` followed by anything else is kept as it is. Every
/// reference that cannot be substituted (unset without a default, or
/// malformed) is an error; it is replaced by nothing so parsing can go on
/// and find the key it belongs to.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Interpolated, Vec<InterpolationError>) {
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    let mut errors = Vec::new();
    let mut rest = 0;
    let bytes = text.as_bytes();
    let mut at = 0;
    let comments = comment_ranges(text);
    while let Some(found) = memchr_dollar(&bytes[at..]) {
        let start = at + found;
        if let Some(comment) = comments.iter().find(|c| c.contains(&start)) {
            at = comment.end;
            continue;
        }
        let (end, value) = match bytes.get(start + 1) {
            Some(b'$') => (start + 2, Some("$".to_owned())),
            Some(b'{') => match text[start + 2..].find(['}', '\n']) {
                Some(close) if bytes[start + 2 + close] == b'}' => {
                    let inner = &text[start + 2..start + 2 + close];
                    let (name, default) = match inner.split_once(":-") {
                        Some((name, default)) => (name, Some(default)),
                        None => (inner, None),
                    };
                    let end = start + 2 + close + 1;
                    if !is_name(name) {
                        errors.push(InterpolationError {
                            offset: start,
                            interpolated_offset: out.len() + (start - rest),
                            message: format!(
                                "invalid variable name in `{}`: names are letters, digits and _, not starting with a digit (write $$ for a literal $)",
                                &text[start..end]
                            ),
                        });
                        (end, Some(String::new()))
                    } else {
                        match (lookup(name), default) {
                            (Some(value), Some(default)) if value.is_empty() => {
                                (end, Some(default.to_owned()))
                            }
                            (Some(value), _) => (end, Some(value)),
                            (None, Some(default)) => (end, Some(default.to_owned())),
                            (None, None) => {
                                errors.push(InterpolationError {
                                    offset: start,
                                    interpolated_offset: out.len() + (start - rest),
                                    message: format!(
                                        "environment variable `{name}` is not set (use ${{{name}:-default}} for a default)"
                                    ),
                                });
                                (end, Some(String::new()))
                            }
                        }
                    }
                }
                _ => {
                    errors.push(InterpolationError {
                        offset: start,
                        interpolated_offset: out.len() + (start - rest),
                        message: "unclosed `${`: expected `}` on the same line (write $$ for a literal $)".to_owned(),
                    });
                    (start + 2, Some(String::new()))
                }
            },
            _ => (start + 1, None),
        };
        if let Some(value) = value {
            out.push_str(&text[rest..start]);
            edits.push(Edit {
                at: out.len(),
                replaced: value.len(),
                original_at: start,
                original: end - start,
            });
            out.push_str(&value);
            rest = end;
        }
        at = end;
    }
    out.push_str(&text[rest..]);
    (Interpolated { text: out, edits }, errors)
}

/// Byte ranges of TOML comments (`#` outside strings, to the end of the
/// line): a commented-out `${VAR}` is not substituted, so it cannot fail.
fn comment_ranges(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.starts_with(b"\"\"\"") || rest.starts_with(b"'''") {
            let quote = &rest[..3];
            let basic = quote[0] == b'"';
            let mut end = at + 3;
            while end < bytes.len() && !bytes[end..].starts_with(quote) {
                end += if basic && bytes[end] == b'\\' { 2 } else { 1 };
            }
            at = end + 3;
        } else if rest[0] == b'"' || rest[0] == b'\'' {
            let quote = rest[0];
            let mut end = at + 1;
            while end < bytes.len() && bytes[end] != quote && bytes[end] != b'\n' {
                end += if quote == b'"' && bytes[end] == b'\\' {
                    2
                } else {
                    1
                };
            }
            at = end + 1;
        } else if rest[0] == b'#' {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| at + n);
            ranges.push(at..end);
            at = end;
        } else {
            at += 1;
        }
    }
    ranges
}

fn memchr_dollar(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'$')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> (String, Vec<String>) {
        let (out, errors) = interpolate(text, &env);
        (out.text, errors.into_iter().map(|e| e.message).collect())
    }

    #[test]
    fn substitutes_variables_defaults_and_escapes() {
        for (text, expected) in [
            ("token = \"${TOKEN}\"", "token = \"s3cret\""),
            ("a = \"${UNSET:-fallback}\"", "a = \"fallback\""),
            ("a = \"${TOKEN:-fallback}\"", "a = \"s3cret\""),
            ("a = \"${EMPTY:-fallback}\"", "a = \"fallback\""),
            ("a = \"${EMPTY}\"", "a = \"\""),
            ("a = \"${UNSET:-}\"", "a = \"\""),
            ("a = \"${UNSET:-x:-y}\"", "a = \"x:-y\""),
            ("a = \"$$\"", "a = \"$\""),
            ("a = \"$${TOKEN}\"", "a = \"${TOKEN}\""),
            ("a = \"$HOME $1 $\"", "a = \"$HOME $1 $\""),
            ("a = \"${TOKEN}${TOKEN}\"", "a = \"s3crets3cret\""),
            ("no dollars", "no dollars"),
        ] {
            assert_eq!(run(text), (expected.to_owned(), vec![]), "{text}");
        }
    }

    #[test]
    fn reports_every_unset_or_malformed_reference() {
        let text = "a = \"${NOPE}\"\nb = \"${TOKEN}\"\nc = \"${ALSO_NOPE}\"\nd = \"${1X}\"\ne = \"${OPEN\"\n";
        let (out, errors) = interpolate(text, &env);
        let found: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| {
                (
                    text[..e.offset].matches('\n').count() + 1,
                    e.message.as_str(),
                )
            })
            .collect();
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(found[0].0, 1);
        assert!(found[0].1.contains("`NOPE` is not set"), "{found:?}");
        assert_eq!(found[1].0, 3);
        assert!(found[1].1.contains("`ALSO_NOPE` is not set"), "{found:?}");
        assert_eq!(found[2].0, 4);
        assert!(found[2].1.contains("invalid variable name"), "{found:?}");
        assert_eq!(found[3].0, 5);
        assert!(found[3].1.contains("unclosed"), "{found:?}");
        assert_eq!(
            out.text,
            "a = \"\"\nb = \"s3cret\"\nc = \"\"\nd = \"\"\ne = \"OPEN\"\n"
        );
        let line = |offset: usize| text[..offset].matches('\n').count();
        for error in &errors {
            let mapped = out.original_offset(error.interpolated_offset);
            assert_eq!(line(mapped), line(error.offset), "{error:?}");
        }
    }

    #[test]
    fn leaves_comments_alone() {
        for (text, expected) in [
            (
                "# token = \"${NOPE}\"\na = 1",
                "# token = \"${NOPE}\"\na = 1",
            ),
            (
                "a = \"${TOKEN}\" # was ${NOPE}",
                "a = \"s3cret\" # was ${NOPE}",
            ),
            ("a = \"# ${TOKEN}\"", "a = \"# s3cret\""),
            ("a = '# ${TOKEN}'", "a = '# s3cret'"),
            ("a = \"\\\" # ${TOKEN}\"", "a = \"\\\" # s3cret\""),
            (
                "a = \"\"\"\n# ${TOKEN}\n\"\"\"",
                "a = \"\"\"\n# s3cret\n\"\"\"",
            ),
            ("a = '''\n# ${TOKEN}\n'''", "a = '''\n# s3cret\n'''"),
            (
                "a = 1 # '${NOPE}\nb = \"${TOKEN}\"",
                "a = 1 # '${NOPE}\nb = \"s3cret\"",
            ),
        ] {
            assert_eq!(run(text), (expected.to_owned(), vec![]), "{text}");
        }
    }

    #[test]
    fn maps_offsets_back_to_the_original_text() {
        let text = "a = \"${MULTI}\"\nb = \"${TOKEN}\"\nc = 1\n";
        let (out, errors) = interpolate(text, &env);
        assert!(errors.is_empty());
        assert_eq!(out.text, "a = \"a\nb\"\nb = \"s3cret\"\nc = 1\n");
        let c_out = out.text.find("c = 1").unwrap();
        let c_in = text.find("c = 1").unwrap();
        assert_eq!(out.original_offset(c_out), c_in);
        // Inside a substituted value: the `$` that produced it.
        let inside = out.text.find("3cret").unwrap();
        assert_eq!(out.original_offset(inside), text.find("${TOKEN}").unwrap());
        // Before any substitution: unchanged.
        assert_eq!(out.original_offset(0), 0);
        let b_out = out.text.find("b = ").unwrap();
        assert_eq!(out.original_offset(b_out), text.find("b = ").unwrap());
    }
}
