//! Counters of a component that runs a dynamic plugin: calls that
//! failed or panicked, and records a transform dropped for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shipper_core::metrics::{counters_of, ComponentMetric};

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

    /// The counters as metrics (`with_dropped` for a transform).
    pub fn metrics(self: &Arc<Self>, with_dropped: bool) -> Vec<ComponentMetric> {
        let mut metrics = counters_of(
            self,
            &[
                (
                    "shipper_plugin_errors_total",
                    "Calls into a plugin library that failed (retryable, fatal or panicked).",
                    &[],
                    |s| &s.errors,
                ),
                (
                    "shipper_plugin_panics_total",
                    "Calls into a plugin library that panicked; each replaced the plugin's instance.",
                    &[],
                    |s| &s.panics,
                ),
            ],
        );
        if with_dropped {
            metrics.extend(counters_of(
                self,
                &[(
                    "shipper_plugin_dropped_records_total",
                    "Records a transform plugin dropped because its call failed.",
                    &[],
                    |s| &s.dropped,
                )],
            ));
        }
        metrics
    }
}
