//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas can run safely:
//! only the holder reconciles.
//!
//! As client-go does, a stand-by judges the holder by what it saw itself, on its own monotonic
//! clock: the Lease is free once its record has not changed for a lease duration since this
//! replica last saw it change. The holder's `renewTime` is written for people, never compared
//! with our clock, so clock skew between nodes cannot shorten or stretch a failover.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// Which Lease, who we are, and how long a holder keeps it without renewing.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// A holder that has not renewed for this long has lost the Lease.
    pub lease_duration: Duration,
}

impl LeaseSettings {
    /// How often the holder renews, and a stand-by checks: a third of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }
}

/// Takes, keeps and releases the Lease.
pub struct LeaderElector {
    leases: Api<Lease>,
    settings: LeaseSettings,
    observed: RecordObserver,
}

impl LeaderElector {
    /// An elector for `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            leases: Api::namespaced(client, &settings.namespace),
            settings,
            observed: RecordObserver::default(),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Takes the Lease if it is free or expired, renews it if ours. `Ok(true)` while we hold it.
    /// Every write carries the resourceVersion read, so two replicas cannot both win.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.leases.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now, now, 0)),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.settings.identity;
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let unchanged_for_a_lease = self
            .observed
            .unchanged_for(lease.resource_version().as_deref().unwrap_or(""), duration);
        if !ours && !holder.is_empty() && !unchanged_for_a_lease {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = match (ours, spec.acquire_time) {
            (true, Some(MicroTime(time))) => time,
            _ => now,
        };
        let mut next = lease;
        next.spec = Some(self.held_spec(now, acquired, transitions));
        match self
            .leases
            .replace(&self.settings.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up, so that a stand-by takes over at once instead of after it expires.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.leases.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.leases
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    fn held_spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// Remembers when this replica last saw the Lease record change (its resourceVersion), on the
/// local monotonic clock.
#[derive(Debug, Default)]
struct RecordObserver {
    last: Mutex<Option<(String, Instant)>>,
}

impl RecordObserver {
    /// Whether the record `version` has stayed the same for at least `duration` in our eyes.
    /// A record seen for the first time counts from now.
    fn unchanged_for(&self, version: &str, duration: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let seen_at = match last.as_ref() {
            Some((seen, at)) if seen == version => *at,
            _ => {
                let now = Instant::now();
                *last = Some((version.to_owned(), now));
                now
            }
        };
        seen_at.elapsed() >= duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_free_once_its_record_stood_still_for_a_lease_duration_here() {
        let observer = RecordObserver::default();
        let lease = Duration::from_secs(15);
        // First sight: however old its renewTime claims to be, wait a full duration.
        assert!(!observer.unchanged_for("100", lease));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!observer.unchanged_for("100", lease));
        // The holder renewed (a new resourceVersion): counting starts again.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!observer.unchanged_for("101", lease));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!observer.unchanged_for("101", lease));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(observer.unchanged_for("101", lease));
    }
}
