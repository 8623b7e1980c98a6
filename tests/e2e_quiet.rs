//! Quiet at rest, on the real API server: once every resource is in sync, resyncs write nothing
//! to Kubernetes (no status patch, no Event, no Secret, no finalizer), also right after a
//! restart of the controller, counted from the API server's audit log; the metric of the oldest
//! observation shows that checking goes on.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::{DeletionPolicy, ManagementPolicy, RegistrationMode};
use serde_json::json;
use support::e2e::{ControllerProcess, Harness, registration};

const PRODUCTS: &str = r#"
products:
  - {productId: QUIET00001, region: ap-guangzhou, registerType: 0}
  - {productId: QUIET00002, region: ap-guangzhou, registerType: 2, registerLimit: 50}
  - {productId: QUIET00003, region: ap-guangzhou, registerType: 0}
"#;

/// Three resyncs at the interval the controllers below run with.
const RESYNC: &str = "2s";
const THREE_RESYNCS: Duration = Duration::from_secs(7);

/// The controller's writes in this test's namespace (its own Lease aside), as audited.
fn writes(harness: &Harness) -> Vec<String> {
    harness
        .controller_requests()
        .into_iter()
        .filter(|request| ["create", "update", "patch", "delete"].contains(&request.verb.as_str()))
        .filter(|request| request.resource != "leases")
        .map(|request| format!("{} {} {}", request.verb, request.resource, request.name))
        .collect()
}

async fn metric(controller: &ControllerProcess, name: &str) -> f64 {
    let (_, body) = controller.ops("/metrics").await.expect("/metrics answers");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

fn spawn(harness: &Harness) -> ControllerProcess {
    harness.spawn_controller(&["--resync-interval", RESYNC, "--observe-interval", "1s"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_fleet_writes_nothing_over_resyncs_nor_after_a_restart() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let mut controller = spawn(&harness);
    // What puts finalizers, owner references and templates into play: a Disable resource
    // (its credentials protected), an ObserveOnly one, a templated Secret.
    let mut disabling = registration("full", "QUIET00001", RegistrationMode::AutoCreate, 10);
    disabling.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(disabling).await;
    let mut observing = registration("observed", "QUIET00002", RegistrationMode::AutoCreate, 50);
    observing.spec.management_policy = ManagementPolicy::ObserveOnly;
    harness.create(observing).await;
    let mut templated = registration("templated", "QUIET00003", RegistrationMode::PreCreate, 5);
    templated.spec.secret_template = Some(
        serde_json::from_value(json!({
            "data": {"config.json": "{{ {'productId': productId, 'secret': productSecret} | tojson }}"}
        }))
        .unwrap(),
    );
    harness.create(templated).await;
    harness
        .wait_all_ready(3, Duration::from_secs(30), &controller)
        .await;
    // The last writes of converging (a status, an Event) land within a resync.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let converged = writes(&harness);
    println!("writes while converging: {}", converged.len());

    let describes = harness.cloud_calls("DescribeProducts", "Success").await;
    tokio::time::sleep(THREE_RESYNCS).await;
    let resynced = harness.cloud_calls("DescribeProducts", "Success").await;
    assert!(
        resynced >= describes + 3,
        "resyncs read the cloud: {describes} → {resynced}"
    );
    let steady = writes(&harness);
    assert_eq!(
        steady[converged.len()..],
        [] as [String; 0],
        "writes in steady state"
    );
    let age = metric(
        &controller,
        "iothub_dynreg_oldest_ready_observation_age_seconds",
    )
    .await;
    assert!(
        age < 4.0,
        "the oldest Ready resource was checked {age} s ago"
    );

    // A restart over the converged fleet: it reads, decides, and writes nothing.
    controller.signal(libc::SIGTERM);
    controller
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    let controller = spawn(&harness);
    harness
        .wait_ready(&controller, Duration::from_secs(20))
        .await;
    tokio::time::sleep(THREE_RESYNCS).await;
    let reconciled = metric(
        &controller,
        "iothub_dynreg_reconciles_total{result=\"settled\"}",
    )
    .await;
    assert!(
        reconciled >= 6.0,
        "{reconciled} settled reconciles after the restart"
    );
    let restarted = writes(&harness);
    assert_eq!(
        restarted[converged.len()..],
        [] as [String; 0],
        "writes after the restart"
    );
    assert_eq!(harness.ready_names().await.len(), 3);
    harness.assert_no_secrets_logged(&controller).await;
}
