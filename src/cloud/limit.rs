//! Client-side rate limiting: one bucket per (endpoint, SecretId, action).
//!
//! Each bucket hands out send slots spaced evenly, first come first served. A caller reserves the
//! next free slot under a lock and sleeps until it, so waiters form a queue without waking each
//! other, and the whole thing runs on tokio's clock (testable with paused time). Spacing rather
//! than bursting keeps the promise "never more than the limit in any one-second window" for every
//! window, not only for windows aligned to whole seconds.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::wire::Action;

/// The cloud's documented limit for each of our actions.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 20;

/// Slack added to each one-second window, so that scheduling and network jitter between our send
/// and the cloud's count cannot bring `limit + 1` requests into one second at the cloud's side.
/// Measured on a loaded 2-core machine, 10 ms was not enough (21 arrivals in a second); 50 ms
/// costs 5% of throughput and has held since.
pub const WINDOW_GUARD: Duration = Duration::from_millis(50);

/// Requests per second allowed for each action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    per_action: HashMap<Action, u32>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_action: Action::ALL
                .into_iter()
                .map(|action| (action, DEFAULT_REQUESTS_PER_SECOND))
                .collect(),
        }
    }
}

impl RateLimits {
    /// Overrides the limit of one action.
    pub fn set(&mut self, limit: ActionRateLimit) {
        self.per_action.insert(limit.action, limit.per_second);
    }

    /// The same limit for every action (benchmarks scale time with this).
    pub fn uniform(per_second: u32) -> Self {
        Self {
            per_action: Action::ALL
                .into_iter()
                .map(|action| (action, per_second.max(1)))
                .collect(),
        }
    }

    /// Requests per second allowed for `action`.
    pub fn per_second(&self, action: Action) -> u32 {
        self.per_action
            .get(&action)
            .copied()
            .unwrap_or(DEFAULT_REQUESTS_PER_SECOND)
    }
}

/// One `ACTION=RPS` setting, as given to `--rate-limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionRateLimit {
    /// The action.
    pub action: Action,
    /// Requests per second, at least 1.
    pub per_second: u32,
}

impl FromStr for ActionRateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, rate) = text
            .split_once('=')
            .ok_or_else(|| format!("expected ACTION=RPS, got {text:?}"))?;
        let action = Action::from_name(name.trim()).ok_or_else(|| {
            let known: Vec<_> = Action::ALL.iter().map(|action| action.as_str()).collect();
            format!(
                "unknown action {name:?}; expected one of {}",
                known.join(", ")
            )
        })?;
        let per_second: u32 = rate
            .trim()
            .parse()
            .map_err(|_| format!("rate for {name} must be a whole number, got {rate:?}"))?;
        if per_second == 0 {
            return Err(format!(
                "rate for {name} must be at least 1 request per second"
            ));
        }
        Ok(Self { action, per_second })
    }
}

/// Identifies a bucket. Different endpoints and different keys have separate quotas at the cloud.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// Endpoint host (and port).
    pub endpoint: String,
    /// The SecretId the quota belongs to.
    pub secret_id: String,
    /// The action, each of which has its own quota.
    pub action: Action,
}

impl fmt::Debug for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.endpoint, self.secret_id, self.action)
    }
}

/// Which queue a call waits in. Priority calls (a person's spec change) are served before bulk
/// ones (a backlog of new resources, resyncs), at most four in a row while bulk calls wait, so
/// neither starves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Served first.
    Priority,
    /// Everything else.
    Bulk,
}

/// Consecutive priority slots handed out while bulk calls wait.
const PRIORITY_STREAK: u32 = 4;

/// The buckets of one client, created on first use.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<BucketKey, Arc<Bucket>>>,
}

impl RateLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a send slot in the bucket of `key`; returns how long it waited.
    pub async fn acquire(&self, key: &BucketKey, lane: Lane) -> Duration {
        let bucket = self.bucket(key);
        bucket.acquire(lane).await
    }

    fn bucket(&self, key: &BucketKey) -> Arc<Bucket> {
        // A poisoned lock only means another thread panicked while inserting; the map is still
        // usable, so carry on rather than take the controller down.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Bucket::new(self.limits.per_second(key.action))))
            .clone()
    }
}

/// Evenly spaced send slots, handed to waiting callers by lane.
#[derive(Debug)]
pub struct Bucket {
    spacing: Duration,
    state: Mutex<BucketState>,
}

#[derive(Debug, Default)]
struct BucketState {
    next_free: Option<Instant>,
    priority: VecDeque<oneshot::Sender<()>>,
    bulk: VecDeque<oneshot::Sender<()>>,
    dispatching: bool,
    priority_streak: u32,
}

impl BucketState {
    fn next_waiter(&mut self) -> Option<oneshot::Sender<()>> {
        let bulk_waiting = !self.bulk.is_empty();
        if !self.priority.is_empty() && (self.priority_streak < PRIORITY_STREAK || !bulk_waiting) {
            self.priority_streak += 1;
            return self.priority.pop_front();
        }
        self.priority_streak = 0;
        self.bulk.pop_front().or_else(|| self.priority.pop_front())
    }

    fn take_slot(&mut self, now: Instant, spacing: Duration) -> Instant {
        let slot = self.next_free.map_or(now, |next| next.max(now));
        self.next_free = Some(slot + spacing);
        slot
    }
}

impl Bucket {
    /// At most `per_second` slots in any window of one second (plus [`WINDOW_GUARD`]).
    pub fn new(per_second: u32) -> Self {
        let window = Duration::from_secs(1) + WINDOW_GUARD;
        Self {
            spacing: window / per_second.max(1),
            state: Mutex::new(BucketState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BucketState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot in `lane`; returns the time waited.
    pub async fn acquire(self: &Arc<Self>, lane: Lane) -> Duration {
        let arrived = Instant::now();
        let turn = {
            let mut state = self.state();
            let idle = state.priority.is_empty() && state.bulk.is_empty();
            if idle && state.next_free.is_none_or(|next| next <= arrived) {
                state.take_slot(arrived, self.spacing);
                return Duration::ZERO;
            }
            let (notify, turn) = oneshot::channel();
            match lane {
                Lane::Priority => state.priority.push_back(notify),
                Lane::Bulk => state.bulk.push_back(notify),
            }
            if !state.dispatching {
                state.dispatching = true;
                tokio::spawn(self.clone().dispatch());
            }
            turn
        };
        // The dispatcher only goes away with the runtime; either way the wait is over.
        let _ = turn.await;
        arrived.elapsed()
    }

    /// Hands out slots one at a time, choosing the waiter just before each slot comes due, so
    /// a priority call that arrives while a backlog waits is served within a slot or two.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let (waiter, slot) = {
                let mut state = self.state();
                let Some(waiter) = state.next_waiter() else {
                    state.dispatching = false;
                    return;
                };
                let slot = state.take_slot(Instant::now(), self.spacing);
                (waiter, slot)
            };
            tokio::time::sleep_until(slot).await;
            // A waiter that gave up (its reconcile was dropped) wastes its slot: harmless.
            let _ = waiter.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_limit_flags() {
        let limit: ActionRateLimit = "UpdateProductDynamicRegister=5".parse().unwrap();
        assert_eq!(limit.action, Action::UpdateProductDynamicRegister);
        assert_eq!(limit.per_second, 5);
        let mut limits = RateLimits::default();
        limits.set(limit);
        assert_eq!(limits.per_second(Action::UpdateProductDynamicRegister), 5);
        assert_eq!(limits.per_second(Action::DescribeProduct), 20);

        for bad in [
            "Nope=3",
            "DescribeProduct",
            "DescribeProduct=0",
            "DescribeProduct=x",
        ] {
            assert!(bad.parse::<ActionRateLimit>().is_err(), "{bad}");
        }
        let message = "Bogus=1".parse::<ActionRateLimit>().unwrap_err();
        assert!(message.contains("DescribeProducts"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn first_request_does_not_wait() {
        let bucket = Arc::new(Bucket::new(20));
        assert_eq!(bucket.acquire(Lane::Bulk).await, Duration::ZERO);
        assert!(bucket.acquire(Lane::Bulk).await > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_priority_call_overtakes_a_backlog_without_starving_it() {
        let bucket = Arc::new(Bucket::new(20));
        let start = Instant::now();
        let backlog: Vec<_> = (0..200)
            .map(|_| {
                let bucket = bucket.clone();
                tokio::spawn(async move { bucket.acquire(Lane::Bulk).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let waited = bucket.acquire(Lane::Priority).await;
        // 200 bulk calls queued ahead would mean 8 more seconds; priority takes a slot or two.
        assert!(waited <= bucket.spacing * 2, "priority waited {waited:?}");
        // A stream of priority calls still lets bulk calls through.
        let priority: Vec<_> = (0..40)
            .map(|_| {
                let bucket = bucket.clone();
                tokio::spawn(async move { bucket.acquire(Lane::Priority).await })
            })
            .collect();
        for task in priority {
            task.await.unwrap();
        }
        let bulk_served = backlog.iter().filter(|task| task.is_finished()).count();
        assert!(bulk_served >= 40 + 8, "bulk starved: {bulk_served} served");
        for task in backlog {
            task.await.unwrap();
        }
        // All 241 calls at the limit: about 241 × 52.5 ms.
        assert!(
            start.elapsed() <= Duration::from_millis(241 * 53),
            "{:?}",
            start.elapsed()
        );
    }
}
