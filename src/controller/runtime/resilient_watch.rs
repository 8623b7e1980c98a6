//! Watches that recover within seconds when kube-apiserver goes away and comes back, as it does
//! at every control-plane upgrade.
//!
//! kube-runtime's default backoff (from client-go: 0.8 s doubling to 30 s, reset after 2 min of
//! calm) is kind to a struggling API server, but after an 8 s restart it left the controller
//! blind for about a minute: the reconnect waited up to half a minute, and the `410 Gone` that a
//! resumed watch gets from a restarted server cost another backoff before the list. Here a
//! `410 Gone` re-lists at once (the watcher has already dropped its resourceVersion), and lost
//! connections are retried after at most [`WATCH_RETRY_MAX`] ([`WatchBackoff`], which must be
//! the controller's `trigger_backoff`: kube's controller backs its trigger streams off with the
//! default policy otherwise, on top of whatever the streams do themselves).

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use rand::Rng;
use serde::de::DeserializeOwned;
use tracing::info;

/// First retry of a lost watch connection.
pub const WATCH_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between retries: one list and watch per kind every 2 s is no load for an API
/// server, and a restart costs seconds, not a minute.
pub const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// A watch of `api` that re-lists at once after `410 Gone`; other errors go on to the
/// controller, which retries after a [`WatchBackoff`].
pub fn resilient_watch<K>(
    api: Api<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    resilient_watch_with(api, watcher::Config::default())
}

/// [`resilient_watch`] with a watch configuration (e.g. a field selector).
pub fn resilient_watch_with<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config).filter(|event| std::future::ready(!is_gone(event)))
}

/// `410 Gone`: the resourceVersion to resume from is no longer served. The watcher lists again
/// on its next poll; passing the error on would only add a backoff before that.
fn is_gone<K>(event: &Result<watcher::Event<K>, watcher::Error>) -> bool {
    let gone = matches!(event, Err(watcher::Error::WatchError(status)) if status.code == 410);
    if gone {
        info!("watch resumed too late (410 Gone): listing again");
    }
    gone
}

/// Retries doubling from [`WATCH_RETRY_FIRST`] to [`WATCH_RETRY_MAX`], each jittered down by up
/// to half so that replicas do not reconnect in step; reset by every event received.
#[derive(Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: WATCH_RETRY_FIRST,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.next = (self.next * 2).min(WATCH_RETRY_MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_quickly_and_never_wait_longer_than_the_cap() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(10).collect();
        assert!(delays[0] <= WATCH_RETRY_FIRST);
        assert!(delays.iter().all(|delay| *delay <= WATCH_RETRY_MAX));
        // Ten failed reconnects take at most about 16 s, not the minutes of client-go's curve.
        assert!(delays.iter().sum::<Duration>() <= Duration::from_secs(17));
        backoff.reset();
        assert!(backoff.next().unwrap() <= WATCH_RETRY_FIRST);
    }
}
