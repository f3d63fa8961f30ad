//! The supervisor: owns the running sources and sinks by name. It starts
//! them, stops them, applies reloads, notices when every source has ended
//! on its own, and shuts everything down in order.
//!
//! Stopping never loses or repeats a record. A source returns from `run`
//! only once what it emitted is durable, and a sink stops after its
//! current delivery, with its cursor committed to what was acknowledged.
//! Whatever runs next reads on from that cursor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use shipper_core::component::{ComponentError, Shutdown, Source, SourceContext};
use shipper_core::log::Log;
use shipper_core::metrics::{ComponentLabels, Registration, Registry, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::build::{build_emitter, build_sink, build_source, runs_plugin_code, Built, BuiltSink};
use super::deliver::{deliver, drain_sinks, DeliveryStats, RunningDelivery, SinkTask};
use super::reload::{self, Changes, ReloadOutcome, ReloadSummary, ReloadTrigger, Reloads};
use crate::config::{self, Config, LoadError};

/// The running pipeline: every source and sink of the config, by name.
pub(super) struct Supervisor {
    log: Log,
    /// The config running now (its `[logging]` is the one of the start).
    config: Config,
    config_file: PathBuf,
    sources: BTreeMap<String, SourceSlot>,
    sinks: BTreeMap<String, SinkSlot>,
    /// Triggered at shutdown: every sink stops once caught up.
    drain: Shutdown,
    /// Source tasks send their id here when they return (or panic).
    returned_sender: mpsc::UnboundedSender<u64>,
    returned: mpsc::UnboundedReceiver<u64>,
    next_task_id: u64,
    /// Where every component's metrics are registered.
    registry: Registry,
    /// Errors reported at exit: components that failed while running.
    failures: Vec<String>,
    /// Sources stopped by a reload that did not return in time (a plugin
    /// call that blocks cannot be aborted): none is started again while
    /// its previous run is still going.
    lingering: Vec<(String, JoinHandle<Result<(), ComponentError>>)>,
    started: Instant,
}

/// A source of the config and its task.
struct SourceSlot {
    /// The metrics of the source, its emitter and the transforms under
    /// it; dropped when it stops (what they counted stays counted).
    registrations: Vec<Registration>,
    state: SourceState,
}

enum SourceState {
    Running {
        id: u64,
        stop: Shutdown,
        task: JoinHandle<Result<(), ComponentError>>,
    },
    /// Its `run` returned: its input ended, it failed (`failed`), or it was
    /// stopped.
    Ended { failed: bool },
    /// Building it failed; the next reload tries again.
    NotBuilt,
}

/// A sink of the config and its delivery task.
struct SinkSlot {
    /// `None` when building it failed, or its task failed.
    task: Option<RunningSink>,
}

struct RunningSink {
    stop: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
    /// The metrics of the sink and its delivery loop: dropped once its
    /// task has ended, so they hold everything it counted.
    registration: Registration,
}

/// Sends a source task's id to the supervisor when dropped: when the task
/// returns, panics or is aborted.
struct ReturnNotice {
    sender: mpsc::UnboundedSender<u64>,
    id: u64,
}

impl Drop for ReturnNotice {
    fn drop(&mut self) {
        let _ = self.sender.send(self.id);
    }
}

/// Why a task told to stop did not return a value.
enum Unjoined<T> {
    Panicked(String),
    /// It was still running at the deadline, and was aborted: an async
    /// task stops at its next await, but a blocking one (plugin code) runs
    /// on; its handle says when it has returned.
    TimedOut(JoinHandle<T>),
}

/// Waits until `deadline` for a task told to stop.
async fn join<T>(mut task: JoinHandle<T>, deadline: Instant) -> Result<T, Unjoined<T>> {
    match tokio::time::timeout_at(deadline.into(), &mut task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Unjoined::Panicked(error.to_string())),
        Err(_) => {
            task.abort();
            Err(Unjoined::TimedOut(task))
        }
    }
}

/// Which list of the reload summary a component of the new config goes to.
enum Listed {
    Started,
    Restarted,
    Unchanged,
}

impl Listed {
    /// Added: started. Changed: restarted. Unchanged, but not running
    /// because it failed (`failed`): started again.
    fn of(changes: &Changes, name: &str, failed: bool) -> Listed {
        let has = |names: &[String]| names.iter().any(|n| n == name);
        if has(&changes.added) || (failed && has(&changes.unchanged)) {
            Listed::Started
        } else if has(&changes.changed) {
            Listed::Restarted
        } else {
            Listed::Unchanged
        }
    }
}

impl Supervisor {
    pub(super) fn new(log: Log, config: Config, config_file: PathBuf, registry: Registry) -> Self {
        let (returned_sender, returned) = mpsc::unbounded_channel();
        Supervisor {
            log,
            config,
            config_file,
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            drain: Shutdown::new(),
            returned_sender,
            returned,
            next_task_id: 0,
            registry,
            failures: Vec::new(),
            lingering: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Starts the components built at start; any error ends the run.
    pub(super) fn start(
        &mut self,
        sources: Built<dyn Source>,
        sinks: Vec<BuiltSink>,
    ) -> anyhow::Result<()> {
        for (name, source) in sources {
            self.start_source(&name, Ok(source))?;
        }
        for sink in sinks {
            let name = sink.name.clone();
            self.start_sink(&name, Ok(sink))?;
        }
        self.publish();
        Ok(())
    }

    /// Applies reloads until `shutdown` is triggered or every source has
    /// ended on its own.
    pub(super) async fn supervise(&mut self, shutdown: &Shutdown, mut reloads: Reloads) {
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                Some(request) = reloads.next() => {
                    let outcome = self.reload(request.trigger).await;
                    let _ = request.answer.send(outcome);
                }
                Some(id) = self.returned.recv() => self.source_returned(id).await,
            }
            if self.every_source_ended() {
                tracing::info!("every source has ended: draining the sinks and stopping");
                return;
            }
        }
    }

    /// True when the config has sources and each has returned (its input
    /// ended, or it failed): nothing is left that could produce records.
    /// A source whose build failed at a reload waits for the next reload.
    fn every_source_ended(&self) -> bool {
        !self.sources.is_empty()
            && self
                .sources
                .values()
                .all(|slot| matches!(slot.state, SourceState::Ended { .. }))
    }

    /// Stops the sources, makes the log durable and lets the sinks drain
    /// until `shutdown_timeout_ms`. Returns what failed during the run.
    pub(super) async fn shutdown(mut self) -> anyhow::Result<Vec<String>> {
        tracing::info!("shutting down: stopping sources");
        let names: Vec<String> = self.sources.keys().cloned().collect();
        let failed = self.stop_sources(&names).await;
        self.failures
            .extend(failed.into_iter().map(|(_, error)| error));
        let log = self.log.clone();
        let timeout = self.config.shutdown_timeout();
        let flushed = tokio::task::block_in_place(|| log.flush_timeout(timeout))
            .context("flushing the log")?;
        if flushed {
            tracing::info!("sources stopped, log durable: draining sinks");
        } else {
            // The writer waits for disk space the sinks have not freed:
            // what was appended before its waiting chunk is durable.
            tracing::warn!(timeout = ?timeout, "the log is full and no sink frees space: stopping without a final flush");
        }
        let mut running = Vec::new();
        // Each sink's metrics stay registered until its task has ended.
        let mut registrations = Vec::new();
        for (name, slot) in &mut self.sinks {
            if let Some(sink) = slot.task.take() {
                running.push(RunningDelivery {
                    name: name.clone(),
                    stop: sink.stop,
                    task: sink.task,
                });
                registrations.push(sink.registration);
            }
        }
        let failed = drain_sinks(&self.drain, running, self.config.shutdown_timeout()).await;
        self.failures.extend(failed);
        drop(registrations);
        self.log_summary();
        Ok(self.failures)
    }

    /// Re-reads the config file and applies it; see [`ReloadOutcome`].
    pub(super) async fn reload(&mut self, trigger: ReloadTrigger) -> ReloadOutcome {
        let file = self.config_file.display().to_string();
        tracing::info!(%trigger, file, "reloading the config");
        let new = match config::load(&self.config_file) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!("{file}:{warning}");
                }
                loaded.config
            }
            Err(LoadError::Invalid { invalid, .. }) => {
                let diagnostics: Vec<String> = invalid
                    .diagnostics
                    .iter()
                    .map(|diagnostic| format!("{file}:{diagnostic}"))
                    .collect();
                for diagnostic in &diagnostics {
                    tracing::error!("{diagnostic}");
                }
                tracing::error!(
                    %trigger,
                    errors = invalid.errors().count(),
                    "reload refused: the config is not valid; still running the previous config"
                );
                return ReloadOutcome::Invalid(diagnostics.join("\n"));
            }
            Err(error) => {
                let message = format!("{:#}", anyhow::Error::from(error));
                tracing::error!(
                    %trigger,
                    "reload refused: {message}; still running the previous config"
                );
                return ReloadOutcome::Invalid(message);
            }
        };
        let keys = reload::needs_restart(&self.config, &new);
        if !keys.is_empty() {
            let message = format!("{} changed: restart shipper to apply", keys.join(", "));
            tracing::error!(
                %trigger,
                "reload refused: {message}; still running the previous config"
            );
            return ReloadOutcome::NeedsRestart(message);
        }
        let mut new = new;
        if new.logging != self.config.logging {
            tracing::warn!("[logging] changed: it applies at the next start, not on reload");
            new.logging = self.config.logging;
        }
        // Certificates, keys and token files are read again at their next
        // use (they may have been replaced; validate checked them).
        shipper_components::reread::request();
        let outcome = ReloadOutcome::Applied(self.apply(new).await);
        if outcome.status() == 200 {
            tracing::info!(%trigger, "{outcome}");
        } else {
            tracing::error!(%trigger, "{outcome}");
        }
        outcome
    }

    /// Moves the running pipeline to `new` (a valid config whose log, data
    /// directory and admin endpoint are the running ones): stops what was
    /// removed or changed, then starts what was added or changed, and what
    /// is not running because it failed.
    async fn apply(&mut self, new: Config) -> ReloadSummary {
        let diff = reload::diff(&self.config, &new);
        self.reap_sinks().await;
        let mut summary = ReloadSummary::default();

        // Everything stops before anything starts: a source restarted on
        // the same address must have closed its listener before the new
        // one binds.
        let stopping: Vec<String> = [&diff.sources.removed, &diff.sources.changed]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        summary.failed.extend(self.stop_sources(&stopping).await);
        for name in &stopping {
            self.retire(name);
        }
        for name in &diff.sources.removed {
            self.sources.remove(name);
        }
        let stopping: Vec<String> = [&diff.sinks.removed, &diff.sinks.changed]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        summary.failed.extend(self.stop_sinks(&stopping).await);
        for name in &diff.sinks.removed {
            self.sinks.remove(name);
            // The sink is gone for good: its cursor would keep every
            // segment from its position on until the disk budget is full.
            match tokio::task::block_in_place(|| self.log.remove_cursor(name)) {
                Ok(_) => tracing::info!(sink = %name, "sink removed; its cursor is deleted"),
                Err(error) => summary.failed.push((
                    name.clone(),
                    format!("sink {name}: removing its cursor: {error}"),
                )),
            }
        }
        self.config = new;

        let sinks: Vec<String> = self.config.sinks.keys().cloned().collect();
        for name in sinks {
            let failed = self
                .sinks
                .get(&name)
                .is_some_and(|slot| slot.task.is_none());
            let listed = Listed::of(&diff.sinks, &name, failed);
            let built = match listed {
                Listed::Unchanged => Ok(()),
                _ => {
                    let sink = build_sink(&self.config, &name);
                    self.start_sink(&name, sink)
                }
            };
            summary.list(name, listed, built);
        }

        let sources: Vec<String> = self.config.sources.keys().cloned().collect();
        for name in sources {
            let failed = self.sources.get(&name).is_some_and(|slot| {
                matches!(
                    slot.state,
                    SourceState::NotBuilt | SourceState::Ended { failed: true }
                )
            });
            let listed = Listed::of(&diff.sources, &name, failed);
            let built = match listed {
                Listed::Unchanged => Ok(()),
                _ => {
                    let source = build_source(&self.config, &name).await;
                    self.start_source(&name, source)
                }
            };
            summary.list(name, listed, built);
        }

        // Transforms run inside their sources' tasks: the sources above
        // were restarted for them.
        summary.started.extend(diff.transforms.added);
        summary.restarted.extend(diff.transforms.changed);
        summary.unchanged.extend(diff.transforms.unchanged);
        summary.stopped.extend(
            [
                diff.sources.removed,
                diff.transforms.removed,
                diff.sinks.removed,
            ]
            .into_iter()
            .flatten(),
        );
        summary.sort();
        self.publish();
        summary
    }

    /// Builds the emitter of source `name` and starts its task. The slot is
    /// filled even when building fails, so the next reload tries again.
    fn start_source(
        &mut self,
        name: &str,
        built: anyhow::Result<Box<dyn Source>>,
    ) -> anyhow::Result<()> {
        self.lingering.retain(|(_, task)| !task.is_finished());
        let built = built.and_then(|source| {
            if self.lingering.iter().any(|(running, _)| running == name) {
                bail!(
                    "source {name}: its previous run has not returned yet (plugin code that blocks cannot be interrupted); a reload once it has starts it"
                );
            }
            Ok(source)
        });
        let started = built.and_then(|source| {
            let mut emitter = build_emitter(&self.config, &self.log, name, 0)
                .with_context(|| format!("source {name}"))?;
            // A full log pauses the source; the runtime's workers stay free
            // for signals, the admin endpoint and the sinks that free space.
            emitter.set_blocking_hook(Arc::new(|wait: &mut dyn FnMut()| {
                tokio::task::block_in_place(wait)
            }));
            // A busy source splits records while its last chunk compresses.
            emitter
                .compress_in_background()
                .with_context(|| format!("source {name}"))?;
            Ok((source, emitter))
        });
        let (mut source, emitter) = match started {
            Ok(started) => started,
            Err(error) => {
                self.sources.insert(
                    name.to_owned(),
                    SourceSlot {
                        registrations: Vec::new(),
                        state: SourceState::NotBuilt,
                    },
                );
                return Err(error);
            }
        };
        let mut registrations = Vec::new();
        for (index, (component, mut metrics)) in emitter.metrics().into_iter().enumerate() {
            let labels = if index == 0 {
                metrics.extend(source.metrics());
                self.labels(&component, "source")
            } else {
                self.labels(&component, "transform")
            };
            registrations.push(self.registry.register(labels, metrics));
        }
        let stop = Shutdown::new();
        let mut cx = SourceContext {
            emitter,
            shutdown: stop.clone(),
        };
        let id = self.next_task_id;
        self.next_task_id += 1;
        let notice = ReturnNotice {
            sender: self.returned_sender.clone(),
            id,
        };
        let run = async move {
            let _notice = notice;
            source.run(&mut cx).await
        };
        let task = if runs_plugin_code(&self.config, name) {
            // Plugin code may block (it is allowed to): the source gets a
            // thread of the blocking pool and drives its future there, off
            // the async workers.
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || runtime.block_on(run))
        } else {
            tokio::spawn(run)
        };
        self.sources.insert(
            name.to_owned(),
            SourceSlot {
                registrations,
                state: SourceState::Running { id, stop, task },
            },
        );
        Ok(())
    }

    /// Opens the cursor of sink `name` (a new cursor starts at the oldest
    /// stored record) and starts its delivery task. The slot is filled even
    /// when building fails, so the next reload tries again.
    fn start_sink(&mut self, name: &str, built: anyhow::Result<BuiltSink>) -> anyhow::Result<()> {
        let started = built.and_then(|built| {
            let start = tokio::task::block_in_place(|| self.log.open_cursor(name))
                .with_context(|| format!("sink {name}: opening its cursor"))?;
            let stats = Arc::new(DeliveryStats::default());
            let mut metrics = stats.metrics(&self.log, name);
            metrics.extend(built.sink.metrics());
            let registration = self.registry.register(self.labels(name, "sink"), metrics);
            let stop = Shutdown::new();
            let task = tokio::spawn(deliver(SinkTask {
                log: self.log.clone(),
                name: name.to_owned(),
                sink: built.sink,
                inputs: built.inputs,
                batch: built.batch,
                start,
                stats,
                drain: self.drain.clone(),
                stop: stop.clone(),
            }));
            Ok(RunningSink {
                stop,
                task,
                registration,
            })
        });
        let (task, result) = match started {
            Ok(running) => (Some(running), Ok(())),
            Err(error) => (None, Err(error)),
        };
        self.sinks.insert(name.to_owned(), SinkSlot { task });
        result
    }

    /// The labels of component `name`, a `kind` of the running config.
    fn labels(&self, name: &str, kind: &'static str) -> ComponentLabels {
        let type_name = match kind {
            "source" => self.config.sources.get(name).map(|c| c.type_name()),
            "transform" => self.config.transforms.get(name).map(|c| c.type_name()),
            _ => self.config.sinks.get(name).map(|c| c.type_name()),
        };
        ComponentLabels::new(name, kind, type_name.unwrap_or_default())
    }

    /// Tells the running sources among `names` to stop, and waits for each
    /// (they stop in parallel). Returns those that failed to stop cleanly.
    async fn stop_sources(&mut self, names: &[String]) -> Vec<(String, String)> {
        for name in names {
            if let Some(SourceSlot {
                state: SourceState::Running { stop, .. },
                ..
            }) = self.sources.get(name)
            {
                stop.trigger();
            }
        }
        let timeout = self.config.shutdown_timeout();
        let deadline = Instant::now() + timeout;
        let mut failed = Vec::new();
        let mut lingering = Vec::new();
        for name in names {
            let Some(slot) = self.sources.get_mut(name) else {
                continue;
            };
            let state = std::mem::replace(&mut slot.state, SourceState::Ended { failed: false });
            let SourceState::Running { task, .. } = state else {
                slot.state = state;
                continue;
            };
            let error = match join(task, deadline).await {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => format!("source {name}: {error}"),
                Err(Unjoined::Panicked(panic)) => format!("source {name} panicked: {panic}"),
                Err(Unjoined::TimedOut(task)) => {
                    // An async task ends at its abort; a blocking one (a
                    // source running plugin code) may run on.
                    if runs_plugin_code(&self.config, name) {
                        lingering.push((name.clone(), task));
                    }
                    format!("source {name} did not stop within {timeout:?}")
                }
            };
            slot.state = SourceState::Ended { failed: true };
            failed.push((name.clone(), error));
        }
        self.lingering.extend(lingering);
        failed
    }

    /// Tells the running sinks among `names` to stop after their current
    /// delivery, and waits for each. Returns those that failed.
    async fn stop_sinks(&mut self, names: &[String]) -> Vec<(String, String)> {
        let mut stopping = Vec::new();
        for name in names {
            if let Some(running) = self.sinks.get_mut(name).and_then(|slot| slot.task.take()) {
                running.stop.trigger();
                stopping.push((name, running.task, running.registration));
            }
        }
        let timeout = self.config.shutdown_timeout();
        let deadline = Instant::now() + timeout;
        let mut failed = Vec::new();
        for (name, task, _registration) in stopping {
            let error = match join(task, deadline).await {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => format!("sink {name}: {error:#}"),
                Err(Unjoined::Panicked(panic)) => format!("sink {name} panicked: {panic}"),
                Err(Unjoined::TimedOut(_)) => format!(
                    "sink {name} did not finish its delivery within {timeout:?}; \
                     the next start of the sink delivers it again"
                ),
            };
            failed.push((name.clone(), error));
        }
        failed
    }

    /// A source task returned: on its own, unless it was told to stop (then
    /// whoever stopped it collects it).
    async fn source_returned(&mut self, id: u64) {
        let Some((name, slot)) = self.sources.iter_mut().find(|(_, slot)| {
            matches!(&slot.state, SourceState::Running { id: running, stop, .. }
                if *running == id && !stop.is_triggered())
        }) else {
            return;
        };
        let state = std::mem::replace(&mut slot.state, SourceState::Ended { failed: true });
        let SourceState::Running { task, .. } = state else {
            return;
        };
        let error = match task.await {
            Ok(Ok(())) => {
                tracing::info!(source = %name, "source ended: its input is exhausted");
                slot.state = SourceState::Ended { failed: false };
                return;
            }
            Ok(Err(error)) => format!("source {name}: {error}"),
            Err(panic) => format!("source {name} panicked: {panic}"),
        };
        tracing::error!("{error}");
        self.failures.push(error);
    }

    /// Collects the sink tasks that ended on their own, which only a fatal
    /// error does.
    async fn reap_sinks(&mut self) {
        for (name, slot) in &mut self.sinks {
            if !slot
                .task
                .as_ref()
                .is_some_and(|running| running.task.is_finished())
            {
                continue;
            }
            let Some(running) = slot.task.take() else {
                continue;
            };
            let error = match running.task.await {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => format!("sink {name}: {error:#}"),
                Err(panic) => format!("sink {name} panicked: {panic}"),
            };
            tracing::error!("{error}");
            self.failures.push(error);
        }
    }

    /// Takes the metrics of source `name` (and of the transforms under
    /// it) out of the registry; what they counted stays counted.
    fn retire(&mut self, name: &str) {
        if let Some(slot) = self.sources.get_mut(name) {
            slot.registrations.clear();
        }
    }

    /// Forgets the counts of components the config no longer has (or has
    /// under another type).
    fn publish(&self) {
        self.registry
            .retain_components(|labels| self.labels(&labels.id, labels.kind) == *labels);
    }

    /// The one line the run ends with: records in per source, out per sink,
    /// elapsed time and rate.
    fn log_summary(&self) {
        let count = |metric: &str, kind: &str, name: &str| match self
            .registry
            .value(metric, &[("component_kind", kind), ("component_id", name)])
        {
            Some(Value::Counter(count)) => count,
            _ => 0,
        };
        let records_in: BTreeMap<&str, u64> = self
            .config
            .sources
            .keys()
            .map(|name| {
                let count = count("shipper_component_received_records_total", "source", name);
                (name.as_str(), count)
            })
            .collect();
        let records_out: BTreeMap<&str, u64> = self
            .config
            .sinks
            .keys()
            .map(|name| {
                let count = count("shipper_component_sent_records_total", "sink", name);
                (name.as_str(), count)
            })
            .collect();
        let seconds = self.started.elapsed().as_secs_f64();
        let total: u64 = records_in.values().sum();
        let rate = if seconds > 0.0 {
            total as f64 / seconds
        } else {
            0.0
        };
        tracing::info!(
            "run summary: records in {}; records out {}; {seconds:.2} s; {rate:.0} records/s in",
            counts(&records_in),
            counts(&records_out),
        );
    }
}

/// `a=1 b=2`, or `none`.
fn counts(counts: &BTreeMap<&str, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    let listed: Vec<String> = counts
        .iter()
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    listed.join(" ")
}

impl ReloadSummary {
    /// Puts `name` in the list `listed` says, or in `failed` if starting it
    /// failed.
    fn list(&mut self, name: String, listed: Listed, started: anyhow::Result<()>) {
        match (started, listed) {
            (Err(error), _) => self.failed.push((name, format!("{error:#}"))),
            (Ok(()), Listed::Started) => self.started.push(name),
            (Ok(()), Listed::Restarted) => self.restarted.push(name),
            (Ok(()), Listed::Unchanged) => self.unchanged.push(name),
        }
    }
}
