//! Runs the controller under leader election: reconcile only while holding the Lease, stand by
//! otherwise, and on shutdown finish in-flight reconciles before releasing it.

use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cloud::CloudClient;
use crate::controller::context::Settings;
use crate::controller::run::{RunOptions, Shared, run};
use crate::ops::http::Health;
use crate::ops::leader::{LeaderElector, LeaseSettings};

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
