//! What every reconcile shares: the clients, the caches, the credentials resolver, and where to
//! report (Events, metrics, claim changes). Policy (who wins a claim, when to reconcile again)
//! lives in `decision`; queues and backoff in `runtime`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::{Client, ResourceExt};
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
    /// Permits for rendering templated Secrets.
    pub renders: Renders,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where a resource whose claim changed is announced (it now reaches its product, or no
    /// longer does), so that the other claimants of the product reconcile at once.
    pub claim_changes: UnboundedSender<DynamicRegistration>,
}

/// Permits for templated Secrets: each may hold up to 1 MiB of data, copied into the Secret and
/// its request on the way, so a resource reads, renders and writes its Secret holding a permit, and
/// few permits exist: one tenant's many templated resources reconciling together (hundreds may,
/// and all do after a restart) must not exhaust the controller's memory. A permit is held from
/// the read through the write, since the data lives that long; a slow write (a webhook timing
/// out, Priority and Fairness queueing) holds it too, so a namespace gets at most
/// [`PERMITS_PER_NAMESPACE`] of them: one tenant's slow writes never take every permit from the
/// others. A cloud update is never waited for while a permit is held.
pub struct Renders {
    in_all: Arc<Semaphore>,
    per_namespace: usize,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// How many templated Secrets are read, rendered and written at once, in all.
pub const RENDERS_AT_ONCE: usize = 8;
/// How many of those one namespace may hold.
pub const PERMITS_PER_NAMESPACE: usize = 2;

/// A permit, held until dropped.
pub struct RenderPermit {
    _namespace: OwnedSemaphorePermit,
    _in_all: OwnedSemaphorePermit,
}

impl Renders {
    /// `permits` in all, `per_namespace` of them for one namespace at most.
    pub fn new(permits: usize, per_namespace: usize) -> Self {
        Self {
            in_all: Arc::new(Semaphore::new(permits.max(1))),
            per_namespace: per_namespace.max(1),
            namespaces: Mutex::new(HashMap::new()),
        }
    }

    /// A permit to read, render or write `resource`'s Secret, held until dropped; `None` when
    /// it has no template data (its two keys are small). The namespace's share first, then one
    /// of all: a namespace waiting for its share holds none of the others'.
    pub async fn enter(&self, resource: &DynamicRegistration) -> Option<RenderPermit> {
        let template = resource.spec.secret_template.as_ref();
        if template.is_none_or(|template| template.data.is_empty()) {
            return None;
        }
        let namespace = self.namespace(&resource.namespace().unwrap_or_default());
        // The semaphores are never closed.
        let namespace = namespace.acquire_owned().await.ok()?;
        let in_all = self.in_all.clone().acquire_owned().await.ok()?;
        Some(RenderPermit {
            _namespace: namespace,
            _in_all: in_all,
        })
    }

    /// The namespace's share; shares nobody holds or waits for are forgotten as namespaces come
    /// and go.
    fn namespace(&self, namespace: &str) -> Arc<Semaphore> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        if namespaces.len() > 256 {
            let unused = |share: &Arc<Semaphore>| {
                Arc::strong_count(share) == 1 && share.available_permits() == self.per_namespace
            };
            namespaces.retain(|_, share| !unused(share));
        }
        namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_namespace)))
            .clone()
    }
}

impl Default for Renders {
    fn default() -> Self {
        Self::new(RENDERS_AT_ONCE, PERMITS_PER_NAMESPACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode, SecretTemplate};

    fn resource(templated: bool, namespace: &str) -> DynamicRegistration {
        let mut spec =
            DynamicRegistrationSpec::new("P1", "ap-guangzhou", RegistrationMode::AutoCreate, 1);
        if templated {
            spec.secret_template = Some(SecretTemplate {
                data: [("A".to_owned(), "{{ productSecret }}".to_owned())].into(),
                ..SecretTemplate::default()
            });
        }
        let mut resource = DynamicRegistration::new("r", spec);
        resource.metadata.namespace = Some(namespace.to_owned());
        resource
    }

    #[tokio::test]
    async fn only_templated_secrets_take_one_of_the_few_places() {
        let renders = Renders::new(2, 2);
        let first = renders.enter(&resource(true, "a")).await;
        let second = renders.enter(&resource(true, "b")).await;
        assert!(first.is_some() && second.is_some());
        let templated = resource(true, "c");
        let third = renders.enter(&templated);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut third)
                .await
                .is_err(),
            "a third templated render went ahead"
        );
        assert!(
            renders.enter(&resource(false, "a")).await.is_none(),
            "untemplated: no permit needed"
        );
        drop(first);
        assert!(third.await.is_some());
    }

    /// One namespace whose writes are slow holds at most its share: the others go on.
    #[tokio::test]
    async fn one_namespace_never_takes_every_place() {
        let renders = Renders::new(4, 2);
        let slow: Vec<_> = [
            renders.enter(&resource(true, "slow")).await,
            renders.enter(&resource(true, "slow")).await,
        ]
        .into();
        let third = resource(true, "slow");
        let waiting = renders.enter(&third);
        tokio::pin!(waiting);
        let wait = std::time::Duration::from_millis(50);
        assert!(
            tokio::time::timeout(wait, &mut waiting).await.is_err(),
            "a namespace took more than its share"
        );
        let other = tokio::time::timeout(wait, renders.enter(&resource(true, "other")))
            .await
            .expect("another namespace waited behind the slow one");
        assert!(other.is_some());
        drop(slow);
        assert!(waiting.await.is_some());
    }
}
