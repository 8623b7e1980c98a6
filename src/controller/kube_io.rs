//! The reconcile's calls to the Kubernetes API: the published Secret, credentials Secrets,
//! status, finalizers and Events. (Leader election makes its own, in `ops::leader`.)

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::cloud::Credentials;
use crate::controller::crd::{DynamicRegistration, DynamicRegistrationStatus, FINALIZER, MANAGER};
use crate::controller::credentials;
use crate::controller::decision::secrets::MANAGED_BY_LABEL;
use crate::controller::decision::{DataDigest, Problem, SecretContent, SecretShape, SecretState};
use crate::controller::error::Result;
use crate::controller::events::EventPublisher;
use crate::controller::read_cache::KnownCredentials;
use crate::controller::secret_cache::SecretCache;

/// Reads a Secret; `None` when it does not exist.
pub async fn get_secret(client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
}

/// A credentials Secret's metadata and the credentials its data gives (or why not), read only
/// when the watch cache shows a version not read before; `None` when there is no such Secret.
pub async fn credentials_secret(
    client: &Client,
    cache: &SecretCache,
    known: &KnownCredentials,
    namespace: &str,
    name: &str,
) -> Result<Option<(ObjectMeta, std::result::Result<Credentials, Problem>)>> {
    let known_now = || {
        let cached = cache.metadata(namespace, name)?;
        let read = known.at(namespace, name, cached.resource_version.as_deref()?)?;
        Some((cached, read))
    };
    if let Some(found) = known_now() {
        return Ok(Some(found));
    }
    // Hundreds of reconciles may start together on a Secret not read yet: one reads it, the
    // others find what it read. (A Secret the watch does not show is read by each: nothing
    // read could be known by its version.)
    let in_cache = cache.version(namespace, name).is_some();
    let _reading = match in_cache {
        true => Some(known.reading(namespace, name).await),
        false => None,
    };
    if let Some(found) = known_now() {
        return Ok(Some(found));
    }
    let Some(secret) = get_secret(client, namespace, name).await? else {
        return Ok(None);
    };
    let read = credentials::from_secret_data(name, secret.data.as_ref());
    if let Some(version) = secret.resource_version() {
        known.remember(namespace, name, &version, read.clone());
    }
    Ok(Some((secret.metadata, read)))
}

/// Classifies the Secret found under the published name.
pub fn secret_state(secret: Option<&Secret>, owner: &DynamicRegistration) -> SecretState {
    let Some(secret) = secret else {
        return SecretState::Absent;
    };
    let owned = owner.metadata.uid.as_deref().is_some_and(|uid| {
        secret
            .owner_references()
            .iter()
            .any(|reference| reference.controller == Some(true) && reference.uid == uid)
    });
    if !owned {
        return SecretState::Foreign;
    }
    SecretState::Owned {
        data: DataDigest::of(
            secret
                .data
                .iter()
                .flatten()
                .map(|(key, value)| (key, &value.0)),
        ),
        labelled: secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER),
        shape: SecretShape {
            type_: secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned()),
            labels: secret.labels().clone(),
            annotations: secret.annotations().clone(),
        },
    }
}

/// The published Secret: owned by the resource (so it is garbage collected with it), labelled,
/// holding exactly `content`.
fn published_secret(owner: &DynamicRegistration, content: &SecretContent) -> Result<Secret> {
    let mut owner_reference = owner.controller_owner_ref(&()).ok_or(
        crate::controller::error::Error::MissingObjectKey("metadata.uid"),
    )?;
    // As controller-runtime's SetControllerReference: a foreground deletion of the resource
    // waits for its Secret. (Needs `update` on dynamicregistrations/finalizers where the
    // OwnerReferencesPermissionEnforcement admission plugin runs.)
    owner_reference.block_owner_deletion = Some(true);
    let data: BTreeMap<String, ByteString> = content
        .data
        .iter()
        .map(|(key, value)| (key.clone(), ByteString(value.clone())))
        .collect();
    let mut labels = content.shape.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
    let annotations = &content.shape.annotations;
    Ok(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(content.name.clone()),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
            owner_references: Some(vec![owner_reference]),
            ..Default::default()
        },
        type_: Some(content.shape.type_.clone()),
        data: Some(data),
        ..Default::default()
    })
}

/// What became of creating the published Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creation {
    /// Created, at this resourceVersion.
    Created(Option<String>),
    /// A Secret of that name appeared since it was found absent: someone else was first.
    AlreadyExists,
}

/// Creates the published Secret where none was found.
pub async fn create_secret(
    client: &Client,
    owner: &DynamicRegistration,
    content: &SecretContent,
) -> Result<Creation> {
    let secret = published_secret(owner, content)?;
    let created = Api::<Secret>::namespaced(client.clone(), &owner.namespace().unwrap_or_default())
        .create(&PostParams::default(), &secret)
        .await;
    match created {
        Ok(created) => Ok(Creation::Created(created.resource_version())),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Creation::AlreadyExists),
        Err(error) => Err(error.into()),
    }
}

/// Rewrites our published Secret with server-side apply, only if it is still the version found
/// and judged ours (`resource_version`: otherwise 409 and the reconcile starts over). It sets our
/// keys, label and ownerReference, forced back if someone edited them; keys, labels and
/// annotations of other managers are never part of the apply and stay. Returns the new
/// resourceVersion.
pub async fn apply_secret(
    client: &Client,
    owner: &DynamicRegistration,
    content: &SecretContent,
    resource_version: &str,
) -> Result<Option<String>> {
    let mut secret = published_secret(owner, content)?;
    secret.metadata.resource_version = Some(resource_version.to_owned());
    let api = Api::<Secret>::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let applied = api
        .patch(
            &content.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    if content.remove.is_empty() && content.remove_labels.is_empty() {
        return Ok(applied.resource_version());
    }
    // Keys and labels set when the Secret was created belong to the creating request as well as
    // to our apply, so leaving them out of the apply does not remove them: a merge patch does,
    // on the version just written.
    let nulls = |names: &[String]| -> serde_json::Map<String, serde_json::Value> {
        names
            .iter()
            .map(|name| (name.clone(), serde_json::Value::Null))
            .collect()
    };
    let patched = api
        .patch(
            &content.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {
                    "resourceVersion": applied.resource_version(),
                    "labels": nulls(&content.remove_labels),
                },
                "data": nulls(&content.remove),
            })),
        )
        .await?;
    Ok(patched.resource_version())
}

/// Removes the resource's ownerReference from its published Secret (only one it owns), on the
/// version read; whether there was one to remove.
pub async fn release_secret(
    client: &Client,
    owner: &DynamicRegistration,
    name: &str,
) -> Result<bool> {
    let api = Api::<Secret>::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let Some(uid) = owner.metadata.uid.as_deref() else {
        return Ok(false);
    };
    let references = secret.owner_references();
    if !references.iter().any(|reference| reference.uid == uid) {
        return Ok(false);
    }
    let remaining: Vec<_> = references
        .iter()
        .filter(|reference| reference.uid != uid)
        .cloned()
        .collect();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": {
                "resourceVersion": secret.resource_version(),
                "ownerReferences": remaining,
            }
        })),
    )
    .await?;
    Ok(true)
}

/// Deletes our published Secret so that it can be created with another type (Kubernetes never
/// changes a Secret's type), only if it is still the version found ours.
pub async fn delete_for_new_type(
    client: &Client,
    owner: &DynamicRegistration,
    name: &str,
    resource_version: &str,
) -> Result<()> {
    let unchanged = Preconditions {
        resource_version: Some(resource_version.to_owned()),
        uid: None,
    };
    let namespace = owner.namespace().unwrap_or_default();
    Ok(delete_unchanged(client, &namespace, name, unchanged).await?)
}

/// Deletes a Secret only if it is still as `unchanged` describes it (`409` otherwise); one gone
/// already is no error.
async fn delete_unchanged(
    client: &Client,
    namespace: &str,
    name: &str,
    unchanged: Preconditions,
) -> std::result::Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(unchanged),
        ..DeleteParams::default()
    };
    match Api::<Secret>::namespaced(client.clone(), namespace)
        .delete(name, &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes a Secret we published under a former name, only if it is still that very object
/// (its resourceVersion as seen: a Secret created again under the name has another); gone
/// already or changed since is no error.
pub async fn delete_left_behind(client: &Client, secret: &kube::api::ObjectMeta) -> Result<()> {
    let (Some(namespace), Some(name)) = (&secret.namespace, &secret.name) else {
        return Ok(());
    };
    let unchanged = Preconditions {
        uid: None,
        resource_version: secret.resource_version.clone(),
    };
    match delete_unchanged(client, namespace, name, unchanged).await {
        // Changed since: no longer the Secret we judged left behind.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => Ok(other?),
    }
}

/// Adds or removes `finalizer` on a Secret, leaving others' in place; guarded by the
/// resourceVersion the change was computed from.
pub async fn set_secret_finalizer(
    client: &Client,
    secret: &kube::api::ObjectMeta,
    finalizer: &str,
    present: bool,
) -> Result<()> {
    let (Some(namespace), Some(name)) = (&secret.namespace, &secret.name) else {
        return Ok(());
    };
    let patch = finalizer_patch(secret, finalizer, present);
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// A merge patch setting `finalizer` present or absent among the object's finalizers, with the
/// resourceVersion it was computed from, so a concurrent edit makes it fail (409) instead of
/// dropping someone else's finalizer.
fn finalizer_patch(
    object: &kube::api::ObjectMeta,
    finalizer: &str,
    present: bool,
) -> serde_json::Value {
    let mut finalizers: Vec<String> = object
        .finalizers
        .iter()
        .flatten()
        .filter(|name| name.as_str() != finalizer)
        .cloned()
        .collect();
    if present {
        finalizers.push(finalizer.to_owned());
    }
    json!({
        "metadata": {
            "resourceVersion": object.resource_version,
            "finalizers": finalizers,
        }
    })
}

/// Writes the status subresource with server-side apply.
pub async fn apply_status(
    client: &Client,
    resource: &DynamicRegistration,
    status: &DynamicRegistrationStatus,
) -> Result<()> {
    let namespace = resource.namespace().unwrap_or_default();
    let body = json!({
        "apiVersion": DynamicRegistration::api_version(&()),
        "kind": DynamicRegistration::kind(&()),
        "status": status,
    });
    Api::<DynamicRegistration>::namespaced(client.clone(), &namespace)
        .patch_status(
            &resource.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

/// Adds or removes our finalizer on the resource, leaving others' in place (guarded by its
/// resourceVersion, as [`set_secret_finalizer`]).
pub async fn set_finalizer(
    client: &Client,
    resource: &DynamicRegistration,
    present: bool,
) -> Result<()> {
    let patch = finalizer_patch(&resource.metadata, FINALIZER, present);
    Api::<DynamicRegistration>::namespaced(
        client.clone(),
        &resource.namespace().unwrap_or_default(),
    )
    .patch(
        &resource.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// Publishes an Event about the resource. A failure to publish is logged, never fatal: events
/// are a courtesy, the status is the record.
pub async fn publish_event(
    events: &EventPublisher,
    resource: &DynamicRegistration,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    events
        .publish(resource, warning, reason, action, note)
        .await;
}
