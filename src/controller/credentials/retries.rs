//! When the protection sweep tries again what the API server did not do. A conflict (another
//! writer in between) or a passing failure (5xx, 429, no answer) is tried at the next sweep, as
//! before; a refusal (403 and the like: RBAC, an admission policy) would be refused again, so
//! it waits, twice as long each time up to [`LONGEST_WAIT`], and is reported once, when it
//! starts, not at every sweep.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// The wait after a first refusal.
const FIRST_WAIT: Duration = Duration::from_secs(30);
/// The longest wait between two tries of something refused.
pub const LONGEST_WAIT: Duration = Duration::from_secs(600);

/// The wait after the `failures`-th failure in a row: `first`, doubling, at most
/// [`LONGEST_WAIT`].
pub fn doubling_wait(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    first.saturating_mul(1 << doublings).min(LONGEST_WAIT)
}

/// What a failed request tells of the next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying at the next sweep: a conflict, an overloaded or absent API server.
    Passing,
    /// The API server refused it and would again until a person acts.
    Refused,
}

impl Failure {
    /// How `error` counts.
    pub fn of(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if matches!(status.code, 400 | 401 | 403 | 405 | 422) => {
                Self::Refused
            }
            _ => Self::Passing,
        }
    }
}

/// Refused things (Secrets, the census) and when each may be tried again.
#[derive(Debug)]
pub struct Retries<K> {
    refused: HashMap<K, Backoff>,
}

#[derive(Debug)]
struct Backoff {
    refusals: u32,
    next_try: Instant,
}

impl<K> Default for Retries<K> {
    fn default() -> Self {
        Self {
            refused: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Retries<K> {
    /// Whether `key` may be tried now.
    pub fn due(&self, key: &K) -> bool {
        self.refused
            .get(key)
            .is_none_or(|backoff| backoff.next_try <= Instant::now())
    }

    /// Notes a refusal of `key`; `true` when it is the first of a run (report it then).
    pub fn refused(&mut self, key: K) -> bool {
        let backoff = self.refused.entry(key).or_insert(Backoff {
            refusals: 0,
            next_try: Instant::now(),
        });
        backoff.refusals += 1;
        backoff.next_try = Instant::now() + doubling_wait(FIRST_WAIT, backoff.refusals);
        backoff.refusals == 1
    }

    /// `key` went through (or needs nothing any more); `true` when it had been refused.
    pub fn settled(&mut self, key: &K) -> bool {
        self.refused.remove(key).is_some()
    }

    /// Forgets what `keep` says is gone.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.refused.retain(|key, _| keep(key));
    }

    /// How many are refused.
    pub fn len(&self) -> usize {
        self.refused.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("no", "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn refusals_wait_and_conflicts_do_not() {
        assert_eq!(Failure::of(&refusal(403)), Failure::Refused);
        assert_eq!(Failure::of(&refusal(422)), Failure::Refused);
        assert_eq!(Failure::of(&refusal(409)), Failure::Passing);
        assert_eq!(Failure::of(&refusal(429)), Failure::Passing);
        assert_eq!(Failure::of(&refusal(503)), Failure::Passing);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_waits_twice_as_long_each_time_and_is_reported_once() {
        let mut retries = Retries::default();
        assert!(retries.due(&"s"));
        assert!(retries.refused("s"), "the first refusal is reported");
        let mut waits = Vec::new();
        for _ in 0..8 {
            let refused_at = Instant::now();
            while !retries.due(&"s") {
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            waits.push(refused_at.elapsed().as_secs());
            assert!(!retries.refused("s"), "reported again");
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600, 600]);
        assert!(retries.settled(&"s"));
        assert!(retries.due(&"s") && retries.len() == 0);
        assert!(retries.refused("s"), "a new run is reported again");
    }
}
