//! Bounded exponential backoff with jitter for retryable cloud errors.

use std::time::Duration;

use rand::Rng;

use super::error::ErrorClass;

/// When and how often a failed call is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before the second attempt of a transient error; doubles each attempt.
    pub base_delay: Duration,
    /// Backoff before the second attempt after `RequestLimitExceeded`: someone else is spending
    /// the same quota, so back off harder than for a transient fault.
    pub throttled_base_delay: Duration,
    /// Upper bound of any one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            throttled_base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff after failed attempt number `attempt` (1-based), or `None` when the error is not
    /// retryable or the attempts are spent.
    pub fn backoff(&self, attempt: u32, class: ErrorClass) -> Option<Duration> {
        if !class.is_retryable() || attempt >= self.max_attempts {
            return None;
        }
        let base = match class {
            ErrorClass::Throttled => self.throttled_base_delay,
            _ => self.base_delay,
        };
        let ceiling = base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max_delay);
        // "Equal jitter": at least half the ceiling, so retries never bunch up at zero, and a random
        // rest, so many callers failing together do not retry together.
        let half = ceiling / 2;
        let jitter = rand::rng().random_range(Duration::ZERO..=half);
        Some(half + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_are_never_retried() {
        let policy = RetryPolicy::default();
        for class in [
            ErrorClass::Auth,
            ErrorClass::Account,
            ErrorClass::NotFound,
            ErrorClass::Forbidden,
            ErrorClass::Unsupported,
            ErrorClass::Invalid,
            ErrorClass::Unknown,
        ] {
            assert_eq!(policy.backoff(1, class), None, "{class:?}");
        }
    }

    #[test]
    fn backoff_grows_within_bounds_and_stops() {
        let policy = RetryPolicy::default();
        for _ in 0..200 {
            let first = policy.backoff(1, ErrorClass::Transient).unwrap();
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
            let third = policy.backoff(3, ErrorClass::Transient).unwrap();
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800));
            let throttled = policy.backoff(1, ErrorClass::Throttled).unwrap();
            assert!(throttled >= Duration::from_millis(500));
        }
        assert_eq!(policy.backoff(4, ErrorClass::Transient), None);
        let long = RetryPolicy {
            max_attempts: 40,
            ..RetryPolicy::default()
        };
        assert!(long.backoff(39, ErrorClass::Transient).unwrap() <= long.max_delay);
    }
}
