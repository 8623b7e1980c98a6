//! Gather: what a reconcile finds before deciding. The Secret under the published name (from
//! memory when the watch shows the version we last wrote or read), the credentials, and the
//! product as the cloud holds it, unless an older claimant manages it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use tracing::info;

use super::{Context, Error, Result};
use crate::cloud::observe::Need;
use crate::cloud::{Credentials, ErrorClass, Product};
use crate::controller::cache::versions::Publisher;
use crate::controller::credentials::Usable;
use crate::controller::decision::cluster_credentials::Acceptance;
use crate::controller::decision::{self, Plan, PlanInput, Problem, SecretState, published};
use crate::controller::resources::{DynamicRegistration, ProductService};

/// What a reconcile found before deciding.
pub(super) struct Facts {
    pub secret_name: String,
    /// The resource's labels the published Secret carries too.
    pub secret_labels: BTreeMap<String, String>,
    pub secret: SecretState,
    /// The resourceVersion of the Secret found under that name.
    pub secret_version: Option<String>,
    pub access: Result<Usable, Problem>,
    /// The product and when it was read, or why it could not be.
    pub observed: Result<(Product, Timestamp), Problem>,
}

impl Facts {
    /// Our Secret was found right, against an observation that carried the ProductSecret.
    pub fn secret_checked_now(&self, plan: &Plan) -> bool {
        let observed_secret = self
            .observed
            .as_ref()
            .is_ok_and(|(product, _)| product.registration.product_secret.is_some());
        plan.secret_published && observed_secret && matches!(self.secret, SecretState::Owned { .. })
    }

    /// What the decision reads.
    pub fn plan_input<'a>(
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
            selected_label_keys: &ctx.inherited_labels,
            just_asked: None,
        }
    }

    /// Facts that stop at a spec the reconcile cannot act on.
    fn invalid(secret_name: String, problem: Problem) -> Self {
        Self {
            secret_name,
            secret_labels: BTreeMap::new(),
            secret: SecretState::Absent,
            secret_version: None,
            access: Err(problem.clone()),
            observed: Err(problem),
        }
    }
}

/// Finds the Secret under the published name, the credentials and the product.
pub(super) async fn gather(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Facts> {
    let secret_name = resource.published_secret_name();
    if !decision::secrets::is_valid_secret_name(&secret_name) {
        // Stored before the schema checked it, or a default name grown too long.
        let detail = format!(
            "the Secret name {secret_name} is not a valid Secret name: set spec.secretName"
        );
        return Ok(Facts::invalid(secret_name, Problem::InvalidSpec { detail }));
    }
    let (secret, secret_version) = published_secret(resource, ctx, namespace, &secret_name).await?;
    let access = access(resource, ctx).await?;
    let trusted = matches!(secret, SecretState::Owned { .. })
        && secret_version.as_deref().is_some_and(|version| {
            let verified = &ctx.caches.verified_secrets;
            verified.trusts(namespace, &secret_name, version, Publisher::of(resource))
        });
    let observed = match &access {
        Ok(usable) => observe(resource, ctx, &usable.credentials, need(resource, trusted)).await,
        Err(problem) => Err(problem.clone()),
    };
    if let Some(reference) = &resource.spec.cluster_credentials_ref
        && let Some(acceptance) = Acceptance::of(observed.as_ref().map(|_| ()))
    {
        let credentials = &ctx.credentials;
        credentials
            .record_cluster_credentials(&reference.name, acceptance)
            .await;
    }
    // Only a resource whose credentials reach the product asks whether an older claim that
    // reaches it too comes first: a claim that cannot see the product never blocks one that can.
    let observed = observed.and_then(|found| match conflict(resource, ctx, namespace) {
        Some(problem) => Err(problem),
        None => Ok(found),
    });
    Ok(Facts {
        secret_labels: inherited_labels(resource, &ctx.inherited_labels),
        secret_name,
        secret,
        secret_version,
        access,
        observed,
    })
}

/// What the observation must deliver: the ProductSecret is needed (read alone when the shared
/// snapshot lacks it) unless our Secret is the very version we wrote or checked (`trusted`);
/// a person's reconcile request reads the product afresh.
fn need(resource: &DynamicRegistration, trusted: bool) -> Need {
    if resource.pending_reconcile_request().is_some() {
        Need::FreshRead
    } else if trusted {
        Need::Settings
    } else {
        Need::SettingsAndSecret
    }
}

/// The resource's labels with these keys.
fn inherited_labels(resource: &DynamicRegistration, keys: &[String]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|key| resource.labels().get_key_value(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The credentials this resource may use now, or why it may not call the cloud.
pub(super) async fn access(
    resource: &DynamicRegistration,
    ctx: &Context,
) -> Result<Result<Usable, Problem>> {
    if resource.spec.suspend {
        return Ok(Err(Problem::Suspended));
    }
    Ok(ctx.credentials.resolve(resource).await?)
}

/// The published Secret as it is: from memory when the watch cache shows the version we last
/// wrote or read for this resource, absent when the watch cache has no such Secret and we never wrote it (no
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
    let known = &ctx.caches.known_secrets;
    match ctx.caches.secrets.version(namespace, name) {
        Some(version) => {
            if let Some(state) = known.at(namespace, name, &version, Publisher::of(resource)) {
                return Ok((state, Some(version)));
            }
        }
        // Ours may be newer than the watch has shown, or, in a shard, it may not carry the
        // shard's labels yet (the watch does not show it): read it.
        None if known.seen(namespace, name) || !ctx.inherited_labels.is_empty() => {}
        None => return Ok((SecretState::Absent, None)),
    }
    // A templated Secret may hold up to 1 MiB: read holding one of the few permits for large ones,
    // and kept only as digests.
    let _reading = ctx.renders.enter(resource).await;
    let found = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadPublishedSecret {
            secret: name.to_owned(),
            source,
        })?;
    let state = published::found(found.as_ref(), resource);
    let version = found.and_then(|found| found.metadata.resource_version);
    if let (SecretState::Owned { .. }, Some(version)) = (&state, &version) {
        known.remember(namespace, name, version, (Publisher::of(resource), &state));
    }
    Ok((state, version))
}

/// The conflict with an older claim on the product, if any. The status names the other resource
/// only within this namespace; the log, which the platform team reads, names it always.
pub(super) fn conflict(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Option<Problem> {
    let claimants = ctx.caches.claimants(resource);
    let (owner_namespace, owner) = decision::claims::older_claimant(resource, &claimants)?;
    info!(older = %format!("{owner_namespace}/{owner}"), "an older resource manages the product: conflict");
    Some(Problem::Conflict {
        owner: (owner_namespace == namespace).then_some(owner),
    })
}

/// The product through the shared snapshot (or read alone), and what the answer says of the
/// credentials.
async fn observe(
    resource: &DynamicRegistration,
    ctx: &Context,
    credentials: &Credentials,
    need: Need,
) -> Result<(Product, Timestamp), Problem> {
    let spec = &resource.spec;
    let sharing = ctx.caches.sharing_credentials(resource);
    let result = ctx
        .observer
        .observe(
            (spec.service.cloud(), credentials),
            &spec.region,
            &spec.product_id,
            sharing,
            need,
        )
        .await;
    let refusal = result.as_ref().err().map(|f| (f.class, f.code.as_str()));
    ctx.credentials.judged(credentials, refusal);
    result
        .map(|observation| (observation.product, observation.taken_at))
        .map_err(|failure| Problem::Cloud {
            class: failure.class,
            message: with_service_hint(failure.class, failure.message, spec.service),
        })
}

/// A product not found may be one of another IoT service: the message says which service was
/// asked, so that a person checks `spec.service`.
fn with_service_hint(class: ErrorClass, message: String, service: ProductService) -> String {
    if class != ErrorClass::NotFound {
        return message;
    }
    format!(
        "{message}; spec.service is {service:?}: a product of another IoT service is not found in this one"
    )
}
