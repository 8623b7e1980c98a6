//! The decision, as a pure function: from the spec, what the cloud holds (or why it could not be
//! seen) and the published Secret, to the actions to take and the status to record.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::cloud::{ErrorClass, Product, RegisterType, RegistrationRequest};
use crate::crd::{
    CloudSettings, DynamicRegistrationSpec, DynamicRegistrationStatus, ManagementPolicy,
    RegistrationMode,
};

/// Why the cloud state is not available to decide on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `spec.suspend` is true.
    Suspended,
    /// An older resource manages the same product.
    Conflict {
        /// `namespace/name` of the older resource.
        owner: String,
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
    /// No credentials Secret, and the controller's own credentials are not for this namespace.
    CredentialsNotAllowed {
        /// The resource's namespace.
        namespace: String,
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
        /// Decoded data.
        data: BTreeMap<String, Vec<u8>>,
        /// `app.kubernetes.io/managed-by: iothub-dynreg` is set.
        labelled: bool,
    },
    /// Someone else's Secret: never overwritten.
    Foreign,
}

/// What the published Secret must hold.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretContent {
    /// Name of the Secret.
    pub name: String,
    /// `productId` and `productSecret`.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SecretContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretContent")
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Condition reasons, the vocabulary of `status.conditions[].reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InSync,
    Drifted,
    NotAccepted,
    Suspended,
    Conflict,
    SecretConflict,
    CredentialsMissing,
    CredentialsInvalid,
    CredentialsNotAllowed,
    AuthFailed,
    ProductNotFound,
    ProductForbidden,
    ProductTypeNotSupported,
    InvalidRequest,
    CloudUnavailable,
    CloudError,
    Deleting,
}

impl Reason {
    /// The reason as written in conditions and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InSync => "InSync",
            Reason::Drifted => "Drifted",
            Reason::NotAccepted => "NotAccepted",
            Reason::Suspended => "Suspended",
            Reason::Conflict => "Conflict",
            Reason::SecretConflict => "SecretConflict",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::CredentialsInvalid => "CredentialsInvalid",
            Reason::CredentialsNotAllowed => "CredentialsNotAllowed",
            Reason::AuthFailed => "AuthFailed",
            Reason::ProductNotFound => "ProductNotFound",
            Reason::ProductForbidden => "ProductForbidden",
            Reason::ProductTypeNotSupported => "ProductTypeNotSupported",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::CloudUnavailable => "CloudUnavailable",
            Reason::CloudError => "CloudError",
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
}

impl Verdict {
    fn new(ready: bool, reason: Reason, progress: Progress, message: impl Into<String>) -> Self {
        Self {
            ready,
            reason,
            message: message.into(),
            progress,
        }
    }
}

/// Everything the decision looks at.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The resource's spec.
    pub spec: &'a DynamicRegistrationSpec,
    /// `metadata.generation`.
    pub generation: i64,
    /// The status recorded last time.
    pub last_status: Option<&'a DynamicRegistrationStatus>,
    /// The product as the cloud holds it, or why that is unknown.
    pub cloud: Result<&'a Product, &'a Problem>,
    /// The published Secret as found.
    pub secret: &'a SecretState,
    /// Its name.
    pub secret_name: &'a str,
    /// The update this reconcile already made, if any: asking again would be a loop.
    pub just_asked: Option<RegistrationRequest>,
}

/// The actions to take and the verdict to record once they are done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Call UpdateProductDynamicRegister with these settings.
    pub update: Option<RegistrationRequest>,
    /// Write the Secret with this content.
    pub write_secret: Option<SecretContent>,
    /// The settings the cloud holds, for `status.cloud`.
    pub cloud: Option<CloudSettings>,
    /// Whether a Secret is published (now or already).
    pub secret_published: bool,
    /// The verdict.
    pub verdict: Verdict,
}

/// Decides what to do.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let product = match input.cloud {
        Ok(product) => product,
        Err(problem) => return blocked(problem),
    };
    let wanted = wanted(input.spec);
    let cloud = settings_of(product);
    let differences = differences(input.spec, product);

    if !differences.is_empty() {
        let verdict = match (input.spec.management_policy, input.just_asked) {
            (ManagementPolicy::ObserveOnly, _) => Verdict::new(
                false,
                Reason::Drifted,
                Progress::Settled,
                format!(
                    "the cloud differs from the spec ({}); managementPolicy ObserveOnly makes no changes",
                    differences.join(", ")
                ),
            ),
            (ManagementPolicy::Full, Some(asked)) => not_accepted(&differences, asked),
            (ManagementPolicy::Full, None) if refused_before(&input, &cloud) => Verdict::new(
                false,
                Reason::NotAccepted,
                Progress::Stalled,
                format!(
                    "the cloud did not apply the spec earlier and still differs ({}); change the spec to a value the cloud accepts",
                    differences.join(", ")
                ),
            ),
            (ManagementPolicy::Full, None) => {
                return Plan {
                    update: Some(wanted),
                    write_secret: None,
                    cloud: Some(cloud),
                    secret_published: false,
                    verdict: Verdict::new(
                        false,
                        Reason::Drifted,
                        Progress::Retrying,
                        format!("updating the cloud: {}", differences.join(", ")),
                    ),
                };
            }
        };
        return with_secret(input, product, cloud, verdict);
    }

    let verdict = Verdict::new(
        true,
        Reason::InSync,
        Progress::Settled,
        format!(
            "RegisterType {:?} and RegisterLimit {} match the spec",
            input.spec.register_type, input.spec.register_limit
        ),
    );
    with_secret(input, product, cloud, verdict)
}

/// Adds the Secret decision to a verdict about the cloud.
fn with_secret(
    input: PlanInput<'_>,
    product: &Product,
    cloud: CloudSettings,
    verdict: Verdict,
) -> Plan {
    // Registration on but no ProductSecret in the observation (a list answer may leave it out):
    // a Secret we published stays as it is.
    if crate::observe::lacks_secret(product) && matches!(input.secret, SecretState::Owned { .. }) {
        let message = format!(
            "{}; ProductSecret published in Secret {}",
            verdict.message, input.secret_name
        );
        return Plan {
            update: None,
            write_secret: None,
            cloud: Some(cloud),
            secret_published: true,
            verdict: Verdict { message, ..verdict },
        };
    }
    let Some(product_secret) = &product.registration.product_secret else {
        let message = format!(
            "{}; the product has no ProductSecret yet (dynamic registration was never enabled), so no Secret is published",
            verdict.message
        );
        return Plan {
            update: None,
            write_secret: None,
            cloud: Some(cloud),
            secret_published: false,
            verdict: Verdict { message, ..verdict },
        };
    };
    let desired = SecretContent {
        name: input.secret_name.to_owned(),
        data: BTreeMap::from([
            (
                "productId".to_owned(),
                product.product_id.as_bytes().to_vec(),
            ),
            (
                "productSecret".to_owned(),
                product_secret.expose().as_bytes().to_vec(),
            ),
        ]),
    };
    let write_secret = match input.secret {
        SecretState::Foreign => {
            return Plan {
                update: None,
                write_secret: None,
                cloud: Some(cloud),
                secret_published: false,
                verdict: Verdict::new(
                    false,
                    Reason::SecretConflict,
                    Progress::Stalled,
                    format!(
                        "Secret {} exists and is not owned by this DynamicRegistration; it is never overwritten: delete it or set spec.secretName",
                        input.secret_name
                    ),
                ),
            };
        }
        SecretState::Owned { data, labelled } if *data == desired.data && *labelled => None,
        SecretState::Owned { .. } | SecretState::Absent => Some(desired),
    };
    let message = format!(
        "{}; ProductSecret published in Secret {}",
        verdict.message, input.secret_name
    );
    Plan {
        update: None,
        write_secret,
        cloud: Some(cloud),
        secret_published: true,
        verdict: Verdict { message, ..verdict },
    }
}

fn blocked(problem: &Problem) -> Plan {
    Plan {
        update: None,
        write_secret: None,
        cloud: None,
        secret_published: false,
        verdict: problem_verdict(problem),
    }
}

/// The verdict when the cloud state is unknown because of `problem`.
pub fn problem_verdict(problem: &Problem) -> Verdict {
    let stalled = |reason, message: String| Verdict::new(false, reason, Progress::Stalled, message);
    match problem {
        Problem::Suspended => Verdict::new(
            false,
            Reason::Suspended,
            Progress::Settled,
            "spec.suspend is true: no cloud calls and no writes",
        ),
        Problem::Conflict { owner } => stalled(
            Reason::Conflict,
            format!(
                "the older DynamicRegistration {owner} manages the same product and region; this one makes no changes"
            ),
        ),
        Problem::CredentialsMissing { secret } => stalled(
            Reason::CredentialsMissing,
            format!("credentials Secret {secret} not found in this namespace"),
        ),
        Problem::CredentialsInvalid { secret, detail } => stalled(
            Reason::CredentialsInvalid,
            format!("credentials Secret {secret} is unusable: {detail}"),
        ),
        Problem::CredentialsNotAllowed { namespace } => stalled(
            Reason::CredentialsNotAllowed,
            format!(
                "spec.credentialsSecretRef is not set and the controller's default credentials are not allowed for namespace {namespace} (--default-credentials-namespaces)"
            ),
        ),
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
        ErrorClass::NotFound => (Reason::ProductNotFound, Progress::Stalled),
        ErrorClass::Forbidden => (Reason::ProductForbidden, Progress::Stalled),
        ErrorClass::Unsupported => (Reason::ProductTypeNotSupported, Progress::Stalled),
        ErrorClass::Invalid => (Reason::InvalidRequest, Progress::Stalled),
    };
    Verdict::new(false, reason, progress, message)
}

fn not_accepted(differences: &[String], asked: RegistrationRequest) -> Verdict {
    Verdict::new(
        false,
        Reason::NotAccepted,
        Progress::Stalled,
        format!(
            "asked the cloud for RegisterType {:?} and RegisterLimit {}, but it applied other values ({}); not asking again for this generation",
            RegistrationMode::from(asked.register_type),
            asked.register_limit,
            differences.join(", ")
        ),
    )
}

/// True when the last reconcile of this same generation got NotAccepted and the cloud still
/// holds what it returned then: asking again would only loop.
fn refused_before(input: &PlanInput<'_>, cloud: &CloudSettings) -> bool {
    let Some(status) = input.last_status else {
        return false;
    };
    let refused = status.conditions.iter().any(|condition| {
        condition.type_ == "Ready"
            && condition.reason == Reason::NotAccepted.as_str()
            && condition.observed_generation == Some(input.generation)
    });
    refused && status.cloud.as_ref() == Some(cloud)
}

fn wanted(spec: &DynamicRegistrationSpec) -> RegistrationRequest {
    RegistrationRequest {
        register_type: spec.register_type.into(),
        // The schema keeps it >= 0; a negative value from an old object counts as 0.
        register_limit: u64::try_from(spec.register_limit).unwrap_or(0),
    }
}

fn settings_of(product: &Product) -> CloudSettings {
    CloudSettings {
        register_type: product.registration.register_type.into(),
        register_limit: i64::try_from(product.registration.register_limit).unwrap_or(i64::MAX),
    }
}

/// Human-readable differences between spec and cloud, empty when in sync.
pub fn differences(spec: &DynamicRegistrationSpec, product: &Product) -> Vec<String> {
    let mut differences = Vec::new();
    let cloud_type: RegisterType = product.registration.register_type;
    if RegistrationMode::from(cloud_type) != spec.register_type {
        differences.push(format!(
            "RegisterType is {:?}, spec wants {:?}",
            RegistrationMode::from(cloud_type),
            spec.register_type
        ));
    }
    let cloud_limit = i64::try_from(product.registration.register_limit).unwrap_or(i64::MAX);
    if cloud_limit != spec.register_limit {
        differences.push(format!(
            "RegisterLimit is {cloud_limit}, spec wants {}",
            spec.register_limit
        ));
    }
    differences
}

/// Builds the conditions for a verdict, keeping `lastTransitionTime` of conditions whose status
/// did not change.
pub fn conditions(
    verdict: &Verdict,
    generation: i64,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let make = |type_: &str, status: bool| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: verdict.reason.as_str().to_owned(),
            message: verdict.message.clone(),
            observed_generation: Some(generation),
            last_transition_time,
        }
    };
    // kstatus: Reconciling and Stalled are "abnormal-true" conditions, present only when true.
    let mut conditions = vec![make("Ready", verdict.ready)];
    match verdict.progress {
        Progress::Retrying => conditions.push(make("Reconciling", true)),
        Progress::Stalled => conditions.push(make("Stalled", true)),
        Progress::Settled => {}
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::RegistrationSettings;
    use crate::crd::DeletionPolicy;
    use crate::secret::Redacted;

    fn spec(kind: RegistrationMode, limit: i64) -> DynamicRegistrationSpec {
        DynamicRegistrationSpec {
            product_id: "ABCDE12345".into(),
            region: "ap-guangzhou".into(),
            register_type: kind,
            register_limit: limit,
            credentials_secret_ref: None,
            secret_name: None,
            management_policy: ManagementPolicy::Full,
            deletion_policy: DeletionPolicy::Orphan,
            suspend: false,
        }
    }

    fn product(kind: RegisterType, limit: u64, secret: Option<&str>) -> Product {
        Product {
            product_id: "ABCDE12345".into(),
            product_name: "sensors".into(),
            forbidden: false,
            registration: RegistrationSettings {
                register_type: kind,
                register_limit: limit,
                product_secret: secret.map(Redacted::from),
            },
        }
    }

    fn published(secret: &str) -> SecretState {
        SecretState::Owned {
            data: BTreeMap::from([
                ("productId".to_owned(), b"ABCDE12345".to_vec()),
                ("productSecret".to_owned(), secret.as_bytes().to_vec()),
            ]),
            labelled: true,
        }
    }

    fn input<'a>(
        spec: &'a DynamicRegistrationSpec,
        cloud: Result<&'a Product, &'a Problem>,
        secret: &'a SecretState,
    ) -> PlanInput<'a> {
        PlanInput {
            spec,
            generation: 3,
            last_status: None,
            cloud,
            secret,
            secret_name: "sensors-product-secret",
            just_asked: None,
        }
    }

    fn auto(limit: u64) -> RegistrationRequest {
        RegistrationRequest {
            register_type: RegisterType::AutoCreate,
            register_limit: limit,
        }
    }

    /// One row: what the plan must say for a given situation.
    struct Row {
        name: &'static str,
        spec: DynamicRegistrationSpec,
        cloud: Result<Product, Problem>,
        secret: SecretState,
        just_asked: Option<RegistrationRequest>,
        update: Option<RegistrationRequest>,
        writes_secret: bool,
        ready: bool,
        reason: Reason,
        progress: Progress,
    }

    fn row(name: &'static str, cloud: Result<Product, Problem>) -> Row {
        Row {
            name,
            spec: spec(RegistrationMode::AutoCreate, 100),
            cloud,
            secret: published("s3cret"),
            just_asked: None,
            update: None,
            writes_secret: false,
            ready: false,
            reason: Reason::InSync,
            progress: Progress::Settled,
        }
    }

    fn cloud_problem(class: ErrorClass) -> Result<Product, Problem> {
        Err(Problem::Cloud {
            class,
            message: format!("{class:?} failure"),
        })
    }

    #[test]
    fn decision_table() {
        let in_sync = || Ok(product(RegisterType::AutoCreate, 100, Some("s3cret")));
        let rows = vec![
            Row {
                ready: true,
                ..row("in sync: no calls, no writes", in_sync())
            },
            Row {
                update: Some(auto(100)),
                reason: Reason::Drifted,
                progress: Progress::Retrying,
                ..row(
                    "type drifted",
                    Ok(product(RegisterType::PreCreate, 100, Some("s3cret"))),
                )
            },
            Row {
                update: Some(auto(100)),
                reason: Reason::Drifted,
                progress: Progress::Retrying,
                ..row(
                    "limit drifted",
                    Ok(product(RegisterType::AutoCreate, 7, Some("s3cret"))),
                )
            },
            Row {
                spec: DynamicRegistrationSpec {
                    management_policy: ManagementPolicy::ObserveOnly,
                    ..spec(RegistrationMode::AutoCreate, 100)
                },
                reason: Reason::Drifted,
                ..row(
                    "ObserveOnly reports drift without updating",
                    Ok(product(RegisterType::Disabled, 100, Some("s3cret"))),
                )
            },
            Row {
                just_asked: Some(auto(10)),
                spec: spec(RegistrationMode::AutoCreate, 10),
                reason: Reason::NotAccepted,
                progress: Progress::Stalled,
                ..row(
                    "cloud applied another limit: no second update",
                    Ok(product(RegisterType::AutoCreate, 10_000, Some("s3cret"))),
                )
            },
            Row {
                just_asked: Some(auto(100)),
                ready: true,
                ..row("update just applied: in sync", in_sync())
            },
            Row {
                reason: Reason::Suspended,
                ..row("suspended", Err(Problem::Suspended))
            },
            Row {
                reason: Reason::Conflict,
                progress: Progress::Stalled,
                ..row(
                    "conflict",
                    Err(Problem::Conflict {
                        owner: "fleet/older".into(),
                    }),
                )
            },
            Row {
                reason: Reason::CredentialsMissing,
                progress: Progress::Stalled,
                ..row(
                    "credentials missing",
                    Err(Problem::CredentialsMissing {
                        secret: "creds".into(),
                    }),
                )
            },
            Row {
                reason: Reason::CredentialsInvalid,
                progress: Progress::Stalled,
                ..row(
                    "credentials invalid",
                    Err(Problem::CredentialsInvalid {
                        secret: "creds".into(),
                        detail: "no key secretKey".into(),
                    }),
                )
            },
            Row {
                reason: Reason::CredentialsNotAllowed,
                progress: Progress::Stalled,
                ..row(
                    "default credentials not allowed",
                    Err(Problem::CredentialsNotAllowed {
                        namespace: "team-a".into(),
                    }),
                )
            },
            Row {
                reason: Reason::AuthFailed,
                progress: Progress::Stalled,
                ..row(
                    "credentials resting after AuthFailure",
                    Err(Problem::CredentialsResting {
                        secret_id: "AKID".into(),
                        code: "AuthFailure.SignatureFailure".into(),
                    }),
                )
            },
            Row {
                reason: Reason::CloudUnavailable,
                progress: Progress::Retrying,
                ..row("throttled", cloud_problem(ErrorClass::Throttled))
            },
            Row {
                reason: Reason::CloudUnavailable,
                progress: Progress::Retrying,
                ..row("transient", cloud_problem(ErrorClass::Transient))
            },
            Row {
                reason: Reason::CloudError,
                progress: Progress::Retrying,
                ..row("unknown", cloud_problem(ErrorClass::Unknown))
            },
            Row {
                reason: Reason::AuthFailed,
                progress: Progress::Stalled,
                ..row("auth", cloud_problem(ErrorClass::Auth))
            },
            Row {
                reason: Reason::ProductNotFound,
                progress: Progress::Stalled,
                ..row("not found", cloud_problem(ErrorClass::NotFound))
            },
            Row {
                reason: Reason::ProductForbidden,
                progress: Progress::Stalled,
                ..row("forbidden", cloud_problem(ErrorClass::Forbidden))
            },
            Row {
                reason: Reason::ProductTypeNotSupported,
                progress: Progress::Stalled,
                ..row("unsupported", cloud_problem(ErrorClass::Unsupported))
            },
            Row {
                reason: Reason::InvalidRequest,
                progress: Progress::Stalled,
                ..row("invalid", cloud_problem(ErrorClass::Invalid))
            },
            Row {
                secret: SecretState::Absent,
                writes_secret: true,
                ready: true,
                ..row("Secret absent: written", in_sync())
            },
            Row {
                secret: published("old-secret"),
                writes_secret: true,
                ready: true,
                ..row("Secret stale: rewritten", in_sync())
            },
            Row {
                secret: SecretState::Owned {
                    data: match published("s3cret") {
                        SecretState::Owned { data, .. } => data,
                        _ => unreachable!(),
                    },
                    labelled: false,
                },
                writes_secret: true,
                ready: true,
                ..row("Secret lost its label: rewritten", in_sync())
            },
            Row {
                secret: SecretState::Foreign,
                reason: Reason::SecretConflict,
                progress: Progress::Stalled,
                ..row("Secret foreign: never overwritten", in_sync())
            },
            Row {
                secret: SecretState::Absent,
                spec: spec(RegistrationMode::Disabled, 0),
                ready: true,
                ..row(
                    "no ProductSecret yet: nothing to publish",
                    Ok(product(RegisterType::Disabled, 0, None)),
                )
            },
            Row {
                ready: true,
                ..row(
                    "an observation without the secret keeps our published Secret",
                    Ok(product(RegisterType::AutoCreate, 100, None)),
                )
            },
            Row {
                secret: SecretState::Absent,
                ready: true,
                ..row(
                    "registration on but no secret known: nothing published yet",
                    Ok(product(RegisterType::AutoCreate, 100, None)),
                )
            },
        ];

        for row in rows {
            let cloud = row.cloud.as_ref();
            let mut plan_input = input(&row.spec, cloud, &row.secret);
            plan_input.just_asked = row.just_asked;
            let plan = plan(plan_input);
            assert_eq!(plan.update, row.update, "{}: update", row.name);
            assert_eq!(
                plan.write_secret.is_some(),
                row.writes_secret,
                "{}: secret write",
                row.name
            );
            assert_eq!(
                plan.verdict.ready, row.ready,
                "{}: ready ({:?})",
                row.name, plan.verdict
            );
            assert_eq!(plan.verdict.reason, row.reason, "{}: reason", row.name);
            assert_eq!(
                plan.verdict.progress, row.progress,
                "{}: progress",
                row.name
            );
            assert!(
                !plan.verdict.message.contains("s3cret"),
                "{}: secret in message",
                row.name
            );
        }
    }

    #[test]
    fn not_accepted_is_remembered_for_the_generation() {
        let wants_ten = spec(RegistrationMode::AutoCreate, 10);
        let clamped = product(RegisterType::AutoCreate, 10_000, Some("s3cret"));
        let secret = published("s3cret");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let refused = Verdict::new(false, Reason::NotAccepted, Progress::Stalled, "x");
        let status = DynamicRegistrationStatus {
            observed_generation: Some(3),
            conditions: conditions(&refused, 3, &[], &now),
            cloud: Some(CloudSettings {
                register_type: RegistrationMode::AutoCreate,
                register_limit: 10_000,
            }),
            ..DynamicRegistrationStatus::default()
        };
        let mut next = input(&wants_ten, Ok(&clamped), &secret);
        next.last_status = Some(&status);
        let again = plan(next);
        assert_eq!(again.update, None);
        assert_eq!(again.verdict.reason, Reason::NotAccepted);

        // A new generation is a new request: try once more.
        next.generation = 4;
        assert_eq!(plan(next).update, Some(auto(10)));

        // Someone changed the cloud since: try once more too.
        let moved = product(RegisterType::AutoCreate, 5, Some("s3cret"));
        let mut drifted = input(&wants_ten, Ok(&moved), &secret);
        drifted.last_status = Some(&status);
        assert_eq!(plan(drifted).update, Some(auto(10)));
    }

    #[test]
    fn secret_content_is_product_id_and_secret_and_debug_hides_values() {
        let wants = spec(RegistrationMode::AutoCreate, 100);
        let cloud = product(RegisterType::AutoCreate, 100, Some("s3cret"));
        let plan = plan(input(&wants, Ok(&cloud), &SecretState::Absent));
        let content = plan.write_secret.unwrap();
        assert_eq!(content.data["productId"], b"ABCDE12345");
        assert_eq!(content.data["productSecret"], b"s3cret");
        assert!(!format!("{content:?}").contains("s3cret"));
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(60).unwrap());
        let ready = Verdict::new(true, Reason::InSync, Progress::Settled, "a");
        let first = conditions(&ready, 1, &[], &t0);
        assert_eq!(first.len(), 1);
        let same = conditions(
            &Verdict {
                message: "b".into(),
                ..ready.clone()
            },
            2,
            &first,
            &t1,
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].observed_generation, Some(2));
        let failing = Verdict::new(false, Reason::CloudUnavailable, Progress::Retrying, "c");
        let changed = conditions(&failing, 2, &same, &t1);
        assert_eq!(changed[0].last_transition_time, t1);
        assert_eq!(changed[1].type_, "Reconciling");
        let stalled = conditions(
            &Verdict::new(false, Reason::ProductNotFound, Progress::Stalled, "d"),
            2,
            &changed,
            &t1,
        );
        assert_eq!(
            stalled.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["Ready", "Stalled"]
        );
    }
}
