//! Wires the watches, the reconciler and the shared context into a running controller.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{Notify, watch};

use crate::cloud::CloudClient;
use crate::controller::admission::Admission;
use crate::controller::cluster_credentials::ClusterCredentials;
use crate::controller::context::{Caches, Context, Settings};
use crate::controller::crd::{DynamicRegistration, MANAGER, REQUESTED_AT};
use crate::controller::decision::CREDENTIALS_IN_USE;
use crate::controller::events::EventPublisher;
use crate::controller::index::{Index, ResourceIndex, ResourceKey, resource_keys};
use crate::controller::protection::release_unused_protection;
use crate::controller::reconcile::{error_policy, reconcile};
use crate::controller::secret_cache::SecretCache;
use crate::controller::watch::{WatchBackoff, resilient_watch, resilient_watch_with};
use crate::ops::http::Health;
use crate::ops::metrics::{Census, Metrics};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch one namespace instead of the whole cluster.
    pub watch_namespace: Option<String>,
    /// Name of this replica, for Events (the pod name).
    pub instance: Option<String>,
}

/// Everything the controller shares with the operations endpoint.
#[derive(Clone)]
pub struct Shared {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// Runs the controller until `shutdown` completes, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    cloud: CloudClient,
    settings: Settings,
    options: RunOptions,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (registrations, secrets) = match &options.watch_namespace {
        Some(namespace) => (
            Api::<DynamicRegistration>::namespaced(client.clone(), namespace),
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // A shard watches the resources and the Secrets its selector matches; the Secrets it
    // publishes carry the resource's labels the selector names.
    let in_shard = match &settings.shard {
        Some(shard) => watcher::Config::default().labels(shard.as_str()),
        None => watcher::Config::default(),
    };
    let (reader, writer) = reflector::store();
    let (cache_ready, cache_ready_rx) = watch::channel(false);
    // Reconciles decide on the resources and the Secrets in view (a Secret absent from the
    // cache is taken as absent), so they wait for both first lists.
    let first_lists = Arc::new(FirstLists {
        pending: AtomicUsize::new(2),
        ready: cache_ready,
        health: shared.health.clone(),
    });
    let (claim_changes, changed_claims) = tokio::sync::mpsc::unbounded_channel();
    let sweep = Arc::new(Notify::new());
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let admission = Admission::new(settings.reconciles_per_source, wake);
    let hooks = Hooks {
        released: claim_changes.clone(),
        sweep: sweep.clone(),
        admission: admission.clone(),
    };
    let resource_index = Arc::new(ResourceIndex::new(resource_keys));
    let resources = resource_changes(
        (registrations, in_shard.clone()),
        (writer, resource_index.clone()),
        first_lists.clone(),
        hooks,
    );
    let secret_cache = Arc::new(SecretCache::default());
    let secret_changes = secret_changes(
        (secrets, in_shard),
        secret_cache.clone(),
        first_lists,
        sweep.clone(),
    );
    // ClusterCredentials, and the labels of namespaces that may select them: a change of
    // either re-evaluates every resource using them at once.
    let (credentials_reader, credentials_writer) = reflector::store();
    let credentials_changes = changed_or_gone(
        resilient_watch(Api::<ClusterCredentials>::all(client.clone()))
            .modify(|declared| declared.managed_fields_mut().clear())
            .reflect(credentials_writer),
    );
    let namespaces = match &options.watch_namespace {
        Some(namespace) => watcher::Config::default().fields(&format!("metadata.name={namespace}")),
        None => watcher::Config::default(),
    };
    let (namespace_reader, namespace_writer) = reflector::store();
    let namespace_changes = resilient_watch_with(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        namespaces,
    )
    .modify(|namespace| namespace.managed_fields_mut().clear())
    .reflect(namespace_writer)
    .touched_objects()
    .predicate_filter(predicates::labels, Default::default());
    let events = EventPublisher::new(client.clone(), MANAGER, options.instance.clone());
    shared.health.set_watches_established(false);
    shared.metrics.set_census(Some(census(reader.clone())));
    let caches = Caches {
        registrations: reader.clone(),
        resource_index: resource_index.clone(),
        secrets: secret_cache,
        ready: cache_ready_rx,
        cluster_credentials: credentials_reader.clone(),
        namespaces: namespace_reader,
    };
    let context = Arc::new(
        Context::new(
            client,
            cloud,
            events,
            settings,
            caches,
            shared.metrics.clone(),
        )
        .announcing_claims(claim_changes)
        .admitting(admission),
    );
    let sweeper = tokio::spawn(release_unused_protection(context.clone(), sweep));
    info!(
        namespace = options.watch_namespace.as_deref().unwrap_or("(all)"),
        reconciles_per_source = context.settings.reconciles_per_source,
        label_selector = context
            .settings
            .shard
            .as_ref()
            .map_or("(none)", |shard| shard.as_str()),
        "controller starting"
    );
    let claims = context.clone();
    let users = reader.clone();
    let index = resource_index.clone();
    let secrets_context = context.clone();
    let (recheck, rechecked) = tokio::sync::mpsc::unbounded_channel();
    Controller::for_stream(resources, reader.clone())
        .watches_stream(secret_changes, move |secret| {
            let mut affected = users_of_secret_source(&index, &credentials_reader, &secret);
            affected.extend(concerned_by_secret(
                &secrets_context,
                &index,
                secret,
                &recheck,
            ));
            affected
        })
        .watches_stream(receiver_stream(rechecked), |owner| {
            vec![ObjectRef::from_obj(&owner)]
        })
        .watches_stream(woken_stream(woken), |woken| {
            vec![ObjectRef::new(&woken.name_any()).within(&woken.namespace().unwrap_or_default())]
        })
        .watches_stream(receiver_stream(changed_claims), move |changed| {
            claims.other_claimants(&changed)
        })
        .watches_stream(credentials_changes, {
            let index = resource_index.clone();
            move |declared| users_of_cluster_credentials(&index, &declared.name_any())
        })
        .watches_stream(namespace_changes, move |namespace| {
            users_in_namespace(&users, &namespace.name_any())
        })
        .with_config(
            controller::Config::default()
                .concurrency(runner_slots(context.settings.reconciles_per_source)),
        )
        .trigger_backoff(WatchBackoff::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "controller event");
            }
        })
        .await;
    sweeper.abort();
    shared.health.set_watches_established(false);
    shared.metrics.set_census(None);
    info!("controller stopped");
}

/// How many reconciles kube's runner holds at once. Reconciles wait for a place in the queue of
/// their credentials (admission), and one that finds its queue full ends at once (parked), so
/// the runner holds mostly admitted reconciles waiting for their account's quota: room for
/// [`QUEUES_BUSY_AT_ONCE`] full queues means that many accounts busy together never wait for
/// each other's backlog (more share the room). Unbounded, the burst at start (every resource
/// triggered at once, nearly all parked) would size the runner's table for the whole fleet, and
/// it never shrinks.
fn runner_slots(places_per_queue: usize) -> u16 {
    let slots = places_per_queue.saturating_mul(QUEUES_BUSY_AT_ONCE);
    u16::try_from(slots).unwrap_or(u16::MAX)
}

/// Accounts (credentials and region) whose backlogs kube's runner holds at once.
const QUEUES_BUSY_AT_ONCE: usize = 8;

/// The Secrets that changed, fed into `cache`. Secrets are watched by metadata only: their data
/// never needs to sit in this process.
fn secret_changes(
    (secrets, in_shard): (Api<PartialObjectMeta<Secret>>, watcher::Config),
    cache: Arc<SecretCache>,
    first_lists: Arc<FirstLists>,
    protected_secret_changed: Arc<Notify>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    resilient_watch_with(secrets, in_shard)
        .inspect(move |event| {
            if let Ok(event) = event {
                cache.apply(event);
            }
        })
        .inspect(on_first_list(first_lists))
        .inspect(move |event| {
            if let Ok(watcher::Event::Apply(secret) | watcher::Event::Delete(secret)) = event
                && secret.finalizers().iter().any(|f| f == CREDENTIALS_IN_USE)
            {
                protected_secret_changed.notify_one();
            }
        })
        .touched_objects()
}

/// What else the resource watch tells about.
struct Hooks {
    /// Resources gone for good: the other claimants of their product take over (reconciles also
    /// announce claims that start to count here).
    released: UnboundedSender<DynamicRegistration>,
    /// Any change may free a protected credentials Secret.
    sweep: Arc<Notify>,
    /// A person changed a resource: if parked, it moves up; a resource gone waits no more.
    admission: Admission,
}

/// The messages of `receiver` as a trigger stream.
fn receiver_stream(
    receiver: UnboundedReceiver<DynamicRegistration>,
) -> impl futures::Stream<Item = Result<DynamicRegistration, watcher::Error>> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|gone| (Ok(gone), receiver))
    })
}

/// The parked resources whose turn came ([`Admission`]), as a trigger stream (of their names:
/// a trigger must be a resource).
fn woken_stream(
    receiver: UnboundedReceiver<ObjectRef<DynamicRegistration>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<DynamicRegistration>, watcher::Error>>
+ Send
+ 'static {
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

/// Counts the watches whose first list is still to come; once all are listed, the caches are
/// ready for reconciles and the controller for traffic. (Readiness comes from the watch streams
/// themselves: kube's `Store::wait_until_ready` wakes only one of several waiters.)
struct FirstLists {
    pending: AtomicUsize,
    ready: watch::Sender<bool>,
    health: Arc<Health>,
}

impl FirstLists {
    fn listed(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            info!("watches established");
            let _ = self.ready.send(true);
            self.health.set_watches_established(true);
        }
    }
}

/// The events of a watch that fills the cache `writer` and its `index`, telling `first_lists`
/// when its first list is in. `trim` drops what nothing reads before it is cached (managedFields
/// and kubectl's last-applied copy can each be larger than the rest of the object).
fn cached_watch<K, Key>(
    (api, config, trim): (Api<K>, watcher::Config, fn(&mut K)),
    (writer, index): (reflector::store::Writer<K>, Arc<Index<K, Key>>),
    first_lists: Arc<FirstLists>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Key: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
{
    resilient_watch_with(api, config)
        .modify(trim)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                index.apply(event);
            }
        })
        .inspect(on_first_list(first_lists))
}

/// A resource as cached: without managedFields and kubectl's last-applied copy of itself (a
/// reconcile request and the other annotations stay).
fn trim_resource(resource: &mut DynamicRegistration) {
    resource.managed_fields_mut().clear();
    resource.annotations_mut().remove(LAST_APPLIED);
}

/// kubectl's client-side apply keeps the whole manifest in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Tells `lists` when this watch completes its first list (later relists do not count).
fn on_first_list<K>(
    lists: Arc<FirstLists>,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    let mut listed = false;
    move |event| {
        if !listed && matches!(event, Ok(watcher::Event::InitDone)) {
            listed = true;
            lists.listed();
        }
    }
}

/// The resources that need a reconcile, fed into the cache `writer`.
fn resource_changes(
    (registrations, in_shard): (Api<DynamicRegistration>, watcher::Config),
    (writer, index): (
        reflector::store::Writer<DynamicRegistration>,
        Arc<ResourceIndex>,
    ),
    first_lists: Arc<FirstLists>,
    hooks: Hooks,
) -> impl futures::Stream<Item = Result<DynamicRegistration, watcher::Error>> + Send + 'static {
    // Only spec changes and lifecycle changes trigger (marking for deletion bumps the
    // generation too), never our own status writes.
    cached_watch(
        (registrations, in_shard, trim_resource),
        (writer, index),
        first_lists,
    )
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
    .predicate_filter(triggers(), Default::default())
}

/// What makes a resource reconcile: its generation (the spec, and marking it for deletion),
/// its finalizers, and a new reconcile request; never our own status writes.
fn triggers() -> impl Predicate<DynamicRegistration> {
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

/// The Ready reason of every resource in the cache, for the `resources` metric.
fn census(registrations: Store<DynamicRegistration>) -> Census {
    Box::new(move || {
        registrations
            .state()
            .iter()
            .map(|resource| {
                resource
                    .condition("Ready")
                    .map_or_else(|| "Unknown".to_owned(), |ready| ready.reason.clone())
            })
            .collect()
    })
}

/// ClusterCredentials whose spec changed (a new generation, not our status writes) or that are
/// gone: either matters to the resources using them.
fn changed_or_gone(
    events: impl futures::Stream<Item = Result<watcher::Event<ClusterCredentials>, watcher::Error>>
    + Send
    + 'static,
) -> impl futures::Stream<Item = Result<ClusterCredentials, watcher::Error>> + Send + 'static {
    let mut generations: HashMap<String, i64> = HashMap::new();
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

/// The resources naming ClusterCredentials `name`.
fn users_of_cluster_credentials(
    index: &ResourceIndex,
    name: &str,
) -> Vec<ObjectRef<DynamicRegistration>> {
    index.get(&ResourceKey::ClusterCredentials(name.to_owned()))
}

/// The resources using ClusterCredentials whose source is this Secret: a new key (or none)
/// is taken into account at once.
fn users_of_secret_source(
    index: &ResourceIndex,
    declared: &Store<ClusterCredentials>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DynamicRegistration>> {
    let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
    declared
        .state()
        .iter()
        .filter(|credentials| {
            credentials
                .spec
                .secret_ref
                .as_ref()
                .is_some_and(|source| source.namespace == namespace && source.name == name)
        })
        .flat_map(|credentials| users_of_cluster_credentials(index, &credentials.name_any()))
        .collect()
}

/// The resources of a namespace that use ClusterCredentials: its labels may select them.
fn users_in_namespace(
    registrations: &Store<DynamicRegistration>,
    namespace: &str,
) -> Vec<ObjectRef<DynamicRegistration>> {
    registrations
        .state()
        .iter()
        .filter(|resource| {
            resource.namespace().as_deref() == Some(namespace)
                && resource.spec.cluster_credentials_ref.is_some()
        })
        .map(|resource| ObjectRef::from_obj(&**resource))
        .collect()
}

/// The resources a Secret change concerns: its owner (a published Secret edited or deleted),
/// those publishing under its name (a foreign Secret removed), and those using it as credentials
/// (rotated keys).
fn affected_by_secret(
    index: &ResourceIndex,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DynamicRegistration>> {
    let mut affected = owners_of(secret);
    affected.extend(index.get(&ResourceKey::Secret(
        secret.namespace().unwrap_or_default(),
        secret.name_any(),
    )));
    affected.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    affected.dedup();
    affected
}

/// The resources controlling `secret` (the one that published it).
fn owners_of(secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<DynamicRegistration>> {
    let namespace = secret.namespace().unwrap_or_default();
    let kind = DynamicRegistration::kind(&());
    secret
        .owner_references()
        .iter()
        .filter(|owner| owner.controller == Some(true) && owner.kind == kind)
        .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        .collect()
}

/// How long a change of a published Secret may be our own write whose answer is still on its
/// way: the watch often shows a write before its answer arrives.
const OWN_WRITE_GRACE: Duration = Duration::from_secs(2);

/// The resources a Secret event concerns now. A published Secret changed to a version we do
/// not know yet is most often our own write coming back before its answer: its publisher is
/// asked again only if that version is still unknown after [`OWN_WRITE_GRACE`] (someone else
/// wrote it), through `later`, which spares a reconcile (and a status write) per write.
fn concerned_by_secret(
    ctx: &Arc<Context>,
    index: &ResourceIndex,
    secret: PartialObjectMeta<Secret>,
    later: &UnboundedSender<DynamicRegistration>,
) -> Vec<ObjectRef<DynamicRegistration>> {
    if ctx.is_known_secret_version(&secret) {
        return Vec::new();
    }
    let still_there = ctx
        .secret_version(&secret.namespace().unwrap_or_default(), &secret.name_any())
        .is_some();
    let owners = owners_of(&secret);
    if !still_there || owners.is_empty() {
        return affected_by_secret(index, &secret);
    }
    let mut now = affected_by_secret(index, &secret);
    now.retain(|affected| !owners.contains(affected));
    let (ctx, later) = (ctx.clone(), later.clone());
    tokio::spawn(async move {
        tokio::time::sleep(OWN_WRITE_GRACE).await;
        if !ctx.is_known_secret_version(&secret) {
            for owner in owners
                .iter()
                .filter_map(|owner| ctx.registrations.get(owner))
            {
                let _ = later.send((*owner).clone());
            }
        }
    });
    now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::{DynamicRegistrationSpec, RegistrationMode};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

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

    #[test]
    fn the_runner_holds_eight_full_queues() {
        assert_eq!(runner_slots(256), 2048);
        assert_eq!(runner_slots(1), 8);
        assert_eq!(runner_slots(10_000), u16::MAX, "bounded by what kube takes");
    }

    #[test]
    fn caches_keep_what_is_read_only() {
        let mut resource = registration("r", "fleet", "team");
        resource.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{\"spec\": {}}".to_owned()),
                (REQUESTED_AT.to_owned(), "now".to_owned()),
            ]
            .into(),
        );
        resource.metadata.managed_fields = Some(vec![Default::default()]);
        trim_resource(&mut resource);
        assert_eq!(
            resource.annotations().keys().collect::<Vec<_>>(),
            [REQUESTED_AT]
        );
        assert!(resource.managed_fields().is_empty());
    }

    fn secret(name: &str, namespace: &str, owner: Option<&str>) -> PartialObjectMeta<Secret> {
        let mut meta = kube::api::ObjectMeta {
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
        PartialObjectMeta {
            types: None,
            metadata: meta,
            _phantom: Default::default(),
        }
    }

    fn names(refs: Vec<ObjectRef<DynamicRegistration>>) -> Vec<String> {
        refs.into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect()
    }

    #[test]
    fn secret_changes_reach_owners_referrers_and_namesakes() {
        let reader = ResourceIndex::new(resource_keys);
        for resource in [
            registration("a", "fleet", "shared-creds"),
            registration("b", "fleet", "shared-creds"),
            registration("c", "other", "shared-creds"),
            registration("d", "fleet", "own-creds"),
        ] {
            reader.apply(&watcher::Event::Apply(resource));
        }
        // Rotated credentials: every user in that namespace, none elsewhere.
        assert_eq!(
            names(affected_by_secret(
                &reader,
                &secret("shared-creds", "fleet", None)
            )),
            ["fleet/a", "fleet/b"]
        );
        // A published Secret edited or deleted: its owner.
        assert_eq!(
            names(affected_by_secret(
                &reader,
                &secret("d-product-secret", "fleet", Some("d"))
            )),
            ["fleet/d"]
        );
        // A foreign Secret under a published name removed: the resource that wants the name.
        assert_eq!(
            names(affected_by_secret(
                &reader,
                &secret("a-product-secret", "fleet", None)
            )),
            ["fleet/a"]
        );
        assert!(affected_by_secret(&reader, &secret("unrelated", "fleet", None)).is_empty());
    }

    #[test]
    fn status_writes_do_not_trigger_but_spec_lifecycle_and_requests_do() {
        let triggers = triggers();
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
