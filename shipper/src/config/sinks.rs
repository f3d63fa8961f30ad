//! `[sinks.NAME]`: where records go.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::bytesize::ByteSize;
use super::validate::Checker;
use super::values::Compression;

/// A configured sink; the variant is chosen by the table's `type` key.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    Http(HttpSink),
    File(FileSink),
    Blackhole(BlackholeSink),
    Postgres(PostgresSink),
    Nats(NatsSink),
}

impl SinkConfig {
    /// The values `type` may take.
    pub const TYPES: [&'static str; 5] = ["http", "file", "blackhole", "postgres", "nats"];

    /// The value of `type` that selects this variant.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Http(_) => "http",
            SinkConfig::File(_) => "file",
            SinkConfig::Blackhole(_) => "blackhole",
            SinkConfig::Postgres(_) => "postgres",
            SinkConfig::Nats(_) => "nats",
        }
    }

    /// The sources and transforms this sink reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::Http(s) => &s.inputs,
            SinkConfig::File(s) => &s.inputs,
            SinkConfig::Blackhole(s) => &s.inputs,
            SinkConfig::Postgres(s) => &s.inputs,
            SinkConfig::Nats(s) => &s.inputs,
        }
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>) {
        match self {
            SinkConfig::Http(http) => http.check(check),
            SinkConfig::File(file) => {
                if file.path.is_empty() {
                    check.error(&["path"], "must not be empty");
                }
                file.compression.check(check, "compression");
            }
            SinkConfig::Blackhole(_) => {}
            SinkConfig::Postgres(postgres) => {
                if postgres.connection.is_empty() {
                    check.error(&["connection"], "must not be empty");
                }
                if postgres.table.is_empty() {
                    check.error(&["table"], "must not be empty");
                }
            }
            SinkConfig::Nats(nats) => {
                if !["nats://", "tls://", "ws://", "wss://"]
                    .iter()
                    .any(|scheme| nats.url.starts_with(scheme))
                {
                    check.error(&["url"], "must start with nats:// or tls://");
                }
                if nats.subject.is_empty() {
                    check.error(&["subject"], "must not be empty");
                }
            }
        }
    }
}

/// The body format of an HTTP sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Stored chunks as they are, with producer id and offsets.
    #[default]
    Shipper,
    Ndjson,
    /// A JSON array of records.
    Json,
}

/// When a sink sends what it has gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[serde(default = "Batch::default_max_records")]
    pub max_records: u64,
    #[serde(default = "Batch::default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "Batch::default_max_age_ms")]
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

/// `type = "http"`: POSTs batches to an HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    #[serde(default)]
    pub inputs: Vec<String>,
    pub uri: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "Compression::zstd")]
    pub compression: Compression,
    #[serde(default)]
    pub batch: Batch,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl HttpSink {
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        if !(self.uri.starts_with("http://") || self.uri.starts_with("https://")) {
            check.error(&["uri"], "must start with http:// or https://");
        }
        self.compression.check(check, "compression");
        if self.batch.max_records == 0 {
            check.error(&["batch", "max_records"], "must be at least 1");
        }
        if self.batch.max_bytes.bytes() == 0 {
            check.error(&["batch", "max_bytes"], "must be at least 1 byte");
        }
        if self.timeout_ms == 0 {
            check.error(&["timeout_ms"], "must be at least 1");
        }
        if let Some(auth) = &self.auth {
            match auth.strategy {
                AuthStrategy::Bearer => {
                    if auth.token.as_deref().is_none_or(str::is_empty) {
                        check.error(&["auth", "token"], "strategy \"bearer\" needs a `token`");
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

/// Line format of a file sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Ndjson,
    Json,
}

/// `type = "file"`: appends records to local files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Output path; strftime fields (`%Y-%m-%d`) name a file per period.
    pub path: String,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default = "Compression::none")]
    pub compression: Compression,
}

/// `type = "blackhole"`: acknowledges and discards, for benchmarks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSink {
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// `type = "postgres"`: inserts rows, exactly once.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSink {
    #[serde(default)]
    pub inputs: Vec<String>,
    /// A libpq connection string or URL; it may hold a password.
    pub connection: String,
    pub table: String,
}

impl std::fmt::Debug for PostgresSink {
    /// The connection string may hold a password: never log it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("inputs", &self.inputs)
            .field("connection", &"<redacted>")
            .field("table", &self.table)
            .finish()
    }
}

/// `type = "nats"`: publishes to a NATS JetStream subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSink {
    #[serde(default)]
    pub inputs: Vec<String>,
    pub url: String,
    pub subject: String,
    #[serde(default)]
    pub stream: Option<String>,
}
