//! When a resource is reconciled again, given how its last reconcile ended: the resync after
//! success (to catch changes made in the console), the slow retry when a person must act, and a
//! growing backoff for faults that may clear by themselves.

use std::time::Duration;

use super::Progress;

/// The delays, as the administrator set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delays {
    /// After a successful reconcile.
    pub resync: Duration,
    /// After an error a person must fix (the resource also reconciles on any change).
    pub stalled: Duration,
    /// After the first transient failure; doubles up to `max_backoff`.
    pub base_backoff: Duration,
    /// Longest backoff after transient failures.
    pub max_backoff: Duration,
}

impl Default for Delays {
    /// Resync 10 min, stalled retry 15 min, backoff 2 s to 5 min.
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(600),
            stalled: Duration::from_secs(900),
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl Delays {
    /// How long to wait before the next reconcile after one that ended with `progress`, the
    /// `failures`-th transient failure in a row for `Retrying`.
    pub fn after(&self, progress: Progress, failures: u32) -> Duration {
        match progress {
            Progress::Settled => self.resync,
            Progress::Stalled => self.stalled,
            Progress::Retrying => self
                .base_backoff
                .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
                .min(self.max_backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_resyncs_stalled_retries_slowly_and_faults_back_off() {
        let delays = Delays::default();
        let secs = Duration::from_secs;
        let rows = [
            (Progress::Settled, 0, secs(600)),
            (Progress::Stalled, 0, secs(900)),
            (Progress::Retrying, 1, secs(2)),
            (Progress::Retrying, 2, secs(4)),
            (Progress::Retrying, 5, secs(32)),
            (Progress::Retrying, 8, secs(256)),
            (Progress::Retrying, 9, secs(300)),
            (Progress::Retrying, u32::MAX, secs(300)),
        ];
        for (progress, failures, expected) in rows {
            assert_eq!(
                delays.after(progress, failures),
                expected,
                "{progress:?} after {failures} failures"
            );
        }
    }
}
