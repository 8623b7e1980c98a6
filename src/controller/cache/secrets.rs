//! The Secrets in view, as little of them as the decisions read: never their data, and of their
//! metadata only the version, the resource that published them, and finalizers (which only
//! credentials Secrets carry). kube's reflector store would keep each Secret's whole metadata,
//! about 2 KB with its key and index entry; a large fleet publishes one Secret per resource, and
//! a cluster holds many Secrets that are not ours at all.

use std::collections::HashMap;
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use crate::controller::decision::secrets::publisher;

/// What is kept of one Secret.
#[derive(Debug)]
struct Seen {
    resource_version: Box<str>,
    /// The uid of the resource that published it (see [`publisher`]).
    published_by: Option<Box<str>>,
    /// Empty for almost every Secret.
    finalizers: Box<[Box<str>]>,
    deletion_timestamp: Option<Time>,
}

impl Seen {
    fn of(secret: &PartialObjectMeta<Secret>) -> Self {
        let metadata = &secret.metadata;
        Self {
            resource_version: metadata.resource_version.as_deref().unwrap_or("").into(),
            published_by: publisher(metadata).map(Into::into),
            finalizers: metadata
                .finalizers
                .iter()
                .flatten()
                .map(|f| f.as_str().into())
                .collect(),
            deletion_timestamp: metadata.deletion_timestamp.clone(),
        }
    }
}

/// A Secret's key: `namespace/name` in one allocation (neither may contain a slash).
pub fn secret_key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

#[derive(Default)]
struct State {
    secrets: HashMap<Box<str>, Seen>,
    /// The keys of the Secrets each resource published, by the resource's uid.
    published: HashMap<Box<str>, Vec<Box<str>>>,
    /// The Secrets of a relist under way (between `Init` and `InitDone`), swapped in at its end.
    relist: Option<HashMap<Box<str>, Seen>>,
}

impl State {
    fn insert(&mut self, key: Box<str>, seen: Seen) {
        let published_by = seen.published_by.clone();
        if let Some(replaced) = self.secrets.insert(key.clone(), seen) {
            self.unpublish(&key, &replaced);
        }
        if let Some(owner) = published_by {
            self.published.entry(owner).or_default().push(key);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(removed) = self.secrets.remove(key) {
            self.unpublish(key, &removed);
        }
    }

    fn unpublish(&mut self, key: &str, seen: &Seen) {
        let Some(owner) = &seen.published_by else {
            return;
        };
        if let Some(keys) = self.published.get_mut(owner) {
            keys.retain(|published| &**published != key);
            if keys.is_empty() {
                self.published.remove(owner);
            }
        }
    }
}

/// The Secret metadata cache, fed by the Secret watch ([`SecretCache::apply`]).
#[derive(Default)]
pub struct SecretCache {
    state: RwLock<State>,
}

impl SecretCache {
    /// Follows one watch event (a relist replaces everything at its end, as kube's reflector does).
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let key_of = |secret: &PartialObjectMeta<Secret>| {
            secret_key(&secret.namespace().unwrap_or_default(), &secret.name_any())
        };
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        match event {
            watcher::Event::Apply(secret) => state.insert(key_of(secret), Seen::of(secret)),
            watcher::Event::Delete(secret) => state.remove(&key_of(secret)),
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(secret) => {
                let relist = state.relist.get_or_insert_with(HashMap::new);
                relist.insert(key_of(secret), Seen::of(secret));
            }
            watcher::Event::InitDone => {
                let listed = state.relist.take().unwrap_or_default();
                let mut fresh = State::default();
                for (key, seen) in listed {
                    fresh.insert(key, seen);
                }
                *state = fresh;
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The resourceVersion of Secret `namespace/name`, if it is in view.
    pub fn version(&self, namespace: &str, name: &str) -> Option<String> {
        let state = self.read();
        let seen = state.secrets.get(&*secret_key(namespace, name))?;
        Some(seen.resource_version.to_string())
    }

    /// The metadata of Secret `namespace/name` as far as it is kept (name, namespace,
    /// resourceVersion, finalizers, deletionTimestamp), if it is in view.
    pub fn metadata(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let state = self.read();
        let seen = state.secrets.get(&*secret_key(namespace, name))?;
        Some(metadata(namespace, name, seen))
    }

    /// The Secrets in `namespace` that the resource with `uid` published (under any name).
    pub fn published_by(&self, namespace: &str, uid: &str) -> Vec<ObjectMeta> {
        let state = self.read();
        let keys = state.published.get(uid).map_or(&[][..], Vec::as_slice);
        keys.iter()
            .filter_map(|key| {
                let (in_namespace, name) = split(key);
                let seen = state.secrets.get(key)?;
                (in_namespace == namespace).then(|| metadata(namespace, name, seen))
            })
            .collect()
    }

    /// The Secrets carrying `finalizer`.
    pub fn with_finalizer(&self, finalizer: &str) -> Vec<ObjectMeta> {
        let state = self.read();
        state
            .secrets
            .iter()
            .filter(|(_, seen)| seen.finalizers.iter().any(|f| &**f == finalizer))
            .map(|(key, seen)| {
                let (namespace, name) = split(key);
                metadata(namespace, name, seen)
            })
            .collect()
    }
}

fn metadata(namespace: &str, name: &str, seen: &Seen) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        resource_version: Some(seen.resource_version.to_string()),
        finalizers: (!seen.finalizers.is_empty())
            .then(|| seen.finalizers.iter().map(ToString::to_string).collect()),
        deletion_timestamp: seen.deletion_timestamp.clone(),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::core::PartialObjectMetaExt;

    use super::*;
    use crate::controller::decision::secrets::MANAGED_BY_LABEL;
    use crate::controller::resources::MANAGER;

    fn secret(name: &str, version: &str, published_by: Option<&str>) -> PartialObjectMeta<Secret> {
        let metadata = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("fleet".to_owned()),
            resource_version: Some(version.to_owned()),
            owner_references: published_by.map(|uid| {
                vec![OwnerReference {
                    uid: uid.to_owned(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            labels: published_by
                .map(|_| BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned())])),
            ..ObjectMeta::default()
        };
        metadata.into_request_partial()
    }

    fn names(found: Vec<ObjectMeta>) -> Vec<String> {
        let mut names: Vec<String> = found.into_iter().filter_map(|m| m.name).collect();
        names.sort();
        names
    }

    #[test]
    fn follows_applies_and_deletes() {
        let cache = SecretCache::default();
        cache.apply(&watcher::Event::Apply(secret("a", "1", Some("uid-a"))));
        cache.apply(&watcher::Event::Apply(secret("team", "2", None)));
        assert_eq!(cache.version("fleet", "a").as_deref(), Some("1"));
        assert_eq!(cache.version("other", "a"), None);
        assert_eq!(names(cache.published_by("fleet", "uid-a")), ["a"]);
        assert!(cache.published_by("other", "uid-a").is_empty());
        // A new version; then the resource publishes under a second name.
        cache.apply(&watcher::Event::Apply(secret("a", "3", Some("uid-a"))));
        cache.apply(&watcher::Event::Apply(secret("b", "4", Some("uid-a"))));
        assert_eq!(cache.version("fleet", "a").as_deref(), Some("3"));
        assert_eq!(names(cache.published_by("fleet", "uid-a")), ["a", "b"]);
        // Someone takes `a` over: no longer ours.
        cache.apply(&watcher::Event::Apply(secret("a", "5", None)));
        assert_eq!(names(cache.published_by("fleet", "uid-a")), ["b"]);
        cache.apply(&watcher::Event::Delete(secret("b", "4", Some("uid-a"))));
        assert!(cache.published_by("fleet", "uid-a").is_empty());
        assert!(cache.read().published.is_empty(), "no empty entries left");
        assert_eq!(cache.version("fleet", "b"), None);
    }

    #[test]
    fn keeps_finalizers_and_deletion_for_the_credentials() {
        let cache = SecretCache::default();
        let mut team = secret("team", "7", None);
        team.metadata.finalizers = Some(vec!["example.com/other".to_owned(), "ours".to_owned()]);
        team.metadata.deletion_timestamp = Some(Time(Default::default()));
        cache.apply(&watcher::Event::Apply(team));
        cache.apply(&watcher::Event::Apply(secret("plain", "8", None)));
        let kept = cache.metadata("fleet", "team").unwrap();
        assert_eq!(kept.resource_version.as_deref(), Some("7"));
        assert_eq!(
            kept.finalizers.as_deref(),
            Some(&["example.com/other".to_owned(), "ours".to_owned()][..])
        );
        assert!(kept.deletion_timestamp.is_some());
        assert_eq!(names(cache.with_finalizer("ours")), ["team"]);
        assert_eq!(cache.metadata("fleet", "plain").unwrap().finalizers, None);
    }

    #[test]
    fn a_relist_replaces_everything_at_its_end() {
        let cache = SecretCache::default();
        cache.apply(&watcher::Event::Apply(secret("gone", "1", Some("uid"))));
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(secret("kept", "2", Some("uid"))));
        // Until the relist is complete, lookups answer from the previous list.
        assert_eq!(names(cache.published_by("fleet", "uid")), ["gone"]);
        cache.apply(&watcher::Event::InitDone);
        assert_eq!(names(cache.published_by("fleet", "uid")), ["kept"]);
        assert_eq!(cache.version("fleet", "gone"), None);
    }
}
