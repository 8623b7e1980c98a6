//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas can run safely:
//! only the holder reconciles.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

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
}

impl LeaderElector {
    /// An elector for `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            leases: Api::namespaced(client, &settings.namespace),
            settings,
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
        if !ours && !holder.is_empty() && !expired(&spec, now) {
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

/// A Lease not renewed within its duration is free to take.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed + duration < now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_seconds_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                Timestamp::now() - SignedDuration::from_secs(renewed_seconds_ago),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration_without_renewal() {
        let now = Timestamp::now();
        assert!(!expired(&spec("a", 5, 15), now));
        assert!(expired(&spec("a", 20, 15), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
