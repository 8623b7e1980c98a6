//! Deletion: our finalizer is on exactly while deleting has something to do first (switch
//! registration off with `deletionPolicy: Disable`, or keep the Secret with
//! `secretRetention: Retain`); once marked for deletion, gather → decide ([`deletion`]) → act,
//! and the finalizer comes off.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::info;

use super::gather::{access, conflict};
use super::{Context, Error, Result, act, publish, record};
use crate::cloud::RegistrationRequest;
use crate::controller::cache::updates::UnrecordedUpdate;
use crate::controller::decision::{self, DeletionStep, Progress, deletion, finalizers};
use crate::controller::resources::{DynamicRegistration, FINALIZER, SecretRetention};

/// Puts our finalizer on or takes it off as the spec needs it.
pub(super) async fn keep_finalizer_in_line(
    resource: &DynamicRegistration,
    ctx: &Context,
) -> Result<()> {
    let wanted = deletion::needs_finalizer(&resource.spec);
    if wanted != finalizers::carries(&resource.metadata, FINALIZER) {
        set_finalizer(resource, ctx, wanted).await?;
    }
    Ok(())
}

/// `None` once the finalizer is gone, or how to retry.
pub(super) async fn finalize(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Progress>> {
    if !finalizers::carries(&resource.metadata, FINALIZER) {
        return Ok(None);
    }
    // Before any cloud call: the Secret must outlive whatever else the deletion waits for.
    if resource.spec.secret_retention == SecretRetention::Retain {
        publish::retain(resource, ctx).await?;
    }
    let cloud = resource
        .status
        .as_ref()
        .and_then(|status| status.cloud.as_ref());
    let step = match deletion::disabling(&resource.spec, cloud) {
        Some(wanted) => disable_in_cloud(resource, ctx, namespace, wanted).await?,
        None => DeletionStep::Release { note: None },
    };
    match step {
        DeletionStep::Blocked(verdict) => {
            let now = Time(Timestamp::now());
            let generation = resource.metadata.generation.unwrap_or(0);
            let mut status =
                decision::while_deleting(resource.status.as_ref(), generation, &verdict, &now);
            if let Some(request) = resource.pending_reconcile_request() {
                status.last_handled_reconcile_at = Some(request.to_owned());
            }
            record::record(resource, ctx, status, &verdict).await?;
            Ok(Some(verdict.progress))
        }
        DeletionStep::Release { note } => {
            if let Some(note) = note {
                let (warning, reason) = (note.warning, note.reason);
                ctx.events
                    .publish(resource, warning, reason, "Delete", note.message)
                    .await;
            }
            set_finalizer(resource, ctx, false).await?;
            info!("finalizer removed");
            Ok(None)
        }
    }
}

/// Switches registration off in the cloud; the next step of the deletion.
async fn disable_in_cloud(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
    wanted: RegistrationRequest,
) -> Result<DeletionStep> {
    // The product is another resource's: deleting this one leaves it alone.
    if let Some(problem) = conflict(resource, ctx, namespace) {
        return Ok(deletion::without_access(&problem));
    }
    let usable = match access(resource, ctx).await? {
        Ok(usable) => usable,
        Err(problem) => return Ok(deletion::without_access(&problem)),
    };
    // Disabled by an earlier try whose finalizer removal failed (a 409 while the namespace
    // goes): not asked again.
    let updates = &ctx.caches.updates;
    if let Some(done) = updates.of(resource).filter(|done| done.asked == wanted) {
        return Ok(deletion::after_disabled(&done.request_id));
    }
    Ok(
        match act::update(resource, ctx, &usable.credentials, wanted).await {
            Ok((_, request_id)) => {
                let done = UnrecordedUpdate {
                    generation: resource.metadata.generation.unwrap_or(0),
                    asked: wanted,
                    request_id: request_id.clone(),
                    event_owed: None,
                };
                updates.remember(resource, done, &ctx.caches.resources);
                deletion::after_disabled(&request_id)
            }
            Err(error) => deletion::after_failed_disable(error.class(), &error.to_string()),
        },
    )
}

/// Adds or removes our finalizer on the resource, leaving others' in place.
async fn set_finalizer(resource: &DynamicRegistration, ctx: &Context, present: bool) -> Result<()> {
    let patch = finalizers::patch(&resource.metadata, FINALIZER, present);
    let namespace = resource.namespace().unwrap_or_default();
    Api::<DynamicRegistration>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &resource.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(Error::SetFinalizer)?;
    Ok(())
}
