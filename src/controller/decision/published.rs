//! The published Secret: what the Secret found under its name is to us ([`found`]), what it
//! must carry besides its keys (the type, labels and annotations of `spec.secretTemplate`, and
//! which keys it no longer publishes), and the object we write ([`object`]). Only what we
//! publish counts: labels, annotations and keys of other managers stay, and are no reason to
//! write.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::DataDigest;
use super::secrets::{self as secret, MANAGED_BY_LABEL, PUBLISHED_BY_LABEL};
use crate::controller::resources::{DynamicRegistration, MANAGER, SecretRetention, SecretTemplate};

/// The published Secret, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// No Secret of that name.
    Absent,
    /// Ours (controller ownerReference to this resource), with its data and whether our label is
    /// in place.
    Owned {
        /// Its keys and the digests of their values.
        data: DataDigest,
        /// `app.kubernetes.io/managed-by: iothub-dynreg` is set.
        labelled: bool,
        /// Its type, labels and annotations.
        shape: SecretShape,
    },
    /// Someone else's Secret: never overwritten.
    Foreign,
}

/// A Secret's type, labels and annotations: as found, or as `spec.secretTemplate` wants them
/// (ours must be there; others' may be too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretShape {
    /// `type`.
    pub type_: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// It carries the resource's controller ownerReference, so the garbage collector deletes it
    /// with the resource (`secretRetention: Delete`). A retained Secret carries none: under a
    /// foreground cascade the collector deletes every dependent of the resource at once, before
    /// any finalizer could let it go; it is known as ours by [`PUBLISHED_BY_LABEL`] instead.
    pub garbage_collected: bool,
}

impl Default for SecretShape {
    fn default() -> Self {
        Self {
            type_: "Opaque".to_owned(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            garbage_collected: true,
        }
    }
}

/// What the published Secret must hold.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretContent {
    /// Name of the Secret.
    pub name: String,
    /// Its keys: `productId` and `productSecret`, or those of `spec.secretTemplate.data`.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Its type, and the labels and annotations it must carry.
    pub shape: SecretShape,
    /// Keys we published before and no longer do: removed.
    pub remove: Vec<String>,
    /// Labels the watch selects on that the Secret carries and must no longer (left from
    /// another shard): removed.
    pub remove_labels: Vec<String>,
    /// The Secret found has another type, which Kubernetes never changes: delete it first.
    pub recreate: bool,
}

impl std::fmt::Debug for SecretContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretContent")
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("shape", &self.shape)
            .field("remove", &self.remove)
            .field("remove_labels", &self.remove_labels)
            .field("recreate", &self.recreate)
            .finish()
    }
}

/// What the Secret found under the published name is to `owner`: absent, ours (controlled by
/// it, or, kept without an owner, labelled as published by it), or someone else's.
pub fn found(secret: Option<&Secret>, owner: &DynamicRegistration) -> SecretState {
    let Some(secret) = secret else {
        return SecretState::Absent;
    };
    let Some(uid) = owner.metadata.uid.as_deref() else {
        return SecretState::Foreign;
    };
    let controller = secret
        .owner_references()
        .iter()
        .find(|reference| reference.controller == Some(true));
    let garbage_collected = controller.is_some_and(|reference| reference.uid == uid);
    let kept_for_us = controller.is_none() && secret::publisher(&secret.metadata) == Some(uid);
    if !garbage_collected && !kept_for_us {
        return SecretState::Foreign;
    }
    SecretState::Owned {
        data: DataDigest::of(
            secret
                .data
                .iter()
                .flatten()
                .map(|(key, value)| (key, &value.0)),
        ),
        labelled: secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER),
        shape: SecretShape {
            type_: secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned()),
            labels: secret.labels().clone(),
            annotations: secret.annotations().clone(),
            garbage_collected,
        },
    }
}

/// The published Secret as we write it: labelled managed-by us, holding exactly `content`, and
/// controlled by `owner` (so it is garbage collected with it) or, when it is kept after the
/// resource goes, owned by nothing a cascade follows and labelled with `owner`'s uid. `None`
/// when `owner` has no uid yet.
pub fn object(owner: &DynamicRegistration, content: &SecretContent) -> Option<Secret> {
    let mut owner_reference = owner.controller_owner_ref(&())?;
    // As controller-runtime's SetControllerReference: a foreground deletion of the resource
    // waits for its Secret. (Needs `update` on dynamicregistrations/finalizers where the
    // OwnerReferencesPermissionEnforcement admission plugin runs.)
    owner_reference.block_owner_deletion = Some(true);
    let mut labels = content.shape.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
    let owner_references = if content.shape.garbage_collected {
        vec![owner_reference]
    } else {
        labels.insert(PUBLISHED_BY_LABEL.to_owned(), owner_reference.uid);
        Vec::new()
    };
    let data: BTreeMap<String, ByteString> = content
        .data
        .iter()
        .map(|(key, value)| (key.clone(), ByteString(value.clone())))
        .collect();
    let annotations = &content.shape.annotations;
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(content.name.clone()),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
            owner_references: Some(owner_references),
            ..ObjectMeta::default()
        },
        type_: Some(content.shape.type_.clone()),
        data: Some(data),
        ..Secret::default()
    })
}

/// Annotation listing the keys we published, when a template chose them: keys dropped from the
/// template are removed from the Secret, and no others.
pub const PUBLISHED_KEYS: &str = "iothub.dynreg.io/published-keys";
/// What a Secret without [`PUBLISHED_KEYS`] holds of ours.
const DEFAULT_KEYS: [&str; 2] = ["productId", "productSecret"];

/// The type, labels and annotations the template asks for, the list of keys published when
/// the template chose them, the resource's `inherited` labels (which win: a shard's Secret
/// watch needs them), and whether the Secret goes with the resource (`retention`).
pub fn wanted_shape(
    template: Option<&SecretTemplate>,
    data: &BTreeMap<String, Vec<u8>>,
    inherited: &BTreeMap<String, String>,
    retention: SecretRetention,
) -> SecretShape {
    let mut shape = SecretShape {
        garbage_collected: retention == SecretRetention::Delete,
        ..SecretShape::default()
    };
    shape.labels.extend(inherited.clone());
    let Some(template) = template else {
        return shape;
    };
    if let Some(type_) = &template.type_ {
        shape.type_ = type_.clone();
    }
    if let Some(metadata) = &template.metadata {
        shape.labels = metadata.labels.clone();
        shape.labels.extend(inherited.clone());
        shape.annotations = metadata.annotations.clone();
    }
    if !template.data.is_empty() {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        shape
            .annotations
            .insert(PUBLISHED_KEYS.to_owned(), keys.join(","));
    }
    shape
}

/// The keys the Secret holds that we published before and no longer do.
pub fn no_longer_published(
    found: &SecretShape,
    found_data: &DataDigest,
    wanted: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let before: Vec<String> = match found.annotations.get(PUBLISHED_KEYS) {
        Some(list) => list
            .split(',')
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
            .collect(),
        None => DEFAULT_KEYS.iter().map(|key| (*key).to_owned()).collect(),
    };
    before
        .into_iter()
        .filter(|key| !wanted.contains_key(key) && found_data.contains_key(key))
        .collect()
}

/// Whether the Secret found carries every label and annotation wanted, and goes with the
/// resource exactly when wanted.
pub fn carries(found: &SecretShape, wanted: &SecretShape) -> bool {
    let within = |wanted: &BTreeMap<String, String>, found: &BTreeMap<String, String>| {
        wanted
            .iter()
            .all(|(key, value)| found.get(key) == Some(value))
    };
    within(&wanted.labels, &found.labels)
        && within(&wanted.annotations, &found.annotations)
        && found.garbage_collected == wanted.garbage_collected
}

/// The labels of ours the Secret found carries and should not: the publisher's label of a
/// kept Secret, once it goes with the resource again.
pub fn stale_own_labels(found: &SecretShape, wanted: &SecretShape) -> Vec<String> {
    let kept_label = found.labels.contains_key(PUBLISHED_BY_LABEL) && wanted.garbage_collected;
    kept_label
        .then(|| PUBLISHED_BY_LABEL.to_owned())
        .into_iter()
        .collect()
}

/// The labels of `keys` the Secret found carries and should not: a shard's Secret watch selects
/// on them, so one left from another shard hides the Secret from the shard now in charge.
pub fn stale_labels(found: &SecretShape, wanted: &SecretShape, keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|key| found.labels.contains_key(*key) && !wanted.labels.contains_key(*key))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::SecretTemplateMetadata;

    fn data(keys: &[&str]) -> BTreeMap<String, Vec<u8>> {
        keys.iter()
            .map(|key| ((*key).to_owned(), b"v".to_vec()))
            .collect()
    }

    #[test]
    fn keys_dropped_from_the_template_go_and_no_others() {
        let untemplated = SecretShape::default();
        let found = DataDigest::of(&data(&["productId", "productSecret", "theirs"]));
        assert_eq!(
            no_longer_published(&untemplated, &found, &data(&["PRODUCT_SECRET"])),
            ["productId", "productSecret"]
        );
        let templated = SecretShape {
            annotations: BTreeMap::from([(PUBLISHED_KEYS.to_owned(), "A,B".to_owned())]),
            ..SecretShape::default()
        };
        let found = DataDigest::of(&data(&["A", "B", "productId"]));
        assert_eq!(
            no_longer_published(&templated, &found, &data(&["A"])),
            ["B"]
        );
        assert!(no_longer_published(&templated, &found, &data(&["A", "B"])).is_empty());
    }

    #[test]
    fn the_template_shape_is_wanted_and_others_labels_are_no_reason_to_write() {
        let template = SecretTemplate {
            type_: Some("iothub.dynreg.io/product".to_owned()),
            metadata: Some(SecretTemplateMetadata {
                labels: BTreeMap::from([("backup".to_owned(), "daily".to_owned())]),
                annotations: BTreeMap::from([("reloader".to_owned(), "true".to_owned())]),
            }),
            data: BTreeMap::from([("A".to_owned(), "{{ productId }}".to_owned())]),
        };
        let shard = BTreeMap::from([("shard".to_owned(), "2".to_owned())]);
        let wanted = wanted_shape(
            Some(&template),
            &data(&["A"]),
            &shard,
            SecretRetention::Delete,
        );
        assert_eq!(wanted.labels["shard"], "2");
        assert_eq!(wanted.type_, "iothub.dynreg.io/product");
        assert_eq!(wanted.annotations[PUBLISHED_KEYS], "A");
        let mut found = wanted.clone();
        found.labels.insert("theirs".to_owned(), "x".to_owned());
        assert!(carries(&found, &wanted));
        found.labels.remove("backup");
        assert!(!carries(&found, &wanted));
        assert_eq!(
            wanted_shape(
                None,
                &data(&["productId"]),
                &BTreeMap::new(),
                SecretRetention::Delete
            ),
            SecretShape::default()
        );
        // Without a template, the inherited labels alone; a Secret without them is rewritten.
        let sharded = wanted_shape(None, &data(&["productId"]), &shard, SecretRetention::Delete);
        assert_eq!(sharded.labels, shard);
        assert!(!carries(&SecretShape::default(), &sharded));
    }

    #[test]
    fn selected_labels_not_wanted_are_stale() {
        let keys = ["shard".to_owned()];
        let shape = |labels: &[(&str, &str)]| SecretShape {
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..SecretShape::default()
        };
        let unsharded = shape(&[]);
        let sharded = shape(&[("shard", "2")]);
        assert_eq!(stale_labels(&sharded, &unsharded, &keys), ["shard"]);
        assert!(stale_labels(&shape(&[("other", "x")]), &unsharded, &keys).is_empty());
        assert!(stale_labels(&shape(&[("shard", "3")]), &sharded, &keys).is_empty());
        assert!(
            stale_labels(&sharded, &unsharded, &[]).is_empty(),
            "no key selected"
        );
    }
}
