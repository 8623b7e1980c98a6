//! Every state the controller can settle in, read as kstatus reads it (sigs.k8s.io/cli-utils:
//! Flux's health checks, `kubectl wait --for=condition=Ready`, and deploy/argocd-health.lua):
//! nothing the controller leaves alone may read "in progress".

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::fixtures::{product, published, spec};
use super::*;
use crate::cloud::{ErrorClass, Product, RegisterType, RegistrationRequest};
use crate::controller::resources::{
    DynamicRegistrationSpec, DynamicRegistrationStatus, RegistrationMode,
};

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
        Problem::CredentialsBackingOff {
            secret_id: "i".into(),
            code: "c".into(),
        },
        Problem::CredentialsBackingOff {
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
