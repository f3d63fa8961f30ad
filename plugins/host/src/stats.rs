//! Counters of the dynamic plugins, by component name, for `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One component's plugin counters.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls that failed (retryable, fatal or panicked).
    pub errors: AtomicU64,
    /// Calls that panicked; each replaced the instance.
    pub panics: AtomicU64,
    /// Records a transform dropped because its call failed.
    pub dropped: AtomicU64,
}

impl PluginStats {
    pub(crate) fn failed(&self, panicked: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if panicked {
            self.panics.fetch_add(1, Ordering::Relaxed);
        }
    }
}

static STATS: Mutex<BTreeMap<String, Arc<PluginStats>>> = Mutex::new(BTreeMap::new());

/// The counters of component `name` (created at first use; kept across
/// reloads, as the other per-component counters are).
pub(crate) fn for_component(name: &str) -> Arc<PluginStats> {
    let mut stats = STATS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    stats.entry(name.to_owned()).or_default().clone()
}

/// Every component's plugin counters, by name.
pub fn plugin_stats() -> Vec<(String, Arc<PluginStats>)> {
    let stats = STATS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    stats
        .iter()
        .map(|(name, stats)| (name.clone(), stats.clone()))
        .collect()
}
