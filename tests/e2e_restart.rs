//! End-to-end with kube-apiserver going away, as at every control-plane upgrade: restarted (with
//! etcd compacted in between, so resumed watches get 410 Gone and must list again), and while
//! the cloud fails too. A test binary of its own, its tests one at a time: a restart would
//! disturb any other test sharing the control plane.

mod support;

use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::RegistrationMode;
use iothub_dynreg::emulator::Faults;
use kube::ResourceExt;
use support::e2e::Harness;

const OUTAGE: Duration = Duration::from_secs(2);

/// The tests of this binary restart the shared API server: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_cloud_faults_and_api_server_restarts() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let products = "generate: {count: 30, region: ap-guangzhou, prefix: FAULT}";
    let Some(harness) = Harness::with_credentials(products, |config| {
        config.faults = Faults {
            latency_ms: 5,
            internal_error_rate: 0.1,
            http503_rate: 0.1,
            drop_rate: 0.1,
            ..Faults::default()
        };
    })
    .await
    else {
        return;
    };
    let controller = harness.spawn_controller(&["--resync-interval", "5s"]);
    let create = |range: std::ops::Range<usize>| {
        let harness = &harness;
        async move {
            for index in range {
                harness
                    .create_registration(
                        &format!("r{index}"),
                        &format!("FAULT{index:05}"),
                        RegistrationMode::AutoCreate,
                        50,
                    )
                    .await;
            }
        }
    };
    create(0..10).await;
    harness
        .wait_all_ready(10, Duration::from_secs(60), &controller)
        .await;
    let lists_before = harness.controller_calls("list", "dynamicregistrations");

    // A plain restart: the watches end and resume.
    harness.plane.restart_apiserver(OUTAGE).await;
    let back = Instant::now();
    create(10..20).await;
    harness
        .wait_all_ready(20, Duration::from_secs(90), &controller)
        .await;
    println!(
        "after a restart: 10 new resources Ready {:?} after the API server was back",
        back.elapsed()
    );

    // Compacted, then restarted: resuming from an old resourceVersion is refused (410 Gone).
    let revision = harness.plane.compact_etcd().await;
    harness.plane.restart_apiserver(OUTAGE).await;
    let back = Instant::now();
    create(20..30).await;
    harness
        .wait_all_ready(30, Duration::from_secs(90), &controller)
        .await;
    println!(
        "after compaction at revision {revision} and a restart: 10 new resources Ready {:?} after the API server was back",
        back.elapsed()
    );
    let relists = harness.controller_calls("list", "dynamicregistrations") - lists_before;
    assert!(
        relists >= 1,
        "the controller never listed again after the restarts"
    );
    println!("the controller listed the resources again {relists} times after the restarts");

    let stats = harness.emulator_get("stats").await;
    println!("calls under faults: {}", stats["calls"]);
    let actions = [
        "DescribeProduct",
        "DescribeProducts",
        "UpdateProductDynamicRegister",
    ];
    let injected: u64 = ["InternalError", "HTTP503", "Dropped"]
        .iter()
        .flat_map(|code| actions.iter().map(move |action| (action, code)))
        .map(|(action, code)| stats["calls"][action][code].as_u64().unwrap_or(0))
        .sum();
    assert!(injected > 0, "the faults were not exercised");
    // Every product updated in the cloud; exactly one published Secret per resource.
    for index in 0..30 {
        let cloud = harness.cloud_product(&format!("FAULT{index:05}")).await;
        assert_eq!(
            (
                cloud["registerType"].as_i64(),
                cloud["registerLimit"].as_i64()
            ),
            (Some(2), Some(50))
        );
    }
    let secrets = harness.secrets().list(&Default::default()).await.unwrap();
    let published = secrets
        .items
        .iter()
        .filter(|s| s.labels().contains_key("app.kubernetes.io/managed-by"))
        .count();
    assert_eq!(published, 30);
    harness.assert_no_secrets_logged(&controller).await;
}

/// Waits for `name` to be InSync; returns how long that took from `since`.
async fn in_sync_after(
    harness: &Harness,
    controller: &support::e2e::ControllerProcess,
    name: &str,
    since: Instant,
) -> Duration {
    harness
        .wait_reason(name, "InSync", Duration::from_secs(90), controller)
        .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_eight_second_outage_a_new_resource_is_reconciled_within_seconds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let products = "generate: {count: 3, region: ap-guangzhou, prefix: OUTAGE}";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    harness
        .create_registration("before", "OUTAGE0000", RegistrationMode::AutoCreate, 5)
        .await;
    harness
        .wait_reason("before", "InSync", Duration::from_secs(30), &controller)
        .await;

    let outage = Duration::from_secs(8);
    harness.plane.restart_apiserver(outage).await;
    let back = Instant::now();
    harness
        .create_registration(
            "after-restart",
            "OUTAGE0001",
            RegistrationMode::AutoCreate,
            5,
        )
        .await;
    let took = in_sync_after(&harness, &controller, "after-restart", back).await;
    println!(
        "8 s outage: a resource created when the API server was back was InSync after {took:?}"
    );
    assert!(
        took <= Duration::from_secs(10),
        "blind for {took:?} after a restart"
    );

    // etcd compacted, then the API server restarted: the watches' resume gets 410 Gone.
    harness.plane.compact_etcd().await;
    harness.plane.restart_apiserver(outage).await;
    let back = Instant::now();
    harness
        .create_registration(
            "after-compaction",
            "OUTAGE0002",
            RegistrationMode::AutoCreate,
            5,
        )
        .await;
    let took = in_sync_after(&harness, &controller, "after-compaction", back).await;
    println!("compaction and 8 s outage: InSync after {took:?}");
    assert!(
        took <= Duration::from_secs(10),
        "blind for {took:?} after compaction and a restart"
    );
    assert!(
        controller.stderr().contains("410 Gone"),
        "no watch was answered 410 Gone"
    );
}

/// The leader gauge on the controller's /metrics.
async fn leader_gauge(controller: &support::e2e::ControllerProcess) -> Option<f64> {
    let (_, body) = controller.ops("/metrics").await?;
    body.lines()
        .find(|line| line.starts_with("iothub_dynreg_leader "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_go_unanswered_steps_down_before_its_lease_runs_out() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let products = "generate: {count: 1, region: ap-guangzhou, prefix: FROZEN}";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[
        "--leader-election",
        "--leader-election-lease-duration",
        "3s",
    ]);
    harness
        .wait_for(
            "a leader",
            Duration::from_secs(20),
            Some(&controller),
            || async { (leader_gauge(&controller).await == Some(1.0)).then_some(()) },
        )
        .await;

    // The API server stops answering: the renewal hangs on an open connection.
    harness.plane.freeze_apiserver(true);
    let frozen = Instant::now();
    let stepped_down = tokio::time::timeout(Duration::from_secs(10), async {
        while leader_gauge(&controller).await != Some(0.0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        frozen.elapsed()
    })
    .await;
    harness.plane.freeze_apiserver(false);
    let stepped_down = stepped_down.expect("still leading 10 s after the API server froze");
    println!("renewals unanswered: stepped down after {stepped_down:?} (lease 3 s)");
    assert!(
        stepped_down < Duration::from_secs(3),
        "stepped down after {stepped_down:?}, when others may already lead"
    );

    // Answered again: it leads again.
    harness
        .wait_for(
            "leading again",
            Duration::from_secs(20),
            Some(&controller),
            || async { (leader_gauge(&controller).await == Some(1.0)).then_some(()) },
        )
        .await;
}

/// The controller's resident memory now, in MiB.
fn rss_mib(controller: &support::e2e::ControllerProcess) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", controller.pid())).unwrap();
    let kib: f64 = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Leading, with `count` suspended resources in its cache.
async fn settled(controller: &support::e2e::ControllerProcess, count: usize) -> Option<()> {
    let expected = format!("iothub_dynreg_resources{{reason=\"Suspended\"}} {count}");
    let leading = leader_gauge(controller).await == Some(1.0);
    let (_, metrics) = controller.ops("/metrics").await?;
    (leading && metrics.contains(&expected)).then_some(())
}

/// Writes the controller made (not to its Lease), counted from the audit log.
fn writes(harness: &Harness) -> Vec<String> {
    harness
        .controller_requests()
        .into_iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .filter(|r| r.resource != "leases")
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.name))
        .collect()
}

/// Five leaderships lost (the API server frozen past the renew deadline, then back):
/// everything a leadership started ends with it. A replica makes no write while it does not lead,
/// and its memory comes back to one leadership's worth instead of keeping every lost leadership's caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leadership_terms_leave_nothing_running() {
    const COUNT: usize = 2000;
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: TERMS00001, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    // Suspended: each costs one status write, then nothing; only the caches hold them.
    for chunk in (0..COUNT).collect::<Vec<_>>().chunks(100) {
        let creations = chunk.iter().map(|index| {
            let mut resource = support::e2e::registration(
                &format!("held-{index:04}"),
                "TERMS00001",
                RegistrationMode::AutoCreate,
                1,
            );
            resource.spec.suspend = true;
            harness.create(resource)
        });
        futures::future::join_all(creations).await;
    }
    let controller = harness.spawn_controller(&[
        "--leader-election",
        "--leader-election-lease-duration",
        "3s",
    ]);
    harness
        .wait_for(
            "every resource suspended",
            Duration::from_secs(90),
            Some(&controller),
            || settled(&controller, COUNT),
        )
        .await;
    let one_leadership = rss_mib(&controller);
    for leadership in 0..5 {
        harness.plane.freeze_apiserver(true);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let lost = leader_gauge(&controller).await == Some(0.0);
        let writes_before = writes(&harness).len();
        harness.plane.freeze_apiserver(false);
        assert!(lost, "leadership {leadership} not lost");
        harness
            .wait_for(
                "leading again",
                Duration::from_secs(30),
                Some(&controller),
                || settled(&controller, COUNT),
            )
            .await;
        let standing_by = &writes(&harness)[writes_before..];
        assert!(
            standing_by.is_empty(),
            "written while standing by after leadership {leadership}: {standing_by:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(&controller);
    println!(
        "{COUNT} resources: {one_leadership:.1} MiB after the first leadership, {after:.1} MiB after five lost"
    );
    assert!(
        after < one_leadership + 12.0,
        "{one_leadership:.1} MiB after one leadership, {after:.1} MiB after five lost: lost leaderships live on"
    );
}
