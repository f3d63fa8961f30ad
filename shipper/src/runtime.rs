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

mod build;
mod deliver;
pub(crate) mod reload;
mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use shipper_core::component::Shutdown;
use shipper_core::log::Log;

pub use reload::{ReloadHandle, ReloadOutcome, ReloadSummary, ReloadTrigger, Reloads};

use crate::admin::AdminState;
use crate::config::Config;
pub(crate) use build::build_emitter;
use build::{build_sinks, build_sources};
pub(crate) use deliver::{deliver, drain_sinks, DeliveryStats, RunningDelivery, SinkTask};
use supervisor::Supervisor;

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
    shipper_core::emit::set_compression_threads(config.log.compression_threads as usize);
    let sources = build_sources(&config, |_| true).await?;
    let sinks = build_sinks(&config, |_| true)?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.address)
        .await
        .with_context(|| format!("admin endpoint: listening on {}", config.admin.address))?;
    let admin_tls = shipper_components::tls::server_tls(config.admin.tls.as_ref())
        .map_err(|error| anyhow!("admin endpoint: {error}"))?;
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
    let access = crate::admin::Access {
        auth: config
            .admin
            .auth
            .as_ref()
            .map(|auth| shipper_components::listen::auth::Authenticator::new(auth).map(Arc::new))
            .transpose()
            .map_err(|error| anyhow!("admin endpoint: auth: {error}"))?,
        loopback: config.admin.address.ip().is_loopback(),
        mutual_tls: config
            .admin
            .tls
            .as_ref()
            .is_some_and(|tls| tls.verify_client),
    };
    let admin_state = Arc::new(AdminState::new(
        log.clone(),
        registry.clone(),
        reloads.handle(),
        access,
    ));
    let mut supervisor = Supervisor::new(log.clone(), config, config_file, registry);
    supervisor.start(sources, sinks)?;

    let admin_address = admin_listener.local_addr().ok();
    let stop_admin = Shutdown::new();
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        admin_state,
        admin_tls,
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
