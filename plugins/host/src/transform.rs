//! A transform plugin behind the engine's [`Transform`] trait.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shipper_core::component::{Transform, TransformOutcome};
use shipper_plugin::abi::{self, Slice};

use crate::instance::{CallError, Decision, Instance};
use crate::loader::{Kind, Plugin};
use crate::stats::PluginStats;

/// How often a failing transform's errors are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// A dynamically loaded transform. It runs inline, in the thread of the
/// source it is attached to, once per record. A record whose call fails
/// is dropped (a redacting transform that fails must not let the record
/// through unredacted), counted and logged; a panic also replaces the
/// instance with a new one from the same config.
#[derive(Debug)]
pub struct DynamicTransform {
    component: String,
    plugin: Arc<Plugin>,
    config: String,
    instance: Option<Instance>,
    stats: Arc<PluginStats>,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl DynamicTransform {
    /// An instance of `plugin` (a transform) for component `component`,
    /// from `config` (a JSON object).
    pub fn new(component: &str, plugin: &Arc<Plugin>, config: &str) -> Result<Self, CallError> {
        if plugin.kind() != Kind::Transform {
            return Err(CallError::Fatal(format!(
                "{} is a {} plugin, not a transform",
                plugin.path().display(),
                plugin.kind()
            )));
        }
        Ok(DynamicTransform {
            component: component.to_owned(),
            plugin: plugin.clone(),
            config: config.to_owned(),
            instance: Some(Instance::create(plugin, config)?),
            stats: Arc::default(),
            last_logged: None,
            unlogged: 0,
        })
    }

    fn failed(&mut self, error: &CallError) {
        self.stats.failed(matches!(error, CallError::Panicked(_)));
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::error!(
            transform = %self.component,
            %error,
            also_dropped_since_last_report = self.unlogged,
            "the transform plugin failed; the record is dropped"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}

impl Transform for DynamicTransform {
    fn metrics(&self) -> Vec<shipper_core::metrics::ComponentMetric> {
        self.stats.metrics(true)
    }

    fn apply<'a>(&mut self, record: &'a [u8], scratch: &'a mut Vec<u8>) -> TransformOutcome<'a> {
        self.apply_record("", 0, record, scratch)
    }

    fn apply_record<'a>(
        &mut self,
        stream: &str,
        timestamp: u64,
        record: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> TransformOutcome<'a> {
        if self.instance.is_none() {
            // The last call panicked: a new instance, same config.
            let plugin = self.plugin.clone();
            match Instance::create(&plugin, &self.config) {
                Ok(instance) => self.instance = Some(instance),
                Err(error) => {
                    self.failed(&error);
                    return TransformOutcome::Drop;
                }
            }
        }
        let instance = self.instance.as_mut().expect("created above");
        let input = abi::Record {
            payload: Slice::of(record),
            stream: Slice::of(stream.as_bytes()),
            timestamp_ns: timestamp,
            offset: 0,
        };
        let error = match instance.transform(&input) {
            Ok(Decision::Keep) => return TransformOutcome::Keep(record),
            Ok(Decision::Drop) => return TransformOutcome::Drop,
            Ok(Decision::Replace(bytes)) => {
                // The plugin's bytes live until its next call: copy them.
                scratch.clear();
                scratch.extend_from_slice(bytes);
                return TransformOutcome::Replace(scratch);
            }
            Err(error) => error,
        };
        if let CallError::Panicked(_) = error {
            self.instance = None;
        }
        self.failed(&error);
        TransformOutcome::Drop
    }
}
