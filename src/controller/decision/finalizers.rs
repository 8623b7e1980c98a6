//! Finalizers added or removed without disturbing anyone else's: a merge patch of the whole
//! list, guarded by the resourceVersion it was computed from, so that a concurrent edit makes it
//! fail (409) instead of dropping another controller's finalizer.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

/// A merge patch that sets `finalizer` present or absent among `object`'s finalizers, with the
/// resourceVersion it was computed from.
pub fn patch(object: &ObjectMeta, finalizer: &str, present: bool) -> Value {
    let mut finalizers: Vec<String> = object
        .finalizers
        .iter()
        .flatten()
        .filter(|name| name.as_str() != finalizer)
        .cloned()
        .collect();
    if present {
        finalizers.push(finalizer.to_owned());
    }
    json!({
        "metadata": {
            "resourceVersion": object.resource_version,
            "finalizers": finalizers,
        }
    })
}

/// Whether `object` carries `finalizer`.
pub fn carries(object: &ObjectMeta, finalizer: &str) -> bool {
    object.finalizers.iter().flatten().any(|f| f == finalizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_finalizers_stay_and_the_version_guards_the_patch() {
        let object = ObjectMeta {
            resource_version: Some("7".to_owned()),
            finalizers: Some(vec!["theirs".to_owned(), "ours".to_owned()]),
            ..ObjectMeta::default()
        };
        assert_eq!(
            patch(&object, "ours", false),
            json!({"metadata": {"resourceVersion": "7", "finalizers": ["theirs"]}})
        );
        assert_eq!(
            patch(&object, "ours", true),
            json!({"metadata": {"resourceVersion": "7", "finalizers": ["theirs", "ours"]}})
        );
        assert!(carries(&object, "ours") && !carries(&object, "mine"));
    }
}
