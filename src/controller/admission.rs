//! Admission of reconciles, queue by queue: one queue per credentials source and region.
//!
//! Most of a reconcile's time under a backlog goes on waiting for cloud quota, and quota belongs
//! to one account. A single pool of reconcile slots would fill with one team's backlog, waiting
//! on that team's quota, while another team's quota sat idle. So every credentials source (a
//! namespace's Secret, a ClusterCredentials, the controller's own) has its own queue with its own
//! places: a backlog waits in its own queue only.
//!
//! Within a queue, reconciles a person waits for (a spec change, a deletion, a reconcile
//! request) are admitted before the backlog; a reconcile already waiting in the backlog moves up
//! when a person changes its resource meanwhile ([`Admission::promote`]), and acts on the
//! resource as it is once admitted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::oneshot;

use crate::controller::crd::DynamicRegistration;

/// Whose quota a reconcile will wait for, as far as the spec tells without reading anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    credentials: Credentials,
    region: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Credentials {
    /// A Secret in the resource's namespace: (namespace, name).
    Secret(String, String),
    /// A ClusterCredentials, by name.
    Cluster(String),
    /// The controller's own.
    Default,
}

impl Source {
    /// The source `resource` names.
    pub fn of(resource: &DynamicRegistration) -> Self {
        let spec = &resource.spec;
        let credentials = match (&spec.cluster_credentials_ref, &spec.credentials_secret_ref) {
            (Some(cluster), _) => Credentials::Cluster(cluster.name.clone()),
            (None, Some(secret)) => Credentials::Secret(
                resource.namespace().unwrap_or_default(),
                secret.name.clone(),
            ),
            (None, None) => Credentials::Default,
        };
        Self {
            credentials,
            region: spec.region.clone(),
        }
    }
}

/// Whether a reconcile goes before the backlog of its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// A person waits for it.
    Awaited,
    /// A new resource, a resync, a retry.
    Backlog,
}

/// The queues, created on first use and dropped once empty.
#[derive(Clone, Debug)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    places: usize,
    queues: Mutex<HashMap<Source, Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    admitted: usize,
    awaited: VecDeque<Waiter>,
    backlog: VecDeque<Waiter>,
}

/// A reconcile waiting for its place: which resource, and where to send the place.
type Waiter = (ObjectRef<DynamicRegistration>, oneshot::Sender<Admitted>);

impl Queue {
    fn next_waiter(&mut self) -> Option<Waiter> {
        self.awaited
            .pop_front()
            .or_else(|| self.backlog.pop_front())
    }

    fn waiting(&self) -> usize {
        self.awaited.len() + self.backlog.len()
    }
}

/// A place in a queue, held for the whole reconcile; dropping it admits the next in line.
#[derive(Debug)]
pub struct Admitted {
    /// `None` once the place was handed on by other means (see [`Inner::release`]).
    held: Option<(Arc<Inner>, Source)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((inner, source)) = self.held.take() {
            inner.release(&source);
        }
    }
}

impl Admission {
    /// At most `places` reconciles of one source at once.
    pub fn new(places: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                places: places.max(1),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Waits for a place in the queue of `source`, for a reconcile of `object`.
    pub async fn admit(
        &self,
        source: Source,
        urgency: Urgency,
        object: ObjectRef<DynamicRegistration>,
    ) -> Admitted {
        let turn = {
            let mut queues = self.inner.lock();
            let queue = queues.entry(source.clone()).or_default();
            if queue.admitted < self.inner.places && queue.waiting() == 0 {
                queue.admitted += 1;
                None
            } else {
                let (sender, turn) = oneshot::channel();
                match urgency {
                    Urgency::Awaited => queue.awaited.push_back((object, sender)),
                    Urgency::Backlog => queue.backlog.push_back((object, sender)),
                }
                Some(turn)
            }
        };
        match turn {
            None => Admitted {
                held: Some((self.inner.clone(), source)),
            },
            // The sender lives in the queue until it is used, and `Inner` outlives every waiter.
            Some(turn) => turn.await.unwrap_or_else(|_| Admitted { held: None }),
        }
    }

    /// A person now waits for `object`: if its reconcile waits in a backlog, it moves behind the
    /// reconciles a person already waits for. (A change of the resource reaches a reconcile
    /// already waiting, which acts on the resource as it is once admitted; without this it would
    /// wait behind the whole backlog.)
    pub fn promote(&self, object: &ObjectRef<DynamicRegistration>) {
        let mut queues = self.inner.lock();
        for queue in queues.values_mut() {
            if let Some(at) = queue
                .backlog
                .iter()
                .position(|(waiting, _)| waiting == object)
            {
                if let Some(waiter) = queue.backlog.remove(at) {
                    queue.awaited.push_back(waiter);
                }
                return;
            }
        }
    }

    /// Reconciles admitted and waiting, over all queues.
    pub fn counts(&self) -> (usize, usize) {
        let queues = self.inner.lock();
        queues.values().fold((0, 0), |(admitted, waiting), queue| {
            (admitted + queue.admitted, waiting + queue.waiting())
        })
    }

    /// How many queues are held.
    pub fn queue_count(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Source, Queue>> {
        // A poisoned lock only means another thread panicked while holding it; the counts are
        // still consistent (no code between lock and unlock can panic midway).
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reconcile of `source` is over: its place goes to the next waiter still waiting.
    fn release(self: &Arc<Self>, source: &Source) {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(source) else {
            return;
        };
        while let Some((_, waiter)) = queue.next_waiter() {
            let place = Admitted {
                held: Some((self.clone(), source.clone())),
            };
            match waiter.send(place) {
                Ok(()) => return,
                // That waiter went away: the place must not be released twice.
                Err(mut unused) => unused.held = None,
            }
        }
        queue.admitted = queue.admitted.saturating_sub(1);
        if queue.admitted == 0 {
            queues.remove(source);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::controller::crd::{DynamicRegistrationSpec, RegistrationMode};

    fn resource(namespace: &str, credentials: &str) -> DynamicRegistration {
        let spec =
            DynamicRegistrationSpec::new("P1", "ap-guangzhou", RegistrationMode::AutoCreate, 1)
                .with_credentials(credentials);
        let mut resource = DynamicRegistration::new("r", spec);
        resource.metadata.namespace = Some(namespace.to_owned());
        resource
    }

    fn source(credentials: &str) -> Source {
        Source::of(&resource("fleet", credentials))
    }

    fn object(name: &str) -> ObjectRef<DynamicRegistration> {
        ObjectRef::new(name).within("fleet")
    }

    #[test]
    fn sources_tell_credentials_and_namespaces_apart() {
        assert_eq!(source("a"), Source::of(&resource("fleet", "a")));
        assert_ne!(source("a"), source("b"));
        assert_ne!(source("a"), Source::of(&resource("other", "a")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_does_not_hold_another() {
        let admission = Admission::new(2);
        let _a1 = admission
            .admit(source("a"), Urgency::Backlog, object("a1"))
            .await;
        let _a2 = admission
            .admit(source("a"), Urgency::Backlog, object("a2"))
            .await;
        let a3 = admission.admit(source("a"), Urgency::Backlog, object("a3"));
        let waited = tokio::time::timeout(Duration::from_secs(1), a3).await;
        assert!(waited.is_err(), "a third reconcile of a was admitted");
        let b = admission.admit(source("b"), Urgency::Backlog, object("b"));
        assert!(
            tokio::time::timeout(Duration::from_secs(1), b)
                .await
                .is_ok(),
            "b waited for a's places"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn places_pass_on_in_order_and_awaited_ones_first() {
        let admission = Admission::new(1);
        let first = admission
            .admit(source("a"), Urgency::Backlog, object("first"))
            .await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (name, urgency) in [
            ("backlog 1", Urgency::Backlog),
            ("backlog 2", Urgency::Backlog),
            ("awaited", Urgency::Awaited),
            ("changed by a person while waiting", Urgency::Backlog),
        ] {
            let (admission, order) = (admission.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _place = admission.admit(source("a"), urgency, object(name)).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(admission.counts(), (1, 4));
        admission.promote(&object("changed by a person while waiting"));
        admission.promote(&object("not waiting"));
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
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
    async fn a_waiter_that_goes_away_loses_its_turn_not_the_place() {
        let admission = Admission::new(1);
        let first = admission
            .admit(source("a"), Urgency::Backlog, object("first"))
            .await;
        let waiting = || {
            let admission = admission.clone();
            tokio::spawn(async move {
                admission
                    .admit(source("a"), Urgency::Backlog, object("waiting"))
                    .await
            })
        };
        let gone = waiting();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let next = waiting();
        tokio::time::sleep(Duration::from_millis(1)).await;
        gone.abort();
        let _ = gone.await;
        drop(first);
        let next = tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("the place was lost with the waiter that went away")
            .unwrap();
        assert_eq!(admission.counts(), (1, 0));
        drop(next);
        assert_eq!(admission.counts(), (0, 0));
    }
}
