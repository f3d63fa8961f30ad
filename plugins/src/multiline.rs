//! Joining lines into multiline records (stack traces, wrapped messages).
//!
//! A [`Joiner`] is told which lines *start* a record by a regex; every
//! other line continues the record before it. A record is complete when
//! the next record starts, when its last line is older than the timeout
//! (the writer has paused, so nothing more is coming soon), or when the
//! stream ends ([`Joiner::finish`]). Lines are joined with `\n`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shipper_components::multiline::{Joiner, JoinerOptions};
//!
//! let mut joiner = Joiner::new(r"^\d{4}-\d{2}-\d{2} ", JoinerOptions::default()).unwrap();
//! let start = Instant::now();
//! assert!(joiner.push(b"2024-05-01 ERROR boom", start).is_none());
//! assert!(joiner.push(b"    at main.rs:3", start).is_none());
//! let record = joiner.push(b"2024-05-01 INFO next", start).unwrap();
//! assert_eq!(record.bytes, b"2024-05-01 ERROR boom\n    at main.rs:3");
//! // The last record leaves once its last line is older than the timeout.
//! let later = start + JoinerOptions::default().timeout;
//! assert_eq!(joiner.poll(later).unwrap().bytes, b"2024-05-01 INFO next");
//! ```
//!
//! # Limits
//!
//! A record never holds more than [`JoinerOptions::max_record_bytes`]: a
//! line that does not fit is cut (or left out, if nothing of it fits), the
//! record is marked [`Record::truncated`] and counted, and the rest of the
//! record's lines are discarded until the next start line. Memory stays
//! bounded by the maximum.
//!
//! # Time
//!
//! The caller passes the current time to [`Joiner::push`] and
//! [`Joiner::poll`] (no clock is read inside, so tests need no sleeps).
//! [`Joiner::deadline`] says when to poll next. A line pushed after the
//! pending record has expired starts a new record even if it is a
//! continuation: the same result as if `poll` had run on time.

use std::time::{Duration, Instant};

use regex::bytes::Regex;
use thiserror::Error;

/// Configuration of a [`Joiner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinerOptions {
    /// The largest record, in bytes, including the `\n`s joining lines.
    pub max_record_bytes: usize,
    /// How long a pending record waits for another line.
    pub timeout: Duration,
}

impl JoinerOptions {
    /// The default maximum record size: 1 MiB.
    pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
    /// The default timeout: 1 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
}

impl Default for JoinerOptions {
    fn default() -> Self {
        JoinerOptions {
            max_record_bytes: Self::DEFAULT_MAX_RECORD_BYTES,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// The start-of-record pattern did not compile.
#[derive(Debug, Error)]
#[error("invalid multiline start pattern: {0}")]
pub struct JoinerError(#[from] regex::Error);

/// A joined record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The lines, joined with `\n` (no trailing newline).
    pub bytes: Vec<u8>,
    /// How many lines were pushed into it (including any cut or left out).
    pub lines: usize,
    /// Whether it hit the maximum size and lost bytes.
    pub truncated: bool,
}

/// Joins lines into records by a start-of-record regex.
///
/// See the [module docs](self) for the rules.
#[derive(Debug, Clone)]
pub struct Joiner {
    start: Regex,
    options: JoinerOptions,
    pending: Option<Pending>,
    truncated: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    record: Record,
    last_line_at: Instant,
}

impl Joiner {
    /// A joiner whose records start at lines matching `start_pattern`
    /// (a [`regex`] pattern, matched against the line's bytes; anchor it
    /// with `^` to match at the line start).
    pub fn new(start_pattern: &str, options: JoinerOptions) -> Result<Self, JoinerError> {
        Ok(Self::with_regex(Regex::new(start_pattern)?, options))
    }

    /// A joiner with an already compiled start regex.
    pub fn with_regex(start: Regex, options: JoinerOptions) -> Self {
        Joiner {
            start,
            options,
            pending: None,
            truncated: 0,
        }
    }

    /// The options this joiner was made with.
    pub fn options(&self) -> &JoinerOptions {
        &self.options
    }

    /// Adds the next line (without its newline) read at `now`. Returns the
    /// previous record if this line completes it: the line starts a
    /// record, or the pending record had already expired.
    pub fn push(&mut self, line: &[u8], now: Instant) -> Option<Record> {
        let completed = match self.pending.take() {
            Some(pending) if self.is_expired(&pending, now) || self.start.is_match(line) => {
                Some(pending.record)
            }
            Some(mut pending) => {
                self.append(&mut pending.record, line);
                pending.last_line_at = now;
                self.pending = Some(pending);
                return None;
            }
            None => None,
        };
        let mut record = Record {
            bytes: Vec::new(),
            lines: 0,
            truncated: false,
        };
        self.append(&mut record, line);
        self.pending = Some(Pending {
            record,
            last_line_at: now,
        });
        completed
    }

    /// Returns the pending record if its last line is at least the timeout
    /// older than `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Record> {
        match &self.pending {
            Some(pending) if self.is_expired(pending, now) => {
                self.pending.take().map(|pending| pending.record)
            }
            _ => None,
        }
    }

    /// When the pending record expires, if there is one: the time to call
    /// [`Joiner::poll`] next.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|pending| pending.last_line_at + self.options.timeout)
    }

    /// Returns the pending record regardless of time (the stream ended).
    pub fn finish(&mut self) -> Option<Record> {
        self.pending.take().map(|pending| pending.record)
    }

    /// Bytes held by the pending record.
    pub fn pending_bytes(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |pending| pending.record.bytes.len())
    }

    /// Records cut to the maximum size so far.
    pub fn truncated_records(&self) -> u64 {
        self.truncated
    }

    fn is_expired(&self, pending: &Pending, now: Instant) -> bool {
        now.saturating_duration_since(pending.last_line_at) >= self.options.timeout
    }

    fn append(&mut self, record: &mut Record, line: &[u8]) {
        record.lines += 1;
        if record.truncated {
            return;
        }
        let separator = usize::from(record.lines > 1);
        let room = self
            .options
            .max_record_bytes
            .saturating_sub(record.bytes.len());
        if separator + line.len() <= room {
            if separator == 1 {
                record.bytes.push(b'\n');
            }
            record.bytes.extend_from_slice(line);
            return;
        }
        record.truncated = true;
        self.truncated += 1;
        if room > separator {
            if separator == 1 {
                record.bytes.push(b'\n');
            }
            record.bytes.extend_from_slice(&line[..room - separator]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r"^\S";
    const SECOND: Duration = Duration::from_secs(1);

    fn record(bytes: &str, lines: usize, truncated: bool) -> Record {
        Record {
            bytes: bytes.as_bytes().to_vec(),
            lines,
            truncated,
        }
    }

    enum Step {
        /// Push a line at this many seconds after the start.
        Push(&'static str, u32),
        /// Poll at this many seconds.
        Poll(u32),
        Finish,
    }

    /// Name, maximum record size, steps with what each returns.
    type Case = (&'static str, usize, Vec<(Step, Option<Record>)>);

    #[test]
    fn joins_as_the_table_says() {
        use Step::{Finish, Poll, Push};
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("stack trace", 100, vec![
                (Push("Exception: boom", 0), None),
                (Push("  at a()", 0), None),
                (Push("  at b()", 0), None),
                (Push("next", 0), Some(record("Exception: boom\n  at a()\n  at b()", 3, false))),
                (Finish, Some(record("next", 1, false))),
                (Finish, None),
            ]),
            ("single lines", 100, vec![
                (Push("a", 0), None),
                (Push("b", 0), Some(record("a", 1, false))),
                (Push("c", 0), Some(record("b", 1, false))),
            ]),
            ("continuation first", 100, vec![
                (Push("  orphan", 0), None),
                (Push("  more", 0), None),
                (Push("start", 0), Some(record("  orphan\n  more", 2, false))),
            ]),
            ("empty lines continue", 100, vec![
                (Push("a", 0), None),
                (Push("", 0), None),
                (Push("b", 0), Some(record("a\n", 2, false))),
            ]),
            ("timeout counts from the last line", 100, vec![
                (Push("a", 0), None),
                (Push(" b", 1), None),
                (Poll(1), None),
                (Poll(1 + 4), None),
                (Poll(1 + 5), Some(record("a\n b", 2, false))),
                (Poll(100), None),
            ]),
            ("continuation after expiry starts a record", 100, vec![
                (Push("a", 0), None),
                (Push(" late", 5), Some(record("a", 1, false))),
                (Finish, Some(record(" late", 1, false))),
            ]),
            ("cut at the maximum", 10, vec![
                (Push("abcdef", 0), None),
                (Push(" ghijk", 0), None),
                (Push(" dropped", 0), None),
                (Push("next", 0), Some(record("abcdef\n gh", 3, true))),
            ]),
            ("separator exactly fills", 7, vec![
                (Push("abcdef", 0), None),
                (Push(" x", 0), None),
                (Finish, Some(record("abcdef", 2, true))),
            ]),
            ("exactly the maximum", 9, vec![
                (Push("abcdef", 0), None),
                (Push(" x", 0), None),
                (Finish, Some(record("abcdef\n x", 2, false))),
            ]),
            ("first line too long", 3, vec![
                (Push("abcdef", 0), None),
                (Push("g", 0), Some(record("abc", 1, true))),
            ]),
        ];
        for (name, max_record_bytes, steps) in cases {
            let options = JoinerOptions {
                max_record_bytes,
                timeout: 5 * SECOND,
            };
            let mut joiner = Joiner::new(START, options).expect("valid pattern");
            let start = Instant::now();
            for (index, (step, expected)) in steps.into_iter().enumerate() {
                let got = match step {
                    Push(line, at) => joiner.push(line.as_bytes(), start + at * SECOND),
                    Poll(at) => joiner.poll(start + at * SECOND),
                    Finish => joiner.finish(),
                };
                assert_eq!(got, expected, "{name}, step {index}");
                assert!(
                    joiner.pending_bytes() <= max_record_bytes,
                    "{name}, step {index}"
                );
            }
        }
    }

    #[test]
    fn counts_truncated_records_and_reports_the_deadline() {
        let options = JoinerOptions {
            max_record_bytes: 4,
            timeout: 2 * SECOND,
        };
        let mut joiner = Joiner::new(START, options).expect("valid pattern");
        let start = Instant::now();
        assert_eq!(joiner.deadline(), None);
        assert!(joiner.push(b"abcdef", start).is_none());
        assert!(joiner.push(b" more", start + SECOND).is_none());
        assert_eq!(joiner.deadline(), Some(start + 3 * SECOND));
        assert!(joiner.push(b"ok", start + SECOND).is_some());
        assert!(joiner.push(b"toolong", start + SECOND).is_some());
        assert_eq!(joiner.truncated_records(), 2);
    }

    #[test]
    fn a_bad_pattern_is_an_error() {
        let error = Joiner::new("(unclosed", JoinerOptions::default()).expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("invalid multiline start pattern: "),
            "{error}"
        );
    }
}
