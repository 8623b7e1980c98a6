//! `iothub-dynreg plan`: what applying a set of manifests would change in the cloud, with no
//! cluster. Read the manifests → validate them as the API server would → read the cloud (never
//! write it) → decide with the controller's own decision function → report.
//!
//! The cluster's state is not known here, so two things differ from the controller by design:
//! one set of credentials (the environment's, or a file) reads every product, whatever
//! `credentialsSecretRef` names; and among several manifests claiming one product, the first
//! in input order is the older (the cluster would order them by creation time).

pub mod command;
pub mod manifests;
pub mod report;
pub mod validate;

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde_json::Value;

use crate::cloud::observe::{Need, Observer};
use crate::cloud::{Credentials, Product};
use crate::controller::decision::{
    self, Difference, PlanInput, Problem, Reason, SecretState, claims,
};
use crate::controller::resources::{DynamicRegistration, DynamicRegistrationSpec};
use manifests::{Inputs, Manifest, Origin};
use validate::Validator;

/// Products read at once (the rate limiter paces them; the shared snapshot serves most).
const CONCURRENT_READS: usize = 64;

/// What applying a resource would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// UpdateProductDynamicRegister would be called.
    Update,
    /// The cloud already holds what the spec wants (or ObserveOnly names nothing that differs).
    NoChange,
    /// ObserveOnly: the cloud differs, which is reported and never changed.
    Drift,
    /// `spec.suspend`: no cloud calls.
    Suspended,
    /// An earlier manifest manages the same product and region.
    Conflict,
    /// The API server would refuse the manifest.
    Invalid,
    /// The product does not exist for these credentials in that region.
    NotFound,
    /// The product is forbidden, or a policy refuses these credentials the product.
    Forbidden,
    /// The product's type has no dynamic registration (LoRa).
    Unsupported,
    /// The cloud refused the credentials.
    AuthFailed,
    /// The account of the credentials is suspended (arrears, identity verification).
    AccountSuspended,
    /// The cloud could not be read.
    Error,
}

impl Action {
    /// As printed, and in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Update => "update",
            Action::NoChange => "no change",
            Action::Drift => "drift",
            Action::Suspended => "suspended",
            Action::Conflict => "conflict",
            Action::Invalid => "invalid",
            Action::NotFound => "not found",
            Action::Forbidden => "forbidden",
            Action::Unsupported => "unsupported",
            Action::AuthFailed => "auth failed",
            Action::AccountSuspended => "account suspended",
            Action::Error => "error",
        }
    }

    /// Whether the resource, applied, would fail (exit status 1).
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            Action::Update | Action::NoChange | Action::Drift | Action::Suspended
        )
    }
}

/// One resource of the plan.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Where the manifest was read.
    pub origin: Origin,
    /// `metadata.namespace`, when the manifest names one.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// `spec.productId` as written.
    pub product_id: String,
    /// `spec.region` as written.
    pub region: String,
    /// What applying it would do.
    pub action: Action,
    /// The settings an update would change, or ObserveOnly's drift.
    pub changes: Vec<Difference>,
    /// Why, for every action but update and no change: the status message the controller would
    /// record, or the server's refusal.
    pub detail: Option<String>,
}

impl Planned {
    /// `namespace/name`, or the name alone.
    pub fn resource(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The plan of every DynamicRegistration read.
#[derive(Clone, Debug, Default)]
pub struct FleetPlan {
    /// In input order.
    pub resources: Vec<Planned>,
    /// Documents of other kinds.
    pub skipped_documents: usize,
}

impl FleetPlan {
    /// Like `terraform plan -detailed-exitcode`: 1 when anything would fail, else 2 when
    /// something would change, else 0.
    pub fn exit_code(&self) -> u8 {
        let actions = || self.resources.iter().map(|planned| planned.action);
        if actions().any(Action::is_error) {
            1
        } else if actions().any(|action| action == Action::Update) {
            2
        } else {
            0
        }
    }

    /// How many resources would take `action`.
    pub fn count(&self, action: Action) -> usize {
        self.resources
            .iter()
            .filter(|planned| planned.action == action)
            .count()
    }
}

/// Plans every manifest read, reading the cloud with `credentials` through `observer`.
pub async fn plan(inputs: Inputs, observer: &Observer, credentials: &Credentials) -> FleetPlan {
    let sharing = regions(&inputs.manifests);
    // Validation is CPU work and the cloud reads wait on the rate limit: the first valid
    // resource of a region starts its snapshot while the others are still being validated.
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let validation = tokio::task::spawn_blocking(move || {
        let validator = Validator::new();
        for manifest in inputs.manifests {
            if sender.send(checked(&validator, manifest)).is_err() {
                return;
            }
        }
    });
    let validated = futures::stream::poll_fn(|context| receiver.poll_recv(context));
    let observed: Vec<Observed> = validated
        .map(|(planned, resource)| observe(planned, resource, &sharing, observer, credentials))
        .buffered(CONCURRENT_READS)
        .collect()
        .await;
    // The sender is gone once every manifest is through; a panic there is a bug to show.
    if let Err(error) = validation.await {
        std::panic::resume_unwind(error.into_panic());
    }
    let mut resources: Vec<Planned> = Vec::with_capacity(observed.len());
    // Resources that reached their product, by product and region.
    let mut reached: HashMap<(&str, &str), Vec<&DynamicRegistration>> = HashMap::new();
    for (planned, checked) in &observed {
        let Some((resource, observation)) = checked else {
            resources.push(planned.clone());
            continue;
        };
        // As in the controller: only a resource that reaches its product asks whether an
        // older claim that reaches it too comes first.
        let cloud = match observation {
            Ok(product) => match older_claim(resource, &reached) {
                Some(problem) => Err(problem),
                None => {
                    let spec = &resource.spec;
                    reached
                        .entry((spec.product_id.as_str(), spec.region.as_str()))
                        .or_default()
                        .push(resource);
                    Ok(product.clone())
                }
            },
            Err(problem) => Err(problem.clone()),
        };
        resources.push(decide(planned.clone(), &resource.spec, cloud.as_ref()));
    }
    FleetPlan {
        resources,
        skipped_documents: inputs.skipped,
    }
}

/// A manifest's row, with the valid resource and what the cloud holds (`None`: invalid).
type Observed = (
    Planned,
    Option<(DynamicRegistration, Result<Product, Problem>)>,
);

/// The row of a manifest, and the resource when the API server would accept it and nothing
/// else known without the cloud (a template that does not compile) stops it.
fn checked(validator: &Validator, manifest: Manifest) -> (Planned, Option<DynamicRegistration>) {
    let planned = written(manifest.origin, &manifest.object);
    match validator.validate(&manifest.object) {
        Ok(resource) => match offline_problem(&resource) {
            Some(problem) => {
                let detail = decision::problem_verdict(&problem).message;
                (refused(planned, Action::Invalid, detail), None)
            }
            None => (planned, Some(resource)),
        },
        Err(violations) => {
            let detail = violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            (refused(planned, Action::Invalid, detail), None)
        }
    }
}

/// What stops a resource the API server accepts, decided without the cloud: whatever the
/// cloud holds, the controller would report it.
fn offline_problem(resource: &DynamicRegistration) -> Option<Problem> {
    let template = resource.spec.secret_template.as_ref()?;
    let detail = decision::template::check(template).err()?;
    Some(Problem::SecretTemplateInvalid { detail })
}

/// Reads the product of a valid resource, unless it is suspended.
async fn observe(
    planned: Planned,
    resource: Option<DynamicRegistration>,
    sharing: &HashMap<String, usize>,
    observer: &Observer,
    credentials: &Credentials,
) -> Observed {
    let Some(resource) = resource else {
        return (planned, None);
    };
    let spec = &resource.spec;
    if spec.suspend {
        return (planned, Some((resource, Err(Problem::Suspended))));
    }
    let managed = sharing.get(&spec.region).copied().unwrap_or(1);
    let product = observer
        .observe(
            (spec.service.cloud(), credentials),
            &spec.region,
            &spec.product_id,
            managed,
            Need::Settings,
        )
        .await
        .map(|observation| observation.product)
        .map_err(|failure| Problem::Cloud {
            class: failure.class,
            message: failure.message,
        });
    (planned, Some((resource, product)))
}

/// How many manifests read each region (counted before validation, which runs alongside the
/// reads): the observer pages the account's products only when that costs fewer calls than
/// reading them one by one.
fn regions(manifests: &[Manifest]) -> HashMap<String, usize> {
    let mut regions = HashMap::new();
    for manifest in manifests {
        if let Some(region) = manifest
            .object
            .pointer("/spec/region")
            .and_then(Value::as_str)
        {
            *regions.entry(region.to_owned()).or_insert(0) += 1;
        }
    }
    regions
}

/// The conflict with an earlier manifest that reaches the same product, if any; named only
/// within the same namespace, as the controller's status does.
fn older_claim(
    resource: &DynamicRegistration,
    reached: &HashMap<(&str, &str), Vec<&DynamicRegistration>>,
) -> Option<Problem> {
    let spec = &resource.spec;
    let older = reached
        .get(&(spec.product_id.as_str(), spec.region.as_str()))?
        .iter()
        .find(|other| claims::competes(spec, &other.spec))?;
    Some(Problem::Conflict {
        owner: (older.metadata.namespace == resource.metadata.namespace)
            .then(|| older.metadata.name.clone().unwrap_or_default()),
    })
}

/// The controller's decision for a resource seen for the first time, as a plan row.
pub fn decide(
    planned: Planned,
    spec: &DynamicRegistrationSpec,
    cloud: Result<&Product, &Problem>,
) -> Planned {
    let suspended = Problem::Suspended;
    let cloud = if spec.suspend { Err(&suspended) } else { cloud };
    let decided = decision::plan(PlanInput {
        spec,
        generation: 1,
        last_status: None,
        cloud,
        // The cluster is not known: the Secret decision does not concern the cloud.
        secret: &SecretState::Absent,
        secret_name: "",
        secret_labels: &BTreeMap::new(),
        selected_label_keys: &[],
        just_asked: None,
    });
    let changes = match cloud {
        Ok(product) => decision::field_differences(spec, product),
        Err(_) => Vec::new(),
    };
    let verdict = decided.verdict;
    let action = match verdict.reason {
        _ if decided.update.is_some() => Action::Update,
        Reason::InSync => Action::NoChange,
        Reason::Observed if changes.is_empty() => Action::NoChange,
        Reason::Observed => Action::Drift,
        Reason::Suspended => Action::Suspended,
        Reason::Conflict => Action::Conflict,
        Reason::InvalidSpec | Reason::InvalidRequest | Reason::SecretTemplateInvalid => {
            Action::Invalid
        }
        Reason::ProductNotFound => Action::NotFound,
        Reason::ProductForbidden => Action::Forbidden,
        Reason::ProductTypeNotSupported => Action::Unsupported,
        Reason::AuthFailed => Action::AuthFailed,
        Reason::AccountSuspended => Action::AccountSuspended,
        _ => Action::Error,
    };
    let detail = match action {
        Action::Update | Action::NoChange => None,
        Action::Drift => verdict.drift,
        _ => Some(verdict.message),
    };
    Planned {
        action,
        changes,
        detail,
        ..planned
    }
}

/// The identity of a manifest as written, before validation (which may refuse it).
fn written(origin: Origin, object: &Value) -> Planned {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Planned {
        origin,
        namespace: object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned),
        name: text("/metadata/name"),
        product_id: text("/spec/productId"),
        region: text("/spec/region"),
        action: Action::NoChange,
        changes: Vec::new(),
        detail: None,
    }
}

fn refused(planned: Planned, action: Action, detail: String) -> Planned {
    Planned {
        action,
        detail: Some(detail),
        ..planned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{ErrorClass, RegisterType};
    use crate::controller::decision::fixtures::{product, spec};
    use crate::controller::resources::{ManagementPolicy, RegistrationMode};

    fn row() -> Planned {
        written(
            Origin {
                file: "f.yaml".to_owned(),
                document: 1,
            },
            &Value::Null,
        )
    }

    /// The plan says "update" exactly when the controller's decision updates, with the values
    /// it would ask for; otherwise the controller's verdict names the action.
    #[test]
    fn plan_and_controller_decide_alike() {
        let mut observe_only = spec(RegistrationMode::PreCreate, 5);
        observe_only.management_policy = ManagementPolicy::ObserveOnly;
        let mut suspended = spec(RegistrationMode::AutoCreate, 5);
        suspended.suspend = true;
        let not_found = Problem::Cloud {
            class: ErrorClass::NotFound,
            message: "gone".to_owned(),
        };
        let specs = [
            spec(RegistrationMode::AutoCreate, 5),
            spec(RegistrationMode::Disabled, 0),
            observe_only,
            suspended,
        ];
        let products = [
            product(RegisterType::Disabled, 0, None),
            product(RegisterType::AutoCreate, 5, Some("s")),
            product(RegisterType::PreCreate, 5, Some("s")),
        ];
        for spec in &specs {
            for cloud in products.iter().map(Ok).chain([Err(&not_found)]) {
                let planned = decide(row(), spec, cloud);
                let suspended = Problem::Suspended;
                let controller = decision::plan(PlanInput {
                    spec,
                    generation: 1,
                    last_status: None,
                    cloud: if spec.suspend { Err(&suspended) } else { cloud },
                    secret: &SecretState::Absent,
                    secret_name: "s",
                    secret_labels: &BTreeMap::new(),
                    selected_label_keys: &[],
                    just_asked: None,
                });
                let case = format!("{spec:?} / {cloud:?}");
                assert_eq!(
                    planned.action == Action::Update,
                    controller.update.is_some(),
                    "{case}"
                );
                if let Some(update) = controller.update {
                    let wanted: Vec<_> = planned.changes.iter().map(|c| c.wanted.clone()).collect();
                    for value in wanted {
                        assert!(
                            value == format!("{:?}", RegistrationMode::from(update.register_type))
                                || value == update.register_limit.to_string(),
                            "{case}: {value}"
                        );
                    }
                } else {
                    let expected = match controller.verdict.reason {
                        Reason::InSync => Action::NoChange,
                        Reason::Observed if controller.verdict.drift.is_some() => Action::Drift,
                        Reason::Observed => Action::NoChange,
                        Reason::Suspended => Action::Suspended,
                        Reason::ProductNotFound => Action::NotFound,
                        other => panic!("{case}: unexpected {other:?}"),
                    };
                    assert_eq!(planned.action, expected, "{case}");
                }
            }
        }
    }
}
