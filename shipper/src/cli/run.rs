//! `shipper run -c FILE`: runs the pipeline a config describes until
//! SIGTERM or SIGINT (or until every source has ended on its own), then
//! stops sources, makes the log durable, lets sinks drain and exits 0.
//! SIGHUP reloads the config file.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use shipper::config::{self, LoadError, LogFormat, LogLevel};
use shipper::runtime::{ReloadTrigger, Reloads};
use shipper_core::component::Shutdown;
use tokio::signal::unix::{signal, SignalKind};

use crate::Outcome;

/// Arguments of `shipper run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

/// Raises the soft limit of open files to the hard one: every client
/// connection takes a descriptor, and a log writer that cannot get one
/// cannot create a segment. Listeners keep their connections below the
/// limit (`shipper_components::listen`).
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::debug!(from = ?limit.current, to = ?limit.maximum, "open files limit raised")
        }
        Err(error) => {
            tracing::warn!(%error, soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open files limit")
        }
    }
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let file = args.config.display();
    let loaded = match config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid { invalid, .. }) => {
            for diagnostic in &invalid.diagnostics {
                eprintln!("{file}:{diagnostic}");
            }
            return Err(anyhow!(
                "{file}: invalid config ({} errors)",
                invalid.errors().count()
            ));
        }
        Err(error) => return Err(anyhow!(error)),
    };
    for warning in &loaded.warnings {
        eprintln!("{file}:{warning}");
    }
    let logging = loaded.config.logging;
    let level = match logging.level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    crate::init_tracing(level, logging.format == LogFormat::Json);
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("shipper-runtime")
        .build()
        .context("starting the runtime")?;
    let shutdown = Shutdown::new();
    let reloads = Reloads::new();
    let result = runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
            }
            trigger.trigger();
        });
        // The pipeline logs each reload's outcome; signals that arrive
        // during a reload make one more.
        let reload = reloads.handle();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the config");
                if reload.reload(ReloadTrigger::Signal).await.is_none() {
                    break;
                }
            }
        });
        shipper::runtime::run(
            args.config.clone(),
            loaded.config,
            shutdown.clone(),
            reloads,
        )
        .await
    });
    // A read of standard input may still be blocked in the runtime's
    // blocking pool; it holds nothing that needs saving.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map(|()| Outcome::Success)
}
