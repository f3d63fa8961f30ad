//! The `http` sink's config: `[sinks.NAME] type = "http"` (see
//! docs/config.md), its checks, and how it becomes [`HttpSinkOptions`].

// Every key is described in docs/config.md, the one place they are documented.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shipper_core::component::{BatchPolicy, Sink};

use super::{
    HttpAuth, HttpCompression, HttpProtocol, HttpSink, HttpSinkOptions, OnRejected, RetryOptions,
    RESERVED_HEADERS,
};
use crate::config::{
    duration_ms, BuildContext, BuildError, ByteSize, Checks, Codec, Compression, SinkComponent,
};

/// When a sink sends what it has gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[serde(default = "Batch::default_max_records")]
    pub max_records: u64,
    #[serde(default = "Batch::default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(
        default = "Batch::default_max_age_ms",
        deserialize_with = "duration_ms"
    )]
    pub max_age_ms: u64,
}

impl Batch {
    fn default_max_records() -> u64 {
        10_000
    }

    fn default_max_bytes() -> ByteSize {
        ByteSize::mib(4)
    }

    fn default_max_age_ms() -> u64 {
        500
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            max_records: Batch::default_max_records(),
            max_bytes: Batch::default_max_bytes(),
            max_age_ms: Batch::default_max_age_ms(),
        }
    }
}

/// How an HTTP sink authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStrategy {
    Bearer,
    Basic,
}

/// `auth = { strategy = "bearer", token = "..." }` or
/// `{ strategy = "basic", user = "...", password = "..." }`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub strategy: AuthStrategy,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for Auth {
    /// Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Auth")
            .field("strategy", &self.strategy)
            .field("token", &hidden(&self.token))
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .finish()
    }
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

/// `retry = { initial_ms = 200, max_ms = 30000, attempts = 3 }`: how an
/// HTTP sink retries a failed request (capped exponential backoff with
/// jitter, or the receiver's `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(
        default = "Retry::default_initial_ms",
        deserialize_with = "duration_ms"
    )]
    pub initial_ms: u64,
    #[serde(default = "Retry::default_max_ms", deserialize_with = "duration_ms")]
    pub max_ms: u64,
    /// Tries of one request within one delivery before the runtime gets
    /// the failure (and offers the batch again later).
    #[serde(default = "Retry::default_attempts")]
    pub attempts: u32,
}

impl Retry {
    fn default_initial_ms() -> u64 {
        200
    }

    fn default_max_ms() -> u64 {
        30_000
    }

    fn default_attempts() -> u32 {
        3
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_ms: Retry::default_initial_ms(),
            max_ms: Retry::default_max_ms(),
            attempts: Retry::default_attempts(),
        }
    }
}

/// `type = "http"`: POSTs batches to an HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    #[serde(default)]
    pub inputs: Vec<String>,
    pub uri: String,
    #[serde(default)]
    pub protocol: HttpProtocol,
    #[serde(default = "Compression::zstd")]
    pub compression: Compression,
    #[serde(default)]
    pub batch: Batch,
    /// Requests in flight at once; `None`: 4 with protocol shipper, else 1.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms", deserialize_with = "duration_ms")]
    pub timeout_ms: u64,
    #[serde(
        default = "default_connect_timeout_ms",
        deserialize_with = "duration_ms"
    )]
    pub connect_timeout_ms: u64,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub on_rejected: OnRejected,
    /// Where refused batches go; `None`: `DATA_DIR/sinks/NAME.dead-letter.ndjson`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// The dead-letter file's limit: a refused batch that would pass it
    /// stays in the log (retried) until the file is moved away.
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: ByteSize,
    /// TLS for an https:// uri: the CA to trust, a client certificate.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsClientConfig>,
}

fn default_dead_letter_max_bytes() -> ByteSize {
    ByteSize::gib(1)
}

impl HttpSinkConfig {
    fn check_config(&self, check: &mut dyn Checks) {
        if !(self.uri.starts_with("http://") || self.uri.starts_with("https://")) {
            check.error(&["uri"], "must start with http:// or https://");
        } else if let Err(error) = check_uri(&self.uri) {
            check.error(&["uri"], error);
        }
        self.compression.check(check, "compression");
        if self.batch.max_records == 0 {
            check.error(&["batch", "max_records"], "must be at least 1");
        }
        if self.batch.max_bytes.bytes() == 0 {
            check.error(&["batch", "max_bytes"], "must be at least 1 byte");
        }
        match self.max_in_flight {
            Some(0) => check.error(&["max_in_flight"], "must be at least 1"),
            Some(n) if n > 1 && self.protocol != HttpProtocol::Shipper => check.error(
                &["max_in_flight"],
                "more than 1 needs protocol \"shipper\" (a generic endpoint cannot keep requests in order)",
            ),
            _ => {}
        }
        if self.timeout_ms == 0 {
            check.error(&["timeout_ms"], "must be at least 1");
        }
        if self.connect_timeout_ms == 0 {
            check.error(&["connect_timeout_ms"], "must be at least 1");
        }
        if self.retry.initial_ms == 0 {
            check.error(&["retry", "initial_ms"], "must be at least 1");
        }
        if self.retry.max_ms < self.retry.initial_ms {
            check.error(&["retry", "max_ms"], "must be at least `initial_ms`");
        }
        if self.retry.attempts == 0 {
            check.error(&["retry", "attempts"], "must be at least 1");
        }
        if self.dead_letter_max_bytes.bytes() == 0 {
            check.error(&["dead_letter_max_bytes"], "must be at least 1 byte");
        }
        if let Some(tls) = &self.tls {
            if self.uri.starts_with("http://") {
                check.error(&["tls"], "needs an https:// uri");
            }
            tls.check(check);
        }
        if self.dead_letter.as_deref() == Some("") {
            check.error(&["dead_letter"], "must not be empty");
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                check.error(&["headers", name], "is not a valid header name");
            } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                check.error(&["headers", name], "is set by the sink");
            } else if lower == "authorization" && self.auth.is_some() {
                check.error(&["headers", name], "conflicts with `auth`");
            }
            if axum::http::HeaderValue::from_str(value).is_err() {
                check.error(&["headers", name], "is not a valid header value");
            }
        }
        if let Some(auth) = &self.auth {
            match auth.strategy {
                AuthStrategy::Bearer => {
                    match auth.token.as_deref() {
                        None | Some("") => {
                            check.error(&["auth", "token"], "strategy \"bearer\" needs a `token`")
                        }
                        // The sink sends it as `Authorization: Bearer TOKEN`.
                        Some(token) => {
                            if axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
                                .is_err()
                            {
                                check.error(
                                    &["auth", "token"],
                                    "is not a valid header value (no control characters or line breaks)",
                                );
                            }
                        }
                    }
                    if auth.user.is_some() || auth.password.is_some() {
                        check.error(
                            &["auth"],
                            "`user` and `password` are for strategy \"basic\"",
                        );
                    }
                }
                AuthStrategy::Basic => {
                    if auth.user.is_none() || auth.password.is_none() {
                        check.error(&["auth"], "strategy \"basic\" needs `user` and `password`");
                    }
                    if auth.token.is_some() {
                        check.error(&["auth", "token"], "`token` is for strategy \"bearer\"");
                    }
                }
            }
        }
    }
}

/// Checks an http sink's `uri` as the sink parses it, with the sink's own
/// constructor, which reads the uri first. It is handed `max_records = 0`
/// as well, so that past a good uri it stops at that check instead of
/// building its HTTP client (which reads the system's root certificates:
/// too slow for every config load); only an error about the uri counts.
fn check_uri(uri: &str) -> Result<(), String> {
    let mut options = HttpSinkOptions::new(uri);
    options.max_records = 0;
    match HttpSink::new(options) {
        Err(error) if error.to_string().starts_with("http sink: uri ") => Err(error.to_string()),
        Ok(_) | Err(_) => Ok(()),
    }
}

impl HttpSinkConfig {
    /// The sink's options.
    pub fn options(&self) -> HttpSinkOptions {
        let level = self.compression.effective_level();
        let auth = self.auth.as_ref().map(|auth| {
            let secret = |value: &Option<String>| value.clone().unwrap_or_default();
            match auth.strategy {
                AuthStrategy::Bearer => HttpAuth::Bearer {
                    token: secret(&auth.token),
                },
                AuthStrategy::Basic => HttpAuth::Basic {
                    user: secret(&auth.user),
                    password: secret(&auth.password),
                },
            }
        });
        HttpSinkOptions {
            uri: self.uri.clone(),
            protocol: self.protocol,
            compression: match self.compression.codec {
                Codec::None => HttpCompression::None,
                Codec::Zstd => HttpCompression::Zstd {
                    level: level.unwrap_or(3),
                },
                Codec::Gzip => HttpCompression::Gzip {
                    level: level.unwrap_or(6).clamp(1, 9) as u32,
                },
            },
            max_records: self.batch.max_records,
            max_bytes: self.batch.max_bytes.bytes(),
            max_in_flight: self.max_in_flight.unwrap_or(match self.protocol {
                HttpProtocol::Shipper => 4,
                HttpProtocol::Ndjson | HttpProtocol::Json => 1,
            }),
            auth,
            headers: self.headers.clone().into_iter().collect(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            retry: RetryOptions {
                initial: Duration::from_millis(self.retry.initial_ms),
                max: Duration::from_millis(self.retry.max_ms),
                attempts: self.retry.attempts,
            },
            on_rejected: self.on_rejected,
            dead_letter: self.dead_letter.as_ref().map(PathBuf::from),
            dead_letter_max_bytes: self.dead_letter_max_bytes.bytes(),
            tls: None,
        }
    }
}

impl crate::config::Named for HttpSinkConfig {
    const TYPE: &'static str = "http";
}

impl SinkComponent for HttpSinkConfig {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn check(&self, checks: &mut dyn Checks) {
        self.check_config(checks);
    }

    fn batch(&self) -> Option<BatchPolicy> {
        (self.batch.max_age_ms > 0).then(|| BatchPolicy {
            max_age: Duration::from_millis(self.batch.max_age_ms),
            max_records: self.batch.max_records,
            max_bytes: self.batch.max_bytes.bytes(),
        })
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let mut options = self.options();
        if let Some(tls) = &self.tls {
            options.tls = Some(
                crate::tls::client_config(tls, &[b"http/1.1"], cx.name)
                    .map_err(|e| format!("tls: {e}"))?,
            );
        }
        Ok(Box::new(HttpSink::new(options).map_err(|e| e.to_string())?))
    }
}
