//! Updates the cloud answered that no status records yet. Once an update is made, the cloud
//! holds what it applied, so a reconcile retried after a later step failed (publishing the
//! Secret, a status write turned away) finds the cloud in sync and would make no update: what
//! the update answered (its RequestId, what was asked, the Event owed) would be lost, and a
//! limit the cloud rewrote would be asked for again on every failed status write. It is kept
//! here until a status carrying it is written. A deletion's disabling update is kept the same
//! way, so that a retry after the finalizer's removal failed does not disable again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::reflector::Store;

use super::versions::Publisher;
use crate::cloud::RegistrationRequest;
use crate::controller::resources::DynamicRegistration;

/// What one update answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnrecordedUpdate {
    /// The generation whose spec asked for it: a newer spec asks afresh.
    pub generation: i64,
    /// What was asked.
    pub asked: RegistrationRequest,
    /// The cloud's RequestId, for `status.lastRequestId`.
    pub request_id: String,
    /// The note of the "Updated" Event, until it is sent.
    pub event_owed: Option<String>,
}

/// The unrecorded updates of the resources in view, by resource.
#[derive(Default)]
pub struct UnrecordedUpdates {
    updates: Mutex<HashMap<Publisher, UnrecordedUpdate>>,
}

impl UnrecordedUpdates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Publisher, UnrecordedUpdate>> {
        self.updates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `resource`'s unrecorded update, if it was asked for by its current spec.
    pub fn of(&self, resource: &DynamicRegistration) -> Option<UnrecordedUpdate> {
        let generation = resource.metadata.generation.unwrap_or(0);
        let updates = self.lock();
        let update = updates.get(&Publisher::of(resource))?;
        (update.generation == generation).then(|| update.clone())
    }

    /// `resource`'s update just answered. Entries of resources gone from `in_view` are
    /// forgotten once they outnumber those in view twice over, so churn cannot grow the map.
    pub fn remember(
        &self,
        resource: &DynamicRegistration,
        update: UnrecordedUpdate,
        in_view: &Store<DynamicRegistration>,
    ) {
        let mut updates = self.lock();
        updates.insert(Publisher::of(resource), update);
        if updates.len() > 2 * in_view.len() + 64 {
            let present: HashSet<Publisher> =
                in_view.state().iter().map(|r| Publisher::of(r)).collect();
            updates.retain(|resource, _| present.contains(resource));
        }
    }

    /// The "Updated" Event of `resource`'s update was sent.
    pub fn event_sent(&self, resource: &DynamicRegistration) {
        if let Some(update) = self.lock().get_mut(&Publisher::of(resource)) {
            update.event_owed = None;
        }
    }

    /// A status carrying `resource`'s update (or a newer verdict) is written.
    pub fn recorded(&self, resource: &DynamicRegistration) {
        self.lock().remove(&Publisher::of(resource));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::RegisterType;
    use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode};
    use kube::runtime::reflector::store;

    fn resource(uid: &str, generation: i64) -> DynamicRegistration {
        let spec =
            DynamicRegistrationSpec::new("P1", "ap-guangzhou", RegistrationMode::AutoCreate, 1);
        let mut resource = DynamicRegistration::new(uid, spec);
        resource.metadata.uid = Some(uid.to_owned());
        resource.metadata.namespace = Some("n".to_owned());
        resource.metadata.generation = Some(generation);
        resource
    }

    fn update(generation: i64) -> UnrecordedUpdate {
        UnrecordedUpdate {
            generation,
            asked: RegistrationRequest {
                register_type: RegisterType::AutoCreate,
                register_limit: 1,
            },
            request_id: "req-1".to_owned(),
            event_owed: Some("set".to_owned()),
        }
    }

    #[test]
    fn kept_for_its_generation_until_recorded() {
        let (in_view, _writer) = store();
        let updates = UnrecordedUpdates::default();
        let sensors = resource("uid-a", 3);
        updates.remember(&sensors, update(3), &in_view);
        assert_eq!(updates.of(&sensors), Some(update(3)));
        assert_eq!(updates.of(&resource("uid-b", 3)), None, "another resource");
        assert_eq!(updates.of(&resource("uid-a", 4)), None, "a newer spec");
        updates.event_sent(&sensors);
        assert_eq!(updates.of(&sensors).unwrap().event_owed, None);
        updates.recorded(&sensors);
        assert_eq!(updates.of(&sensors), None);
    }

    #[test]
    fn entries_of_resources_out_of_view_do_not_pile_up() {
        let (in_view, _writer) = store();
        let updates = UnrecordedUpdates::default();
        for index in 0..1_000 {
            updates.remember(&resource(&format!("uid-{index}"), 1), update(1), &in_view);
        }
        assert!(updates.lock().len() <= 65, "{}", updates.lock().len());
    }
}
