//! The status a reconcile records: kstatus conditions and what was observed and published.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::{Plan, Progress, Reason, Verdict};
use crate::controller::resources::DynamicRegistrationStatus;

/// What the status is made from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// The status recorded last time.
    pub previous: Option<&'a DynamicRegistrationStatus>,
    /// `metadata.generation` this reconcile saw.
    pub generation: i64,
    /// Where the ProductSecret is published.
    pub secret_name: &'a str,
    /// What this reconcile decided (after its update, if it made one).
    pub plan: &'a Plan,
    /// When the cloud state it decided on was read; `None` when the cloud could not be seen.
    pub observed_at: Option<Timestamp>,
    /// The RequestId of this reconcile's update call, if it made one.
    pub request_id: Option<&'a str>,
    /// The reconcile request (annotation value) this reconcile handled, if any.
    pub handled_request: Option<&'a str>,
    /// The time of this reconcile.
    pub now: &'a Time,
}

/// The status to record. A resync that finds nothing new gives the previous status unchanged,
/// times included, so that it writes nothing: `lastSyncTime` and `observationTime` move only
/// with a change a person or tool reads (the cloud's settings, the verdict, the Secret's name,
/// a handled reconcile request, a new generation).
pub fn next_status(input: StatusInput<'_>) -> DynamicRegistrationStatus {
    let mut status = next_status_keeping_times(&input);
    let changed = input.previous != Some(&status);
    if let (true, Some(observed_at)) = (changed, input.observed_at) {
        status.last_sync_time = Some(input.now.clone());
        status.observation_time = Some(Time(observed_at));
    }
    status
}

/// [`next_status`] with the previous status's times.
fn next_status_keeping_times(input: &StatusInput<'_>) -> DynamicRegistrationStatus {
    let previous = input.previous.cloned().unwrap_or_default();
    let verdict = &input.plan.verdict;
    // What was published stays published (the cloud could not be seen, or an update failed),
    // unless the name now belongs to someone else's Secret.
    let secret_name = if input.plan.secret_published {
        Some(input.secret_name.to_owned())
    } else if verdict.reason == Reason::SecretConflict {
        None
    } else {
        previous.secret_name.clone()
    };
    DynamicRegistrationStatus {
        observed_generation: Some(input.generation),
        conditions: conditions(verdict, input.generation, &previous.conditions, input.now),
        cloud: input.plan.cloud.clone().or(previous.cloud),
        secret_name,
        last_sync_time: previous.last_sync_time,
        observation_time: previous.observation_time,
        last_request_id: input
            .request_id
            .map(str::to_owned)
            .or(previous.last_request_id),
        last_handled_reconcile_at: input
            .handled_request
            .map(str::to_owned)
            .or(previous.last_handled_reconcile_at),
    }
}

/// The status of a suspended resource: the last verdict stands (so kstatus tools read what it
/// was: Current, Failed or InProgress), with a `Suspended` condition saying why nothing changes.
/// Suspended before its first verdict, it is Stalled: it will not progress until a person
/// resumes it. Every condition is stamped with the current generation: setting `suspend`
/// changes the generation, and `kubectl wait` ignores a condition of an older one.
pub fn while_suspended(
    previous: Option<&DynamicRegistrationStatus>,
    generation: i64,
    now: &Time,
) -> DynamicRegistrationStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let never_judged = !status.conditions.iter().any(|c| c.type_ == "Ready");
    if never_judged {
        let verdict = Verdict::new(
            false,
            Reason::Suspended,
            Progress::Stalled,
            "suspended before its first reconcile: nothing observed yet; set spec.suspend: false to start",
        );
        status.conditions = conditions(&verdict, generation, &[], now);
    }
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Suspended")
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    status.conditions.retain(|c| c.type_ != "Suspended");
    status.conditions.push(Condition {
        type_: "Suspended".to_owned(),
        status: "True".to_owned(),
        reason: Reason::Suspended.as_str().to_owned(),
        message: "spec.suspend is true: no cloud calls and no writes; the last verdict stands"
            .to_owned(),
        observed_generation: Some(generation),
        last_transition_time: since,
    });
    for condition in &mut status.conditions {
        condition.observed_generation = Some(generation);
    }
    status.observed_generation = Some(generation);
    status
}

/// The status while a deletion is blocked: the previous one, with the blocking verdict.
pub fn while_deleting(
    previous: Option<&DynamicRegistrationStatus>,
    generation: i64,
    blocked: &Verdict,
    now: &Time,
) -> DynamicRegistrationStatus {
    let previous = previous.cloned().unwrap_or_default();
    DynamicRegistrationStatus {
        conditions: conditions(blocked, generation, &previous.conditions, now),
        ..previous
    }
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
    if let Some(drift) = &verdict.drift {
        conditions.push(Condition {
            reason: Reason::Drifted.as_str().to_owned(),
            message: drift.clone(),
            ..make("Drifted", true)
        });
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;

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

#[cfg(test)]
mod next_status_tests {
    use super::*;
    use crate::controller::resources::{CloudSettings, RegistrationMode};

    fn plan(reason: Reason, published: bool, cloud: Option<i64>) -> Plan {
        Plan {
            update: None,
            write_secret: None,
            cloud: cloud.map(|limit| CloudSettings {
                register_type: RegistrationMode::AutoCreate,
                register_limit: limit,
            }),
            secret_published: published,
            verdict: Verdict::new(reason == Reason::InSync, reason, Progress::Settled, "m"),
        }
    }

    fn previous() -> DynamicRegistrationStatus {
        DynamicRegistrationStatus {
            observed_generation: Some(1),
            cloud: Some(CloudSettings {
                register_type: RegistrationMode::PreCreate,
                register_limit: 7,
            }),
            secret_name: Some("old-name".into()),
            last_sync_time: Some(Time(Timestamp::UNIX_EPOCH)),
            observation_time: Some(Time(Timestamp::UNIX_EPOCH)),
            last_request_id: Some("req-old".into()),
            ..DynamicRegistrationStatus::default()
        }
    }

    /// One row: the plan and what the reconcile saw, and the status fields that must follow.
    struct Row {
        name: &'static str,
        plan: Plan,
        observed: bool,
        request_id: Option<&'static str>,
        secret_name: Option<&'static str>,
        cloud_limit: Option<i64>,
        synced_now: bool,
        request: Option<&'static str>,
    }

    #[test]
    fn status_table() {
        let rows = [
            Row {
                name: "in sync: published under the current name, observed now",
                plan: plan(Reason::InSync, true, Some(100)),
                observed: true,
                request_id: None,
                secret_name: Some("sensors-product-secret"),
                cloud_limit: Some(100),
                synced_now: true,
                request: Some("req-old"),
            },
            Row {
                name: "an update made: its RequestId recorded",
                plan: plan(Reason::InSync, true, Some(100)),
                observed: true,
                request_id: Some("req-new"),
                secret_name: Some("sensors-product-secret"),
                cloud_limit: Some(100),
                synced_now: true,
                request: Some("req-new"),
            },
            Row {
                name: "cloud unseen: what was published and observed stays",
                plan: plan(Reason::CloudUnavailable, false, None),
                observed: false,
                request_id: None,
                secret_name: Some("old-name"),
                cloud_limit: Some(7),
                synced_now: false,
                request: Some("req-old"),
            },
            Row {
                name: "the name taken by a foreign Secret: no published name",
                plan: plan(Reason::SecretConflict, false, Some(100)),
                observed: true,
                request_id: None,
                secret_name: None,
                cloud_limit: Some(100),
                synced_now: true,
                request: Some("req-old"),
            },
        ];
        let now = Time(Timestamp::from_second(1_000).unwrap());
        let previous = previous();
        for row in rows {
            let status = next_status(StatusInput {
                previous: Some(&previous),
                generation: 2,
                secret_name: "sensors-product-secret",
                plan: &row.plan,
                observed_at: row.observed.then_some(Timestamp::from_second(990).unwrap()),
                request_id: row.request_id,
                handled_request: None,
                now: &now,
            });
            let name = row.name;
            assert_eq!(status.observed_generation, Some(2), "{name}");
            assert_eq!(status.secret_name.as_deref(), row.secret_name, "{name}");
            assert_eq!(
                status.cloud.map(|c| c.register_limit),
                row.cloud_limit,
                "{name}"
            );
            assert_eq!(
                status.last_sync_time.as_ref() == Some(&now),
                row.synced_now,
                "{name}"
            );
            assert_eq!(status.last_request_id.as_deref(), row.request, "{name}");
            assert_eq!(
                status.conditions[0].reason,
                row.plan.verdict.reason.as_str(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_resync_that_finds_nothing_new_gives_the_same_status_times_included() {
        let input = |previous, now: &'static str| {
            let plan = plan(Reason::InSync, true, Some(100));
            let now = Time(now.parse().unwrap());
            next_status(StatusInput {
                previous,
                generation: 2,
                secret_name: "sensors-product-secret",
                plan: &plan,
                observed_at: Some(now.0),
                request_id: None,
                handled_request: None,
                now: &now,
            })
        };
        let first = input(None, "2026-01-01T00:00:00Z");
        assert_eq!(
            first.last_sync_time,
            Some(Time("2026-01-01T00:00:00Z".parse().unwrap()))
        );
        let resynced = input(Some(&first), "2026-01-01T00:10:00Z");
        assert_eq!(resynced, first, "nothing new: nothing to write");
        // A new generation is news: the times move with it.
        let mut older = first.clone();
        older.observed_generation = Some(1);
        let changed = input(Some(&older), "2026-01-01T00:20:00Z");
        assert_eq!(
            changed.observation_time,
            Some(Time("2026-01-01T00:20:00Z".parse().unwrap()))
        );
    }

    #[test]
    fn a_blocked_deletion_keeps_the_status_and_says_why() {
        let now = Time(Timestamp::from_second(1_000).unwrap());
        let blocked = Verdict::new(false, Reason::Deleting, Progress::Stalled, "why");
        let status = while_deleting(Some(&previous()), 1, &blocked, &now);
        assert_eq!(status.secret_name.as_deref(), Some("old-name"));
        assert_eq!(status.conditions[0].reason, "Deleting");
        assert_eq!(status.conditions[1].type_, "Stalled");
    }
}
