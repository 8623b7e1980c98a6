//! What we know of Secrets at a resourceVersion: a Secret's resourceVersion changes with every
//! write, so a Secret whose version in the watch cache is the one we last wrote or read holds
//! what we saw then (no read needed), and one we checked against the cloud stays checked. Only
//! Secrets we use are held here (the ones we publish and the credentials resources name), never
//! the other Secrets of the cluster; entries unused for an hour go. A published Secret is known
//! together with the resource that published it: what one resource wrote is never taken by
//! another that names the same Secret as its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::secrets::secret_key as key;
use crate::controller::decision::{DataDigest, SecretShape, SecretState};
use crate::controller::resources::DynamicRegistration;

/// Entries unused for this long are dropped as the map grows.
const UNUSED: Duration = Duration::from_secs(3600);

/// The resourceVersion seen, what it held, and when it was last used.
type Entry<T> = (Box<str>, T, Instant);

/// What Secrets held at the version last seen, by `namespace/name` (one entry per Secret: keys
/// and versions take as little as they can).
pub struct Versioned<T> {
    entries: Mutex<HashMap<Box<str>, Entry<T>>>,
}

impl<T> Default for Versioned<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Versioned<T> {
    /// What `namespace/name` held at `version`, if that is the version remembered.
    pub fn get(&self, namespace: &str, name: &str, version: &str) -> Option<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (known, value, used) = entries.get_mut(&*key(namespace, name))?;
        if &**known != version {
            return None;
        }
        *used = Instant::now();
        Some(value.clone())
    }

    /// Remembers what `namespace/name` holds at `version` (forgetting any other version).
    pub fn put(&self, namespace: &str, name: &str, version: &str, value: T) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= 64 && entries.len().is_power_of_two() {
            entries.retain(|_, (_, _, used)| used.elapsed() < UNUSED);
        }
        entries.insert(
            key(namespace, name),
            (version.into(), value, Instant::now()),
        );
    }

    fn contains(&self, namespace: &str, name: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.contains_key(&*key(namespace, name))
    }

    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// How long a published Secret's content, once checked against the cloud, is trusted without a
/// new check while its resourceVersion stays the same. Observations that carry the
/// ProductSecret check it anyway; this bounds how long a secret regenerated in the cloud can go
/// unnoticed when list answers leave it out (one DescribeProduct per resource per hour at most).
pub const SECRET_TRUST: Duration = Duration::from_secs(3600);

/// The resource that published a Secret, by a digest of its uid (8 bytes instead of a
/// 36-character string in each of the tens of thousands of entries; uids are the API server's,
/// so nobody can choose one that collides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Publisher(u64);

impl Publisher {
    /// `resource`, by its uid (which every stored object has).
    pub fn of(resource: &DynamicRegistration) -> Self {
        Self::with_uid(resource.metadata.uid.as_deref().unwrap_or_default())
    }

    /// The resource with this uid.
    pub fn with_uid(uid: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        uid.hash(&mut hasher);
        Self(hasher.finish())
    }
}

/// Published Secrets whose content is known to match the cloud: the resourceVersion we wrote or
/// checked, for which resource, and when. Any other version (someone edited it) is checked
/// again, with a single read when the shared snapshot lacks the ProductSecret.
#[derive(Default)]
pub struct VerifiedSecrets(Versioned<(Publisher, Instant)>);

impl VerifiedSecrets {
    /// Whether the Secret `namespace/name` at `version` was written or checked recently, as
    /// `publisher`'s.
    pub fn trusts(&self, namespace: &str, name: &str, version: &str, publisher: Publisher) -> bool {
        self.0
            .get(namespace, name, version)
            .is_some_and(|(by, checked)| by == publisher && checked.elapsed() < SECRET_TRUST)
    }

    /// Records that `namespace/name` at `version`, published by `publisher`, matches the cloud.
    pub fn record(&self, namespace: &str, name: &str, version: &str, publisher: Publisher) {
        self.0
            .put(namespace, name, version, (publisher, Instant::now()));
    }
}

/// Published Secrets as we last wrote or read them (their values as digests only), with the
/// resource that published each.
#[derive(Default)]
pub struct KnownSecrets(Versioned<(Publisher, Remembered)>);

impl KnownSecrets {
    /// What `namespace/name` holds at `version`, if that is the version we last saw and
    /// `publisher` published it.
    pub fn at(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        publisher: Publisher,
    ) -> Option<SecretState> {
        self.0
            .get(namespace, name, version)
            .filter(|(by, _)| *by == publisher)
            .map(|(_, remembered)| remembered.state())
    }

    /// Remembers what `namespace/name`, published by `publisher`, holds at `version`.
    pub fn remember(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        (publisher, state): (Publisher, &SecretState),
    ) {
        let remembered = (publisher, Remembered::of(state));
        self.0.put(namespace, name, version, remembered);
    }

    /// Whether `version` of `namespace/name` is the one we last wrote or read (for anyone).
    pub fn knows_version(&self, namespace: &str, name: &str, version: &str) -> bool {
        self.0.get(namespace, name, version).is_some()
    }

    /// Whether we wrote or read `namespace/name` (at any version).
    pub fn seen(&self, namespace: &str, name: &str) -> bool {
        self.0.contains(namespace, name)
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`SecretState`] in fewer bytes: one is held per published Secret, and a map of one label
/// costs a node of eleven.
#[derive(Clone)]
enum Remembered {
    Absent,
    Foreign,
    Owned {
        data: DataDigest,
        labelled: bool,
        type_: Box<str>,
        labels: Pairs,
        annotations: Pairs,
        garbage_collected: bool,
    },
}

type Pairs = Box<[(Box<str>, Box<str>)]>;

impl Remembered {
    fn of(state: &SecretState) -> Self {
        let pairs = |map: &BTreeMap<String, String>| -> Pairs {
            map.iter()
                .map(|(key, value)| (Box::from(key.as_str()), Box::from(value.as_str())))
                .collect()
        };
        match state {
            SecretState::Absent => Self::Absent,
            SecretState::Foreign => Self::Foreign,
            SecretState::Owned {
                data,
                labelled,
                shape,
            } => Self::Owned {
                data: data.clone(),
                labelled: *labelled,
                type_: Box::from(shape.type_.as_str()),
                labels: pairs(&shape.labels),
                annotations: pairs(&shape.annotations),
                garbage_collected: shape.garbage_collected,
            },
        }
    }

    fn state(&self) -> SecretState {
        let map = |pairs: &Pairs| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        };
        match self {
            Self::Absent => SecretState::Absent,
            Self::Foreign => SecretState::Foreign,
            Self::Owned {
                data,
                labelled,
                type_,
                labels,
                annotations,
                garbage_collected,
            } => SecretState::Owned {
                data: data.clone(),
                labelled: *labelled,
                shape: SecretShape {
                    type_: type_.to_string(),
                    labels: map(labels),
                    annotations: map(annotations),
                    garbage_collected: *garbage_collected,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "uid-ours";

    fn ours() -> Publisher {
        Publisher::with_uid(OURS)
    }

    #[test]
    fn only_the_version_seen_is_known() {
        let known = KnownSecrets::default();
        known.remember("ns", "s", "7", (ours(), &SecretState::Absent));
        assert_eq!(known.at("ns", "s", "7", ours()), Some(SecretState::Absent));
        assert_eq!(known.at("ns", "s", "8", ours()), None, "written since");
        assert_eq!(known.at("other", "s", "7", ours()), None);

        let owned = SecretState::Owned {
            data: DataDigest::of([("productSecret", "s3cret")]),
            labelled: true,
            shape: SecretShape {
                type_: "Opaque".to_owned(),
                labels: BTreeMap::from([("team".to_owned(), "fleet".to_owned())]),
                annotations: BTreeMap::from([("note".to_owned(), "x".to_owned())]),
                garbage_collected: false,
            },
        };
        known.remember("ns", "s", "9", (ours(), &owned));
        assert_eq!(
            known.at("ns", "s", "9", ours()),
            Some(owned),
            "held as it was"
        );
    }

    #[test]
    fn what_one_resource_published_is_never_known_to_another() {
        let known = KnownSecrets::default();
        let theirs = Publisher::with_uid("uid-theirs");
        known.remember("ns", "shared", "3", (theirs, &SecretState::Absent));
        assert_eq!(known.at("ns", "shared", "3", ours()), None);
        assert!(
            known.knows_version("ns", "shared", "3"),
            "a version we wrote"
        );
        let verified = VerifiedSecrets::default();
        verified.record("ns", "shared", "3", theirs);
        assert!(verified.trusts("ns", "shared", "3", theirs));
        assert!(!verified.trusts("ns", "shared", "3", ours()));
    }

    #[tokio::test(start_paused = true)]
    async fn unused_entries_go_as_the_map_grows() {
        let known = KnownSecrets::default();
        let absent = (ours(), &SecretState::Absent);
        for index in 0..63 {
            known.remember("ns", &format!("s{index}"), "1", absent);
        }
        tokio::time::advance(UNUSED + Duration::from_secs(1)).await;
        known.at("ns", "s0", "1", ours());
        known.remember("ns", "s63", "1", absent);
        known.remember("ns", "s64", "1", absent);
        assert_eq!(known.len(), 3, "s0 (used), s63 and s64");
    }
}
