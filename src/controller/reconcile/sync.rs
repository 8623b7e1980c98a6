//! One reconcile of a live resource: gather → decide → act → record.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::act::{self, Decided};
use super::gather::{Facts, gather};
use super::{Context, Result, publish, record};
use crate::controller::cache::versions::Publisher;
use crate::controller::decision::{self, PlanInput, Progress, StatusInput};
use crate::controller::resources::DynamicRegistration;

/// Brings the cloud and the published Secret in line with the spec, and records the verdict.
pub(super) async fn sync(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Progress> {
    if resource.spec.suspend {
        return suspended(resource, ctx).await;
    }
    let facts = gather(resource, ctx, namespace).await?;
    let mut decided = decide(resource, ctx, &facts).await;
    if let Some(wanted) = decided.plan.update {
        // The update may wait for the account's quota: others render meanwhile.
        decided.rendering = None;
        decided = act::update_cloud(resource, ctx, &facts, wanted, decided.plan).await;
    }
    let mut published = None;
    if let Some(content) = decided.plan.write_secret.take() {
        (decided.plan, published) =
            publish::publish(resource, ctx, &facts, &content, decided.plan).await?;
    } else if facts.secret_checked_now(&decided.plan) {
        let version = facts.secret_version.as_deref().unwrap_or("");
        let verified = &ctx.caches.verified_secrets;
        verified.record(
            namespace,
            &facts.secret_name,
            version,
            Publisher::of(resource),
        );
    }
    decided.rendering = None;
    if decided.updated.is_some() {
        ctx.caches.updates.event_sent(resource);
    }
    act::announce_changes(resource, ctx, decided.updated.take(), published).await;
    if decided.plan.secret_published {
        publish::delete_left_behind(resource, ctx, namespace, &facts.secret_name).await?;
    }
    if facts.observed.is_ok() {
        let caches = &ctx.caches;
        caches.observations.record(resource, &caches.resources);
    }
    let now = Time(Timestamp::now());
    let status = decision::next_status(StatusInput {
        previous: resource.status.as_ref(),
        generation: resource.metadata.generation.unwrap_or(0),
        secret_name: &facts.secret_name,
        plan: &decided.plan,
        observed_at: facts.observed.as_ref().ok().map(|(_, at)| *at),
        request_id: decided.request_id.as_deref(),
        // Answered whatever the decision (a product not found, refused credentials, a
        // conflict): a tool waiting for it must not wait forever, and the verdict says why.
        handled_request: resource.pending_reconcile_request(),
        now: &now,
    });
    record::record(resource, ctx, status, &decided.plan.verdict).await?;
    ctx.caches.updates.recorded(resource);
    Ok(decided.plan.verdict.progress)
}

/// The plan on what was gathered, holding a permit to render the Secret's template. An update made
/// by an earlier try whose status never landed counts as just asked (it is never asked
/// again), its RequestId and Event carried over.
async fn decide(resource: &DynamicRegistration, ctx: &Context, facts: &Facts) -> Decided {
    let unrecorded = ctx.caches.updates.of(resource);
    let rendering = ctx.renders.enter(resource).await;
    let plan = decision::plan(PlanInput {
        just_asked: unrecorded.as_ref().map(|update| update.asked),
        ..facts.plan_input(resource, ctx)
    });
    let mut decided = Decided::planned(plan, rendering);
    if let Some(update) = unrecorded {
        decided.request_id = Some(update.request_id);
        decided.updated = update.event_owed;
    }
    decided
}

/// `spec.suspend`: no cloud call and no write but the Suspended condition; the last verdict
/// stands.
async fn suspended(resource: &DynamicRegistration, ctx: &Context) -> Result<Progress> {
    let now = Time(Timestamp::now());
    let generation = resource.metadata.generation.unwrap_or(0);
    let mut status = decision::while_suspended(resource.status.as_ref(), generation, &now);
    if let Some(request) = resource.pending_reconcile_request() {
        status.last_handled_reconcile_at = Some(request.to_owned());
    }
    if resource.status.as_ref() != Some(&status) {
        record::apply_status(resource, ctx, &status).await?;
    }
    Ok(Progress::Settled)
}
