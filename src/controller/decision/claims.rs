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

use super::Reason;
use crate::controller::crd::{
    DynamicRegistrationSpec, DynamicRegistrationStatus, ManagementPolicy,
};

/// Verdicts that say the resource's credentials do not reach its product now.
const UNREACHED: [Reason; 7] = [
    Reason::CredentialsMissing,
    Reason::CredentialsInvalid,
    Reason::CredentialsNotAllowed,
    Reason::CredentialsDeleting,
    Reason::AuthFailed,
    Reason::ProductNotFound,
    Reason::ProductForbidden,
];

/// Whether two specs compete for one product: both manage it (`Full`) in the same region.
/// Reading is not fighting: an `ObserveOnly` resource neither blocks nor is blocked.
pub fn competes(resource: &DynamicRegistrationSpec, other: &DynamicRegistrationSpec) -> bool {
    resource.management_policy == ManagementPolicy::Full
        && other.management_policy == ManagementPolicy::Full
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::{CloudSettings, RegistrationMode};
    use crate::controller::decision::{Progress, Verdict, conditions};
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
}
