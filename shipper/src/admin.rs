//! The admin endpoint, on loopback by default: `/health` (200 when ready,
//! 503 with the reason when not), Prometheus `/metrics` (records and
//! bytes in and out per component, retries and errors, the log's size,
//! drops and flushes, each sink's lag in records and seconds, and each http
//! sink's requests, retries, dead letters, bytes and request latency) and
//! `POST /reload` (re-read the config file; see `runtime::ReloadOutcome`
//! for the answers).
//!
//! What `/metrics` reports on is swapped as a whole by each reload
//! ([`AdminState::set_pipeline`]), so it always shows the components
//! running now.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use shipper_core::chunk::now_nanos;
use shipper_core::emit::{EmitterCounters, EmitterStats};
use shipper_core::log::Log;
use shipper_core::metrics::{ComponentMetric, MetricKind};
use shipper_core::plugin::Shutdown;
use shipper_plugins::listen::ListenerLimits;
use shipper_plugins::sinks::http::{HttpSinkStats, LatencyHistogram, LatencySnapshot};

use crate::runtime::{ReloadHandle, ReloadTrigger};

/// Live counters of one sink's delivery loop.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records acknowledged by the backend.
    pub records: AtomicU64,
    /// Stored (compressed) bytes acknowledged.
    pub bytes: AtomicU64,
    /// Deliveries acknowledged.
    pub batches: AtomicU64,
    /// Deliveries retried after a retryable failure.
    pub retries: AtomicU64,
    /// Deliveries that failed (retryable or not).
    pub errors: AtomicU64,
    /// Chunks the sink could not decode, put in quarantine.
    pub quarantined: AtomicU64,
    /// Uncompressed bytes (record bytes plus framing) acknowledged: with
    /// `bytes`, the compression ratio of what the sink delivered.
    pub raw_bytes: AtomicU64,
    /// How long each acknowledged `deliver` call took, retries inside the
    /// sink included.
    pub deliver_seconds: LatencyHistogram,
    /// An http sink's own counters (requests, latency, dead letters).
    http: Mutex<Option<Arc<HttpSinkStats>>>,
}

impl SinkStats {
    /// Reports `http` from now on. It takes over the counts of the http
    /// stats it replaces (a restarted sink), so counters never go back.
    pub fn attach_http(&self, http: Arc<HttpSinkStats>) {
        let mut slot = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(earlier) = slot.as_ref().filter(|earlier| !Arc::ptr_eq(earlier, &http)) {
            http.absorb(earlier);
        }
        *slot = Some(http);
    }

    /// The http sink counters, for an http sink.
    pub fn http(&self) -> Option<Arc<HttpSinkStats>> {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running pipeline's counters, as `/metrics` reports them.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Each source's and transform's emitter counters, with its kind. A
    /// transform fed by several sources appears once per source.
    pub components: Vec<(String, &'static str, Arc<EmitterStats>)>,
    /// What emitters replaced by a reload had counted, by component and
    /// kind: added to the live counters so a counter never goes backwards.
    pub retired: BTreeMap<(String, &'static str), EmitterCounters>,
    /// Each sink's counters.
    pub sinks: Vec<(String, Arc<SinkStats>)>,
    /// The components' own metrics (see `shipper_core::metrics`), with the
    /// labels that name the component.
    pub component_metrics: Vec<(ComponentLabels, ComponentMetric)>,
    /// What counters of components a reload replaced had counted: added
    /// to the live ones so a counter never goes backwards.
    pub retired_metrics: BTreeMap<MetricKey, u64>,
}

/// The labels every component metric carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ComponentLabels {
    /// Its name in the config.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub kind: &'static str,
    /// Its `type`.
    pub type_name: String,
}

/// One series of a component metric: the component, the metric's name and
/// its own labels.
pub type MetricKey = (
    ComponentLabels,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// The key of `metric` of the component `labels`.
pub fn metric_key(labels: &ComponentLabels, metric: &ComponentMetric) -> MetricKey {
    (labels.clone(), metric.name, metric.labels.clone())
}

/// A family of component metrics: help, kind and `(labels, value)` samples.
type Family<'a> = (&'a str, MetricKind, Vec<(String, u64)>);

/// The components' own metrics, grouped by name.
fn render_component_metrics(out: &mut String, pipeline: &PipelineStats) {
    let mut series: BTreeMap<&str, Family<'_>> = BTreeMap::new();
    for (labels, metric) in &pipeline.component_metrics {
        let key = metric_key(labels, metric);
        let retired = pipeline.retired_metrics.get(&key).copied().unwrap_or(0);
        let value = match metric.kind {
            MetricKind::Counter => metric.value() + retired,
            MetricKind::Gauge => metric.value(),
        };
        let mut rendered = format!(
            "component_id=\"{}\",component_kind=\"{}\",component_type=\"{}\"",
            label(&labels.id),
            labels.kind,
            label(&labels.type_name)
        );
        for (name, value) in &metric.labels {
            let _ = write!(rendered, ",{name}=\"{}\"", label(value));
        }
        let entry = series
            .entry(metric.name)
            .or_insert((metric.help, metric.kind, Vec::new()));
        if entry.0.is_empty() {
            entry.0 = metric.help;
        }
        entry.2.push((rendered, value));
    }
    for (name, (help, kind, samples)) in series {
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        family(out, name, kind, help);
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// What the endpoint reports on, and where it sends reloads.
#[derive(Debug)]
pub struct AdminState {
    /// The log.
    pub log: Log,
    pipeline: RwLock<Arc<PipelineStats>>,
    reload: ReloadHandle,
}

impl AdminState {
    /// A state reporting no components yet (see [`AdminState::set_pipeline`]).
    pub fn new(log: Log, reload: ReloadHandle) -> Self {
        AdminState {
            log,
            pipeline: RwLock::new(Arc::default()),
            reload,
        }
    }

    /// The counters `/metrics` reports on now.
    pub fn pipeline(&self) -> Arc<PipelineStats> {
        self.pipeline
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces what `/metrics` reports on (after a start or a reload).
    pub fn set_pipeline(&self, pipeline: PipelineStats) {
        *self
            .pipeline
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(pipeline);
    }
}

/// Serves the endpoint on `listener` until `stop` is triggered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    stop: Shutdown,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .with_state(state);
    // Monitoring scrapes and a reload now and then: a few connections,
    // short deadlines, no request bodies to speak of.
    let limits = ListenerLimits {
        max_connections: 64,
        header_timeout: std::time::Duration::from_secs(10),
        body_timeout: std::time::Duration::from_secs(10),
        max_buffered_bytes: 1 << 20,
        ..ListenerLimits::default()
    };
    shipper_plugins::listen::http::serve(
        listener,
        router,
        limits,
        Arc::default(),
        "admin endpoint".to_owned(),
        stop,
    )
    .await;
    Ok(())
}

async fn health(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let (status, body) = if let Some(reason) = state.log.poisoned() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{{\"status\":\"not ready\",\"reason\":{}}}",
                json_string(&format!("log writer stopped: {reason}"))
            ),
        )
    } else if state.log.disk_full() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"not ready\",\"reason\":\"disk full: no room for a new segment; appends wait until space is freed\"}".to_owned(),
        )
    } else if state.log.is_full() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"not ready\",\"reason\":\"disk budget reached: appends wait until sinks catch up\"}".to_owned(),
        )
    } else {
        (StatusCode::OK, "{\"status\":\"ready\"}".to_owned())
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// `POST /reload`: the pipeline re-reads its config file; the answer is
/// the reload's outcome, as text, with its status.
async fn reload(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let (status, body) = match state.reload.reload(ReloadTrigger::Api).await {
        Some(outcome) => (
            StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("{outcome}\n"),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not reloading: shipper is shutting down\n".to_owned(),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Prometheus label value, escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let state = state.clone();
    // Lag needs a read of the log: keep it off the async workers' queue.
    let body = tokio::task::spawn_blocking(move || render(&state))
        .await
        .unwrap_or_else(|e| format!("# metrics failed: {e}\n"));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Adds `counters` into `total`.
pub fn add_counters(total: &mut EmitterCounters, counters: &EmitterCounters) {
    total.records += counters.records;
    total.bytes += counters.bytes;
    total.chunks += counters.chunks;
}

/// The http sinks' own families: requests, retries, failures, dead
/// letters, bytes and the request-latency histogram.
fn render_http_sinks(out: &mut String, sinks: &[(&String, Arc<HttpSinkStats>)]) {
    type HttpCounter = fn(&HttpSinkStats) -> &AtomicU64;
    if sinks.is_empty() {
        return;
    }
    let counters: [(&str, &str, HttpCounter); 8] = [
        (
            "shipper_http_sink_requests_total",
            "HTTP requests sent, retries included.",
            |s| &s.requests,
        ),
        (
            "shipper_http_sink_retries_total",
            "HTTP requests sent again after the previous try of the batch failed.",
            |s| &s.retries,
        ),
        (
            "shipper_http_sink_failures_total",
            "HTTP requests that failed and will be retried (connection, timeout, 408, 429, 5xx, bad answer).",
            |s| &s.failures,
        ),
        (
            "shipper_http_sink_dead_lettered_batches_total",
            "Batches refused for good (4xx) and written to the dead-letter file.",
            |s| &s.dead_lettered_batches,
        ),
        (
            "shipper_http_sink_dead_lettered_records_total",
            "Records in dead-lettered batches.",
            |s| &s.dead_lettered_records,
        ),
        (
            "shipper_http_sink_body_bytes_total",
            "Request body bytes sent as on the wire (compressed), retries included.",
            |s| &s.body_bytes,
        ),
        (
            "shipper_http_sink_raw_bytes_total",
            "Uncompressed record bytes of the requests sent, retries included.",
            |s| &s.raw_bytes,
        ),
        (
            "shipper_http_sink_contradictions_total",
            "Answers of a shipper receiver that contradict this log (a high-water mark beyond it, a 409): each stopped the sink, its records kept.",
            |s| &s.contradictions,
        ),
    ];
    for (name, help, counter) in counters {
        family(out, name, "counter", help);
        for (sink, stats) in sinks {
            let value = HttpSinkStats::get(counter(stats));
            let _ = writeln!(out, "{name}{{sink=\"{}\"}} {value}", label(sink));
        }
    }
    let name = "shipper_http_sink_request_seconds";
    family(
        out,
        name,
        "histogram",
        "Time from sending an HTTP request to having read its answer or failure.",
    );
    for (sink, stats) in sinks {
        write_histogram(out, name, &label(sink), &stats.latency.snapshot());
    }
}

/// One histogram's buckets, sum and count for `sink` (a label, escaped).
fn write_histogram(out: &mut String, name: &str, sink: &str, latency: &LatencySnapshot) {
    for (bound, count) in &latency.buckets {
        let le = if bound.is_infinite() {
            String::from("+Inf")
        } else {
            bound.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{sink=\"{sink}\",le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_sum{{sink=\"{sink}\"}} {}", latency.sum_seconds);
    let _ = writeln!(out, "{name}_count{{sink=\"{sink}\"}} {}", latency.count);
}

/// The metrics in Prometheus' text format.
pub fn render(state: &AdminState) -> String {
    let mut out = String::new();
    let pipeline = state.pipeline();
    // A transform fed by several sources has an emitter under each, and a
    // reload may have replaced some: sum them all.
    let mut totals: BTreeMap<(&str, &str), EmitterCounters> = BTreeMap::new();
    for ((name, kind), counters) in &pipeline.retired {
        add_counters(totals.entry((name.as_str(), *kind)).or_default(), counters);
    }
    for (name, kind, stats) in &pipeline.components {
        add_counters(
            totals.entry((name.as_str(), *kind)).or_default(),
            &stats.snapshot(),
        );
    }
    let components: Vec<_> = totals.into_iter().map(|((n, k), c)| (n, k, c)).collect();
    family(
        &mut out,
        "shipper_component_records_in_total",
        "counter",
        "Records a source or transform put into the pipeline.",
    );
    for (name, kind, c) in &components {
        let _ = writeln!(
            out,
            "shipper_component_records_in_total{{component=\"{}\",kind=\"{kind}\"}} {}",
            label(name),
            c.records
        );
    }
    family(
        &mut out,
        "shipper_component_bytes_in_total",
        "counter",
        "Record payload bytes a source or transform put into the pipeline.",
    );
    for (name, kind, c) in &components {
        let _ = writeln!(
            out,
            "shipper_component_bytes_in_total{{component=\"{}\",kind=\"{kind}\"}} {}",
            label(name),
            c.bytes
        );
    }
    family(
        &mut out,
        "shipper_component_chunks_total",
        "counter",
        "Compressed chunks a component appended to the log.",
    );
    for (name, kind, c) in &components {
        let _ = writeln!(
            out,
            "shipper_component_chunks_total{{component=\"{}\",kind=\"{kind}\"}} {}",
            label(name),
            c.chunks
        );
    }
    let sink_counters: [Counter<SinkStats>; 6] = [
        (
            "shipper_sink_records_out_total",
            "Records the backend acknowledged.",
            |s| s.records.load(Ordering::Relaxed),
        ),
        (
            "shipper_sink_bytes_out_total",
            "Stored bytes the backend acknowledged.",
            |s| s.bytes.load(Ordering::Relaxed),
        ),
        (
            "shipper_sink_batches_total",
            "Deliveries the backend acknowledged.",
            |s| s.batches.load(Ordering::Relaxed),
        ),
        (
            "shipper_sink_retries_total",
            "Deliveries retried after a retryable failure.",
            |s| s.retries.load(Ordering::Relaxed),
        ),
        (
            "shipper_sink_errors_total",
            "Deliveries that failed.",
            |s| s.errors.load(Ordering::Relaxed),
        ),
        (
            "shipper_sink_quarantined_chunks_total",
            "Chunks the sink could not decode, moved to DATA_DIR/quarantine.",
            |s| s.quarantined.load(Ordering::Relaxed),
        ),
    ];
    counter_families(&mut out, "sink", &pipeline.sinks, &sink_counters);
    family(
        &mut out,
        "shipper_sink_raw_bytes_out_total",
        "counter",
        "Uncompressed bytes the backend acknowledged.",
    );
    for (sink, stats) in &pipeline.sinks {
        let _ = writeln!(
            out,
            "shipper_sink_raw_bytes_out_total{{sink=\"{}\"}} {}",
            label(sink),
            stats.raw_bytes.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "shipper_sink_compression_ratio",
        "gauge",
        "Uncompressed over stored bytes of what the sink delivered.",
    );
    for (sink, stats) in &pipeline.sinks {
        let stored = stats.bytes.load(Ordering::Relaxed);
        let raw = stats.raw_bytes.load(Ordering::Relaxed);
        let ratio = if stored == 0 {
            0.0
        } else {
            raw as f64 / stored as f64
        };
        let _ = writeln!(
            out,
            "shipper_sink_compression_ratio{{sink=\"{}\"}} {ratio:.3}",
            label(sink)
        );
    }
    let name = "shipper_sink_deliver_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Time of each acknowledged delivery, the sink's own retries included.",
    );
    for (sink, stats) in &pipeline.sinks {
        write_histogram(
            &mut out,
            name,
            &label(sink),
            &stats.deliver_seconds.snapshot(),
        );
    }
    let http_sinks: Vec<(&String, Arc<HttpSinkStats>)> = pipeline
        .sinks
        .iter()
        .filter_map(|(sink, stats)| Some((sink, stats.http()?)))
        .collect();
    render_http_sinks(&mut out, &http_sinks);
    render_component_metrics(&mut out, &pipeline);
    render_plugins(&mut out);
    let next = state.log.next_offset();
    let now = now_nanos();
    family(
        &mut out,
        "shipper_sink_lag_records",
        "gauge",
        "Records stored but not yet acknowledged by the sink.",
    );
    let mut lags = Vec::new();
    for (sink, _) in &pipeline.sinks {
        let cursor = state.log.cursor(sink).unwrap_or(0);
        let seconds = match state.log.record_time_at(cursor) {
            Some(time) if cursor < next => now.saturating_sub(time) as f64 / 1e9,
            _ => 0.0,
        };
        lags.push((sink, next.saturating_sub(cursor), seconds));
    }
    for (sink, records, _) in &lags {
        let _ = writeln!(
            out,
            "shipper_sink_lag_records{{sink=\"{}\"}} {records}",
            label(sink)
        );
    }
    family(
        &mut out,
        "shipper_sink_lag_seconds",
        "gauge",
        "Age of the oldest record the sink has not had acknowledged.",
    );
    for (sink, _, seconds) in &lags {
        let _ = writeln!(
            out,
            "shipper_sink_lag_seconds{{sink=\"{}\"}} {seconds:.3}",
            label(sink)
        );
    }
    let m = state.log.metrics();
    let log_metrics: [(&str, &str, &str, f64); 16] = [
        (
            "shipper_log_records_appended_total",
            "counter",
            "Records appended to the log.",
            m.records_appended as f64,
        ),
        (
            "shipper_log_bytes_appended_total",
            "counter",
            "Compressed bytes appended to the log.",
            m.bytes_appended as f64,
        ),
        (
            "shipper_log_flushes_total",
            "counter",
            "Flushes to stable storage.",
            m.flushes as f64,
        ),
        (
            "shipper_log_flush_seconds_total",
            "counter",
            "Time spent in flushes.",
            m.flush_nanos as f64 / 1e9,
        ),
        (
            "shipper_log_segments",
            "gauge",
            "Segment files on disk.",
            m.segments as f64,
        ),
        (
            "shipper_log_disk_bytes",
            "gauge",
            "Bytes of segment files on disk.",
            m.disk_bytes as f64,
        ),
        (
            "shipper_log_segments_deleted_total",
            "counter",
            "Segments deleted after every sink acknowledged them.",
            m.segments_deleted as f64,
        ),
        (
            "shipper_log_records_dropped_total",
            "counter",
            "Records deleted unacknowledged by when_full = drop_oldest.",
            m.records_dropped as f64,
        ),
        (
            "shipper_log_chunks_skipped_total",
            "counter",
            "Damaged chunks skipped.",
            m.chunks_skipped as f64,
        ),
        (
            "shipper_log_full",
            "gauge",
            "1 while appends wait for room: the disk budget is reached or the disk is full.",
            f64::from(u8::from(state.log.is_full())),
        ),
        (
            "shipper_log_disk_full",
            "gauge",
            "1 while the filesystem has no room for a new segment.",
            m.disk_full as f64,
        ),
        (
            "shipper_log_disk_full_waits_total",
            "counter",
            "Times appends waited for the filesystem to have room.",
            m.disk_full_waits as f64,
        ),
        (
            "shipper_log_transient_errors_total",
            "counter",
            "Operations the log writer tried again after a passing error (out of file descriptors or memory).",
            m.transient_errors as f64,
        ),
        (
            "shipper_log_records_lost_total",
            "counter",
            "Records recovery found lost to damage when the log was opened.",
            m.records_lost as f64,
        ),
        (
            "shipper_log_next_offset",
            "gauge",
            "Offset the next record gets.",
            m.next_offset as f64,
        ),
        (
            "shipper_log_durable_offset",
            "gauge",
            "Every record below this offset is durable.",
            m.durable_offset as f64,
        ),
    ];
    for (name, kind, help, value) in log_metrics {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// The dynamic plugins' counters, by component (only components that run
/// a plugin appear).
fn render_plugins(out: &mut String) {
    let plugins = shipper_plugin_host::plugin_stats();
    let counters: [Counter<shipper_plugin_host::PluginStats>; 3] = [
        (
            "shipper_plugin_errors_total",
            "Calls into a plugin library that failed (retryable, fatal or panicked).",
            |s| s.errors.load(Ordering::Relaxed),
        ),
        (
            "shipper_plugin_panics_total",
            "Calls into a plugin library that panicked; each replaced the plugin's instance.",
            |s| s.panics.load(Ordering::Relaxed),
        ),
        (
            "shipper_plugin_dropped_records_total",
            "Records a transform plugin dropped because its call failed.",
            |s| s.dropped.load(Ordering::Relaxed),
        ),
    ];
    counter_families(out, "component", &plugins, &counters);
}

/// A counter family: its name, its help, and how to read it from a row.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

/// One counter family per `(name, help, value)` of `counters`, with a
/// sample per row labelled `key="NAME"`.
fn counter_families<T>(
    out: &mut String,
    key: &str,
    rows: &[(String, Arc<T>)],
    counters: &[Counter<T>],
) {
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        for (row, stats) in rows {
            let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {}", label(row), value(stats));
        }
    }
}
