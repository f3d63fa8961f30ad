//! The http sink's counters and request-latency histogram, and the events
//! that move them: each event is logged and counted in one place, so a
//! metric name is never typed twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the request-latency histogram's buckets; a
/// last, unbounded bucket (`+Inf`) follows them.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Request latency, from sending a request to having read its answer (or
/// its failure), in fixed buckets of atomics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One count per bucket of [`LATENCY_BUCKETS`], then `+Inf`; not cumulative.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment, in Prometheus' shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative,
    /// ending with `f64::INFINITY` and the total count.
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// Counts one request that took `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The buckets, cumulative, with count and sum.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut cumulative = 0;
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        for (bound, count) in bounds.zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((bound, cumulative));
        }
        LatencySnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    fn absorb(&self, earlier: &LatencyHistogram) {
        for (count, old) in self.counts.iter().zip(&earlier.counts) {
            count.fetch_add(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(earlier.sum_nanos.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

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
    pub latency: LatencyHistogram,
}

impl HttpSinkStats {
    /// Adds the counts of `earlier` (the stats of a sink this one replaces,
    /// after a reload), so that counters never go backwards.
    pub fn absorb(&self, earlier: &HttpSinkStats) {
        let pairs = [
            (&self.requests, &earlier.requests),
            (&self.retries, &earlier.retries),
            (&self.failures, &earlier.failures),
            (&self.dead_lettered_batches, &earlier.dead_lettered_batches),
            (&self.dead_lettered_records, &earlier.dead_lettered_records),
            (&self.body_bytes, &earlier.body_bytes),
            (&self.raw_bytes, &earlier.raw_bytes),
            (&self.contradictions, &earlier.contradictions),
        ];
        for (counter, old) in pairs {
            counter.fetch_add(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.latency.absorb(&earlier.latency);
    }

    /// Loads a counter (a shorthand for reporting).
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_into_cumulative_buckets() {
        let histogram = LatencyHistogram::default();
        for millis in [1, 5, 7, 300, 1_000, 60_000] {
            histogram.observe(Duration::from_millis(millis));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 6);
        assert!((snapshot.sum_seconds - 61.313).abs() < 1e-9);
        let at = |bound: f64| {
            snapshot
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, count)| *count)
        };
        assert_eq!(at(0.005), Some(2), "1 ms and exactly 5 ms");
        assert_eq!(at(0.01), Some(3));
        assert_eq!(at(0.25), Some(3));
        assert_eq!(at(0.5), Some(4));
        assert_eq!(at(1.0), Some(5));
        assert_eq!(at(30.0), Some(5));
        assert_eq!(at(f64::INFINITY), Some(6));
        let other = HttpSinkStats::default();
        other.latency.observe(Duration::from_millis(2));
        other.requests.fetch_add(3, Ordering::Relaxed);
        let stats = HttpSinkStats::default();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.absorb(&other);
        assert_eq!(HttpSinkStats::get(&stats.requests), 4);
        assert_eq!(stats.latency.snapshot().count, 1);
    }
}
