//! In-use protection of credentials Secrets, put on and taken off here only. A resource whose
//! deletion will switch registration off (`deletionPolicy: Disable`) needs its credentials
//! Secret until then: our finalizer keeps the Secret while that is so (as
//! `kubernetes.io/pvc-protection` keeps a volume claim). It comes off as soon as no resource
//! needs it (the resource went, switched to `Orphan`, or names other credentials), and after a
//! restart too: the sweep looks at every Secret in view carrying the finalizer, not only at the
//! ones this process protected, and at every Secret a resource stopped needing, in view or not
//! (a shard's view holds only the Secrets its selector matches).
//!
//! Each shard protects with a finalizer of its own (`ShardSelector::protection_finalizer`), so
//! that a shard never takes off another's protection because none of its own resources needs
//! the Secret.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use super::Error;
use crate::controller::cache::Caches;
use crate::controller::cache::index::ResourceKey;
use crate::controller::decision::{Problem, finalizers, secrets};
use crate::controller::resources::DynamicRegistration;

/// A sweep also runs this often without being woken, to catch what a missed event would leave.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// At most one sweep in this long: status writes of thousands of resources wake it too.
const SWEEP_SPACING: Duration = Duration::from_secs(1);

/// How often a shard reads the metadata of every Secret in its scope for its finalizer (besides
/// once at the start of each term): its Secret watch shows only the Secrets its selector
/// matches, and a protected Secret out of that view is otherwise found only when a resource
/// stops needing it while this term watches (see [`Sweep::beyond_view`]).
const CENSUS_INTERVAL: Duration = Duration::from_secs(600);
/// Secrets a page of the census lists.
const CENSUS_PAGE: u32 = 500;

/// A Secret by (namespace, name).
pub type SecretName = (String, String);

/// Puts `finalizer` on the credentials Secret `secret` when `resource`'s deletion will need
/// it. A person deleting it meanwhile is told what holds it and how to let go (the problem);
/// the deletion itself still uses it.
pub async fn protect(
    client: &Client,
    (resource, finalizer): (&DynamicRegistration, &str),
    secret: &ObjectMeta,
) -> Result<Option<Problem>, Error> {
    let name = secret.name.clone().unwrap_or_default();
    if secrets::credentials_needed_by(resource) != Some(name.as_str()) {
        return Ok(None);
    }
    match (
        secret.deletion_timestamp.is_some(),
        resource.metadata.deletion_timestamp.is_some(),
    ) {
        (true, false) => Ok(Some(Problem::CredentialsBeingDeleted { secret: name })),
        (true, true) => Ok(None),
        (false, _) if finalizers::carries(secret, finalizer) => Ok(None),
        (false, _) => {
            set_finalizer(client, secret, (finalizer, true))
                .await
                .map_err(|source| Error::Protect {
                    secret: name.clone(),
                    source,
                })?;
            info!(secret = %name, "protected the credentials Secret while deletion needs it");
            Ok(None)
        }
    }
}

/// What the sweep needs.
pub struct Sweep<'a> {
    /// Writes finalizers, and reads the Secrets out of view.
    pub client: Client,
    /// What is in view, and which resources need which Secret.
    pub caches: &'a Caches,
    /// Our in-use finalizer (this shard's).
    pub finalizer: &'a str,
    /// Every Secret in the controller's scope, when its Secret watch shows only part of them (a
    /// shard). A resource that leaves the shard (its label moved) or goes while no term of the
    /// shard watches (a restart, a lost Lease, a relist) leaves the shard's protection on a
    /// credentials Secret it may not see; without a census that finalizer stays forever, and
    /// the Secret, and its namespace, can never be deleted.
    pub beyond_view: Option<Api<Secret>>,
}

/// Takes `finalizer` off the Secrets no deletion needs any more, whenever `wake` is notified
/// (a resource or a protected Secret changed) and every [`SWEEP_INTERVAL`], and off the Secrets
/// out of view that resources stopped needing (`released`); runs until dropped.
pub async fn release_unused(
    sweep: Sweep<'_>,
    wake: &Notify,
    mut released: UnboundedReceiver<SecretName>,
) {
    let mut candidates = BTreeSet::new();
    // Only a shard, whose watch shows part of its scope, needs a census: at once, then at intervals.
    let mut census_due = sweep.beyond_view.is_some().then(tokio::time::Instant::now);
    loop {
        sweep.caches.wait_until_listed().await;
        while let Ok(name) = released.try_recv() {
            candidates.insert(name);
        }
        if census_due.is_some_and(|due| due <= tokio::time::Instant::now())
            && let Some(found) = sweep.census().await
        {
            candidates.extend(found);
            census_due = Some(tokio::time::Instant::now() + CENSUS_INTERVAL);
        }
        sweep.in_view().await;
        // What could not be let go (another writer in between: 409) is tried at the next sweep.
        candidates = sweep.out_of_view(std::mem::take(&mut candidates)).await;
        tokio::time::sleep(SWEEP_SPACING).await;
        tokio::select! {
            () = wake.notified() => {}
            Some(name) = released.recv() => { candidates.insert(name); }
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}

impl Sweep<'_> {
    /// The Secrets in view that carry our finalizer.
    async fn in_view(&self) {
        for secret in self.caches.secrets.with_finalizer(self.finalizer) {
            // In view: swept again at the next sweep whatever happens now.
            self.release_if_unneeded(&secret).await;
        }
    }

    /// The Secrets in scope carrying our finalizer, listed page by page (metadata only); `None`
    /// when the listing failed (tried again at the next sweep).
    async fn census(&self) -> Option<Vec<SecretName>> {
        let api = self.beyond_view.as_ref()?;
        let mut found = Vec::new();
        let mut page = ListParams::default().limit(CENSUS_PAGE);
        loop {
            let listed = match api.list_metadata(&page).await {
                Ok(listed) => listed,
                Err(error) => {
                    warn!(%error, "could not list Secrets for this shard's protection; retrying");
                    return None;
                }
            };
            let carrying = listed
                .items
                .iter()
                .filter(|secret| finalizers::carries(&secret.metadata, self.finalizer));
            for secret in carrying {
                let metadata = &secret.metadata;
                let namespace = metadata.namespace.clone().unwrap_or_default();
                found.push((namespace, metadata.name.clone().unwrap_or_default()));
            }
            match listed.metadata.continue_ {
                Some(token) if !token.is_empty() => page = page.continue_token(&token),
                _ => return Some(found),
            }
        }
    }

    /// Secrets resources stopped needing, read when out of view (a Secret in view is swept
    /// from the cache).
    /// Returns the candidates to try again.
    async fn out_of_view(&self, candidates: BTreeSet<SecretName>) -> BTreeSet<SecretName> {
        let mut again = BTreeSet::new();
        for (namespace, name) in candidates {
            if self.caches.secrets.version(&namespace, &name).is_some() {
                continue;
            }
            let api = Api::<Secret>::namespaced(self.client.clone(), &namespace);
            let retry = match api.get_metadata_opt(&name).await {
                Ok(Some(found)) if finalizers::carries(&found.metadata, self.finalizer) => {
                    !self.release_if_unneeded(&found.metadata).await
                }
                Ok(_) => false,
                Err(error) => {
                    warn!(%error, namespace, secret = %name, "could not read a credentials Secret no resource needs any more");
                    true
                }
            };
            if retry {
                again.insert((namespace, name));
            }
        }
        again
    }

    /// Whether it is settled: still needed, or let go (`false`: the write failed).
    async fn release_if_unneeded(&self, secret: &ObjectMeta) -> bool {
        let namespace = secret.namespace.clone().unwrap_or_default();
        let name = secret.name.clone().unwrap_or_default();
        let key = ResourceKey::Protecting(namespace.clone(), name.clone());
        if self.caches.resource_index.count(&key) > 0 {
            return true;
        }
        match set_finalizer(&self.client, secret, (self.finalizer, false)).await {
            Ok(()) => {
                info!(namespace, secret = %name, "no deletion needs the credentials Secret any more: let go of it");
                true
            }
            Err(error) => {
                warn!(%error, namespace, secret = %name, "could not let go of the credentials Secret; retrying");
                false
            }
        }
    }
}

/// Adds or removes `finalizer`, leaving others' in place.
async fn set_finalizer(
    client: &Client,
    secret: &ObjectMeta,
    (finalizer, present): (&str, bool),
) -> Result<(), kube::Error> {
    let (Some(namespace), Some(name)) = (&secret.namespace, &secret.name) else {
        return Ok(());
    };
    let patch = finalizers::patch(secret, finalizer, present);
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}
