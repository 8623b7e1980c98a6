//! What every reconcile shares: the clients, the caches, the credentials resolver, and where to
//! report (Events, metrics, claim changes). Policy (who wins a claim, when to reconcile again)
//! lives in `decision`; queues and backoff in `runtime`.

use std::sync::Arc;

use kube::Client;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::events::EventPublisher;
use crate::cloud::CloudClient;
use crate::cloud::observe::Observer;
use crate::controller::cache::Caches;
use crate::controller::credentials::Resolver;
use crate::controller::resources::DynamicRegistration;
use crate::ops::metrics::Metrics;

/// Shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Tencent Cloud client (rate-limited, retrying), for updates.
    pub cloud: CloudClient,
    /// Shared snapshots of the cloud's products, for reads.
    pub observer: Observer,
    /// What the watches know, and the Secret versions we wrote or read.
    pub caches: Arc<Caches>,
    /// The credentials each resource may use.
    pub credentials: Resolver,
    /// Publishes Events.
    pub events: EventPublisher,
    /// The label keys whose values a published Secret takes from its resource (a shard's
    /// selector: the shard's Secret watch must see the Secret).
    pub inherited_labels: Vec<String>,
    /// Places for rendering templated Secrets.
    pub renders: Renders,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where a resource whose claim changed is announced (it now reaches its product, or no
    /// longer does), so that the other claimants of the product reconcile at once.
    pub claim_changes: UnboundedSender<DynamicRegistration>,
}

/// Templated Secrets read, rendered and written at once, in all. Each may hold up to 1 MiB of
/// data, copied into the Secret and its request on the way: one tenant's many templated
/// resources reconciling together (hundreds may, on one account's places, and all do after a
/// restart) must not exhaust the controller's memory. Reading, rendering and writing take
/// milliseconds, so few places do; a cloud update is never waited for in one.
pub struct Renders(Arc<Semaphore>);

/// How many templated Secrets are rendered and written at once.
pub const RENDERS_AT_ONCE: usize = 8;

impl Renders {
    /// `places` renders at once.
    pub fn new(places: usize) -> Self {
        Self(Arc::new(Semaphore::new(places.max(1))))
    }

    /// A place to read, render or write `resource`'s Secret, held until dropped; `None` when
    /// it has no template data (its two keys are small).
    pub async fn enter(&self, resource: &DynamicRegistration) -> Option<OwnedSemaphorePermit> {
        let template = resource.spec.secret_template.as_ref();
        if template.is_none_or(|template| template.data.is_empty()) {
            return None;
        }
        // The semaphore is never closed.
        self.0.clone().acquire_owned().await.ok()
    }
}

impl Default for Renders {
    fn default() -> Self {
        Self::new(RENDERS_AT_ONCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode, SecretTemplate};

    fn resource(templated: bool) -> DynamicRegistration {
        let mut spec =
            DynamicRegistrationSpec::new("P1", "ap-guangzhou", RegistrationMode::AutoCreate, 1);
        if templated {
            spec.secret_template = Some(SecretTemplate {
                data: [("A".to_owned(), "{{ productSecret }}".to_owned())].into(),
                ..SecretTemplate::default()
            });
        }
        DynamicRegistration::new("r", spec)
    }

    #[tokio::test]
    async fn only_templated_secrets_take_one_of_the_few_places() {
        let renders = Renders::new(2);
        let first = renders.enter(&resource(true)).await;
        let second = renders.enter(&resource(true)).await;
        assert!(first.is_some() && second.is_some());
        let templated = resource(true);
        let third = renders.enter(&templated);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut third)
                .await
                .is_err(),
            "a third templated render went ahead"
        );
        assert!(
            renders.enter(&resource(false)).await.is_none(),
            "untemplated: no place needed"
        );
        drop(first);
        assert!(third.await.is_some());
    }
}
