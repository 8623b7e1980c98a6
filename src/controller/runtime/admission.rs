//! Admission of reconciles, queue by queue: one queue per credentials source and region.
//!
//! Most of a reconcile's time under a backlog goes on waiting for cloud quota, and quota belongs
//! to one account. A single pool of reconcile slots would fill with one team's backlog, waiting
//! on that team's quota, while another team's quota sat idle. So every credentials source (a
//! namespace's Secret, a ClusterCredentials, the controller's own) has its own queue with its own
//! permits: a backlog waits in its own queue only.
//!
//! Within a queue, reconciles a person waits for (a spec change, a deletion, a reconcile
//! request) are admitted before the backlog; a resource already waiting in the backlog moves up
//! when a person changes it meanwhile ([`Admission::promote`]), and is reconciled as it is once
//! admitted.
//!
//! A reconcile that finds its queue full does not wait: its resource is parked in the queue (a
//! name, not a suspended reconcile with its state, since tens of thousands may wait at start)
//! and the reconcile ends. When a permit frees, it is reserved for the next parked resource, which
//! is sent on the wake channel to be reconciled again; that reconcile takes the reserved permit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::controller::resources::{CredentialsSource, DynamicRegistration};

/// Whether a reconcile goes before the backlog of its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// A person waits for it.
    Awaited,
    /// A new resource, a resync, a retry.
    Backlog,
}

/// A permit reserved for a parked resource and not taken within this time goes to the next one
/// (its resource went, or it now reconciles in another queue).
const RESERVATION: Duration = Duration::from_secs(30);

/// A resource, as the queues and the wake channel name it.
pub type ResourceRef = ObjectRef<DynamicRegistration>;

/// The queues, created on first use and dropped once empty.
#[derive(Clone, Debug)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: usize,
    queues: Mutex<Queues>,
    /// Where parked resources go once a permit is reserved for them.
    wake: UnboundedSender<ResourceRef>,
}

#[derive(Debug, Default)]
struct Queues {
    by_source: HashMap<CredentialsSource, Queue>,
    /// The queue holding a permit reserved for each woken resource: a resource whose credentials
    /// changed while it waited reconciles in another queue, and the permit it leaves goes on at
    /// once.
    reserved_in: HashMap<ResourceRef, CredentialsSource>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Permits taken, reserved ones included.
    taken: usize,
    /// The parked resources and their urgency: the lines below may hold stale entries (a
    /// resource promoted, or already woken), skipped as they come up. Each name is held once
    /// for the map and its line: after a restart every resource in view is parked at once.
    parked: HashMap<Parked, Urgency>,
    awaited: VecDeque<Parked>,
    backlog: VecDeque<Parked>,
    /// Permits reserved for woken resources, and since when.
    reserved: HashMap<ResourceRef, Instant>,
}

/// A parked resource, shared by the map of the parked and its line.
type Parked = Arc<ResourceRef>;

impl Queue {
    /// The next parked resource, a person's first.
    fn next_parked(&mut self) -> Option<ResourceRef> {
        for (line, urgency) in [
            (&mut self.awaited, Urgency::Awaited),
            (&mut self.backlog, Urgency::Backlog),
        ] {
            while let Some(resource) = line.pop_front() {
                if self.parked.get(&resource) == Some(&urgency) {
                    self.parked.remove(&resource);
                    return Some(Arc::unwrap_or_clone(resource));
                }
            }
        }
        None
    }

    fn is_idle(&self) -> bool {
        self.taken == 0 && self.parked.is_empty()
    }

    fn promote(&mut self, resource: &ResourceRef) {
        if let Some((parked, Urgency::Backlog)) = self.parked.get_key_value(resource) {
            let parked = parked.clone();
            self.parked.insert(parked.clone(), Urgency::Awaited);
            self.awaited.push_back(parked);
        }
    }
}

/// A permit in a queue, held for the whole reconcile; dropping it hands the permit on.
#[derive(Debug)]
pub struct Admitted {
    inner: Arc<Inner>,
    source: CredentialsSource,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut queues = self.inner.lock();
        if let Some(queue) = queues.by_source.get_mut(&self.source) {
            queue.taken = queue.taken.saturating_sub(1);
        }
        self.inner.expire_reservations(&mut queues, &self.source);
        self.inner.hand_on(&mut queues, &self.source);
    }
}

impl Admission {
    /// At most `permits` reconciles of one source at once; resources whose turn comes after
    /// waiting parked are sent on `wake`.
    pub fn new(permits: usize, wake: UnboundedSender<ResourceRef>) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: permits.max(1),
                queues: Mutex::new(Queues::default()),
                wake,
            }),
        }
    }

    /// A permit for a reconcile of `resource` in the queue of `source`, or `None`: the resource
    /// is parked (or already was) and comes back on the wake channel when its turn comes.
    pub fn enter(
        &self,
        source: CredentialsSource,
        urgency: Urgency,
        resource: ResourceRef,
    ) -> Option<Admitted> {
        let inner = &self.inner;
        let mut queues = inner.lock();
        if let Some(elsewhere) = queues.reserved_in.get(&resource).cloned()
            && elsewhere != source
        {
            inner.release(&mut queues, &elsewhere, &resource);
        }
        inner.expire_reservations(&mut queues, &source);
        inner.hand_on(&mut queues, &source);
        let queue = queues.by_source.entry(source.clone()).or_default();
        let admitted = if queue.reserved.remove(&resource).is_some() {
            queues.reserved_in.remove(&resource);
            true
        } else if queue.parked.contains_key(&resource) {
            if urgency == Urgency::Awaited {
                queue.promote(&resource);
            }
            false
        } else if queue.taken < inner.permits && queue.parked.is_empty() {
            queue.taken += 1;
            true
        } else {
            let resource = Arc::new(resource);
            queue.parked.insert(resource.clone(), urgency);
            match urgency {
                Urgency::Awaited => queue.awaited.push_back(resource),
                Urgency::Backlog => queue.backlog.push_back(resource),
            }
            false
        };
        admitted.then(|| Admitted {
            inner: inner.clone(),
            source,
        })
    }

    /// A person now waits for `resource`: if it is parked in a backlog, it moves behind the
    /// resources a person already waits for.
    pub fn promote(&self, resource: &ResourceRef) {
        let mut queues = self.inner.lock();
        for queue in queues.by_source.values_mut() {
            queue.promote(resource);
        }
    }

    /// `resource` is gone: it waits no more, and a permit reserved for it goes to the next.
    pub fn forget(&self, resource: &ResourceRef) {
        let inner = &self.inner;
        let mut queues = inner.lock();
        if let Some(source) = queues.reserved_in.get(resource).cloned() {
            inner.release(&mut queues, &source, resource);
        }
        queues.by_source.retain(|_, queue| {
            queue.parked.remove(resource);
            !queue.is_idle()
        });
    }

    /// Hands on every permit reserved longer than [`RESERVATION`] ago and not taken (the woken
    /// resource's reconcile never came): called periodically, so that a queue nobody enters
    /// or leaves does not wait for good.
    pub fn expire_reservations(&self) {
        let inner = &self.inner;
        let mut queues = inner.lock();
        let sources: Vec<CredentialsSource> = queues.by_source.keys().cloned().collect();
        for source in sources {
            inner.expire_reservations(&mut queues, &source);
            inner.hand_on(&mut queues, &source);
        }
    }

    /// [`Admission::expire_reservations`] every few seconds; runs until dropped.
    pub async fn expire_reservations_periodically(&self) {
        loop {
            tokio::time::sleep(RESERVATION / 6).await;
            self.expire_reservations();
        }
    }

    /// Permits per queue.
    pub fn permits(&self) -> usize {
        self.inner.permits
    }

    /// Permits taken (reserved ones included) and resources parked, over all queues.
    pub fn counts(&self) -> (usize, usize) {
        let queues = self.inner.lock();
        queues
            .by_source
            .values()
            .fold((0, 0), |(taken, parked), queue| {
                (taken + queue.taken, parked + queue.parked.len())
            })
    }

    /// Resources parked (waiting for a permit) in each queue that has any, by the queue's
    /// digest.
    pub fn waiting_by_queue(&self) -> Vec<(String, usize)> {
        let queues = self.inner.lock();
        queues
            .by_source
            .iter()
            .filter(|(_, queue)| !queue.parked.is_empty())
            .map(|(source, queue)| (source.digest(), queue.parked.len()))
            .collect()
    }

    /// How many queues are held.
    pub fn queue_count(&self) -> usize {
        self.inner.lock().by_source.len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A poisoned lock only means another thread panicked while holding it; the counts are
        // still consistent (no code between lock and unlock can panic midway).
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves the free permits of the queue of `source` for its next parked resources, and
    /// wakes them; drops the queue once idle.
    fn hand_on(&self, queues: &mut Queues, source: &CredentialsSource) {
        let Some(queue) = queues.by_source.get_mut(source) else {
            return;
        };
        while queue.taken < self.permits {
            let Some(resource) = queue.next_parked() else {
                break;
            };
            queue.taken += 1;
            queue.reserved.insert(resource.clone(), Instant::now());
            queues.reserved_in.insert(resource.clone(), source.clone());
            // Fails only once the controller stops: the reservation then expires unused.
            let _ = self.wake.send(resource);
        }
        if queue.is_idle() {
            queues.by_source.remove(source);
        }
    }

    /// Gives up the permit reserved for `resource` in the queue of `source`, and hands it on.
    fn release(&self, queues: &mut Queues, source: &CredentialsSource, resource: &ResourceRef) {
        queues.reserved_in.remove(resource);
        if let Some(queue) = queues.by_source.get_mut(source) {
            if queue.reserved.remove(resource).is_some() {
                queue.taken = queue.taken.saturating_sub(1);
            }
            queue.parked.remove(resource);
        }
        self.hand_on(queues, source);
    }

    /// Frees the permits of the queue of `source` reserved too long ago.
    fn expire_reservations(&self, queues: &mut Queues, source: &CredentialsSource) {
        let Some(queue) = queues.by_source.get_mut(source) else {
            return;
        };
        let expired: Vec<ResourceRef> = queue
            .reserved
            .iter()
            .filter(|(_, since)| since.elapsed() >= RESERVATION)
            .map(|(resource, _)| resource.clone())
            .collect();
        for resource in expired {
            queue.reserved.remove(&resource);
            queue.taken = queue.taken.saturating_sub(1);
            queues.reserved_in.remove(&resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    use super::*;
    use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode};

    fn resource(namespace: &str, credentials: &str) -> DynamicRegistration {
        let spec =
            DynamicRegistrationSpec::new("P1", "ap-guangzhou", RegistrationMode::AutoCreate, 1)
                .with_credentials(credentials);
        let mut resource = DynamicRegistration::new("r", spec);
        resource.metadata.namespace = Some(namespace.to_owned());
        resource
    }

    fn source(credentials: &str) -> CredentialsSource {
        resource("fleet", credentials).credentials_source()
    }

    fn object(name: &str) -> ResourceRef {
        ObjectRef::new(name).within("fleet")
    }

    fn admission(permits: usize) -> (Admission, UnboundedReceiver<ResourceRef>) {
        let (wake, woken) = unbounded_channel();
        (Admission::new(permits, wake), woken)
    }

    fn woken(receiver: &mut UnboundedReceiver<ResourceRef>) -> Vec<String> {
        std::iter::from_fn(|| receiver.try_recv().ok())
            .map(|resource| resource.name)
            .collect()
    }

    #[tokio::test]
    async fn a_full_queue_does_not_hold_another() {
        let (admission, mut wake) = admission(2);
        let a1 = admission.enter(source("a"), Urgency::Backlog, object("a1"));
        let _a2 = admission.enter(source("a"), Urgency::Backlog, object("a2"));
        assert!(a1.is_some() && _a2.is_some());
        let a3 = admission.enter(source("a"), Urgency::Backlog, object("a3"));
        assert!(a3.is_none(), "a third reconcile of a was admitted");
        assert!(
            admission
                .enter(source("b"), Urgency::Backlog, object("b"))
                .is_some(),
            "b waited for a's permits"
        );
        // Parked again while waiting: still one entry.
        assert!(
            admission
                .enter(source("a"), Urgency::Backlog, object("a3"))
                .is_none()
        );
        assert_eq!(admission.counts(), (2, 1));
        drop(a1);
        assert_eq!(woken(&mut wake), ["a3"]);
        let a3 = admission.enter(source("a"), Urgency::Backlog, object("a3"));
        assert!(a3.is_some(), "the reserved permit was not taken");
        assert_eq!(admission.counts(), (2, 0));
    }

    #[tokio::test]
    async fn places_pass_on_in_order_and_awaited_ones_first() {
        let (admission, mut wake) = admission(1);
        let mut permit = admission.enter(source("a"), Urgency::Backlog, object("first"));
        assert!(permit.is_some());
        for (name, urgency) in [
            ("backlog 1", Urgency::Backlog),
            ("backlog 2", Urgency::Backlog),
            ("awaited", Urgency::Awaited),
            ("changed by a person while waiting", Urgency::Backlog),
        ] {
            assert!(
                admission
                    .enter(source("a"), urgency, object(name))
                    .is_none()
            );
        }
        assert_eq!(admission.counts(), (1, 4));
        admission.promote(&object("changed by a person while waiting"));
        admission.promote(&object("not waiting"));
        let mut order = Vec::new();
        while permit.is_some() {
            drop(permit.take());
            for name in woken(&mut wake) {
                permit = admission.enter(source("a"), Urgency::Backlog, object(&name));
                order.push(name);
            }
        }
        assert_eq!(
            order,
            [
                "awaited",
                "changed by a person while waiting",
                "backlog 1",
                "backlog 2"
            ]
        );
        assert_eq!(admission.counts(), (0, 0));
        assert_eq!(admission.queue_count(), 0, "empty queues are dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_reserved_for_a_resource_that_went_is_not_lost() {
        let (admission, mut wake) = admission(1);
        let first = admission.enter(source("a"), Urgency::Backlog, object("first"));
        for name in ["deleted", "moved", "next"] {
            assert!(
                admission
                    .enter(source("a"), Urgency::Backlog, object(name))
                    .is_none()
            );
        }
        drop(first);
        assert_eq!(woken(&mut wake), ["deleted"]);
        // Deleted before its reconcile came: the permit goes on at once.
        admission.forget(&object("deleted"));
        assert_eq!(woken(&mut wake), ["moved"]);
        // Never came back to this queue: the permit goes on once the reservation expires.
        tokio::time::advance(RESERVATION + Duration::from_secs(1)).await;
        assert!(
            admission
                .enter(source("a"), Urgency::Backlog, object("other"))
                .is_none()
        );
        assert_eq!(woken(&mut wake), ["next"]);
        let next = admission.enter(source("a"), Urgency::Backlog, object("next"));
        assert!(next.is_some());
        assert_eq!(admission.counts(), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_resource_that_moves_to_another_queue_frees_its_place_at_once() {
        let (admission, mut wake) = admission(1);
        let first = admission.enter(source("a"), Urgency::Backlog, object("first"));
        for name in ["moved", "waiting"] {
            assert!(
                admission
                    .enter(source("a"), Urgency::Backlog, object(name))
                    .is_none()
            );
        }
        drop(first);
        assert_eq!(woken(&mut wake), ["moved"]);
        // Its credentials changed while it waited: it reconciles in the queue of the new ones.
        let moved = admission.enter(source("b"), Urgency::Backlog, object("moved"));
        assert!(moved.is_some());
        assert_eq!(
            woken(&mut wake),
            ["waiting"],
            "the permit reserved for it in the old queue went on at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_reservation_is_handed_on_without_anyone_entering_its_queue() {
        let (admission, mut wake) = admission(1);
        let first = admission.enter(source("a"), Urgency::Backlog, object("first"));
        for name in ["never-comes", "waiting"] {
            assert!(
                admission
                    .enter(source("a"), Urgency::Backlog, object(name))
                    .is_none()
            );
        }
        drop(first);
        assert_eq!(woken(&mut wake), ["never-comes"]);
        tokio::time::advance(RESERVATION + Duration::from_secs(1)).await;
        admission.expire_reservations();
        assert_eq!(woken(&mut wake), ["waiting"]);
    }
}
