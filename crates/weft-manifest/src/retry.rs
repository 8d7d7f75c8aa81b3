//! [`Retry`]: how every delivery that can fail is tried again (queue
//! messages, async invocations, rule targets, subscriptions).
//!
//! The policy only says when to try again and when to stop; what happens to
//! an event once it stops (dead-letter queue, failure destination, drop) is
//! up to the delivery.

use std::time::Duration;

/// The longest wait between two deliveries that doubling reaches (as the
/// longest delay of an SQS message). A `backoff` the manifest sets above it
/// is kept as written: doubling never shortens the first wait.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// How a failed delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Deliveries in all, the first one included.
    pub max_attempts: u32,
    /// The wait after the first failed delivery; it doubles after each next one.
    pub backoff: Duration,
    /// An event older than this is not delivered again.
    pub max_age: Option<Duration>,
}

impl Retry {
    /// The wait before the next delivery, once delivery number `attempt`
    /// (1 for the first) has failed: `backoff`, doubled for each earlier
    /// failure, up to [`MAX_BACKOFF`] (or `backoff` itself, if larger).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = MAX_BACKOFF.max(self.backoff);
        let doublings = attempt.saturating_sub(1).min(31);
        self.backoff.saturating_mul(1 << doublings).min(cap)
    }

    /// Whether an event that has had `attempts` deliveries and was first
    /// sent `age` ago is not to be delivered again.
    pub fn gives_up(&self, attempts: u32, age: Duration) -> bool {
        attempts >= self.max_attempts || self.max_age.is_some_and(|max| age > max)
    }

    /// Deliveries after the first one: what the manifest calls `retries`.
    pub fn retries(&self) -> u32 {
        self.max_attempts.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let r = Retry {
            max_attempts: 100,
            backoff: Duration::from_secs(1),
            max_age: None,
        };
        let delays: Vec<u64> = (1..=4).map(|a| r.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(r.delay(0), Duration::from_secs(1));
        assert_eq!(r.delay(11), MAX_BACKOFF);
        assert_eq!(r.delay(u32::MAX), MAX_BACKOFF);
        let slow = Retry {
            backoff: Duration::from_secs(3600),
            ..r
        };
        assert_eq!(slow.delay(1), Duration::from_secs(3600));
        assert_eq!(slow.delay(5), Duration::from_secs(3600));
        let none = Retry {
            backoff: Duration::ZERO,
            ..r
        };
        assert_eq!(none.delay(7), Duration::ZERO);
    }

    #[test]
    fn gives_up_after_the_last_attempt_or_past_the_age() {
        let r = Retry {
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            max_age: Some(Duration::from_secs(60)),
        };
        assert!(!r.gives_up(2, Duration::from_secs(60)));
        assert!(r.gives_up(3, Duration::ZERO));
        assert!(r.gives_up(1, Duration::from_secs(61)));
        let ageless = Retry { max_age: None, ..r };
        assert!(!ageless.gives_up(2, Duration::from_secs(1 << 40)));
        assert_eq!(r.retries(), 2);
    }
}
