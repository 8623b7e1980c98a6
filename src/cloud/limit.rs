//! Client-side rate limiting: one bucket per (endpoint, SecretId, service, action).
//!
//! Each bucket hands out send slots spaced evenly, first come first served, and runs on tokio's
//! clock (testable with paused time). The cloud counts requests when they reach it, which is
//! some time between our send and our reading of the answer: network and scheduling jitter can
//! bunch requests sent evenly. So a bucket also holds each slot as a [`Permit`] until the call is
//! over, and gives slot `n` only one second after every call up to `n - limit` was over. Then
//! no window of one second, sliding or aligned, can see more than `limit` of our requests
//! arrive, whatever the jitter; the price is the round trip, once per `limit` calls.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::service::Service;
use super::wire::Action;

/// The cloud's documented limit for each of our actions.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 20;

/// The cloud's window.
const WINDOW: Duration = Duration::from_secs(1);

/// Requests per second allowed for each action of each service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    per_action: HashMap<(Service, Action), u32>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::uniform(DEFAULT_REQUESTS_PER_SECOND)
    }
}

impl RateLimits {
    /// Overrides the limit of one action: of its service if the setting names one, else of
    /// every service that serves it.
    pub fn set(&mut self, limit: ActionRateLimit) {
        for service in Service::ALL {
            if limit.service.is_none_or(|named| named == service) && service.serves(limit.action) {
                self.per_action
                    .insert((service, limit.action), limit.per_second);
            }
        }
    }

    /// The same limit for every action (benchmarks scale time with this).
    pub fn uniform(per_second: u32) -> Self {
        Self {
            per_action: Service::all_actions()
                .map(|key| (key, per_second.max(1)))
                .collect(),
        }
    }

    /// Requests per second allowed for `action` of `service`.
    pub fn per_second(&self, service: Service, action: Action) -> u32 {
        self.per_action
            .get(&(service, action))
            .copied()
            .unwrap_or(DEFAULT_REQUESTS_PER_SECOND)
    }
}

/// One `[SERVICE:]ACTION=RPS` setting, as given to `--rate-limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionRateLimit {
    /// The service, or every service that serves the action.
    pub service: Option<Service>,
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
            .ok_or_else(|| format!("expected [SERVICE:]ACTION=RPS, got {text:?}"))?;
        let (service, name) = match name.split_once(':') {
            Some((service, action)) => (Some(service.parse::<Service>()?), action),
            None => (None, name),
        };
        let action = Action::from_name(name.trim()).ok_or_else(|| {
            let known: Vec<_> = Action::ALL.iter().map(|action| action.as_str()).collect();
            format!(
                "unknown action {name:?}; expected one of {}",
                known.join(", ")
            )
        })?;
        if let Some(service) = service
            && !service.serves(action)
        {
            return Err(format!("{service} has no action {action}"));
        }
        let per_second: u32 = rate
            .trim()
            .parse()
            .map_err(|_| format!("rate for {name} must be a whole number, got {rate:?}"))?;
        if per_second == 0 {
            return Err(format!(
                "rate for {name} must be at least 1 request per second"
            ));
        }
        Ok(Self {
            service,
            action,
            per_second,
        })
    }
}

/// Identifies a bucket. Different endpoints and different keys have separate quotas at the cloud.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// Endpoint host (and port).
    pub endpoint: String,
    /// The SecretId the quota belongs to.
    pub secret_id: String,
    /// The service of the action: the same action name in two services is two quotas.
    pub service: Service,
    /// The action, each of which has its own quota.
    pub action: Action,
}

impl fmt::Debug for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.endpoint, self.secret_id, self.service, self.action
        )
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

    /// Waits for a send slot in the bucket of `key`. Hold the permit until the call's answer
    /// was read (or the call failed).
    pub async fn acquire(&self, key: &BucketKey, lane: Lane) -> Permit {
        let bucket = self.bucket(key);
        bucket.acquire(lane).await
    }

    fn bucket(&self, key: &BucketKey) -> Arc<Bucket> {
        // A poisoned lock only means another thread panicked while inserting; the map is still
        // usable, so carry on rather than take the controller down.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) {
            // Rotated temporary credentials bring a new SecretId, and new buckets, each time:
            // forget the buckets whose history no longer matters to the cloud's window.
            let now = Instant::now();
            buckets.retain(|_, bucket| Arc::strong_count(bucket) > 1 || !bucket.is_idle(now));
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Bucket::new(self.limits.per_second(key.service, key.action)))
            })
            .clone()
    }

    /// How many buckets are held.
    pub fn bucket_count(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Evenly spaced send slots, handed to waiting callers by lane.
#[derive(Debug)]
pub struct Bucket {
    per_second: usize,
    spacing: Duration,
    state: Mutex<BucketState>,
    /// Woken when a call is over, for a dispatcher waiting on one.
    call_over: Notify,
}

#[derive(Debug, Default)]
struct BucketState {
    next_free: Option<Instant>,
    /// The last `per_second` slots given, oldest first.
    recent: VecDeque<Slot>,
    /// When the last of the calls older than `recent` was over.
    older_over: Option<Instant>,
    next_index: u64,
    priority: VecDeque<oneshot::Sender<Permit>>,
    bulk: VecDeque<oneshot::Sender<Permit>>,
    dispatching: bool,
    priority_streak: u32,
}

#[derive(Debug)]
struct Slot {
    index: u64,
    over: Option<Instant>,
}

/// Why no slot can be given yet.
enum NoSlot {
    /// The call `per_second` slots back is still under way: its arrival time is unknown.
    CallUnderWay,
}

impl BucketState {
    /// The next waiter still waiting: one that gave up (its reconcile was dropped, a lost
    /// leadership ended) gets no slot, so it costs none.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Permit>> {
        while let Some(waiter) = self.pick_waiter() {
            if !waiter.is_closed() {
                return Some(waiter);
            }
        }
        None
    }

    /// Forgets the waiters that gave up; whether anyone still waits.
    fn anyone_waiting(&mut self) -> bool {
        self.priority.retain(|waiter| !waiter.is_closed());
        self.bulk.retain(|waiter| !waiter.is_closed());
        !self.priority.is_empty() || !self.bulk.is_empty()
    }

    fn pick_waiter(&mut self) -> Option<oneshot::Sender<Permit>> {
        let bulk_waiting = !self.bulk.is_empty();
        if !self.priority.is_empty() && (self.priority_streak < PRIORITY_STREAK || !bulk_waiting) {
            self.priority_streak += 1;
            return self.priority.pop_front();
        }
        self.priority_streak = 0;
        self.bulk.pop_front().or_else(|| self.priority.pop_front())
    }

    /// The next slot: no earlier than `now`, one spacing after the previous slot, and one
    /// window after every call `per_second` slots back or older was over.
    fn earliest_slot(&self, now: Instant, per_second: usize) -> Result<Instant, NoSlot> {
        let mut earliest = self.next_free.map_or(now, |next| next.max(now));
        if self.recent.len() >= per_second {
            let Some(over) = self.recent.front().and_then(|slot| slot.over) else {
                return Err(NoSlot::CallUnderWay);
            };
            let older_over = self.older_over.map_or(over, |older| older.max(over));
            earliest = earliest.max(older_over + WINDOW);
        }
        Ok(earliest)
    }

    /// Takes `slot` (from [`Self::earliest_slot`]); returns its index.
    fn take_slot(&mut self, slot: Instant, spacing: Duration, per_second: usize) -> u64 {
        if self.recent.len() >= per_second
            && let Some(oldest) = self.recent.pop_front()
        {
            self.older_over = self.older_over.max(oldest.over);
        }
        let index = self.next_index;
        self.next_index += 1;
        self.recent.push_back(Slot { index, over: None });
        self.next_free = Some(slot + spacing);
        index
    }

    fn call_over(&mut self, index: u64, at: Instant) {
        if let Some(slot) = self.recent.iter_mut().find(|slot| slot.index == index) {
            slot.over = Some(at);
        }
    }
}

/// A send slot, held while the call is under way. Dropping it marks the call over: a permit
/// dropped unused (its caller went away) frees its permit at once.
#[derive(Debug)]
pub struct Permit {
    bucket: Arc<Bucket>,
    index: u64,
    waited: Duration,
}

impl Permit {
    /// How long the caller waited for this slot.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The cloud refused this call for its rate (someone else spends the same quota): its
    /// window is full, so no slot of this bucket is given for one window from now. Without
    /// this, every waiter would meet the same full window, one refusal a spacing.
    pub fn throttled(&self) {
        let resume = Instant::now() + WINDOW;
        let mut state = self.bucket.state();
        state.next_free = Some(state.next_free.map_or(resume, |next| next.max(resume)));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.bucket.state().call_over(self.index, Instant::now());
        self.bucket.call_over.notify_one();
    }
}

impl Bucket {
    /// At most `per_second` calls reach the cloud in any window of one second.
    pub fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            per_second: per_second as usize,
            spacing: WINDOW / per_second,
            state: Mutex::new(BucketState::default()),
            call_over: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BucketState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nobody waits, no call is under way, and the last call was over a window ago: a new
    /// bucket in its place would limit exactly as this one.
    fn is_idle(&self, now: Instant) -> bool {
        let state = self.state();
        let calls_over = state.recent.iter().all(|slot| {
            slot.over
                .is_some_and(|over| now.saturating_duration_since(over) >= WINDOW)
        });
        let spaced = state.next_free.is_none_or(|next| next <= now);
        state.priority.is_empty()
            && state.bulk.is_empty()
            && !state.dispatching
            && calls_over
            && spaced
    }

    fn permit(self: &Arc<Self>, index: u64) -> Permit {
        Permit {
            bucket: self.clone(),
            index,
            waited: Duration::ZERO,
        }
    }

    /// Waits for a slot in `lane`.
    pub async fn acquire(self: &Arc<Self>, lane: Lane) -> Permit {
        let arrived = Instant::now();
        let turn = {
            let mut state = self.state();
            let idle = state.priority.is_empty() && state.bulk.is_empty();
            let due_now = state
                .earliest_slot(arrived, self.per_second)
                .is_ok_and(|slot| slot <= arrived);
            if idle && due_now {
                let index = state.take_slot(arrived, self.spacing, self.per_second);
                return self.permit(index);
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
        match turn.await {
            Ok(mut permit) => {
                permit.waited = arrived.elapsed();
                permit
            }
            // The dispatcher only goes away with the runtime; nothing is left to limit.
            Err(_) => self.permit(u64::MAX),
        }
    }

    /// Hands out slots one at a time, choosing the waiter just before each slot comes due, so
    /// a priority call that arrives while a backlog waits is served within a slot or two.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let next = {
                let mut state = self.state();
                if !state.anyone_waiting() {
                    state.dispatching = false;
                    return;
                }
                state
                    .earliest_slot(Instant::now(), self.per_second)
                    .map(|slot| (slot, state.take_slot(slot, self.spacing, self.per_second)))
            };
            let Ok((slot, index)) = next else {
                // A permit's drop wakes us (or already has: Notify keeps one wake-up).
                self.call_over.notified().await;
                continue;
            };
            let permit = self.permit(index);
            tokio::time::sleep_until(slot).await;
            let waiter = self.state().next_waiter();
            // A waiter that gave up gets its permit dropped with the channel: the slot is over.
            if let Some(waiter) = waiter {
                let _ = waiter.send(permit);
            }
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
        let hub = |action| limits.per_second(Service::IotHub, action);
        assert_eq!(hub(Action::UpdateProductDynamicRegister), 5);
        assert_eq!(hub(Action::DescribeProduct), 20);

        // Without a service, every service serving the action; with one, that service only.
        let mut limits = RateLimits::default();
        limits.set("DescribeProductDynamicRegister=8".parse().unwrap());
        limits.set("iotvideo:ModifyProductDynamicRegister=3".parse().unwrap());
        let of = |service| {
            (
                limits.per_second(service, Action::DescribeProductDynamicRegister),
                limits.per_second(service, Action::ModifyProductDynamicRegister),
            )
        };
        assert_eq!(of(Service::IotExplorer), (8, 20));
        assert_eq!(of(Service::IotVideo), (8, 3));

        for bad in [
            "Nope=3",
            "iotcloud:ModifyProductDynamicRegister=3",
            "iotnope:DescribeProduct=3",
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
        assert_eq!(bucket.acquire(Lane::Bulk).await.waited(), Duration::ZERO);
        assert!(bucket.acquire(Lane::Bulk).await.waited() > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_under_way_holds_its_place_in_the_window() {
        let bucket = Arc::new(Bucket::new(2));
        let start = Instant::now();
        let slow = bucket.acquire(Lane::Bulk).await;
        // Spaced half a second after the first, and over at once.
        drop(bucket.acquire(Lane::Bulk).await);
        let third = tokio::spawn({
            let bucket = bucket.clone();
            async move { bucket.acquire(Lane::Bulk).await.waited() }
        });
        // The first call's answer comes at 3.5 s: until then it may still reach the cloud.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !third.is_finished(),
            "a slot given while an older call was under way"
        );
        drop(slow);
        let waited = third.await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(4500),
            "a window after it was over"
        );
        assert_eq!(waited, Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_dropped_unused_frees_its_place() {
        let bucket = Arc::new(Bucket::new(1));
        drop(bucket.acquire(Lane::Bulk).await);
        // A caller that gives up while waiting leaves no call under way behind it.
        let given_up = tokio::time::timeout(Duration::from_millis(10), bucket.acquire(Lane::Bulk));
        assert!(given_up.await.is_err());
        let waited = tokio::time::timeout(Duration::from_secs(5), bucket.acquire(Lane::Bulk))
            .await
            .expect("the bucket is not stuck")
            .waited();
        assert!(waited <= Duration::from_secs(2), "{waited:?}");
    }

    /// After a lost leadership, hundreds of waiters of the ended leadership are dropped: they cost
    /// no slot, and the new leadership's first call is served at once (it waited ~13 s behind them).
    #[tokio::test(start_paused = true)]
    async fn waiters_that_gave_up_cost_no_slot() {
        let bucket = Arc::new(Bucket::new(20));
        drop(bucket.acquire(Lane::Bulk).await);
        let abandoned: Vec<_> = (0..300)
            .map(|_| {
                let bucket = bucket.clone();
                tokio::spawn(async move { drop(bucket.acquire(Lane::Bulk).await) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for task in &abandoned {
            task.abort();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waited = bucket.acquire(Lane::Bulk).await.waited();
        assert!(
            waited <= bucket.spacing * 3,
            "waited {waited:?} behind dead waiters"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !bucket.state().dispatching,
            "the dispatcher stops once nobody waits"
        );
    }

    /// A refusal for the rate pauses the bucket for one window: the waiters behind it are not
    /// sent into the same full window, one a spacing.
    #[tokio::test(start_paused = true)]
    async fn a_throttled_answer_pauses_the_bucket_for_a_window() {
        let bucket = Arc::new(Bucket::new(20));
        let refused = bucket.acquire(Lane::Bulk).await;
        refused.throttled();
        drop(refused);
        let start = Instant::now();
        let next = bucket.acquire(Lane::Bulk).await;
        assert!(
            start.elapsed() >= WINDOW,
            "sent after {:?}",
            start.elapsed()
        );
        drop(next);
        let after = bucket.acquire(Lane::Bulk).await;
        assert!(
            after.waited() <= bucket.spacing,
            "the pause outlived its window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_priority_call_overtakes_a_backlog_without_starving_it() {
        let bucket = Arc::new(Bucket::new(20));
        let start = Instant::now();
        let backlog: Vec<_> = (0..200)
            .map(|_| {
                let bucket = bucket.clone();
                tokio::spawn(async move { bucket.acquire(Lane::Bulk).await.waited() })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let waited = bucket.acquire(Lane::Priority).await.waited();
        // 200 bulk calls queued ahead would mean 8 more seconds; priority takes a slot or two.
        assert!(waited <= bucket.spacing * 2, "priority waited {waited:?}");
        // A stream of priority calls still lets bulk calls through.
        let priority: Vec<_> = (0..40)
            .map(|_| {
                let bucket = bucket.clone();
                tokio::spawn(async move { bucket.acquire(Lane::Priority).await.waited() })
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
        // All 241 calls at the limit: about 241 × 50 ms.
        assert!(
            start.elapsed() <= Duration::from_millis(241 * 51),
            "{:?}",
            start.elapsed()
        );
    }
}
