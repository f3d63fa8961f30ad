//! The keys every listener's config shares: its connection and request
//! limits (`max_connections`, `header_timeout_ms`, `body_timeout_ms`,
//! `min_body_rate`, `max_buffered_bytes`), their defaults (those of
//! [`ListenerLimits::default`], so each number is written once) and the
//! check of a routed `path`.

use std::time::Duration;

use super::ListenerLimits;
use crate::config::{ByteSize, Checks};

/// `max_connections` when not given.
pub fn default_max_connections() -> u32 {
    u32::try_from(listener_defaults().max_connections).unwrap_or(u32::MAX)
}

// The listener keys' defaults are the plugins' own (`ListenerLimits`), so
// each number is written once.
fn listener_defaults() -> ListenerLimits {
    ListenerLimits::default()
}

/// `idle_timeout_ms` when not given.
pub fn default_idle_timeout_ms() -> u64 {
    listener_defaults().idle_timeout.as_millis() as u64
}

/// `header_timeout_ms` when not given.
pub fn default_header_timeout_ms() -> u64 {
    listener_defaults().header_timeout.as_millis() as u64
}

/// `body_timeout_ms` when not given.
pub fn default_body_timeout_ms() -> u64 {
    listener_defaults().body_timeout.as_millis() as u64
}

/// `min_body_rate` when not given.
pub fn default_min_body_rate() -> ByteSize {
    ByteSize(listener_defaults().min_body_rate)
}

/// `max_buffered_bytes` when not given.
pub fn default_max_buffered_bytes() -> ByteSize {
    ByteSize(listener_defaults().max_buffered_bytes)
}

/// The connection and request limits an HTTP listener's keys give (see
/// `shipper_components::listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the keys of docs/config.md
pub struct HttpLimits {
    pub max_connections: u32,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub min_body_rate: ByteSize,
    pub max_buffered_bytes: ByteSize,
}

impl HttpLimits {
    /// As the plugins take them.
    pub fn limits(&self) -> ListenerLimits {
        ListenerLimits {
            max_connections: self.max_connections as usize,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            min_body_rate: self.min_body_rate.bytes(),
            max_buffered_bytes: self.max_buffered_bytes.bytes(),
            ..ListenerLimits::default()
        }
    }

    /// Reports limits that cannot work together with `max_body_bytes`.
    pub fn check(&self, max_body_bytes: ByteSize, check: &mut dyn Checks) {
        if self.max_connections == 0 {
            check.error(&["max_connections"], "must be at least 1");
        }
        for (key, value) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
        ] {
            if value == 0 {
                check.error(&[key], "must be at least 1");
            }
        }
        if self.max_buffered_bytes.bytes() < max_body_bytes.bytes() {
            check.error(
                &["max_buffered_bytes"],
                "must be at least max_body_bytes: a body of the largest size must fit",
            );
        }
    }
}

/// The `path` an HTTP listener routes (axum): a literal path. axum takes
/// `{name}` and `{*rest}` as captures and refuses, with a panic when the
/// source starts, unbalanced braces and segments starting with `:` or `*`.
pub fn check_route_path(check: &mut dyn Checks, path: &str) {
    if !path.starts_with('/') {
        check.error(&["path"], "must start with `/`");
    } else if path.contains(['{', '}'])
        || path
            .split('/')
            .any(|segment| segment.starts_with([':', '*']))
    {
        check.error(
            &["path"],
            "must be a literal path: no `{` or `}`, and no segment starting with `:` or `*` (route patterns)",
        );
    }
}
