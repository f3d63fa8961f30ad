//! Parsers that turn one framed message into fields.

pub mod syslog;
