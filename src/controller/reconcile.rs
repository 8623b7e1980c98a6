//! One reconcile: gather the facts (the published Secret, credentials, the cloud), decide with
//! the pure [`decision`] functions, act on the decision, record the status.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cloud::{
    CloudError, Credentials, ErrorClass, Product, RegistrationRequest, RegistrationSettings,
};
use crate::controller::context::Context;
use crate::controller::crd::{DynamicRegistration, FINALIZER, RegistrationMode};
use crate::controller::credentials::{self, Probe};
use crate::controller::decision::{
    self, DeletionStep, Plan, PlanInput, Problem, Progress, SecretState, StatusInput, Verdict,
    deletion,
};
use crate::controller::error::{Error, Result};
use crate::controller::kube_io;

/// Reconciles one DynamicRegistration; the controller calls this for every trigger.
pub async fn reconcile(resource: Arc<DynamicRegistration>, ctx: Arc<Context>) -> Result<Action> {
    Ok(match reconcile_progress(&resource, &ctx).await? {
        None => Action::await_change(),
        Some(progress) => ctx.requeue_after(&ObjectRef::from_obj(&*resource), progress),
    })
}

/// One reconcile, logged under the resource's name and measured: where the resource stands
/// after it, or `None` once a deleted resource has been let go.
pub async fn reconcile_progress(
    resource: &DynamicRegistration,
    ctx: &Context,
) -> Result<Option<Progress>> {
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
        let outcome = reconcile_once(resource, ctx, &namespace).await;
        let result = match &outcome {
            Ok(progress) => progress.unwrap_or(Progress::Settled).metric_label(),
            Err(_) => "error",
        };
        ctx.metrics.reconciled(result, started.elapsed());
        outcome
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

/// The finalizer is there exactly while deletion has something to do in the cloud
/// (`deletionPolicy: Disable`).
async fn keep_finalizer_in_line(resource: &DynamicRegistration, ctx: &Context) -> Result<()> {
    let wanted = deletion::cloud_change(&resource.spec).is_some();
    let present = resource.finalizers().iter().any(|f| f == FINALIZER);
    if wanted != present {
        kube_io::set_finalizer(&ctx.client, resource, wanted).await?;
    }
    Ok(())
}

/// Gather → decide → act → record.
async fn sync(resource: &DynamicRegistration, ctx: &Context, namespace: &str) -> Result<Progress> {
    let facts = gather(resource, ctx, namespace).await?;
    let mut outcome = Outcome {
        plan: decision::plan(facts.plan_input(resource)),
        request_id: None,
    };
    if let Some(wanted) = outcome.plan.update {
        outcome = update_cloud(resource, ctx, &facts, wanted, outcome.plan).await;
    }
    if let Some(content) = &outcome.plan.write_secret {
        kube_io::apply_secret(&ctx.client, resource, content).await?;
        info!(secret = %content.name, "published the ProductSecret");
        let note = format!(
            "wrote Secret {} (keys productId, productSecret)",
            content.name
        );
        kube_io::publish_event(
            &ctx.recorder,
            resource,
            false,
            "SecretPublished",
            "WriteSecret",
            note,
        )
        .await;
    }
    let now = Time(Timestamp::now());
    let status = decision::next_status(StatusInput {
        previous: resource.status.as_ref(),
        generation: resource.metadata.generation.unwrap_or(0),
        secret_name: &facts.secret_name,
        plan: &outcome.plan,
        observed_at: facts.observed.as_ref().ok().map(|(_, at)| *at),
        request_id: outcome.request_id.as_deref(),
        now: &now,
    });
    record(resource, ctx, status, &outcome.plan.verdict).await?;
    Ok(outcome.plan.verdict.progress)
}

/// What a reconcile found before deciding.
struct Facts {
    secret_name: String,
    secret: SecretState,
    access: Result<Access, Problem>,
    /// The product and when it was read, or why it could not be.
    observed: Result<(Product, Timestamp), Problem>,
}

impl Facts {
    fn plan_input<'a>(&'a self, resource: &'a DynamicRegistration) -> PlanInput<'a> {
        PlanInput {
            spec: &resource.spec,
            generation: resource.metadata.generation.unwrap_or(0),
            last_status: resource.status.as_ref(),
            cloud: self.observed.as_ref().map(|(product, _)| product),
            secret: &self.secret,
            secret_name: &self.secret_name,
            just_asked: None,
        }
    }
}

/// What a reconcile decided, after acting on the cloud.
struct Outcome {
    plan: Plan,
    request_id: Option<String>,
}

async fn gather(resource: &DynamicRegistration, ctx: &Context, namespace: &str) -> Result<Facts> {
    let secret_name = resource.published_secret_name();
    let found = kube_io::get_secret(&ctx.client, namespace, &secret_name).await?;
    let secret = kube_io::secret_state(found.as_ref(), resource);
    let access = access(resource, ctx, namespace).await?;
    // A published Secret of ours is kept as it is when an observation lacks the ProductSecret;
    // otherwise the secret is needed and is read from DescribeProduct if the snapshot lacks it.
    let needs_secret = !matches!(secret, SecretState::Owned { .. });
    let observed = match &access {
        Ok(access) => observe(resource, ctx, &access.credentials, needs_secret).await,
        Err(problem) => Err(problem.clone()),
    };
    Ok(Facts {
        secret_name,
        secret,
        access,
        observed,
    })
}

/// Makes the update the plan asks for, and decides again on what the cloud applied (or on the
/// failure).
async fn update_cloud(
    resource: &DynamicRegistration,
    ctx: &Context,
    facts: &Facts,
    wanted: RegistrationRequest,
    plan: Plan,
) -> Outcome {
    let (Ok(access), Ok((before, _))) = (&facts.access, &facts.observed) else {
        // The plan asks for an update only when the cloud was observed through this access.
        return Outcome {
            plan,
            request_id: None,
        };
    };
    match update(resource, ctx, &access.credentials, wanted).await {
        Ok((applied, request_id)) => {
            let after = Product {
                registration: applied,
                ..before.clone()
            };
            ctx.observer
                .remember(&access.credentials, &resource.spec.region, &after)
                .await;
            ctx.metrics.drift_corrected();
            let note = format!(
                "set RegisterType {:?} and RegisterLimit {} (RequestId {request_id})",
                RegistrationMode::from(wanted.register_type),
                wanted.register_limit
            );
            let action = "UpdateProductDynamicRegister";
            kube_io::publish_event(&ctx.recorder, resource, false, "Updated", action, note).await;
            let replanned = decision::plan(PlanInput {
                cloud: Ok(&after),
                just_asked: Some(wanted),
                ..facts.plan_input(resource)
            });
            Outcome {
                plan: replanned,
                request_id: Some(request_id),
            }
        }
        Err(error) => Outcome {
            request_id: error.request_id().map(str::to_owned),
            plan: decision::after_failed_update(plan, error.class(), &error.to_string()),
        },
    }
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
    let credentials = match credentials_of(resource, ctx, namespace).await? {
        Ok(credentials) => credentials,
        Err(problem) => return Ok(Err(problem)),
    };
    Ok(ctx
        .credential_gate
        .admit(&credentials)
        .await
        .map(|probe| Access {
            credentials,
            _probe: probe,
        }))
}

/// The resource's credentials Secret, or the controller's own credentials where allowed.
async fn credentials_of(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Credentials, Problem>> {
    let Some(reference) = &resource.spec.credentials_secret_ref else {
        return Ok(ctx.default_credentials_for(namespace).cloned().ok_or(
            Problem::CredentialsNotAllowed {
                namespace: namespace.to_owned(),
            },
        ));
    };
    let Some(secret) = kube_io::get_secret(&ctx.client, namespace, &reference.name).await? else {
        return Ok(Err(Problem::CredentialsMissing {
            secret: reference.name.clone(),
        }));
    };
    Ok(credentials::from_secret_data(
        &reference.name,
        secret.data.as_ref(),
    ))
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
) -> Result<(Product, Timestamp), Problem> {
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
    result
        .map(|observation| (observation.product, observation.taken_at))
        .map_err(|failure| Problem::Cloud {
            class: failure.class,
            message: failure.message,
        })
}

async fn update(
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

/// Writes the status when it changed and, when the verdict changed to a failure, an Event.
async fn record(
    resource: &DynamicRegistration,
    ctx: &Context,
    status: crate::controller::crd::DynamicRegistrationStatus,
    verdict: &Verdict,
) -> Result<()> {
    let previous_reason = resource
        .condition("Ready")
        .map(|condition| condition.reason.clone());
    if resource.status.as_ref() != Some(&status) {
        kube_io::apply_status(&ctx.client, resource, &status).await?;
    }
    debug!(
        reason = verdict.reason.as_str(),
        ready = verdict.ready,
        "reconciled"
    );
    let changed = previous_reason.as_deref() != Some(verdict.reason.as_str());
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

/// Deletion: gather → decide ([`deletion`]) → act. `None` once the finalizer is gone, or how to
/// retry.
async fn finalize(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Progress>> {
    if !resource.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let step = match deletion::cloud_change(&resource.spec) {
        Some(wanted) => disable_in_cloud(resource, ctx, namespace, wanted).await?,
        None => DeletionStep::Release { note: None },
    };
    match step {
        DeletionStep::Blocked(verdict) => {
            let now = Time(Timestamp::now());
            let generation = resource.metadata.generation.unwrap_or(0);
            let status =
                decision::while_deleting(resource.status.as_ref(), generation, &verdict, &now);
            record(resource, ctx, status, &verdict).await?;
            Ok(Some(verdict.progress))
        }
        DeletionStep::Release { note } => {
            if let Some(note) = note {
                let recorder = &ctx.recorder;
                kube_io::publish_event(
                    recorder,
                    resource,
                    note.warning,
                    note.reason,
                    "Delete",
                    note.message,
                )
                .await;
            }
            kube_io::set_finalizer(&ctx.client, resource, false).await?;
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
    let access = match access(resource, ctx, namespace).await? {
        Ok(access) => access,
        Err(problem) => return Ok(deletion::without_access(&problem)),
    };
    Ok(
        match update(resource, ctx, &access.credentials, wanted).await {
            Ok((_, request_id)) => deletion::after_disabled(&request_id),
            Err(error) => deletion::after_failed_disable(error.class(), &error.to_string()),
        },
    )
}
