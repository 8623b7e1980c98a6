//! Wires the watches, the reconciler and the shared context into a running controller.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use std::time::Duration;

use tokio::sync::watch;

use crate::cloud::CloudClient;
use crate::context::{Context, Settings};
use crate::crd::{DynamicRegistration, MANAGER};
use crate::http::Health;
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch one namespace instead of the whole cluster.
    pub watch_namespace: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Name of this replica, for Events (the pod name).
    pub instance: Option<String>,
}

/// Everything the controller shares with the operations endpoint.
#[derive(Clone)]
pub struct Shared {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// Runs the controller until `shutdown` completes, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    cloud: CloudClient,
    settings: Settings,
    options: RunOptions,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (registrations, secrets) = match &options.watch_namespace {
        Some(namespace) => (
            Api::<DynamicRegistration>::namespaced(client.clone(), namespace),
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (reader, writer) = reflector::store();
    // Readiness comes from the watch stream itself: kube's `Store::wait_until_ready` wakes only
    // one of several waiters, and the controller runtime is one of them already.
    let (cache_ready, cache_ready_rx) = watch::channel(false);
    let health = shared.health.clone();
    let mark_ready = move |event: &Result<watcher::Event<DynamicRegistration>, watcher::Error>| {
        if matches!(event, Ok(watcher::Event::InitDone)) && !*cache_ready.borrow() {
            info!("watches established");
            let _ = cache_ready.send(true);
            health.watches_established();
        }
    };
    // Only spec changes and lifecycle changes trigger: our own status writes must not.
    let resources = watcher(registrations, watcher::Config::default())
        .default_backoff()
        // managedFields can be larger than the rest of the object; nothing here reads them.
        .modify(|resource| resource.managed_fields_mut().clear())
        .reflect(writer)
        .inspect(mark_ready)
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, Default::default());
    // Secrets are watched by metadata only: their data never needs to sit in this process.
    let secret_changes = watcher(secrets, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: options.instance.clone(),
        },
    );
    shared.health.set_watches(Some(reader.clone()));
    let context = Arc::new(Context::new(
        client,
        cloud,
        recorder,
        settings,
        reader.clone(),
        cache_ready_rx,
        shared.metrics.clone(),
    ));
    info!(
        namespace = options.watch_namespace.as_deref().unwrap_or("(all)"),
        concurrency = options.concurrency,
        "controller starting"
    );
    Controller::for_stream(resources, reader.clone())
        .watches_stream(secret_changes, move |secret| {
            affected_by_secret(&reader, &secret)
        })
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "controller event");
            }
        })
        .await;
    shared.health.set_watches(None);
    info!("controller stopped");
}

/// How long in-flight reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the controller, under leader election when `lease` is given, until `shutdown` turns true.
pub async fn operate(
    client: Client,
    cloud: CloudClient,
    settings: Settings,
    options: RunOptions,
    shared: Shared,
    lease: Option<LeaseSettings>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(lease) = lease else {
        shared.metrics.set_leader(true);
        shared.health.set_leading(true);
        run(
            client,
            cloud,
            settings,
            options,
            shared,
            shutdown_requested(shutdown),
        )
        .await;
        return;
    };
    let elector = LeaderElector::new(client.clone(), lease);
    loop {
        if !stand_by(&elector, &shared.health, shutdown.clone()).await {
            return;
        }
        info!(identity = %elector.settings().identity, "leading: starting to reconcile");
        shared.metrics.set_leader(true);
        shared.health.set_leading(true);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let controller = run(
            client.clone(),
            cloud.clone(),
            settings.clone(),
            options.clone(),
            shared.clone(),
            async {
                let _ = stopped.await;
            },
        );
        tokio::pin!(controller);
        let shutting_down = tokio::select! {
            () = &mut controller => true,
            () = keep_leadership(&elector, &shared.health) => false,
            () = shutdown_requested(shutdown.clone()) => true,
        };
        shared.metrics.set_leader(false);
        shared.health.set_leading(false);
        if !shutting_down {
            // Dropping the controller aborts its reconciles at once: another replica leads now.
            warn!("lost the Lease: stopped reconciling, standing by");
            continue;
        }
        let _ = stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut controller)
            .await
            .is_err()
        {
            warn!("in-flight reconciles did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        match elector.release().await {
            Ok(()) => info!("released the Lease"),
            Err(error) => warn!(%error, "could not release the Lease; it expires by itself"),
        }
        return;
    }
}

/// Waits for the Lease; `false` when shutdown came first.
async fn stand_by(
    elector: &LeaderElector,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    loop {
        if *shutdown.borrow() {
            return false;
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => {
                health.lease_checked();
                return true;
            }
            Ok(false) => health.lease_checked(),
            Err(error) => warn!(%error, "leader election: cannot read or write the Lease"),
        }
        let pause = elector.settings().renew_interval();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Renews the Lease; returns when it is lost (taken, or not renewed within its duration).
async fn keep_leadership(elector: &LeaderElector, health: &Health) {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(elector.settings().renew_interval()).await;
        match elector.try_acquire_or_renew().await {
            Ok(true) => {
                last_renewal = tokio::time::Instant::now();
                health.lease_checked();
            }
            Ok(false) => return,
            Err(error) => warn!(%error, "leader election: renewal failed"),
        }
        // Stop before the Lease can expire in others' eyes, not after.
        if last_renewal.elapsed() >= elector.settings().lease_duration * 2 / 3 {
            return;
        }
    }
}

async fn shutdown_requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|requested| *requested).await;
}

/// Generation (spec), deletion and finalizers: the changes a reconcile must see.
fn spec_or_lifecycle(resource: &DynamicRegistration) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    resource.metadata.generation.hash(&mut hasher);
    resource
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    resource.finalizers().hash(&mut hasher);
    Some(hasher.finish())
}

/// The resources a Secret change concerns: its owner (a published Secret edited or deleted),
/// those publishing under its name (a foreign Secret removed), and those using it as credentials
/// (rotated keys).
fn affected_by_secret(
    registrations: &Store<DynamicRegistration>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DynamicRegistration>> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let kind = DynamicRegistration::kind(&());
    let mut affected: Vec<ObjectRef<DynamicRegistration>> = secret
        .owner_references()
        .iter()
        .filter(|owner| owner.controller == Some(true) && owner.kind == kind)
        .map(|owner| ObjectRef::new(&owner.name).within(&namespace))
        .collect();
    for resource in registrations.state() {
        if resource.namespace().as_deref() != Some(namespace.as_str()) {
            continue;
        }
        let uses = resource
            .spec
            .credentials_secret_ref
            .as_ref()
            .is_some_and(|reference| reference.name == name);
        if uses || resource.published_secret_name() == name {
            affected.push(ObjectRef::from_obj(&*resource));
        }
    }
    affected.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    affected.dedup();
    affected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        DeletionPolicy, DynamicRegistrationSpec, ManagementPolicy, RegistrationMode,
        SecretReference,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn registration(name: &str, namespace: &str, credentials: &str) -> DynamicRegistration {
        let mut resource = DynamicRegistration::new(
            name,
            DynamicRegistrationSpec {
                product_id: format!("P-{name}"),
                region: "ap-guangzhou".into(),
                register_type: RegistrationMode::AutoCreate,
                register_limit: 1,
                credentials_secret_ref: Some(SecretReference {
                    name: credentials.into(),
                }),
                secret_name: None,
                management_policy: ManagementPolicy::Full,
                deletion_policy: DeletionPolicy::Orphan,
                suspend: false,
            },
        );
        resource.metadata.namespace = Some(namespace.into());
        resource
    }

    fn secret(name: &str, namespace: &str, owner: Option<&str>) -> PartialObjectMeta<Secret> {
        let mut meta = kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        };
        if let Some(owner) = owner {
            meta.owner_references = Some(vec![OwnerReference {
                api_version: "iothub.dynreg.io/v1alpha1".into(),
                kind: "DynamicRegistration".into(),
                name: owner.into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
        PartialObjectMeta {
            types: None,
            metadata: meta,
            _phantom: Default::default(),
        }
    }

    fn names(refs: Vec<ObjectRef<DynamicRegistration>>) -> Vec<String> {
        refs.into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect()
    }

    #[test]
    fn secret_changes_reach_owners_referrers_and_namesakes() {
        let (reader, mut writer) = reflector::store();
        for resource in [
            registration("a", "fleet", "shared-creds"),
            registration("b", "fleet", "shared-creds"),
            registration("c", "other", "shared-creds"),
            registration("d", "fleet", "own-creds"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(resource));
        }
        // Rotated credentials: every user in that namespace, none elsewhere.
        assert_eq!(
            names(affected_by_secret(
                &reader,
                &secret("shared-creds", "fleet", None)
            )),
            ["fleet/a", "fleet/b"]
        );
        // A published Secret edited or deleted: its owner.
        assert_eq!(
            names(affected_by_secret(
                &reader,
                &secret("d-product-secret", "fleet", Some("d"))
            )),
            ["fleet/d"]
        );
        // A foreign Secret under a published name removed: the resource that wants the name.
        assert_eq!(
            names(affected_by_secret(
                &reader,
                &secret("a-product-secret", "fleet", None)
            )),
            ["fleet/a"]
        );
        assert!(affected_by_secret(&reader, &secret("unrelated", "fleet", None)).is_empty());
    }

    #[test]
    fn status_writes_do_not_trigger_but_spec_and_lifecycle_do() {
        let mut resource = registration("a", "fleet", "creds");
        resource.metadata.generation = Some(1);
        let before = spec_or_lifecycle(&resource);
        resource.status = Some(Default::default());
        resource.metadata.resource_version = Some("99".into());
        assert_eq!(spec_or_lifecycle(&resource), before, "status-only change");
        resource.metadata.generation = Some(2);
        let after_spec = spec_or_lifecycle(&resource);
        assert_ne!(after_spec, before);
        resource.metadata.finalizers = Some(vec!["x".into()]);
        assert_ne!(spec_or_lifecycle(&resource), after_spec);
    }
}
