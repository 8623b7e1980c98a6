//! In-use protection of credentials Secrets, put on and taken off here only. A resource whose
//! deletion will switch registration off (`deletionPolicy: Disable`) needs its credentials
//! Secret until then: our finalizer keeps the Secret while that is so (as
//! `kubernetes.io/pvc-protection` keeps a volume claim). It comes off as soon as no resource
//! needs it (the resource went, switched to `Orphan`, or names other credentials), and after a
//! restart too: the sweep looks at every Secret in view carrying the finalizer, not only at the
//! ones this process protected, and at every Secret a resource stopped needing, in view or not
//! (a shard's view holds only the Secrets its selector matches).
//!
//! Each shard protects with a finalizer of its own (`ShardSelector::protection_finalizer`), so
//! that a shard never takes off another's protection because none of its own resources needs
//! the Secret.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, info, warn};

use super::Error;
use super::retries::{Failure, LONGEST_WAIT, Retries, doubling_wait};
use crate::controller::cache::Caches;
use crate::controller::cache::index::ResourceKey;
use crate::controller::decision::{Problem, finalizers, secrets};
use crate::controller::resources::DynamicRegistration;
use crate::ops::metrics::Metrics;

/// A sweep also runs this often without being woken, to catch what a missed event would leave.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// At most one sweep in this long: status writes of thousands of resources wake it too.
const SWEEP_SPACING: Duration = Duration::from_secs(1);

/// How often a shard reads the metadata of every Secret in its scope for its finalizer (besides
/// once at the start of each leadership): its Secret watch shows only the Secrets its selector
/// matches, and a protected Secret out of that view is otherwise found only when a resource
/// stops needing it while this leadership watches (see [`Sweep::beyond_view`]).
const CENSUS_INTERVAL: Duration = Duration::from_secs(600);
/// Secrets a page of the census lists.
const CENSUS_PAGE: u32 = 500;

/// A Secret by (namespace, name).
pub type SecretName = (String, String);

/// Puts `finalizer` on the credentials Secret `secret` when `resource`'s deletion will need
/// it. A person deleting it meanwhile is told what holds it and how to let go (the problem);
/// the deletion itself still uses it.
pub async fn protect(
    client: &Client,
    (resource, finalizer): (&DynamicRegistration, &str),
    secret: &ObjectMeta,
) -> Result<Option<Problem>, Error> {
    let name = secret.name.clone().unwrap_or_default();
    if secrets::credentials_needed_by(resource) != Some(name.as_str()) {
        return Ok(None);
    }
    match (
        secret.deletion_timestamp.is_some(),
        resource.metadata.deletion_timestamp.is_some(),
    ) {
        (true, false) => Ok(Some(Problem::CredentialsBeingDeleted { secret: name })),
        (true, true) => Ok(None),
        (false, _) if finalizers::carries(secret, finalizer) => Ok(None),
        (false, _) => {
            set_finalizer(client, secret, (finalizer, true))
                .await
                .map_err(|source| Error::Protect {
                    secret: name.clone(),
                    source,
                })?;
            info!(secret = %name, "protected the credentials Secret while deletion needs it");
            Ok(None)
        }
    }
}

/// What the sweep needs.
pub struct Sweep<'a> {
    /// Writes finalizers, and reads the Secrets out of view.
    pub client: Client,
    /// What is in view, and which resources need which Secret.
    pub caches: &'a Caches,
    /// Our in-use finalizer (this shard's).
    pub finalizer: &'a str,
    /// Every Secret in the controller's scope, when its Secret watch shows only part of them (a
    /// shard). A resource that leaves the shard (its label moved) or goes while no leadership of the
    /// shard watches (a restart, a lost Lease, a relist) leaves the shard's protection on a
    /// credentials Secret it may not see; without a census that finalizer stays forever, and
    /// the Secret, and its namespace, can never be deleted.
    pub beyond_view: Option<Api<Secret>>,
    /// Where refusals show.
    pub metrics: &'a Metrics,
}

/// Takes `finalizer` off the Secrets no deletion needs any more, whenever `wake` is notified
/// (a resource or a protected Secret changed) and every [`SWEEP_INTERVAL`], and off the Secrets
/// out of view that resources stopped needing (`released`); runs until dropped.
pub async fn release_unused(
    sweep: Sweep<'_>,
    wake: &Notify,
    mut released: UnboundedReceiver<SecretName>,
) {
    let mut candidates = BTreeSet::new();
    let mut refused = Retries::default();
    // Only a shard, whose watch shows part of its scope, needs a census: at once, then at intervals.
    let mut census = sweep.beyond_view.clone().map(Census::new);
    loop {
        sweep.caches.wait_until_listed().await;
        while let Ok(name) = released.try_recv() {
            candidates.insert(name);
        }
        if let Some(census) = &mut census
            && let Some(found) = census.take_if_due(sweep.finalizer).await
        {
            candidates.extend(found);
        }
        let in_view = sweep.in_view(&mut refused).await;
        // What could not be let go is tried at a later sweep.
        candidates = sweep
            .out_of_view(std::mem::take(&mut candidates), &mut refused)
            .await;
        refused.retain(|name| in_view.contains(name) || candidates.contains(name));
        let census_refused = census.as_ref().is_some_and(Census::refused);
        sweep
            .metrics
            .set_protection_refused(refused.len(), census_refused);
        tokio::time::sleep(SWEEP_SPACING).await;
        tokio::select! {
            () = wake.notified() => {}
            Some(name) = released.recv() => { candidates.insert(name); }
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}

impl Sweep<'_> {
    /// The Secrets in view that carry our finalizer, each let go unless needed or refused
    /// lately; returns their names.
    async fn in_view(&self, refused: &mut Retries<SecretName>) -> BTreeSet<SecretName> {
        let mut names = BTreeSet::new();
        for secret in self.caches.secrets.with_finalizer(self.finalizer) {
            let name = secret_name(&secret);
            if refused.due(&name) {
                // In view: swept again at a later sweep whatever happens now.
                let outcome = self.release_if_unneeded(&secret).await;
                note(
                    refused,
                    name.clone(),
                    outcome,
                    "take our in-use finalizer off",
                );
            }
            names.insert(name);
        }
        names
    }

    /// Secrets resources stopped needing, read when out of view (a Secret in view is swept
    /// from the cache).
    /// Returns the candidates to try again.
    async fn out_of_view(
        &self,
        candidates: BTreeSet<SecretName>,
        refused: &mut Retries<SecretName>,
    ) -> BTreeSet<SecretName> {
        let mut again = BTreeSet::new();
        for (namespace, name) in candidates {
            if self.caches.secrets.version(&namespace, &name).is_some() {
                continue;
            }
            let key = (namespace, name);
            if !refused.due(&key) {
                again.insert(key);
                continue;
            }
            let api = Api::<Secret>::namespaced(self.client.clone(), &key.0);
            let outcome = match api.get_metadata_opt(&key.1).await {
                Ok(Some(found)) if finalizers::carries(&found.metadata, self.finalizer) => {
                    self.release_if_unneeded(&found.metadata).await
                }
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            };
            let settled = outcome.is_ok();
            note(
                refused,
                key.clone(),
                outcome,
                "read a credentials Secret no resource needs any more",
            );
            if !settled {
                again.insert(key);
            }
        }
        again
    }

    /// Lets go of `secret` unless a resource still needs it.
    async fn release_if_unneeded(&self, secret: &ObjectMeta) -> Result<(), kube::Error> {
        let (namespace, name) = secret_name(secret);
        let key = ResourceKey::Protecting(namespace.clone(), name.clone());
        if self.caches.resource_index.count(&key) > 0 {
            return Ok(());
        }
        set_finalizer(&self.client, secret, (self.finalizer, false)).await?;
        info!(namespace, secret = %name, "no deletion needs the credentials Secret any more: let go of it");
        Ok(())
    }
}

/// Takes in what came of a try on `name`: a refusal is logged once and waits; a passing failure
/// is tried at the next sweep.
fn note(
    refused: &mut Retries<SecretName>,
    name: SecretName,
    outcome: Result<(), kube::Error>,
    what: &str,
) {
    let (namespace, secret) = (name.0.clone(), name.1.clone());
    match outcome {
        Ok(()) => {
            if refused.settled(&name) {
                info!(namespace, %secret, "the API server no longer refuses to {what}");
            }
        }
        Err(error) => match Failure::of(&error) {
            Failure::Refused if refused.refused(name) => warn!(
                %error, namespace, %secret,
                "the API server refuses to {what}; trying again after a wait that doubles up to {} min (metric iothub_dynreg_protection_refused)",
                LONGEST_WAIT.as_secs() / 60
            ),
            Failure::Refused => debug!(%error, namespace, %secret, "still refused to {what}"),
            Failure::Passing => {
                debug!(%error, namespace, %secret, "could not {what}; trying again at the next sweep");
            }
        },
    }
}

fn secret_name(secret: &ObjectMeta) -> SecretName {
    (
        secret.namespace.clone().unwrap_or_default(),
        secret.name.clone().unwrap_or_default(),
    )
}

/// A shard's census of the Secrets in scope carrying our finalizer, listed page by page
/// (metadata only). A page that fails is asked again, after a wait, from where the listing
/// stopped, never from the first page (unless its continue token expired).
struct Census {
    api: Api<Secret>,
    found: Vec<SecretName>,
    /// The continue token of the next page, while a listing is under way.
    resume: Option<String>,
    due: tokio::time::Instant,
    failures: u32,
    refused: bool,
}

impl Census {
    fn new(api: Api<Secret>) -> Self {
        Self {
            api,
            found: Vec::new(),
            resume: None,
            due: tokio::time::Instant::now(),
            failures: 0,
            refused: false,
        }
    }

    /// Whether its last page was refused (403…).
    fn refused(&self) -> bool {
        self.refused
    }

    /// Every Secret carrying `finalizer`, once a listing is due and completes; `None` while
    /// not due or when a page failed.
    async fn take_if_due(&mut self, finalizer: &str) -> Option<Vec<SecretName>> {
        if self.due > tokio::time::Instant::now() {
            return None;
        }
        loop {
            let mut page = ListParams::default().limit(CENSUS_PAGE);
            if let Some(token) = &self.resume {
                page = page.continue_token(token);
            }
            let listed = match self.api.list_metadata(&page).await {
                Ok(listed) => listed,
                Err(error) => {
                    self.failed(&error);
                    return None;
                }
            };
            let carrying = listed
                .items
                .iter()
                .filter(|secret| finalizers::carries(&secret.metadata, finalizer));
            self.found
                .extend(carrying.map(|secret| secret_name(&secret.metadata)));
            match listed.metadata.continue_ {
                Some(token) if !token.is_empty() => self.resume = Some(token),
                _ => {
                    self.resume = None;
                    (self.failures, self.refused) = (0, false);
                    self.due = tokio::time::Instant::now() + CENSUS_INTERVAL;
                    return Some(std::mem::take(&mut self.found));
                }
            }
        }
    }

    /// Waits before the next page: a refusal from 30 s, a passing failure from 1 s, doubling.
    fn failed(&mut self, error: &kube::Error) {
        if matches!(error, kube::Error::Api(status) if status.code == 410) {
            // The continue token expired: the listing starts again.
            (self.resume, self.found) = (None, Vec::new());
        }
        self.failures += 1;
        self.refused = Failure::of(error) == Failure::Refused;
        let first = if self.refused {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1)
        };
        self.due = tokio::time::Instant::now() + doubling_wait(first, self.failures);
        if self.failures == 1 {
            warn!(%error, "could not list Secrets for this shard's protection; trying again from this page after a wait that doubles up to {} min", LONGEST_WAIT.as_secs() / 60);
        } else {
            debug!(%error, failures = self.failures, "the census of Secrets failed again");
        }
    }
}

/// Adds or removes `finalizer`, leaving others' in place.
async fn set_finalizer(
    client: &Client,
    secret: &ObjectMeta,
    (finalizer, present): (&str, bool),
) -> Result<(), kube::Error> {
    let (Some(namespace), Some(name)) = (&secret.namespace, &secret.name) else {
        return Ok(());
    };
    let patch = finalizers::patch(secret, finalizer, present);
    let patched = Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await;
    match patched {
        // Gone: nothing is left to protect or let go.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock;

    use super::*;

    const FINALIZER: &str = "iothub.dynreg.io/credentials-in-use-shard";

    fn answer(status: u16, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    /// A page of Secrets' metadata, each carrying our finalizer.
    fn page(names: &[&str], next: &str) -> Response<Body> {
        let items: Vec<_> = names
            .iter()
            .map(|name| {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                       "metadata": {"name": name, "namespace": "team", "finalizers": [FINALIZER]}})
            })
            .collect();
        answer(
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                   "metadata": {"continue": next}, "items": items}),
        )
    }

    fn failure(code: u16) -> Response<Body> {
        answer(
            code,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "no", "reason": "InternalError", "code": code}),
        )
    }

    /// Defect: a failed page restarted the cluster-wide listing from page 1 at every sweep.
    #[tokio::test(start_paused = true)]
    async fn a_failed_census_page_is_asked_again_after_a_wait_from_where_it_stopped() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let mut census = Census::new(Api::all(Client::new(service, "default")));
        let server = tokio::spawn(async move {
            let mut queries = Vec::new();
            for response in [page(&["a"], "t1"), failure(500), page(&["b"], "")] {
                let (request, send) = handle.next_request().await.unwrap();
                queries.push(request.uri().query().unwrap_or("").to_owned());
                send.send_response(response);
            }
            queries
        });
        assert_eq!(census.take_if_due(FINALIZER).await, None, "page 2 failed");
        assert!(!census.refused(), "a 500 is passing, not a refusal");
        assert_eq!(census.take_if_due(FINALIZER).await, None, "not due yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        let found = census.take_if_due(FINALIZER).await.unwrap();
        let name = |name: &str| ("team".to_owned(), name.to_owned());
        assert_eq!(found, [name("a"), name("b")]);
        let queries = server.await.unwrap();
        assert!(!queries[0].contains("continue"), "{queries:?}");
        assert!(queries[2].contains("continue=t1"), "{queries:?}");
        assert!(census.due >= tokio::time::Instant::now() + CENSUS_INTERVAL / 2);
    }

    /// A refused census waits 30 s, then longer, and says so in the metric.
    #[tokio::test(start_paused = true)]
    async fn a_refused_census_waits_longer_each_time() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let mut census = Census::new(Api::all(Client::new(service, "default")));
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (_, send) = handle.next_request().await.unwrap();
                send.send_response(failure(403));
            }
        });
        let started = tokio::time::Instant::now();
        assert_eq!(census.take_if_due(FINALIZER).await, None);
        assert!(census.refused());
        assert_eq!(census.due - started, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(census.take_if_due(FINALIZER).await, None);
        assert_eq!(census.due - started, Duration::from_secs(90));
        server.await.unwrap();
    }
}
