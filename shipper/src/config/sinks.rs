//! `[sinks.NAME]`: where records go.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::bytesize::ByteSize;
use super::validate::Checker;
use super::values::{duration_ms, Codec, Compression};

/// A configured sink; the variant is chosen by the table's `type` key.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    Http(HttpSink),
    File(FileSink),
    Blackhole(BlackholeSink),
    Postgres(PostgresSink),
    Nats(NatsSink),
    Stdout(StdoutSink),
    /// A plugin library (`plugin = "PATH"`).
    Plugin(super::PluginComponent),
}

impl SinkConfig {
    /// The values `type` may take.
    pub const TYPES: [&'static str; 6] =
        ["http", "file", "blackhole", "postgres", "nats", "stdout"];

    /// The value of `type` that selects this variant.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Http(_) => "http",
            SinkConfig::File(_) => "file",
            SinkConfig::Blackhole(_) => "blackhole",
            SinkConfig::Postgres(_) => "postgres",
            SinkConfig::Nats(_) => "nats",
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::Plugin(_) => super::PluginComponent::TYPE,
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
            SinkConfig::Stdout(s) => &s.inputs,
            SinkConfig::Plugin(s) => &s.inputs,
        }
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>) {
        match self {
            SinkConfig::Http(http) => http.check(check),
            SinkConfig::File(file) => file.check(check),
            SinkConfig::Blackhole(_) => {}
            SinkConfig::Postgres(postgres) => postgres.check(check),
            SinkConfig::Nats(nats) => nats.check(check),
            SinkConfig::Stdout(_) => {}
            SinkConfig::Plugin(plugin) => plugin.check(check, true),
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

/// What an HTTP sink does with a batch refused for good (a `4xx` other
/// than 408 and 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRejected {
    /// Append it to the dead-letter file and move on.
    #[default]
    DeadLetter,
    /// Retry it like a 5xx.
    Retry,
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
}

fn default_dead_letter_max_bytes() -> ByteSize {
    ByteSize::gib(1)
}

impl HttpSink {
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
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
            Some(n) if n > 1 && self.protocol != Protocol::Shipper => check.error(
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
        if self.dead_letter.as_deref() == Some("") {
            check.error(&["dead_letter"], "must not be empty");
        }
        for (name, value) in &self.headers {
            use shipper_plugins::sinks::http::RESERVED_HEADERS;
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
    use shipper_plugins::sinks::http::{HttpSink, HttpSinkOptions};
    let mut options = HttpSinkOptions::new(uri);
    options.max_records = 0;
    match HttpSink::new(options) {
        Err(error) if error.to_string().starts_with("http sink: uri ") => Err(error.to_string()),
        Ok(_) | Err(_) => Ok(()),
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

impl FileSink {
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        use shipper_plugins::sinks::file::check_path;
        if self.path.is_empty() {
            check.error(&["path"], "must not be empty");
        } else if let Err(reason) = check_path(&self.path) {
            check.error(&["path"], reason);
        }
        // What `run` refuses of the file sink, as it words it.
        if self.encoding != Encoding::Ndjson {
            check.error(
                &["encoding"],
                "encoding \"json\" is not available in this build yet (use ndjson)",
            );
        }
        if self.compression.codec == Codec::Gzip {
            check.error(
                &["compression", "codec"],
                "gzip is not available in this build yet (use zstd or none)",
            );
        }
        self.compression.check(check, "compression");
    }
}

/// `type = "blackhole"`: acknowledges and discards, for benchmarks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSink {
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// `type = "stdout"`: records to standard output, for debugging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSink {
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
    /// The table for records (`name` or `schema.name`).
    pub table: String,
    /// A table per stream, named after it when the name is a plain
    /// identifier; `false`: every record into `table`.
    #[serde(default = "PostgresSink::default_true")]
    pub table_per_stream: bool,
    /// The high-water-mark table; default `shipper_hwm` in `table`'s schema.
    #[serde(default)]
    pub hwm_table: Option<String>,
    /// `CREATE TABLE IF NOT EXISTS` the tables the sink needs.
    #[serde(default = "PostgresSink::default_true")]
    pub create_tables: bool,
    #[serde(default = "default_timeout_ms", deserialize_with = "duration_ms")]
    pub timeout_ms: u64,
}

impl PostgresSink {
    fn default_true() -> bool {
        true
    }

    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        use shipper_plugins::sinks::postgres::{
            check_connection, check_hwm_table, check_table_name,
        };
        if self.connection.is_empty() {
            check.error(&["connection"], "must not be empty");
        } else if let Err(reason) = check_connection(&self.connection) {
            check.error(&["connection"], reason);
        }
        let table = check_table_name(&self.table);
        if let Err(reason) = &table {
            check.error(&["table"], reason);
        }
        let hwm_table = self.hwm_table.as_deref().map_or(Ok(()), check_table_name);
        if let Err(reason) = &hwm_table {
            check.error(&["hwm_table"], reason);
        }
        if table.is_ok() && hwm_table.is_ok() {
            if let Err(reason) = check_hwm_table(&self.table, self.hwm_table.as_deref()) {
                // Without `hwm_table` the default collides with `table`.
                let key = if self.hwm_table.is_some() {
                    "hwm_table"
                } else {
                    "table"
                };
                check.error(&[key], reason);
            }
        }
        if self.timeout_ms == 0 {
            check.error(&["timeout_ms"], "must be at least 1");
        }
    }
}

impl std::fmt::Debug for PostgresSink {
    /// The connection string may hold a password: never log it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("inputs", &self.inputs)
            .field("connection", &"<redacted>")
            .field("table", &self.table)
            .field("table_per_stream", &self.table_per_stream)
            .field("hwm_table", &self.hwm_table)
            .field("create_tables", &self.create_tables)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// What one message of a nats sink carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsMessage {
    #[default]
    Record,
    /// A stored chunk, compressed, as the shipper protocol sends it.
    Chunk,
}

/// `type = "nats"`: publishes to NATS JetStream, exactly once, on the
/// subject `<subject>.<producer id>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSink {
    #[serde(default)]
    pub inputs: Vec<String>,
    pub url: String,
    pub subject: String,
    #[serde(default)]
    pub stream: Option<String>,
    /// Create the stream when no stream captures `<subject>.*`.
    #[serde(default = "NatsSink::default_create_stream")]
    pub create_stream: bool,
    /// The duplicate window of a stream the sink creates.
    #[serde(
        default = "NatsSink::default_duplicate_window_ms",
        deserialize_with = "duration_ms"
    )]
    pub duplicate_window_ms: u64,
    #[serde(default)]
    pub message: NatsMessage,
    /// Messages published and not yet acknowledged, at most.
    #[serde(default = "NatsSink::default_max_pending")]
    pub max_pending: usize,
    #[serde(
        default = "NatsSink::default_timeout_ms",
        deserialize_with = "duration_ms"
    )]
    pub timeout_ms: u64,
}

impl NatsSink {
    fn default_create_stream() -> bool {
        true
    }

    fn default_duplicate_window_ms() -> u64 {
        120_000
    }

    fn default_max_pending() -> usize {
        1024
    }

    fn default_timeout_ms() -> u64 {
        10_000
    }

    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        use shipper_plugins::sinks::nats::{check_stream_name, check_subject, check_url};
        // The client is built without websockets.
        if !["nats://", "tls://"]
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
        {
            check.error(&["url"], "must start with nats:// or tls://");
        } else if let Err(message) = check_url(&self.url) {
            check.error(&["url"], message);
        }
        if let Err(message) = check_subject(&self.subject) {
            check.error(&["subject"], message);
        }
        if let Some(Err(message)) = self.stream.as_deref().map(check_stream_name) {
            check.error(&["stream"], message);
        }
        if self.duplicate_window_ms == 0 {
            check.error(&["duplicate_window_ms"], "must be at least 1");
        }
        if self.max_pending == 0 {
            check.error(&["max_pending"], "must be at least 1");
        }
        if self.timeout_ms == 0 {
            check.error(&["timeout_ms"], "must be at least 1");
        }
    }
}
