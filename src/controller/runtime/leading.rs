//! Runs the controller under leader election: reconcile only while holding the Lease, stand by
//! otherwise, and on shutdown finish in-flight reconciles before releasing it.

use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cloud::CloudClient;
use crate::ops::http::Health;
use crate::ops::leader::{LeaderElector, LeaseSettings};

use super::{Settings, Shared, run};

/// How long in-flight reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the controller, under leader election when `lease` is given, until `shutdown` turns true.
pub async fn operate(
    (client, cloud): (Client, CloudClient),
    settings: Settings,
    shared: Shared,
    lease: Option<LeaseSettings>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(lease) = lease else {
        shared.metrics.set_leader(true);
        shared.health.set_leading(true);
        let stopping = shutdown_requested(shutdown);
        run(client, cloud, &settings, &shared, stopping).await;
        return;
    };
    let leader = Leader {
        elector: LeaderElector::new(client.clone(), lease),
        client,
        cloud,
        settings,
        shared,
    };
    loop {
        if !stand_by(&leader.elector, &leader.shared.health, shutdown.clone()).await {
            return;
        }
        match leader.lead(shutdown.clone()).await {
            Ended::LeadershipLost => {
                warn!("lost the Lease: stopped reconciling, standing by");
                continue;
            }
            Ended::ControllerStopped => warn!("the controller stopped by itself"),
            Ended::ShutdownRequested => {}
        }
        match leader.elector.release().await {
            Ok(()) => info!("released the Lease"),
            Err(error) => warn!(%error, "could not release the Lease; it expires by itself"),
        }
        return;
    }
}

/// What a replica leads with.
struct Leader {
    elector: LeaderElector,
    client: Client,
    cloud: CloudClient,
    settings: Settings,
    shared: Shared,
}

impl Leader {
    /// One term of leadership: reconciles until the Lease is lost (everything the term started
    /// stops at once: another replica leads), the controller stops by itself, or shutdown is
    /// requested (in-flight reconciles then finish while the Lease is still renewed).
    async fn lead(&self, shutdown: watch::Receiver<bool>) -> Ended {
        let mut last_renewal = tokio::time::Instant::now();
        info!(identity = %self.elector.settings().identity, "leading: starting to reconcile");
        self.set_leading(true);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopping = async {
            let _ = stopped.await;
        };
        let (client, cloud) = (self.client.clone(), self.cloud.clone());
        let controller = run(client, cloud, &self.settings, &self.shared, stopping);
        tokio::pin!(controller);
        let health = &self.shared.health;
        let ended = tokio::select! {
            () = &mut controller => Ended::ControllerStopped,
            () = keep_leadership(&self.elector, health, &mut last_renewal) => Ended::LeadershipLost,
            () = shutdown_requested(shutdown) => Ended::ShutdownRequested,
        };
        if ended == Ended::ShutdownRequested {
            let _ = stop.send(());
            // Still the leader while in-flight reconciles finish: a stand-by taking over now
            // would call the cloud alongside them, with a rate limiter of its own.
            tokio::select! {
                finished = tokio::time::timeout(SHUTDOWN_GRACE, &mut controller) => {
                    if finished.is_err() {
                        warn!("in-flight reconciles did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
                    }
                }
                () = keep_leadership(&self.elector, health, &mut last_renewal) => {
                    warn!("lost the Lease while finishing in-flight reconciles; stopping them at once");
                }
            }
        }
        self.set_leading(false);
        ended
    }

    fn set_leading(&self, leading: bool) {
        self.shared.metrics.set_leader(leading);
        self.shared.health.set_leading(leading);
    }
}

/// Why a term of leadership ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The controller's run returned by itself (its streams ended): nothing is left to drain.
    ControllerStopped,
    /// The Lease was taken, or could not be renewed in time.
    LeadershipLost,
    /// SIGTERM or SIGINT.
    ShutdownRequested,
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
        match with_deadline(elector).await {
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

/// Renews the Lease; returns when it is lost (taken, or not renewed for two thirds of its
/// duration since `last_renewal`, which it keeps up to date).
async fn keep_leadership(
    elector: &LeaderElector,
    health: &Health,
    last_renewal: &mut tokio::time::Instant,
) {
    loop {
        tokio::time::sleep(elector.settings().renew_interval()).await;
        match with_deadline(elector).await {
            Ok(true) => {
                *last_renewal = tokio::time::Instant::now();
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

/// One try to acquire or renew, abandoned after a renew interval: a request hanging on a dead
/// connection must not keep the holder from noticing that its Lease runs out.
async fn with_deadline(elector: &LeaderElector) -> Result<bool, String> {
    let deadline = elector.settings().renew_interval();
    match tokio::time::timeout(deadline, elector.try_acquire_or_renew()).await {
        Ok(answer) => answer.map_err(|error| error.to_string()),
        Err(_) => Err(format!("no answer from the API server within {deadline:?}")),
    }
}

async fn shutdown_requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|requested| *requested).await;
}
