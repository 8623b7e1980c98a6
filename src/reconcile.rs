//! One reconcile: gather (credentials, Secret, cloud), decide (pure [`plan`]), act, record.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cloud::{
    CloudError, Credentials, ErrorClass, Product, RegisterType, RegistrationRequest,
};
use crate::context::Context;
use crate::crd::{DeletionPolicy, DynamicRegistration, DynamicRegistrationStatus, FINALIZER};
use crate::credentials::{self, Probe};
use crate::error::{Error, Result};
use crate::kube_io;
use crate::observe::Observation;
use crate::plan::{self, Plan, PlanInput, Problem, Progress, Reason, Verdict};

/// Reconciles one DynamicRegistration; the controller calls this for every trigger.
pub async fn reconcile(resource: Arc<DynamicRegistration>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = resource
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let span = info_span!(
        "reconcile",
        namespace = %namespace,
        name = %resource.name_any(),
        product_id = %resource.spec.product_id,
    );
    async move {
        let started = tokio::time::Instant::now();
        let outcome = reconcile_once(&resource, &ctx, &namespace).await;
        let progress = outcome
            .as_ref()
            .ok()
            .map(|p| p.unwrap_or(Progress::Settled));
        ctx.metrics.reconciled(progress, started.elapsed());
        match outcome? {
            None => Ok(Action::await_change()),
            Some(progress) => Ok(ctx.requeue_after(&ObjectRef::from_obj(&*resource), progress)),
        }
    }
    .instrument(span)
    .await
}

/// `None` once a deleted resource has been let go.
async fn reconcile_once(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Progress>> {
    // Conflict detection needs every resource in view, not a half-listed cache.
    ctx.cache_ready().await;
    if resource.metadata.deletion_timestamp.is_some() {
        return finalize(resource, ctx, namespace).await;
    }
    keep_finalizer_in_line(resource, ctx).await?;
    sync(resource, ctx, namespace).await.map(Some)
}

/// Called by the controller when [`reconcile`] returns an error (a Kubernetes API failure).
pub fn error_policy(
    resource: Arc<DynamicRegistration>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    warn!(
        %error,
        namespace = resource.namespace().as_deref().unwrap_or(""),
        name = %resource.name_any(),
        "reconcile failed; retrying with backoff"
    );
    ctx.requeue_after(&ObjectRef::from_obj(&*resource), Progress::Retrying)
}

/// The finalizer is there exactly while `deletionPolicy: Disable` needs it.
async fn keep_finalizer_in_line(resource: &DynamicRegistration, ctx: &Context) -> Result<()> {
    let wanted = resource.spec.deletion_policy == DeletionPolicy::Disable;
    let present = resource.finalizers().iter().any(|f| f == FINALIZER);
    if wanted != present {
        kube_io::set_finalizer(&ctx.client, resource, wanted).await?;
    }
    Ok(())
}

async fn sync(resource: &DynamicRegistration, ctx: &Context, namespace: &str) -> Result<Progress> {
    let secret_name = resource.published_secret_name();
    let secret = kube_io::get_secret(&ctx.client, namespace, &secret_name).await?;
    let secret_state = kube_io::secret_state(secret.as_ref(), resource);
    let access = access(resource, ctx, namespace).await?;
    // A published Secret of ours is kept as it is when an observation lacks the ProductSecret;
    // otherwise the secret is needed and is read from DescribeProduct if the snapshot lacks it.
    let needs_secret = !matches!(secret_state, plan::SecretState::Owned { .. });
    let observation = match &access {
        Ok(access) => observe(resource, ctx, &access.credentials, needs_secret).await,
        Err(problem) => Err(problem.clone()),
    };
    let observed_at = observation.as_ref().ok().map(|o| o.taken_at);
    let observed = observation.map(|o| o.product);
    let generation = resource.metadata.generation.unwrap_or(0);
    let input = PlanInput {
        spec: &resource.spec,
        generation,
        last_status: resource.status.as_ref(),
        cloud: observed.as_ref(),
        secret: &secret_state,
        secret_name: &secret_name,
        just_asked: None,
    };
    let mut plan = plan::plan(input);
    let mut request_id = None;

    if let (Some(wanted), Ok(access), Ok(before)) = (plan.update, &access, &observed) {
        match update(resource, ctx, &access.credentials, wanted).await {
            Ok((after, id)) => {
                request_id = Some(id.clone());
                let after = Product {
                    registration: after,
                    ..before.clone()
                };
                ctx.observer
                    .remember(&access.credentials, &resource.spec.region, &after)
                    .await;
                plan = plan::plan(PlanInput {
                    cloud: Ok(&after),
                    just_asked: Some(wanted),
                    ..input
                });
                let note = format!(
                    "set RegisterType {:?} and RegisterLimit {} (RequestId {id})",
                    crate::crd::RegistrationMode::from(wanted.register_type),
                    wanted.register_limit
                );
                ctx.metrics.drift_corrected();
                kube_io::publish_event(
                    &ctx.recorder,
                    resource,
                    false,
                    "Updated",
                    "UpdateProductDynamicRegister",
                    note,
                )
                .await;
            }
            Err(error) => {
                request_id = error.request_id().map(str::to_owned);
                plan = Plan {
                    update: None,
                    write_secret: None,
                    secret_published: false,
                    verdict: plan::cloud_verdict(error.class(), &error.to_string()),
                    ..plan
                };
            }
        }
    }

    if let Some(content) = &plan.write_secret {
        kube_io::apply_secret(&ctx.client, resource, content).await?;
        info!(secret = %content.name, "published the ProductSecret");
        kube_io::publish_event(
            &ctx.recorder,
            resource,
            false,
            "SecretPublished",
            "WriteSecret",
            format!(
                "wrote Secret {} (keys productId, productSecret)",
                content.name
            ),
        )
        .await;
    }

    let status = next_status(resource, &plan, observed_at, request_id);
    record(resource, ctx, status, &plan.verdict).await?;
    Ok(plan.verdict.progress)
}

/// Credentials this resource may use, or why it may not call the cloud now.
async fn access(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Access, Problem>> {
    if resource.spec.suspend {
        return Ok(Err(Problem::Suspended));
    }
    if let Some(owner) = ctx.older_claimant(resource) {
        return Ok(Err(Problem::Conflict { owner }));
    }
    let credentials = match &resource.spec.credentials_secret_ref {
        Some(reference) => {
            let Some(secret) = kube_io::get_secret(&ctx.client, namespace, &reference.name).await?
            else {
                return Ok(Err(Problem::CredentialsMissing {
                    secret: reference.name.clone(),
                }));
            };
            match credentials::from_secret_data(&reference.name, secret.data.as_ref()) {
                Ok(credentials) => credentials,
                Err(problem) => return Ok(Err(problem)),
            }
        }
        None => match ctx.default_credentials_for(namespace) {
            Some(credentials) => credentials.clone(),
            None => {
                return Ok(Err(Problem::CredentialsNotAllowed {
                    namespace: namespace.to_owned(),
                }));
            }
        },
    };
    match ctx.credential_gate.admit(&credentials).await {
        Ok(probe) => Ok(Ok(Access {
            credentials,
            _probe: probe,
        })),
        Err(problem) => Ok(Err(problem)),
    }
}

/// Credentials cleared for use, with the probe to hold while they are unverified.
struct Access {
    credentials: Credentials,
    _probe: Probe,
}

async fn observe(
    resource: &DynamicRegistration,
    ctx: &Context,
    credentials: &Credentials,
    needs_secret: bool,
) -> Result<Observation, Problem> {
    let result = ctx
        .observer
        .observe(
            credentials,
            &resource.spec.region,
            &resource.spec.product_id,
            ctx.resources_sharing_credentials(resource),
            needs_secret,
        )
        .await;
    note_credentials(
        ctx,
        credentials,
        result.as_ref().err().map(|f| (f.class, f.code.as_str())),
    );
    result.map_err(|failure| Problem::Cloud {
        class: failure.class,
        message: failure.message,
    })
}

async fn update(
    resource: &DynamicRegistration,
    ctx: &Context,
    credentials: &Credentials,
    wanted: RegistrationRequest,
) -> Result<(crate::cloud::RegistrationSettings, String), CloudError> {
    info!(
        register_type = ?wanted.register_type,
        register_limit = wanted.register_limit,
        "updating the product's dynamic registration"
    );
    // A person changed the spec (or deletes the resource) and waits for it: overtake the
    // backlog of new resources and resyncs in the rate limiter.
    let changed_by_person = resource.metadata.deletion_timestamp.is_some()
        || resource.status.as_ref().is_some_and(|status| {
            status.observed_generation.is_some()
                && status.observed_generation < resource.metadata.generation
        });
    let cloud = if changed_by_person {
        ctx.cloud.prioritized()
    } else {
        ctx.cloud.clone()
    };
    let result = cloud
        .update_product_dynamic_register(
            credentials,
            &resource.spec.region,
            &resource.spec.product_id,
            wanted,
        )
        .await;
    note_credentials(
        ctx,
        credentials,
        result.as_ref().err().map(|e| (e.class(), e.code())),
    );
    result.map(|outcome| (outcome.applied, outcome.request_id))
}

/// Rests credentials the cloud refused, and clears them once they work.
fn note_credentials(ctx: &Context, credentials: &Credentials, error: Option<(ErrorClass, &str)>) {
    match error {
        None => ctx.credential_gate.accepted(credentials),
        Some((ErrorClass::Auth, code)) => {
            warn!(secret_id = %credentials.secret_id, code, "the cloud refused the credentials; resting them");
            ctx.credential_gate.refused(credentials, code);
        }
        Some(_) => {}
    }
}

fn next_status(
    resource: &DynamicRegistration,
    plan: &Plan,
    observed_at: Option<k8s_openapi::jiff::Timestamp>,
    request_id: Option<String>,
) -> DynamicRegistrationStatus {
    let observed = observed_at.is_some();
    let previous = resource.status.clone().unwrap_or_default();
    let generation = resource.metadata.generation.unwrap_or(0);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // What was published stays published (the cloud could not be seen, or an update failed),
    // unless the name now belongs to someone else's Secret.
    let secret_name = if plan.secret_published {
        Some(resource.published_secret_name())
    } else if plan.verdict.reason == Reason::SecretConflict {
        None
    } else {
        previous.secret_name.clone()
    };
    DynamicRegistrationStatus {
        observed_generation: Some(generation),
        conditions: plan::conditions(&plan.verdict, generation, &previous.conditions, &now),
        cloud: plan.cloud.clone().or(previous.cloud),
        secret_name,
        last_sync_time: if observed {
            Some(now)
        } else {
            previous.last_sync_time
        },
        observation_time: observed_at.map(Time).or(previous.observation_time),
        last_request_id: request_id.or(previous.last_request_id),
    }
}

/// Writes the status and, when the verdict changed, an Event.
async fn record(
    resource: &DynamicRegistration,
    ctx: &Context,
    status: DynamicRegistrationStatus,
    verdict: &Verdict,
) -> Result<()> {
    let previous_reason = resource
        .condition("Ready")
        .map(|condition| condition.reason.clone());
    if resource.status.as_ref() != Some(&status) {
        kube_io::apply_status(&ctx.client, resource, &status).await?;
    }
    let changed = previous_reason.as_deref() != Some(verdict.reason.as_str());
    debug!(
        reason = verdict.reason.as_str(),
        ready = verdict.ready,
        "reconciled"
    );
    if changed && !verdict.ready {
        kube_io::publish_event(
            &ctx.recorder,
            resource,
            true,
            verdict.reason.as_str(),
            "Reconcile",
            verdict.message.clone(),
        )
        .await;
    }
    Ok(())
}

/// Deletion: with `deletionPolicy: Disable`, set RegisterType 0 before letting the resource go.
/// Returns `None` once the finalizer is gone, or how to retry.
async fn finalize(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Progress>> {
    if !resource.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    if resource.spec.deletion_policy == DeletionPolicy::Disable
        && let Some(blocked) = disable_in_cloud(resource, ctx, namespace).await?
    {
        let status = DynamicRegistrationStatus {
            conditions: plan::conditions(
                &blocked,
                resource.metadata.generation.unwrap_or(0),
                &resource.status.clone().unwrap_or_default().conditions,
                &Time(k8s_openapi::jiff::Timestamp::now()),
            ),
            ..resource.status.clone().unwrap_or_default()
        };
        record(resource, ctx, status, &blocked).await?;
        return Ok(Some(blocked.progress));
    }
    kube_io::set_finalizer(&ctx.client, resource, false).await?;
    info!("finalizer removed");
    Ok(None)
}

/// Disables registration in the cloud; `None` when done or nothing is left to do, or the verdict
/// that blocks the deletion.
async fn disable_in_cloud(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Verdict>> {
    let blocked = |reason, progress, message: String| {
        Some(Verdict {
            ready: false,
            reason,
            message,
            progress,
        })
    };
    let access = match access(resource, ctx, namespace).await? {
        Ok(access) => access,
        Err(Problem::Suspended | Problem::Conflict { .. }) => {
            // Suspended: hands off the cloud. Conflict: the product is another resource's.
            kube_io::publish_event(&ctx.recorder, resource, true, "CloudLeftAsIs", "Delete", "deleted without disabling registration: the resource is suspended or does not own the product".to_owned()).await;
            return Ok(None);
        }
        Err(problem) => {
            let verdict = plan::problem_verdict(&problem);
            return Ok(blocked(
                Reason::Deleting,
                Progress::Stalled,
                format!(
                    "cannot disable dynamic registration before deletion: {}; fix it, or set deletionPolicy: Orphan to delete without touching the cloud",
                    verdict.message
                ),
            ));
        }
    };
    let wanted = RegistrationRequest {
        register_type: RegisterType::Disabled,
        register_limit: u64::try_from(resource.spec.register_limit).unwrap_or(0),
    };
    match update(resource, ctx, &access.credentials, wanted).await {
        Ok((_, request_id)) => {
            kube_io::publish_event(
                &ctx.recorder,
                resource,
                false,
                "RegistrationDisabled",
                "Delete",
                format!("set RegisterType Disabled before deletion (RequestId {request_id})"),
            )
            .await;
            Ok(None)
        }
        Err(error) => match error.class() {
            // Nothing to disable, or the cloud will never take it: do not wedge the deletion.
            ErrorClass::NotFound | ErrorClass::Forbidden | ErrorClass::Unsupported => {
                kube_io::publish_event(
                    &ctx.recorder,
                    resource,
                    true,
                    "CloudLeftAsIs",
                    "Delete",
                    format!("deleted without disabling registration: {error}"),
                )
                .await;
                Ok(None)
            }
            ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Unknown => Ok(blocked(
                Reason::Deleting,
                Progress::Retrying,
                format!("disabling dynamic registration before deletion failed, retrying: {error}"),
            )),
            ErrorClass::Auth | ErrorClass::Invalid => Ok(blocked(
                Reason::Deleting,
                Progress::Stalled,
                format!(
                    "cannot disable dynamic registration before deletion: {error}; fix it, or set deletionPolicy: Orphan to delete without touching the cloud"
                ),
            )),
        },
    }
}
