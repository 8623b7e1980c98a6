//! End-to-end: many teams under one controller. A key restricted by a CAM-like policy manages
//! what it may and is refused the rest without backing off; a key that may not list reads products
//! one by one; and a claim that cannot see a product never blocks one that can (no squatting).
//! A binary of its own: its controllers watch every namespace, one test at a time.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::{DynamicRegistration, RegistrationMode};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::e2e::{Harness, SECRET_ID, SECRET_KEY, registration};

fn seed() -> String {
    format!(
        r#"
accounts:
  - {{secretId: {SECRET_ID}, secretKey: {SECRET_KEY}}}
  - secretId: AKIDnarrowTEAMA00001
    secretKey: narrow-key
    policy: {{actions: [DescribeProduct, UpdateProductDynamicRegister], products: [TEN0000001, TEN0000002]}}
  - {{secretId: AKIDotherACCOUNT0001, secretKey: other-key, account: someone-else}}
products:
  - {{productId: TEN0000001, region: ap-guangzhou}}
  - {{productId: TEN0000002, region: ap-guangzhou}}
  - {{productId: TEN0000003, region: ap-guangzhou}}
  - {{productId: SQUAT00001, region: ap-guangzhou}}
"#
    )
}

async fn credentials(client: &kube::Client, namespace: &str, name: &str, id: &str, key: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"secretId": id, "secretKey": key}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Each test here runs a controller that watches every namespace: one at a time, so that no
/// controller reconciles another test's resources against its own emulator.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_restricted_to_some_products_manages_them_and_is_refused_the_rest() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(harness) = Harness::start_seeded(&seed(), |_| {}).await else {
        return;
    };
    let team = harness.namespace.clone();
    let client = harness.client.clone();
    let controller = harness.spawn_controller_cluster_wide(&["--resync-interval", "2s"]);

    // A key restricted to two products, without DescribeProducts.
    credentials(
        &client,
        &team,
        "narrow",
        "AKIDnarrowTEAMA00001",
        "narrow-key",
    )
    .await;
    for (name, product) in [
        ("r1", "TEN0000001"),
        ("r2", "TEN0000002"),
        ("r3", "TEN0000003"),
    ] {
        let mut resource = registration(name, product, RegistrationMode::AutoCreate, 9);
        resource.spec.credentials_secret_ref.as_mut().unwrap().name = "narrow".into();
        harness.create(resource).await;
    }
    let refused = harness
        .wait_reason(
            "r3",
            "ProductForbidden",
            Duration::from_secs(30),
            &controller,
        )
        .await;
    let message = refused.condition("Ready").unwrap().message.clone();
    assert!(
        message.contains("AuthFailure.UnauthorizedOperation"),
        "{message}"
    );
    for name in ["r1", "r2"] {
        harness
            .wait_reason(name, "InSync", Duration::from_secs(30), &controller)
            .await;
    }
    // Over a few resyncs the allowed two stay in sync: the key does not back off, and the refused
    // list is not asked again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for name in ["r1", "r2"] {
        assert_eq!(
            harness.ready_reason(name).await.unwrap().1,
            "InSync",
            "{name}"
        );
    }
    let refusals = harness
        .cloud_calls("DescribeProducts", "AuthFailure.UnauthorizedOperation")
        .await;
    println!(
        "restricted key: {} through single reads; DescribeProducts refused {refusals} time(s)",
        harness.cloud_calls("DescribeProduct", "Success").await
    );
    assert_eq!(refusals, 1, "the refused list was asked again");
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_cannot_see_the_product_never_blocks_one_that_can() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(harness) = Harness::start_seeded(&seed(), |_| {}).await else {
        return;
    };
    let team = harness.namespace.clone();
    let client = harness.client.clone();
    let controller = harness.spawn_controller_cluster_wide(&["--resync-interval", "2s"]);
    // Squatting: older claims in another namespace that cannot see the product.
    let squatters = format!("{team}-squatters");
    harness.plane.create_namespace(&client, &squatters).await;
    credentials(
        &client,
        &squatters,
        "other-account",
        "AKIDotherACCOUNT0001",
        "other-key",
    )
    .await;
    let in_squatters: Api<DynamicRegistration> = Api::namespaced(client.clone(), &squatters);
    let squat = |name: &str, credentials: &str| {
        let mut resource = registration(name, "SQUAT00001", RegistrationMode::Disabled, 0);
        resource.spec.credentials_secret_ref.as_mut().unwrap().name = credentials.into();
        resource
    };
    in_squatters
        .create(&PostParams::default(), &squat("no-credentials", "absent"))
        .await
        .unwrap();
    in_squatters
        .create(
            &PostParams::default(),
            &squat("wrong-account", "other-account"),
        )
        .await
        .unwrap();
    let reason_in = |name: &'static str| {
        let api = in_squatters.clone();
        move || {
            let api = api.clone();
            async move {
                let resource = api.get(name).await.ok()?;
                let ready = resource.condition("Ready")?;
                Some(ready.reason.clone())
            }
        }
    };
    for (name, expected) in [
        ("no-credentials", "CredentialsMissing"),
        ("wrong-account", "ProductNotFound"),
    ] {
        let found = harness
            .wait_for(
                name,
                Duration::from_secs(30),
                Some(&controller),
                reason_in(name),
            )
            .await;
        assert_eq!(found, expected, "{name}");
    }
    // The team's younger claim reaches the product: it manages it.
    harness
        .create_credentials("tencent-credentials", SECRET_KEY)
        .await;
    harness
        .create_registration("team-claim", "SQUAT00001", RegistrationMode::AutoCreate, 42)
        .await;
    harness
        .wait_reason("team-claim", "InSync", Duration::from_secs(30), &controller)
        .await;
    assert_eq!(
        harness.cloud_product("SQUAT00001").await["registerLimit"],
        42
    );

    // A still younger claim that does reach it, elsewhere: Conflict, and no change.
    credentials(&client, &squatters, "good", SECRET_ID, SECRET_KEY).await;
    in_squatters
        .create(&PostParams::default(), &squat("late", "good"))
        .await
        .unwrap();
    let found = harness
        .wait_for(
            "late",
            Duration::from_secs(30),
            Some(&controller),
            reason_in("late"),
        )
        .await;
    assert_eq!(found, "Conflict");
    // The other tenant is not named in the status; the controller's log names it.
    let late = in_squatters.get("late").await.unwrap();
    let message = late.condition("Ready").unwrap().message.clone();
    assert!(message.contains("in another namespace"), "{message}");
    assert!(
        !message.contains(&team) && !message.contains("team-claim"),
        "{message}"
    );
    assert!(controller.stderr().contains(&format!("{team}/team-claim")));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cloud = harness.cloud_product("SQUAT00001").await;
    assert_eq!(
        (
            cloud["registerType"].as_i64(),
            cloud["registerLimit"].as_i64()
        ),
        (Some(2), Some(42))
    );
    harness.assert_no_secrets_logged(&controller).await;
}

/// Connections accepted and never answered: a webhook that times out.
async fn black_hole() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Stops with the test's runtime.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}

/// A validating webhook on `namespace`'s Secrets that answers nothing: each write there waits
/// `timeout_seconds`, then goes ahead (failurePolicy Ignore).
fn slow_secret_writes(
    name: &str,
    namespace: &str,
    port: u16,
    timeout_seconds: i32,
) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "slow.secrets.example.com",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["secrets"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": timeout_seconds
        }]
    }))
    .unwrap()
}

/// Defect: the few permits for templated Secrets were held across the Secret's write, so one
/// tenant whose writes were slow (a webhook timing out) took every permit and every other
/// tenant's templated Secrets waited behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_slow_secret_writes_never_hold_up_another_tenants() {
    const SLOW: usize = 16;
    const FAST: usize = 8;
    const WEBHOOK_TIMEOUT: i32 = 10;
    let _turn = ONE_AT_A_TIME.lock().await;
    let products = format!(
        "generate: {{count: {}, region: ap-guangzhou, prefix: PLACE}}",
        SLOW + FAST
    );
    let Some(harness) = Harness::with_credentials(&products, |_| {}).await else {
        return;
    };
    let client = harness.client.clone();
    let slow = format!("{}-slow", harness.namespace);
    harness.plane.create_namespace(&client, &slow).await;
    credentials(&client, &slow, "tencent-credentials", SECRET_ID, SECRET_KEY).await;
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let webhook = webhooks
        .create(
            &PostParams::default(),
            &slow_secret_writes(&slow, &slow, black_hole().await, WEBHOOK_TIMEOUT),
        )
        .await
        .unwrap();
    let templated = |name: String, index: usize| {
        let product = format!("PLACE{index:05}");
        let mut resource = registration(&name, &product, RegistrationMode::AutoCreate, 5);
        resource.spec.secret_template = Some(
            serde_json::from_value(json!({"data": {"config": "secret={{ productSecret }}"}}))
                .unwrap(),
        );
        resource
    };
    let controller = harness.spawn_controller_cluster_wide(&[]);
    let in_slow: Api<DynamicRegistration> = Api::namespaced(client.clone(), &slow);
    for index in 0..SLOW {
        in_slow
            .create(
                &PostParams::default(),
                &templated(format!("slow-{index}"), index),
            )
            .await
            .unwrap();
    }
    // The slow tenant's writes are under way (each waits for the webhook).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    for index in SLOW..SLOW + FAST {
        harness
            .create(templated(format!("fast-{index}"), index))
            .await;
    }
    harness
        .wait_all_ready(FAST, Duration::from_secs(60), &controller)
        .await;
    let fast_took = started.elapsed();
    let slow_ready = in_slow
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|r| r.condition("Ready").is_some_and(|c| c.status == "True"))
        .count();
    println!(
        "{FAST} Secrets of one tenant written in {:.1} s while another's {SLOW} writes take \
         {WEBHOOK_TIMEOUT} s each ({slow_ready} of them done)",
        fast_took.as_secs_f64()
    );
    webhooks
        .delete(&webhook.name_any(), &Default::default())
        .await
        .unwrap();
    assert!(
        slow_ready < SLOW,
        "the webhook slowed nothing: the test proves nothing"
    );
    assert!(
        fast_took < Duration::from_secs(WEBHOOK_TIMEOUT as u64 / 2),
        "the fast tenant waited {fast_took:?} behind the slow one's writes"
    );
    harness.assert_no_secrets_logged(&controller).await;
}
