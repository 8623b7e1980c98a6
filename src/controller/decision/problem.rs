//! Why the cloud state is not available to decide on ([`Problem`]), and the verdict a person
//! reads for each: what is wrong and what to do.

use crate::cloud::ErrorClass;

use super::{CREDENTIALS_IN_USE, Progress, Reason, Verdict};

/// Why the cloud state is not available to decide on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `spec.suspend` is true.
    Suspended,
    /// An older resource manages the same product.
    Conflict {
        /// Its name when it is in this resource's namespace. Another namespace's is another
        /// tenant's business: the controller's log names it, the status does not.
        owner: Option<String>,
    },
    /// The referenced credentials Secret does not exist.
    CredentialsMissing {
        /// Its name.
        secret: String,
    },
    /// The credentials Secret lacks a key or holds an empty value.
    CredentialsInvalid {
        /// Its name.
        secret: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The ClusterCredentials named do not exist.
    ClusterCredentialsMissing {
        /// Their name.
        name: String,
    },
    /// The ClusterCredentials named do not select this namespace.
    ClusterCredentialsNotAllowed {
        /// Their name.
        name: String,
        /// The resource's namespace.
        namespace: String,
    },
    /// The ClusterCredentials' source cannot give credentials (its Secret is missing or
    /// incomplete, its web identity token unreadable).
    ClusterCredentialsUnusable {
        /// Their name.
        name: String,
        /// What is wrong, without values.
        detail: String,
    },
    /// The controller is installed for one namespace and reads no cluster-scoped objects.
    ClusterCredentialsUnavailable {
        /// Their name.
        name: String,
        /// The namespace the controller is installed for.
        namespace: String,
    },
    /// No credentials Secret, and the controller's own credentials are not for this namespace.
    CredentialsNotAllowed {
        /// The resource's namespace.
        namespace: String,
    },
    /// `spec.secretTemplate` does not compile or render.
    SecretTemplateInvalid {
        /// Which key, what kind of error, where; never a value.
        detail: String,
    },
    /// The spec cannot be acted on (only possible for objects stored before the schema checked
    /// what this concerns).
    InvalidSpec {
        /// What is wrong.
        detail: String,
    },
    /// Someone deletes the credentials Secret while this resource's deletion still needs it: it
    /// is kept (our in-use finalizer) until the resource goes or lets go of it.
    CredentialsBeingDeleted {
        /// Its name.
        secret: String,
    },
    /// The credentials failed authentication recently and back off until they change or a slow
    /// retry comes due, so that many resources sharing them do not burn the account's quota.
    CredentialsBackingOff {
        /// The SecretId refused.
        secret_id: String,
        /// The cloud's error code.
        code: String,
    },
    /// The cloud call failed.
    Cloud {
        /// How to handle it.
        class: ErrorClass,
        /// The error, as safe text.
        message: String,
    },
}

/// The verdict when the cloud state is unknown because of `problem`.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per kind of problem, each with the message a person reads; split, the vocabulary of problems would be scattered"
)]
pub fn problem_verdict(problem: &Problem) -> Verdict {
    let stalled = |reason, message: String| Verdict::new(false, reason, Progress::Stalled, message);
    match problem {
        Problem::Suspended => Verdict::new(
            false,
            Reason::Suspended,
            Progress::Settled,
            "spec.suspend is true: no cloud calls and no writes",
        ),
        Problem::Conflict { owner: Some(owner) } => stalled(
            Reason::Conflict,
            format!(
                "the older DynamicRegistration {owner} in this namespace manages the same product and region; this one makes no changes"
            ),
        ),
        Problem::Conflict { owner: None } => stalled(
            Reason::Conflict,
            "an older DynamicRegistration in another namespace manages the same product and region; this one makes no changes (the controller's log names it for the platform team)".to_owned(),
        ),
        Problem::CredentialsMissing { secret } => stalled(
            Reason::CredentialsMissing,
            format!("credentials Secret {secret} not found in this namespace"),
        ),
        Problem::CredentialsInvalid { secret, detail } => stalled(
            Reason::CredentialsInvalid,
            format!("credentials Secret {secret} is unusable: {detail}"),
        ),
        Problem::ClusterCredentialsMissing { name } => stalled(
            Reason::CredentialsMissing,
            format!("ClusterCredentials {name} not found"),
        ),
        Problem::ClusterCredentialsNotAllowed { name, namespace } => stalled(
            Reason::CredentialsNotAllowed,
            format!(
                "ClusterCredentials {name} do not select namespace {namespace} (their spec.namespaces and spec.namespaceSelector): ask the platform team to grant them"
            ),
        ),
        Problem::ClusterCredentialsUnusable { name, detail } => stalled(
            Reason::CredentialsInvalid,
            format!("ClusterCredentials {name} cannot be used: {detail}"),
        ),
        Problem::ClusterCredentialsUnavailable { name, namespace } => stalled(
            Reason::CredentialsNotAllowed,
            format!(
                "ClusterCredentials {name} are unavailable: this controller is installed for namespace {namespace} only (--install-scope namespace) and reads no cluster-scoped objects; use spec.credentialsSecretRef"
            ),
        ),
        Problem::CredentialsNotAllowed { namespace } => stalled(
            Reason::CredentialsNotAllowed,
            format!(
                "spec.credentialsSecretRef is not set and the controller's default credentials are not allowed for namespace {namespace} (--default-credentials-namespaces)"
            ),
        ),
        Problem::InvalidSpec { detail } => stalled(Reason::InvalidSpec, detail.clone()),
        Problem::SecretTemplateInvalid { detail } => stalled(
            Reason::SecretTemplateInvalid,
            format!("spec.secretTemplate cannot be used, so no Secret is written: {detail}"),
        ),
        Problem::CredentialsBeingDeleted { secret } => stalled(
            Reason::CredentialsDeleting,
            format!(
                "credentials Secret {secret} is being deleted, but kept (our finalizer {CREDENTIALS_IN_USE}) because deletionPolicy Disable needs it to switch registration off when this resource is deleted: delete this resource (it disables the product, then lets the Secret go), or set deletionPolicy: Orphan to let the Secret go now"
            ),
        ),
        Problem::CredentialsBackingOff { secret_id, code }
            if ErrorClass::of_code(code) == ErrorClass::Account =>
        {
            stalled(
                Reason::AccountSuspended,
                format!(
                    "{}; credentials {secret_id} are not used again until they change or the slow retry comes due",
                    account_advice(code)
                ),
            )
        }
        Problem::CredentialsBackingOff { secret_id, code } => stalled(
            Reason::AuthFailed,
            format!(
                "the cloud refused credentials {secret_id} ({code}); they are not used again until they change or the slow retry comes due"
            ),
        ),
        Problem::Cloud { class, message } => cloud_verdict(*class, message),
    }
}

/// The verdict for a failed cloud call.
pub fn cloud_verdict(class: ErrorClass, message: &str) -> Verdict {
    let (reason, progress) = match class {
        ErrorClass::Throttled | ErrorClass::Transient => {
            (Reason::CloudUnavailable, Progress::Retrying)
        }
        ErrorClass::Unknown => (Reason::CloudError, Progress::Retrying),
        ErrorClass::Auth => (Reason::AuthFailed, Progress::Stalled),
        ErrorClass::ClockSkew => (Reason::ClockSkew, Progress::Stalled),
        ErrorClass::Account => (Reason::AccountSuspended, Progress::Stalled),
        ErrorClass::NotFound => (Reason::ProductNotFound, Progress::Stalled),
        ErrorClass::Forbidden => (Reason::ProductForbidden, Progress::Stalled),
        ErrorClass::Unsupported => (Reason::ProductTypeNotSupported, Progress::Stalled),
        ErrorClass::Invalid => (Reason::InvalidRequest, Progress::Stalled),
    };
    let message = match class {
        ErrorClass::Account => format!("{}: {message}", account_advice(message)),
        _ => message.to_owned(),
    };
    Verdict::new(false, reason, progress, message)
}

/// What a person does about an account the cloud suspended, from its error code (or a message
/// naming it): the account's owner settles it, nobody in the cluster can.
fn account_advice(code_or_message: &str) -> &'static str {
    if code_or_message.contains("UserNotAuthenticaed") {
        "the Tencent Cloud account of these credentials has not completed identity verification: its owner completes it in the Tencent Cloud console (Account Center)"
    } else {
        "the Tencent Cloud account of these credentials is isolated for overdue payment: its owner settles the balance in the Tencent Cloud console (Billing Center), after which the account is restored"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspended_account_says_so_and_what_its_owner_does() {
        let isolated = cloud_verdict(
            ErrorClass::of_code("FailedOperation.AccountIsolated"),
            "DescribeProduct failed with FailedOperation.AccountIsolated: isolated (RequestId r-1)",
        );
        assert_eq!(
            (isolated.reason, isolated.progress),
            (Reason::AccountSuspended, Progress::Stalled)
        );
        assert!(isolated.message.contains("overdue payment"), "{isolated:?}");
        assert!(
            isolated.message.ends_with("(RequestId r-1)"),
            "{isolated:?}"
        );
        let backing_off = problem_verdict(&Problem::CredentialsBackingOff {
            secret_id: "AKIDx".into(),
            code: "UnauthorizedOperation.UserNotAuthenticaed".into(),
        });
        assert_eq!(backing_off.reason, Reason::AccountSuspended);
        assert!(
            backing_off.message.contains("identity verification"),
            "{backing_off:?}"
        );
        assert!(backing_off.message.contains("AKIDx"), "{backing_off:?}");
        let refused = problem_verdict(&Problem::CredentialsBackingOff {
            secret_id: "AKIDx".into(),
            code: "AuthFailure.SignatureFailure".into(),
        });
        assert_eq!(refused.reason, Reason::AuthFailed);
    }
}
