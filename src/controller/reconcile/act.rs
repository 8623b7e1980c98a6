//! Act on the cloud: the update the plan asks for, then the plan again on what the cloud applied
//! (which may differ from what was asked), and one Event for what the reconcile changed.

use super::context::RenderPermit;
use tracing::info;

use super::Context;
use super::gather::Facts;
use crate::cloud::{CloudError, Credentials, Product, RegistrationRequest, RegistrationSettings};
use crate::controller::cache::updates::UnrecordedUpdate;
use crate::controller::decision::{self, Plan, PlanInput};
use crate::controller::resources::{DynamicRegistration, RegistrationMode};

/// What a reconcile decided, after acting on the cloud.
pub(super) struct Decided {
    pub plan: Plan,
    pub request_id: Option<String>,
    /// What the cloud update set, for the Event.
    pub updated: Option<String>,
    /// The permit held while the plan holds rendered Secret data (templated resources only).
    pub rendering: Option<RenderPermit>,
}

impl Decided {
    /// Decided (rendering under `rendering`'s permit); nothing done in the cloud.
    pub fn planned(plan: Plan, rendering: Option<RenderPermit>) -> Self {
        Self {
            plan,
            request_id: None,
            updated: None,
            rendering,
        }
    }
}

/// Makes the update the plan asks for, and decides again on what the cloud applied (or on the
/// failure), holding a permit to render the Secret's template again.
pub(super) async fn update_cloud(
    resource: &DynamicRegistration,
    ctx: &Context,
    facts: &Facts,
    wanted: RegistrationRequest,
    plan: Plan,
) -> Decided {
    let (Ok(access), Ok((before, _))) = (&facts.access, &facts.observed) else {
        // The plan asks for an update only when the cloud was observed through this access.
        return Decided::planned(plan, None);
    };
    match update(resource, ctx, &access.credentials, wanted).await {
        Ok((applied, request_id)) => {
            let after = Product {
                registration: applied,
                ..before.clone()
            };
            let spec = &resource.spec;
            ctx.observer
                .remember(
                    (spec.service.cloud(), &access.credentials),
                    &spec.region,
                    &after,
                )
                .await;
            ctx.metrics.drift_corrected();
            let note = format!(
                "set RegisterType {:?} and RegisterLimit {} (RequestId {request_id})",
                RegistrationMode::from(wanted.register_type),
                wanted.register_limit
            );
            // Kept until a status carries it, whatever fails from here on.
            let unrecorded = UnrecordedUpdate {
                generation: resource.metadata.generation.unwrap_or(0),
                asked: wanted,
                request_id: request_id.clone(),
                event_owed: Some(note.clone()),
            };
            let caches = &ctx.caches;
            caches
                .updates
                .remember(resource, unrecorded, &caches.resources);
            let rendering = ctx.renders.enter(resource).await;
            let replanned = decision::plan(PlanInput {
                cloud: Ok(&after),
                just_asked: Some(wanted),
                ..facts.plan_input(resource, ctx)
            });
            Decided {
                plan: replanned,
                request_id: Some(request_id),
                updated: Some(note),
                rendering,
            }
        }
        Err(error) => Decided {
            request_id: error.request_id().map(str::to_owned),
            plan: decision::after_failed_update(plan, error.class(), &error.to_string()),
            updated: None,
            rendering: None,
        },
    }
}

/// The update of the product's service (IoT Hub's `UpdateProductDynamicRegister`, Explorer's
/// and Video's `ModifyProductDynamicRegister`), ahead of the backlog in the rate limiter when a
/// person waits for it; what the answer says of the credentials is taken in.
pub(super) async fn update(
    resource: &DynamicRegistration,
    ctx: &Context,
    credentials: &Credentials,
    wanted: RegistrationRequest,
) -> Result<(RegistrationSettings, String), CloudError> {
    info!(
        register_type = ?wanted.register_type,
        register_limit = wanted.register_limit,
        "updating the product's dynamic registration"
    );
    let cloud = if resource.awaited_by_person() {
        ctx.cloud.prioritized()
    } else {
        ctx.cloud.clone()
    };
    let spec = &resource.spec;
    let service = spec.service.cloud();
    let result = cloud
        .update_registration(service, credentials, &spec.region, &spec.product_id, wanted)
        .await;
    let refusal = result.as_ref().err().map(|e| (e.class(), e.code()));
    ctx.credentials.judged(credentials, refusal);
    result.map(|decided| (decided.applied, decided.request_id))
}

/// One Event for what a reconcile changed: the cloud's settings and the Secret written are one
/// change to whoever reads the resource's Events (and one request, not two).
pub(super) async fn announce_changes(
    resource: &DynamicRegistration,
    ctx: &Context,
    updated: Option<String>,
    published: Option<String>,
) {
    let (reason, action) = match (&updated, &published) {
        (Some(_), _) => ("Updated", "UpdateProductDynamicRegister"),
        (None, Some(_)) => ("SecretPublished", "WriteSecret"),
        (None, None) => return,
    };
    let note = updated.into_iter().chain(published).collect::<Vec<_>>();
    ctx.events
        .publish(resource, false, reason, action, note.join("; "))
        .await;
}
