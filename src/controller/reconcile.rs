//! One reconcile: gather the facts (the published Secret, credentials, the cloud), decide with
//! the pure [`decision`] functions, act on the decision, record the status.

use std::collections::BTreeMap;
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
use crate::controller::admission::{Source, Urgency};
use crate::controller::cluster_access::Outcome as CredentialsOutcome;
use crate::controller::context::Context;
use crate::controller::crd::{DynamicRegistration, FINALIZER, RegistrationMode, SecretRetention};
use crate::controller::credentials::Probe;
use crate::controller::decision::{
    self, DataDigest, DeletionStep, Plan, PlanInput, Problem, Progress, SecretContent, SecretState,
    StatusInput, Verdict, deletion,
};
use crate::controller::error::{Error, Result};
use crate::controller::index;
use crate::controller::kube_io::{self, Creation};
use crate::controller::observe::Need;

/// Reconciles one DynamicRegistration; the controller calls this for every trigger.
pub async fn reconcile(resource: Arc<DynamicRegistration>, ctx: Arc<Context>) -> Result<Action> {
    let urgency = if resource.awaited_by_person() {
        Urgency::Awaited
    } else {
        Urgency::Backlog
    };
    // By namespace and name only: a parked resource is held by this name, so no more.
    let object = index::name_ref(&*resource);
    let Some(_place) = ctx
        .admission
        .enter(Source::of(&resource), urgency, object.clone())
    else {
        // Parked in its queue: reconciled again when a place is reserved for it.
        return Ok(Action::await_change());
    };
    // Woken after waiting: act on the resource as it is now (gone: nothing to do).
    let Some(resource) = ctx.registrations.get(&object) else {
        return Ok(Action::await_change());
    };
    // Boxed: a reconcile that only parks its resource stays small (tens of thousands start at
    // once after a restart); the whole reconcile's state is allocated once it has a place.
    let progress = Box::pin(reconcile_progress(&resource, &ctx)).await?;
    Ok(match progress {
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

/// The finalizer is there exactly while deletion has something to do first: in the cloud
/// (`deletionPolicy: Disable`), or to keep the published Secret (`secretRetention: Retain`).
async fn keep_finalizer_in_line(resource: &DynamicRegistration, ctx: &Context) -> Result<()> {
    let wanted = deletion::needs_finalizer(&resource.spec);
    let present = resource.finalizers().iter().any(|f| f == FINALIZER);
    if wanted != present {
        kube_io::set_finalizer(&ctx.client, resource, wanted).await?;
    }
    Ok(())
}

/// Gather → decide → act → record.
async fn sync(resource: &DynamicRegistration, ctx: &Context, namespace: &str) -> Result<Progress> {
    if resource.spec.suspend {
        let now = Time(Timestamp::now());
        let generation = resource.metadata.generation.unwrap_or(0);
        let status = decision::while_suspended(resource.status.as_ref(), generation, &now);
        if resource.status.as_ref() != Some(&status) {
            kube_io::apply_status(&ctx.client, resource, &status).await?;
        }
        return Ok(Progress::Settled);
    }
    let facts = gather(resource, ctx, namespace).await?;
    let mut outcome = Outcome {
        plan: decision::plan(facts.plan_input(resource, ctx)),
        request_id: None,
        updated: None,
    };
    if let Some(wanted) = outcome.plan.update {
        outcome = update_cloud(resource, ctx, &facts, wanted, outcome.plan).await;
    }
    let mut published = None;
    if let Some(content) = outcome.plan.write_secret.clone() {
        (outcome.plan, published) = publish(resource, ctx, &facts, &content, outcome.plan).await?;
    } else if facts.secret_checked_now(&outcome.plan) {
        ctx.verified_secrets.record(
            namespace,
            &facts.secret_name,
            facts.secret_version.as_deref().unwrap_or(""),
        );
    }
    announce_changes(resource, ctx, outcome.updated.take(), published).await;
    if outcome.plan.secret_published {
        delete_left_behind(resource, ctx, namespace, &facts.secret_name).await?;
    }
    let now = Time(Timestamp::now());
    let status = decision::next_status(StatusInput {
        previous: resource.status.as_ref(),
        generation: resource.metadata.generation.unwrap_or(0),
        secret_name: &facts.secret_name,
        plan: &outcome.plan,
        observed_at: facts.observed.as_ref().ok().map(|(_, at)| *at),
        request_id: outcome.request_id.as_deref(),
        // Handled once the cloud was read afresh for it (else it stays pending).
        handled_request: resource
            .pending_reconcile_request()
            .filter(|_| facts.observed.is_ok()),
        now: &now,
    });
    record(resource, ctx, status, &outcome.plan.verdict).await?;
    Ok(outcome.plan.verdict.progress)
}

/// What a reconcile found before deciding.
struct Facts {
    secret_name: String,
    /// The resource's labels the published Secret carries too.
    secret_labels: BTreeMap<String, String>,
    secret: SecretState,
    /// The resourceVersion of the Secret found under that name.
    secret_version: Option<String>,
    access: Result<Access, Problem>,
    /// The product and when it was read, or why it could not be.
    observed: Result<(Product, Timestamp), Problem>,
}

impl Facts {
    /// Our Secret was found right, against an observation that carried the ProductSecret.
    fn secret_checked_now(&self, plan: &Plan) -> bool {
        let observed_secret = self
            .observed
            .as_ref()
            .is_ok_and(|(product, _)| product.registration.product_secret.is_some());
        plan.secret_published && observed_secret && matches!(self.secret, SecretState::Owned { .. })
    }

    fn plan_input<'a>(
        &'a self,
        resource: &'a DynamicRegistration,
        ctx: &'a Context,
    ) -> PlanInput<'a> {
        PlanInput {
            spec: &resource.spec,
            generation: resource.metadata.generation.unwrap_or(0),
            last_status: resource.status.as_ref(),
            cloud: self.observed.as_ref().map(|(product, _)| product),
            secret: &self.secret,
            secret_name: &self.secret_name,
            secret_labels: &self.secret_labels,
            selected_label_keys: ctx
                .settings
                .shard
                .as_ref()
                .map_or(&[], |shard| shard.keys()),
            just_asked: None,
        }
    }
}

/// What a reconcile decided, after acting on the cloud.
struct Outcome {
    plan: Plan,
    request_id: Option<String>,
    /// What the cloud update set, for the Event.
    updated: Option<String>,
}

/// One Event for what a reconcile changed: the cloud's settings and the Secret written are one
/// change to whoever reads the resource's Events (and one request, not two).
async fn announce_changes(
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
    kube_io::publish_event(
        &ctx.events,
        resource,
        false,
        reason,
        action,
        note.join("; "),
    )
    .await;
}

async fn gather(resource: &DynamicRegistration, ctx: &Context, namespace: &str) -> Result<Facts> {
    let secret_name = resource.published_secret_name();
    if !decision::secrets::is_valid_secret_name(&secret_name) {
        // Stored before the schema checked it, or a default name grown too long.
        let problem = Problem::InvalidSpec {
            detail: format!(
                "the Secret name {secret_name} is not a valid Secret name: set spec.secretName"
            ),
        };
        return Ok(Facts {
            secret_name,
            secret_labels: BTreeMap::new(),
            secret: SecretState::Absent,
            secret_version: None,
            access: Err(problem.clone()),
            observed: Err(problem),
        });
    }
    let (secret, secret_version) = published_secret(resource, ctx, namespace, &secret_name).await?;
    let access = access(resource, ctx, namespace).await?;
    // The ProductSecret is needed (read alone when the shared snapshot lacks it) unless our
    // Secret is the very version we wrote or checked: then a snapshot without it will do.
    let trusted = matches!(secret, SecretState::Owned { .. })
        && secret_version.as_deref().is_some_and(|version| {
            ctx.verified_secrets
                .trusts(namespace, &secret_name, version)
        });
    let need = if resource.pending_reconcile_request().is_some() {
        Need::FreshRead
    } else if trusted {
        Need::Settings
    } else {
        Need::SettingsAndSecret
    };
    let observed = match &access {
        Ok(access) => observe(resource, ctx, &access.credentials, need).await,
        Err(problem) => Err(problem.clone()),
    };
    if let Some(reference) = &resource.spec.cluster_credentials_ref {
        record_cluster_credentials(ctx, &reference.name, &observed).await;
    }
    // Only a resource whose credentials reach the product asks whether an older claim that
    // reaches it too comes first: a claim that cannot see the product never blocks one that can.
    let observed = observed.and_then(|found| match conflict(resource, ctx, namespace) {
        Some(problem) => Err(problem),
        None => Ok(found),
    });
    Ok(Facts {
        secret_name,
        secret_labels: ctx
            .settings
            .shard
            .as_ref()
            .map(|shard| shard.labels_of(resource.labels()))
            .unwrap_or_default(),
        secret,
        secret_version,
        access,
        observed,
    })
}

/// Tells the ClusterCredentials used what this reconcile learnt of them: the cloud answered, or
/// their source or the cloud refused them. Other outcomes (a product not found, a namespace not
/// selected, an outage) say nothing about the credentials.
async fn record_cluster_credentials(
    ctx: &Context,
    name: &str,
    observed: &Result<(Product, Timestamp), Problem>,
) {
    let outcome = match observed {
        Ok(_) => CredentialsOutcome::Accepted,
        Err(Problem::Cloud {
            class: ErrorClass::NotFound | ErrorClass::Forbidden | ErrorClass::Unsupported,
            ..
        }) => CredentialsOutcome::Accepted,
        Err(Problem::Cloud {
            class: ErrorClass::Auth,
            message,
        }) => CredentialsOutcome::Refused {
            reason: "AuthFailed",
            message,
        },
        Err(Problem::CredentialsResting { .. }) => CredentialsOutcome::Refused {
            reason: "AuthFailed",
            message: "the cloud refused these credentials; they rest until they change or the slow retry comes due",
        },
        Err(Problem::ClusterCredentialsUnusable { detail, .. }) => CredentialsOutcome::Refused {
            reason: "SourceUnusable",
            message: detail,
        },
        Err(_) => return,
    };
    ctx.cluster_access.record(&ctx.client, name, outcome).await;
}

/// The published Secret as it is: from memory when the watch cache shows the version we last
/// wrote or read, absent when the watch cache has no such Secret and we never wrote it (no
/// request either way), else read. What is read of ours is remembered.
///
/// A Secret someone else creates just before our create, unseen by the watch yet, makes that
/// create fail (AlreadyExists: a SecretConflict, never a takeover), as it would after a read.
async fn published_secret(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(SecretState, Option<String>)> {
    match ctx.secret_version(namespace, name) {
        Some(version) => {
            if let Some(state) = ctx.known_secrets.at(namespace, name, &version) {
                return Ok((state, Some(version)));
            }
        }
        // Ours may be newer than the watch has shown, or, in a shard, it may not carry the
        // shard's labels yet (the watch does not show it): read it.
        None if ctx.known_secrets.seen(namespace, name) || ctx.settings.shard.is_some() => {}
        None => return Ok((SecretState::Absent, None)),
    }
    let found = kube_io::get_secret(&ctx.client, namespace, name).await?;
    let state = kube_io::secret_state(found.as_ref(), resource);
    let version = found.and_then(|found| found.metadata.resource_version);
    if let (SecretState::Owned { .. }, Some(version)) = (&state, &version) {
        ctx.known_secrets.remember(namespace, name, version, &state);
    }
    Ok((state, version))
}

/// The conflict with an older claim on the product, if any. The status names the other resource
/// only within this namespace; the log, which the platform team reads, names it always.
fn conflict(resource: &DynamicRegistration, ctx: &Context, namespace: &str) -> Option<Problem> {
    let (owner_namespace, owner) = ctx.older_claimant(resource)?;
    info!(older = %format!("{owner_namespace}/{owner}"), "an older resource manages the product: conflict");
    Some(Problem::Conflict {
        owner: (owner_namespace == namespace).then_some(owner),
    })
}

/// Writes the published Secret: created where none was found (losing that race to someone
/// else is a SecretConflict, never a takeover), else rewritten only in the version found ours.
/// Returns the plan after the write and, when written, what for the Event.
async fn publish(
    resource: &DynamicRegistration,
    ctx: &Context,
    facts: &Facts,
    content: &SecretContent,
    plan: Plan,
) -> Result<(Plan, Option<String>)> {
    let written = match (&facts.secret, &facts.secret_version) {
        (SecretState::Owned { .. }, Some(version)) if content.recreate => {
            kube_io::delete_for_new_type(&ctx.client, resource, &content.name, version).await?;
            kube_io::publish_event(
                &ctx.events,
                resource,
                false,
                "SecretRecreated",
                "WriteSecret",
                format!(
                    "deleted Secret {} to create it with type {} (a Secret's type cannot change)",
                    content.name, content.shape.type_
                ),
            )
            .await;
            match kube_io::create_secret(&ctx.client, resource, content).await? {
                Creation::Created(version) => version,
                Creation::AlreadyExists => {
                    return Ok((decision::after_secret_taken(plan, &content.name), None));
                }
            }
        }
        (SecretState::Owned { .. }, Some(version)) => {
            kube_io::apply_secret(&ctx.client, resource, content, version).await?
        }
        _ => match kube_io::create_secret(&ctx.client, resource, content).await? {
            Creation::Created(version) => version,
            Creation::AlreadyExists => {
                return Ok((decision::after_secret_taken(plan, &content.name), None));
            }
        },
    };
    let namespace = resource.namespace().unwrap_or_default();
    if let Some(version) = written {
        ctx.verified_secrets
            .record(&namespace, &content.name, &version);
        // What we wrote, as the decision compares it: our keys, label and shape.
        let state = SecretState::Owned {
            data: DataDigest::of(&content.data),
            labelled: true,
            shape: content.shape.clone(),
        };
        ctx.known_secrets
            .remember(&namespace, &content.name, &version, &state);
    }
    info!(secret = %content.name, "published the ProductSecret");
    let keys: Vec<&str> = content.data.keys().map(String::as_str).collect();
    let note = format!("wrote Secret {} (keys {})", content.name, keys.join(", "));
    Ok((plan, Some(note)))
}

/// Deletes the Secrets this resource published under a former `secretName` (ours and labelled
/// only), once the ProductSecret is published under the current one.
async fn delete_left_behind(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
    current_name: &str,
) -> Result<()> {
    let Some(uid) = resource.metadata.uid.as_deref() else {
        return Ok(());
    };
    let mut left = ctx.secrets.published_by(namespace, uid);
    left.retain(|secret| secret.name.as_deref() != Some(current_name));
    for secret in left {
        kube_io::delete_left_behind(&ctx.client, &secret).await?;
        let name = secret.name.clone().unwrap_or_default();
        info!(secret = %name, "deleted the Secret published under the former secretName");
        let note = format!("deleted Secret {name}, published under the former secretName");
        kube_io::publish_event(
            &ctx.events,
            resource,
            false,
            "SecretDeleted",
            "DeleteSecret",
            note,
        )
        .await;
    }
    Ok(())
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
            updated: None,
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
            let replanned = decision::plan(PlanInput {
                cloud: Ok(&after),
                just_asked: Some(wanted),
                ..facts.plan_input(resource, ctx)
            });
            Outcome {
                plan: replanned,
                request_id: Some(request_id),
                updated: Some(note),
            }
        }
        Err(error) => Outcome {
            request_id: error.request_id().map(str::to_owned),
            plan: decision::after_failed_update(plan, error.class(), &error.to_string()),
            updated: None,
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

/// The resource's credentials Secret, or the controller's own credentials where allowed. A
/// Secret the resource's deletion will need is protected with our in-use finalizer.
async fn credentials_of(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<Credentials, Problem>> {
    if let Some(reference) = &resource.spec.cluster_credentials_ref {
        return ctx
            .cluster_access
            .credentials(
                &ctx.client,
                (&ctx.secrets, &ctx.known_credentials),
                &reference.name,
                namespace,
            )
            .await;
    }
    let Some(reference) = &resource.spec.credentials_secret_ref else {
        return Ok(match ctx.default_credentials_for(namespace) {
            Some(default) => default.current().await,
            None => Err(Problem::CredentialsNotAllowed {
                namespace: namespace.to_owned(),
            }),
        });
    };
    if !decision::secrets::is_valid_secret_name(&reference.name) {
        return Ok(Err(Problem::CredentialsInvalid {
            secret: reference.name.clone(),
            detail: "not a valid Secret name".to_owned(),
        }));
    }
    let found = kube_io::credentials_secret(
        &ctx.client,
        &ctx.secrets,
        &ctx.known_credentials,
        namespace,
        &reference.name,
    )
    .await?;
    let Some((metadata, read)) = found else {
        return Ok(Err(Problem::CredentialsMissing {
            secret: reference.name.clone(),
        }));
    };
    if let Some(problem) = protect_credentials(resource, ctx, &metadata).await? {
        return Ok(Err(problem));
    }
    Ok(read)
}

/// Puts our in-use finalizer on credentials the resource's deletion will need. A person deleting
/// them meanwhile is told what holds them and how to let go; the deletion itself still uses them.
async fn protect_credentials(
    resource: &DynamicRegistration,
    ctx: &Context,
    secret: &kube::api::ObjectMeta,
) -> Result<Option<Problem>> {
    let name = secret.name.clone().unwrap_or_default();
    if decision::secrets::credentials_needed_by(resource) != Some(name.as_str()) {
        return Ok(None);
    }
    let protected = secret
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == decision::CREDENTIALS_IN_USE);
    match (
        secret.deletion_timestamp.is_some(),
        resource.metadata.deletion_timestamp.is_some(),
    ) {
        (true, false) => Ok(Some(Problem::CredentialsBeingDeleted { secret: name })),
        (true, true) => Ok(None),
        (false, _) if protected => Ok(None),
        (false, _) => {
            kube_io::set_secret_finalizer(&ctx.client, secret, decision::CREDENTIALS_IN_USE, true)
                .await?;
            info!(secret = %name, "protected the credentials Secret while deletion needs it");
            Ok(None)
        }
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
    need: Need,
) -> Result<(Product, Timestamp), Problem> {
    let result = ctx
        .observer
        .observe(
            credentials,
            &resource.spec.region,
            &resource.spec.product_id,
            ctx.resources_sharing_credentials(resource),
            need,
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
    // A person waits for this one: overtake the backlog of new resources and resyncs in the
    // rate limiter.
    let cloud = if resource.awaited_by_person() {
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

/// Rests credentials the cloud refused, and clears them once they work: any answer in which
/// the cloud authenticated the key and judged the request (success, or a refusal about the
/// product or the action) shows the key is good.
fn note_credentials(ctx: &Context, credentials: &Credentials, error: Option<(ErrorClass, &str)>) {
    match error {
        None
        | Some((
            ErrorClass::NotFound
            | ErrorClass::Forbidden
            | ErrorClass::Unsupported
            | ErrorClass::Invalid,
            _,
        )) => ctx.credential_gate.accepted(credentials),
        Some((ErrorClass::Auth, code)) => {
            warn!(secret_id = %credentials.secret_id, code, "the cloud refused the credentials; resting them");
            ctx.credential_gate.refused(credentials, code);
        }
        Some((ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Unknown, _)) => {}
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
    let reaches = |status| decision::claims::reaches_product(status);
    if reaches(Some(&status)) != reaches(resource.status.as_ref()) {
        ctx.claim_changed(resource);
    }
    debug!(
        reason = verdict.reason.as_str(),
        ready = verdict.ready,
        "reconciled"
    );
    let changed = previous_reason.as_deref() != Some(verdict.reason.as_str());
    if changed && !verdict.ready {
        kube_io::publish_event(
            &ctx.events,
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
                let events = &ctx.events;
                kube_io::publish_event(
                    events,
                    resource,
                    note.warning,
                    note.reason,
                    "Delete",
                    note.message,
                )
                .await;
            }
            if resource.spec.secret_retention == SecretRetention::Retain {
                retain_secret(resource, ctx).await?;
            }
            kube_io::set_finalizer(&ctx.client, resource, false).await?;
            info!("finalizer removed");
            Ok(None)
        }
    }
}

/// `secretRetention: Retain`: our published Secret loses its ownerReference to the resource,
/// so the garbage collector leaves it when the resource goes.
async fn retain_secret(resource: &DynamicRegistration, ctx: &Context) -> Result<()> {
    let name = resource.published_secret_name();
    if kube_io::release_secret(&ctx.client, resource, &name).await? {
        kube_io::publish_event(
            &ctx.events,
            resource,
            false,
            "SecretRetained",
            "Delete",
            format!("Secret {name} is kept (secretRetention: Retain): it no longer belongs to this resource"),
        )
        .await;
    }
    Ok(())
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
