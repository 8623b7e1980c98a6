//! State shared by all reconciles: clients, settings, the resource cache, resting credentials and
//! per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use rand::Rng;
use tokio::sync::mpsc::UnboundedSender;

use crate::cloud::CloudClient;
use crate::controller::admission::{Admission, Source};
use crate::controller::cluster_access::ClusterAccess;
use crate::controller::cluster_credentials::ClusterCredentials;
use crate::controller::crd::DynamicRegistration;
use crate::controller::credentials::{CredentialGate, DefaultCredentials, NamespaceAllowList};
use crate::controller::decision::{Progress, claims};
use crate::controller::events::EventPublisher;
use crate::controller::index::{ResourceIndex, ResourceKey};
use crate::controller::observe::Observer;
use crate::controller::read_cache::{KnownCredentials, KnownSecrets, VerifiedSecrets};
use crate::controller::secret_cache::SecretCache;
use crate::controller::shard::ShardSelector;
use crate::ops::metrics::Metrics;

/// Operator-chosen behaviour (flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Requeue after a successful reconcile, to catch changes made in the console.
    pub resync_interval: Duration,
    /// Requeue after an error a person must fix (the resource also reconciles on any change).
    pub stalled_retry_interval: Duration,
    /// Longest age of the shared product snapshot a reconcile may decide on.
    pub observe_interval: Duration,
    /// Reconciles under way at once per credentials source and region ([`Admission`]).
    pub reconciles_per_source: usize,
    /// The resources and Secrets in view, in a shard (`--watch-label-selector`).
    pub shard: Option<ShardSelector>,
    /// First backoff after a transient failure; doubles up to `max_backoff`.
    pub base_backoff: Duration,
    /// Longest backoff after transient failures.
    pub max_backoff: Duration,
    /// The controller's own credentials (`TENCENTCLOUD_*`, or TKE's web identity).
    pub default_credentials: Option<DefaultCredentials>,
    /// Namespaces allowed to use them.
    pub default_credentials_namespaces: NamespaceAllowList,
}

impl Settings {
    /// Defaults: resync 10 min, stalled retry 15 min, backoff 2 s to 5 min, 256 reconciles per
    /// source, no default credentials.
    pub fn new() -> Self {
        Self {
            resync_interval: Duration::from_secs(600),
            stalled_retry_interval: Duration::from_secs(900),
            observe_interval: Duration::from_secs(60),
            reconciles_per_source: 256,
            shard: None,
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            default_credentials: None,
            default_credentials_namespaces: NamespaceAllowList::None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Tencent Cloud client (rate-limited, retrying).
    pub cloud: CloudClient,
    /// Publishes Events.
    pub events: EventPublisher,
    /// Flags.
    pub settings: Settings,
    /// Every DynamicRegistration in view, for conflict detection.
    pub registrations: Store<DynamicRegistration>,
    /// `registrations` by product, credentials and Secrets used.
    pub resource_index: Arc<ResourceIndex>,
    /// Turns true once `registrations` and `secrets` hold their first complete lists.
    cache_ready: tokio::sync::watch::Receiver<bool>,
    /// Which credentials may be used now.
    pub credential_gate: CredentialGate,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Shared snapshots of the cloud's products.
    pub observer: Observer,
    failures: FailureCounts,
    /// Published Secrets known to match the cloud.
    pub verified_secrets: VerifiedSecrets,
    /// Published Secrets as last written or read, by resourceVersion: not read again.
    pub known_secrets: KnownSecrets,
    /// Credentials as last read, by resourceVersion: not read again.
    pub known_credentials: KnownCredentials,
    /// What decisions read of the Secrets in view (never their data): their versions, Secrets
    /// published under a former name, and credentials Secrets carrying our in-use finalizer.
    pub secrets: Arc<SecretCache>,
    /// Where to announce a resource whose claim changed (it went, or it now reaches its
    /// product), so the other claimants of the product reconcile at once.
    claim_changes: Option<UnboundedSender<DynamicRegistration>>,
    /// Credentials from ClusterCredentials.
    pub cluster_access: ClusterAccess,
    /// Places for reconciles, per credentials source.
    pub admission: Admission,
}

/// The watch caches a context reads.
pub struct Caches {
    /// Every DynamicRegistration in view.
    pub registrations: Store<DynamicRegistration>,
    /// `registrations` by product, credentials and Secrets used, fed by the same watch.
    pub resource_index: Arc<ResourceIndex>,
    /// What decisions read of every Secret in view.
    pub secrets: Arc<SecretCache>,
    /// Turns true once `registrations` and `secrets` hold their first complete lists.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// Every ClusterCredentials.
    pub cluster_credentials: Store<ClusterCredentials>,
    /// Metadata of the namespaces in view (their labels select ClusterCredentials).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl Context {
    /// A context for these clients and settings.
    pub fn new(
        client: Client,
        cloud: CloudClient,
        events: EventPublisher,
        settings: Settings,
        caches: Caches,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            observer: Observer::new(cloud.clone(), settings.observe_interval),
            // Nobody wakes parked resources until `admitting` brings the controller's admission.
            admission: Admission::new(
                settings.reconciles_per_source,
                tokio::sync::mpsc::unbounded_channel().0,
            ),
            cache_ready: caches.ready,
            metrics,
            client,
            cloud: cloud.clone(),
            events,
            credential_gate: CredentialGate::new(settings.stalled_retry_interval),
            settings,
            registrations: caches.registrations,
            resource_index: caches.resource_index,
            failures: FailureCounts::default(),
            verified_secrets: VerifiedSecrets::default(),
            known_secrets: KnownSecrets::default(),
            known_credentials: KnownCredentials::default(),
            secrets: caches.secrets,
            claim_changes: None,
            cluster_access: ClusterAccess::new(
                caches.cluster_credentials,
                caches.namespaces,
                cloud.clone(),
            ),
        }
    }

    /// Admits reconciles through `admission` (shared with the watch that promotes them).
    pub fn admitting(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Whether `secret`, still in the watch cache, is at the version we last wrote or read:
    /// its event tells nothing new. (A deleted Secret is no longer in the cache.)
    pub fn is_known_secret_version(&self, secret: &PartialObjectMeta<Secret>) -> bool {
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        let Some(version) = secret.resource_version() else {
            return false;
        };
        self.secret_version(&namespace, &name).as_deref() == Some(version.as_str())
            && self.known_secrets.at(&namespace, &name, &version).is_some()
    }

    /// Announces claim changes on `sender` (see [`Context::claim_changed`]).
    pub fn announcing_claims(mut self, sender: UnboundedSender<DynamicRegistration>) -> Self {
        self.claim_changes = Some(sender);
        self
    }

    /// The resourceVersion of Secret `namespace/name` in the metadata watch cache, if it is there.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets.version(namespace, name)
    }

    /// `resource`'s claim changed: the other claimants of its product reconcile at once.
    pub fn claim_changed(&self, resource: &DynamicRegistration) {
        if let Some(sender) = &self.claim_changes {
            let _ = sender.send(resource.clone());
        }
    }

    /// Waits until the resource and Secret caches hold complete lists. (kube's `Store::wait_until_ready`
    /// wakes only one of several concurrent waiters, so reconciles wait on this channel instead,
    /// fed by a single waiter.)
    pub async fn cache_ready(&self) {
        let mut ready = self.cache_ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// How many resources read the cloud with the same credentials in the same region (the
    /// same credentials Secret, ClusterCredentials, or the default credentials), this one
    /// included.
    pub fn resources_sharing_credentials(&self, resource: &DynamicRegistration) -> usize {
        let key = ResourceKey::Credentials(Source::of(resource));
        self.resource_index.count(&key).max(1)
    }

    /// The resources in view carrying `key`.
    pub fn resources_with(&self, key: &ResourceKey) -> Vec<Arc<DynamicRegistration>> {
        self.resource_index
            .get(key)
            .iter()
            .filter_map(|object| self.registrations.get(object))
            .collect()
    }

    /// The claimants of `resource`'s product in its region, itself included.
    fn claimants(&self, resource: &DynamicRegistration) -> Vec<Arc<DynamicRegistration>> {
        let spec = &resource.spec;
        self.resources_with(&ResourceKey::Product(
            spec.region.clone(),
            spec.product_id.clone(),
        ))
    }

    /// The controller's own credentials, if configured and allowed for `namespace`.
    pub fn default_credentials_for(&self, namespace: &str) -> Option<&DefaultCredentials> {
        self.settings.default_credentials.as_ref().filter(|_| {
            self.settings
                .default_credentials_namespaces
                .allows(namespace)
        })
    }

    /// The older resource managing the same product and region, as (namespace, name), among
    /// the `Full` claims whose last status shows their credentials reach the product
    /// ([`claims::reaches_product`]). An `ObserveOnly` resource neither blocks nor is blocked:
    /// reading is not fighting. The oldest claimant wins; ties go to the smaller namespace/name,
    /// so every replica agrees.
    pub fn older_claimant(&self, resource: &DynamicRegistration) -> Option<(String, String)> {
        let key = claim_order(resource);
        self.claimants(resource)
            .iter()
            // A claimant being deleted still counts until it is gone: its deletion may still
            // switch registration off, and the next claimant takes over after that.
            .filter(|other| other.metadata.uid != resource.metadata.uid)
            .filter(|other| claims::competes(&resource.spec, &other.spec))
            .filter(|other| claims::reaches_product(other.status.as_ref()))
            .filter(|other| claim_order(other) < key)
            .min_by_key(|other| claim_order(other))
            .map(|owner| (owner.namespace().unwrap_or_default(), owner.name_any()))
    }

    /// The other resources claiming the product and region of `gone`: when a claimant goes, the
    /// next in line takes over at once rather than at its slow retry.
    pub fn other_claimants(
        &self,
        gone: &DynamicRegistration,
    ) -> Vec<ObjectRef<DynamicRegistration>> {
        self.claimants(gone)
            .iter()
            .filter(|other| other.metadata.uid != gone.metadata.uid)
            .map(|other| ObjectRef::from_obj(&**other))
            .collect()
    }

    /// When to reconcile this resource again, given how this reconcile ended: [`requeue_delay`]
    /// with this resource's count of transient failures in a row, jittered.
    pub fn requeue_after(
        &self,
        object: &ObjectRef<DynamicRegistration>,
        progress: Progress,
    ) -> Action {
        let in_a_row = self.failures.record(object, progress, |other| {
            self.registrations.get(other).is_some()
        });
        Action::requeue(jittered(requeue_delay(&self.settings, progress, in_a_row)))
    }
}

/// Transient failures in a row, per resource: what its backoff grows from.
#[derive(Debug, Default)]
pub struct FailureCounts(Mutex<HashMap<ObjectRef<DynamicRegistration>, u32>>);

impl FailureCounts {
    /// Counts how a reconcile of `object` ended; returns its failures in a row (0 unless
    /// `Retrying`). Entries of resources that no longer `exist` go, so that resources deleted
    /// while retrying leave nothing behind.
    pub fn record(
        &self,
        object: &ObjectRef<DynamicRegistration>,
        progress: Progress,
        exists: impl Fn(&ObjectRef<DynamicRegistration>) -> bool,
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

    /// How many resources are counted.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no resource is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long to wait before the next reconcile: the resync after success, the slow retry when a
/// person must act, and for the `failures`-th transient failure in a row a backoff doubling from
/// `base_backoff` up to `max_backoff`.
pub fn requeue_delay(settings: &Settings, progress: Progress, failures: u32) -> Duration {
    match progress {
        Progress::Settled => settings.resync_interval,
        Progress::Stalled => settings.stalled_retry_interval,
        Progress::Retrying => settings
            .base_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(settings.max_backoff),
    }
}

/// ±10%, so resources created together do not come due together.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::rng().random_range(0.9..=1.1))
}

fn claim_order(
    resource: &DynamicRegistration,
) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        resource
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0),
        resource.namespace().unwrap_or_default(),
        resource.name_any(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_counts_forget_resources_that_are_gone() {
        let counts = FailureCounts::default();
        let a = ObjectRef::new("a").within("fleet");
        let b = ObjectRef::new("b").within("fleet");
        let everything = |_: &ObjectRef<DynamicRegistration>| true;
        assert_eq!(counts.record(&a, Progress::Retrying, everything), 1);
        assert_eq!(counts.record(&a, Progress::Retrying, everything), 2);
        assert_eq!(counts.record(&b, Progress::Retrying, everything), 1);
        // `a` was deleted while retrying: the next count anywhere drops it.
        let only_b = |object: &ObjectRef<DynamicRegistration>| object.name == "b";
        assert_eq!(counts.record(&b, Progress::Retrying, only_b), 2);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts.record(&b, Progress::Settled, only_b), 0);
        assert!(counts.is_empty());
    }

    #[test]
    fn requeue_delays() {
        let settings = Settings::default();
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
                requeue_delay(&settings, progress, failures),
                expected,
                "{progress:?} after {failures} failures"
            );
        }
        for _ in 0..100 {
            let delay = jittered(secs(600));
            assert!((secs(540)..=secs(660)).contains(&delay), "{delay:?}");
        }
    }
}
