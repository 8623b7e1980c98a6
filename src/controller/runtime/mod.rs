//! Wiring: one leadership of the controller ([`run`]) opens the [`watches`] and their
//! caches, turns what they see into [`triggers`], admits reconciles queue by queue
//! ([`admission`]), and schedules the next reconcile of each resource ([`requeue`]).
//! [`leading`] runs one leadership after another under leader election; [`shard`] reads the label selector that splits
//! a fleet between Deployments. Everything a leadership starts is polled from its [`run`]: its
//! watches, triggers, reconciles and the protection sweep end with it.

pub mod admission;
pub mod leading;
mod requeue;
pub mod resilient_watch;
mod settings;
pub mod shard;
mod triggers;
mod watches;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tracing::{error, info, warn};

use crate::cloud::CloudClient;
use crate::cloud::observe::Observer;
use crate::controller::cache::Caches;
use crate::controller::cache::index::name_ref;
use crate::controller::credentials::Resolver;
use crate::controller::decision::{CREDENTIALS_IN_USE, Progress};
use crate::controller::reconcile::events::EventPublisher;
use crate::controller::reconcile::{self, Context, Renders};
use crate::controller::resources::{DynamicRegistration, MANAGER};
use crate::ops::http::Health;
use crate::ops::metrics::{Census, Metrics, Tally};
use admission::{Admission, ResourceRef, Urgency};
use requeue::Requeue;
use resilient_watch::WatchBackoff;
use triggers::{Concerned, Hooks};
use watches::Watches;

pub use settings::{InstallScope, Settings};

/// Everything the controller shares with the operations endpoint.
#[derive(Clone)]
pub struct Shared {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// What kube's runner hands every reconcile of a leadership.
struct Leadership {
    ctx: Context,
    admission: Admission,
    requeue: Requeue,
}

/// Runs one leadership of the controller until `shutdown` completes, then lets in-flight reconciles
/// finish; dropping the future (leadership lost) stops everything the leadership started at once.
pub async fn run(
    client: Client,
    cloud: CloudClient,
    settings: &Settings,
    shared: &Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (wake, woken) = unbounded_channel();
    let (claim_changes, changed_claims) = unbounded_channel();
    let (released, no_longer_needed) = unbounded_channel();
    let admission = Admission::new(settings.reconciles_per_source, wake);
    let watches = watches::open(&client, settings, shared.health.clone(), released);
    let beyond_view = secrets_beyond_view(&client, settings);
    let caches = watches.caches.clone();
    let leadership = Arc::new(Leadership {
        ctx: context(
            (client, cloud),
            settings,
            &caches,
            shared,
            claim_changes.clone(),
        ),
        admission: admission.clone(),
        requeue: Requeue::new(settings.requeue),
    });
    let sweep = Arc::new(Notify::new());
    let hooks = Hooks {
        released: claim_changes,
        sweep: sweep.clone(),
        admission,
        in_use_finalizer: leadership.ctx.credentials.in_use_finalizer().to_owned(),
    };
    shared.health.set_watches_established(false);
    // Withdrawn when the leadership ends, also when its future is dropped (leadership lost): the
    // census holds the leadership, which must not outlive it.
    let _census = CensusInstalled::new(&shared.metrics, census(leadership.clone()));
    log_start(settings);
    let controller = controller(
        watches,
        (hooks, woken, changed_claims),
        leadership.clone(),
        shutdown,
    );
    tokio::select! {
        () = controller => {}
        () = leadership.ctx.credentials.release_unused_protection(&sweep, no_longer_needed, (beyond_view, &leadership.ctx.metrics)) => {}
        () = leadership.admission.expire_reservations_periodically() => {}
    }
    shared.health.set_watches_established(false);
    info!("controller stopped");
}

/// Every Secret in the controller's scope, when its Secret watch shows only the shard's.
fn secrets_beyond_view(client: &Client, settings: &Settings) -> Option<Api<Secret>> {
    settings.shard.as_ref()?;
    Some(match &settings.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    })
}

/// The leadership's census in the metrics, for as long as this lives.
struct CensusInstalled<'a>(&'a Metrics);

impl<'a> CensusInstalled<'a> {
    fn new(metrics: &'a Metrics, census: Census) -> Self {
        metrics.set_census(Some(census));
        Self(metrics)
    }
}

impl Drop for CensusInstalled<'_> {
    fn drop(&mut self) {
        self.0.set_census(None);
    }
}

/// The context of a leadership's reconciles.
fn context(
    (client, cloud): (Client, CloudClient),
    settings: &Settings,
    caches: &Arc<Caches>,
    shared: &Shared,
    claim_changes: tokio::sync::mpsc::UnboundedSender<DynamicRegistration>,
) -> Context {
    let credentials = Resolver::new(
        (client.clone(), caches.clone()),
        cloud.clone(),
        settings.credentials.clone(),
        (settings.requeue.stalled, in_use_finalizer(settings)),
    );
    Context {
        events: EventPublisher::new(client.clone(), MANAGER, settings.instance.clone()),
        observer: Observer::new(cloud.clone(), settings.observe_interval),
        inherited_labels: settings
            .shard
            .as_ref()
            .map_or_else(Vec::new, |shard| shard.keys().to_vec()),
        client,
        cloud,
        caches: caches.clone(),
        credentials,
        renders: Renders::default(),
        metrics: shared.metrics.clone(),
        claim_changes,
    }
}

/// The in-use finalizer of this controller: each shard has its own.
fn in_use_finalizer(settings: &Settings) -> String {
    match &settings.shard {
        Some(shard) => shard.protection_finalizer(CREDENTIALS_IN_USE),
        None => CREDENTIALS_IN_USE.to_owned(),
    }
}

fn log_start(settings: &Settings) {
    info!(
        namespace = settings.watch_namespace.as_deref().unwrap_or("(all)"),
        reconciles_per_source = settings.reconciles_per_source,
        label_selector = settings
            .shard
            .as_ref()
            .map_or("(none)", |shard| shard.as_str()),
        "controller starting"
    );
}

/// kube's controller over the leadership's watches and triggers, reconciling through `leadership` until
/// `shutdown`.
fn controller(
    watches: Watches,
    (hooks, woken, changed_claims): (
        Hooks,
        UnboundedReceiver<ResourceRef>,
        UnboundedReceiver<DynamicRegistration>,
    ),
    leadership: Arc<Leadership>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (later, after_grace) = unbounded_channel();
    let concerned = Arc::new(Concerned::new(watches.caches.clone(), later));
    let by = || concerned.clone();
    let (sweep, in_use_finalizer) = (hooks.sweep.clone(), hooks.in_use_finalizer.clone());
    let permits = leadership.admission.permits();
    Controller::for_stream(
        triggers::resources(watches.resources, hooks),
        watches.caches.resources.clone(),
    )
    .watches_stream(
        triggers::secrets(watches.secrets, (sweep, in_use_finalizer)),
        {
            let concerned = by();
            move |secret| concerned.by_secret(secret)
        },
    )
    .watches_stream(triggers::after_grace(after_grace), {
        let concerned = by();
        move |secret| concerned.by_secret_after_grace(secret)
    })
    .watches_stream(triggers::woken(woken), |woken| {
        vec![ObjectRef::new(&woken.name_any()).within(&woken.namespace().unwrap_or_default())]
    })
    .watches_stream(triggers::claim_changes(changed_claims), {
        let concerned = by();
        move |changed| concerned.by_claim(&changed)
    })
    .watches_stream(
        triggers::cluster_credentials(watches.cluster_credentials),
        {
            let concerned = by();
            move |declared| concerned.by_cluster_credentials(&declared)
        },
    )
    .watches_stream(triggers::namespaces(watches.namespaces), {
        let concerned = by();
        move |namespace| concerned.by_namespace(&namespace)
    })
    .with_config(controller::Config::default().concurrency(runner_slots(permits)))
    .trigger_backoff(WatchBackoff::default())
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, leadership)
    .for_each(|result| async move { log_failure(result) })
}

/// Logs what went wrong in kube's controller: a failed watch (retried), or a reconcile the
/// runner could not run.
fn log_failure<T>(result: Result<T, controller::Error<reconcile::Error, watcher::Error>>) {
    match result {
        Err(controller::Error::QueueError(error)) if watch_forbidden(&error) => error!(
            %error,
            "a watch is forbidden by the controller's RBAC: retried, and the controller stays unready until it is allowed (installed with a Role in one namespace, run it with --install-scope namespace)"
        ),
        Err(error) => warn!(%error, "controller event"),
        Ok(_) => {}
    }
}

/// A list or watch the API server refused for want of RBAC.
fn watch_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.is_forbidden(),
        watcher::Error::WatchError(status) => status.is_forbidden(),
        _ => false,
    }
}

/// Admits the reconcile of `resource` in its queue (or parks it there), reconciles it as it is
/// once admitted, and schedules the next.
async fn reconcile(
    resource: Arc<DynamicRegistration>,
    leadership: Arc<Leadership>,
) -> reconcile::Result<Action> {
    let urgency = if resource.awaited_by_person() {
        Urgency::Awaited
    } else {
        Urgency::Backlog
    };
    // By namespace and name only: a parked resource is held by this name, so no more.
    let object = name_ref(&*resource);
    let source = resource.credentials_source();
    let Some(_admitted) = leadership.admission.enter(source, urgency, object.clone()) else {
        // Parked in its queue: reconciled again when a permit is reserved for it.
        return Ok(Action::await_change());
    };
    // Woken after waiting: act on the resource as it is now (gone: nothing to do).
    let Some(resource) = leadership.ctx.caches.resources.get(&object) else {
        return Ok(Action::await_change());
    };
    // Boxed: a reconcile that only parks its resource stays small (tens of thousands start at
    // once after a restart); the whole reconcile's state is allocated once it has a permit.
    let progress = Box::pin(reconcile::reconcile(&resource, &leadership.ctx)).await?;
    Ok(match progress {
        None => Action::await_change(),
        Some(progress) => leadership.requeue_after(&resource, progress),
    })
}

/// Called by kube's runner when [`reconcile`] returns an error (a Kubernetes API failure).
fn error_policy(
    resource: Arc<DynamicRegistration>,
    error: &reconcile::Error,
    leadership: Arc<Leadership>,
) -> Action {
    warn!(
        %error,
        namespace = resource.namespace().as_deref().unwrap_or(""),
        name = %resource.name_any(),
        "reconcile failed; retrying with backoff"
    );
    leadership.requeue_after(&resource, Progress::Retrying)
}

impl Leadership {
    fn requeue_after(&self, resource: &DynamicRegistration, progress: Progress) -> Action {
        let resources = &self.ctx.caches.resources;
        let exists = |other: &ResourceRef| resources.get(other).is_some();
        self.requeue
            .after(&ObjectRef::from_obj(resource), progress, exists)
    }
}

/// How many reconciles kube's runner holds at once. Reconciles wait for a permit in the queue of
/// their credentials (admission), and one that finds its queue full ends at once (parked), so
/// the runner holds mostly admitted reconciles waiting for their account's quota: room for
/// [`QUEUES_BUSY_AT_ONCE`] full queues means that many accounts busy together never wait for
/// each other's backlog (more share the room). Unbounded, the burst at start (every resource
/// triggered at once, nearly all parked) would size the runner's table for the whole fleet, and
/// it never shrinks.
fn runner_slots(places_per_queue: usize) -> u16 {
    let slots = places_per_queue.saturating_mul(QUEUES_BUSY_AT_ONCE);
    u16::try_from(slots).unwrap_or(u16::MAX)
}

/// Accounts (credentials and region) whose backlogs kube's runner holds at once.
const QUEUES_BUSY_AT_ONCE: usize = 8;

/// The Ready reason of every resource in the cache, and the age of the oldest observation a
/// Ready one rests on, for the metrics.
fn census(leadership: Arc<Leadership>) -> Census {
    Box::new(move || {
        let caches = &leadership.ctx.caches;
        let resources = caches.resources.state();
        let reasons = resources
            .iter()
            .map(|resource| {
                resource
                    .condition("Ready")
                    .map_or_else(|| "Unknown".to_owned(), |ready| ready.reason.clone())
            })
            .collect();
        let oldest_ready_observation = caches
            .observations
            .oldest_ready_age(resources.iter().map(|resource| &**resource));
        Tally {
            reasons,
            oldest_ready_observation,
            waiting: leadership.admission.waiting_by_queue(),
            credentials_backing_off: leadership.ctx.credentials.backing_off(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_holds_eight_full_queues() {
        assert_eq!(runner_slots(256), 2048);
        assert_eq!(runner_slots(1), 8);
        assert_eq!(runner_slots(10_000), u16::MAX, "bounded by what kube takes");
    }
}
