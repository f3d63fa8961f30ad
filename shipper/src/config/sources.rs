//! `[sources.NAME]`: where records come from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Checker;
use shipper_plugins::component::ByteSize;
use shipper_plugins::component::{duration_ms, Pattern};

/// A configured source; the variant is chosen by the table's `type` key.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    File(FileSource),
    Socket(SocketSource),
    Http(HttpSource),
    Mqtt(MqttSource),
    Stdin(StdinSource),
    Generator(GeneratorSource),
    Shipper(ShipperSource),
    /// Records an application inserts through [`crate::ingest`].
    Sdk(SdkSource),
    /// A plugin library (`plugin = "PATH"`).
    Plugin(super::PluginComponent),
}

impl SourceConfig {
    /// The values `type` may take.
    pub const TYPES: [&'static str; 8] = [
        "file",
        "socket",
        "http",
        "mqtt",
        "stdin",
        "generator",
        "shipper",
        "sdk",
    ];

    /// The value of `type` that selects this variant.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Socket(_) => "socket",
            SourceConfig::Http(_) => "http",
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::Stdin(_) => "stdin",
            SourceConfig::Generator(_) => "generator",
            SourceConfig::Shipper(_) => "shipper",
            SourceConfig::Sdk(_) => "sdk",
            SourceConfig::Plugin(_) => super::PluginComponent::TYPE,
        }
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>) {
        match self {
            SourceConfig::File(file) => file.check(check),
            SourceConfig::Socket(socket) => socket.check(check),
            SourceConfig::Http(http) => {
                check_route_path(check, &http.path);
                http.check(check);
            }
            SourceConfig::Mqtt(mqtt) => mqtt.check(check),
            SourceConfig::Stdin(_) | SourceConfig::Sdk(_) => {}
            SourceConfig::Generator(generator) => generator.check(check),
            SourceConfig::Shipper(shipper) => shipper.check(check),
            SourceConfig::Plugin(plugin) => plugin.check(check, false),
        }
    }

    /// What this source listens on, with the key that says where.
    pub(super) fn listener(&self) -> Option<(&'static str, super::validate::Listener)> {
        use super::validate::Listener;
        match self {
            SourceConfig::Http(http) => Some(("address", Listener::Tcp(http.address))),
            SourceConfig::Shipper(shipper) => Some(("address", Listener::Tcp(shipper.address))),
            SourceConfig::Socket(socket) => match (socket.mode, socket.address, &socket.path) {
                (SocketMode::Tcp, Some(address), _) => Some(("address", Listener::Tcp(address))),
                (SocketMode::Udp, Some(address), _) => Some(("address", Listener::Udp(address))),
                (SocketMode::Unix, _, Some(path)) => Some(("path", Listener::Unix(path.clone()))),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The `path` an HTTP listener routes (axum): a literal path. axum takes
/// `{name}` and `{*rest}` as captures and refuses, with a panic when the
/// source starts, unbalanced braces and segments starting with `:` or `*`.
fn check_route_path(check: &mut Checker<'_, '_, '_>, path: &str) {
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

/// Where a file source starts in a file it has not read before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// What happens to a line longer than `max_line_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLongLine {
    #[default]
    Truncate,
    Drop,
}

/// `multiline = { start_pattern = "^\\d{4}-", timeout_ms = 1000 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Multiline {
    /// A line matching this starts a new record; others join the previous one.
    pub start_pattern: Pattern,
    /// A record waiting for its next line is emitted after this long.
    #[serde(
        default = "default_multiline_timeout_ms",
        deserialize_with = "duration_ms"
    )]
    pub timeout_ms: u64,
}

fn default_multiline_timeout_ms() -> u64 {
    1000
}

fn default_max_line_bytes() -> ByteSize {
    ByteSize::mib(1)
}

/// `type = "file"`: tails files matching glob patterns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub read_from: ReadFrom,
    #[serde(default)]
    pub multiline: Option<Multiline>,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    #[serde(default)]
    pub on_long_line: OnLongLine,
    /// Lines that are not valid UTF-8: kept as bytes or replaced.
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
    /// How often the patterns are expanded to find new files.
    #[serde(default = "default_glob_interval_ms", deserialize_with = "duration_ms")]
    pub glob_interval_ms: u64,
    /// How long a file that no longer matches (rotated away, deleted) is
    /// still read after it last grew.
    #[serde(default = "default_rotate_wait_ms", deserialize_with = "duration_ms")]
    pub rotate_wait_ms: u64,
    /// Bytes at the start of a file that identify it with its inode.
    #[serde(default = "default_fingerprint_bytes")]
    pub fingerprint_bytes: u32,
    /// The most files tracked at once.
    #[serde(default = "default_max_files")]
    pub max_files: u32,
}

/// What happens to a line that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidUtf8 {
    #[default]
    Keep,
    Replace,
}

fn default_glob_interval_ms() -> u64 {
    1000
}

fn default_rotate_wait_ms() -> u64 {
    5000
}

fn default_fingerprint_bytes() -> u32 {
    256
}

fn default_max_files() -> u32 {
    1024
}

impl FileSource {
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        if self.include.is_empty() {
            check.error(&["include"], "needs at least one glob pattern");
        }
        if self.include.iter().any(String::is_empty) {
            check.error(&["include"], "a pattern is empty");
        }
        if self.max_line_bytes.bytes() == 0 {
            check.error(&["max_line_bytes"], "must be at least 1 byte");
        }
        if self.multiline.as_ref().is_some_and(|m| m.timeout_ms == 0) {
            check.error(&["multiline", "timeout_ms"], "must be at least 1");
        }
        if self.glob_interval_ms == 0 {
            check.error(&["glob_interval_ms"], "must be at least 1");
        }
        if !(1..=65535).contains(&self.fingerprint_bytes) {
            check.error(&["fingerprint_bytes"], "must be within 1..=65535");
        }
        if !(1..=2000).contains(&self.max_files) {
            check.error(&["max_files"], "must be within 1..=2000");
        }
        for (key, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            for pattern in patterns {
                if let Err(error) = glob::Pattern::new(pattern) {
                    check.error(&[key], format!("bad pattern {pattern:?}: {error}"));
                }
            }
        }
    }
}

/// Transport of a socket source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketMode {
    #[default]
    Tcp,
    Udp,
    Unix,
}

/// How a stream socket splits bytes into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    #[default]
    Newline,
    /// RFC 6587 octet counting: `LEN SP MSG`.
    OctetCounting,
}

/// How a socket source parses each record into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseFormat {
    /// Keep the bytes as they are.
    #[default]
    None,
    /// RFC 5424 or RFC 3164.
    Syslog,
    Json,
}

fn default_max_connections() -> u32 {
    u32::try_from(listener_defaults().max_connections).unwrap_or(u32::MAX)
}

/// `type = "socket"`: TCP, UDP or a Unix stream socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSource {
    #[serde(default)]
    pub mode: SocketMode,
    /// `IP:port` to listen on, for `tcp` and `udp`.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Socket file, for `unix`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub framing: Framing,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// A stream connection that sends nothing for this long is closed.
    #[serde(default = "default_idle_timeout_ms", deserialize_with = "duration_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_max_line_bytes")]
    pub max_frame_bytes: ByteSize,
    #[serde(default)]
    pub parse: ParseFormat,
}

// The listener keys' defaults are the plugins' own (`ListenerLimits`), so
// each number is written once.
fn listener_defaults() -> shipper_plugins::listen::ListenerLimits {
    shipper_plugins::listen::ListenerLimits::default()
}

fn default_idle_timeout_ms() -> u64 {
    listener_defaults().idle_timeout.as_millis() as u64
}

fn default_header_timeout_ms() -> u64 {
    listener_defaults().header_timeout.as_millis() as u64
}

fn default_body_timeout_ms() -> u64 {
    listener_defaults().body_timeout.as_millis() as u64
}

fn default_min_body_rate() -> ByteSize {
    ByteSize(listener_defaults().min_body_rate)
}

fn default_max_buffered_bytes() -> ByteSize {
    ByteSize(listener_defaults().max_buffered_bytes)
}

/// The connection and request limits an HTTP listener's keys give (see
/// `shipper_plugins::listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: u32,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub min_body_rate: ByteSize,
    pub max_buffered_bytes: ByteSize,
}

impl HttpLimits {
    /// As the plugins take them.
    pub fn limits(&self) -> shipper_plugins::listen::ListenerLimits {
        shipper_plugins::listen::ListenerLimits {
            max_connections: self.max_connections as usize,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            min_body_rate: self.min_body_rate.bytes(),
            max_buffered_bytes: self.max_buffered_bytes.bytes(),
            ..shipper_plugins::listen::ListenerLimits::default()
        }
    }

    fn check(&self, max_body_bytes: ByteSize, check: &mut Checker<'_, '_, '_>) {
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

impl SocketSource {
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        if self.mode == SocketMode::Unix {
            match &self.path {
                None => check.error(&["path"], "missing required key `path` (mode = \"unix\")"),
                Some(path) => super::validate::check_socket_path(path, check),
            }
            if self.address.is_some() {
                check.error(
                    &["address"],
                    "mode = \"unix\" listens on `path`, not `address`",
                );
            }
        } else {
            if self.address.is_none() {
                check.error(
                    &["address"],
                    "missing required key `address` (an IP:port, for mode = \"tcp\" or \"udp\")",
                );
            }
            if self.path.is_some() {
                check.error(
                    &["path"],
                    "`path` is for mode = \"unix\"; tcp and udp listen on `address`",
                );
            }
        }
        if self.mode == SocketMode::Udp && self.framing == Framing::OctetCounting {
            check.error(
                &["framing"],
                "octet_counting frames a stream; a UDP datagram is one record",
            );
        }
        if self.max_connections == 0 {
            check.error(&["max_connections"], "must be at least 1");
        }
        if self.idle_timeout_ms == 0 {
            check.error(&["idle_timeout_ms"], "must be at least 1");
        }
        if self.max_frame_bytes.bytes() == 0 {
            check.error(&["max_frame_bytes"], "must be at least 1 byte");
        }
    }
}

fn default_http_path() -> String {
    "/".to_owned()
}

fn default_max_body_bytes() -> ByteSize {
    ByteSize::mib(10)
}

/// `type = "http"`: accepts POSTs of NDJSON or JSON arrays.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// `IP:port` to listen on.
    pub address: SocketAddr,
    #[serde(default = "default_http_path")]
    pub path: String,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteSize,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(
        default = "default_header_timeout_ms",
        deserialize_with = "duration_ms"
    )]
    pub header_timeout_ms: u64,
    #[serde(default = "default_body_timeout_ms", deserialize_with = "duration_ms")]
    pub body_timeout_ms: u64,
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: ByteSize,
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: ByteSize,
}

impl HttpSource {
    /// Its listener's limits.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            body_timeout_ms: self.body_timeout_ms,
            min_body_rate: self.min_body_rate,
            max_buffered_bytes: self.max_buffered_bytes,
        }
    }

    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        if self.max_body_bytes.bytes() == 0 || self.max_body_bytes.bytes() > 1 << 30 {
            check.error(&["max_body_bytes"], "must be between 1 byte and 1GiB");
        }
        self.http_limits().check(self.max_body_bytes, check);
    }
}

/// `type = "shipper"`: receives chunks from other shippers' `http` sinks
/// (shipper's wire protocol, docs/protocol.md): an aggregator.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperSource {
    /// `IP:port` to listen on.
    pub address: SocketAddr,
    #[serde(default = "default_shipper_path")]
    pub path: String,
    /// A bearer token senders must present.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_shipper_max_bytes")]
    pub max_body_bytes: ByteSize,
    /// The largest decompressed body of one chunk.
    #[serde(default = "default_shipper_max_bytes")]
    pub max_chunk_bytes: ByteSize,
    /// How far each chunk's body is checked before it is stored.
    #[serde(default)]
    pub verify: ShipperVerify,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(
        default = "default_header_timeout_ms",
        deserialize_with = "duration_ms"
    )]
    pub header_timeout_ms: u64,
    #[serde(default = "default_body_timeout_ms", deserialize_with = "duration_ms")]
    pub body_timeout_ms: u64,
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: ByteSize,
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: ByteSize,
}

/// `verify` of a shipper source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipperVerify {
    /// The zstd frame's header and structure, no decompression.
    #[default]
    Frame,
    /// A bounded decompression of every body.
    Full,
}

impl std::fmt::Debug for ShipperSource {
    /// The token is a secret: never log it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperSource")
            .field("address", &self.address)
            .field("path", &self.path)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_chunk_bytes", &self.max_chunk_bytes)
            .field("verify", &self.verify)
            .field("limits", &self.http_limits())
            .finish()
    }
}

fn default_shipper_path() -> String {
    "/v1/chunks".into()
}

fn default_shipper_max_bytes() -> ByteSize {
    ByteSize::mib(64)
}

impl ShipperSource {
    /// Its listener's limits.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_connections,
            header_timeout_ms: self.header_timeout_ms,
            body_timeout_ms: self.body_timeout_ms,
            min_body_rate: self.min_body_rate,
            max_buffered_bytes: self.max_buffered_bytes,
        }
    }

    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        self.http_limits().check(self.max_body_bytes, check);
        check_route_path(check, &self.path);
        if self.token.as_deref().is_some_and(str::is_empty) {
            check.error(&["token"], "must not be empty (leave it out for no token)");
        }
        for (key, size) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_chunk_bytes", self.max_chunk_bytes),
        ] {
            if size.bytes() == 0 || size.bytes() > 1 << 30 {
                check.error(&[key], "must be between 1 byte and 1GiB");
            }
        }
    }
}

fn default_qos() -> u8 {
    1
}

/// The MQTT port when none is given.
pub const MQTT_DEFAULT_PORT: u16 = 1883;

/// `type = "mqtt"`: subscribes to topic filters on a broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSource {
    /// `mqtt://host:port`; or give `host` (and `port`) instead.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    pub topics: Vec<String>,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub client_id: Option<String>,
}

impl MqttSource {
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        use shipper_plugins::sources::mqtt;
        match (&self.url, &self.host) {
            (None, None) => check.error(&[], "needs `url` or `host`"),
            (Some(_), Some(_)) => check.error(&["host"], "give `url` or `host`, not both"),
            (Some(url), None) => {
                // The source's own parser (TLS, credentials, a path, a bad port).
                if let Err(message) = mqtt::parse_url(url) {
                    check.error(&["url"], message);
                }
                if self.port.is_some() {
                    check.error(&["port"], "with `url`, the port goes in the url");
                }
            }
            (None, Some(host)) => {
                if host.is_empty() {
                    check.error(&["host"], "must not be empty");
                }
            }
        }
        if self.port == Some(0) {
            check.error(&["port"], "must be 1 to 65535");
        }
        if self.client_id.as_deref() == Some("") {
            check.error(
                &["client_id"],
                "must not be empty (leave it out for shipper-NAME)",
            );
        }
        if self.topics.is_empty() {
            check.error(&["topics"], "needs at least one topic filter");
        }
        for topic in &self.topics {
            if let Err(message) = check_topic_filter(topic) {
                check.error(&["topics"], message);
            }
        }
        match self.qos {
            0 | 1 => {}
            2 => check.error(
                &["qos"],
                "qos 2 is not supported (the MQTT client cannot resume a QoS 2 exchange after a reconnect); use 1: records are acknowledged only once durable",
            ),
            other => check.error(&["qos"], format!("qos {other} is not 0 or 1")),
        }
    }
}

/// Checks one topic filter as the source does: `MqttSource::new` is given
/// that filter alone, with options otherwise valid, and refuses it if it is
/// not a valid MQTT filter (nothing is connected).
fn check_topic_filter(topic: &str) -> Result<(), String> {
    use shipper_plugins::sources::mqtt::{MqttOptions, MqttQos, MqttSource, DEFAULT_PORT};
    let options = MqttOptions {
        host: "localhost".into(),
        port: DEFAULT_PORT,
        client_id: "validate".into(),
        topics: vec![topic.to_owned()],
        qos: MqttQos::AtLeastOnce,
    };
    MqttSource::new(options, "validate")
        .map(drop)
        .map_err(|error| error.to_string())
}

/// `type = "sdk"`: the records an application embedding shipper inserts
/// ([`crate::ingest::Ingestor`]); `shipper run` has nothing to feed it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdkSource {}

/// `type = "stdin"`: lines from standard input.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSource {}

/// The records a generator source produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorFormat {
    /// JSON web access-log lines.
    #[default]
    AccessLog,
    /// JSON application events with nested fields.
    Events,
    /// JSON sensor readings.
    Iot,
}

/// The largest `record_bytes` of a generator source.
pub const GENERATOR_MAX_RECORD_BYTES: ByteSize = ByteSize::mib(1);

/// `type = "generator"`: synthetic records from a seeded corpus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSource {
    #[serde(default)]
    pub format: GeneratorFormat,
    /// Records to emit before the source ends; absent: until shutdown.
    #[serde(default)]
    pub count: Option<u64>,
    /// Records per second; absent: as fast as possible.
    #[serde(default)]
    pub rate: Option<u64>,
    #[serde(default)]
    pub seed: u64,
    /// Pad or trim records to about this size; absent: their natural size.
    #[serde(default)]
    pub record_bytes: Option<ByteSize>,
}

impl GeneratorSource {
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        if self.count == Some(0) {
            check.error(
                &["count"],
                "must be at least 1 (leave it out to run until stopped)",
            );
        }
        if self.rate == Some(0) {
            check.error(
                &["rate"],
                "must be at least 1 record per second (leave it out for as fast as possible)",
            );
        }
        match self.record_bytes {
            Some(bytes) if bytes.bytes() == 0 => {
                check.error(&["record_bytes"], "must be at least 1 byte");
            }
            Some(bytes) if bytes > GENERATOR_MAX_RECORD_BYTES => check.error(
                &["record_bytes"],
                format!("must be at most {GENERATOR_MAX_RECORD_BYTES}"),
            ),
            _ => {}
        }
    }
}
