//! The http sink's counters and request-latency histogram, and the events
//! that move them: each event is logged and counted in one place, so a
//! metric name is never typed twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shipper_core::metrics::{
    counters_of, ComponentMetric, Histogram, REQUEST_SECONDS, REQUEST_SECONDS_HELP,
};

/// Live counters of one http sink, shared (`Arc`) with whoever reports
/// them (the admin endpoint's `/metrics`).
#[derive(Debug, Default)]
pub struct HttpSinkStats {
    /// Requests sent, retries included.
    pub requests: AtomicU64,
    /// Requests sent again after the previous attempt of the same batch
    /// failed.
    pub retries: AtomicU64,
    /// Requests that failed in a way worth retrying: a connection error, a
    /// timeout, `408`, `429`, `5xx`, an unreadable answer.
    pub failures: AtomicU64,
    /// Batches the backend refused for good (`4xx`) and that went to the
    /// dead-letter file.
    pub dead_lettered_batches: AtomicU64,
    /// Records in those batches.
    pub dead_lettered_records: AtomicU64,
    /// Request body bytes sent, as on the wire (compressed), retries included.
    pub body_bytes: AtomicU64,
    /// The same requests' records, uncompressed (NDJSON bytes).
    pub raw_bytes: AtomicU64,
    /// Answers of a shipper receiver that contradict this sink's log (it
    /// claims offsets the log never had, or refuses a request over its
    /// high-water mark): each stops the sink, its records kept.
    pub contradictions: AtomicU64,
    /// Request latency.
    pub latency: Arc<Histogram>,
}

impl HttpSinkStats {
    /// Loads a counter (a shorthand for reporting).
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The counters and the request-latency histogram as metrics.
    pub fn metrics(self: &Arc<Self>) -> Vec<ComponentMetric> {
        let mut metrics = counters_of(
            self,
            &[
                (
                    "shipper_http_requests_total",
                    "HTTP requests sent, retries included.",
                    &[],
                    |s| &s.requests,
                ),
                (
                    "shipper_http_request_retries_total",
                    "HTTP requests sent again after the previous try of the batch failed.",
                    &[],
                    |s| &s.retries,
                ),
                (
                    "shipper_http_request_failures_total",
                    "HTTP requests that failed and will be retried (connection, timeout, 408, 429, 5xx, bad answer).",
                    &[],
                    |s| &s.failures,
                ),
                (
                    "shipper_http_dead_lettered_batches_total",
                    "Batches refused for good (4xx) and written to the dead-letter file.",
                    &[],
                    |s| &s.dead_lettered_batches,
                ),
                (
                    "shipper_http_dead_lettered_records_total",
                    "Records in dead-lettered batches.",
                    &[],
                    |s| &s.dead_lettered_records,
                ),
                (
                    "shipper_http_request_body_bytes_total",
                    "Request body bytes sent as on the wire (compressed), retries included.",
                    &[],
                    |s| &s.body_bytes,
                ),
                (
                    "shipper_http_request_uncompressed_bytes_total",
                    "Uncompressed record bytes of the requests sent, retries included.",
                    &[],
                    |s| &s.raw_bytes,
                ),
                (
                    "shipper_http_contradictions_total",
                    "Answers of a shipper receiver that contradict this log (a high-water mark beyond it, a 409): each stopped the sink, its records kept.",
                    &[],
                    |s| &s.contradictions,
                ),
            ],
        );
        metrics.push(ComponentMetric::histogram(
            REQUEST_SECONDS,
            REQUEST_SECONDS_HELP,
            &[],
            self.latency.clone(),
        ));
        metrics
    }
}

/// How bad a failed request is, for the log level of its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// The backend is busy, down or unreachable: expected now and then.
    Unavailable,
    /// The answer breaks the protocol (a `high_water` below the batch, an
    /// unreadable answer to a `200`), or the status makes no sense here:
    /// someone has to look.
    Protocol,
}

/// Things that happen to requests and batches.
#[derive(Debug)]
pub(super) enum Event<'a> {
    /// A request went out (first try or retry).
    RequestSent {
        body_bytes: u64,
        raw_bytes: u64,
        retry: bool,
    },
    /// Its answer (or failure) came back after `elapsed`.
    RequestFinished { elapsed: Duration },
    /// It failed in a way worth retrying; the next try waits `retry_in`.
    RequestFailed {
        reason: &'a str,
        kind: FailureKind,
        retry_in: Duration,
        first_offset: u64,
        end_offset: u64,
    },
    /// A shipper receiver answered in a way the sink's own log contradicts;
    /// the sink stops, keeping the batch.
    AnswerContradicted {
        reason: &'a str,
        first_offset: u64,
        end_offset: u64,
    },
    /// The backend refused the batch for good; it was written to the
    /// dead-letter file.
    BatchDeadLettered {
        status: u16,
        answer: &'a str,
        records: u64,
        first_offset: u64,
        end_offset: u64,
        file: &'a std::path::Path,
    },
}

impl Event<'_> {
    /// Logs and counts the event for sink `sink`.
    pub(super) fn emit(self, sink: &str, stats: &HttpSinkStats) {
        match self {
            Event::RequestSent {
                body_bytes,
                raw_bytes,
                retry,
            } => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                stats.body_bytes.fetch_add(body_bytes, Ordering::Relaxed);
                stats.raw_bytes.fetch_add(raw_bytes, Ordering::Relaxed);
                if retry {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                }
                tracing::trace!(
                    sink,
                    body_bytes,
                    raw_bytes,
                    retry,
                    "http sink: request sent"
                );
            }
            Event::RequestFinished { elapsed } => stats.latency.observe(elapsed),
            Event::RequestFailed {
                reason,
                kind,
                retry_in,
                first_offset,
                end_offset,
            } => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                match kind {
                    FailureKind::Unavailable => tracing::warn!(
                        sink, %reason, ?retry_in, first_offset, end_offset,
                        "http sink: request failed; the batch will be sent again"
                    ),
                    FailureKind::Protocol => tracing::error!(
                        sink, %reason, ?retry_in, first_offset, end_offset,
                        "http sink: the receiver's answer breaks the protocol; the batch will be sent again"
                    ),
                }
            }
            Event::AnswerContradicted {
                reason,
                first_offset,
                end_offset,
            } => {
                stats.contradictions.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    sink, %reason, first_offset, end_offset,
                    "http sink: the receiver's answer contradicts this log (a forged or \
                     damaged high-water mark?); the sink stops and keeps every record: \
                     check the receiver, then restart"
                );
            }
            Event::BatchDeadLettered {
                status,
                answer,
                records,
                first_offset,
                end_offset,
                file,
            } => {
                stats.dead_lettered_batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .dead_lettered_records
                    .fetch_add(records, Ordering::Relaxed);
                tracing::error!(
                    sink, status, %answer, records, first_offset, end_offset,
                    file = %file.display(),
                    "http sink: the backend refused a batch for good; written to the dead-letter file, moving on"
                );
            }
        }
    }
}
