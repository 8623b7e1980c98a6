//! When each resource is reconciled again: the delays of `decision::delays`, a backoff that
//! grows with a resource's transient failures in a row, and ±10% jitter so that resources
//! created together do not come due together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::controller::Action;
use rand::Rng;

use super::admission::ResourceRef;
use crate::controller::decision::Progress;
use crate::controller::decision::delays::Delays;

/// The delays, and each resource's transient failures in a row.
#[derive(Debug)]
pub struct Requeue {
    delays: Delays,
    failures: FailureCounts,
}

impl Requeue {
    /// Reconciles come due after `delays`.
    pub fn new(delays: Delays) -> Self {
        Self {
            delays,
            failures: FailureCounts::default(),
        }
    }

    /// When to reconcile `object` again, given how its reconcile ended; `exists` says which
    /// resources are still in view (the counts of the others go).
    pub fn after(
        &self,
        object: &ResourceRef,
        progress: Progress,
        exists: impl Fn(&ResourceRef) -> bool,
    ) -> Action {
        let in_a_row = self.failures.record(object, progress, exists);
        Action::requeue(jittered(self.delays.after(progress, in_a_row)))
    }
}

/// Transient failures in a row, per resource: what its backoff grows from.
#[derive(Debug, Default)]
struct FailureCounts(Mutex<HashMap<ResourceRef, u32>>);

impl FailureCounts {
    /// Counts how a reconcile of `object` ended; returns its failures in a row (0 unless
    /// `Retrying`). Entries of resources that no longer `exist` go, so that resources deleted
    /// while retrying leave nothing behind.
    fn record(
        &self,
        object: &ResourceRef,
        progress: Progress,
        exists: impl Fn(&ResourceRef) -> bool,
    ) -> u32 {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if progress != Progress::Retrying {
            failures.remove(object);
            return 0;
        }
        failures.retain(|other, _| other == object || exists(other));
        let count = failures.entry(object.clone()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// ±10%, so resources created together do not come due together.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::rng().random_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::ObjectRef;

    #[test]
    fn failure_counts_forget_resources_that_are_gone() {
        let counts = FailureCounts::default();
        let a = ObjectRef::new("a").within("fleet");
        let b = ObjectRef::new("b").within("fleet");
        let everything = |_: &ResourceRef| true;
        assert_eq!(counts.record(&a, Progress::Retrying, everything), 1);
        assert_eq!(counts.record(&a, Progress::Retrying, everything), 2);
        assert_eq!(counts.record(&b, Progress::Retrying, everything), 1);
        // `a` was deleted while retrying: the next count anywhere drops it.
        let only_b = |object: &ResourceRef| object.name == "b";
        assert_eq!(counts.record(&b, Progress::Retrying, only_b), 2);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts.record(&b, Progress::Settled, only_b), 0);
        assert_eq!(counts.len(), 0);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let secs = Duration::from_secs;
        for _ in 0..100 {
            let delay = jittered(secs(600));
            assert!((secs(540)..=secs(660)).contains(&delay), "{delay:?}");
        }
    }
}
