//! When each resource last read the cloud successfully. A resync that finds nothing new writes
//! nothing, so the status no longer shows that the controller keeps checking; the metric of the
//! oldest observation among Ready resources does, from this.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;

use super::versions::Publisher;
use crate::controller::resources::DynamicRegistration;

/// The last successful observation of each resource in view, by uid.
pub struct Observations {
    /// When the leadership started: a resource not observed since counts from then.
    since: Instant,
    last: Mutex<HashMap<Publisher, Instant>>,
}

impl Default for Observations {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            last: Mutex::default(),
        }
    }
}

impl Observations {
    /// `resource` read the cloud successfully just now. Resources gone from `in_view` are
    /// forgotten once the entries outnumber those in view twice over, so that churn cannot grow
    /// the map.
    pub fn record(&self, resource: &DynamicRegistration, in_view: &Store<DynamicRegistration>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(Publisher::of(resource), Instant::now());
        if last.len() > 2 * in_view.len() + 64 {
            let present: HashSet<Publisher> =
                in_view.state().iter().map(|r| Publisher::of(r)).collect();
            last.retain(|resource, _| present.contains(resource));
        }
    }

    /// How long ago the least recently observed of the Ready `resources` read the cloud: what
    /// their `Ready=True` rests on. `None` when none is Ready.
    pub fn oldest_ready_age<'a>(
        &self,
        resources: impl IntoIterator<Item = &'a DynamicRegistration>,
    ) -> Option<Duration> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let ready = |resource: &&DynamicRegistration| {
            resource
                .condition("Ready")
                .is_some_and(|ready| ready.status == "True")
        };
        resources
            .into_iter()
            .filter(ready)
            .map(|resource| {
                let observed = last.get(&Publisher::of(resource)).copied();
                observed.unwrap_or(self.since).elapsed()
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    fn resource(uid: &str, ready: &str) -> DynamicRegistration {
        let spec =
            DynamicRegistrationSpec::new("P1", "ap-guangzhou", RegistrationMode::AutoCreate, 1);
        let mut resource = DynamicRegistration::new(uid, spec);
        resource.metadata.uid = Some(uid.to_owned());
        resource.metadata.namespace = Some("n".to_owned());
        resource.status = Some(Default::default());
        let status = resource.status.as_mut().unwrap();
        status.conditions.push(Condition {
            type_: "Ready".to_owned(),
            status: ready.to_owned(),
            reason: "r".to_owned(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        });
        resource
    }

    #[test]
    fn the_oldest_ready_observation_counts_and_gone_resources_are_forgotten() {
        let observations = Observations::default();
        let (reader, mut writer) = store();
        let (a, b, failing) = (
            resource("a", "True"),
            resource("b", "True"),
            resource("c", "False"),
        );
        for resource in [&a, &b, &failing] {
            writer.apply_watcher_event(&Event::Apply(resource.clone()));
        }
        assert!(observations.oldest_ready_age([&failing]).is_none());
        observations.record(&a, &reader);
        std::thread::sleep(Duration::from_millis(30));
        observations.record(&b, &reader);
        let oldest = observations.oldest_ready_age([&a, &b, &failing]).unwrap();
        assert!(oldest >= Duration::from_millis(30), "{oldest:?}");
        assert!(observations.oldest_ready_age([&b]).unwrap() < oldest);

        // Churn: resources observed and gone leave no entries behind.
        for n in 0..1_000 {
            observations.record(&resource(&format!("gone-{n}"), "True"), &reader);
        }
        let kept = observations.last.lock().unwrap().len();
        assert!(
            kept <= 2 * reader.len() + 64 + 1,
            "{kept} entries for 3 resources"
        );
    }
}
