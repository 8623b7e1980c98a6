//! Act on the published Secret: create it where none was found (losing that race to someone
//! else is a SecretConflict, never a takeover), rewrite ours only in the version found ours,
//! re-create it for a new type, delete what we published under a former name, and on deletion
//! with `secretRetention: Retain` let it go. Every write is guarded by the resourceVersion it
//! was decided on.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Map, Value, json};
use tracing::info;

use super::gather::Facts;
use super::{Context, Error, Result};
use crate::controller::cache::versions::Publisher;
use crate::controller::decision::secrets::PUBLISHED_BY_LABEL;
use crate::controller::decision::{self, DataDigest, Plan, SecretContent, SecretState, published};
use crate::controller::resources::{DynamicRegistration, MANAGER};

/// What became of writing the published Secret.
enum Written {
    /// Written, at this resourceVersion.
    At(Option<String>),
    /// A Secret of that name appeared since it was found absent: someone else was first.
    Taken,
}

/// Writes the published Secret as the plan wants it. Returns the plan after the write and,
/// when written, what for the Event.
pub(super) async fn publish(
    resource: &DynamicRegistration,
    ctx: &Context,
    facts: &Facts,
    content: &SecretContent,
    plan: Plan,
) -> Result<(Plan, Option<String>)> {
    let secret =
        published::object(resource, content).ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let written = write(resource, ctx, facts, (content, secret))
        .await
        .map_err(|source| Error::WriteSecret {
            secret: content.name.clone(),
            source,
        })?;
    let version = match written {
        Written::At(version) => version,
        Written::Taken => return Ok((decision::after_secret_taken(plan, &content.name), None)),
    };
    if let Some(version) = version {
        remember_written(resource, ctx, content, &version);
    }
    ctx.metrics.secret_written();
    info!(secret = %content.name, "published the ProductSecret");
    let keys: Vec<&str> = content.data.keys().map(String::as_str).collect();
    let note = format!("wrote Secret {} (keys {})", content.name, keys.join(", "));
    Ok((plan, Some(note)))
}

/// Creates, rewrites or re-creates the Secret as `secret`, which holds `content`.
async fn write(
    resource: &DynamicRegistration,
    ctx: &Context,
    facts: &Facts,
    (content, mut secret): (&SecretContent, Secret),
) -> Result<Written, kube::Error> {
    match (&facts.secret, &facts.secret_version) {
        (SecretState::Owned { .. }, Some(version)) if content.recreate => {
            recreate(resource, ctx, (content, &secret), version).await
        }
        (SecretState::Owned { .. }, Some(version)) => {
            secret.metadata.resource_version = Some(version.clone());
            let written = apply(resource, ctx, (content, &secret)).await?;
            Ok(Written::At(written))
        }
        _ => create(resource, ctx, &secret).await,
    }
}

/// Remembers what we wrote, as the decision compares it (our keys, label and shape), and that
/// it matches the cloud: neither is read again while the watch shows this version.
fn remember_written(
    resource: &DynamicRegistration,
    ctx: &Context,
    content: &SecretContent,
    version: &str,
) {
    let namespace = resource.namespace().unwrap_or_default();
    let (caches, publisher) = (&ctx.caches, Publisher::of(resource));
    caches
        .verified_secrets
        .record(&namespace, &content.name, version, publisher);
    let state = SecretState::Owned {
        data: DataDigest::of(&content.data),
        labelled: true,
        shape: content.shape.clone(),
    };
    caches
        .known_secrets
        .remember(&namespace, &content.name, version, (publisher, &state));
}

fn secrets(ctx: &Context, resource: &DynamicRegistration) -> Api<Secret> {
    Api::namespaced(
        ctx.client.clone(),
        &resource.namespace().unwrap_or_default(),
    )
}

/// Creates the published Secret where none was found.
async fn create(
    resource: &DynamicRegistration,
    ctx: &Context,
    secret: &Secret,
) -> Result<Written, kube::Error> {
    match secrets(ctx, resource)
        .create(&PostParams::default(), secret)
        .await
    {
        Ok(created) => Ok(Written::At(created.resource_version())),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Taken),
        Err(error) => Err(error),
    }
}

/// Rewrites our published Secret with server-side apply, only if it is still the version found
/// and judged ours (the resourceVersion `secret` carries: otherwise 409 and the reconcile starts
/// over). It sets our keys, label and ownerReference, forced back if someone edited them; keys,
/// labels and annotations of other managers are never part of the apply and stay. Returns the
/// new resourceVersion.
async fn apply(
    resource: &DynamicRegistration,
    ctx: &Context,
    (content, secret): (&SecretContent, &Secret),
) -> Result<Option<String>, kube::Error> {
    let api = secrets(ctx, resource);
    let params = PatchParams::apply(MANAGER).force();
    let applied = api
        .patch(&content.name, &params, &Patch::Apply(secret))
        .await?;
    // A Secret now kept after the resource goes must no longer depend on it.
    let uid = resource.metadata.uid.as_deref();
    let dependent = uid.is_some_and(|uid| {
        let references = applied.owner_references();
        references.iter().any(|reference| reference.uid == uid)
    });
    let release = dependent && !content.shape.garbage_collected;
    if content.remove.is_empty() && content.remove_labels.is_empty() && !release {
        return Ok(applied.resource_version());
    }
    // Keys, labels and the ownerReference set when the Secret was created belong to the
    // creating request as well as to our apply, so leaving them out of the apply does not
    // remove them: a merge patch does, on the version just written.
    let nulls = |names: &[String]| -> Map<String, Value> {
        names
            .iter()
            .map(|name| (name.clone(), Value::Null))
            .collect()
    };
    let mut metadata = json!({
        "resourceVersion": applied.resource_version(),
        "labels": nulls(&content.remove_labels),
    });
    if release {
        metadata["ownerReferences"] = json!(others_references(&applied, uid));
    }
    let removal = json!({
        "metadata": metadata,
        "data": nulls(&content.remove),
    });
    let patched = api
        .patch(
            &content.name,
            &PatchParams::default(),
            &Patch::Merge(removal),
        )
        .await?;
    Ok(patched.resource_version())
}

/// Deletes our published Secret (only in the version found ours) and creates it with the new
/// type: Kubernetes never changes a Secret's type.
async fn recreate(
    resource: &DynamicRegistration,
    ctx: &Context,
    (content, secret): (&SecretContent, &Secret),
    version: &str,
) -> Result<Written, kube::Error> {
    let namespace = resource.namespace().unwrap_or_default();
    delete_unchanged(ctx, (&namespace, &content.name), version).await?;
    let note = format!(
        "deleted Secret {} to create it with type {} (a Secret's type cannot change)",
        content.name, content.shape.type_
    );
    ctx.events
        .publish(resource, false, "SecretRecreated", "WriteSecret", note)
        .await;
    create(resource, ctx, secret).await
}

/// Deletes the Secrets this resource published under a former `secretName` (ours and labelled
/// only), once the ProductSecret is published under the current one.
pub(super) async fn delete_left_behind(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
    current_name: &str,
) -> Result<()> {
    let Some(uid) = resource.metadata.uid.as_deref() else {
        return Ok(());
    };
    let mut left = ctx.caches.secrets.published_by(namespace, uid);
    left.retain(|secret| secret.name.as_deref() != Some(current_name));
    for secret in left {
        let name = secret.name.clone().unwrap_or_default();
        delete_former(ctx, &secret)
            .await
            .map_err(|source| Error::DeleteLeftBehind {
                secret: name.clone(),
                source,
            })?;
        info!(secret = %name, "deleted the Secret published under the former secretName");
        let note = format!("deleted Secret {name}, published under the former secretName");
        ctx.events
            .publish(resource, false, "SecretDeleted", "DeleteSecret", note)
            .await;
    }
    Ok(())
}

/// Deletes a Secret we published under a former name, only if it is still that very object
/// (its resourceVersion as seen: a Secret created again under the name has another); gone
/// already or changed since is no error.
async fn delete_former(ctx: &Context, secret: &ObjectMeta) -> Result<(), kube::Error> {
    let (Some(namespace), Some(name), Some(version)) =
        (&secret.namespace, &secret.name, &secret.resource_version)
    else {
        return Ok(());
    };
    match delete_unchanged(ctx, (namespace, name), version).await {
        // Changed since: no longer the Secret we judged left behind.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other,
    }
}

/// Deletes a Secret only if it is still at `version` (`409` otherwise); one gone already is no
/// error.
async fn delete_unchanged(
    ctx: &Context,
    (namespace, name): (&str, &str),
    version: &str,
) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(version.to_owned()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .delete(name, &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// The ownerReferences of `secret` but the one to `uid`.
fn others_references(secret: &Secret, uid: Option<&str>) -> Vec<OwnerReference> {
    let references = secret.owner_references();
    let others = references
        .iter()
        .filter(|reference| Some(reference.uid.as_str()) != uid);
    others.cloned().collect()
}

/// `secretRetention: Retain`, once the resource is marked for deletion: our published Secret
/// belongs to nobody from now on. It carries no ownerReference to the resource already, unless
/// it was published before the resource asked to keep it; then it loses it here, before
/// anything else the deletion does.
pub(super) async fn retain(resource: &DynamicRegistration, ctx: &Context) -> Result<()> {
    let name = resource.published_secret_name();
    let released = release(resource, ctx, &name)
        .await
        .map_err(|source| Error::RetainSecret {
            secret: name.clone(),
            source,
        })?;
    if released {
        let note = format!(
            "Secret {name} is kept (secretRetention: Retain): it no longer belongs to this resource"
        );
        ctx.events
            .publish(resource, false, "SecretRetained", "Delete", note)
            .await;
    }
    Ok(())
}

/// Removes the resource's ownerReference and publisher label from the Secret `name` (only one
/// it owns), on the version read; whether there was anything to remove.
async fn release(
    resource: &DynamicRegistration,
    ctx: &Context,
    name: &str,
) -> Result<bool, kube::Error> {
    let api = secrets(ctx, resource);
    let (Some(secret), Some(uid)) = (api.get_opt(name).await?, resource.metadata.uid.as_deref())
    else {
        return Ok(false);
    };
    let referenced = secret
        .owner_references()
        .iter()
        .any(|reference| reference.uid == uid);
    let labelled = secret.labels().get(PUBLISHED_BY_LABEL).map(String::as_str) == Some(uid);
    if !referenced && !labelled {
        return Ok(false);
    }
    let mut metadata = json!({"resourceVersion": secret.resource_version()});
    if referenced {
        metadata["ownerReferences"] = json!(others_references(&secret, Some(uid)));
    }
    if labelled {
        metadata["labels"] = json!({PUBLISHED_BY_LABEL: null});
    }
    let patch = json!({"metadata": metadata});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(true)
}
