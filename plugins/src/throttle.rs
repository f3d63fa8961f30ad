//! Rate-limited logging: an event that can repeat thousands of times a
//! second (a dropped record, a refused connection) is counted every time
//! and logged at most once per interval, with how many were not logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a throttled event is logged at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Decides which occurrences of one kind of event are logged.
#[derive(Debug, Default)]
pub struct Throttle {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

impl Throttle {
    /// `Some(suppressed)` when this occurrence is to be logged (the first
    /// one, then at most one per [`INTERVAL`]), with the number not logged
    /// since the last; `None` when it is only to be counted.
    pub fn allow(&self) -> Option<u64> {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < INTERVAL.as_millis() as u64 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_and_the_rest_counted() {
        let throttle = Throttle::default();
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        // As if the interval had passed.
        throttle.last_ms.store(1, Ordering::Relaxed);
        assert_eq!(throttle.allow(), Some(5));
    }
}
