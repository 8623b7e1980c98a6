//! The client-side token buckets on tokio's paused clock: exact, fast and free of timing luck.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iothub_dynreg::cloud::Action;
use iothub_dynreg::cloud::limit::{BucketKey, Lane, RateLimiter, RateLimits};
use tokio::time::Instant;

fn key(secret_id: &str, action: Action) -> BucketKey {
    BucketKey {
        endpoint: "iotcloud.tencentcloudapi.com".to_owned(),
        secret_id: secret_id.to_owned(),
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
    // Not slower than needed either: 499 gaps of (1 s + guard) / 20.
    assert!(elapsed <= Duration::from_millis(26_300), "{elapsed:?}");
    assert!(peak >= 19, "limiter far below the limit: {peak}");
}

#[tokio::test(start_paused = true)]
async fn each_key_and_action_has_its_own_bucket() {
    let mut limits = RateLimits::default();
    limits.set("DescribeProducts=5".parse().unwrap());
    let limiter = Arc::new(RateLimiter::new(limits));
    let keys = vec![
        key("AKIDone", Action::UpdateProductDynamicRegister),
        key("AKIDtwo", Action::UpdateProductDynamicRegister),
        key("AKIDone", Action::DescribeProduct),
        key("AKIDone", Action::DescribeProducts),
    ];
    let start = Instant::now();
    let sends = hammer(limiter, keys, 100).await;
    let peaks: Vec<usize> = sends.iter().map(|s| max_in_any_second(s)).collect();
    println!("per-bucket peaks: {peaks:?}");
    assert!(
        peaks[..3].iter().all(|&peak| (19..=20).contains(&peak)),
        "{peaks:?}"
    );
    assert!((4..=5).contains(&peaks[3]), "{peaks:?}");
    // The three 20/s buckets run side by side: 100 sends each take about 5 s, not 15 s.
    let first_three_done = sends[..3]
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
