//! The client-side token buckets on tokio's paused clock: exact, fast and free of timing luck.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iothub_dynreg::cloud::limit::{BucketKey, Lane, RateLimiter, RateLimits};
use iothub_dynreg::cloud::{Action, Service};
use tokio::time::Instant;

fn key(secret_id: &str, action: Action) -> BucketKey {
    service_key(Service::IotHub, secret_id, action)
}

/// A bucket of `service`, at its public host.
fn service_key(service: Service, secret_id: &str, action: Action) -> BucketKey {
    BucketKey {
        endpoint: service.host(false),
        secret_id: secret_id.to_owned(),
        service,
        action,
    }
}

/// Most sends that fall in any window `[t, t + 1s)`, over every start `t`.
fn max_in_any_second(sends: &[Instant]) -> usize {
    let mut sorted = sends.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

async fn hammer(
    limiter: Arc<RateLimiter>,
    keys: Vec<BucketKey>,
    per_key: usize,
) -> Vec<Vec<Instant>> {
    let sends: Vec<Arc<Mutex<Vec<Instant>>>> = keys
        .iter()
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..per_key {
        for (key, log) in keys.iter().zip(&sends) {
            let (limiter, key, log) = (limiter.clone(), key.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                limiter.acquire(&key, Lane::Bulk).await;
                log.lock().unwrap().push(Instant::now());
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    sends
        .iter()
        .map(|log| log.lock().unwrap().clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn five_hundred_concurrent_calls_never_exceed_the_limit() {
    let limiter = Arc::new(RateLimiter::new(RateLimits::default()));
    let start = Instant::now();
    let sends = hammer(
        limiter,
        vec![key("AKIDone", Action::UpdateProductDynamicRegister)],
        500,
    )
    .await;
    let sends = &sends[0];
    let peak = max_in_any_second(sends);
    let elapsed = sends.iter().max().unwrap().duration_since(start);
    println!(
        "500 concurrent acquires at 20/s: max sends in any 1 s window = {peak}, last send after {elapsed:?}"
    );
    assert_eq!(sends.len(), 500);
    assert!(peak <= 20, "peak {peak} sends in one second");
    // Not slower than needed either: 499 gaps of 1 s / 20.
    assert!(elapsed <= Duration::from_millis(25_000), "{elapsed:?}");
    assert!(peak >= 19, "limiter far below the limit: {peak}");
}

#[tokio::test(start_paused = true)]
async fn each_key_service_and_action_has_its_own_bucket() {
    let mut limits = RateLimits::default();
    limits.set("DescribeProducts=5".parse().unwrap());
    let limiter = Arc::new(RateLimiter::new(limits));
    // The same action of IoT Explorer and IoT Video, even at one endpoint (the emulator's), is
    // two quotas, as is IoT Hub's update beside Explorer's modify.
    let at_one_endpoint = |service| BucketKey {
        endpoint: "127.0.0.1:9000".to_owned(),
        ..service_key(service, "AKIDone", Action::DescribeProductDynamicRegister)
    };
    let keys = vec![
        key("AKIDone", Action::UpdateProductDynamicRegister),
        key("AKIDtwo", Action::UpdateProductDynamicRegister),
        key("AKIDone", Action::DescribeProduct),
        service_key(
            Service::IotExplorer,
            "AKIDone",
            Action::ModifyProductDynamicRegister,
        ),
        at_one_endpoint(Service::IotExplorer),
        at_one_endpoint(Service::IotVideo),
        key("AKIDone", Action::DescribeProducts),
    ];
    let start = Instant::now();
    let sends = hammer(limiter, keys, 100).await;
    let peaks: Vec<usize> = sends.iter().map(|s| max_in_any_second(s)).collect();
    println!("per-bucket peaks: {peaks:?}");
    assert!(
        peaks[..6].iter().all(|&peak| (19..=20).contains(&peak)),
        "{peaks:?}"
    );
    assert!((4..=5).contains(&peaks[6]), "{peaks:?}");
    // The six 20/s buckets run side by side: 100 sends each take about 5 s, not 30 s.
    let first_three_done = sends[..6]
        .iter()
        .flatten()
        .max()
        .unwrap()
        .duration_since(start);
    assert!(
        first_three_done < Duration::from_secs(6),
        "{first_three_done:?}"
    );
}

/// Calls whose answers take up to 300 ms: the cloud may count each anywhere between our send
/// and our reading of the answer. Whatever it picks, no second holds more than the limit.
#[tokio::test(start_paused = true)]
async fn slow_answers_cannot_bunch_arrivals_beyond_the_limit() {
    let limiter = Arc::new(RateLimiter::new(RateLimits::default()));
    let key = key("AKIDslow", Action::DescribeProduct);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..300u64)
        .map(|call| {
            let (limiter, key, calls) = (limiter.clone(), key.clone(), calls.clone());
            tokio::spawn(async move {
                let permit = limiter.acquire(&key, Lane::Bulk).await;
                let sent = Instant::now();
                // A spread of latencies, some far above the 50 ms spacing.
                tokio::time::sleep(Duration::from_millis(call * 37 % 300)).await;
                let over = Instant::now();
                drop(permit);
                calls.lock().unwrap().push((sent, over));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut calls = calls.lock().unwrap().clone();
    calls.sort();
    // The worst cases for the cloud's count: early calls counted late, late calls early.
    for split in [0, 100, 150, 299] {
        let arrivals: Vec<Instant> = calls
            .iter()
            .enumerate()
            .map(|(n, (sent, over))| if n < split { *over } else { *sent })
            .collect();
        let peak = max_in_any_second(&arrivals);
        assert!(peak <= 20, "{peak} arrivals in one second (split {split})");
    }
    let elapsed = calls.last().unwrap().0.duration_since(start);
    println!("300 calls with answers taking 0–300 ms: last sent after {elapsed:?}");
    // The price is the round trip once per 20 calls: about 15 × (1 s + up to 0.3 s).
    assert!(elapsed <= Duration::from_millis(15 * 1300), "{elapsed:?}");
}
