//! What validation reports: a message, the key path it is about and the
//! line of the file it points at.

use std::fmt;

/// Whether a diagnostic makes the config invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works, but probably not as meant.
    Warning,
}

/// One finding about a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// 1-based line in the file as written (before `${VAR}` substitution).
    pub line: usize,
    /// Dotted key path, like `sinks.backend.batch.max_bytes`; empty for
    /// syntax errors, which belong to no key.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `LINE: key.path: message`, with `warning: ` before the message of a
    /// warning; a caller prints the file name and a colon in front.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.line)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A key path under construction: keys from the root of the document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<String>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path with `key` appended.
    pub fn join(&self, key: &str) -> Self {
        let mut keys = self.0.clone();
        keys.push(key.to_owned());
        KeyPath(keys)
    }

    /// This path with every key of `keys` appended.
    pub fn join_all(&self, keys: &[String]) -> Self {
        let mut path = self.clone();
        path.0.extend(keys.iter().cloned());
        path
    }

    pub fn keys(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    /// Keys joined by dots; a key that is not a bare TOML key is quoted, so
    /// `sources."my app".include` reads back as the key it names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let bare = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if bare {
                f.write_str(key)?;
            } else {
                write!(f, "{key:?}")?;
            }
        }
        Ok(())
    }
}

/// Byte offsets to 1-based line numbers.
#[derive(Debug)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(at, _)| at + 1));
        LineIndex { starts }
    }

    /// The line holding byte `offset` (offsets past the end are on the last
    /// line).
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_from_offsets() {
        let index = LineIndex::new("a\nbc\n\nd");
        for (offset, line) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (4, 2),
            (5, 3),
            (6, 4),
            (7, 4),
            (99, 4),
        ] {
            assert_eq!(index.line(offset), line, "offset {offset}");
        }
    }

    #[test]
    fn key_paths_quote_keys_that_are_not_bare() {
        let path = KeyPath::root()
            .join("sources")
            .join("my app")
            .join("include");
        assert_eq!(path.to_string(), "sources.\"my app\".include");
        let path = KeyPath::root()
            .join("sinks")
            .join("back-end_2")
            .join("batch");
        assert_eq!(path.to_string(), "sinks.back-end_2.batch");
    }

    #[test]
    fn diagnostics_display_line_path_and_message() {
        let mut diagnostic = Diagnostic {
            severity: Severity::Error,
            line: 7,
            path: "log.max_bytes".into(),
            message: "too small".into(),
        };
        assert_eq!(diagnostic.to_string(), "7: log.max_bytes: too small");
        diagnostic.severity = Severity::Warning;
        diagnostic.path.clear();
        assert_eq!(diagnostic.to_string(), "7: warning: too small");
    }
}
