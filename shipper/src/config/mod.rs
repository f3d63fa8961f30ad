//! The config file: one TOML file naming sources, transforms and sinks,
//! wired by `inputs`, with `${VAR}` substitution from the environment.
//! `docs/config.md` describes every key.
//!
//! [`parse`] reports every problem it finds, each with the dotted key path
//! and the line of the file, instead of stopping at the first:
//!
//! ```
//! let text = "[sinks.out]\ntype = \"blackhole\"\ninputs = [\"nowhere\"]\n";
//! let invalid = shipper::config::parse(text, &|_| None).unwrap_err();
//! let first = &invalid.errors().next().unwrap();
//! assert_eq!(first.to_string(), "3: sinks.out.inputs: `nowhere` is not the name of a source or transform");
//! ```
//!
//! How the line numbers are found: the text is parsed with toml's spanned
//! document (`toml::de::DeTable`), and each section or component is
//! deserialized from its own part of it, so every serde error carries the
//! byte span of the key or value it is about. A failed deserialization is
//! retried without the offending entry (see `document.rs`) to find the next
//! error. Checks that span several keys find their lines by walking the
//! document along the key path. Spans of the interpolated text are mapped
//! back to the file as written (see `interpolate.rs`).

mod diagnostic;
pub(crate) mod document;
mod interpolate;
mod plugin;
mod sinks;
mod sources;
mod tables;
mod transforms;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shipper_core::log::{Durability, LogOptions, OnDiskFull, WhenFull};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use diagnostic::{Diagnostic, Severity};
pub use interpolate::{interpolate, Interpolated, InterpolationError};
pub use plugin::PluginComponent;
use shipper_components::config as values;
pub use shipper_components::config::{parse_byte_size, ByteSize};
pub use sinks::SinkConfig;
pub use sources::SourceConfig;
pub use transforms::TransformConfig;
pub use values::{Codec, Compression, DurationMs, FieldValue, Pattern, MAX_DURATION_MS};

pub(crate) use diagnostic::KeyPath;
use document::{get, without_keys, Node, Reporter};
use validate::{Checker, Component, Kind};
use values::duration_ms;

/// A whole, valid config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The log, the cursors and the producer id live here.
    pub data_dir: PathBuf,
    /// At SIGTERM: how long sources get to stop, the log to flush and the
    /// sinks to drain (each), before shipper stops anyway.
    pub shutdown_timeout_ms: u64,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub logging: LoggingConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub transforms: BTreeMap<String, TransformConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            shutdown_timeout_ms: 30_000,
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            logging: LoggingConfig::default(),
            sources: BTreeMap::new(),
            transforms: BTreeMap::new(),
            sinks: BTreeMap::new(),
        }
    }
}

impl Config {
    /// The options to open the log with.
    pub fn log_options(&self) -> LogOptions {
        self.log.options()
    }

    /// `shutdown_timeout_ms` as a duration.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shutdown_timeout_ms)
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

/// `when_full`: what appends do when the log reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFullPolicy {
    #[default]
    Block,
    DropOldest,
}

/// `durability`: when appended records are flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityPolicy {
    Always,
    #[default]
    Interval,
    Never,
}

/// `[log]`: the segmented log on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub segment_bytes: ByteSize,
    /// The disk budget for all segments.
    pub max_bytes: ByteSize,
    pub when_full: WhenFullPolicy,
    pub durability: DurabilityPolicy,
    /// Flush period under `durability = "interval"`.
    #[serde(deserialize_with = "duration_ms")]
    pub interval_ms: u64,
    /// Train a zstd dictionary per stream from its first records.
    pub dictionary: Option<DictionaryConfig>,
    /// The zstd level chunks are compressed with, where they are produced.
    pub zstd_level: i32,
    /// Threads of the process's compression pool; 0: one per core.
    pub compression_threads: u32,
}

/// `[log] dictionary = { sample_records = 2000, max_bytes = "64KiB" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DictionaryConfig {
    /// Records sampled before training.
    pub sample_records: u32,
    /// The largest dictionary.
    pub max_bytes: ByteSize,
}

impl Default for DictionaryConfig {
    fn default() -> Self {
        let training = shipper_core::chunk::DictionaryTraining::default();
        DictionaryConfig {
            sample_records: training.sample_records as u32,
            max_bytes: ByteSize(training.max_bytes as u64),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        let options = LogOptions::default();
        LogConfig {
            segment_bytes: ByteSize(options.segment_bytes),
            max_bytes: ByteSize(options.max_bytes),
            when_full: WhenFullPolicy::Block,
            durability: DurabilityPolicy::Interval,
            interval_ms: 100,
            dictionary: None,
            zstd_level: 1,
            compression_threads: 0,
        }
    }
}

impl LogConfig {
    /// The options to open the log with; what the config does not name
    /// keeps the engine's default.
    pub fn options(&self) -> LogOptions {
        LogOptions {
            segment_bytes: self.segment_bytes.bytes(),
            max_bytes: self.max_bytes.bytes(),
            when_full: match self.when_full {
                WhenFullPolicy::Block => WhenFull::Block,
                WhenFullPolicy::DropOldest => WhenFull::DropOldest,
            },
            durability: match self.durability {
                DurabilityPolicy::Always => Durability::Always,
                DurabilityPolicy::Interval => {
                    Durability::Interval(Duration::from_millis(self.interval_ms))
                }
                DurabilityPolicy::Never => Durability::Never,
            },
            // A full disk is backpressure, as the budget is: sources pause
            // and resume by themselves, `/health` says why.
            on_disk_full: OnDiskFull::Wait,
            ..LogOptions::default()
        }
    }

    /// The limits `Log::open` enforces, checked here so `validate` finds them.
    fn check(&self, check: &mut Checker<'_, '_, '_>) {
        if self.compression_threads > 256 {
            check.error(
                &["compression_threads"],
                format!(
                    "must be 0 (one per core) to 256, not {}",
                    self.compression_threads
                ),
            );
        }
        if !(1..=19).contains(&self.zstd_level) {
            check.error(
                &["zstd_level"],
                format!("must be 1 to 19, not {}", self.zstd_level),
            );
        }
        let min_segment = (shipper_core::log::segment::SEGMENT_HEADER_LEN + 4096) as u64;
        let segment = self.segment_bytes.bytes();
        if segment < min_segment || segment > 1 << 40 {
            check.error(
                &["segment_bytes"],
                format!(
                    "must be between {min_segment} bytes and 1TiB, got {}",
                    self.segment_bytes
                ),
            );
        } else if self.max_bytes.bytes() < 3 * segment {
            check.error(
                &["max_bytes"],
                format!(
                    "must be at least 3 × segment_bytes ({}): one active segment, one prepared and one to drain; got {}",
                    ByteSize(3 * segment),
                    self.max_bytes
                ),
            );
        }
        if self.durability == DurabilityPolicy::Interval && self.interval_ms == 0 {
            check.error(&["interval_ms"], "must be at least 1");
        }
        if let Some(dictionary) = &self.dictionary {
            if dictionary.sample_records < 10 {
                check.error(&["dictionary", "sample_records"], "must be at least 10");
            }
            if !(1024..=1 << 20).contains(&dictionary.max_bytes.bytes()) {
                check.error(
                    &["dictionary", "max_bytes"],
                    "must be between 1KiB and 1MiB",
                );
            }
        }
    }

    /// How emitters train dictionaries, if they do.
    pub fn dictionary_training(&self) -> Option<shipper_core::chunk::DictionaryTraining> {
        self.dictionary
            .map(|d| shipper_core::chunk::DictionaryTraining {
                sample_records: d.sample_records as usize,
                max_bytes: d.max_bytes.bytes() as usize,
            })
    }
}

/// `[admin]`: the HTTP endpoint for `/health`, `/metrics` and
/// `POST /reload`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// TLS for the endpoint.
    pub tls: Option<shipper_components::tls::TlsListenerConfig>,
    /// Bearer tokens for `POST /reload` (and `/metrics` beyond loopback).
    pub auth: Option<shipper_components::listen::auth::InboundAuth>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 8686)),
            tls: None,
            auth: None,
        }
    }
}

/// `[logging] level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// `[logging] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// `[logging]`: shipper's own log on stderr (`RUST_LOG` overrides the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

/// A config and the warnings it raised.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Why a config is not valid: every error, and the warnings, in line order.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read at all.
    #[error("reading config {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read and is not a valid config.
    #[error("config {} is not valid:\n{invalid}", path.display())]
    Invalid { path: PathBuf, invalid: Invalid },
}

/// The process environment, for `${VAR}`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads, interpolates (from the process environment) and checks the
/// config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_bytes(&bytes, &process_env).map_err(|invalid| LoadError::Invalid {
        path: path.to_owned(),
        invalid,
    })
}

/// [`parse`] for bytes that should be UTF-8 (TOML files are).
pub fn parse_bytes(
    bytes: &[u8],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Invalid> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, lookup),
        Err(error) => {
            let good = &bytes[..error.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Invalid {
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    line,
                    path: String::new(),
                    message: format!(
                        "the file is not UTF-8 (invalid byte at offset {})",
                        error.valid_up_to()
                    ),
                }],
            })
        }
    }
}

/// Interpolates `text` with `lookup` (`${VAR}`), parses and checks it.
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, Invalid> {
    let (interpolated, interpolation_errors) = interpolate::interpolate(text, lookup);
    let mut reporter = Reporter::new(text, &interpolated);
    let (root, syntax_errors) = DeTable::parse_recoverable(&interpolated.text);
    let root: Node<'_> = Spanned::new(root.span(), DeValue::Table(root.into_inner()));

    // A failed substitution left an empty value behind: report it at its key,
    // and keep quiet about what that empty value then breaks.
    let mut substitution_diagnostics = Vec::new();
    let mut tainted: Vec<KeyPath> = Vec::new();
    for error in &interpolation_errors {
        let at = error.interpolated_offset;
        let path = document::entry_at(root.get_ref(), &(at..at))
            .map(|keys| KeyPath::root().join_all(&keys))
            .unwrap_or_default();
        substitution_diagnostics.push(Diagnostic {
            severity: Severity::Error,
            line: reporter.line_of_original(error.offset),
            path: path.to_string(),
            message: error.message.clone(),
        });
        if !path.keys().is_empty() {
            tainted.push(path);
        }
    }

    let config = if syntax_errors.is_empty() {
        check_document(&root, &mut reporter)
    } else {
        // What follows a syntax error is guesswork: report the syntax
        // errors (the first of each line) and nothing else.
        let mut lines = BTreeSet::new();
        for error in &syntax_errors {
            let span = error.span().unwrap_or(0..0);
            if lines.insert(reporter.line_of(&span)) {
                reporter.error(&KeyPath::root(), &span, error.message().trim());
            }
        }
        None
    };

    let mut diagnostics = reporter.diagnostics;
    diagnostics.retain(|d| {
        !tainted.iter().any(|path| {
            let path = path.to_string();
            d.path == path || d.path.starts_with(&format!("{path}."))
        })
    });
    diagnostics.extend(substitution_diagnostics);
    diagnostics.sort_by_key(|d| (d.line, d.severity));
    let failed = diagnostics.iter().any(|d| d.severity == Severity::Error);
    match config {
        Some(config) if !failed => Ok(Loaded {
            config,
            warnings: diagnostics,
        }),
        _ => Err(Invalid { diagnostics }),
    }
}

const TOP_LEVEL_KEYS: [&str; 8] = [
    "data_dir",
    "shutdown_timeout_ms",
    "log",
    "admin",
    "logging",
    "sources",
    "transforms",
    "sinks",
];

/// Deserializes and checks the whole document; `None` if any part failed
/// to deserialize (the errors are in `reporter`).
fn check_document(root: &Node<'_>, reporter: &mut Reporter<'_>) -> Option<Config> {
    let DeValue::Table(table) = root.get_ref() else {
        return None;
    };
    let mut config = Config::default();
    let mut complete = true;
    let mut components = Vec::new();
    for (key, value) in table.iter() {
        let path = KeyPath::root().join(key.get_ref());
        let loaded = match key.get_ref().as_ref() {
            "data_dir" => reporter
                .deserialize(value, &path)
                .map(|dir| config.data_dir = dir),
            "shutdown_timeout_ms" => reporter
                .deserialize(value, &path)
                .map(|DurationMs(ms)| config.shutdown_timeout_ms = ms),
            "log" => reporter
                .deserialize(value, &path)
                .map(|log| config.log = log),
            "admin" => reporter
                .deserialize(value, &path)
                .map(|admin| config.admin = admin),
            "logging" => reporter
                .deserialize(value, &path)
                .map(|logging| config.logging = logging),
            "sources" => load_section(Kind::Source, value, reporter, &mut config, &mut components),
            "transforms" => load_section(
                Kind::Transform,
                value,
                reporter,
                &mut config,
                &mut components,
            ),
            "sinks" => load_section(Kind::Sink, value, reporter, &mut config, &mut components),
            other => {
                reporter.error(
                    &path,
                    &key.span(),
                    format!(
                        "unknown key `{other}`, expected one of {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                );
                None
            }
        };
        complete &= loaded.is_some();
    }

    // Checks of values that deserialized: one table at a time.
    if table.iter().any(|(k, _)| k.get_ref() == "log") || config.log != LogConfig::default() {
        config.log.check(&mut Checker::new(
            reporter,
            root,
            KeyPath::root().join("log"),
        ));
    }
    validate::check_data_dir(
        &config.data_dir,
        &mut Checker::new(reporter, root, KeyPath::root()),
    );
    for (name, source) in &config.sources {
        source.check(&mut Checker::new(
            reporter,
            root,
            KeyPath::root().join("sources").join(name),
        ));
    }
    for (name, transform) in &config.transforms {
        let mut check = Checker::new(
            reporter,
            root,
            KeyPath::root().join("transforms").join(name),
        );
        transform.check(&mut check);
        for input in transform.inputs() {
            if config
                .sources
                .get(input)
                .is_some_and(|source| !source.transformable())
            {
                check.error(
                    &["inputs"],
                    format!(
                        "`{input}` is a `shipper` source: it stores received chunks as they are, compressed, so no transform can read it; connect sinks to it directly"
                    ),
                );
            }
        }
    }
    // What a sink must have to itself (a nats subject, a file): the first
    // in the file keeps it.
    let mut claimed: BTreeMap<String, &str> = BTreeMap::new();
    for (name, sink) in &config.sinks {
        let mut check = Checker::new(reporter, root, KeyPath::root().join("sinks").join(name));
        sink.check(&mut check);
        let SinkConfig::Builtin(builtin) = sink else {
            continue;
        };
        for (key, what) in builtin.exclusive() {
            if let Some(other) = claimed.insert(what.clone(), name) {
                check.error(
                    &[key],
                    format!("sink `{other}` has {what} already; each sink needs one of its own"),
                );
            }
        }
    }
    validate::check_graph(&components, reporter);
    {
        let admin = &config.admin;
        let mut check = Checker::new(reporter, root, KeyPath::root().join("admin"));
        if let Some(tls) = &admin.tls {
            tls.check(&mut check);
        }
        if let Some(auth) = &admin.auth {
            auth.check(&mut check, false);
        }
        let mutual_tls = admin.tls.as_ref().is_some_and(|tls| tls.verify_client);
        if !admin.address.ip().is_loopback() && admin.auth.is_none() && !mutual_tls {
            check.warning(
                &["address"],
                format!(
                    "{} is beyond loopback and the endpoint has neither `auth` nor `tls.verify_client`: POST /reload is refused, and anyone who reaches it can read /metrics",
                    admin.address
                ),
            );
        }
    }
    let mut listeners = vec![(
        KeyPath::root().join("admin").join("address"),
        validate::Listener::Tcp(config.admin.address),
    )];
    for (name, source) in &config.sources {
        if let Some((key, listener)) = source.listener() {
            let open_beyond_loopback = match &listener {
                validate::Listener::Tcp(address) | validate::Listener::Udp(address) => {
                    !address.ip().is_loopback()
                }
                validate::Listener::Unix(_) => false,
            };
            if open_beyond_loopback && !source.secured() {
                let mut check =
                    Checker::new(reporter, root, KeyPath::root().join("sources").join(name));
                check.warning(
                    &[key],
                    format!(
                        "{listener} is beyond loopback with neither `tls` nor `auth`: anyone who reaches it can send records, in the clear"
                    ),
                );
            }
            listeners.push((
                KeyPath::root().join("sources").join(name).join(key),
                listener,
            ));
        }
    }
    validate::check_listeners(&listeners, root, reporter);
    complete.then_some(config)
}

/// Loads `[sources.*]`, `[transforms.*]` or `[sinks.*]`; `None` if any
/// component failed.
fn load_section(
    kind: Kind,
    section: &Node<'_>,
    reporter: &mut Reporter<'_>,
    config: &mut Config,
    components: &mut Vec<Component>,
) -> Option<()> {
    let section_path = KeyPath::root().join(kind.section());
    let DeValue::Table(table) = section.get_ref() else {
        reporter.error(
            &section_path,
            &section.span(),
            format!(
                "expected a table of {}s, like [{}.NAME]",
                kind.noun(),
                kind.section()
            ),
        );
        return None;
    };
    let types: Vec<&str> = match kind {
        Kind::Source => crate::components::type_names(crate::components::SOURCES),
        Kind::Transform => crate::components::type_names(crate::components::TRANSFORMS),
        Kind::Sink => crate::components::type_names(crate::components::SINKS),
    };
    let mut complete = true;
    for (name, node) in table.iter() {
        let name_str: &str = name.get_ref();
        let path = section_path.join(name_str);
        if !matches!(node.get_ref(), DeValue::Table(_)) {
            reporter.error(
                &path,
                &node.span(),
                format!("expected a table with a `type` key, like [{path}]"),
            );
            complete = false;
            continue;
        }
        components.push(Component::from_node(kind, name_str, name.span(), node));
        if get(node.get_ref(), &["plugin".to_owned()]).is_some() {
            complete &= load_plugin(kind, name_str, node, &path, reporter, config).is_some();
            continue;
        }
        let type_name = match get(node.get_ref(), &["type".to_owned()]) {
            None => {
                reporter.error(
                    &path,
                    &name.span(),
                    format!(
                        "missing required key `type`, one of {}; or `plugin`, a plugin library",
                        types.join(", ")
                    ),
                );
                complete = false;
                continue;
            }
            Some(value) => match value.get_ref().as_str() {
                Some(type_name) if types.contains(&type_name) => type_name.to_owned(),
                found => {
                    let what = match found {
                        Some(other) => format!("unknown {} type `{other}`", kind.noun()),
                        None => format!("expected a string, found {}", value.get_ref().type_str()),
                    };
                    reporter.error(
                        &path.join("type"),
                        &value.span(),
                        format!("{what}, expected one of {}", types.join(", ")),
                    );
                    complete = false;
                    continue;
                }
            },
        };
        let body = without_keys(node, &["type"]);
        let name = name_str.to_owned();
        let loaded = match kind {
            Kind::Source => load_source(&type_name, &body, &path, reporter).map(|source| {
                config.sources.insert(name, source);
            }),
            Kind::Transform => {
                load_transform(&type_name, &body, &path, reporter).map(|transform| {
                    config.transforms.insert(name, transform);
                })
            }
            Kind::Sink => load_sink(&type_name, &body, &path, reporter).map(|sink| {
                config.sinks.insert(name, sink);
            }),
        };
        complete &= loaded.is_some();
    }
    complete.then_some(())
}

/// Loads a component with a `plugin` key; `type`, if given, must say
/// `plugin`.
fn load_plugin(
    kind: Kind,
    name: &str,
    node: &Node<'_>,
    path: &KeyPath,
    reporter: &mut Reporter<'_>,
    config: &mut Config,
) -> Option<()> {
    if let Some(value) = get(node.get_ref(), &["type".to_owned()]) {
        if value.get_ref().as_str() != Some(PluginComponent::TYPE) {
            reporter.error(
                &path.join("type"),
                &value.span(),
                "a component with `plugin` gets its type from the library: leave `type` out",
            );
            return None;
        }
    }
    let body = without_keys(node, &["type"]);
    let plugin: PluginComponent = reporter.deserialize(&body, path)?;
    let name = name.to_owned();
    match kind {
        Kind::Source => config
            .sources
            .insert(name, SourceConfig::Plugin(plugin))
            .map(drop),
        Kind::Transform => config
            .transforms
            .insert(name, TransformConfig::Plugin(plugin))
            .map(drop),
        Kind::Sink => config
            .sinks
            .insert(name, SinkConfig::Plugin(plugin))
            .map(drop),
    };
    Some(())
}

// The variant is chosen by hand from `type` rather than by
// `#[serde(tag = "type")]`: serde buffers an internally tagged enum before
// choosing the variant, and errors from the buffer lose their spans.

fn load_source(
    type_name: &str,
    body: &Node<'_>,
    path: &KeyPath,
    reporter: &mut Reporter<'_>,
) -> Option<SourceConfig> {
    let kind = crate::components::find(crate::components::SOURCES, type_name)?;
    (kind.parse)(reporter, body, path).map(SourceConfig::Builtin)
}

fn load_transform(
    type_name: &str,
    body: &Node<'_>,
    path: &KeyPath,
    reporter: &mut Reporter<'_>,
) -> Option<TransformConfig> {
    let kind = crate::components::find(crate::components::TRANSFORMS, type_name)?;
    (kind.parse)(reporter, body, path).map(TransformConfig::Builtin)
}

fn load_sink(
    type_name: &str,
    body: &Node<'_>,
    path: &KeyPath,
    reporter: &mut Reporter<'_>,
) -> Option<SinkConfig> {
    let kind = crate::components::find(crate::components::SINKS, type_name)?;
    (kind.parse)(reporter, body, path).map(SinkConfig::Builtin)
}
