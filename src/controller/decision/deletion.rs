//! Deleting a resource that holds our finalizer: with `deletionPolicy: Disable`, registration is
//! switched off in the cloud first; whatever cannot be done never wedges the deletion forever
//! without saying how to let go.

use super::{Problem, Progress, Reason, Verdict, problem_verdict};
use crate::cloud::{ErrorClass, RegisterType, RegistrationRequest};
use crate::controller::resources::{
    CloudSettings, DeletionPolicy, DynamicRegistrationSpec, ManagementPolicy, SecretRetention,
};

/// An Event to publish about the deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// A Warning (else Normal).
    pub warning: bool,
    /// The Event's reason.
    pub reason: &'static str,
    /// The Event's text.
    pub message: String,
}

/// The next step of a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeletionStep {
    /// Remove the finalizer and let the resource go, publishing `note` if there is one.
    Release {
        /// What to tell people about the cloud.
        note: Option<Note>,
    },
    /// Cannot go yet: record this verdict and retry.
    Blocked(Verdict),
}

const LET_GO: &str = "fix it, or set deletionPolicy: Orphan to delete without touching the cloud";

/// The change to make in the cloud before the resource may go; `None`: let it go as it is.
/// ObserveOnly never writes, whatever the deletion policy (the API server refuses the pair, but
/// an object stored before that rule may still hold it).
pub fn cloud_change(spec: &DynamicRegistrationSpec) -> Option<RegistrationRequest> {
    match (spec.management_policy, spec.deletion_policy) {
        (ManagementPolicy::ObserveOnly, _) | (_, DeletionPolicy::Orphan) => None,
        (ManagementPolicy::Full, DeletionPolicy::Disable) => Some(RegistrationRequest {
            register_type: RegisterType::Disabled,
            register_limit: u64::try_from(spec.register_limit.unwrap_or(0)).unwrap_or(0),
        }),
    }
}

/// The update that switches registration off before the resource goes: RegisterType 0 with the
/// limit the cloud holds (`cloud`, as last seen), not the spec's: the cloud may have refused
/// the spec's limit, and asking it again would fail the disabling and stall the deletion. The
/// spec's limit only when the cloud's was never seen.
pub fn disabling(
    spec: &DynamicRegistrationSpec,
    cloud: Option<&CloudSettings>,
) -> Option<RegistrationRequest> {
    let mut wanted = cloud_change(spec)?;
    if let Some(cloud) = cloud {
        wanted.register_limit = u64::try_from(cloud.register_limit).unwrap_or(0);
    }
    Some(wanted)
}

/// Whether deleting the resource has work to do before it goes, so that it must carry our
/// finalizer: a change in the cloud, or a published Secret to keep (`secretRetention: Retain`,
/// whose ownerReference must go before the garbage collector sees the resource gone).
pub fn needs_finalizer(spec: &DynamicRegistrationSpec) -> bool {
    cloud_change(spec).is_some() || spec.secret_retention == SecretRetention::Retain
}

/// When the resource may not call the cloud.
pub fn without_access(problem: &Problem) -> DeletionStep {
    match problem {
        // Suspended: hands off the cloud. Conflict: the product is another resource's.
        Problem::Suspended | Problem::Conflict { .. } => DeletionStep::Release {
            note: Some(left_as_is(
                "the resource is suspended or does not own the product".to_owned(),
            )),
        },
        _ => DeletionStep::Blocked(Verdict::new(
            false,
            Reason::Deleting,
            Progress::Stalled,
            format!(
                "cannot disable dynamic registration before deletion: {}; {LET_GO}",
                problem_verdict(problem).message
            ),
        )),
    }
}

/// Registration is off in the cloud: the resource may go.
pub fn after_disabled(request_id: &str) -> DeletionStep {
    DeletionStep::Release {
        note: Some(Note {
            warning: false,
            reason: "RegistrationDisabled",
            message: format!("set RegisterType Disabled before deletion (RequestId {request_id})"),
        }),
    }
}

/// The disabling call failed.
pub fn after_failed_disable(class: ErrorClass, message: &str) -> DeletionStep {
    let blocked = |progress, text: String| {
        DeletionStep::Blocked(Verdict::new(false, Reason::Deleting, progress, text))
    };
    match class {
        // Nothing to disable, or the cloud will never take it: do not wedge the deletion.
        ErrorClass::NotFound | ErrorClass::Forbidden | ErrorClass::Unsupported => {
            DeletionStep::Release {
                note: Some(left_as_is(message.to_owned())),
            }
        }
        ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Unknown => blocked(
            Progress::Retrying,
            format!("disabling dynamic registration before deletion failed, retrying: {message}"),
        ),
        ErrorClass::Auth | ErrorClass::ClockSkew | ErrorClass::Account | ErrorClass::Invalid => {
            blocked(
                Progress::Stalled,
                format!("cannot disable dynamic registration before deletion: {message}; {LET_GO}"),
            )
        }
    }
}

fn left_as_is(why: String) -> Note {
    Note {
        warning: true,
        reason: "CloudLeftAsIs",
        message: format!("deleted without disabling registration: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decision::fixtures::spec;
    use crate::controller::resources::RegistrationMode;

    fn released_with(step: &DeletionStep) -> Option<&'static str> {
        match step {
            DeletionStep::Release { note } => Some(note.as_ref().map_or("-", |n| n.reason)),
            _ => None,
        }
    }

    fn blocked_as(step: &DeletionStep) -> Option<(Reason, Progress)> {
        match step {
            DeletionStep::Blocked(verdict) => Some((verdict.reason, verdict.progress)),
            _ => None,
        }
    }

    #[test]
    fn deletion_table() {
        let mut disable = spec(RegistrationMode::AutoCreate, 100);
        disable.deletion_policy = DeletionPolicy::Disable;
        let orphan = spec(RegistrationMode::AutoCreate, 100);
        assert_eq!(cloud_change(&orphan), None, "Orphan: let go as it is");
        let mut observing = disable.clone();
        observing.management_policy = ManagementPolicy::ObserveOnly;
        assert_eq!(cloud_change(&observing), None, "ObserveOnly never writes");
        assert_eq!(
            cloud_change(&disable),
            Some(RegistrationRequest {
                register_type: RegisterType::Disabled,
                register_limit: 100,
            }),
            "Disable: registration off first"
        );
        // With the limit the cloud holds: the spec's may be one the cloud refused.
        let clamped = CloudSettings {
            register_type: RegistrationMode::AutoCreate,
            register_limit: 1000,
        };
        assert_eq!(
            disabling(&disable, Some(&clamped)).map(|wanted| wanted.register_limit),
            Some(1000)
        );
        assert_eq!(
            disabling(&disable, None).map(|wanted| wanted.register_limit),
            Some(100),
            "the cloud never seen: the spec's"
        );
        assert_eq!(disabling(&orphan, Some(&clamped)), None);

        // (problem, expected: released with this Event reason, or blocked and stalled)
        let problems = [
            (Problem::Suspended, Some("CloudLeftAsIs")),
            (Problem::Conflict { owner: None }, Some("CloudLeftAsIs")),
            (Problem::CredentialsMissing { secret: "c".into() }, None),
            (
                Problem::CredentialsBackingOff {
                    secret_id: "AKID".into(),
                    code: "AuthFailure.SignatureFailure".into(),
                },
                None,
            ),
        ];
        for (problem, released) in problems {
            let step = without_access(&problem);
            match released {
                Some(reason) => assert_eq!(released_with(&step), Some(reason), "{problem:?}"),
                None => {
                    assert_eq!(
                        blocked_as(&step),
                        Some((Reason::Deleting, Progress::Stalled)),
                        "{problem:?}"
                    );
                    let DeletionStep::Blocked(verdict) = step else {
                        unreachable!()
                    };
                    assert!(
                        verdict.message.contains("deletionPolicy: Orphan"),
                        "how to let go"
                    );
                }
            }
        }

        assert_eq!(
            released_with(&after_disabled("req-1")),
            Some("RegistrationDisabled")
        );
        let failures = [
            (ErrorClass::NotFound, None),
            (ErrorClass::Forbidden, None),
            (ErrorClass::Unsupported, None),
            (ErrorClass::Throttled, Some(Progress::Retrying)),
            (ErrorClass::Transient, Some(Progress::Retrying)),
            (ErrorClass::Unknown, Some(Progress::Retrying)),
            (ErrorClass::Auth, Some(Progress::Stalled)),
            (ErrorClass::Invalid, Some(Progress::Stalled)),
        ];
        for (class, blocked) in failures {
            let step = after_failed_disable(class, "the error");
            match blocked {
                None => assert_eq!(released_with(&step), Some("CloudLeftAsIs"), "{class:?}"),
                Some(progress) => assert_eq!(
                    blocked_as(&step),
                    Some((Reason::Deleting, progress)),
                    "{class:?}"
                ),
            }
        }
    }
}
