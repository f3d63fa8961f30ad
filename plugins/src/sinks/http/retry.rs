//! When to try a failed request again: capped exponential backoff with
//! jitter, or the receiver's `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::Rng;

/// The longest `Retry-After` honoured; a larger one waits this long. It
/// guards against a receiver asking for hours (the sink's delivery is
/// blocked while it waits, so a stop would only end it by the shutdown
/// timeout).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How a sink retries failed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    /// The first backoff.
    pub initial: Duration,
    /// Backoffs double up to this.
    pub max: Duration,
    /// Attempts of one request within one delivery before the sink hands
    /// the failure to the runtime (which offers the batch again later; the
    /// sink goes on with the same backoff sequence). At least 1.
    pub attempts: u32,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            attempts: 3,
        }
    }
}

/// The wait after the `failures`-th consecutive failure (1 for the first):
/// `initial * 2^(failures - 1)`, capped at `max`, of which a random half
/// is taken off ("equal jitter": many senders that failed together do not
/// come back together, and the wait never drops below half the step).
pub fn backoff(options: &RetryOptions, failures: u32, rng: &mut SmallRng) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let step = options
        .initial
        .saturating_mul(1 << doublings)
        .min(options.max)
        .max(Duration::from_millis(1));
    let half = step / 2;
    half + rng.random_range(Duration::ZERO..=step - half)
}

/// The wait a `Retry-After` value asks for: whole seconds, or an HTTP date
/// (a date in the past asks for no wait). `None` when it is neither.
/// Capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let wait = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Many digits are a very long wait, not an error.
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let cases: [(&str, Option<u64>); 9] = [
            ("1", Some(1)),
            (" 120 ", Some(120)),
            ("0", Some(0)),
            ("99999999999999999999999", Some(600)),
            ("Sun, 06 Nov 1994 08:49:47 GMT", Some(10)),
            ("Sun, 06 Nov 1994 08:39:37 GMT", Some(0)),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(value.as_bytes(), now),
                expected.map(Duration::from_secs),
                "{value:?}"
            );
        }
        assert_eq!(parse_retry_after(b"\xff", now), None);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let options = RetryOptions {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            attempts: 3,
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let cases = [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1_600),
            (6, 2_000),
            (40, 2_000),
        ];
        for (failures, step) in cases {
            for _ in 0..50 {
                let wait = backoff(&options, failures, &mut rng);
                let step = Duration::from_millis(step);
                assert!(
                    wait >= step / 2 && wait <= step,
                    "failure {failures}: {wait:?} outside {:?}..={step:?}",
                    step / 2
                );
            }
        }
    }
}
