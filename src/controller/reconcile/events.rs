//! Events about resources, published as `events.k8s.io/v1` Events.
//!
//! Without a cache, unlike kube's `Recorder`: it keeps every Event it published for six minutes
//! (to count repeats into a series) and scans them all on each publish, which the heap profile of
//! the scale benchmark showed as the largest single holder of memory (17.7 MB at 5,000
//! resources, a third of the heap). This controller publishes an Event only when something
//! changed (a verdict, a write), so repeats are rare; each is an Event of its own.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::controller::resources::DynamicRegistration;

/// The API server refuses longer notes.
const NOTE_LIMIT: usize = 1024;
/// The longest object name (a DNS subdomain).
const NAME_LIMIT: usize = 253;

/// Publishes Events as one controller instance.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
}

impl EventPublisher {
    /// Events reported by `controller` (its instance: `instance`, else the controller's name).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
        }
    }

    /// Publishes an Event about `resource`. A failure to publish is logged, never fatal:
    /// events are a courtesy, the status is the record.
    pub async fn publish(
        &self,
        resource: &DynamicRegistration,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let now = Timestamp::now();
        let namespace = resource.namespace().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&resource.name_any(), now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(within_limit(note)),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            regarding: Some(resource.object_ref(&())),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }
}

/// `<resource name>.<time in hex>`, the resource's name shortened as much as needed for the whole
/// to be a valid name (a resource may have a name of 253 characters; the API server refuses an
/// Event named longer, and no Event would ever be published about it).
fn event_name(resource: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let room = NAME_LIMIT.saturating_sub(suffix.len());
    let mut prefix = &resource[..resource.len().min(room)];
    while !resource.is_char_boundary(prefix.len()) {
        prefix = &prefix[..prefix.len() - 1];
    }
    // A cut name must still end its label with a letter or digit.
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}{suffix}")
}

/// `note`, cut at a character boundary to fit the API server's limit.
fn within_limit(mut note: String) -> String {
    if note.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - "…".len();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_fit_whatever_the_resource_name() {
        let nanos = 1_765_000_000_123_456_789_i128;
        assert_eq!(event_name("sensors", nanos), format!("sensors.{nanos:x}"));
        for length in [236, 237, 240, 253] {
            let long = "a".repeat(length);
            let name = event_name(&long, nanos);
            assert!(name.len() <= NAME_LIMIT, "{length}: {}", name.len());
            assert!(name.starts_with("aaaa") && name.ends_with(&format!("{nanos:x}")));
        }
        // Cut just after a dash or a dot: the label still ends with a letter or digit.
        let dashed = format!("{}-.b", "a".repeat(234));
        let name = event_name(&dashed, nanos);
        assert!(name.len() <= NAME_LIMIT);
        assert!(!name.contains("-.") && !name.contains(".."), "{name}");
        assert!(
            crate::controller::decision::secrets::is_valid_secret_name(&name),
            "{name}"
        );
    }

    #[test]
    fn long_notes_are_cut_to_the_limit_at_a_character_boundary() {
        assert_eq!(within_limit("short".to_owned()), "short");
        let cut = within_limit("é".repeat(NOTE_LIMIT));
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}
