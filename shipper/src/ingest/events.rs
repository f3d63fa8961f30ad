//! The application's own events as records: a `tracing` layer
//! ([`EventLayer`], also a `log` backend) that ships every event it sees
//! through an [`Ingestor`], one JSON object each:
//!
//! ```json
//! {"ts":"…","level":"WARN","target":"app::db","message":"slow query","ms":812,"spans":["request","query"]}
//! ```
//!
//! It never blocks the application: an event is serialized on the calling
//! thread and handed to a bounded queue; a thread of the layer's own
//! inserts from there. When the queue is full the event is dropped and
//! counted ([`EventLayer::dropped`]), so a storm of events costs the
//! application a serialization and a failed `try_send`, never a wait for
//! the disk or the backend.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::Ingestor;

/// A `tracing_subscriber` layer that ships events; see the module docs.
#[derive(Debug, Clone)]
pub struct EventLayer {
    queue: crossbeam_channel::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl EventLayer {
    /// A layer whose events go to `stream` of `ingestor`, with up to
    /// `capacity` events waiting (dropped and counted beyond). Its thread
    /// ends once every clone of the layer is gone and the queue is empty.
    pub fn new(ingestor: &Ingestor, stream: &str, capacity: usize) -> std::io::Result<EventLayer> {
        let (queue, events) = crossbeam_channel::bounded::<Vec<u8>>(capacity.max(1));
        let ingestor = ingestor.clone();
        let stream = stream.to_owned();
        std::thread::Builder::new()
            .name("shipper-events".into())
            .spawn(move || {
                for event in events {
                    // Never through `tracing`: that would feed the layer
                    // its own failures.
                    if let Err(error) = ingestor.insert_bytes(&stream, &event) {
                        eprintln!("shipper: an event could not be stored: {error}");
                    }
                }
            })?;
        Ok(EventLayer {
            queue,
            dropped: Arc::default(),
        })
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The counter of dropped events, to read after the layer is installed.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

impl<S> Layer<S> for EventLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, cx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        fields.0.insert(
            "ts".into(),
            Value::String(rfc3339_utc(std::time::SystemTime::now())),
        );
        fields
            .0
            .insert("level".into(), Value::String(metadata.level().to_string()));
        fields
            .0
            .insert("target".into(), Value::String(metadata.target().to_owned()));
        event.record(&mut fields);
        if let Some(scope) = cx.event_scope(event) {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| Value::String(span.name().to_owned()))
                .collect();
            if !spans.is_empty() {
                fields.0.insert("spans".into(), Value::Array(spans));
            }
        }
        self.send(Value::Object(fields.0));
    }
}

/// The same layer as a `log` backend, for applications (or libraries) on
/// the `log` crate: `log::set_boxed_logger(Box::new(layer.clone()))` and
/// `log::set_max_level(...)`. Records carry `ts`, `level`, `target`,
/// `message`, and `module`, `file` and `line` when known; the queue, the
/// thread and the drop counting are the layer's.
impl log::Log for EventLayer {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut fields = Map::new();
        fields.insert(
            "ts".into(),
            Value::String(rfc3339_utc(std::time::SystemTime::now())),
        );
        fields.insert("level".into(), Value::String(record.level().to_string()));
        fields.insert("target".into(), Value::String(record.target().to_owned()));
        fields.insert("message".into(), Value::String(record.args().to_string()));
        if let Some(module) = record.module_path() {
            fields.insert("module".into(), Value::String(module.to_owned()));
        }
        if let Some(file) = record.file() {
            fields.insert("file".into(), Value::String(file.to_owned()));
        }
        if let Some(line) = record.line() {
            fields.insert("line".into(), Value::from(line));
        }
        self.send(Value::Object(fields));
    }

    fn flush(&self) {}
}

impl EventLayer {
    /// Serializes `record` and queues it, or counts it dropped.
    fn send(&self, record: Value) {
        let Ok(record) = serde_json::to_vec(&record) else {
            return;
        };
        if self.queue.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An event's fields as JSON values (`message` included).
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().to_owned(), Value::String(text));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// `time` as RFC 3339 UTC with microseconds.
fn rfc3339_utc(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = shipper_core::time::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_795_778_096_123_456);
        assert_eq!(rfc3339_utc(at), "2026-11-27T11:14:56.123456Z");
        assert_eq!(
            rfc3339_utc(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
