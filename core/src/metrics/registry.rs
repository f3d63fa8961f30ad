//! The registry: every component's metrics under its labels, the
//! process-wide values collected at each scrape, and the rendering in
//! Prometheus' text format (by `prometheus-client`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{ComponentMetric, MetricKind, Value};

/// The labels every component metric carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentLabels {
    /// Its name in the config (`component_id`).
    pub id: String,
    /// `source`, `transform` or `sink` (`component_kind`).
    pub kind: &'static str,
    /// Its `type` (`component_type`).
    pub type_name: String,
}

impl ComponentLabels {
    /// The labels of component `id`, a `kind` of type `type_name`.
    pub fn new(id: &str, kind: &'static str, type_name: &str) -> Self {
        ComponentLabels {
            id: id.to_owned(),
            kind,
            type_name: type_name.to_owned(),
        }
    }

    fn with(&self, extra: &[(&'static str, &'static str)]) -> Labels {
        let mut labels = vec![
            ("component_id".to_owned(), self.id.clone()),
            ("component_kind".to_owned(), self.kind.to_owned()),
            ("component_type".to_owned(), self.type_name.clone()),
        ];
        labels.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        labels
    }
}

/// A series' labels, in order.
type Labels = Vec<(String, String)>;

/// Produces process-wide values at each scrape.
type Collect = Arc<dyn Fn(&mut Samples) + Send + Sync>;

/// The metrics of a process (or of one embedded pipeline). Clones share it.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    next_id: u64,
    /// Registered components' metrics, by registration.
    live: BTreeMap<u64, (ComponentLabels, Vec<ComponentMetric>)>,
    /// What the counters and histograms of dropped registrations had
    /// counted, by series.
    retired: BTreeMap<(&'static str, Labels), (&'static str, Value)>,
    collectors: Vec<Collect>,
}

/// A component's metrics in the registry. Dropping it takes the component
/// out; what its counters counted stays, added to whatever registers
/// under the same labels later.
#[must_use = "dropping a registration takes the component's metrics out of the registry"]
pub struct Registration {
    registry: Registry,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        let Some((labels, metrics)) = state.live.remove(&self.id) else {
            return;
        };
        for metric in metrics {
            if metric.kind == MetricKind::Gauge {
                continue;
            }
            let Some(value) = metric.read() else { continue };
            state
                .retired
                .entry((metric.name, labels.with(&metric.labels)))
                .and_modify(|(_, total)| total.add(&value))
                .or_insert((metric.help, value));
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Registry")
            .field("components", &state.live.len())
            .field("collectors", &state.collectors.len())
            .finish()
    }
}

/// Values a collector reports at a scrape.
#[derive(Debug, Default)]
pub struct Samples {
    samples: Vec<(String, String, Labels, Value)>,
}

impl Samples {
    /// A counter `name` (ending in `_total`) with `labels`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.push(name, help, labels, Value::Counter(value));
    }

    /// A counter `name` (ending in `_total`) of a quantity with fractions.
    pub fn counter_f64(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, labels, Value::CounterF64(value));
    }

    /// A gauge `name` with `labels`.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, labels, Value::Gauge(value));
    }

    fn push(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: Value) {
        let labels = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples
            .push((name.to_owned(), help.to_owned(), labels, value));
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `metrics` of the component `labels`. Several
    /// registrations under the same labels add up (a transform fed by two
    /// sources runs an emitter under each).
    pub fn register(&self, labels: ComponentLabels, metrics: Vec<ComponentMetric>) -> Registration {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.live.insert(id, (labels, metrics));
        Registration {
            registry: self.clone(),
            id,
        }
    }

    /// Calls `collect` at every scrape for values that belong to no
    /// component (the log's, the process's).
    pub fn collect(&self, collect: impl Fn(&mut Samples) + Send + Sync + 'static) {
        self.lock().collectors.push(Arc::new(collect));
    }

    /// Forgets what components no longer configured had counted: `keep`
    /// says, from a component's labels, whether it stays (a component
    /// that changed its type is another component).
    pub fn retain_components(&self, keep: impl Fn(&ComponentLabels) -> bool) {
        self.lock().retired.retain(|(_, labels), _| {
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, value)| value.as_str())
            };
            let (Some(id), Some(kind), Some(type_name)) = (
                label("component_id"),
                label("component_kind"),
                label("component_type"),
            ) else {
                return true;
            };
            let kind = match kind {
                "source" => "source",
                "transform" => "transform",
                _ => "sink",
            };
            keep(&ComponentLabels::new(id, kind, type_name))
        });
    }

    /// The value of series `name` whose labels include every pair of
    /// `labels`, summed over the series that match; `None` when none does.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        let families = self.gather();
        let family = families.get(name)?;
        let mut total: Option<Value> = None;
        for (series, value) in &family.series {
            let matches = labels
                .iter()
                .all(|(key, want)| series.iter().any(|(k, v)| k == key && v == want));
            if matches {
                match &mut total {
                    Some(total) => total.add(value),
                    None => total = Some(value.clone()),
                }
            }
        }
        total
    }

    /// Every series now, by family.
    fn gather(&self) -> BTreeMap<String, Family> {
        let (live, retired, collectors) = {
            let state = self.lock();
            let live: Vec<(ComponentLabels, Vec<ComponentMetric>)> =
                state.live.values().cloned().collect();
            (live, state.retired.clone(), state.collectors.clone())
        };
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut add = |name: &str, help: &str, labels: Labels, value: Value| {
            let family = families.entry(name.to_owned()).or_insert_with(|| Family {
                help: help.to_owned(),
                kind: value.kind(),
                series: BTreeMap::new(),
            });
            if family.kind != value.kind() {
                tracing::warn!(
                    metric = name,
                    "a metric registered with two kinds; one dropped"
                );
                return;
            }
            family
                .series
                .entry(labels)
                .and_modify(|total| total.add(&value))
                .or_insert(value);
        };
        // Read outside the lock: a read may take a lock of its own.
        for (labels, metrics) in &live {
            for metric in metrics {
                if let Some(value) = metric.read() {
                    add(metric.name, metric.help, labels.with(&metric.labels), value);
                }
            }
        }
        for ((name, labels), (help, value)) in retired {
            add(name, help, labels, value);
        }
        let mut samples = Samples::default();
        for collect in &collectors {
            collect(&mut samples);
        }
        for (name, help, labels, value) in samples.samples {
            add(&name, &help, labels, value);
        }
        families
    }

    /// Every metric in Prometheus' text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Gathered(self.gather())));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// One metric family: its help, kind and series.
#[derive(Debug)]
struct Family {
    help: String,
    kind: MetricKind,
    series: BTreeMap<Labels, Value>,
}

/// The families of one scrape, for `prometheus-client` to encode.
#[derive(Debug)]
struct Gathered(BTreeMap<String, Family>);

impl prometheus_client::collector::Collector for Gathered {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, family) in &self.0 {
            let (name, metric_type) = match family.kind {
                // The encoder writes the `_total` itself.
                MetricKind::Counter => (
                    name.strip_suffix("_total").unwrap_or(name),
                    MetricType::Counter,
                ),
                MetricKind::Gauge => (name.as_str(), MetricType::Gauge),
                MetricKind::Histogram => (name.as_str(), MetricType::Histogram),
            };
            let mut metric = encoder.encode_descriptor(name, &family.help, None, metric_type)?;
            for (labels, value) in &family.series {
                let series = metric.encode_family(labels)?;
                match value {
                    Value::Counter(count) => ConstCounter::new(*count).encode(series)?,
                    Value::CounterF64(count) => ConstCounter::new(*count).encode(series)?,
                    Value::Gauge(level) => ConstGauge::new(*level).encode(series)?,
                    Value::Histogram(snapshot) => {
                        // The encoder takes each bucket's own count.
                        let mut below = 0;
                        let buckets: Vec<(f64, u64)> = snapshot
                            .buckets
                            .iter()
                            .map(|&(bound, cumulative)| {
                                let own = cumulative - below;
                                below = cumulative;
                                (bound, own)
                            })
                            .collect();
                        let mut series = series;
                        series.encode_histogram::<NoLabelSet>(
                            snapshot.sum_seconds,
                            snapshot.count,
                            &buckets,
                            None,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::metrics::Histogram;

    fn counter(value: &Arc<AtomicU64>) -> ComponentMetric {
        let value = value.clone();
        ComponentMetric::counter(
            "shipper_test_dropped_records_total",
            "Records dropped.",
            &[("reason", "oversized")],
            move || value.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn a_counter_is_rendered_with_the_components_labels() {
        let registry = Registry::new();
        let count = Arc::new(AtomicU64::new(7));
        let _registration = registry.register(
            ComponentLabels::new("in", "source", "socket"),
            vec![counter(&count)],
        );
        let text = registry.render();
        assert!(
            text.contains("# TYPE shipper_test_dropped_records_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "shipper_test_dropped_records_total{component_id=\"in\",component_kind=\"source\",component_type=\"socket\",reason=\"oversized\"} 7"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_replaced_component_keeps_counting_from_where_it_was() {
        let registry = Registry::new();
        let labels = ComponentLabels::new("in", "source", "socket");
        let first = Arc::new(AtomicU64::new(5));
        let registration = registry.register(labels.clone(), vec![counter(&first)]);
        drop(registration);
        let second = Arc::new(AtomicU64::new(2));
        let _registration = registry.register(labels, vec![counter(&second)]);
        let value = registry.value(
            "shipper_test_dropped_records_total",
            &[("component_id", "in")],
        );
        assert_eq!(value, Some(Value::Counter(7)));
        registry.retain_components(|_| false);
        // (A live registration is never forgotten.)
        let value = registry.value(
            "shipper_test_dropped_records_total",
            &[("component_id", "in")],
        );
        assert_eq!(value, Some(Value::Counter(2)), "only the live one is left");
    }

    #[test]
    fn histograms_gauges_and_collected_values_render() {
        let registry = Registry::new();
        let histogram = Arc::new(Histogram::default());
        histogram.observe(Duration::from_millis(3));
        let _registration = registry.register(
            ComponentLabels::new("out", "sink", "http"),
            vec![
                ComponentMetric::histogram(
                    "shipper_component_request_seconds",
                    "Request time.",
                    &[],
                    histogram,
                ),
                ComponentMetric::gauge_f64("shipper_component_lag_seconds", "Lag.", &[], || None),
            ],
        );
        registry.collect(|samples| samples.gauge("process_open_fds", "Open fds.", &[], 12.0));
        let text = registry.render();
        assert!(
            text.contains("shipper_component_request_seconds_bucket{component_id=\"out\",component_kind=\"sink\",component_type=\"http\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("shipper_component_request_seconds_count{component_id=\"out\",component_kind=\"sink\",component_type=\"http\"} 1"), "{text}");
        assert!(text.contains("process_open_fds 12"), "{text}");
        assert!(!text.contains("shipper_component_lag_seconds{"), "{text}");
    }
}
