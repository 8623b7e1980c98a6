//! End-to-end: two teams with their own cloud accounts in one controller. Team A's bulk import
//! waits for A's quota; team B's resources converge at B's own rate meanwhile.

mod support;

use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::{DynamicRegistration, RegistrationMode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::json;
use support::e2e::{Harness, SECRET_ID, SECRET_KEY, registration};

const LIMIT: u64 = 20;
const A_BACKLOG: usize = 400;
const B_COUNT: usize = 20;
const B_SECRET_ID: &str = "AKIDteamB00000000002";
const B_SECRET_KEY: &str = "team-b-SECRETKEY-never-logged-7c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_teams_backlog_does_not_hold_another_teams_resources() {
    let seed = format!(
        "accounts:\n- {{secretId: {SECRET_ID}, secretKey: {SECRET_KEY}, account: team-a}}\n\
         - {{secretId: {B_SECRET_ID}, secretKey: {B_SECRET_KEY}, account: team-b}}\n\
         generate: {{count: {A_BACKLOG}, region: ap-guangzhou, prefix: FAIRA, account: team-a}}\n\
         products:\n{}",
        (0..B_COUNT)
            .map(|index| format!(
                "- {{productId: FAIRB{index:05}, region: ap-guangzhou, account: team-b}}\n"
            ))
            .collect::<String>()
    );
    let Some(harness) = Harness::start_seeded(&seed, |config| {
        config.rate_limit_per_second = LIMIT as u32;
    })
    .await
    else {
        return;
    };
    harness.create_credentials("team-a", SECRET_KEY).await;
    let team_b: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-b"},
        "stringData": {"secretId": B_SECRET_ID, "secretKey": B_SECRET_KEY}
    }))
    .unwrap();
    harness
        .secrets()
        .create(&PostParams::default(), &team_b)
        .await
        .unwrap();
    // Everything exists before the controller starts, B's resources last, as after a restart
    // in the middle of A's import.
    let resources = (0..A_BACKLOG)
        .map(|index| {
            team_resource(
                &format!("a{index:03}"),
                &format!("FAIRA{index:05}"),
                "team-a",
            )
        })
        .chain((0..B_COUNT).map(|index| {
            team_resource(
                &format!("b{index:03}"),
                &format!("FAIRB{index:05}"),
                "team-b",
            )
        }))
        .collect::<Vec<_>>();
    for chunk in resources.chunks(50) {
        let creations = chunk.iter().map(|resource| {
            let api = harness.registrations();
            async move { api.create(&PostParams::default(), resource).await.unwrap() }
        });
        futures::future::join_all(creations).await;
    }

    // Few permits per team, so that without a queue per team A's backlog would fill them all.
    let controller = harness.spawn_controller(&["--concurrency", "16"]);
    let started = Instant::now();
    harness
        .wait_for(
            "team B's resources Ready",
            Duration::from_secs(120),
            Some(&controller),
            || async { (ready_of_team(&harness, "b").await == B_COUNT).then_some(()) },
        )
        .await;
    let b_ready = started.elapsed();
    let a_ready_then = ready_of_team(&harness, "a").await;
    harness
        .wait_all_ready(A_BACKLOG + B_COUNT, Duration::from_secs(180), &controller)
        .await;
    let a_ready = started.elapsed();
    let stats = harness.emulator_get("stats").await;
    println!(
        "B ({B_COUNT}) all Ready after {b_ready:.2?} (A had {a_ready_then} of {A_BACKLOG} then); \
         A all Ready after {a_ready:.2?}; peaks {}; RequestLimitExceeded {}",
        stats["peaks"], stats["requestLimitExceeded"]
    );

    // B's own rate would take B_COUNT / LIMIT = 1 s; the bound leaves room for a slow machine
    // but not for waiting behind A's backlog (A_BACKLOG / LIMIT = 20 s).
    let b_bound = Duration::from_secs(B_COUNT as u64 / LIMIT + 8);
    assert!(b_ready <= b_bound, "B took {b_ready:?} (bound {b_bound:?})");
    assert!(
        a_ready_then < A_BACKLOG / 2,
        "B finished only once A's backlog was half done ({a_ready_then} of {A_BACKLOG})"
    );
    // A still gets its whole quota: its backlog at its own rate, no faster than the limit.
    let a_ideal = Duration::from_secs(A_BACKLOG as u64 / LIMIT);
    assert!(a_ready >= a_ideal.mul_f64(0.9), "A took {a_ready:?}");
    assert!(a_ready <= a_ideal * 3, "A took {a_ready:?}");
    assert_eq!(stats["requestLimitExceeded"], 0);
    for peak in stats["peaks"].as_array().unwrap() {
        let calls = peak["peakCallsPerSecond"].as_u64().unwrap();
        assert!(calls <= LIMIT, "{peak}");
    }
    harness.assert_no_secrets_logged(&controller).await;
    assert!(!controller.stderr().contains(B_SECRET_KEY));
}

fn team_resource(name: &str, product_id: &str, credentials: &str) -> DynamicRegistration {
    let mut resource = registration(name, product_id, RegistrationMode::AutoCreate, 1000);
    resource.spec.credentials_secret_ref =
        Some(serde_json::from_value(json!({"name": credentials})).unwrap());
    resource
}

/// How many resources of a team (by name prefix) are Ready for their current generation.
async fn ready_of_team(harness: &Harness, prefix: &str) -> usize {
    harness
        .ready_names()
        .await
        .iter()
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// With one permit per queue, resources whose credentials change while they wait in their queue
/// move to the queue of the new ones; the permits they leave go on, and every resource of both
/// queues converges. (A permit reserved for a moved resource used to stay taken until someone
/// entered that queue again, which parked resources never do.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_that_switch_credentials_while_parked_leave_no_queue_stalled() {
    const COUNT: usize = 8;
    let products = format!("generate: {{count: {COUNT}, region: ap-guangzhou, prefix: SWTCH}}");
    let Some(harness) = Harness::start_seeded(
        &format!("accounts: [{{secretId: {SECRET_ID}, secretKey: {SECRET_KEY}}}]\n{products}"),
        |_| {},
    )
    .await
    else {
        return;
    };
    harness.create_credentials("creds-a", SECRET_KEY).await;
    harness.create_credentials("creds-b", SECRET_KEY).await;
    for index in 0..COUNT {
        let name = format!("r{index}");
        let product = format!("SWTCH{index:05}");
        harness
            .create(team_resource(&name, &product, "creds-a"))
            .await;
    }
    // One permit per queue, and two updates a second: all but one wait in queue a.
    let controller = harness.spawn_controller(&[
        "--concurrency",
        "1",
        "--rate-limit",
        "UpdateProductDynamicRegister=2",
    ]);
    harness
        .wait_ready(&controller, Duration::from_secs(20))
        .await;
    // Every other resource switches to creds-b while parked in queue a.
    for index in (1..COUNT).step_by(2) {
        harness
            .registrations()
            .patch(
                &format!("r{index}"),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"spec": {"credentialsSecretRef": {"name": "creds-b"}}}),
                ),
            )
            .await
            .unwrap();
    }
    let started = Instant::now();
    harness
        .wait_all_ready(COUNT, Duration::from_secs(40), &controller)
        .await;
    println!("all {COUNT} Ready {:?} after the switch", started.elapsed());
}
