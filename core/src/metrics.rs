//! What a component exports to `/metrics` beyond the records and bytes its
//! emitter or delivery loop counts: its own counters and gauges (records it
//! dropped and why, connections it refused, requests it timed out). A
//! component lists them once, when it is built; the admin endpoint reads
//! them at each scrape and labels each with the component's id, kind and
//! type, so it knows no component.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Whether a value only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows; named `..._total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Reads a metric's current value.
pub type ReadValue = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One exported value of a component.
#[derive(Clone)]
pub struct ComponentMetric {
    /// The metric's name, `shipper_` first, Prometheus conventions (a
    /// counter ends in `_total`, the unit before it).
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Labels beyond the component's own (say `reason="oversized"`).
    pub labels: Vec<(&'static str, &'static str)>,
    /// Reads the value.
    pub read: ReadValue,
}

impl ComponentMetric {
    /// A counter.
    pub fn counter(
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        ComponentMetric {
            name,
            help,
            kind: MetricKind::Counter,
            labels: labels.to_vec(),
            read: Arc::new(read),
        }
    }

    /// A gauge.
    pub fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        ComponentMetric {
            kind: MetricKind::Gauge,
            ..ComponentMetric::counter(name, help, labels, read)
        }
    }

    /// The value now.
    pub fn value(&self) -> u64 {
        (self.read)()
    }
}

/// A counter kept in a field of a shared struct: its name, help, labels
/// and the field. See [`counters_of`].
pub type CounterField<T> = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    fn(&T) -> &AtomicU64,
);

/// Counters read from the fields of `counters`, one per row of `fields`.
pub fn counters_of<T: Send + Sync + 'static>(
    counters: &Arc<T>,
    fields: &[CounterField<T>],
) -> Vec<ComponentMetric> {
    fields
        .iter()
        .map(|&(name, help, labels, field)| {
            let counters = counters.clone();
            ComponentMetric::counter(name, help, labels, move || {
                field(&counters).load(Ordering::Relaxed)
            })
        })
        .collect()
}

impl std::fmt::Debug for ComponentMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentMetric")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("value", &self.value())
            .finish()
    }
}
