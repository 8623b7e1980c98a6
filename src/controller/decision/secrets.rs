//! The Secrets we touch besides the one we publish: credentials a deletion will need are kept
//! with an in-use finalizer (like `kubernetes.io/pvc-protection`), and Secrets we published
//! under a former `secretName` are deleted. The rules are narrow on purpose: no other Secret is
//! ever changed or deleted.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{deletion, finalizers};
use crate::controller::resources::{DynamicRegistration, FINALIZER, MANAGER};

/// Finalizer on a credentials Secret while a resource's deletion needs it: without it, deleting
/// the namespace deletes the credentials first, the resource can never switch registration off,
/// and the namespace stays Terminating forever. A shard of labelled resources adds a digest of
/// its selector (`ShardSelector::protection_finalizer`).
pub const CREDENTIALS_IN_USE: &str = "iothub.dynreg.io/credentials-in-use";

/// Label set on every published Secret.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Label naming, by uid, the resource that published a Secret it keeps (`secretRetention:
/// Retain`): such a Secret carries no ownerReference, which a cascade would follow.
pub const PUBLISHED_BY_LABEL: &str = "iothub.dynreg.io/published-by";

/// Whether `name` is a valid Secret name (a DNS-1123 subdomain), as the API server checks it:
/// no request path is ever built from a name that is not.
pub fn is_valid_secret_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

/// The credentials Secret (by name, in the resource's namespace) that `resource`'s deletion will
/// use to switch registration off, if any: while it is alive with `deletionPolicy: Disable`, and
/// while it is being deleted with our finalizer still on.
pub fn credentials_needed_by(resource: &DynamicRegistration) -> Option<&str> {
    let reference = resource.spec.credentials_secret_ref.as_ref()?;
    let deleting = resource.metadata.deletion_timestamp.is_some();
    let needs_cloud = if deleting {
        finalizers::carries(&resource.metadata, FINALIZER)
    } else {
        deletion::cloud_change(&resource.spec).is_some()
    };
    needs_cloud.then_some(reference.name.as_str())
}

/// The uid of the resource that published this Secret, when it is labelled managed-by us: its
/// controlling owner, or, for a Secret it keeps without one, [`PUBLISHED_BY_LABEL`]. Only such
/// Secrets are ever deleted (once their publisher uses another name).
pub fn publisher(secret: &ObjectMeta) -> Option<&str> {
    let label = |key: &str| secret.labels.as_ref().and_then(|labels| labels.get(key));
    if label(MANAGED_BY_LABEL).is_none_or(|value| value != MANAGER) {
        return None;
    }
    let controller = secret
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true));
    match controller {
        Some(reference) => Some(reference.uid.as_str()),
        None => label(PUBLISHED_BY_LABEL).map(String::as_str),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::fixtures::spec;
    use crate::controller::resources::{DeletionPolicy, ManagementPolicy, RegistrationMode};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use std::collections::BTreeMap;

    fn resource(deletion: DeletionPolicy, deleting: bool, finalizer: bool) -> DynamicRegistration {
        let mut spec = spec(RegistrationMode::AutoCreate, 1).with_credentials("creds");
        spec.deletion_policy = deletion;
        let mut resource = DynamicRegistration::new("r", spec);
        if deleting {
            resource.metadata.deletion_timestamp =
                Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        if finalizer {
            resource.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        }
        resource
    }

    #[test]
    fn credentials_are_protected_exactly_while_a_deletion_needs_them() {
        use DeletionPolicy::{Disable, Orphan};
        // (policy, being deleted, our finalizer on, needs the credentials)
        let rows = [
            (Disable, false, false, true),
            (Disable, false, true, true),
            (Orphan, false, true, false),
            (Disable, true, true, true),
            (Disable, true, false, false),
            (Orphan, true, false, false),
        ];
        for (policy, deleting, finalizer, needed) in rows {
            let resource = resource(policy, deleting, finalizer);
            assert_eq!(
                credentials_needed_by(&resource) == Some("creds"),
                needed,
                "{policy:?}, deleting {deleting}, finalizer {finalizer}"
            );
        }
        let mut observing = resource(Disable, false, false);
        observing.spec.management_policy = ManagementPolicy::ObserveOnly;
        assert_eq!(
            credentials_needed_by(&observing),
            None,
            "ObserveOnly never disables"
        );
        let mut own = resource(Disable, false, false);
        own.spec.credentials_secret_ref = None;
        assert_eq!(
            credentials_needed_by(&own),
            None,
            "no Secret: default credentials"
        );
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        for good in ["a", "sensors-product-secret", "a.b-c.d", "0abc"] {
            assert!(is_valid_secret_name(good), "{good}");
        }
        let long = "a".repeat(254);
        for bad in [
            "", "A", "a_b", "-a", "a-", "a..b", "../etc", "a/b", "a%2F", &long,
        ] {
            assert!(!is_valid_secret_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_our_own_labelled_secrets_have_a_publisher() {
        let meta = |owner: Option<(&str, bool)>, labelled: bool| ObjectMeta {
            owner_references: owner.map(|(uid, controller)| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(controller),
                    ..OwnerReference::default()
                }]
            }),
            labels: labelled
                .then(|| BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned())])),
            ..ObjectMeta::default()
        };
        assert_eq!(publisher(&meta(Some(("uid", true)), true)), Some("uid"));
        assert_eq!(publisher(&meta(None, true)), None, "no owner");
        assert_eq!(
            publisher(&meta(Some(("uid", false)), true)),
            None,
            "an owner, not the controller"
        );
        assert_eq!(
            publisher(&meta(Some(("uid", true)), false)),
            None,
            "no label"
        );
        // A Secret kept without an ownerReference names its publisher in a label.
        let mut kept = meta(None, true);
        let labels = kept.labels.as_mut().unwrap();
        labels.insert(PUBLISHED_BY_LABEL.to_owned(), "uid-kept".to_owned());
        assert_eq!(publisher(&kept), Some("uid-kept"));
        kept.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
        assert_eq!(publisher(&kept), None, "not managed by us");
        let mut controlled = meta(Some(("uid", true)), true);
        let labels = controlled.labels.as_mut().unwrap();
        labels.insert(PUBLISHED_BY_LABEL.to_owned(), "uid-kept".to_owned());
        assert_eq!(publisher(&controlled), Some("uid"), "the controller wins");
    }
}
