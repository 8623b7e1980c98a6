//! The watches of one leadership, each filling its cache as its events pass: the resources
//! (and their index), the Secrets (metadata only: Secret data never sits in this process),
//! ClusterCredentials, and the namespaces' labels. The streams are lazy: they run while the
//! controller polls them, and end with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tracing::info;

use super::resilient_watch::{resilient_watch, resilient_watch_with};
use super::{InstallScope, Settings};
use crate::controller::cache::Caches;
use crate::controller::cache::index::{Index, ResourceIndex, ResourceKey, resource_keys};
use crate::controller::cache::secrets::SecretCache;
use crate::controller::credentials::SecretName;
use crate::controller::resources::{ClusterCredentials, DynamicRegistration};
use crate::ops::http::Health;

/// A watch's events once its cache has taken them in.
pub type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// The caches and the event streams that fill them.
pub struct Watches {
    /// What the watches know.
    pub caches: Arc<Caches>,
    /// DynamicRegistrations in view (the namespace, or the shard's selector).
    pub resources: Events<DynamicRegistration>,
    /// Secrets in view, metadata only.
    pub secrets: Events<PartialObjectMeta<Secret>>,
    /// Every ClusterCredentials.
    pub cluster_credentials: Events<ClusterCredentials>,
    /// The namespaces in view.
    pub namespaces: Events<PartialObjectMeta<Namespace>>,
}

/// The watches of a leadership, with their caches empty until the streams run. The caches count as
/// listed (and the replica ready for traffic) once all the watches the install may have are: a
/// verdict reads every cache (a Secret absent from the cache is taken as absent, a
/// ClusterCredentials absent as missing, a namespace absent as granted nothing). Installed for
/// one namespace, the controller may not read cluster-scoped objects: their watches never start
/// and readiness does not wait for them.
/// `released` hears of the credentials Secrets a resource's deletion no longer needs (the
/// resource went, switched to `Orphan` or to other credentials): the protection sweep looks at
/// them even when they are out of view.
pub fn open(
    client: &Client,
    settings: &Settings,
    health: Arc<Health>,
    released: UnboundedSender<SecretName>,
) -> Watches {
    let (listed, listed_rx) = watch::channel(false);
    let cluster_scoped = settings.install_scope == InstallScope::Cluster;
    let first_lists = Arc::new(FirstLists {
        pending: AtomicUsize::new(if cluster_scoped { 4 } else { 2 }),
        listed,
        health,
    });
    let (resources, resource_writer) = reflector::store();
    let (cluster_credentials, credentials_writer) = reflector::store();
    let (namespaces, namespace_writer) = reflector::store();
    let caches = Arc::new(Caches {
        resources,
        resource_index: Arc::new(ResourceIndex::new(resource_keys)),
        secrets: Arc::new(SecretCache::default()),
        known_secrets: Default::default(),
        verified_secrets: Default::default(),
        observations: Default::default(),
        updates: Default::default(),
        cluster_credentials,
        namespaces,
        listed: listed_rx,
    });
    let in_view = Scope::of(client, settings);
    let (cluster_credentials, namespaces) = match cluster_scoped {
        true => cluster_watches(
            (client, &in_view),
            (credentials_writer, namespace_writer),
            first_lists.clone(),
        ),
        false => (
            futures::stream::pending().boxed(),
            futures::stream::pending().boxed(),
        ),
    };
    Watches {
        resources: cached_watch(
            (in_view.resources, in_view.selector.clone(), trim_resource),
            (resource_writer, caches.resource_index.clone()),
            (first_lists.clone(), released_protections(released)),
        )
        .boxed(),
        secrets: secret_watch((in_view.secrets, in_view.selector), &caches, first_lists).boxed(),
        cluster_credentials,
        namespaces,
        caches,
    }
}

/// The watches of cluster-scoped objects: every ClusterCredentials, and the labels of the
/// namespaces in view.
fn cluster_watches(
    (client, in_view): (&Client, &Scope),
    (credentials, namespaces): (
        Writer<ClusterCredentials>,
        Writer<PartialObjectMeta<Namespace>>,
    ),
    first_lists: Arc<FirstLists>,
) -> (
    Events<ClusterCredentials>,
    Events<PartialObjectMeta<Namespace>>,
) {
    let declared = resilient_watch(Api::<ClusterCredentials>::all(client.clone()))
        .modify(|declared| declared.managed_fields_mut().clear())
        .reflect(credentials)
        .inspect(on_first_list(first_lists.clone()))
        .boxed();
    let labelled = resilient_watch_with(
        in_view.namespaces.clone(),
        in_view.namespace_selector.clone(),
    )
    .modify(|namespace| namespace.managed_fields_mut().clear())
    .reflect(namespaces)
    .inspect(on_first_list(first_lists))
    .boxed();
    (declared, labelled)
}

/// What a leadership watches: one namespace or all, and in a shard only what its selector matches.
struct Scope {
    resources: Api<DynamicRegistration>,
    secrets: Api<PartialObjectMeta<Secret>>,
    /// The shard's label selector, for resources and Secrets alike: the Secrets a shard
    /// publishes carry the resource's labels it names.
    selector: watcher::Config,
    namespaces: Api<PartialObjectMeta<Namespace>>,
    namespace_selector: watcher::Config,
}

impl Scope {
    fn of(client: &Client, settings: &Settings) -> Self {
        let (resources, secrets, namespace_selector) = match &settings.watch_namespace {
            Some(namespace) => (
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client.clone(), namespace),
                watcher::Config::default().fields(&format!("metadata.name={namespace}")),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                watcher::Config::default(),
            ),
        };
        let selector = match &settings.shard {
            Some(shard) => watcher::Config::default().labels(shard.as_str()),
            None => watcher::Config::default(),
        };
        Self {
            resources,
            secrets,
            selector,
            namespaces: Api::all(client.clone()),
            namespace_selector,
        }
    }
}

/// Counts the watches whose first list is still to come; once none is, the caches are listed
/// and the replica ready for traffic. (Readiness comes from the watch streams themselves:
/// kube's `Store::wait_until_ready` wakes only one of several waiters.)
struct FirstLists {
    pending: AtomicUsize,
    listed: watch::Sender<bool>,
    health: Arc<Health>,
}

impl FirstLists {
    fn listed(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            info!("watches established");
            let _ = self.listed.send(true);
            self.health.set_watches_established(true);
        }
    }
}

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

/// The events of a watch that fills the cache `writer` and its `index`, telling `first_lists`
/// when its first list is in and `dropped` which keys objects no longer carry. `trim` drops what
/// nothing reads before it is cached (managedFields and kubectl's last-applied copy can each be
/// larger than the rest of the object).
fn cached_watch<K, Key>(
    (api, config, trim): (Api<K>, watcher::Config, fn(&mut K)),
    (writer, index): (Writer<K>, Arc<Index<K, Key>>),
    (first_lists, dropped): (Arc<FirstLists>, impl Fn(Vec<Key>) + Send + 'static),
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
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
                dropped(index.apply(event));
            }
        })
        .inspect(on_first_list(first_lists))
}

/// Passes on the credentials Secrets that resources' deletions stopped needing.
fn released_protections(released: UnboundedSender<SecretName>) -> impl Fn(Vec<ResourceKey>) {
    move |dropped| {
        for key in dropped {
            if let ResourceKey::Protecting(namespace, name) = key {
                // Fails only once the leadership ends: nobody sweeps then.
                let _ = released.send((namespace, name));
            }
        }
    }
}

/// The Secrets in view, fed into the Secret cache.
fn secret_watch(
    (secrets, config): (Api<PartialObjectMeta<Secret>>, watcher::Config),
    caches: &Caches,
    first_lists: Arc<FirstLists>,
) -> impl Stream<Item = Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>> + Send + 'static
{
    let cache = caches.secrets.clone();
    resilient_watch_with(secrets, config)
        .inspect(move |event| {
            if let Ok(event) = event {
                cache.apply(event);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::{DynamicRegistrationSpec, REQUESTED_AT, RegistrationMode};

    #[test]
    fn caches_keep_what_is_read_only() {
        let spec =
            DynamicRegistrationSpec::new("P1", "ap-guangzhou", RegistrationMode::AutoCreate, 1);
        let mut resource = DynamicRegistration::new("r", spec);
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
}
