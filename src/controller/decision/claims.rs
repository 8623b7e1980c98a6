//! Which claim on a product counts. Several resources may name one product and region; the
//! oldest of those whose credentials actually reach the product manages it, and the others
//! report `Conflict`. A claim that cannot see the product (no credentials, credentials of
//! another account, a product not found or refused) never blocks one that can: otherwise any
//! namespace could squat another team's product by naming it first.
//!
//! What a claim reaches is read from its own last status, as every replica sees it: the cloud
//! state it recorded (`status.cloud`), unless its latest verdict says its credentials no longer
//! reach the product. A resource that has not reached the product yet does not count; so two
//! resources created at once may both act until the older one has reached it, after which the
//! younger one stops.

use std::sync::Arc;

use kube::ResourceExt;

use super::Reason;
use crate::controller::resources::{
    DynamicRegistration, DynamicRegistrationSpec, DynamicRegistrationStatus, ManagementPolicy,
};

/// Verdicts that say the resource's credentials do not reach its product now.
const UNREACHED: [Reason; 8] = [
    Reason::CredentialsMissing,
    Reason::CredentialsInvalid,
    Reason::CredentialsNotAllowed,
    Reason::CredentialsDeleting,
    Reason::AuthFailed,
    Reason::AccountSuspended,
    Reason::ProductNotFound,
    Reason::ProductForbidden,
];

/// Whether two specs compete for one product: both manage it (`Full`) in the same service and
/// region (one ID in two services is two products).
/// Reading is not fighting: an `ObserveOnly` resource neither blocks nor is blocked.
pub fn competes(resource: &DynamicRegistrationSpec, other: &DynamicRegistrationSpec) -> bool {
    resource.management_policy == ManagementPolicy::Full
        && other.management_policy == ManagementPolicy::Full
        && resource.service == other.service
        && resource.product_id == other.product_id
        && resource.region == other.region
}

/// Whether a resource with this status holds a claim that counts.
pub fn reaches_product(status: Option<&DynamicRegistrationStatus>) -> bool {
    let Some(status) = status else {
        return false;
    };
    let reason = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Ready")
        .map(|condition| condition.reason.as_str());
    status.cloud.is_some()
        && !UNREACHED
            .iter()
            .any(|unreached| Some(unreached.as_str()) == reason)
}

/// The older resource managing `resource`'s product and region, as (namespace, name), among
/// its `claimants` (itself may be among them): the `Full` claims that compete with it and whose
/// last status shows their credentials reach the product ([`reaches_product`]). The oldest
/// claimant wins; ties go to the smaller namespace/name, so that every replica agrees.
pub fn older_claimant(
    resource: &DynamicRegistration,
    claimants: &[Arc<DynamicRegistration>],
) -> Option<(String, String)> {
    let key = claim_order(resource);
    claimants
        .iter()
        // A claimant being deleted still counts until it is gone: its deletion may still
        // switch registration off, and the next claimant takes over after that.
        .filter(|other| other.metadata.uid != resource.metadata.uid)
        .filter(|other| competes(&resource.spec, &other.spec))
        .filter(|other| reaches_product(other.status.as_ref()))
        .filter(|other| claim_order(other) < key)
        .min_by_key(|other| claim_order(other))
        .map(|owner| (owner.namespace().unwrap_or_default(), owner.name_any()))
}

/// Creation time, then namespace and name.
fn claim_order(
    resource: &DynamicRegistration,
) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        resource
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0),
        resource.namespace().unwrap_or_default(),
        resource.name_any(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::{Progress, Verdict, conditions};
    use crate::controller::resources::{CloudSettings, RegistrationMode};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn status(reason: Reason, observed: bool) -> DynamicRegistrationStatus {
        let verdict = Verdict::new(reason == Reason::InSync, reason, Progress::Settled, "m");
        DynamicRegistrationStatus {
            conditions: conditions(
                &verdict,
                1,
                &[],
                &Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            ),
            cloud: observed.then_some(CloudSettings {
                register_type: RegistrationMode::AutoCreate,
                register_limit: 1,
            }),
            ..DynamicRegistrationStatus::default()
        }
    }

    #[test]
    fn a_claim_counts_only_while_its_credentials_reach_the_product() {
        assert!(!reaches_product(None), "never reconciled");
        // (last verdict, the cloud was seen, counts)
        let rows = [
            (Reason::InSync, true, true),
            (Reason::Drifted, true, true),
            (Reason::NotAccepted, true, true),
            (Reason::CloudUnavailable, true, true),
            (Reason::Suspended, true, true),
            (Reason::Suspended, false, false),
            (Reason::CredentialsMissing, false, false),
            (Reason::CredentialsMissing, true, false),
            (Reason::AuthFailed, true, false),
            (Reason::ProductNotFound, true, false),
            (Reason::ProductForbidden, true, false),
            (Reason::CredentialsNotAllowed, false, false),
        ];
        for (reason, observed, counts) in rows {
            assert_eq!(
                reaches_product(Some(&status(reason, observed))),
                counts,
                "{reason:?}, cloud seen {observed}"
            );
        }
    }

    #[test]
    fn the_oldest_claim_that_reaches_the_product_wins() {
        use crate::controller::decision::fixtures::spec;
        use k8s_openapi::jiff::Timestamp;
        let claimant = |name: &str, created: i64, reason: Option<Reason>| {
            let mut resource =
                DynamicRegistration::new(name, spec(RegistrationMode::AutoCreate, 1));
            resource.metadata.namespace = Some("fleet".to_owned());
            resource.metadata.uid = Some(format!("uid-{name}"));
            resource.metadata.creation_timestamp =
                Some(Time(Timestamp::from_second(created).unwrap()));
            resource.status = reason.map(|reason| status(reason, true));
            Arc::new(resource)
        };
        let young = claimant("young", 300, Some(Reason::InSync));
        let old_unreached = claimant("old-unreached", 100, Some(Reason::AuthFailed));
        let middle = claimant("middle", 200, Some(Reason::InSync));
        let tie = claimant("a-tie", 200, Some(Reason::InSync));
        let all = [young.clone(), old_unreached, middle.clone(), tie.clone()];
        assert_eq!(
            older_claimant(&young, &all),
            Some(("fleet".to_owned(), "a-tie".to_owned())),
            "the oldest that reaches the product; a tie goes to the smaller name"
        );
        assert_eq!(
            older_claimant(&middle, &all),
            Some(("fleet".to_owned(), "a-tie".to_owned())),
            "created in the same second: the smaller name first"
        );
        assert_eq!(
            older_claimant(&tie, &all),
            None,
            "an older claim that does not reach the product never blocks"
        );
        let mut observing = (*young).clone();
        observing.spec.management_policy = ManagementPolicy::ObserveOnly;
        assert_eq!(
            older_claimant(&observing, &all),
            None,
            "reading is not fighting"
        );
    }
}
