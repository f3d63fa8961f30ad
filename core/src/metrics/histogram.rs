//! A histogram of durations in fixed buckets of atomics: what a sink's
//! deliveries and requests take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets; a last, unbounded bucket
/// (`+Inf`) follows them.
pub const SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Durations counted in the buckets of [`SECONDS_BUCKETS`]. Observing is
/// two relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One count per bucket, then `+Inf`; not cumulative.
    counts: [AtomicU64; SECONDS_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment, in Prometheus' shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative,
    /// ending with `f64::INFINITY` and the total count.
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// Counts one observation of `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = SECONDS_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(SECONDS_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The buckets, cumulative, with count and sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut cumulative = 0;
        let bounds = SECONDS_BUCKETS.iter().copied().chain([f64::INFINITY]);
        for (bound, count) in bounds.zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl HistogramSnapshot {
    /// Adds `other`'s observations (same buckets) to these.
    pub fn add(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_into_cumulative_buckets() {
        let histogram = Histogram::default();
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
    }

    #[test]
    fn buckets_are_cumulative_and_end_at_infinity() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(60));
        histogram.observe(Duration::from_secs(100));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.buckets[0], (0.005, 1));
        assert_eq!(snapshot.buckets[4], (0.1, 2));
        assert_eq!(*snapshot.buckets.last().unwrap(), (f64::INFINITY, 3));
        assert!((snapshot.sum_seconds - 100.061).abs() < 1e-9);
        let mut total = snapshot.clone();
        total.add(&snapshot);
        assert_eq!(total.count, 6);
        assert_eq!(*total.buckets.last().unwrap(), (f64::INFINITY, 6));
    }
}
