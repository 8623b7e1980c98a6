//! What one reconcile does, and the verdict once it is done.

use std::collections::BTreeMap;

use super::{
    Problem, Progress, Reason, SecretContent, SecretState, Verdict, cloud_verdict, problem_verdict,
    published, template,
};
use crate::cloud::{ErrorClass, Product, RegistrationRequest};
use crate::controller::resources::{
    CloudSettings, DynamicRegistrationSpec, DynamicRegistrationStatus, ManagementPolicy,
    RegistrationMode,
};

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
    /// Labels of the resource the Secret carries too (the ones a shard's selector names).
    pub secret_labels: &'a BTreeMap<String, String>,
    /// The label keys the Secret watch selects on: the Secret carries each exactly as wanted,
    /// absent included (a label kept from an older shard hides it from this one).
    pub selected_label_keys: &'a [String],
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
    // A template that cannot compile is a spec a person must fix before anything is done.
    if let Some(template) = &input.spec.secret_template
        && let Err(detail) = template::check(template)
    {
        return blocked(&Problem::SecretTemplateInvalid { detail });
    }
    let cloud = settings_of(product);
    let differences = differences(input.spec, product);
    if input.spec.management_policy == ManagementPolicy::ObserveOnly {
        let verdict = observed(&differences, &cloud);
        return with_secret(input, product, cloud, verdict);
    }
    let Some(wanted) = wanted(input.spec) else {
        // Only an object stored before the schema required them can lack them.
        return blocked(&Problem::InvalidSpec {
            detail:
                "registerType and registerLimit are required unless managementPolicy is ObserveOnly"
                    .to_owned(),
        });
    };
    if differences.is_empty() {
        let verdict = in_sync(&cloud);
        return with_secret(input, product, cloud, verdict);
    }
    let verdict = match input.just_asked {
        Some(asked) => not_accepted(&differences, asked),
        None if refused_before(&input, &cloud) => Verdict::new(
            false,
            Reason::NotAccepted,
            Progress::Stalled,
            format!(
                "the cloud did not apply the spec earlier and still differs ({}); change the spec to a value the cloud accepts",
                differences.join("; ")
            ),
        ),
        None => {
            return Plan {
                update: Some(wanted),
                write_secret: None,
                cloud: Some(cloud),
                secret_published: false,
                verdict: Verdict::new(
                    false,
                    Reason::Drifted,
                    Progress::Retrying,
                    format!("updating the cloud: {}", differences.join("; ")),
                ),
            };
        }
    };
    with_secret(input, product, cloud, verdict)
}

/// The cloud holds what the spec asks for.
fn in_sync(cloud: &CloudSettings) -> Verdict {
    Verdict::new(
        true,
        Reason::InSync,
        Progress::Settled,
        format!(
            "RegisterType {:?} and RegisterLimit {} match the spec",
            cloud.register_type, cloud.register_limit
        ),
    )
}

/// ObserveOnly: the product was seen, which is all this resource asks; drift from the values
/// it names (if any) goes into a condition of its own.
fn observed(differences: &[String], cloud: &CloudSettings) -> Verdict {
    let mut verdict = Verdict::new(
        true,
        Reason::Observed,
        Progress::Settled,
        format!(
            "observed RegisterType {:?} and RegisterLimit {}; managementPolicy ObserveOnly makes no changes",
            cloud.register_type, cloud.register_limit
        ),
    );
    if !differences.is_empty() {
        verdict.drift = Some(format!(
            "the cloud differs from the spec: {}",
            differences.join("; ")
        ));
    }
    verdict
}

/// Adds the Secret decision to a verdict about the cloud.
fn with_secret(
    input: PlanInput<'_>,
    product: &Product,
    cloud: CloudSettings,
    verdict: Verdict,
) -> Plan {
    let published = |write_secret, note: String| Plan {
        update: None,
        write_secret,
        cloud: Some(cloud.clone()),
        secret_published: true,
        verdict: Verdict {
            message: format!("{}; {note}", verdict.message),
            ..verdict.clone()
        },
    };
    let published_in = format!("ProductSecret published in Secret {}", input.secret_name);
    // Registration on but no ProductSecret in the observation (a list answer may leave it out):
    // a Secret we published stays as it is.
    if product.lacks_secret() && matches!(input.secret, SecretState::Owned { .. }) {
        return published(None, published_in);
    }
    let Some(product_secret) = &product.registration.product_secret else {
        let note = "the cloud shows no ProductSecret for the product yet (an empty one counts as none), so no Secret is published";
        return Plan {
            secret_published: false,
            ..published(None, note.to_owned())
        };
    };
    let desired = match desired(&input, product, &cloud, product_secret.expose()) {
        Ok(desired) => desired,
        Err(detail) => {
            return Plan {
                secret_published: false,
                verdict: problem_verdict(&Problem::SecretTemplateInvalid { detail }),
                ..published(None, String::new())
            };
        }
    };
    match secret_write(&input, desired) {
        Ok(write) => published(write, published_in),
        Err(Foreign) => Plan {
            secret_published: false,
            verdict: secret_conflict(input.secret_name),
            ..published(None, String::new())
        },
    }
}

/// What the published Secret must hold: its data rendered from `spec.secretTemplate` (or the
/// default keys), its shape; or why the template cannot render.
fn desired(
    input: &PlanInput<'_>,
    product: &Product,
    cloud: &CloudSettings,
    product_secret: &str,
) -> Result<SecretContent, String> {
    let template = input.spec.secret_template.as_ref();
    let values = template::Values {
        product_id: &product.product_id,
        product_secret,
        region: &input.spec.region,
        register_type: cloud.register_type,
        register_limit: cloud.register_limit,
    };
    let data = template::render(template, &values)?;
    Ok(SecretContent {
        name: input.secret_name.to_owned(),
        shape: published::wanted_shape(
            template,
            &data,
            input.secret_labels,
            input.spec.secret_retention,
        ),
        data,
        remove: Vec::new(),
        remove_labels: Vec::new(),
        recreate: false,
    })
}

/// The Secret under the published name is someone else's.
struct Foreign;

/// What to write so that the Secret found holds `desired`: nothing when ours already does. Only
/// what we publish counts: keys, labels and annotations of other managers stay, and are no
/// reason to write.
fn secret_write(
    input: &PlanInput<'_>,
    mut desired: SecretContent,
) -> Result<Option<SecretContent>, Foreign> {
    let (data, labelled, shape) = match input.secret {
        SecretState::Foreign => return Err(Foreign),
        SecretState::Absent => return Ok(Some(desired)),
        SecretState::Owned {
            data,
            labelled,
            shape,
        } => (data, *labelled, shape),
    };
    desired.remove = published::no_longer_published(shape, data, &desired.data);
    desired.remove_labels =
        published::stale_labels(shape, &desired.shape, input.selected_label_keys);
    desired
        .remove_labels
        .extend(published::stale_own_labels(shape, &desired.shape));
    desired.recreate = shape.type_ != desired.shape.type_;
    let current = labelled
        && desired.remove.is_empty()
        && desired.remove_labels.is_empty()
        && !desired.recreate
        && desired
            .data
            .iter()
            .all(|(key, value)| data.holds(key, value))
        && published::carries(shape, &desired.shape);
    Ok((!current).then_some(desired))
}

/// The plan once the Secret it was to create was created by someone else first: theirs, never
/// overwritten.
pub fn after_secret_taken(plan: Plan, secret_name: &str) -> Plan {
    Plan {
        write_secret: None,
        secret_published: false,
        verdict: secret_conflict(secret_name),
        ..plan
    }
}

fn secret_conflict(secret_name: &str) -> Verdict {
    Verdict::new(
        false,
        Reason::SecretConflict,
        Progress::Stalled,
        format!(
            "Secret {secret_name} exists and is not owned by this DynamicRegistration; it is never overwritten: delete it or set spec.secretName"
        ),
    )
}

/// The plan once the update it asked for failed: nothing more is done this time, and the
/// failure is the verdict.
pub fn after_failed_update(plan: Plan, class: ErrorClass, message: &str) -> Plan {
    Plan {
        update: None,
        write_secret: None,
        secret_published: false,
        verdict: cloud_verdict(class, message),
        ..plan
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

fn not_accepted(differences: &[String], asked: RegistrationRequest) -> Verdict {
    Verdict::new(
        false,
        Reason::NotAccepted,
        Progress::Stalled,
        format!(
            "asked the cloud for RegisterType {:?} and RegisterLimit {}, but it applied other values ({}); not asking again for this generation",
            RegistrationMode::from(asked.register_type),
            asked.register_limit,
            differences.join("; ")
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

/// The settings a Full resource asks for; `None` when the spec names none.
fn wanted(spec: &DynamicRegistrationSpec) -> Option<RegistrationRequest> {
    Some(RegistrationRequest {
        register_type: spec.register_type?.into(),
        // The schema keeps it >= 0; a negative value from an old object counts as 0.
        register_limit: u64::try_from(spec.register_limit?).unwrap_or(0),
    })
}

fn settings_of(product: &Product) -> CloudSettings {
    CloudSettings {
        register_type: product.registration.register_type.into(),
        register_limit: i64::try_from(product.registration.register_limit).unwrap_or(i64::MAX),
    }
}

/// One setting the cloud holds otherwise than the spec wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The spec field: `registerType` or `registerLimit`.
    pub field: &'static str,
    /// What the cloud holds.
    pub cloud: String,
    /// What the spec wants.
    pub wanted: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let setting = match self.field {
            "registerType" => "RegisterType",
            _ => "RegisterLimit",
        };
        write!(f, "{setting} is {}, spec wants {}", self.cloud, self.wanted)
    }
}

/// The settings the spec names that the cloud holds otherwise.
pub fn field_differences(spec: &DynamicRegistrationSpec, product: &Product) -> Vec<Difference> {
    let mut differences = Vec::new();
    let cloud_type = RegistrationMode::from(product.registration.register_type);
    if let Some(wanted) = spec.register_type
        && cloud_type != wanted
    {
        differences.push(Difference {
            field: "registerType",
            cloud: format!("{cloud_type:?}"),
            wanted: format!("{wanted:?}"),
        });
    }
    let cloud_limit = i64::try_from(product.registration.register_limit).unwrap_or(i64::MAX);
    if let Some(wanted) = spec.register_limit
        && cloud_limit != wanted
    {
        differences.push(Difference {
            field: "registerLimit",
            cloud: cloud_limit.to_string(),
            wanted: wanted.to_string(),
        });
    }
    differences
}

/// The differences, as sentences for status messages.
pub fn differences(spec: &DynamicRegistrationSpec, product: &Product) -> Vec<String> {
    field_differences(spec, product)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::RegisterType;
    use crate::controller::decision::conditions;
    use crate::controller::decision::fixtures::{auto, product, published, spec};
    use crate::controller::decision::{DataDigest, SecretShape};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

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
            secret_labels: &NO_LABELS,
            selected_label_keys: &[],
            just_asked: None,
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
                ready: true,
                reason: Reason::Observed,
                ..row(
                    "ObserveOnly reports drift without updating",
                    Ok(product(RegisterType::Disabled, 100, Some("s3cret"))),
                )
            },
            Row {
                spec: DynamicRegistrationSpec::observe_only("ABCDE12345", "ap-guangzhou"),
                ready: true,
                reason: Reason::Observed,
                ..row(
                    "ObserveOnly without values: observed is done",
                    Ok(product(RegisterType::Disabled, 100, Some("s3cret"))),
                )
            },
            Row {
                spec: DynamicRegistrationSpec {
                    register_limit: None,
                    ..spec(RegistrationMode::AutoCreate, 100)
                },
                reason: Reason::InvalidSpec,
                progress: Progress::Stalled,
                ..row("Full without a limit (stored before the schema)", in_sync())
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
                        owner: Some("older".into()),
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
                    "credentials in backoff after AuthFailure",
                    Err(Problem::CredentialsBackingOff {
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
                    shape: SecretShape::default(),
                },
                writes_secret: true,
                ready: true,
                ..row("Secret lost its label: rewritten", in_sync())
            },
            Row {
                secret: SecretState::Owned {
                    data: DataDigest::of([
                        ("productId", "ABCDE12345"),
                        ("productSecret", "s3cret"),
                        ("addedBySomeoneElse", "x"),
                    ]),
                    labelled: true,
                    shape: SecretShape::default(),
                },
                ready: true,
                ..row("another manager's key: no write", in_sync())
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

    /// A template change is written once (dropped keys removed, a new type by re-creating the
    /// Secret); the Secret as written is then current.
    #[test]
    fn secret_template_changes_are_written_once() {
        use crate::controller::resources::SecretTemplate;
        let mut templated = spec(RegistrationMode::AutoCreate, 5);
        templated.secret_template = Some(SecretTemplate {
            type_: Some("example.com/product".to_owned()),
            data: BTreeMap::from([(
                "PRODUCT_SECRET".to_owned(),
                "{{ productSecret }}".to_owned(),
            )]),
            ..SecretTemplate::default()
        });
        let cloud = product(RegisterType::AutoCreate, 5, Some("s3cret"));
        let before = published("s3cret");
        let first = plan(input(&templated, Ok(&cloud), &before));
        let written = first.write_secret.expect("the template changes the Secret");
        assert_eq!(written.data.keys().collect::<Vec<_>>(), ["PRODUCT_SECRET"]);
        assert_eq!(written.remove, ["productId", "productSecret"]);
        assert!(written.recreate, "Opaque to example.com/product");
        let after = SecretState::Owned {
            data: DataDigest::of(&written.data),
            labelled: true,
            shape: written.shape.clone(),
        };
        let second = plan(input(&templated, Ok(&cloud), &after));
        assert_eq!(second.write_secret, None, "no churn once written");
        assert!(second.verdict.ready);

        let mut broken = templated.clone();
        broken.secret_template.as_mut().unwrap().data =
            BTreeMap::from([("A".to_owned(), "{{ productSecret ".to_owned())]);
        let refused = plan(input(&broken, Ok(&cloud), &after));
        assert_eq!(refused.verdict.reason, Reason::SecretTemplateInvalid);
        assert_eq!((refused.update, refused.write_secret), (None, None));
    }

    /// A Secret kept after the resource goes depends on nothing a cascade follows: switching to
    /// Retain rewrites it once without the ownerReference, switching back once with it (and
    /// without the publisher label); each is then current.
    #[test]
    fn a_kept_secret_depends_on_nothing_a_cascade_follows() {
        use crate::controller::decision::secrets::PUBLISHED_BY_LABEL;
        use crate::controller::resources::SecretRetention;
        let cloud = product(RegisterType::AutoCreate, 5, Some("s3cret"));
        let mut kept = spec(RegistrationMode::AutoCreate, 5);
        kept.secret_retention = SecretRetention::Retain;
        let collected = published("s3cret");
        let write = plan(input(&kept, Ok(&cloud), &collected))
            .write_secret
            .expect("the ownerReference must go");
        assert!(!write.shape.garbage_collected);
        let SecretState::Owned { data, .. } = collected else {
            unreachable!()
        };
        let mut shape = write.shape.clone();
        shape
            .labels
            .insert(PUBLISHED_BY_LABEL.to_owned(), "uid".to_owned());
        let as_kept = SecretState::Owned {
            data,
            labelled: true,
            shape,
        };
        assert_eq!(plan(input(&kept, Ok(&cloud), &as_kept)).write_secret, None);
        let collected_again = spec(RegistrationMode::AutoCreate, 5);
        let back = plan(input(&collected_again, Ok(&cloud), &as_kept))
            .write_secret
            .expect("the ownerReference comes back");
        assert!(back.shape.garbage_collected);
        assert_eq!(back.remove_labels, [PUBLISHED_BY_LABEL]);
    }

    /// A template stored before the schema refused it: a type Kubernetes would fill a service
    /// account's token into, or an annotation naming the account, is never written.
    #[test]
    fn a_template_that_would_mint_a_token_is_never_written() {
        use crate::controller::resources::{SecretTemplate, SecretTemplateMetadata};
        let cloud = product(RegisterType::AutoCreate, 5, Some("s3cret"));
        let minting = [
            SecretTemplate {
                type_: Some("kubernetes.io/service-account-token".to_owned()),
                ..SecretTemplate::default()
            },
            SecretTemplate {
                metadata: Some(SecretTemplateMetadata {
                    annotations: BTreeMap::from([(
                        "kubernetes.io/service-account.name".to_owned(),
                        "default".to_owned(),
                    )]),
                    ..SecretTemplateMetadata::default()
                }),
                ..SecretTemplate::default()
            },
        ];
        for template in minting {
            let mut wants = spec(RegistrationMode::AutoCreate, 5);
            wants.secret_template = Some(template);
            let refused = plan(input(&wants, Ok(&cloud), &SecretState::Absent));
            assert_eq!(refused.verdict.reason, Reason::SecretTemplateInvalid);
            assert_eq!(refused.verdict.progress, Progress::Stalled);
            assert!(
                refused.verdict.message.contains("refused"),
                "{}",
                refused.verdict.message
            );
            assert_eq!((refused.update, refused.write_secret), (None, None));
        }
    }

    /// A resource moved out of a shard (its shard label removed): the Secret still carries the
    /// label, so the watch of the shard now in charge would not show it. It is written once
    /// without the label, then current; other managers' labels are still no reason to write.
    #[test]
    fn a_label_the_shard_selects_on_is_dropped_when_the_resource_lost_it() {
        const KEY: &str = "sharding.iothub.dynreg.io/key";
        let keys = [KEY.to_owned()];
        let moved = spec(RegistrationMode::AutoCreate, 100);
        let cloud = product(RegisterType::AutoCreate, 100, Some("s3cret"));
        let SecretState::Owned { data, .. } = published("s3cret") else {
            unreachable!()
        };
        let owned = |labels: &[(&str, &str)]| SecretState::Owned {
            data: data.clone(),
            labelled: true,
            shape: SecretShape {
                labels: labels
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
                ..SecretShape::default()
            },
        };
        let stale = owned(&[(KEY, "shard-2"), ("team", "fleet")]);
        let first = plan(PlanInput {
            selected_label_keys: &keys,
            ..input(&moved, Ok(&cloud), &stale)
        });
        let written = first
            .write_secret
            .expect("the stale shard label is dropped");
        assert_eq!(written.remove_labels, [KEY]);
        assert!(!written.shape.labels.contains_key(KEY));
        assert!(first.verdict.ready);

        let relabelled = owned(&[("team", "fleet")]);
        let second = plan(PlanInput {
            selected_label_keys: &keys,
            ..input(&moved, Ok(&cloud), &relabelled)
        });
        assert_eq!(second.write_secret, None, "no churn once dropped");

        // Unsharded, nobody selects on the label: it is another manager's business.
        let unsharded = plan(input(&moved, Ok(&cloud), &stale));
        assert_eq!(unsharded.write_secret, None);
    }
}
