//! End-to-end: 200 resources at the cloud's limit, and the process killed and stopped.

mod support;

use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::RegistrationMode;
use support::e2e::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_resources_at_the_rate_limit_without_throttling() {
    let Some(harness) = Harness::with_credentials(
        "generate: {count: 200, region: ap-guangzhou, prefix: SCALE}",
        |config| {
            config.rate_limit_per_second = 20;
        },
    )
    .await
    else {
        return;
    };
    let controller = harness.spawn_controller(&["--resync-interval", "10m"]);
    let started = Instant::now();
    let creations = (0..200).map(|index| {
        let harness = &harness;
        async move {
            harness
                .create_registration(
                    &format!("r{index:03}"),
                    &format!("SCALE{index:05}"),
                    RegistrationMode::AutoCreate,
                    1000,
                )
                .await
        }
    });
    futures::future::join_all(creations).await;
    harness
        .wait_all_ready(200, Duration::from_secs(120), &controller)
        .await;
    let elapsed = started.elapsed();
    let stats = harness.emulator_get("stats").await;
    println!(
        "200 resources Ready in {elapsed:?}; peaks {} ; RequestLimitExceeded {}; calls {}",
        stats["peakCallsPerSecondByAction"], stats["requestLimitExceeded"], stats["calls"]
    );
    assert_eq!(stats["requestLimitExceeded"], 0);
    for (action, peak) in stats["peakCallsPerSecondByAction"].as_object().unwrap() {
        assert!(
            peak.as_u64().unwrap() <= 20,
            "{action} peaked at {peak} calls per second"
        );
    }
    assert_eq!(
        stats["calls"]["UpdateProductDynamicRegister"]["Success"],
        200
    );
    // Observation in batches: one DescribeProducts page covers all 200 products; the snapshot
    // is refreshed at most every 2 s (the harness's --observe-interval), and no product needs
    // to be read alone.
    let single_reads = stats["calls"]["DescribeProduct"]["Success"]
        .as_u64()
        .unwrap_or(0);
    let pages = stats["calls"]["DescribeProducts"]["Success"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(single_reads, 0, "{}", stats["calls"]);
    assert!(
        pages <= elapsed.as_secs() / 2 + 2,
        "{pages} DescribeProducts calls in {elapsed:?}"
    );
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_way_it_converges_after_restart_and_sigterm_stops_it_cleanly() {
    let Some(harness) = Harness::with_credentials(
        "generate: {count: 60, region: ap-guangzhou, prefix: KILL}",
        |config| {
            config.rate_limit_per_second = 20;
        },
    )
    .await
    else {
        return;
    };
    let first = harness.spawn_controller(&[]);
    for index in 0..60 {
        harness
            .create_registration(
                &format!("k{index:02}"),
                &format!("KILL{index:06}"),
                RegistrationMode::PreCreate,
                3,
            )
            .await;
    }
    // Let it get part of the way, then SIGKILL it.
    harness
        .wait_for(
            "some progress",
            Duration::from_secs(30),
            Some(&first),
            || async { (harness.ready_names().await.len() >= 5).then_some(()) },
        )
        .await;
    first.signal(libc::SIGKILL);
    let done_before = harness.ready_names().await.len();
    println!("killed with {done_before}/60 Ready");
    drop(first);

    let mut second = harness.spawn_controller(&[]);
    harness
        .wait_all_ready(60, Duration::from_secs(60), &second)
        .await;
    let stats = harness.emulator_get("stats").await;
    assert_eq!(stats["requestLimitExceeded"], 0);
    let secrets = harness
        .secrets()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(secrets, 61, "60 published Secrets and the credentials");

    let stopping = Instant::now();
    second.signal(libc::SIGTERM);
    let status = second
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGTERM");
    println!("SIGTERM → exit {status} in {:?}", stopping.elapsed());
    assert!(status.success(), "exit status {status}");
    assert!(stopping.elapsed() < Duration::from_secs(5));
    harness.assert_no_secrets_logged(&second).await;
}
