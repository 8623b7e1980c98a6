//! What makes a resource reconcile. Its own changes that a person or tool made (the spec,
//! marking it for deletion, finalizers, a reconcile request), never our status writes; and
//! changes of what it depends on: a Secret it publishes or reads, the ClusterCredentials it
//! names or the labels of its namespace, another claimant of its product going or starting to
//! count, and its turn coming in its admission queue.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::ObjectMeta;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::admission::{Admission, ResourceRef};
use super::watches::Events;
use crate::controller::cache::Caches;
use crate::controller::cache::index::ResourceKey;
use crate::controller::resources::{ClusterCredentials, DynamicRegistration, REQUESTED_AT};

/// A trigger stream, as kube's controller takes it.
type Triggers<K> = Result<K, watcher::Error>;

/// What else the resource watch tells about.
pub struct Hooks {
    /// Resources gone for good: the other claimants of their product take over (reconciles also
    /// announce claims that start or stop counting here).
    pub released: UnboundedSender<DynamicRegistration>,
    /// Any change may free a protected credentials Secret.
    pub sweep: Arc<Notify>,
    /// A person changed a resource: if parked, it moves up; a resource gone waits no more.
    pub admission: Admission,
    /// Our in-use finalizer: a change of a Secret carrying it wakes the sweep.
    pub in_use_finalizer: String,
}

/// The resources that need a reconcile, from the resource watch.
pub fn resources(
    events: Events<DynamicRegistration>,
    hooks: Hooks,
) -> impl Stream<Item = Triggers<DynamicRegistration>> + Send + 'static {
    events
        .inspect(move |event| {
            match event {
                Ok(watcher::Event::Delete(gone)) => {
                    hooks.admission.forget(&ObjectRef::from_obj(gone));
                    let _ = hooks.released.send(gone.clone());
                }
                Ok(watcher::Event::Apply(changed)) if changed.awaited_by_person() => {
                    hooks.admission.promote(&ObjectRef::from_obj(changed));
                }
                _ => {}
            }
            hooks.sweep.notify_one();
        })
        .applied_objects()
        .predicate_filter(own_changes(), Default::default())
}

/// What makes a resource reconcile of itself: its generation (the spec, and marking it for
/// deletion), its finalizers, and a new reconcile request; never our own status writes.
fn own_changes() -> impl Predicate<DynamicRegistration> {
    predicates::generation
        .combine(predicates::finalizers)
        .combine(reconcile_requested)
}

/// A new value of the reconcile-request annotation triggers a reconcile (Flux's convention).
fn reconcile_requested(resource: &DynamicRegistration) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let requested = resource.annotations().get(REQUESTED_AT)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    requested.hash(&mut hasher);
    Some(hasher.finish())
}

/// The Secrets that changed; a change of one carrying our in-use finalizer wakes the sweep.
pub fn secrets(
    events: Events<PartialObjectMeta<Secret>>,
    (sweep, in_use_finalizer): (Arc<Notify>, String),
) -> impl Stream<Item = Triggers<PartialObjectMeta<Secret>>> + Send + 'static {
    events
        .inspect(move |event| {
            if let Ok(watcher::Event::Apply(secret) | watcher::Event::Delete(secret)) = event
                && secret.finalizers().contains(&in_use_finalizer)
            {
                sweep.notify_one();
            }
        })
        .touched_objects()
}

/// ClusterCredentials whose spec changed (a new generation, not our status writes) or that are
/// gone: either matters to the resources using them.
pub fn cluster_credentials(
    events: Events<ClusterCredentials>,
) -> impl Stream<Item = Triggers<ClusterCredentials>> + Send + 'static {
    let mut generations = std::collections::HashMap::<String, i64>::new();
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(declared) | watcher::Event::InitApply(declared)) => {
                let generation = declared.metadata.generation.unwrap_or_default();
                (generations.insert(declared.name_any(), generation) != Some(generation))
                    .then_some(Ok(declared))
            }
            Ok(watcher::Event::Delete(gone)) => {
                generations.remove(&gone.name_any());
                Some(Ok(gone))
            }
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        };
        std::future::ready(changed)
    })
}

/// Namespaces whose labels changed: they may select ClusterCredentials or no longer.
pub fn namespaces(
    events: Events<PartialObjectMeta<Namespace>>,
) -> impl Stream<Item = Triggers<PartialObjectMeta<Namespace>>> + Send + 'static {
    events
        .touched_objects()
        .predicate_filter(predicates::labels, Default::default())
}

/// The messages of `receiver` (resources whose claim changed) as a trigger stream.
pub fn claim_changes(
    receiver: UnboundedReceiver<DynamicRegistration>,
) -> impl Stream<Item = Triggers<DynamicRegistration>> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|changed| (Ok(changed), receiver))
    })
}

/// The parked resources whose turn came ([`Admission`]), as a trigger stream (of their names:
/// a trigger must be a resource).
pub fn woken(
    receiver: UnboundedReceiver<ResourceRef>,
) -> impl Stream<Item = Triggers<PartialObjectMeta<DynamicRegistration>>> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        let woken = receiver.recv().await?;
        let name = ObjectMeta {
            name: Some(woken.name),
            namespace: woken.namespace,
            ..ObjectMeta::default()
        };
        Some((Ok(name.into_request_partial()), receiver))
    })
}

/// How long a change of a published Secret may be our own write whose answer is still on its
/// way: the watch often shows a write before its answer arrives.
const OWN_WRITE_GRACE: Duration = Duration::from_secs(2);

/// Published Secrets changed to a version unknown when the watch showed them, each once
/// [`OWN_WRITE_GRACE`] has passed. (Every entry waits the same grace, so they come due in the
/// order they were sent.)
pub fn after_grace(
    receiver: UnboundedReceiver<(Instant, PartialObjectMeta<Secret>)>,
) -> impl Stream<Item = Triggers<PartialObjectMeta<Secret>>> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        let (due, secret) = receiver.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((Ok(secret), receiver))
    })
}

/// Which resources each trigger concerns, looked up in the caches.
pub struct Concerned {
    caches: Arc<Caches>,
    /// Published Secrets to look at again after [`OWN_WRITE_GRACE`] ([`after_grace`]).
    later: UnboundedSender<(Instant, PartialObjectMeta<Secret>)>,
}

impl Concerned {
    /// Looks resources up in `caches`; sends published Secrets to look at again to `later`.
    pub fn new(
        caches: Arc<Caches>,
        later: UnboundedSender<(Instant, PartialObjectMeta<Secret>)>,
    ) -> Self {
        Self { caches, later }
    }

    /// The resources a Secret change concerns now: those using it as credentials, directly or
    /// through ClusterCredentials; those wanting its name; and its publisher, unless the change
    /// may be our own write coming back before its answer. Such a version is looked at again
    /// after [`OWN_WRITE_GRACE`] ([`Concerned::by_secret_after_grace`]): most often it is ours,
    /// and a reconcile (with a status write) per write is spared.
    pub fn by_secret(&self, secret: PartialObjectMeta<Secret>) -> Vec<ResourceRef> {
        let mut concerned = self.using_as_cluster_credentials(&secret);
        if self.caches.is_known_secret_version(&secret) {
            return concerned;
        }
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        let still_there = self.caches.secrets.version(&namespace, &name).is_some();
        let owners = owners_of(&secret);
        let mut now = affected_by_secret(&self.caches, &secret);
        if still_there && !owners.is_empty() {
            now.retain(|affected| !owners.contains(affected));
            // Fails only once the controller stops: nobody is left to reconcile then.
            let _ = self.later.send((Instant::now() + OWN_WRITE_GRACE, secret));
        }
        concerned.extend(now);
        concerned
    }

    /// The publisher of a Secret looked at again after the grace, if its version is still not
    /// one we wrote or read: someone else wrote it.
    pub fn by_secret_after_grace(&self, secret: PartialObjectMeta<Secret>) -> Vec<ResourceRef> {
        if self.caches.is_known_secret_version(&secret) {
            return Vec::new();
        }
        let mut owners = owners_of(&secret);
        owners.retain(|owner| self.caches.resources.get(owner).is_some());
        owners
    }

    /// The resources using ClusterCredentials whose source is this Secret: a new key (or none)
    /// is taken into account at once.
    fn using_as_cluster_credentials(&self, secret: &PartialObjectMeta<Secret>) -> Vec<ResourceRef> {
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        self.caches
            .cluster_credentials
            .state()
            .iter()
            .filter(|declared| {
                declared
                    .spec
                    .secret_ref
                    .as_ref()
                    .is_some_and(|source| source.namespace == namespace && source.name == name)
            })
            .flat_map(|declared| self.by_cluster_credentials(declared))
            .collect()
    }

    /// The resources naming these ClusterCredentials.
    pub fn by_cluster_credentials(&self, declared: &ClusterCredentials) -> Vec<ResourceRef> {
        let key = ResourceKey::ClusterCredentials(declared.name_any());
        self.caches.resource_index.get(&key)
    }

    /// The resources of a namespace that use ClusterCredentials: its labels may select them.
    pub fn by_namespace(&self, namespace: &PartialObjectMeta<Namespace>) -> Vec<ResourceRef> {
        let namespace = namespace.name_any();
        self.caches
            .resources
            .state()
            .iter()
            .filter(|resource| {
                resource.namespace().as_deref() == Some(namespace.as_str())
                    && resource.spec.cluster_credentials_ref.is_some()
            })
            .map(|resource| ObjectRef::from_obj(&**resource))
            .collect()
    }

    /// The other claimants of the product of a resource whose claim changed (it went, or now
    /// reaches the product, or no longer does): the next in line takes over at once rather
    /// than at its slow retry.
    pub fn by_claim(&self, changed: &DynamicRegistration) -> Vec<ResourceRef> {
        self.caches
            .claimants(changed)
            .iter()
            .filter(|other| other.metadata.uid != changed.metadata.uid)
            .map(|other| ObjectRef::from_obj(&**other))
            .collect()
    }
}

/// The resources a Secret change concerns: its owner (a published Secret edited or deleted),
/// those publishing under its name (a foreign Secret removed), and those using it as credentials
/// (rotated keys).
fn affected_by_secret(caches: &Caches, secret: &PartialObjectMeta<Secret>) -> Vec<ResourceRef> {
    let mut affected = owners_of(secret);
    affected.extend(caches.resource_index.get(&ResourceKey::Secret(
        secret.namespace().unwrap_or_default(),
        secret.name_any(),
    )));
    affected.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    affected.dedup();
    affected
}

/// The resources controlling `secret` (the one that published it).
fn owners_of(secret: &PartialObjectMeta<Secret>) -> Vec<ResourceRef> {
    let namespace = secret.namespace().unwrap_or_default();
    let kind = DynamicRegistration::kind(&());
    secret
        .owner_references()
        .iter()
        .filter(|owner| owner.controller == Some(true) && owner.kind == kind)
        .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cache::index::{ResourceIndex, resource_keys};
    use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::reflector;

    fn registration(name: &str, namespace: &str, credentials: &str) -> DynamicRegistration {
        let spec = DynamicRegistrationSpec::new(
            format!("P-{name}"),
            "ap-guangzhou",
            RegistrationMode::AutoCreate,
            1,
        );
        let mut resource = DynamicRegistration::new(name, spec.with_credentials(credentials));
        resource.metadata.namespace = Some(namespace.into());
        resource
    }

    fn secret(name: &str, namespace: &str, owner: Option<&str>) -> PartialObjectMeta<Secret> {
        let mut meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        };
        if let Some(owner) = owner {
            meta.owner_references = Some(vec![OwnerReference {
                api_version: "iothub.dynreg.io/v1alpha1".into(),
                kind: "DynamicRegistration".into(),
                name: owner.into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
        meta.into_request_partial()
    }

    fn names(refs: Vec<ResourceRef>) -> Vec<String> {
        refs.into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect()
    }

    fn caches(resources: &[DynamicRegistration]) -> Caches {
        let index = ResourceIndex::new(resource_keys);
        for resource in resources {
            index.apply(&watcher::Event::Apply(resource.clone()));
        }
        Caches {
            resources: reflector::store().0,
            resource_index: Arc::new(index),
            secrets: Arc::default(),
            known_secrets: Default::default(),
            verified_secrets: Default::default(),
            observations: Default::default(),
            updates: Default::default(),
            cluster_credentials: reflector::store().0,
            namespaces: reflector::store().0,
            listed: tokio::sync::watch::channel(true).1,
        }
    }

    #[test]
    fn secret_changes_reach_owners_referrers_and_namesakes() {
        let caches = caches(&[
            registration("a", "fleet", "shared-creds"),
            registration("b", "fleet", "shared-creds"),
            registration("c", "other", "shared-creds"),
            registration("d", "fleet", "own-creds"),
        ]);
        let affected = |secret| names(affected_by_secret(&caches, &secret));
        // Rotated credentials: every user in that namespace, none elsewhere.
        assert_eq!(
            affected(secret("shared-creds", "fleet", None)),
            ["fleet/a", "fleet/b"]
        );
        // A published Secret edited or deleted: its owner.
        assert_eq!(
            affected(secret("d-product-secret", "fleet", Some("d"))),
            ["fleet/d"]
        );
        // A foreign Secret under a published name removed: the resource that wants the name.
        assert_eq!(
            affected(secret("a-product-secret", "fleet", None)),
            ["fleet/a"]
        );
        assert!(affected(secret("unrelated", "fleet", None)).is_empty());
    }

    #[test]
    fn status_writes_do_not_trigger_but_spec_lifecycle_and_requests_do() {
        let triggers = own_changes();
        let mut resource = registration("a", "fleet", "creds");
        resource.metadata.generation = Some(1);
        let before = triggers.hash_property(&resource);
        resource.status = Some(Default::default());
        resource.metadata.resource_version = Some("99".into());
        assert_eq!(
            triggers.hash_property(&resource),
            before,
            "status-only change"
        );
        resource.metadata.generation = Some(2);
        let after_spec = triggers.hash_property(&resource);
        assert_ne!(after_spec, before);
        resource.metadata.finalizers = Some(vec!["x".into()]);
        let after_finalizer = triggers.hash_property(&resource);
        assert_ne!(after_finalizer, after_spec);
        resource.metadata.annotations = Some([(REQUESTED_AT.to_owned(), "now".to_owned())].into());
        let requested = triggers.hash_property(&resource);
        assert_ne!(requested, after_finalizer, "a reconcile request");
        resource.metadata.annotations =
            Some([(REQUESTED_AT.to_owned(), "again".to_owned())].into());
        assert_ne!(
            triggers.hash_property(&resource),
            requested,
            "a new request"
        );
    }
}
