//! The decisions, as pure functions: from the spec, what the cloud holds (or why it could not
//! be seen) and the published Secret, to the actions to take and the status to record. Nothing
//! here does I/O or reads a clock (the time to record is a parameter); every verdict and every
//! status the controller records comes from here.
//!
//! - [`plan()`]: what a reconcile does (update the cloud? write the Secret?) and its verdict;
//!   [`after_failed_update`] when the update then fails.
//! - [`next_status`]: the status to record, and its kstatus [`conditions`].
//! - [`deletion`]: the steps of deleting a resource that holds our finalizer.
//! - [`claims`]: which claim on a product counts, and which claimant manages it.
//! - [`requeue`]: when a resource is reconciled again.
//! - [`published`]: the Secret found under the published name, and the one we write.
//! - [`secrets`]: which Secrets we protect (credentials a deletion needs) or delete (Secrets we
//!   published under a former name).
//! - [`cluster_credentials`]: what a reconcile tells of the ClusterCredentials it used.
//! - [`finalizers`]: finalizer patches that leave others' finalizers alone.
//! - [`template`]: the published Secret's data rendered from `spec.secretTemplate`.

pub mod claims;
pub mod cluster_credentials;
pub mod deletion;
mod digest;
pub mod finalizers;
mod plan;
pub mod published;
pub mod requeue;
pub mod secrets;
mod status;
pub mod template;

use std::collections::BTreeMap;

use crate::cloud::ErrorClass;

pub use deletion::{DeletionStep, Note};
pub use digest::DataDigest;
pub use plan::{
    Difference, Plan, PlanInput, after_failed_update, after_secret_taken, differences,
    field_differences, plan,
};
pub use secrets::CREDENTIALS_IN_USE;
pub use status::{StatusInput, conditions, next_status, while_deleting, while_suspended};

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
    /// The credentials failed authentication recently and rest until they change or a slow
    /// retry comes due, so that many resources sharing them do not burn the account's quota.
    CredentialsResting {
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
    ///
    /// [`PUBLISHED_BY_LABEL`]: secrets::PUBLISHED_BY_LABEL
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

/// Condition reasons, the vocabulary of `status.conditions[].reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InSync,
    Observed,
    Drifted,
    NotAccepted,
    Suspended,
    Conflict,
    SecretConflict,
    CredentialsMissing,
    CredentialsInvalid,
    CredentialsNotAllowed,
    CredentialsDeleting,
    AuthFailed,
    ClockSkew,
    AccountSuspended,
    ProductNotFound,
    ProductForbidden,
    ProductTypeNotSupported,
    InvalidRequest,
    CloudUnavailable,
    CloudError,
    InvalidSpec,
    SecretTemplateInvalid,
    Deleting,
}

impl Reason {
    /// The reason as written in conditions and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InSync => "InSync",
            Reason::Observed => "Observed",
            Reason::Drifted => "Drifted",
            Reason::NotAccepted => "NotAccepted",
            Reason::Suspended => "Suspended",
            Reason::Conflict => "Conflict",
            Reason::SecretConflict => "SecretConflict",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::CredentialsInvalid => "CredentialsInvalid",
            Reason::CredentialsNotAllowed => "CredentialsNotAllowed",
            Reason::CredentialsDeleting => "CredentialsDeleting",
            Reason::AuthFailed => "AuthFailed",
            Reason::ClockSkew => "ClockSkew",
            Reason::AccountSuspended => "AccountSuspended",
            Reason::ProductNotFound => "ProductNotFound",
            Reason::ProductForbidden => "ProductForbidden",
            Reason::ProductTypeNotSupported => "ProductTypeNotSupported",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::CloudUnavailable => "CloudUnavailable",
            Reason::CloudError => "CloudError",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::SecretTemplateInvalid => "SecretTemplateInvalid",
            Reason::Deleting => "Deleting",
        }
    }
}

/// Where the resource stands after this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing left to do until the next resync.
    Settled,
    /// A fault that may clear by itself: retry with backoff (Reconciling=True).
    Retrying,
    /// A person must act (Stalled=True): retry slowly, and on any change.
    Stalled,
}

impl Progress {
    /// The `result` label of the reconciles metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            Progress::Settled => "settled",
            Progress::Retrying => "retrying",
            Progress::Stalled => "stalled",
        }
    }
}

/// The outcome to record: Ready or not, why, and what happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Ready=True.
    pub ready: bool,
    /// Condition reason.
    pub reason: Reason,
    /// Condition message, for people.
    pub message: String,
    /// What happens next.
    pub progress: Progress,
    /// ObserveOnly: how the cloud differs from the spec, for a `Drifted` condition of its own.
    pub drift: Option<String>,
}

impl Verdict {
    pub(crate) fn new(
        ready: bool,
        reason: Reason,
        progress: Progress,
        message: impl Into<String>,
    ) -> Self {
        Self {
            ready,
            reason,
            message: message.into(),
            progress,
            drift: None,
        }
    }
}

/// The verdict when the cloud state is unknown because of `problem`.
// Length: one arm per kind of problem, each with the message a person reads; split, the
// vocabulary of problems would be scattered.
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
        Problem::CredentialsResting { secret_id, code }
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
        Problem::CredentialsResting { secret_id, code } => stalled(
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

/// Builders shared by the decision tests: one per concept.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::cloud::redacted::Redacted;
    use crate::cloud::{Product, RegisterType, RegistrationRequest, RegistrationSettings};
    use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode};

    /// Product ABCDE12345 in ap-guangzhou with these settings, Full, Orphan.
    pub fn spec(kind: RegistrationMode, limit: i64) -> DynamicRegistrationSpec {
        DynamicRegistrationSpec::new("ABCDE12345", "ap-guangzhou", kind, limit)
    }

    /// The product as the cloud holds it.
    pub fn product(kind: RegisterType, limit: u64, secret: Option<&str>) -> Product {
        Product {
            product_id: "ABCDE12345".into(),
            registration: RegistrationSettings {
                register_type: kind,
                register_limit: limit,
                product_secret: secret.map(Redacted::from),
            },
        }
    }

    /// Our published Secret holding `secret`.
    pub fn published(secret: &str) -> SecretState {
        SecretState::Owned {
            data: DataDigest::of([("productId", "ABCDE12345"), ("productSecret", secret)]),
            labelled: true,
            shape: SecretShape::default(),
        }
    }

    /// An AutoCreate request with `limit`.
    pub fn auto(limit: u64) -> RegistrationRequest {
        RegistrationRequest {
            register_type: RegisterType::AutoCreate,
            register_limit: limit,
        }
    }
}

/// Every state the controller can settle in, read as kstatus reads it (sigs.k8s.io/cli-utils:
/// Flux's health checks, `kubectl wait --for=condition=Ready`, and deploy/argocd-health.lua):
/// nothing the controller leaves alone may read "in progress".
#[cfg(test)]
mod kstatus_tests {
    use super::fixtures::{product, published, spec};
    use super::*;
    use crate::cloud::{Product, RegisterType, RegistrationRequest};
    use crate::controller::resources::{
        DynamicRegistrationSpec, DynamicRegistrationStatus, RegistrationMode,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum Kstatus {
        InProgress,
        Current,
        Failed,
    }

    /// The kstatus rules for a resource with conditions.
    fn kstatus(status: &DynamicRegistrationStatus, generation: i64) -> Kstatus {
        if status.observed_generation != Some(generation) {
            return Kstatus::InProgress;
        }
        let is_true = |type_: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        };
        if is_true("Reconciling") {
            Kstatus::InProgress
        } else if is_true("Stalled") {
            Kstatus::Failed
        } else if is_true("Ready") {
            Kstatus::Current
        } else {
            Kstatus::InProgress
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn status_of(verdict: &Verdict) -> DynamicRegistrationStatus {
        DynamicRegistrationStatus {
            observed_generation: Some(1),
            conditions: conditions(verdict, 1, &[], &now()),
            ..DynamicRegistrationStatus::default()
        }
    }

    fn planned(spec: &DynamicRegistrationSpec, cloud: Result<&Product, &Problem>) -> Verdict {
        let secret = published("s3cret");
        plan(PlanInput {
            spec,
            generation: 1,
            last_status: None,
            cloud,
            secret: &secret,
            secret_name: "s",
            secret_labels: &BTreeMap::new(),
            selected_label_keys: &[],
            just_asked: None,
        })
        .verdict
    }

    #[test]
    fn every_settled_state_reads_current_or_failed() {
        use Kstatus::*;
        let full = spec(RegistrationMode::AutoCreate, 100);
        let observing = DynamicRegistrationSpec::observe_only("ABCDE12345", "ap-guangzhou");
        let drifting = DynamicRegistrationSpec {
            management_policy: crate::controller::resources::ManagementPolicy::ObserveOnly,
            ..spec(RegistrationMode::AutoCreate, 100)
        };
        let in_sync = product(RegisterType::AutoCreate, 100, Some("s3cret"));
        let elsewhere = product(RegisterType::Disabled, 3, Some("s3cret"));
        let asked = RegistrationRequest {
            register_type: RegisterType::AutoCreate,
            register_limit: 100,
        };
        let not_accepted = plan(PlanInput {
            spec: &full,
            generation: 1,
            last_status: None,
            cloud: Ok(&elsewhere),
            secret: &published("s3cret"),
            secret_name: "s",
            secret_labels: &BTreeMap::new(),
            selected_label_keys: &[],
            just_asked: Some(asked),
        })
        .verdict;
        let mut rows: Vec<(&str, Verdict, Kstatus)> = vec![
            ("InSync", planned(&full, Ok(&in_sync)), Current),
            (
                "ObserveOnly, observed",
                planned(&observing, Ok(&elsewhere)),
                Current,
            ),
            (
                "ObserveOnly, drifted",
                planned(&drifting, Ok(&elsewhere)),
                Current,
            ),
            (
                "Full, updating the cloud",
                planned(&full, Ok(&elsewhere)),
                InProgress,
            ),
            ("NotAccepted", not_accepted, Failed),
        ];
        let problems = [
            Problem::Conflict { owner: None },
            Problem::CredentialsMissing { secret: "c".into() },
            Problem::CredentialsInvalid {
                secret: "c".into(),
                detail: "d".into(),
            },
            Problem::CredentialsNotAllowed {
                namespace: "n".into(),
            },
            Problem::CredentialsBeingDeleted { secret: "c".into() },
            Problem::ClusterCredentialsMissing { name: "cc".into() },
            Problem::ClusterCredentialsNotAllowed {
                name: "cc".into(),
                namespace: "n".into(),
            },
            Problem::ClusterCredentialsUnusable {
                name: "cc".into(),
                detail: "d".into(),
            },
            Problem::ClusterCredentialsUnavailable {
                name: "cc".into(),
                namespace: "n".into(),
            },
            Problem::CredentialsResting {
                secret_id: "i".into(),
                code: "c".into(),
            },
            Problem::CredentialsResting {
                secret_id: "i".into(),
                code: "FailedOperation.AccountIsolated".into(),
            },
            Problem::InvalidSpec { detail: "d".into() },
            Problem::SecretTemplateInvalid { detail: "d".into() },
        ];
        for problem in &problems {
            rows.push((
                "a problem a person must fix",
                problem_verdict(problem),
                Failed,
            ));
        }
        for (class, expected) in [
            (ErrorClass::Throttled, InProgress),
            (ErrorClass::Transient, InProgress),
            (ErrorClass::Unknown, InProgress),
            (ErrorClass::Auth, Failed),
            (ErrorClass::ClockSkew, Failed),
            (ErrorClass::Account, Failed),
            (ErrorClass::NotFound, Failed),
            (ErrorClass::Forbidden, Failed),
            (ErrorClass::Unsupported, Failed),
            (ErrorClass::Invalid, Failed),
        ] {
            rows.push(("a cloud error", cloud_verdict(class, "m"), expected));
        }
        let taken = after_secret_taken(
            Plan {
                update: None,
                write_secret: None,
                cloud: None,
                secret_published: false,
                verdict: planned(&full, Ok(&in_sync)),
            },
            "s",
        );
        rows.push(("SecretConflict", taken.verdict, Failed));
        for (name, verdict, expected) in rows {
            assert_eq!(
                kstatus(&status_of(&verdict), 1),
                expected,
                "{name}: {:?}",
                verdict.reason
            );
            // Only a fault that clears by itself may read "in progress".
            if expected == InProgress {
                assert_eq!(verdict.progress, Progress::Retrying, "{name}");
            }
        }

        // Suspended: the last verdict stands, whatever generation it was for.
        let was_ready = status_of(&planned(&full, Ok(&in_sync)));
        let suspended = while_suspended(Some(&was_ready), 2, &now());
        assert_eq!(kstatus(&suspended, 2), Current);
        assert!(
            suspended
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2)),
            "kubectl wait reads conditions of the current generation only"
        );
        assert!(
            suspended
                .conditions
                .iter()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
        );
        let was_failing = status_of(&problem_verdict(&problems[1]));
        assert_eq!(
            kstatus(&while_suspended(Some(&was_failing), 2, &now()), 2),
            Failed
        );
        // Suspended before any verdict: it will not progress until someone resumes it.
        assert_eq!(kstatus(&while_suspended(None, 1, &now()), 1), Failed);

        // ObserveOnly drift has a condition of its own.
        let drifted = status_of(&planned(&drifting, Ok(&elsewhere)));
        assert!(
            drifted
                .conditions
                .iter()
                .any(|c| c.type_ == "Drifted" && c.status == "True")
        );
        let clean = status_of(&planned(&observing, Ok(&elsewhere)));
        assert!(!clean.conditions.iter().any(|c| c.type_ == "Drifted"));
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
        let resting = problem_verdict(&Problem::CredentialsResting {
            secret_id: "AKIDx".into(),
            code: "UnauthorizedOperation.UserNotAuthenticaed".into(),
        });
        assert_eq!(resting.reason, Reason::AccountSuspended);
        assert!(
            resting.message.contains("identity verification"),
            "{resting:?}"
        );
        assert!(resting.message.contains("AKIDx"), "{resting:?}");
        let refused = problem_verdict(&Problem::CredentialsResting {
            secret_id: "AKIDx".into(),
            code: "AuthFailure.SignatureFailure".into(),
        });
        assert_eq!(refused.reason, Reason::AuthFailed);
    }
}
