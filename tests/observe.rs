//! Batch observation against a scripted cloud: one page serves many reads, refreshes happen
//! once for all waiters, and a list answer without the ProductSecret is completed by
//! DescribeProduct only when the secret is needed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use iothub_dynreg::cloud::observe::{Need, Observer};
use iothub_dynreg::cloud::retry::RetryPolicy;
use iothub_dynreg::cloud::{ClientConfig, CloudClient, Credentials, Endpoint, Service};
use support::scripted_cloud::{Reply, ScriptedCloud};

fn product(id: &str, secret: Option<&str>) -> String {
    let secret = secret.map_or(String::new(), |s| format!(r#","ProductSecret":"{s}""#));
    format!(
        r#"{{"ProductId":"{id}","ProductName":"n","ProductProperties":{{"RegisterType":2,"RegisterLimit":5{secret}}}}}"#
    )
}

fn page(products: &[String]) -> Reply {
    Reply::Json(format!(
        r#"{{"Response":{{"TotalCount":{},"Products":[{}],"RequestId":"r"}}}}"#,
        products.len(),
        products.join(",")
    ))
}

fn single(id: &str, secret: &str) -> Reply {
    let product = product(id, Some(secret));
    Reply::Json(format!(
        r#"{{"Response":{},"RequestId":"r"}}}}"#,
        &product[..product.len() - 1]
    ))
}

fn observer(cloud: &ScriptedCloud) -> Arc<Observer> {
    let client = CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&cloud.endpoint(), true).unwrap(),
        retry: RetryPolicy::none(),
        ..ClientConfig::default()
    })
    .unwrap();
    Arc::new(Observer::new(client, Duration::from_secs(60)))
}

fn actions(cloud: &ScriptedCloud) -> Vec<String> {
    cloud
        .received()
        .iter()
        .map(|r| r.headers["x-tc-action"].clone())
        .collect()
}

#[tokio::test]
async fn one_page_serves_every_reader_and_refreshes_once() {
    let cloud = ScriptedCloud::start([page(&[
        product("P1", Some("s1")),
        product("P2", Some("s2")),
    ])])
    .await;
    let observer = observer(&cloud);
    let creds = Credentials::new("AKID", "key");
    let reads: Vec<_> = (0..20)
        .map(|i| {
            let (observer, creds) = (observer.clone(), creds.clone());
            let id = if i % 2 == 0 { "P1" } else { "P2" };
            tokio::spawn(async move {
                observer
                    .observe(
                        (Service::IotHub, &creds),
                        "ap-guangzhou",
                        id,
                        20,
                        Need::SettingsAndSecret,
                    )
                    .await
            })
        })
        .collect();
    for read in reads {
        let observation = read.await.unwrap().unwrap();
        assert!(observation.product.registration.product_secret.is_some());
    }
    assert_eq!(
        actions(&cloud),
        ["DescribeProducts"],
        "one refresh for twenty readers"
    );
}

#[tokio::test]
async fn a_missing_secret_is_read_alone_only_when_needed() {
    let cloud = ScriptedCloud::start([
        page(&[product("P1", None)]),
        single("P1", "from-describe-product"),
    ])
    .await;
    let observer = observer(&cloud);
    let creds = Credentials::new("AKID", "key");
    let without = observer
        .observe(
            (Service::IotHub, &creds),
            "ap-guangzhou",
            "P1",
            1,
            Need::Settings,
        )
        .await
        .unwrap();
    assert!(without.product.registration.product_secret.is_none());
    assert_eq!(actions(&cloud), ["DescribeProducts"]);

    let with = observer
        .observe(
            (Service::IotHub, &creds),
            "ap-guangzhou",
            "P1",
            1,
            Need::SettingsAndSecret,
        )
        .await
        .unwrap();
    let secret = with.product.registration.product_secret.unwrap();
    assert_eq!(secret.expose(), "from-describe-product");
    assert_eq!(actions(&cloud), ["DescribeProducts", "DescribeProduct"]);

    // Remembered in the snapshot: no third call.
    observer
        .observe(
            (Service::IotHub, &creds),
            "ap-guangzhou",
            "P1",
            1,
            Need::SettingsAndSecret,
        )
        .await
        .unwrap();
    assert_eq!(cloud.received().len(), 2);
}

#[tokio::test]
async fn products_missing_from_the_snapshot_and_failures_are_shared() {
    let not_found = Reply::Json(
        r#"{"Response":{"Error":{"Code":"ResourceNotFound.ProductNotExist","Message":"gone"},"RequestId":"r"}}"#.into(),
    );
    let cloud = ScriptedCloud::start([page(&[product("P1", Some("s"))]), not_found]).await;
    let observer = observer(&cloud);
    let creds = Credentials::new("AKID", "key");
    let failure = observer
        .observe(
            (Service::IotHub, &creds),
            "ap-guangzhou",
            "GONE",
            2,
            Need::SettingsAndSecret,
        )
        .await
        .unwrap_err();
    assert_eq!(failure.code, "ResourceNotFound.ProductNotExist");
    assert_eq!(actions(&cloud), ["DescribeProducts", "DescribeProduct"]);

    // A refresh that fails answers every waiter for a moment instead of being repeated by each.
    let internal = || {
        Reply::Json(
            r#"{"Response":{"Error":{"Code":"InternalError","Message":"x"},"RequestId":"r"}}"#
                .into(),
        )
    };
    let failing = ScriptedCloud::start([internal(), internal(), internal()]).await;
    let observer = self::observer(&failing);
    let reads: Vec<_> = (0..10)
        .map(|_| {
            let (observer, creds) = (observer.clone(), creds.clone());
            tokio::spawn(async move {
                observer
                    .observe(
                        (Service::IotHub, &creds),
                        "ap-guangzhou",
                        "P1",
                        10,
                        Need::SettingsAndSecret,
                    )
                    .await
            })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap().unwrap_err().code, "InternalError");
    }
    assert_eq!(failing.received().len(), 1);
}

#[tokio::test]
async fn a_key_refused_the_list_reads_products_one_by_one_and_does_not_ask_again() {
    let refused = Reply::Json(
        r#"{"Response":{"Error":{"Code":"AuthFailure.UnauthorizedOperation","Message":"not authorized by CAM"},"RequestId":"r"}}"#.to_owned(),
    );
    let cloud = ScriptedCloud::start([refused, single("P1", "s1"), single("P2", "s2")]).await;
    let observer = observer(&cloud);
    let creds = Credentials::new("AKID", "key");
    for id in ["P1", "P2"] {
        let observation = observer
            .observe(
                (Service::IotHub, &creds),
                "ap-guangzhou",
                id,
                20,
                Need::Settings,
            )
            .await
            .unwrap();
        assert_eq!(observation.product.product_id, id);
    }
    assert_eq!(
        actions(&cloud),
        ["DescribeProducts", "DescribeProduct", "DescribeProduct"],
        "the refused list was asked again"
    );
}

/// Temporary credentials rotate: every rotation brings a new SecretId. What is kept per key
/// (snapshots, rate-limiter buckets, the credential gate's verdicts) must not grow with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_stays_bounded_over_two_hundred_rotations() {
    use iothub_dynreg::controller::credentials::CredentialGate;
    use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
    let accounts: Vec<String> = (0..200)
        .map(|i| format!("  - {{secretId: AKIDrotation{i:04}, secretKey: key-{i}}}"))
        .collect();
    let seed = format!(
        "accounts:\n{}\nproducts: [{{productId: ROTATE0001, region: ap-guangzhou}}]\n",
        accounts.join("\n")
    );
    let emulator = RunningEmulator::start(EmulatorConfig::new(Seed::from_yaml(&seed).unwrap()))
        .await
        .unwrap();
    let client = CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&emulator.endpoint(), true).unwrap(),
        ..ClientConfig::default()
    })
    .unwrap();
    let interval = Duration::from_millis(50);
    let observer = Observer::new(client.clone(), interval);
    let gate = CredentialGate::new(interval);
    let (mut most_snapshots, mut most_buckets, mut most_verdicts) = (0, 0, 0);
    for rotation in 0..200 {
        let creds = Credentials::new(
            format!("AKIDrotation{rotation:04}"),
            format!("key-{rotation}"),
        );
        let probe = gate.admit(&creds).await.unwrap();
        observer
            .observe(
                (Service::IotHub, &creds),
                "ap-guangzhou",
                "ROTATE0001",
                1,
                Need::Settings,
            )
            .await
            .unwrap();
        gate.accepted(&creds);
        drop(probe);
        most_snapshots = most_snapshots.max(observer.snapshot_count());
        most_buckets = most_buckets.max(client.limiter_buckets());
        most_verdicts = most_verdicts.max(gate.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "over 200 rotations at most {most_snapshots} snapshots, {most_buckets} limiter buckets, {most_verdicts} gate verdicts held at once"
    );
    // Without eviction each would reach 200: a snapshot, a bucket and a verdict per key.
    assert!(most_snapshots <= 20, "{most_snapshots} snapshots");
    assert!(most_verdicts <= 20, "{most_verdicts} verdicts");
    // A bucket stays one window (1 s) after its last call: about 1 s / 25 ms of keys.
    assert!(most_buckets <= 80, "{most_buckets} buckets");
}
