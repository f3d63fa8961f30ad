//! Metrics: what every component counts, and the one registry `/metrics`
//! renders.
//!
//! A component lists its metrics once, when it is built
//! ([`ComponentMetric`]s: counters, gauges and histograms, each a name, a
//! help line, its own labels and a way to read it), and the runtime
//! registers that list in the process's [`Registry`] under the
//! component's labels (`component_id`, `component_kind`,
//! `component_type`). The registry reads every metric at each scrape and
//! renders them with `prometheus-client`; it knows no component. A
//! registration dropped (the component stopped by a reload) keeps what
//! its counters counted, so no counter ever goes back.

mod histogram;
mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use histogram::{Histogram, HistogramSnapshot, SECONDS_BUCKETS};
pub use registry::{ComponentLabels, Registration, Registry, Samples};

/// The name of the histogram of a sink's requests to its backend, from
/// sending one to having its answer: any sink that makes requests
/// declares it under this name ([`ComponentMetric::histogram`]).
pub const REQUEST_SECONDS: &str = "shipper_component_request_seconds";
/// The help line of [`REQUEST_SECONDS`].
pub const REQUEST_SECONDS_HELP: &str =
    "Time from sending a request to the backend to having its answer or failure.";

/// Whether a value only grows (a counter), goes up and down (a gauge), or
/// is a distribution of durations (a histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows; named `..._total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Durations in buckets; named `..._seconds`.
    Histogram,
}

/// A metric's value at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's count.
    Counter(u64),
    /// A counter of a quantity with fractions (CPU seconds).
    CounterF64(f64),
    /// A gauge's level.
    Gauge(f64),
    /// A histogram's buckets.
    Histogram(HistogramSnapshot),
}

impl Value {
    /// The kind of metric this is a value of.
    pub fn kind(&self) -> MetricKind {
        match self {
            Value::Counter(_) | Value::CounterF64(_) => MetricKind::Counter,
            Value::Gauge(_) => MetricKind::Gauge,
            Value::Histogram(_) => MetricKind::Histogram,
        }
    }

    /// `other` added to this value (two emitters of one transform, or a
    /// live counter and what its predecessors counted).
    pub fn add(&mut self, other: &Value) {
        match (self, other) {
            (Value::Counter(a), Value::Counter(b)) => *a += b,
            (Value::CounterF64(a), Value::CounterF64(b)) => *a += b,
            (Value::Gauge(a), Value::Gauge(b)) => *a += b,
            (Value::Histogram(a), Value::Histogram(b)) => a.add(b),
            _ => {}
        }
    }
}

/// Reads a metric's current value; `None` when it has none now (the lag of
/// a sink whose cursor does not exist yet).
pub type ReadValue = Arc<dyn Fn() -> Option<Value> + Send + Sync>;

/// One metric of a component.
#[derive(Clone)]
pub struct ComponentMetric {
    /// The metric's name, `shipper_` first, Prometheus conventions: the
    /// unit before the suffix, a counter ends in `_total`.
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// Counter, gauge or histogram.
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
            read: Arc::new(move || Some(Value::Counter(read()))),
        }
    }

    /// A gauge of whole numbers.
    pub fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        ComponentMetric::gauge_f64(name, help, labels, move || Some(read() as f64))
    }

    /// A gauge that may have no value now.
    pub fn gauge_f64(
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
        read: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        ComponentMetric {
            name,
            help,
            kind: MetricKind::Gauge,
            labels: labels.to_vec(),
            read: Arc::new(move || read().map(Value::Gauge)),
        }
    }

    /// A histogram of durations.
    pub fn histogram(
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
        histogram: Arc<Histogram>,
    ) -> Self {
        ComponentMetric {
            name,
            help,
            kind: MetricKind::Histogram,
            labels: labels.to_vec(),
            read: Arc::new(move || Some(Value::Histogram(histogram.snapshot()))),
        }
    }

    /// The value now.
    pub fn read(&self) -> Option<Value> {
        (self.read)()
    }

    /// A counter's count or a gauge's level (rounded down) now; 0 for a
    /// histogram or a metric without a value.
    pub fn value(&self) -> u64 {
        match self.read() {
            Some(Value::Counter(count)) => count,
            Some(Value::Gauge(level) | Value::CounterF64(level)) => level as u64,
            Some(Value::Histogram(_)) | None => 0,
        }
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
            .field("value", &self.read())
            .finish()
    }
}
