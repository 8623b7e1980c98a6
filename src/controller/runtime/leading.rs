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

/// Runs the controller, under leader election when `lease` is given (with the client that renews
/// it), until `shutdown` turns true.
pub async fn operate(
    (client, cloud): (Client, CloudClient),
    settings: Settings,
    shared: Shared,
    lease: Option<(LeaseSettings, Client)>,
    shutdown: watch::Receiver<bool>,
) {
    let Some((lease, lease_client)) = lease else {
        shared.metrics.set_leader(true);
        shared.health.set_leading(true);
        let stopping = shutdown_requested(shutdown);
        run(client, cloud, &settings, &shared, stopping).await;
        return;
    };
    let leader = Leader {
        elector: LeaderElector::new(lease_client, lease),
        client,
        cloud,
        settings,
        shared,
    };
    loop {
        let Some(acquired) =
            stand_by(&leader.elector, &leader.shared.health, shutdown.clone()).await
        else {
            return;
        };
        match leader.lead(acquired, shutdown.clone()).await {
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
    /// One leadership, the Lease `acquired` then: reconciles until the Lease is lost (everything the leadership started
    /// stops at once: another replica leads), the controller stops by itself, or shutdown is
    /// requested (in-flight reconciles then finish while the Lease is still renewed).
    async fn lead(&self, acquired: tokio::time::Instant, shutdown: watch::Receiver<bool>) -> Ended {
        let mut last_renewal = acquired;
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

/// Why a leadership ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The controller's run returned by itself (its streams ended): nothing is left to drain.
    ControllerStopped,
    /// The Lease was taken, or could not be renewed in time.
    LeadershipLost,
    /// SIGTERM or SIGINT.
    ShutdownRequested,
}

/// Waits for the Lease; when the winning try was sent (what the Lease runs from), or `None`
/// when shutdown came first.
async fn stand_by(
    elector: &LeaderElector,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) -> Option<tokio::time::Instant> {
    loop {
        if *shutdown.borrow() {
            return None;
        }
        let sent = tokio::time::Instant::now();
        match with_deadline(elector).await {
            Ok(true) => {
                health.lease_checked();
                return Some(sent);
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
    let settings = elector.settings();
    let timing = (settings.renew_interval(), settings.lease_duration);
    renew_until_lost(|| with_deadline(elector), timing, health, last_renewal).await;
}

/// [`keep_leadership`] with the renewal given: `renew` is one try, every `renew_interval`.
/// Leadership ends by a timer, at two thirds of the Lease after the last successful renewal was
/// sent, whatever a try in flight is doing: a stand-by takes over once it has seen the Lease
/// unchanged for the whole Lease, counting from when it saw it change, which is never before
/// the renewal was sent.
async fn renew_until_lost<F, Fut>(
    mut renew: F,
    (renew_interval, lease_duration): (Duration, Duration),
    health: &Health,
    last_renewal: &mut tokio::time::Instant,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    loop {
        let deadline = *last_renewal + lease_duration * 2 / 3;
        let attempt = async {
            tokio::time::sleep(renew_interval).await;
            let sent = tokio::time::Instant::now();
            (sent, renew().await)
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            (sent, answer) = attempt => match answer {
                Ok(true) => {
                    *last_renewal = sent;
                    health.lease_checked();
                }
                Ok(false) => return,
                Err(error) => warn!(%error, "leader election: renewal failed"),
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const RENEW: Duration = Duration::from_secs(1);
    const LEASE: Duration = Duration::from_secs(3);

    /// Renewals that fail just before their deadline: the leader must stop by two thirds of the
    /// Lease after its last renewal, whatever the tries are doing, since a stand-by may take
    /// over once the whole Lease has passed.
    #[tokio::test(start_paused = true)]
    async fn a_leader_stops_by_two_thirds_of_the_lease_whatever_slow_renewals_do() {
        let health = Health::new(Some(RENEW));
        let start = Instant::now();
        let mut last_renewal = start;
        let failing_slowly = || async {
            tokio::time::sleep(Duration::from_millis(950)).await;
            Err("no answer".to_owned())
        };
        renew_until_lost(failing_slowly, (RENEW, LEASE), &health, &mut last_renewal).await;
        let stopped = start.elapsed();
        assert!(
            stopped <= LEASE * 2 / 3,
            "still leading {stopped:?} after the last renewal"
        );
    }

    /// A renewal that succeeds slowly counts from when it was sent: the Lease was written at
    /// some moment between sending and the answer, and stand-bys count from when they see it.
    #[tokio::test(start_paused = true)]
    async fn a_slow_renewal_counts_from_when_it_was_sent() {
        let health = Health::new(Some(RENEW));
        let start = Instant::now();
        let mut last_renewal = start;
        let mut tries = 0;
        let slow_then_hanging = || {
            tries += 1;
            let first = tries == 1;
            async move {
                if first {
                    tokio::time::sleep(Duration::from_millis(950)).await;
                    Ok(true)
                } else {
                    tokio::time::sleep(RENEW).await;
                    Err("no answer".to_owned())
                }
            }
        };
        renew_until_lost(
            slow_then_hanging,
            (RENEW, LEASE),
            &health,
            &mut last_renewal,
        )
        .await;
        let sent = start + RENEW;
        assert!(
            last_renewal <= sent + Duration::from_millis(1),
            "the renewal counted from its answer"
        );
        assert!(
            Instant::now() <= sent + LEASE * 2 / 3,
            "still leading {:?} after the renewal was sent",
            Instant::now() - sent
        );
    }
}
