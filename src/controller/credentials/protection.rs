//! In-use protection of credentials Secrets, put on and taken off here only. A resource whose
//! deletion will switch registration off (`deletionPolicy: Disable`) needs its credentials
//! Secret until then: our finalizer keeps the Secret while that is so (as
//! `kubernetes.io/pvc-protection` keeps a volume claim). It comes off as soon as no resource in
//! the Secret's namespace needs it (the resource went, switched to `Orphan`, or names other
//! credentials), and after a restart too: the sweep looks at every Secret carrying the
//! finalizer, not only at the ones this process protected.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::Error;
use crate::controller::cache::Caches;
use crate::controller::cache::index::ResourceKey;
use crate::controller::decision::{CREDENTIALS_IN_USE, Problem, finalizers, secrets};
use crate::controller::resources::DynamicRegistration;

/// A sweep also runs this often without being woken, to catch what a missed event would leave.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// At most one sweep in this long: status writes of thousands of resources wake it too.
const SWEEP_SPACING: Duration = Duration::from_secs(1);

/// Puts our in-use finalizer on the credentials Secret `secret` when `resource`'s deletion will
/// need it. A person deleting it meanwhile is told what holds it and how to let go (the
/// problem); the deletion itself still uses it.
pub async fn protect(
    client: &Client,
    resource: &DynamicRegistration,
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
        (false, _) if finalizers::carries(secret, CREDENTIALS_IN_USE) => Ok(None),
        (false, _) => {
            set_finalizer(client, secret, true)
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

/// Takes our finalizer off the Secrets no deletion needs any more, whenever `wake` is notified
/// (a resource or a protected Secret changed) and every [`SWEEP_INTERVAL`]; runs until dropped.
pub async fn release_unused(client: Client, caches: &Caches, wake: &Notify) {
    loop {
        caches.wait_until_listed().await;
        sweep(&client, caches).await;
        tokio::time::sleep(SWEEP_SPACING).await;
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}

async fn sweep(client: &Client, caches: &Caches) {
    for secret in caches.secrets.with_finalizer(CREDENTIALS_IN_USE) {
        let namespace = secret.namespace.clone().unwrap_or_default();
        let name = secret.name.clone().unwrap_or_default();
        let users = caches.resources_with(&ResourceKey::Secret(namespace.clone(), name.clone()));
        if secrets::credentials_in_use(&name, users.iter().map(|resource| &**resource)) {
            continue;
        }
        match set_finalizer(client, &secret, false).await {
            Ok(()) => {
                info!(namespace, secret = %name, "no deletion needs the credentials Secret any more: let go of it")
            }
            Err(error) => {
                warn!(%error, namespace, secret = %name, "could not let go of the credentials Secret; retrying")
            }
        }
    }
}

/// Adds or removes our in-use finalizer, leaving others' in place.
async fn set_finalizer(
    client: &Client,
    secret: &ObjectMeta,
    present: bool,
) -> Result<(), kube::Error> {
    let (Some(namespace), Some(name)) = (&secret.namespace, &secret.name) else {
        return Ok(());
    };
    let patch = finalizers::patch(secret, CREDENTIALS_IN_USE, present);
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}
