//! What a reconcile learns of the ClusterCredentials it used, and the `Ready` condition their
//! status carries for it: `Accepted` once the cloud answered a call made with them, `AuthFailed`
//! or `SourceUnusable` when the cloud or their source refused them, `AccountSuspended` when the
//! cloud suspended their account.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::Problem;
use crate::cloud::ErrorClass;
use crate::controller::resources::{ClusterCredentialsSpec, ClusterCredentialsStatus};

/// What a reconcile learnt of the ClusterCredentials it used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// The cloud answered a call made with them.
    Accepted,
    /// Their source gave no credentials, or the cloud refused them.
    Refused {
        /// `AuthFailed`, `AccountSuspended` or `SourceUnusable`.
        reason: &'static str,
        /// What was refused and why, without values.
        message: String,
    },
}

impl Acceptance {
    /// What reading the product through them says of the credentials: the cloud answered (an
    /// answer about the product, such as not found, still authenticates the key), or it or
    /// their source refused them. Other failures (a namespace not selected, an outage, a
    /// conflict) say nothing about the credentials: `None`.
    pub fn of(observed: Result<(), &Problem>) -> Option<Self> {
        let refused = |reason, message: &str| Acceptance::Refused {
            reason,
            message: message.to_owned(),
        };
        match observed {
            Ok(()) => Some(Acceptance::Accepted),
            Err(Problem::Cloud {
                class: ErrorClass::NotFound | ErrorClass::Forbidden | ErrorClass::Unsupported,
                ..
            }) => Some(Acceptance::Accepted),
            Err(Problem::Cloud {
                class: ErrorClass::Auth,
                message,
            }) => Some(refused("AuthFailed", message)),
            Err(Problem::Cloud {
                class: ErrorClass::Account,
                message,
            }) => Some(refused("AccountSuspended", message)),
            Err(Problem::CredentialsBackingOff { code, .. })
                if ErrorClass::of_code(code) == ErrorClass::Account =>
            {
                Some(refused(
                    "AccountSuspended",
                    "the cloud suspended the account of these credentials; they are not used again until they change or the slow retry comes due",
                ))
            }
            Err(Problem::CredentialsBackingOff { .. }) => Some(refused(
                "AuthFailed",
                "the cloud refused these credentials; they are not used again until they change or the slow retry comes due",
            )),
            Err(Problem::ClusterCredentialsUnusable { detail, .. }) => {
                Some(refused("SourceUnusable", detail))
            }
            Err(_) => None,
        }
    }

    fn ready(&self) -> bool {
        matches!(self, Acceptance::Accepted)
    }

    fn reason(&self) -> &'static str {
        match self {
            Acceptance::Accepted => "Accepted",
            Acceptance::Refused { reason, .. } => reason,
        }
    }

    fn message(&self) -> &str {
        match self {
            Acceptance::Accepted => {
                "the source resolves and the cloud accepted the credentials on their last use"
            }
            Acceptance::Refused { message, .. } => message,
        }
    }
}

/// Whether `status` already says `acceptance` for `generation`: then nothing is written.
pub fn says(
    status: Option<&ClusterCredentialsStatus>,
    generation: i64,
    acceptance: &Acceptance,
) -> bool {
    status
        .and_then(|status| status.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|condition| {
            condition.reason == acceptance.reason()
                && (condition.status == "True") == acceptance.ready()
                && condition.observed_generation == Some(generation)
        })
}

/// The status saying `acceptance` of the ClusterCredentials `spec` at `generation`.
pub fn status(
    spec: &ClusterCredentialsSpec,
    generation: i64,
    acceptance: &Acceptance,
    now: &Time,
) -> ClusterCredentialsStatus {
    ClusterCredentialsStatus {
        conditions: vec![Condition {
            type_: "Ready".to_owned(),
            status: if acceptance.ready() { "True" } else { "False" }.to_owned(),
            reason: acceptance.reason().to_owned(),
            message: acceptance.message().to_owned(),
            observed_generation: Some(generation),
            last_transition_time: now.clone(),
        }],
        source: Some(spec.source_kind().to_owned()),
        observed_generation: Some(generation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::NamespacedSecretRef;

    fn spec() -> ClusterCredentialsSpec {
        ClusterCredentialsSpec {
            secret_ref: Some(NamespacedSecretRef {
                namespace: "platform".to_owned(),
                name: "key".to_owned(),
            }),
            web_identity: None,
            namespace_selector: None,
            namespaces: vec![],
        }
    }

    #[test]
    fn only_what_concerns_the_credentials_is_recorded() {
        let cloud = |class| Problem::Cloud {
            class,
            message: "m".to_owned(),
        };
        assert_eq!(Acceptance::of(Ok(())), Some(Acceptance::Accepted));
        assert_eq!(
            Acceptance::of(Err(&cloud(ErrorClass::NotFound))),
            Some(Acceptance::Accepted),
            "the cloud judged the product: it authenticated the key"
        );
        assert!(matches!(
            Acceptance::of(Err(&cloud(ErrorClass::Auth))),
            Some(Acceptance::Refused {
                reason: "AuthFailed",
                ..
            })
        ));
        let unusable = Problem::ClusterCredentialsUnusable {
            name: "cc".to_owned(),
            detail: "Secret platform/key not found".to_owned(),
        };
        assert_eq!(
            Acceptance::of(Err(&unusable)),
            Some(Acceptance::Refused {
                reason: "SourceUnusable",
                message: "Secret platform/key not found".to_owned()
            })
        );
        for silent in [
            cloud(ErrorClass::Transient),
            Problem::ClusterCredentialsNotAllowed {
                name: "cc".to_owned(),
                namespace: "n".to_owned(),
            },
            Problem::Conflict { owner: None },
        ] {
            assert_eq!(Acceptance::of(Err(&silent)), None, "{silent:?}");
        }
    }

    #[test]
    fn a_status_is_written_only_when_it_says_something_new() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let written = status(&spec(), 3, &Acceptance::Accepted, &now);
        assert_eq!(written.source.as_deref(), Some("secretRef"));
        assert!(says(Some(&written), 3, &Acceptance::Accepted));
        assert!(
            !says(Some(&written), 4, &Acceptance::Accepted),
            "a new generation"
        );
        let refused = Acceptance::Refused {
            reason: "AuthFailed",
            message: "m".to_owned(),
        };
        assert!(!says(Some(&written), 3, &refused));
        assert!(!says(None, 3, &Acceptance::Accepted));
    }
}
