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
//! It knows no component type: a built-in component is built through its
//! kind's config (`shipper::components`, `SourceComponent::build`...), a
//! plugin through the plugin host. The delivery loop and the shutdown of
//! sinks are in `deliver.rs`.
//!
//! Transforms run on the producing side, in the source's task, before
//! compression: each source's emitter carries the transforms that consume
//! it (and those that consume them), and a component's records are stored
//! under its own name only when some sink reads that component.

mod deliver;
mod reload;
mod supervisor;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use shipper_components::config::BuildContext;
use shipper_core::chunk::ChunkOptions;
use shipper_core::component::{BatchPolicy, Shutdown, Sink, Source, Transform};
use shipper_core::emit::{Emitter, Route};
use shipper_core::log::Log;

pub use reload::{ReloadHandle, ReloadOutcome, ReloadSummary, ReloadTrigger, Reloads};

use crate::admin::AdminState;
use crate::config::{Config, PluginComponent, SinkConfig, SourceConfig, TransformConfig};
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

/// Builds the sources of `config` that `wanted` names; the first that
/// fails is the error.
async fn build_sources(
    config: &Config,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Built<dyn Source>> {
    let mut sources: Built<dyn Source> = Vec::new();
    for (name, source) in config.sources.iter().filter(|(name, _)| wanted(name)) {
        let built: Box<dyn Source> = match source {
            SourceConfig::Plugin(plugin) => Box::new(
                DynamicSource::new(name, &load_plugin(plugin)?, &plugin.config_json())
                    .map_err(|e| anyhow!("source {name}: {e}"))?,
            ),
            SourceConfig::Builtin(component) => {
                let cx = BuildContext {
                    name,
                    data_dir: &config.data_dir,
                };
                component
                    .build(&cx)
                    .await
                    .map_err(|e| anyhow!("source {name}: {e}"))?
            }
        };
        sources.push((name.clone(), built));
    }
    Ok(sources)
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
