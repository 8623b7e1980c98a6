//! The reconcile's calls to the Kubernetes API: the published Secret, credentials Secrets,
//! status, finalizers and Events. (Leader election makes its own, in `ops::leader`.)

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::controller::crd::{DynamicRegistration, DynamicRegistrationStatus, FINALIZER, MANAGER};
use crate::controller::decision::{SecretContent, SecretState};
use crate::controller::error::Result;

/// Label set on every published Secret.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Reads a Secret; `None` when it does not exist.
pub async fn get_secret(client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
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
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect();
    SecretState::Owned {
        data,
        labelled: secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER),
    }
}

/// Writes the published Secret with server-side apply: owned by the resource (so it is garbage
/// collected with it), labelled, holding exactly `content`.
pub async fn apply_secret(
    client: &Client,
    owner: &DynamicRegistration,
    content: &SecretContent,
) -> Result<()> {
    let namespace = owner.namespace().unwrap_or_default();
    let owner_reference = owner.controller_owner_ref(&()).ok_or(
        crate::controller::error::Error::MissingObjectKey("metadata.uid"),
    )?;
    let data: BTreeMap<String, ByteString> = content
        .data
        .iter()
        .map(|(key, value)| (key.clone(), ByteString(value.clone())))
        .collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(content.name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGER.to_owned(),
            )])),
            owner_references: Some(vec![owner_reference]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(
            &content.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
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

/// Adds or removes our finalizer, leaving others' in place. The patch carries the
/// resourceVersion the change was computed from, so a concurrent edit makes it fail (409) and
/// the reconcile retry, instead of dropping someone else's finalizer.
pub async fn set_finalizer(
    client: &Client,
    resource: &DynamicRegistration,
    present: bool,
) -> Result<()> {
    let mut finalizers: Vec<String> = resource
        .finalizers()
        .iter()
        .filter(|finalizer| finalizer.as_str() != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": resource.resource_version(),
            "finalizers": finalizers,
        }
    });
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
    recorder: &Recorder,
    resource: &DynamicRegistration,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &resource.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}
