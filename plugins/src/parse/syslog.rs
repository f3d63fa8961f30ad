//! RFC 5424 and RFC 3164 syslog parsing, and conversion to JSON.
//!
//! [`parse`] detects the format: after the `<PRI>`, a version number and a
//! space followed by a timestamp or `-` (`<165>1 2003-...`) mean RFC 5424;
//! anything else is read as RFC 3164 (BSD syslog). The result, [`Syslog`],
//! borrows every field from the input; only a structured-data value that
//! contains escapes is copied (to unescape it).
//!
//! ```
//! use shipper_components::parse::syslog::{parse, to_json, Format};
//!
//! let line = br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application"] An application event"#;
//! let syslog = parse(line).unwrap();
//! assert_eq!(syslog.format, Format::Rfc5424);
//! assert_eq!(syslog.priority.facility_name(), "local4");
//! assert_eq!(syslog.hostname, Some("mymachine.example.com"));
//! assert_eq!(syslog.timestamp_unix_ns, Some(1_065_910_455_003_000_000));
//! assert_eq!(to_json(&syslog)["structured_data"]["exampleSDID@32473"]["iut"], "3");
//! ```
//!
//! # RFC 5424
//!
//! Parsed as the RFC's ABNF says, with two allowances: timestamps may carry
//! up to nine fractional digits (not six), and `t`/`z` may be lowercase
//! (RFC 3339). Header fields longer than the RFC's limits, characters
//! outside printable ASCII, a bad timestamp or malformed structured data
//! are errors. In structured-data values `\"`, `\\` and `\]` are
//! unescaped; a backslash before any other character is kept (RFC 5424
//! §6.3.3). A UTF-8 BOM at the start of MSG is removed and noted in
//! [`Syslog::bom`].
//!
//! # RFC 3164
//!
//! BSD syslog has no strict grammar, so the parser follows what senders
//! do: the timestamp is `Mmm dd hh:mm:ss` (day space- or zero-padded,
//! optional fraction, optional year before the time as Cisco sends it) or
//! an RFC 3339 timestamp (rsyslog's high-precision format), or absent. The
//! hostname is the next word unless that word looks like a tag
//! (`app:` or `app[pid]`), in which case there is none. The tag
//! `app[pid]:` is optional too; without it the rest is all message.
//! Without a year in the timestamp, [`ParseOptions::rfc3164_year`] supplies
//! one for [`Syslog::timestamp_unix_ns`] (no year, no unix time), and the
//! local time is turned into UTC with
//! [`ParseOptions::rfc3164_utc_offset_seconds`].
//!
//! Both formats: one trailing `\n` (or `\r\n`) is removed from the message,
//! and malformed input is an error, never a panic.

use std::borrow::Cow;

use serde_json::{Map, Value};
use thiserror::Error;

/// Which RFC a message followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424, "The Syslog Protocol".
    Rfc5424,
    /// RFC 3164, "The BSD syslog Protocol".
    Rfc3164,
}

impl Format {
    /// `"rfc5424"` or `"rfc3164"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
        }
    }
}

/// The `<PRI>` value split into facility and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// Facility code, 0 to 23.
    pub facility: u8,
    /// Severity code, 0 (emergency) to 7 (debug).
    pub severity: u8,
}

const FACILITY_NAMES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

impl Priority {
    /// The largest valid PRI value (facility 23, severity 7).
    pub const MAX: u8 = 191;

    /// Splits a PRI value; `None` above [`Priority::MAX`].
    pub fn from_value(value: u8) -> Option<Self> {
        (value <= Self::MAX).then_some(Priority {
            facility: value / 8,
            severity: value % 8,
        })
    }

    /// The PRI value, `facility * 8 + severity`.
    pub fn value(self) -> u8 {
        self.facility * 8 + self.severity
    }

    /// The facility keyword (`kern`, `user`, ... `local7`).
    pub fn facility_name(self) -> &'static str {
        FACILITY_NAMES
            .get(usize::from(self.facility))
            .copied()
            .unwrap_or("unknown")
    }

    /// The severity keyword (`emerg` ... `debug`).
    pub fn severity_name(self) -> &'static str {
        SEVERITY_NAMES
            .get(usize::from(self.severity))
            .copied()
            .unwrap_or("unknown")
    }
}

/// One RFC 5424 SD-ELEMENT: `[id name="value" ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement<'a> {
    /// The SD-ID, e.g. `exampleSDID@32473`.
    pub id: &'a str,
    /// The parameters in order (names may repeat, RFC 5424 §6.3.3).
    pub params: Vec<SdParam<'a>>,
}

/// One SD-PARAM: `name="value"`, the value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdParam<'a> {
    /// The PARAM-NAME.
    pub name: &'a str,
    /// The PARAM-VALUE with `\"`, `\\` and `\]` unescaped.
    pub value: Cow<'a, str>,
}

/// A parsed syslog message; every field borrows the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syslog<'a> {
    /// The format detected.
    pub format: Format,
    /// Facility and severity.
    pub priority: Priority,
    /// The RFC 5424 VERSION (`None` for RFC 3164).
    pub version: Option<u16>,
    /// The timestamp as sent; `None` if absent or `-`.
    pub timestamp: Option<&'a str>,
    /// The timestamp in nanoseconds since the Unix epoch, UTC, where it
    /// can be known (see the module docs for RFC 3164).
    pub timestamp_unix_ns: Option<i64>,
    /// HOSTNAME.
    pub hostname: Option<&'a str>,
    /// APP-NAME (the RFC 3164 tag).
    pub app_name: Option<&'a str>,
    /// PROCID (the RFC 3164 `[pid]`).
    pub proc_id: Option<&'a str>,
    /// MSGID (RFC 5424 only).
    pub msg_id: Option<&'a str>,
    /// STRUCTURED-DATA (RFC 5424 only); empty for `-`.
    pub structured_data: Vec<SdElement<'a>>,
    /// MSG, without a leading BOM or a trailing newline; may be empty.
    /// Not necessarily UTF-8.
    pub message: &'a [u8],
    /// Whether MSG began with a UTF-8 byte order mark.
    pub bom: bool,
}

impl Syslog<'_> {
    /// The message as text, invalid UTF-8 replaced by U+FFFD.
    pub fn message_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.message)
    }
}

/// Options for [`parse_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// The year of RFC 3164 timestamps that carry none (usually the
    /// current year); without it they get no [`Syslog::timestamp_unix_ns`].
    pub rfc3164_year: Option<i32>,
    /// The sender's offset from UTC, for RFC 3164 timestamps (local time
    /// without a zone), in seconds east of UTC.
    pub rfc3164_utc_offset_seconds: i32,
}

/// Why a message could not be parsed, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid syslog message at byte {offset}: {kind}")]
pub struct SyslogError {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset into the input where it was found.
    pub offset: usize,
}

/// The kinds of [`SyslogError`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ErrorKind {
    /// The input is empty.
    #[error("empty message")]
    Empty,
    /// The input does not start with `<`.
    #[error("expected '<' starting the priority")]
    MissingPriority,
    /// The PRI is not 1-3 digits closed by `>` with a value up to 191.
    #[error("the priority must be 1 to 3 digits, at most 191, closed by '>'")]
    InvalidPriority,
    /// The RFC 5424 VERSION is not a number of 1 to 3 digits.
    #[error("invalid version")]
    InvalidVersion,
    /// The input ended before a required field.
    #[error("the message ends before the {0}")]
    MissingField(&'static str),
    /// A field is not followed by a space.
    #[error("expected a space after the {0}")]
    MissingSpace(&'static str),
    /// A field holds a byte outside printable US-ASCII.
    #[error("the {0} contains a character outside printable US-ASCII")]
    InvalidCharacter(&'static str),
    /// A field is longer than the RFC allows.
    #[error("the {field} is longer than {max} characters")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its maximum length.
        max: usize,
    },
    /// The RFC 5424 timestamp is not RFC 3339.
    #[error("invalid timestamp (expected RFC 3339, e.g. 2003-10-11T22:14:15.003Z, or '-')")]
    InvalidTimestamp,
    /// The structured data is malformed.
    #[error("invalid structured data: {0}")]
    InvalidStructuredData(&'static str),
    /// A structured-data value is not UTF-8.
    #[error("a structured-data value is not valid UTF-8")]
    InvalidUtf8,
}

/// A `Result` with a [`SyslogError`].
pub type Result<T, E = SyslogError> = std::result::Result<T, E>;

/// Parses a syslog message of either format, detected as the module docs
/// describe, with default [`ParseOptions`].
pub fn parse(input: &[u8]) -> Result<Syslog<'_>> {
    parse_with(input, &ParseOptions::default())
}

/// Parses a syslog message of either format with the given options.
pub fn parse_with<'a>(input: &'a [u8], options: &ParseOptions) -> Result<Syslog<'a>> {
    let mut cursor = Cursor::new(input);
    let priority = cursor.priority()?;
    if looks_like_rfc5424(cursor.rest()) {
        rfc5424_after_priority(cursor, priority)
    } else {
        Ok(rfc3164_after_priority(cursor, priority, options))
    }
}

/// Parses an RFC 5424 message.
pub fn parse_rfc5424(input: &[u8]) -> Result<Syslog<'_>> {
    let mut cursor = Cursor::new(input);
    let priority = cursor.priority()?;
    rfc5424_after_priority(cursor, priority)
}

/// Parses an RFC 3164 message.
pub fn parse_rfc3164<'a>(input: &'a [u8], options: &ParseOptions) -> Result<Syslog<'a>> {
    let mut cursor = Cursor::new(input);
    let priority = cursor.priority()?;
    Ok(rfc3164_after_priority(cursor, priority, options))
}

/// `VERSION SP` followed by `-` or a digit.
fn looks_like_rfc5424(rest: &[u8]) -> bool {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    (1..=3).contains(&digits)
        && rest[0] != b'0'
        && rest.get(digits) == Some(&b' ')
        && rest
            .get(digits + 1)
            .is_some_and(|&b| b == b'-' || b.is_ascii_digit())
}

struct Cursor<'a> {
    input: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(input: &'a [u8]) -> Self {
        Cursor { input, position: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        &self.input[self.position..]
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.position).copied()
    }

    fn error(&self, kind: ErrorKind) -> SyslogError {
        SyslogError {
            kind,
            offset: self.position,
        }
    }

    fn priority(&mut self) -> Result<Priority> {
        match self.peek() {
            None => return Err(self.error(ErrorKind::Empty)),
            Some(b'<') => self.position += 1,
            Some(_) => return Err(self.error(ErrorKind::MissingPriority)),
        }
        let rest = self.rest();
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=3).contains(&digits) || rest.get(digits) != Some(&b'>') {
            return Err(self.error(ErrorKind::InvalidPriority));
        }
        let value = rest[..digits]
            .iter()
            .fold(0u16, |value, digit| value * 10 + u16::from(digit - b'0'));
        let priority = u8::try_from(value)
            .ok()
            .and_then(Priority::from_value)
            .ok_or_else(|| self.error(ErrorKind::InvalidPriority))?;
        self.position += digits + 1;
        Ok(priority)
    }

    /// Takes the bytes up to the next space (or the end), not the space.
    fn word(&mut self) -> &'a [u8] {
        let rest = self.rest();
        let len = memchr_space(rest);
        self.position += len;
        &rest[..len]
    }

    fn expect_space(&mut self, after: &'static str) -> Result<()> {
        if self.peek() == Some(b' ') {
            self.position += 1;
            Ok(())
        } else {
            Err(self.error(ErrorKind::MissingSpace(after)))
        }
    }

    /// An RFC 5424 header field: `-` or 1 to `max` printable ASCII bytes.
    fn header_field(&mut self, field: &'static str, max: usize) -> Result<Option<&'a str>> {
        if self.peek().is_none() {
            return Err(self.error(ErrorKind::MissingField(field)));
        }
        let start = self.position;
        let word = self.word();
        let error = |kind| SyslogError {
            kind,
            offset: start,
        };
        if word.is_empty() {
            return Err(error(ErrorKind::MissingField(field)));
        }
        if word == b"-" {
            return Ok(None);
        }
        if let Some(bad) = word.iter().position(|b| !is_print_ascii(*b)) {
            return Err(SyslogError {
                kind: ErrorKind::InvalidCharacter(field),
                offset: start + bad,
            });
        }
        if word.len() > max {
            return Err(error(ErrorKind::FieldTooLong { field, max }));
        }
        ascii(word)
            .map(Some)
            .ok_or_else(|| error(ErrorKind::InvalidCharacter(field)))
    }
}

fn memchr_space(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == b' ').unwrap_or(bytes.len())
}

fn is_print_ascii(byte: u8) -> bool {
    (33..=126).contains(&byte)
}

/// The bytes as `&str` if they are ASCII (checked, never assumed).
fn ascii(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Splits off a leading BOM and one trailing newline.
fn message_of(bytes: &[u8]) -> (&[u8], bool) {
    let (bytes, bom) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (rest, true),
        None => (bytes, false),
    };
    let bytes = bytes.strip_suffix(b"\n").map_or(bytes, |without| {
        without.strip_suffix(b"\r").unwrap_or(without)
    });
    (bytes, bom)
}

fn rfc5424_after_priority<'a>(mut cursor: Cursor<'a>, priority: Priority) -> Result<Syslog<'a>> {
    let version_start = cursor.position;
    let version = cursor.word();
    if version.is_empty()
        || version.len() > 3
        || version[0] == b'0'
        || !version.iter().all(u8::is_ascii_digit)
    {
        return Err(SyslogError {
            kind: ErrorKind::InvalidVersion,
            offset: version_start,
        });
    }
    let version = version
        .iter()
        .fold(0u16, |value, digit| value * 10 + u16::from(digit - b'0'));
    cursor.expect_space("version")?;

    let timestamp_start = cursor.position;
    let timestamp = cursor.header_field("timestamp", 64)?;
    let timestamp_unix_ns = match timestamp {
        None => None,
        Some(text) => {
            let parsed = parse_rfc3339(text.as_bytes()).ok_or(SyslogError {
                kind: ErrorKind::InvalidTimestamp,
                offset: timestamp_start,
            })?;
            parsed.unix_ns()
        }
    };
    cursor.expect_space("timestamp")?;
    let hostname = cursor.header_field("hostname", 255)?;
    cursor.expect_space("hostname")?;
    let app_name = cursor.header_field("app name", 48)?;
    cursor.expect_space("app name")?;
    let proc_id = cursor.header_field("procid", 128)?;
    cursor.expect_space("procid")?;
    let msg_id = cursor.header_field("msgid", 32)?;
    cursor.expect_space("msgid")?;
    let structured_data = structured_data(&mut cursor)?;
    let (message, bom) = match cursor.peek() {
        None => (&b""[..], false),
        Some(b' ') => message_of(&cursor.rest()[1..]),
        // A newline straight after the structured data ends the message.
        Some(b'\n' | b'\r') if matches!(cursor.rest(), b"\n" | b"\r\n") => (&b""[..], false),
        Some(_) => return Err(cursor.error(ErrorKind::MissingSpace("structured data"))),
    };
    Ok(Syslog {
        format: Format::Rfc5424,
        priority,
        version: Some(version),
        timestamp,
        timestamp_unix_ns,
        hostname,
        app_name,
        proc_id,
        msg_id,
        structured_data,
        message,
        bom,
    })
}

/// `-` or one or more SD-ELEMENTs.
fn structured_data<'a>(cursor: &mut Cursor<'a>) -> Result<Vec<SdElement<'a>>> {
    let sd_error = |cursor: &Cursor<'a>, what| cursor.error(ErrorKind::InvalidStructuredData(what));
    match cursor.peek() {
        None => return Err(cursor.error(ErrorKind::MissingField("structured data"))),
        Some(b'-') => {
            cursor.position += 1;
            return Ok(Vec::new());
        }
        Some(b'[') => {}
        Some(_) => return Err(sd_error(cursor, "expected '-' or '['")),
    }
    let mut elements = Vec::new();
    while cursor.peek() == Some(b'[') {
        cursor.position += 1;
        let id = sd_name(cursor, "expected an SD-ID after '['")?;
        let mut params = Vec::new();
        loop {
            match cursor.peek() {
                Some(b']') => {
                    cursor.position += 1;
                    break;
                }
                Some(b' ') => cursor.position += 1,
                None => return Err(sd_error(cursor, "unterminated SD-ELEMENT (missing ']')")),
                Some(_) => return Err(sd_error(cursor, "expected ' ' or ']' after an SD-PARAM")),
            }
            let name = sd_name(cursor, "expected a PARAM-NAME")?;
            if cursor.peek() != Some(b'=') {
                return Err(sd_error(cursor, "expected '=' after a PARAM-NAME"));
            }
            cursor.position += 1;
            if cursor.peek() != Some(b'"') {
                return Err(sd_error(cursor, "expected '\"' opening a PARAM-VALUE"));
            }
            cursor.position += 1;
            let value = param_value(cursor)?;
            params.push(SdParam { name, value });
        }
        elements.push(SdElement { id, params });
    }
    Ok(elements)
}

/// An SD-NAME: 1 to 32 printable ASCII bytes except `=`, `]`, `"` and space.
fn sd_name<'a>(cursor: &mut Cursor<'a>, missing: &'static str) -> Result<&'a str> {
    let rest = cursor.rest();
    let len = rest
        .iter()
        .position(|&b| !is_print_ascii(b) || matches!(b, b'=' | b']' | b'"'))
        .unwrap_or(rest.len());
    if len == 0 {
        return Err(cursor.error(ErrorKind::InvalidStructuredData(missing)));
    }
    if len > 32 {
        return Err(cursor.error(ErrorKind::FieldTooLong {
            field: "SD-NAME",
            max: 32,
        }));
    }
    let name =
        ascii(&rest[..len]).ok_or_else(|| cursor.error(ErrorKind::InvalidCharacter("SD-NAME")))?;
    cursor.position += len;
    Ok(name)
}

/// A PARAM-VALUE after its opening quote, up to and including the closing
/// quote; borrowed unless it contains escapes.
fn param_value<'a>(cursor: &mut Cursor<'a>) -> Result<Cow<'a, str>> {
    let start = cursor.position;
    let rest = cursor.rest();
    let mut escaped = false;
    let mut index = 0;
    let end = loop {
        match rest.get(index) {
            None => {
                return Err(cursor.error(ErrorKind::InvalidStructuredData(
                    "unterminated PARAM-VALUE (missing '\"')",
                )))
            }
            Some(b'"') => break index,
            Some(b'\\') if matches!(rest.get(index + 1), Some(b'"' | b'\\' | b']')) => {
                escaped = true;
                index += 2;
            }
            Some(_) => index += 1,
        }
    };
    let raw = std::str::from_utf8(&rest[..end]).map_err(|error| SyslogError {
        kind: ErrorKind::InvalidUtf8,
        offset: start + error.valid_up_to(),
    })?;
    cursor.position += end + 1;
    if !escaped {
        return Ok(Cow::Borrowed(raw));
    }
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.clone().next() {
                Some(next @ ('"' | '\\' | ']')) => {
                    value.push(next);
                    chars.next();
                }
                _ => value.push('\\'),
            }
        } else {
            value.push(c);
        }
    }
    Ok(Cow::Owned(value))
}

fn rfc3164_after_priority<'a>(
    mut cursor: Cursor<'a>,
    priority: Priority,
    options: &ParseOptions,
) -> Syslog<'a> {
    let mut syslog = Syslog {
        format: Format::Rfc3164,
        priority,
        version: None,
        timestamp: None,
        timestamp_unix_ns: None,
        hostname: None,
        app_name: None,
        proc_id: None,
        msg_id: None,
        structured_data: Vec::new(),
        message: b"",
        bom: false,
    };
    if let Some((len, unix_ns)) = rfc3164_timestamp(cursor.rest(), options) {
        let rest = cursor.rest();
        // `len` covers only ASCII, checked by the timestamp parsers.
        syslog.timestamp = ascii(&rest[..len]);
        syslog.timestamp_unix_ns = unix_ns;
        cursor.position += len;
        if cursor.peek() == Some(b' ') {
            cursor.position += 1;
            // The hostname is the next word, unless it is the tag.
            let rest = cursor.rest();
            let len = memchr_space(rest);
            if len < rest.len() && is_hostname(&rest[..len]) {
                syslog.hostname = ascii(&rest[..len]);
                cursor.position += len + 1;
            }
        }
    }
    let rest = cursor.rest();
    if let Some(tag) = rfc3164_tag(rest) {
        syslog.app_name = ascii(tag.app);
        syslog.proc_id = tag.pid.and_then(ascii);
        cursor.position += tag.len;
    }
    let (message, bom) = message_of(cursor.rest());
    syslog.message = message;
    syslog.bom = bom;
    syslog
}

/// A plausible host name or address, and not a tag (`app:`).
fn is_hostname(word: &[u8]) -> bool {
    !word.is_empty()
        && word.len() <= 255
        && word.last() != Some(&b':')
        && word
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'))
}

/// An RFC 3164 tag found at the start of the content.
struct Tag<'a> {
    app: &'a [u8],
    pid: Option<&'a [u8]>,
    /// Bytes to skip: the tag and one following space.
    len: usize,
}

/// A tag `app:`, `app[pid]:` or `app[pid]` followed by a space.
fn rfc3164_tag(rest: &[u8]) -> Option<Tag<'_>> {
    let app_len = rest
        .iter()
        .position(|&b| !is_print_ascii(b) || matches!(b, b'[' | b']' | b':'))
        .unwrap_or(rest.len());
    if app_len == 0 || app_len > 48 {
        return None;
    }
    let app = &rest[..app_len];
    let mut len = app_len;
    let mut pid = None;
    if rest.get(len) == Some(&b'[') {
        let inner = &rest[len + 1..];
        let pid_len = inner.iter().position(|&b| b == b']')?;
        let candidate = &inner[..pid_len];
        if candidate.is_empty()
            || candidate.len() > 128
            || !candidate.iter().all(|&b| is_print_ascii(b))
        {
            return None;
        }
        pid = Some(candidate);
        len += pid_len + 2;
    }
    match rest.get(len) {
        Some(b':') => len += 1,
        Some(b' ') if pid.is_some() => {}
        None if pid.is_some() => {}
        _ => return None,
    }
    if rest.get(len) == Some(&b' ') {
        len += 1;
    }
    Some(Tag { app, pid, len })
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// An RFC 3164 timestamp at the start of `rest`: its length and, where the
/// year is known, its unix time.
fn rfc3164_timestamp(rest: &[u8], options: &ParseOptions) -> Option<(usize, Option<i64>)> {
    if rest.first().is_some_and(u8::is_ascii_digit) {
        let len = memchr_space(rest);
        let parsed = parse_rfc3339(&rest[..len])?;
        return Some((len, parsed.unix_ns()));
    }
    // Mmm dd [yyyy ]hh:mm:ss[.fff]
    let month = MONTHS.iter().position(|m| rest.get(..3) == Some(&m[..]))? as u32 + 1;
    if rest.get(3) != Some(&b' ') {
        return None;
    }
    let day = match (rest.get(4)?, rest.get(5)?) {
        (b' ', d) if d.is_ascii_digit() => u32::from(d - b'0'),
        (a, b) if a.is_ascii_digit() && b.is_ascii_digit() => {
            u32::from(a - b'0') * 10 + u32::from(b - b'0')
        }
        _ => return None,
    };
    if rest.get(6) != Some(&b' ') {
        return None;
    }
    let mut position = 7;
    let mut year = options.rfc3164_year;
    if let Some(digits) = rest.get(position..position + 5) {
        if digits[..4].iter().all(u8::is_ascii_digit) && digits[4] == b' ' {
            year = Some(number(&digits[..4]) as i32);
            position += 5;
        }
    }
    let time = rest.get(position..position + 8)?;
    if time[2] != b':' || time[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        two_digits(&time[0..2])?,
        two_digits(&time[3..5])?,
        two_digits(&time[6..8])?,
    );
    position += 8;
    let mut nanos = 0;
    if rest.get(position) == Some(&b'.') {
        let (value, digits) = fraction(&rest[position + 1..])?;
        nanos = value;
        position += 1 + digits;
    }
    if rest.get(position).is_some_and(|&b| b != b' ') {
        return None;
    }
    if day == 0 || day > 31 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let unix_ns = year.and_then(|year| {
        DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
            offset_seconds: options.rfc3164_utc_offset_seconds,
        }
        .unix_ns()
    });
    Some((position, unix_ns))
}

fn number(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0u32, |value, d| value * 10 + u32::from(d - b'0'))
}

fn two_digits(bytes: &[u8]) -> Option<u32> {
    (bytes.len() == 2 && bytes.iter().all(u8::is_ascii_digit)).then(|| number(bytes))
}

/// 1 to 9 fraction digits as nanoseconds, and how many digits there were.
fn fraction(bytes: &[u8]) -> Option<(u32, usize)> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=9).contains(&digits) {
        return None;
    }
    let value = number(&bytes[..digits]) * 10u32.pow(9 - digits as u32);
    Some((value, digits))
}

/// A calendar date and time with its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_seconds: i32,
}

impl DateTime {
    /// Nanoseconds since the Unix epoch, UTC; `None` if the date does not
    /// exist or falls outside what an `i64` of nanoseconds holds (1677-2262).
    fn unix_ns(&self) -> Option<i64> {
        if self.month == 0 || self.month > 12 || self.day == 0 {
            return None;
        }
        if self.day > days_in_month(self.year, self.month) {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let seconds = days * 86_400
            + i64::from(self.hour) * 3_600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset_seconds);
        seconds
            .checked_mul(1_000_000_000)?
            .checked_add(i64::from(self.nanos))
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// An RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|±HH:MM)`.
/// `None` if the text is not one (the date itself is checked later).
fn parse_rfc3339(text: &[u8]) -> Option<DateTime> {
    if text.len() < 20 || !text.is_ascii() {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| {
        let bytes = &text[range];
        bytes.iter().all(u8::is_ascii_digit).then(|| number(bytes))
    };
    if text[4] != b'-'
        || text[7] != b'-'
        || !matches!(text[10], b'T' | b't')
        || text[13] != b':'
        || text[16] != b':'
    {
        return None;
    }
    let year = digits(0..4)? as i32;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    let second = digits(17..19)?;
    let mut position = 19;
    let mut nanos = 0;
    if text[position] == b'.' {
        let (value, count) = fraction(&text[position + 1..])?;
        nanos = value;
        position += 1 + count;
    }
    let offset_seconds = match &text[position..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = two_digits(&[*h1, *h2])?;
            let minutes = two_digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = (hours * 3_600 + minutes * 60) as i32;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let valid = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    valid.then_some(DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_seconds,
    })
}

/// The message as a JSON object. Keys, each present only when the field
/// is: `format`, `facility`, `severity` (keywords), `version`,
/// `timestamp` (as sent), `timestamp_unix_ns`, `hostname`, `app_name`,
/// `proc_id`, `msg_id`, `structured_data` (`{SD-ID: {name: value}}`; a
/// repeated name gives an array of its values, a repeated SD-ID merges
/// into one object) and `message` (always; invalid UTF-8 replaced).
pub fn to_json(syslog: &Syslog<'_>) -> Value {
    let mut object = Map::new();
    object.insert("format".into(), syslog.format.name().into());
    object.insert("facility".into(), syslog.priority.facility_name().into());
    object.insert("severity".into(), syslog.priority.severity_name().into());
    if let Some(version) = syslog.version {
        object.insert("version".into(), version.into());
    }
    let text_fields = [
        ("timestamp", syslog.timestamp),
        ("hostname", syslog.hostname),
        ("app_name", syslog.app_name),
        ("proc_id", syslog.proc_id),
        ("msg_id", syslog.msg_id),
    ];
    for (key, value) in text_fields {
        if let Some(value) = value {
            object.insert(key.into(), value.into());
        }
    }
    if let Some(unix_ns) = syslog.timestamp_unix_ns {
        object.insert("timestamp_unix_ns".into(), unix_ns.into());
    }
    if !syslog.structured_data.is_empty() {
        let mut elements = Map::new();
        for element in &syslog.structured_data {
            let params = elements
                .entry(element.id)
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(params) = params else {
                continue;
            };
            for param in &element.params {
                let value = Value::from(param.value.as_ref());
                match params.get_mut(param.name) {
                    None => {
                        params.insert(param.name.into(), value);
                    }
                    Some(Value::Array(values)) => values.push(value),
                    Some(first) => {
                        let first_value = first.take();
                        *first = Value::Array(vec![first_value, value]);
                    }
                }
            }
        }
        object.insert("structured_data".into(), Value::Object(elements));
    }
    object.insert("message".into(), syslog.message_lossy().into());
    Value::Object(object)
}

/// Appends [`to_json`]'s object to `out` as one line of JSON (no
/// newline), with the same keys in the same order, without building a
/// [`Value`] first (about ten times faster).
pub fn write_json(syslog: &Syslog<'_>, out: &mut Vec<u8>) {
    if has_repeats(&syslog.structured_data) {
        // Merging repeated names into arrays is what `to_json` does; the
        // rare case may take the slower road.
        out.extend_from_slice(to_json(syslog).to_string().as_bytes());
        return;
    }
    out.extend_from_slice(b"{\"format\":\"");
    out.extend_from_slice(syslog.format.name().as_bytes());
    out.extend_from_slice(b"\",\"facility\":\"");
    out.extend_from_slice(syslog.priority.facility_name().as_bytes());
    out.extend_from_slice(b"\",\"severity\":\"");
    out.extend_from_slice(syslog.priority.severity_name().as_bytes());
    out.push(b'"');
    if let Some(version) = syslog.version {
        out.extend_from_slice(format!(",\"version\":{version}").as_bytes());
    }
    let text_fields = [
        ("timestamp", syslog.timestamp),
        ("hostname", syslog.hostname),
        ("app_name", syslog.app_name),
        ("proc_id", syslog.proc_id),
        ("msg_id", syslog.msg_id),
    ];
    for (key, value) in text_fields {
        if let Some(value) = value {
            write_key(out, key);
            write_string(out, value);
        }
    }
    if let Some(unix_ns) = syslog.timestamp_unix_ns {
        out.extend_from_slice(format!(",\"timestamp_unix_ns\":{unix_ns}").as_bytes());
    }
    if !syslog.structured_data.is_empty() {
        write_key(out, "structured_data");
        out.push(b'{');
        for (index, element) in syslog.structured_data.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_string(out, element.id);
            out.extend_from_slice(b":{");
            for (index, param) in element.params.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(out, param.name);
                out.push(b':');
                write_string(out, &param.value);
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
    write_key(out, "message");
    write_string(out, &syslog.message_lossy());
    out.push(b'}');
}

/// Whether an SD-ID or a name within one element repeats.
fn has_repeats(elements: &[SdElement<'_>]) -> bool {
    elements.iter().enumerate().any(|(index, element)| {
        elements[..index].iter().any(|e| e.id == element.id)
            || element
                .params
                .iter()
                .enumerate()
                .any(|(i, p)| element.params[..i].iter().any(|q| q.name == p.name))
    })
}

/// `,"key":` (every key follows the `format` key, so always a comma).
fn write_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON string literal, escaped as RFC 8259 requires.
fn write_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The scalar fields of a parse, for table comparison.
    type Fields<'a> = (
        Format,
        u8,
        Option<&'a str>,
        Option<i64>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        &'a [u8],
        bool,
    );

    fn fields<'a>(syslog: &Syslog<'a>) -> Fields<'a> {
        (
            syslog.format,
            syslog.priority.value(),
            syslog.timestamp,
            syslog.timestamp_unix_ns,
            syslog.hostname,
            syslog.app_name,
            syslog.proc_id,
            syslog.msg_id,
            syslog.message,
            syslog.bom,
        )
    }

    const S: i64 = 1_000_000_000;
    const F5424: Format = Format::Rfc5424;
    const F3164: Format = Format::Rfc3164;

    #[test]
    fn parses_the_rfc_examples_and_real_world_variants() {
        #[rustfmt::skip]
        let cases: Vec<(&str, &[u8], Fields<'_>)> = vec![
            // RFC 5424 §6.5, examples 1 and 2 (example 1 with its BOM).
            ("5424 example 1", b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8",
             (F5424, 34, Some("2003-10-11T22:14:15.003Z"), Some(1_065_910_455 * S + 3_000_000), Some("mymachine.example.com"), Some("su"), None, Some("ID47"), b"'su root' failed for lonvick on /dev/pts/8", true)),
            ("5424 example 2", b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
             (F5424, 165, Some("2003-08-24T05:14:15.000003-07:00"), Some(1_061_727_255 * S + 3_000), Some("192.0.2.1"), Some("myproc"), Some("8710"), None, b"%% It's time to make the do-nuts.", false)),
            ("5424 all nil, no message", b"<13>1 - - - - - -",
             (F5424, 13, None, None, None, None, None, None, b"", false)),
            ("5424 nil, empty message", b"<13>1 - - - - - - ",
             (F5424, 13, None, None, None, None, None, None, b"", false)),
            ("5424 trailing newline", b"<13>1 - - - - - - hi\r\n",
             (F5424, 13, None, None, None, None, None, None, b"hi", false)),
            ("5424 newline after sd", b"<13>1 - - - - - -\n",
             (F5424, 13, None, None, None, None, None, None, b"", false)),
            ("5424 nanoseconds, lowercase", b"<0>1 2024-02-29t23:59:59.123456789z h a p m - x",
             (F5424, 0, Some("2024-02-29t23:59:59.123456789z"), Some(1_709_251_199 * S + 123_456_789), Some("h"), Some("a"), Some("p"), Some("m"), b"x", false)),
            ("5424 before the epoch", b"<13>1 1969-12-31T23:59:59Z - - - - - x",
             (F5424, 13, Some("1969-12-31T23:59:59Z"), Some(-S), None, None, None, None, b"x", false)),
            ("5424 beyond i64 nanoseconds", b"<13>1 9999-12-31T23:59:59Z - - - - - x",
             (F5424, 13, Some("9999-12-31T23:59:59Z"), None, None, None, None, None, b"x", false)),
            ("5424 invalid UTF-8 in MSG kept as bytes", b"<13>1 - - - - - - \xFF\xFE",
             (F5424, 13, None, None, None, None, None, None, b"\xFF\xFE", false)),
            // RFC 3164 §5.4 examples 1 and 2.
            ("3164 example 1", b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
             (F3164, 34, Some("Oct 11 22:14:15"), None, Some("mymachine"), Some("su"), None, None, b"'su root' failed for lonvick on /dev/pts/8", false)),
            ("3164 example 2, no tag", b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
             (F3164, 13, Some("Feb  5 17:32:18"), None, Some("10.0.0.99"), None, None, None, b"Use the BFG!", false)),
            ("3164 tag with pid", b"<78>Oct  1 09:05:01 web01 CRON[1234]: (root) CMD (run-parts /etc/cron.hourly)",
             (F3164, 78, Some("Oct  1 09:05:01"), None, Some("web01"), Some("CRON"), Some("1234"), None, b"(root) CMD (run-parts /etc/cron.hourly)", false)),
            ("3164 without hostname", b"<34>Oct 11 22:14:15 su: 'su root' failed",
             (F3164, 34, Some("Oct 11 22:14:15"), None, None, Some("su"), None, None, b"'su root' failed", false)),
            ("3164 without hostname, pid", b"<30>May  1 10:00:00 systemd[1]: Started Session 4.",
             (F3164, 30, Some("May  1 10:00:00"), None, None, Some("systemd"), Some("1"), None, b"Started Session 4.", false)),
            ("3164 tag with slash", b"<22>Jun 30 23:59:59 mx1 postfix/smtpd[999]: connect from x",
             (F3164, 22, Some("Jun 30 23:59:59"), None, Some("mx1"), Some("postfix/smtpd"), Some("999"), None, b"connect from x", false)),
            ("3164 pid without colon", b"<13>Jan 31 00:00:00 h app[7] text",
             (F3164, 13, Some("Jan 31 00:00:00"), None, Some("h"), Some("app"), Some("7"), None, b"text", false)),
            ("3164 year before time (Cisco)", b"<189>Oct  1 2024 09:05:01 router1 %LINK-3-UPDOWN: Interface up",
             (F3164, 189, Some("Oct  1 2024 09:05:01"), Some(1_727_773_501 * S), Some("router1"), Some("%LINK-3-UPDOWN"), None, None, b"Interface up", false)),
            ("3164 milliseconds", b"<13>Oct  1 09:05:01.250 h a: m",
             (F3164, 13, Some("Oct  1 09:05:01.250"), None, Some("h"), Some("a"), None, None, b"m", false)),
            ("3164 RFC 3339 timestamp (rsyslog)", b"<13>2024-05-01T10:00:00.5+02:00 web01 nginx[42]: GET /",
             (F3164, 13, Some("2024-05-01T10:00:00.5+02:00"), Some(1_714_550_400 * S + 500_000_000), Some("web01"), Some("nginx"), Some("42"), None, b"GET /", false)),
            ("3164 no timestamp, tag", b"<13>myapp: hello",
             (F3164, 13, None, None, None, Some("myapp"), None, None, b"hello", false)),
            ("3164 no timestamp, no tag", b"<13>hello world",
             (F3164, 13, None, None, None, None, None, None, b"hello world", false)),
            ("3164 looks like a version but is text", b"<13>5 apples fell",
             (F3164, 13, None, None, None, None, None, None, b"5 apples fell", false)),
            ("3164 timestamp then end", b"<13>Oct 11 22:14:15",
             (F3164, 13, Some("Oct 11 22:14:15"), None, None, None, None, None, b"", false)),
            ("3164 timestamp and one word", b"<13>Oct 11 22:14:15 word",
             (F3164, 13, Some("Oct 11 22:14:15"), None, None, None, None, None, b"word", false)),
            ("3164 BOM in message", b"<13>Oct 11 22:14:15 h a: \xEF\xBB\xBFtext\n",
             (F3164, 13, Some("Oct 11 22:14:15"), None, Some("h"), Some("a"), None, None, b"text", true)),
            ("3164 bad month is message", b"<13>Foo 11 22:14:15 x",
             (F3164, 13, None, None, None, None, None, None, b"Foo 11 22:14:15 x", false)),
            ("3164 empty", b"<13>",
             (F3164, 13, None, None, None, None, None, None, b"", false)),
        ];
        for (name, input, expected) in cases {
            match parse(input) {
                Ok(syslog) => assert_eq!(fields(&syslog), expected, "{name}"),
                Err(error) => panic!("{name}: {error}"),
            }
        }
    }

    #[test]
    fn rfc3164_year_and_offset_come_from_the_options() {
        let options = ParseOptions {
            rfc3164_year: Some(2024),
            rfc3164_utc_offset_seconds: 2 * 3600,
        };
        let syslog = parse_with(b"<13>May  1 10:00:00 h a: m", &options).expect("valid");
        assert_eq!(syslog.timestamp_unix_ns, Some(1_714_550_400 * S));
        // A year in the timestamp wins over the option.
        let syslog = parse_with(b"<13>May  1 2023 10:00:00 h a: m", &options).expect("valid");
        assert_eq!(
            syslog.timestamp_unix_ns,
            Some((1_714_550_400 - 366 * 86_400) * S)
        );
        // A day that does not exist in that year has no unix time.
        let syslog = parse_with(
            b"<13>Feb 29 10:00:00 h a: m",
            &ParseOptions {
                rfc3164_year: Some(2023),
                ..options
            },
        )
        .expect("valid");
        assert_eq!(syslog.timestamp, Some("Feb 29 10:00:00"));
        assert_eq!(syslog.timestamp_unix_ns, None);
    }

    #[test]
    fn structured_data_is_parsed_and_unescaped() {
        // RFC 5424 §6.5 examples 3 and 4.
        let example3 = b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] \xEF\xBB\xBFAn application event log entry...";
        let syslog = parse(example3).expect("valid");
        assert_eq!(syslog.structured_data.len(), 1);
        let element = &syslog.structured_data[0];
        assert_eq!(element.id, "exampleSDID@32473");
        let params: Vec<(&str, &str)> = element
            .params
            .iter()
            .map(|p| (p.name, p.value.as_ref()))
            .collect();
        assert_eq!(
            params,
            [
                ("iut", "3"),
                ("eventSource", "Application"),
                ("eventID", "1011")
            ]
        );
        assert_eq!(syslog.message, b"An application event log entry...");
        assert!(syslog.bom);

        let example4 = br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#;
        let syslog = parse(example4).expect("valid");
        let ids: Vec<&str> = syslog.structured_data.iter().map(|e| e.id).collect();
        assert_eq!(ids, ["exampleSDID@32473", "examplePriority@32473"]);
        assert_eq!(syslog.message, b"");

        let escaped = br#"<13>1 - - - - - [id a="x\"y\\z\]w\n" b="" c="caf\xC3\xA9"][bare] msg"#;
        let escaped = String::from_utf8_lossy(escaped).replace(r"\xC3\xA9", "\u{e9}");
        let syslog = parse(escaped.as_bytes()).expect("valid");
        let values: Vec<(&str, &Cow<'_, str>)> = syslog.structured_data[0]
            .params
            .iter()
            .map(|p| (p.name, &p.value))
            .collect();
        assert_eq!(values[0], ("a", &Cow::Owned::<str>(r#"x"y\z]w\n"#.into())));
        assert!(matches!(values[1].1, Cow::Borrowed("")));
        assert!(matches!(values[2].1, Cow::Borrowed("caf\u{e9}")));
        assert_eq!(
            syslog.structured_data[1],
            SdElement {
                id: "bare",
                params: vec![]
            }
        );
        assert_eq!(syslog.message, b"msg");
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        use ErrorKind::*;
        #[rustfmt::skip]
        let cases: Vec<(&str, &[u8], ErrorKind, usize)> = vec![
            ("empty", b"", Empty, 0),
            ("no priority", b"hello", MissingPriority, 0),
            ("empty priority", b"<>1 - - - - - -", InvalidPriority, 1),
            ("priority too big", b"<192>1 - - - - - -", InvalidPriority, 1),
            ("priority too long", b"<0013>x", InvalidPriority, 1),
            ("priority unclosed", b"<13", InvalidPriority, 1),
            ("bad date", b"<13>1 2003-13-11T22:14:15Z h a p m -", InvalidTimestamp, 6),
            ("no zone", b"<13>1 2003-10-11T22:14:15 h a p m -", InvalidTimestamp, 6),
            ("leap second", b"<13>1 2003-10-11T23:59:60Z h a p m -", InvalidTimestamp, 6),
            ("ten fraction digits", b"<13>1 2003-10-11T22:14:15.0123456789Z h a p m -", InvalidTimestamp, 6),
            ("ends after hostname", b"<13>1 - host", MissingSpace("hostname"), 12),
            ("ends after msgid", b"<13>1 - h a p m", MissingSpace("msgid"), 15),
            ("missing structured data", b"<13>1 - h a p m ", MissingField("structured data"), 16),
            ("double space", b"<13>1 -  a p m -", MissingField("hostname"), 8),
            ("control character", b"<13>1 - h\x01 a p m -", InvalidCharacter("hostname"), 9),
            ("app name too long", b"<13>1 - h aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa p m -", FieldTooLong { field: "app name", max: 48 }, 10),
            ("sd neither nil nor element", b"<13>1 - h a p m x", InvalidStructuredData("expected '-' or '['"), 16),
            ("sd text after nil", b"<13>1 - h a p m -x", MissingSpace("structured data"), 17),
            ("sd unterminated element", b"<13>1 - h a p m [id", InvalidStructuredData("unterminated SD-ELEMENT (missing ']')"), 19),
            ("sd no id", b"<13>1 - h a p m []", InvalidStructuredData("expected an SD-ID after '['"), 17),
            ("sd unquoted value", b"<13>1 - h a p m [id a=b]", InvalidStructuredData("expected '\"' opening a PARAM-VALUE"), 22),
            ("sd no equals", b"<13>1 - h a p m [id a]", InvalidStructuredData("expected '=' after a PARAM-NAME"), 21),
            ("sd unterminated value", br#"<13>1 - h a p m [id a="b\"]"#, InvalidStructuredData("unterminated PARAM-VALUE (missing '\"')"), 23),
            ("sd junk after value", br#"<13>1 - h a p m [id a="b"x]"#, InvalidStructuredData("expected ' ' or ']' after an SD-PARAM"), 25),
            ("sd value not UTF-8", b"<13>1 - h a p m [id a=\"b\xFF\"]", InvalidUtf8, 24),
            ("sd name too long", b"<13>1 - h a p m [iddddddddddddddddddddddddddddddddd]", FieldTooLong { field: "SD-NAME", max: 32 }, 17),
        ];
        for (name, input, kind, offset) in cases {
            assert_eq!(parse(input), Err(SyslogError { kind, offset }), "{name}");
        }
        let error = parse(b"<13>1 - host").expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "invalid syslog message at byte 12: expected a space after the hostname"
        );
    }

    #[test]
    fn priority_names_follow_rfc5424_tables() {
        let cases = [
            (0, "kern", "emerg"),
            (34, "auth", "crit"),
            (165, "local4", "notice"),
            (191, "local7", "debug"),
            (86, "authpriv", "info"),
        ];
        for (value, facility, severity) in cases {
            let priority = Priority::from_value(value).expect("valid");
            assert_eq!(
                (
                    priority.value(),
                    priority.facility_name(),
                    priority.severity_name()
                ),
                (value, facility, severity)
            );
        }
        assert_eq!(Priority::from_value(192), None);
    }

    #[test]
    fn converts_to_json() {
        let input = br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [a@1 x="1" x="2" y="\]"][a@1 x="3"][b@1] hello"#;
        let syslog = parse(input).expect("valid");
        let expected = json!({
            "format": "rfc5424",
            "facility": "local4",
            "severity": "notice",
            "version": 1,
            "timestamp": "2003-10-11T22:14:15.003Z",
            "timestamp_unix_ns": 1_065_910_455_003_000_000_i64,
            "hostname": "mymachine.example.com",
            "app_name": "evntslog",
            "msg_id": "ID47",
            "structured_data": {"a@1": {"x": ["1", "2", "3"], "y": "]"}, "b@1": {}},
            "message": "hello",
        });
        assert_eq!(to_json(&syslog), expected);

        let syslog = parse(b"<13>Oct 11 22:14:15 su: \xFFbad").expect("valid");
        let expected = json!({
            "format": "rfc3164",
            "facility": "user",
            "severity": "notice",
            "timestamp": "Oct 11 22:14:15",
            "app_name": "su",
            "message": "\u{FFFD}bad",
        });
        assert_eq!(to_json(&syslog), expected);
        let mut out = b"prefix ".to_vec();
        write_json(&syslog, &mut out);
        let written: Value = serde_json::from_slice(&out[7..]).expect("JSON");
        assert_eq!(written, expected);
    }

    #[test]
    fn write_json_matches_to_json() {
        let inputs: [&[u8]; 7] = [
            b"<13>1 - - - - - [c@1 v=\"\x02\\\"\"] a\x01b\x1fc\"d\te\x00",
            br#"<165>1 2003-10-11T22:14:15.003Z h\"x app 1 m [a@1 q="\"\\\]" z="\u{1}"][b@1 x="1"] tab\tquote"ctl\x01\x7f"#,
            br#"<165>1 - - - - - [a@1 x="1" x="2"] repeated name"#,
            br#"<165>1 - - - - - [a@1 x="1"][a@1 y="2"] repeated id"#,
            b"<13>Oct 11 22:14:15 su: \xFF\xC3\xA9 \\ \r\n",
            b"<13>1 - - - - - -",
            "<13>1 - - - - - - caf\u{e9} \u{1F600} \u{7f}".as_bytes(),
        ];
        for input in inputs {
            let syslog = parse(input).expect("valid");
            let mut out = Vec::new();
            write_json(&syslog, &mut out);
            let written: Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(
                written,
                to_json(&syslog),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn the_format_can_be_forced() {
        assert_eq!(
            parse_rfc3164(b"<13>1 - - - - - - x", &ParseOptions::default()).map(|s| s.format),
            Ok(Format::Rfc3164)
        );
        assert_eq!(
            parse_rfc5424(b"<13>Oct 11 22:14:15 su: x").map_err(|e| e.kind),
            Err(ErrorKind::InvalidVersion)
        );
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        let cases = [
            ((1970, 1, 1), 0),
            ((2000, 3, 1), 11_017),
            ((1969, 12, 31), -1),
            ((2024, 2, 29), 19_782),
            ((1600, 1, 1), -135_140),
        ];
        for ((year, month, day), days) in cases {
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
    }
}
