//! What a reload changes: the comparison of the running config with the
//! new one, by component name, and what a reload answers.
//!
//! A component's name is its identity. A source is restarted when its
//! [`SourcePlan`] changed: its own table, or anything its emitter is built
//! from (the transforms it feeds, directly or through other transforms, and
//! which of those components some sink reads, since only those are
//! stored). A sink is restarted when its table changed, `inputs` included.

use std::collections::BTreeMap;
use std::fmt;

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, SourceConfig, TransformConfig};

/// Asks a running pipeline to reload its config file. Clones reach the same
/// pipeline.
#[derive(Debug, Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    /// Asks for a reload and waits for its outcome; `None` once the
    /// pipeline is shutting down. Reloads run one at a time, in order.
    pub async fn reload(&self, trigger: ReloadTrigger) -> Option<ReloadOutcome> {
        let (answer, outcome) = oneshot::channel();
        self.0.send(ReloadRequest { trigger, answer }).await.ok()?;
        outcome.await.ok()
    }
}

/// One reload asked for, and where its outcome goes.
#[derive(Debug)]
pub(super) struct ReloadRequest {
    pub(super) trigger: ReloadTrigger,
    pub(super) answer: oneshot::Sender<ReloadOutcome>,
}

/// The receiving end of the reload requests, handed to `runtime::run`;
/// [`Reloads::handle`] makes the handles that send them.
#[derive(Debug)]
pub struct Reloads {
    handle: ReloadHandle,
    requests: mpsc::Receiver<ReloadRequest>,
}

impl Reloads {
    pub fn new() -> Self {
        // Requests beyond this wait in their senders.
        let (sender, requests) = mpsc::channel(8);
        Reloads {
            handle: ReloadHandle(sender),
            requests,
        }
    }

    /// A handle that sends reload requests here.
    pub fn handle(&self) -> ReloadHandle {
        self.handle.clone()
    }

    /// The next request.
    pub(super) async fn next(&mut self) -> Option<ReloadRequest> {
        self.requests.recv().await
    }
}

impl Default for Reloads {
    fn default() -> Self {
        Reloads::new()
    }
}

/// Everything a running source is built from: its own config, and each
/// emitter of its tree (depth-first, as `build_emitter` builds them). Two
/// equal plans build the same task.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SourcePlan {
    config: SourceConfig,
    emitters: Vec<EmitterPlan>,
}

#[derive(Debug, Clone, PartialEq)]
struct EmitterPlan {
    depth: usize,
    component: String,
    /// Some sink reads the component, so its records are stored.
    stored: bool,
    /// The transform's config; `None` for the source itself.
    transform: Option<TransformConfig>,
}

impl SourcePlan {
    /// The plan of source `name` in `config`, if `config` has that source.
    pub(super) fn new(config: &Config, name: &str) -> Option<Self> {
        let source = config.sources.get(name)?;
        let mut emitters = Vec::new();
        emitter_plans(config, name, 0, &mut emitters);
        Some(SourcePlan {
            config: source.clone(),
            emitters,
        })
    }
}

fn emitter_plans(config: &Config, component: &str, depth: usize, out: &mut Vec<EmitterPlan>) {
    // Validation refuses cycles; the bound keeps a bug from recursing forever.
    if depth > config.transforms.len() {
        return;
    }
    out.push(EmitterPlan {
        depth,
        component: component.to_owned(),
        stored: config
            .sinks
            .values()
            .any(|sink| sink.inputs().iter().any(|input| input == component)),
        transform: config.transforms.get(component).cloned(),
    });
    for (name, transform) in &config.transforms {
        if transform.inputs().iter().any(|input| input == component) {
            emitter_plans(config, name, depth + 1, out);
        }
    }
}

/// How the components of one kind differ between two configs, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Changes {
    pub(super) added: Vec<String>,
    pub(super) removed: Vec<String>,
    pub(super) changed: Vec<String>,
    pub(super) unchanged: Vec<String>,
}

impl Changes {
    fn between<T>(
        old: &BTreeMap<String, T>,
        new: &BTreeMap<String, T>,
        same: impl Fn(&str) -> bool,
    ) -> Changes {
        let mut changes = Changes::default();
        for name in new.keys() {
            if !old.contains_key(name) {
                changes.added.push(name.clone());
            } else if same(name) {
                changes.unchanged.push(name.clone());
            } else {
                changes.changed.push(name.clone());
            }
        }
        changes.removed = old
            .keys()
            .filter(|name| !new.contains_key(*name))
            .cloned()
            .collect();
        changes
    }
}

/// What a reload from `old` to `new` starts, stops and restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Diff {
    pub(super) sources: Changes,
    pub(super) transforms: Changes,
    pub(super) sinks: Changes,
}

pub(super) fn diff(old: &Config, new: &Config) -> Diff {
    Diff {
        sources: Changes::between(&old.sources, &new.sources, |name| {
            SourcePlan::new(old, name) == SourcePlan::new(new, name)
        }),
        transforms: Changes::between(&old.transforms, &new.transforms, |name| {
            old.transforms.get(name) == new.transforms.get(name)
        }),
        sinks: Changes::between(&old.sinks, &new.sinks, |name| {
            old.sinks.get(name) == new.sinks.get(name)
        }),
    }
}

/// The keys that differ between `old` and `new` and that only a restart
/// applies: the data directory, the log and the admin endpoint are opened
/// once, at start.
pub(super) fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.log, &new.log);
    let mut keys: Vec<&'static str> = [
        ("data_dir", old.data_dir != new.data_dir),
        ("log.segment_bytes", a.segment_bytes != b.segment_bytes),
        ("log.max_bytes", a.max_bytes != b.max_bytes),
        ("log.when_full", a.when_full != b.when_full),
        ("log.durability", a.durability != b.durability),
        ("log.interval_ms", a.interval_ms != b.interval_ms),
        ("log.dictionary", a.dictionary != b.dictionary),
        ("log.zstd_level", a.zstd_level != b.zstd_level),
        (
            "log.compression_threads",
            a.compression_threads != b.compression_threads,
        ),
        ("admin.address", old.admin.address != new.admin.address),
        ("admin.tls", old.admin.tls != new.admin.tls),
        ("admin.auth", old.admin.auth != new.admin.auth),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect();
    if a != b && !keys.iter().any(|key| key.starts_with("log.")) {
        // A `[log]` key added after this list was written.
        keys.push("log");
    }
    keys
}

/// Why a reload was asked for, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin endpoint.
    Api,
}

impl fmt::Display for ReloadTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReloadTrigger::Signal => "SIGHUP",
            ReloadTrigger::Api => "POST /reload",
        })
    }
}

/// What a reload did; its `Display` is the text `POST /reload` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config runs, except for the components in `failed`.
    Applied(ReloadSummary),
    /// The file could not be read or is not a valid config; the previous
    /// config keeps running. Holds every diagnostic, one per line.
    Invalid(String),
    /// The config changes keys only a restart applies (named in the
    /// message); the previous config keeps running.
    NeedsRestart(String),
}

impl ReloadOutcome {
    /// The HTTP status `POST /reload` answers with: 200 applied, 500
    /// applied but some component failed to start, 400 invalid, 409 needs
    /// a restart.
    pub fn status(&self) -> u16 {
        match self {
            ReloadOutcome::Applied(summary) if summary.failed.is_empty() => 200,
            ReloadOutcome::Applied(_) => 500,
            ReloadOutcome::Invalid(_) => 400,
            ReloadOutcome::NeedsRestart(_) => 409,
        }
    }
}

impl fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadOutcome::Applied(summary) => summary.fmt(f),
            ReloadOutcome::Invalid(diagnostics) => write!(
                f,
                "reload refused, still running the previous config: invalid config\n{diagnostics}"
            ),
            ReloadOutcome::NeedsRestart(message) => write!(
                f,
                "reload refused, still running the previous config: {message}"
            ),
        }
    }
}

/// The components a reload started, stopped, restarted or left alone, by
/// name, and those that failed to start (with the error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl ReloadSummary {
    pub(super) fn sort(&mut self) {
        for names in [
            &mut self.started,
            &mut self.stopped,
            &mut self.restarted,
            &mut self.unchanged,
        ] {
            names.sort();
        }
        self.failed.sort();
    }
}

impl fmt::Display for ReloadSummary {
    /// `reloaded: started [a], stopped [b], restarted [c], unchanged [d]`,
    /// then `, failed [e]` and one line per failure with its error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reloaded: started [{}], stopped [{}], restarted [{}], unchanged [{}]",
            self.started.join(", "),
            self.stopped.join(", "),
            self.restarted.join(", "),
            self.unchanged.join(", "),
        )?;
        if !self.failed.is_empty() {
            let names: Vec<&str> = self.failed.iter().map(|(name, _)| name.as_str()).collect();
            write!(f, ", failed [{}]", names.join(", "))?;
            for (name, error) in &self.failed {
                write!(f, "\n{name}: {error}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, &|_| None)
            .unwrap_or_else(|invalid| panic!("{invalid}"))
            .config
    }

    const BASE: &str = r#"
[sources.a]
type = "stdin"

[sources.b]
type = "socket"
mode = "tcp"
address = "127.0.0.1:9000"

[transforms.scrub]
type = "remap"
inputs = ["a"]
redact = ["password"]

[transforms.errors]
type = "filter"
inputs = ["scrub"]
field = "status"
equals = 500

[sinks.raw]
type = "file"
inputs = ["a", "b"]
path = "/tmp/raw.ndjson"

[sinks.alerts]
type = "blackhole"
inputs = ["errors"]
"#;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let diff = diff(&config(BASE), &config(BASE));
        assert_eq!(diff.sources.unchanged, names(&["a", "b"]));
        assert_eq!(diff.transforms.unchanged, names(&["errors", "scrub"]));
        assert_eq!(diff.sinks.unchanged, names(&["alerts", "raw"]));
        for changes in [&diff.sources, &diff.transforms, &diff.sinks] {
            assert!(changes.added.is_empty() && changes.removed.is_empty());
            assert!(changes.changed.is_empty());
        }
    }

    #[test]
    fn a_transform_two_steps_down_restarts_the_source_that_feeds_it() {
        let new = BASE.replace("equals = 500", "equals = 503");
        let diff = diff(&config(BASE), &config(&new));
        assert_eq!(diff.transforms.changed, names(&["errors"]));
        assert_eq!(diff.sources.changed, names(&["a"]));
        assert_eq!(diff.sources.unchanged, names(&["b"]));
        assert_eq!(diff.sinks.unchanged, names(&["alerts", "raw"]));
    }

    #[test]
    fn a_sink_path_is_a_sink_change_only() {
        let new = BASE.replace("/tmp/raw.ndjson", "/tmp/raw-2.ndjson");
        let diff = diff(&config(BASE), &config(&new));
        assert_eq!(diff.sinks.changed, names(&["raw"]));
        assert!(diff.sources.changed.is_empty());
    }

    #[test]
    fn a_sink_reading_a_component_not_stored_before_restarts_its_source() {
        // `scrub` was only passed on to `errors`; a sink reading it means
        // the source's emitter must now store it.
        let new = format!("{BASE}\n[sinks.clean]\ntype = \"blackhole\"\ninputs = [\"scrub\"]\n");
        let diff = diff(&config(BASE), &config(&new));
        assert_eq!(diff.sinks.added, names(&["clean"]));
        assert_eq!(diff.sources.changed, names(&["a"]));
        assert_eq!(diff.sources.unchanged, names(&["b"]));
        // Another sink reading what is stored already changes no source.
        let new = format!("{BASE}\n[sinks.copy]\ntype = \"blackhole\"\ninputs = [\"b\"]\n");
        assert!(diff_sources_changed(&config(BASE), &config(&new)).is_empty());
    }

    fn diff_sources_changed(old: &Config, new: &Config) -> Vec<String> {
        diff(old, new).sources.changed
    }

    #[test]
    fn removed_and_added_components_are_named() {
        let new = BASE
            .replace(
                "[sinks.alerts]\ntype = \"blackhole\"\ninputs = [\"errors\"]\n",
                "",
            )
            .replace("[transforms.errors]", "[transforms.errs]");
        let new = format!("{new}\n[sinks.alerts]\ntype = \"blackhole\"\ninputs = [\"errs\"]\n");
        let diff = diff(&config(BASE), &config(&new));
        assert_eq!(diff.transforms.added, names(&["errs"]));
        assert_eq!(diff.transforms.removed, names(&["errors"]));
        assert_eq!(diff.sinks.changed, names(&["alerts"]));
        assert_eq!(diff.sources.changed, names(&["a"]));
    }

    #[test]
    fn the_data_dir_the_log_and_the_admin_address_need_a_restart() {
        let table = [
            ("data_dir = \"/var/lib/other\"\n", vec!["data_dir"]),
            ("[log]\nmax_bytes = \"1GiB\"\n", vec!["log.max_bytes"]),
            (
                "[log]\ncompression_threads = 3\nzstd_level = 3\n",
                vec!["log.zstd_level", "log.compression_threads"],
            ),
            (
                "[log]\ndurability = \"always\"\n[admin]\naddress = \"127.0.0.1:9999\"\n",
                vec!["log.durability", "admin.address"],
            ),
            ("[logging]\nlevel = \"debug\"\n", vec![]),
        ];
        for (prefix, expected) in table {
            let new = config(&format!("{prefix}{BASE}"));
            assert_eq!(needs_restart(&config(BASE), &new), expected, "{prefix}");
        }
    }

    #[test]
    fn the_summary_reads_as_one_line_then_one_line_per_failure() {
        let mut summary = ReloadSummary {
            started: names(&["late", "extra"]),
            stopped: names(&["void"]),
            restarted: names(&["out"]),
            unchanged: names(&["in"]),
            failed: Vec::new(),
        };
        summary.sort();
        assert_eq!(
            ReloadOutcome::Applied(summary.clone()).to_string(),
            "reloaded: started [extra, late], stopped [void], restarted [out], unchanged [in]"
        );
        assert_eq!(ReloadOutcome::Applied(summary.clone()).status(), 200);
        summary
            .failed
            .push(("net".into(), "source net: address in use".into()));
        let outcome = ReloadOutcome::Applied(summary);
        assert_eq!(outcome.status(), 500);
        assert!(outcome
            .to_string()
            .ends_with(", failed [net]\nnet: source net: address in use"));
    }
}
