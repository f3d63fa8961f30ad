//! The parsed TOML document with spans, and deserialization from it that
//! reports every error instead of the first.
//!
//! serde stops at the first error. To find the others, a failed
//! deserialization is retried on a copy of the value: the entry the error
//! points at (found by its span) is removed, and a missing required key is
//! filled with a placeholder of a type that fits. Each retry therefore
//! gets past one error; errors on placeholders are never reported. Values
//! are read through [`TablesOnly`] (`tables.rs`), so an array is never
//! taken for a table.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeArray, DeInteger, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::diagnostic::{Diagnostic, KeyPath, LineIndex, Severity};
use super::interpolate::Interpolated;
use super::tables::TablesOnly;

/// A value of the document with its byte span in the interpolated text.
pub type Node<'i> = Spanned<DeValue<'i>>;

/// Retries per deserialization: one per error found, so a bound only
/// matters for a pathological file.
const MAX_ATTEMPTS: usize = 256;

/// Spans of placeholders start here, past any real text, so an error on a
/// placeholder is recognised by its span.
const PLACEHOLDER_SPANS: usize = usize::MAX / 2;

fn placeholder(kind: usize) -> Option<DeValue<'static>> {
    Some(match kind {
        0 => DeValue::String(Cow::Borrowed("")),
        1 => DeValue::Array(DeArray::new()),
        2 => DeValue::Integer(DeInteger::default()),
        3 => DeValue::Table(DeTable::new()),
        4 => DeValue::Boolean(false),
        _ => return None,
    })
}

/// Collects diagnostics and turns spans into lines of the original file.
#[derive(Debug)]
pub struct Reporter<'a> {
    lines: LineIndex,
    interpolated: &'a Interpolated,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    /// `original` is the file as written, `interpolated` what was parsed.
    pub fn new(original: &str, interpolated: &'a Interpolated) -> Self {
        Reporter {
            lines: LineIndex::new(original),
            interpolated,
            diagnostics: Vec::new(),
        }
    }

    /// The line of the original file that a span of the parsed text starts on.
    pub fn line_of(&self, span: &Range<usize>) -> usize {
        self.lines
            .line(self.interpolated.original_offset(span.start))
    }

    /// The line of an offset of the original file.
    pub fn line_of_original(&self, offset: usize) -> usize {
        self.lines.line(offset)
    }

    pub fn error(&mut self, path: &KeyPath, span: &Range<usize>, message: impl Into<String>) {
        self.push(Severity::Error, path, span, message.into());
    }

    pub fn warning(&mut self, path: &KeyPath, span: &Range<usize>, message: impl Into<String>) {
        self.push(Severity::Warning, path, span, message.into());
    }

    fn push(&mut self, severity: Severity, path: &KeyPath, span: &Range<usize>, message: String) {
        let line = self.line_of(span);
        self.diagnostics.push(Diagnostic {
            severity,
            line,
            path: path.to_string(),
            message,
        });
    }

    /// Deserializes `node` (at `path`) into `T`, reporting every error.
    /// `None` when there was any.
    pub fn deserialize<T: DeserializeOwned>(
        &mut self,
        node: &Node<'_>,
        path: &KeyPath,
    ) -> Option<T> {
        let mut node = node.clone();
        let mut failed = false;
        // Entries removed because they were wrong, relative to `node`.
        let mut removed: Vec<Vec<String>> = Vec::new();
        // Keys filled with a placeholder, and which placeholder.
        let mut synthetic: Vec<(Vec<String>, usize)> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let error = match T::deserialize(TablesOnly(ValueDeserializer::from(node.clone()))) {
                Ok(value) => return (!failed).then_some(value),
                Err(error) => error,
            };
            failed = true;
            let span = error.span().unwrap_or_else(|| node.span());
            let message = error.message();
            let under_synthetic =
                |key: &[String]| synthetic.iter().position(|(fake, _)| key.starts_with(fake));
            if let Some(field) = missing_field(message) {
                let mut key = table_path_at(node.get_ref(), &span);
                key.push(field.to_owned());
                if under_synthetic(&key).is_none() && !removed.contains(&key) {
                    self.error(
                        &path.join_all(&key[..key.len() - 1]),
                        &span,
                        format!("missing required key `{field}`"),
                    );
                }
                let fake_span = PLACEHOLDER_SPANS + synthetic.len();
                let value = placeholder(0).unwrap_or(DeValue::Boolean(false));
                if !insert(
                    node.get_mut(),
                    &key,
                    Spanned::new(fake_span..fake_span + 1, value),
                ) {
                    return None;
                }
                synthetic.push((key, 0));
                continue;
            }
            let Some(key) = entry_at(node.get_ref(), &span) else {
                self.error(path, &span, friendly(message));
                return None;
            };
            if let Some(index) = under_synthetic(&key) {
                // The placeholder has the wrong type: try the next kind.
                let (fake, kind) = &mut synthetic[index];
                *kind += 1;
                let value = placeholder(*kind)?;
                let fake_span = PLACEHOLDER_SPANS + index;
                let fake = fake.clone();
                remove(node.get_mut(), &fake);
                insert(
                    node.get_mut(),
                    &fake,
                    Spanned::new(fake_span..fake_span + 1, value),
                );
                continue;
            }
            self.error(&path.join_all(&key), &span, friendly(message));
            if !remove(node.get_mut(), &key) {
                return None;
            }
            removed.push(key);
        }
        None
    }
}

/// serde's wording, in the words of a config file.
fn friendly(message: &str) -> String {
    let mut text = message
        .replace("unknown field", "unknown key")
        .replace("expected struct ", "expected a table: ")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("wanted string or table", "expected a string");
    for (rust, words) in [
        ("u64", "a non-negative integer"),
        ("u32", "a non-negative integer"),
        ("u16", "an integer from 0 to 65535"),
        ("u8", "an integer from 0 to 255"),
        ("i32", "an integer"),
        ("i64", "an integer"),
    ] {
        text = text.replace(&format!("expected {rust}"), &format!("expected {words}"));
    }
    text
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The path (relative to `value`) of the deepest entry whose key or value
/// span holds `span`. Tables are searched whatever their own span says:
/// the span of a `[table]` is its header only.
pub fn entry_at(value: &DeValue<'_>, span: &Range<usize>) -> Option<Vec<String>> {
    let DeValue::Table(table) = value else {
        return None;
    };
    for (key, child) in table.iter() {
        if let Some(mut inner) = entry_at(child.get_ref(), span) {
            inner.insert(0, key.get_ref().to_string());
            return Some(inner);
        }
        if contains(&key.span(), span) || contains(&child.span(), span) {
            return Some(vec![key.get_ref().to_string()]);
        }
    }
    None
}

/// The table that an error spanning `span` is about: the entry at `span`
/// if it is a table, else its parent.
fn table_path_at(value: &DeValue<'_>, span: &Range<usize>) -> Vec<String> {
    let Some(mut path) = entry_at(value, span) else {
        return Vec::new();
    };
    if !matches!(
        get(value, &path).map(Spanned::get_ref),
        Some(DeValue::Table(_))
    ) {
        path.pop();
    }
    path
}

/// The node at `path` under `value`.
pub fn get<'v, 'i>(value: &'v DeValue<'i>, path: &[String]) -> Option<&'v Node<'i>> {
    let (first, rest) = path.split_first()?;
    let DeValue::Table(table) = value else {
        return None;
    };
    let (_, child) = table.iter().find(|(key, _)| key.get_ref() == first)?;
    if rest.is_empty() {
        Some(child)
    } else {
        get(child.get_ref(), rest)
    }
}

fn table_mut<'v, 'i>(value: &'v mut DeValue<'i>, path: &[String]) -> Option<&'v mut DeTable<'i>> {
    let DeValue::Table(table) = value else {
        return None;
    };
    match path.split_first() {
        None => Some(table),
        Some((first, rest)) => {
            let (_, child) = table.iter_mut().find(|(key, _)| key.get_ref() == first)?;
            table_mut(child.get_mut(), rest)
        }
    }
}

fn remove(value: &mut DeValue<'_>, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let Some(table) = table_mut(value, parent) else {
        return false;
    };
    let before = table.len();
    let entries = std::mem::take(table);
    *table = entries
        .into_iter()
        .filter(|(key, _)| key.get_ref() != last)
        .collect();
    table.len() < before
}

fn insert<'i>(value: &mut DeValue<'i>, path: &[String], node: Node<'i>) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let Some(table) = table_mut(value, parent) else {
        return false;
    };
    let span = node.span();
    table.insert(Spanned::new(span, Cow::Owned(last.clone())), node);
    true
}

/// A copy of the table `node` without the keys in `drop`.
pub fn without_keys<'i>(node: &Node<'i>, drop: &[&str]) -> Node<'i> {
    match node.get_ref() {
        DeValue::Table(table) => {
            let kept: DeTable<'i> = table
                .iter()
                .filter(|(key, _)| !drop.contains(&key.get_ref().as_ref()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            Spanned::new(node.span(), DeValue::Table(kept))
        }
        _ => node.clone(),
    }
}
