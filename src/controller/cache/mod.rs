//! What the controller knows without asking the API server: the watch caches (the resources in
//! view, with their [`index`]es; the Secrets in view as far as decisions read them, in
//! [`secrets`]; ClusterCredentials; namespace labels) and what it last wrote or read of a Secret
//! at a resourceVersion ([`versions`]), so that a steady state reads nothing; and when each
//! resource last read the cloud ([`observations`]), since a steady state writes nothing either;
//! and what an update answered until a status records it ([`updates`]).

pub mod index;
pub mod observations;
pub mod secrets;
pub mod updates;
pub mod versions;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use crate::controller::resources::{ClusterCredentials, DynamicRegistration};
use index::{ResourceIndex, ResourceKey};
use observations::Observations;
use secrets::SecretCache;
use updates::UnrecordedUpdates;
use versions::{KnownSecrets, VerifiedSecrets};

/// Every cache a reconcile reads.
pub struct Caches {
    /// Every DynamicRegistration in view.
    pub resources: Store<DynamicRegistration>,
    /// `resources` by product, credentials and Secrets used, fed by the same watch.
    pub resource_index: Arc<ResourceIndex>,
    /// What decisions read of every Secret in view (never their data).
    pub secrets: Arc<SecretCache>,
    /// Published Secrets as last written or read, by resourceVersion: not read again.
    pub known_secrets: KnownSecrets,
    /// Published Secrets known to match the cloud, by resourceVersion.
    pub verified_secrets: VerifiedSecrets,
    /// When each resource last read the cloud successfully.
    pub observations: Observations,
    /// Updates the cloud answered that no status records yet.
    pub updates: UnrecordedUpdates,
    /// Every ClusterCredentials.
    pub cluster_credentials: Store<ClusterCredentials>,
    /// The metadata of the namespaces in view (their labels select ClusterCredentials).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Turns true once every watch above holds its first complete list.
    pub listed: watch::Receiver<bool>,
}

impl Caches {
    /// Waits until the watches hold complete lists: a verdict on a half-listed cache (a claimant
    /// not seen yet, a Secret taken as absent) would be wrong. (kube's `Store::wait_until_ready`
    /// wakes only one of several concurrent waiters, so reconciles wait on this channel.)
    pub async fn wait_until_listed(&self) {
        let mut listed = self.listed.clone();
        let _ = listed.wait_for(|listed| *listed).await;
    }

    /// The resources in view carrying `key`.
    pub fn resources_with(&self, key: &ResourceKey) -> Vec<Arc<DynamicRegistration>> {
        self.resource_index
            .get(key)
            .iter()
            .filter_map(|object| self.resources.get(object))
            .collect()
    }

    /// The claimants of `resource`'s product in its service and region, itself included.
    pub fn claimants(&self, resource: &DynamicRegistration) -> Vec<Arc<DynamicRegistration>> {
        let spec = &resource.spec;
        self.resources_with(&ResourceKey::Product(
            spec.service,
            spec.region.clone(),
            spec.product_id.clone(),
        ))
    }

    /// How many resources read the cloud with the same credentials in the same region as
    /// `resource` (itself included).
    pub fn sharing_credentials(&self, resource: &DynamicRegistration) -> usize {
        let key = ResourceKey::Credentials(resource.credentials_source());
        self.resource_index.count(&key).max(1)
    }

    /// Whether `secret`, as the watch shows it, is at the version we last wrote or read: its
    /// event tells nothing new. (A deleted Secret is no longer in the cache.)
    pub fn is_known_secret_version(&self, secret: &PartialObjectMeta<Secret>) -> bool {
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        let Some(version) = secret.resource_version() else {
            return false;
        };
        self.secrets.version(&namespace, &name).as_deref() == Some(version.as_str())
            && self
                .known_secrets
                .knows_version(&namespace, &name, &version)
    }
}
