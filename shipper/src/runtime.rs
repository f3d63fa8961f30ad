//! The runtime: builds the components a config names, runs sources into
//! the log and one delivery task per sink out of it, and shuts down in
//! order: stop sources, make the log durable, let sinks drain, close.
//!
//! [`run`] is built around a supervisor (`supervisor.rs`) that owns the
//! running sources and sinks by name, each with its own stop signal and
//! task. It applies reloads (SIGHUP, `POST /reload`; `reload.rs` decides
//! what changed) by stopping, then starting, only the components that
//! changed, and ends the run like a SIGTERM once every source has ended on
//! its own (standard input at its end, a generator with a `count`).
//!
//! Built today: the `file`, `stdin`, `socket`, `http`, `mqtt` and
//! `generator` sources, the `filter`, `sample` and `remap` transforms, and
//! the `blackhole`, `file`, `http`, `postgres` and `nats` sinks. A config naming any other component
//! type is refused at start with a clear error (the sinks issue adds them).
//!
//! Transforms run on the producing side, in the source's task, before
//! compression: each source's emitter carries the transforms that consume
//! it (and those that consume them), and a component's records are stored
//! under its own name only when some sink reads that component.

mod deliver;
mod reload;
mod stdin;
mod supervisor;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use shipper_core::chunk::ChunkOptions;
use shipper_core::emit::{Emitter, Route};
use shipper_core::log::Log;
use shipper_core::plugin::{BatchPolicy, Shutdown, Sink, Source, Transform};
use shipper_plugins::component::BuildContext;
use shipper_plugins::framing::lines::LineOptions;
use shipper_plugins::sources::file::{FileOptions, FileSource};
use shipper_plugins::sources::generator::{GeneratorOptions, GeneratorSource};
use shipper_plugins::sources::http::{HttpOptions, HttpSource};
use shipper_plugins::sources::mqtt::{self, MqttOptions, MqttQos, MqttSource};
use shipper_plugins::sources::shipper::{ShipperOptions, ShipperSource, Verify};
use shipper_plugins::sources::socket::{
    Listen, SocketFraming, SocketOptions, SocketParse, SocketSource,
};
use shipper_plugins::sources::stdin::StdinSource;

pub use reload::{ReloadHandle, ReloadOutcome, ReloadSummary, ReloadTrigger, Reloads};

use crate::admin::AdminState;
use crate::config::{
    Config, Framing, ParseFormat, PluginComponent, SinkConfig, SocketMode, SourceConfig,
    TransformConfig,
};
pub(crate) use deliver::{deliver, drain_sinks, DeliveryStats, RunningDelivery, SinkTask};
use shipper_plugin_host::{DynamicSink, DynamicSource, DynamicTransform};
use supervisor::Supervisor;

type Built<T> = Vec<(String, Box<T>)>;

/// A sink built from the config, with its name and its inputs.
struct BuiltSink {
    name: String,
    sink: Box<dyn Sink>,
    inputs: Vec<String>,
    /// How the sink's batches are gathered (its `batch` table).
    batch: Option<BatchPolicy>,
}

/// The file source's options from its config table.
fn file_options(file: &crate::config::FileSource) -> FileOptions {
    use crate::config::{InvalidUtf8, OnLongLine, ReadFrom};
    use shipper_plugins::framing::lines::Overlong;
    use shipper_plugins::sources::file;
    let max_line_bytes = usize::try_from(file.max_line_bytes.bytes()).unwrap_or(usize::MAX);
    FileOptions {
        include: file.include.clone(),
        exclude: file.exclude.clone(),
        read_from: match file.read_from {
            ReadFrom::Beginning => file::ReadFrom::Beginning,
            ReadFrom::End => file::ReadFrom::End,
        },
        lines: LineOptions {
            max_line_bytes,
            overlong: match file.on_long_line {
                OnLongLine::Truncate => Overlong::Truncate,
                OnLongLine::Drop => Overlong::Drop,
            },
            ..LineOptions::default()
        },
        multiline: file.multiline.as_ref().map(|m| {
            (
                m.start_pattern.0.as_str().to_owned(),
                Duration::from_millis(m.timeout_ms),
            )
        }),
        invalid_utf8: match file.invalid_utf8 {
            InvalidUtf8::Keep => file::InvalidUtf8::Keep,
            InvalidUtf8::Replace => file::InvalidUtf8::Replace,
        },
        glob_interval: Duration::from_millis(file.glob_interval_ms),
        rotate_wait: Duration::from_millis(file.rotate_wait_ms),
        fingerprint_bytes: file.fingerprint_bytes as usize,
        max_files: file.max_files as usize,
        ..FileOptions::default()
    }
}

/// Builds the sources of `config` that `wanted` names; the first that
/// fails is the error.
async fn build_sources(
    config: &Config,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Built<dyn Source>> {
    let mut sources: Built<dyn Source> = Vec::new();
    for (name, source) in config.sources.iter().filter(|(name, _)| wanted(name)) {
        let built: Box<dyn Source> = match source {
            SourceConfig::Sdk(_) => bail!(
                "source {name}: type \"sdk\" takes the records of an application that embeds shipper (shipper::ingest::Ingestor); `shipper run` has nothing to feed it"
            ),
            SourceConfig::Plugin(plugin) => Box::new(
                DynamicSource::new(name, &load_plugin(plugin)?, &plugin.config_json())
                    .map_err(|e| anyhow!("source {name}: {e}"))?,
            ),
            SourceConfig::Stdin(_) => Box::new(StdinSource::from_reader(
                stdin::process_stdin(),
                name,
                LineOptions::default(),
            )),
            SourceConfig::File(file) => Box::new(
                FileSource::new(file_options(file), name)
                    .map_err(|e| anyhow!("source {name}: {e}"))?,
            ),
            SourceConfig::Shipper(shipper) => {
                let options = ShipperOptions {
                    address: shipper.address,
                    path: shipper.path.clone(),
                    token: shipper.token.clone(),
                    max_body_bytes: usize::try_from(shipper.max_body_bytes.bytes())
                        .unwrap_or(usize::MAX),
                    max_chunk_bytes: usize::try_from(shipper.max_chunk_bytes.bytes())
                        .unwrap_or(usize::MAX),
                    verify: match shipper.verify {
                        crate::config::ShipperVerify::Frame => Verify::Frame,
                        crate::config::ShipperVerify::Full => Verify::Full,
                    },
                    limits: shipper.http_limits().limits(),
                    ..ShipperOptions::default()
                };
                Box::new(
                    ShipperSource::bind(options, name)
                        .await
                        .map_err(|e| anyhow!("source {name}: {e}"))?,
                )
            }
            SourceConfig::Generator(generator) => Box::new(
                GeneratorSource::new(generator_options(generator), name)
                    .map_err(|e| anyhow!("source {name}: {e}"))?,
            ),
            SourceConfig::Http(http) => {
                let options = HttpOptions {
                    address: http.address,
                    path: http.path.clone(),
                    max_body_bytes: usize::try_from(http.max_body_bytes.0).unwrap_or(usize::MAX),
                    limits: http.http_limits().limits(),
                };
                Box::new(
                    HttpSource::bind(options, name)
                        .await
                        .map_err(|e| anyhow!("source {name}: {e}"))?,
                )
            }
            SourceConfig::Socket(socket) => {
                let listen = match (socket.mode, socket.address, &socket.path) {
                    (SocketMode::Tcp, Some(address), _) => Listen::Tcp(address),
                    (SocketMode::Udp, Some(address), _) => Listen::Udp(address),
                    (SocketMode::Unix, _, Some(path)) => Listen::Unix(path.clone()),
                    _ => bail!("source {name}: tcp and udp need `address`, unix needs `path`"),
                };
                let options = SocketOptions {
                    listen,
                    framing: match socket.framing {
                        Framing::Newline => SocketFraming::Newline,
                        Framing::OctetCounting => SocketFraming::OctetCounting,
                    },
                    max_connections: socket.max_connections as usize,
                    idle_timeout: Duration::from_millis(socket.idle_timeout_ms),
                    max_frame_bytes: usize::try_from(socket.max_frame_bytes.0)
                        .unwrap_or(usize::MAX),
                    parse: match socket.parse {
                        ParseFormat::None => SocketParse::None,
                        ParseFormat::Syslog => SocketParse::Syslog,
                        ParseFormat::Json => SocketParse::Json,
                    },
                };
                Box::new(
                    SocketSource::bind(options, name)
                        .await
                        .map_err(|e| anyhow!("source {name}: {e}"))?,
                )
            }
            SourceConfig::Mqtt(mqtt_config) => {
                let (host, port) = match (&mqtt_config.url, &mqtt_config.host) {
                    (Some(url), _) => {
                        mqtt::parse_url(url).map_err(|e| anyhow!("source {name}: url: {e}"))?
                    }
                    (None, Some(host)) => {
                        (host.clone(), mqtt_config.port.unwrap_or(mqtt::DEFAULT_PORT))
                    }
                    (None, None) => bail!("source {name}: needs `url` or `host`"),
                };
                let options = MqttOptions {
                    host,
                    port,
                    client_id: mqtt_config
                        .client_id
                        .clone()
                        .unwrap_or_else(|| MqttOptions::default_client_id(name)),
                    topics: mqtt_config.topics.clone(),
                    qos: MqttQos::from_level(mqtt_config.qos)
                        .map_err(|e| anyhow!("source {name}: {e}"))?,
                };
                Box::new(MqttSource::new(options, name).map_err(|e| anyhow!("source {name}: {e}"))?)
            }
        };
        sources.push((name.clone(), built));
    }
    Ok(sources)
}

/// The plugin's options for a `generator` source.
fn generator_options(config: &crate::config::GeneratorSource) -> GeneratorOptions {
    use crate::config::GeneratorFormat;
    use shipper_plugins::corpus::CorpusKind;
    GeneratorOptions {
        corpus: match config.format {
            GeneratorFormat::AccessLog => CorpusKind::AccessLog,
            GeneratorFormat::Events => CorpusKind::Events,
            GeneratorFormat::Iot => CorpusKind::Iot,
        },
        seed: config.seed,
        record_bytes: config
            .record_bytes
            .map(|bytes| usize::try_from(bytes.bytes()).unwrap_or(usize::MAX)),
        count: config.count,
        rate: config.rate,
    }
}

/// Source `name` of `config`, built.
async fn build_source(config: &Config, name: &str) -> anyhow::Result<Box<dyn Source>> {
    let mut built = build_sources(config, |wanted| wanted == name).await?;
    built
        .pop()
        .map(|(_, source)| source)
        .ok_or_else(|| anyhow!("source {name} is not in the config"))
}

/// Builds the sinks of `config` that `wanted` names; the first that fails
/// is the error.
fn build_sinks(config: &Config, wanted: impl Fn(&str) -> bool) -> anyhow::Result<Vec<BuiltSink>> {
    let mut sinks = Vec::new();
    for (name, sink) in config.sinks.iter().filter(|(name, _)| wanted(name)) {
        let (built, batch): (Box<dyn Sink>, _) = match sink {
            SinkConfig::Builtin(component) => {
                let cx = BuildContext {
                    name,
                    data_dir: &config.data_dir,
                };
                let built = component
                    .build(&cx)
                    .map_err(|e| anyhow!("sink {name}: {e}"))?;
                (built, component.batch())
            }
            SinkConfig::Plugin(plugin) => (
                Box::new(
                    DynamicSink::new(name, &load_plugin(plugin)?, &plugin.config_json())
                        .map_err(|e| anyhow!("sink {name}: {e}"))?,
                ),
                None,
            ),
        };
        sinks.push(BuiltSink {
            name: name.clone(),
            sink: built,
            inputs: sink.inputs().to_vec(),
            batch,
        });
    }
    Ok(sinks)
}

/// Sink `name` of `config`, built.
fn build_sink(config: &Config, name: &str) -> anyhow::Result<BuiltSink> {
    build_sinks(config, |wanted| wanted == name)?
        .pop()
        .ok_or_else(|| anyhow!("sink {name} is not in the config"))
}

fn build_transform(
    config: &Config,
    name: &str,
    transform: &TransformConfig,
) -> anyhow::Result<Box<dyn Transform>> {
    Ok(match transform {
        TransformConfig::Plugin(plugin) => Box::new(
            DynamicTransform::new(name, &load_plugin(plugin)?, &plugin.config_json())
                .map_err(|e| anyhow!("transform {name}: {e}"))?,
        ),
        TransformConfig::Builtin(component) => {
            let cx = BuildContext {
                name,
                data_dir: &config.data_dir,
            };
            component
                .build(&cx)
                .map_err(|e| anyhow!("transform {name}: {e}"))?
        }
    })
}

/// The library of a plugin component, loaded (once per process).
fn load_plugin(component: &PluginComponent) -> anyhow::Result<Arc<shipper_plugin_host::Plugin>> {
    Ok(shipper_plugin_host::load(&component.plugin)?)
}

/// Whether the records of `component` pass through plugin code: it is a
/// plugin source, or a plugin transform consumes it (directly or through
/// other transforms). Such a source runs off the async workers, since a
/// plugin may block.
pub(crate) fn runs_plugin_code(config: &Config, component: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut pending = vec![component.to_owned()];
    if matches!(config.sources.get(component), Some(SourceConfig::Plugin(_))) {
        return true;
    }
    while let Some(current) = pending.pop() {
        if !seen.insert(current.clone()) {
            continue;
        }
        for (name, transform) in &config.transforms {
            if transform.inputs().contains(&current) {
                if matches!(transform, TransformConfig::Plugin(_)) {
                    return true;
                }
                pending.push(name.clone());
            }
        }
    }
    false
}

/// The emitter of `component`: it stores the records when a sink reads the
/// component, and routes them through every transform that consumes it.
pub(crate) fn build_emitter(
    config: &Config,
    log: &Log,
    component: &str,
    depth: usize,
) -> anyhow::Result<Emitter> {
    // Validation refuses cycles; the depth bound keeps a bug from recursing forever.
    if depth > config.transforms.len() {
        bail!("transform inputs form a cycle through {component}");
    }
    let store = config
        .sinks
        .values()
        .any(|sink| sink.inputs().iter().any(|input| input == component));
    let mut routes = Vec::new();
    for (name, transform) in &config.transforms {
        if transform.inputs().iter().any(|input| input == component) {
            let emitter = build_emitter(config, log, name, depth + 1)?;
            routes.push(Route::new(
                build_transform(config, name, transform)?,
                emitter,
            ));
        }
    }
    let options = ChunkOptions {
        dictionary: config.log.dictionary_training(),
        compression: shipper_core::chunk::Compression::Zstd {
            level: config.log.zstd_level,
        },
        ..ChunkOptions::default()
    };
    Ok(Emitter::with_routes(
        log.clone(),
        component,
        options,
        store,
        routes,
    )?)
}

/// Runs the pipeline of `config` (read from `config_file`) until
/// `shutdown` is triggered or every source has ended on its own, then
/// stops it in order. `reloads` carries the reload requests (SIGHUP); the
/// admin endpoint's `POST /reload` sends its own. Returns an error if a
/// component could not be built at start or failed for good.
pub async fn run(
    config_file: PathBuf,
    config: Config,
    shutdown: Shutdown,
    reloads: Reloads,
) -> anyhow::Result<()> {
    let sources = build_sources(&config, |_| true).await?;
    let sinks = build_sinks(&config, |_| true)?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.address)
        .await
        .with_context(|| format!("admin endpoint: listening on {}", config.admin.address))?;
    let log = Log::open(&config.data_dir, config.log_options())
        .with_context(|| format!("opening data dir {}", config.data_dir.display()))?;
    let report = log.recovery_report();
    if !report.is_clean() {
        tracing::warn!(repairs = %report, "recovery repaired the data directory");
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        producer = %log.producer_id(),
        next_offset = log.next_offset(),
        sources = sources.len(),
        sinks = sinks.len(),
        "shipper running"
    );

    let registry = crate::metrics::registry(&log);
    let admin_state = Arc::new(AdminState::new(
        log.clone(),
        registry.clone(),
        reloads.handle(),
    ));
    let mut supervisor = Supervisor::new(log.clone(), config, config_file, registry);
    supervisor.start(sources, sinks)?;

    let admin_address = admin_listener.local_addr().ok();
    let stop_admin = Shutdown::new();
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        admin_state,
        stop_admin.clone(),
    ));
    if let Some(address) = admin_address {
        tracing::info!(%address, "admin endpoint listening: /health, /metrics, POST /reload");
    }

    supervisor.supervise(&shutdown, reloads).await;
    let mut failed = supervisor.shutdown().await?;
    stop_admin.trigger();
    if let Ok(Err(error)) = admin.await {
        failed.push(format!("admin endpoint: {error}"));
    }
    tokio::task::block_in_place(|| log.close()).context("closing the log")?;
    if failed.is_empty() {
        tracing::info!("shipper stopped cleanly");
        Ok(())
    } else {
        Err(anyhow!(failed.join("; ")))
    }
}

/// The sinks of a pipeline embedded in an application ([`crate::ingest`]):
/// a delivery task per sink, as `shipper run` runs them, without the
/// supervisor (no reloads).
pub(crate) struct EmbeddedSinks {
    /// Each sink's name and counters.
    pub stats: Vec<(String, Arc<DeliveryStats>)>,
    tasks: Vec<RunningDelivery>,
    drain: Shutdown,
}

/// Builds the sinks of `config` and starts their delivery tasks on the
/// current tokio runtime, each from its cursor in `log`.
pub(crate) fn start_embedded_sinks(config: &Config, log: &Log) -> anyhow::Result<EmbeddedSinks> {
    let drain = Shutdown::new();
    let mut sinks = EmbeddedSinks {
        stats: Vec::new(),
        tasks: Vec::new(),
        drain: drain.clone(),
    };
    for built in build_sinks(config, |_| true)? {
        let name = built.name.clone();
        let start = log
            .open_cursor(&name)
            .with_context(|| format!("sink {name}: opening its cursor"))?;
        let stats = Arc::new(DeliveryStats::default());
        let stop = Shutdown::new();
        let task = tokio::spawn(deliver(SinkTask {
            log: log.clone(),
            name: name.clone(),
            sink: built.sink,
            inputs: built.inputs,
            batch: built.batch,
            start,
            stats: stats.clone(),
            drain: drain.clone(),
            stop: stop.clone(),
        }));
        sinks.stats.push((name.clone(), stats));
        sinks.tasks.push(RunningDelivery { name, stop, task });
    }
    Ok(sinks)
}

impl EmbeddedSinks {
    /// Stops the sinks as `shipper run` does ([`drain_sinks`]): each
    /// delivers what is durable for up to `patience`. Returns each failure.
    pub async fn shutdown(self, patience: Duration) -> Vec<String> {
        drain_sinks(&self.drain, self.tasks, patience).await
    }
}
