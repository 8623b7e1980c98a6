//! Record: the status, written only when it changed (server-side apply of the status
//! subresource), a Warning Event when the verdict turned to a failure, and a claim that started
//! or stopped counting announced to the product's other claimants.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::debug;

use super::{Context, Error, Result};
use crate::controller::decision::{Verdict, claims};
use crate::controller::resources::{DynamicRegistration, DynamicRegistrationStatus, MANAGER};

/// Writes `status` when it differs from the resource's, and an Event when `verdict` is a new
/// failure.
pub(super) async fn record(
    resource: &DynamicRegistration,
    ctx: &Context,
    status: DynamicRegistrationStatus,
    verdict: &Verdict,
) -> Result<()> {
    if resource.status.as_ref() != Some(&status) {
        apply_status(resource, ctx, &status).await?;
    }
    let reaches = claims::reaches_product;
    if reaches(Some(&status)) != reaches(resource.status.as_ref()) {
        // Fails only once the controller stops: nobody is left to reconcile then.
        let _ = ctx.claim_changes.send(resource.clone());
    }
    debug!(
        reason = verdict.reason.as_str(),
        ready = verdict.ready,
        "reconciled"
    );
    let previous_reason = resource
        .condition("Ready")
        .map(|condition| condition.reason.as_str());
    if previous_reason != Some(verdict.reason.as_str()) && !verdict.ready {
        let reason = verdict.reason.as_str();
        let note = verdict.message.clone();
        ctx.events
            .publish(resource, true, reason, "Reconcile", note)
            .await;
    }
    Ok(())
}

/// Writes the status subresource with server-side apply.
pub(super) async fn apply_status(
    resource: &DynamicRegistration,
    ctx: &Context,
    status: &DynamicRegistrationStatus,
) -> Result<()> {
    let body = json!({
        "apiVersion": DynamicRegistration::api_version(&()),
        "kind": DynamicRegistration::kind(&()),
        "status": status,
    });
    let namespace = resource.namespace().unwrap_or_default();
    Api::<DynamicRegistration>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &resource.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(Error::WriteStatus)?;
    Ok(())
}
