//! End-to-end: credentials problems and permanent cloud errors.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::RegistrationMode;
use support::e2e::{Harness, SECRET_KEY, registration};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_missing_then_created_then_rotated_without_restart() {
    let Some(harness) = Harness::start(
        "products: [{productId: CRED000001, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    harness
        .create_registration("sensors", "CRED000001", RegistrationMode::PreCreate, 10)
        .await;

    let missing = harness
        .wait_reason(
            "sensors",
            "CredentialsMissing",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    assert!(
        missing
            .condition("Stalled")
            .is_some_and(|c| c.status == "True")
    );
    assert_eq!(
        harness.emulator_get("stats").await["totalCalls"],
        0,
        "no cloud call without credentials"
    );

    // Created, but with a wrong key: the Secret watch brings the resource back at once.
    harness
        .create_credentials("tencent-credentials", "a-wrong-key")
        .await;
    let refused = harness
        .wait_reason(
            "sensors",
            "AuthFailed",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    assert!(
        refused
            .condition("Ready")
            .unwrap()
            .message
            .contains("AuthFailure.SignatureFailure")
    );

    // Rotated to the right key: picked up without a restart.
    harness
        .set_credentials_key("tencent-credentials", SECRET_KEY)
        .await;
    harness
        .wait_reason("sensors", "InSync", Duration::from_secs(20), &controller)
        .await;
    assert_eq!(harness.cloud_product("CRED000001").await["registerType"], 1);
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_stall_with_the_right_reason_and_few_calls() {
    let products = r#"
products:
  - {productId: LORA000001, region: ap-guangzhou, productType: 3}
  - {productId: FORBID0001, region: ap-guangzhou, forbidden: true}
  - {productId: GOOD000001, region: ap-guangzhou}
"#;
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    harness
        .create_credentials("bad-credentials", "not-the-key")
        .await;
    // The production default is 15 min; 3 s keeps the test short with the same ratios.
    let controller = harness.spawn_controller(&["--stalled-retry-interval", "3s"]);
    harness
        .create_registration("missing", "NOSUCHPROD", RegistrationMode::AutoCreate, 1)
        .await;
    harness
        .create_registration("lora", "LORA000001", RegistrationMode::AutoCreate, 1)
        .await;
    harness
        .create_registration("forbidden", "FORBID0001", RegistrationMode::AutoCreate, 1)
        .await;
    // Five resources sharing bad credentials must not cost five calls each.
    for index in 0..5 {
        let mut resource = registration(
            &format!("bad-{index}"),
            &format!("GOOD{index:06}"),
            RegistrationMode::AutoCreate,
            1,
        );
        resource.spec.credentials_secret_ref.as_mut().unwrap().name = "bad-credentials".into();
        harness.create(resource).await;
    }

    for (name, reason) in [
        ("missing", "ProductNotFound"),
        ("lora", "ProductTypeNotSupported"),
        ("forbidden", "ProductForbidden"),
    ] {
        let resource = harness
            .wait_reason(name, reason, Duration::from_secs(20), &controller)
            .await;
        assert!(
            resource
                .condition("Stalled")
                .is_some_and(|c| c.status == "True"),
            "{name} not Stalled"
        );
        assert!(
            resource.condition("Reconciling").is_none(),
            "{name} still Reconciling"
        );
    }
    for index in 0..5 {
        harness
            .wait_reason(
                &format!("bad-{index}"),
                "AuthFailed",
                Duration::from_secs(20),
                &controller,
            )
            .await;
    }

    // Over four retry periods they are retried slowly (every 3 s ± 10%), never in a loop, and the
    // five resources sharing refused credentials cost one call per backoff period, not five.
    harness
        .emulator_send(reqwest::Method::POST, "stats/reset", serde_json::json!({}))
        .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let stats = harness.emulator_get("stats").await;
    println!(
        "calls over four retry periods of stalled resources: {}",
        stats["calls"]
    );
    let count = |action: &str, code: &str| stats["calls"][action][code].as_u64().unwrap_or(0);
    let not_found = count("DescribeProduct", "ResourceNotFound.ProductNotExist");
    let unsupported = count(
        "UpdateProductDynamicRegister",
        "InvalidParameterValue.ProductTypeNotSupport",
    );
    let forbidden = count(
        "UpdateProductDynamicRegister",
        "UnauthorizedOperation.ProductIsForbidden",
    );
    let auth = count("DescribeProducts", "AuthFailure.SignatureFailure");
    for (what, calls) in [
        ("not found", not_found),
        ("unsupported", unsupported),
        ("forbidden", forbidden),
    ] {
        assert!(
            (1..=6).contains(&calls),
            "{what}: {calls} calls in four retry periods"
        );
    }
    assert!(
        (1..=5).contains(&auth),
        "bad credentials shared by 5 resources cost {auth} calls in four retry periods"
    );
    assert!(
        stats["totalCalls"].as_u64().unwrap() <= 40,
        "{}",
        stats["calls"]
    );
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_account_stalls_rests_its_key_and_recovers_when_settled() {
    let products = r#"
products:
  - {productId: ARREARS001, region: ap-guangzhou}
  - {productId: ARREARS002, region: ap-guangzhou}
"#;
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let isolate = |isolated: bool| {
        harness.emulator_send(
            reqwest::Method::PUT,
            "accounts/default/isolated",
            serde_json::json!({ "isolated": isolated }),
        )
    };
    isolate(true).await;
    let controller = harness.spawn_controller(&["--stalled-retry-interval", "3s"]);
    for (name, product) in [("first", "ARREARS001"), ("second", "ARREARS002")] {
        harness
            .create_registration(name, product, RegistrationMode::AutoCreate, 5)
            .await;
    }
    for name in ["first", "second"] {
        let suspended = harness
            .wait_reason(
                name,
                "AccountSuspended",
                Duration::from_secs(20),
                &controller,
            )
            .await;
        let ready = suspended.condition("Ready").unwrap();
        assert!(
            ready.message.contains("overdue payment") && ready.message.contains("Billing Center"),
            "the message says what to do: {}",
            ready.message
        );
        assert!(
            suspended
                .condition("Stalled")
                .is_some_and(|c| c.status == "True")
        );
    }

    // The key backs off as a refused key does: one call per backoff period for both resources.
    harness
        .emulator_send(reqwest::Method::POST, "stats/reset", serde_json::json!({}))
        .await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let calls = harness.emulator_get("stats").await["totalCalls"]
        .as_u64()
        .unwrap();
    assert!(
        (1..=4).contains(&calls),
        "two resources of an isolated account cost {calls} calls over three backoff periods"
    );

    // Settled: the slow retry finds the account restored.
    isolate(false).await;
    for name in ["first", "second"] {
        harness
            .wait_reason(name, "InSync", Duration::from_secs(20), &controller)
            .await;
    }
    assert_eq!(harness.cloud_product("ARREARS001").await["registerType"], 2);
    harness.assert_no_secrets_logged(&controller).await;
}

/// One product of the account's list that the client cannot read (RegisterType 3, a negative
/// limit) is left out of the shared snapshot: every other resource of the account converges,
/// the list is not paged again every few seconds, and a resource of the odd product says what
/// is wrong with its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_odd_product_in_the_list_breaks_only_itself() {
    let products = r#"
products:
  - {productId: ODDLIST001, region: ap-guangzhou}
  - {productId: ODDLIST002, region: ap-guangzhou}
  - {productId: ODDLIST003, region: ap-guangzhou}
  - {productId: ODDLIST004, region: ap-guangzhou}
  - {productId: ODDLIST005, region: ap-guangzhou}
  - {productId: ODDTYPE001, region: ap-guangzhou, registerType: 3, registerLimit: 5, undocumented: true}
  - {productId: ODDLIMIT01, region: ap-guangzhou, registerType: 1, registerLimit: -5, undocumented: true}
"#;
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&["--observe-interval", "2s"]);
    for index in 1..=5 {
        harness
            .create_registration(
                &format!("fine-{index}"),
                &format!("ODDLIST00{index}"),
                RegistrationMode::AutoCreate,
                10,
            )
            .await;
    }
    harness
        .create_registration("odd", "ODDTYPE001", RegistrationMode::AutoCreate, 10)
        .await;
    for index in 1..=5 {
        harness
            .wait_reason(
                &format!("fine-{index}"),
                "InSync",
                Duration::from_secs(20),
                &controller,
            )
            .await;
    }
    let odd = harness
        .wait_for(
            "the odd product's resource to say why",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                let resource = harness.registrations().get_opt("odd").await.ok()??;
                let ready = resource.condition("Ready")?;
                let said = (ready.reason.clone(), ready.message.clone());
                ready.message.contains("RegisterType 3").then_some(said)
            },
        )
        .await;
    println!("odd: {odd:?}");
    // Paged about once per observe interval, not after every failure.
    harness
        .emulator_send(reqwest::Method::POST, "stats/reset", serde_json::json!({}))
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = harness.emulator_get("stats").await;
    let pages = stats["calls"]["DescribeProducts"]["Success"]
        .as_u64()
        .unwrap_or(0);
    assert!(pages <= 4, "{pages} pages in 6 s: {}", stats["calls"]);
    let metrics = controller.ops("/metrics").await.unwrap().1;
    let skipped = metrics
        .lines()
        .find(|line| {
            line.starts_with(
                "iothub_dynreg_cloud_entries_skipped_total{service=\"iotcloud\",action=\"DescribeProducts\"}",
            )
        })
        .unwrap_or_else(|| panic!("no skipped entries counted:\n{metrics}"));
    let count: f64 = skipped.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{skipped}");
    harness.assert_no_secrets_logged(&controller).await;
}

/// A reconcile request is answered whatever the outcome: a product not found, a conflict with
/// an older claimant, missing credentials, a suspended resource. (Before, only a successful
/// read of the cloud answered it, and `flux reconcile`-style waits hung.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_request_is_answered_whatever_the_outcome() {
    let products = "products: [{productId: ANSWER0001, region: ap-guangzhou}]";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    harness
        .create_registration("missing", "NOSUCHPROD", RegistrationMode::AutoCreate, 1)
        .await;
    harness
        .create_registration("older", "ANSWER0001", RegistrationMode::AutoCreate, 1)
        .await;
    harness
        .wait_reason("older", "InSync", Duration::from_secs(20), &controller)
        .await;
    // creationTimestamp has whole seconds: the newer claim must be a second younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    harness
        .create_registration("newer", "ANSWER0001", RegistrationMode::AutoCreate, 1)
        .await;
    let mut keyless = registration("keyless", "ANSWER0001", RegistrationMode::AutoCreate, 1);
    keyless.spec = keyless.spec.with_credentials("no-such-secret");
    harness.create(keyless).await;
    let mut paused = registration("paused", "ANSWER0001", RegistrationMode::AutoCreate, 1);
    paused.spec.suspend = true;
    harness.create(paused).await;
    for (name, reason) in [
        ("missing", "ProductNotFound"),
        ("newer", "Conflict"),
        ("keyless", "CredentialsMissing"),
        ("paused", "Suspended"),
    ] {
        harness
            .wait_reason(name, reason, Duration::from_secs(20), &controller)
            .await;
        let answered = harness
            .request_reconcile(name, "2026-12-07T00:00:00Z", &controller)
            .await;
        let ready = answered.condition("Ready").unwrap();
        assert_eq!(ready.reason, reason, "{name}: {}", ready.message);
    }
    harness.assert_no_secrets_logged(&controller).await;
}

/// A resource named with the longest name Kubernetes allows still gets its Events (their names
/// were `<resource name>.<time>`, longer than any name the API server takes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_with_the_longest_name_gets_its_events() {
    let products = "products: [{productId: LONGNAME01, region: ap-guangzhou}]";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let name = format!("{}-z", "a".repeat(251));
    let mut long = registration(&name, "LONGNAME01", RegistrationMode::AutoCreate, 3);
    long.spec.secret_name = Some("long-product-secret".to_owned());
    harness.create(long).await;
    harness
        .wait_reason(&name, "InSync", Duration::from_secs(20), &controller)
        .await;
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(harness.client.clone(), &harness.namespace);
    let published = harness
        .wait_for(
            "the Updated Event",
            Duration::from_secs(10),
            Some(&controller),
            || async {
                let list = events.list(&Default::default()).await.ok()?;
                list.items.into_iter().find(|event| {
                    event.reason.as_deref() == Some("Updated")
                        && event.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(name.as_str())
                })
            },
        )
        .await;
    let event_name = published.metadata.name.unwrap();
    assert!(event_name.len() <= 253, "{event_name}");
    assert!(
        !controller.stderr().contains("could not publish an event"),
        "an Event was refused"
    );
}

/// The cloud allows fewer calls than the client sends (another client takes most of the
/// quota) for a sustained while: no hot loop (a refusal pauses the key's bucket for the cloud's
/// window, so refusals stay near one a second, not one a slot), no resource Stalled (a throttled
/// one reads Retrying); once the limit is restored, all converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_throttling_is_retried_without_a_hot_loop_and_converges_when_lifted() {
    const COUNT: usize = 30;
    const THROTTLED_FOR: Duration = Duration::from_secs(10);
    let products = format!("generate: {{count: {COUNT}, region: ap-guangzhou, prefix: THROT}}");
    let Some(harness) = Harness::with_credentials(&products, |config| {
        config.rate_limit_per_second = 2;
    })
    .await
    else {
        return;
    };
    for index in 0..COUNT {
        let product = format!("THROT{index:05}");
        harness
            .create_registration(
                &format!("r{index}"),
                &product,
                RegistrationMode::AutoCreate,
                3,
            )
            .await;
    }
    let controller = harness.spawn_controller(&[]);
    let started = std::time::Instant::now();
    let mut stalled = Vec::new();
    let mut retrying_seen = 0;
    let mut refused_at_half = None;
    while started.elapsed() < THROTTLED_FOR {
        if refused_at_half.is_none() && started.elapsed() >= THROTTLED_FOR / 2 {
            refused_at_half = Some(refusals(&harness).await);
        }
        for resource in harness
            .registrations()
            .list(&Default::default())
            .await
            .unwrap()
        {
            let name = resource.metadata.name.clone().unwrap_or_default();
            if resource
                .condition("Stalled")
                .is_some_and(|c| c.status == "True")
            {
                stalled.push(name);
            } else if resource
                .condition("Reconciling")
                .is_some_and(|c| c.status == "True")
            {
                retrying_seen += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refused = refusals(&harness).await;
    let first_half = refused_at_half.unwrap_or(refused);
    let ready_while_throttled = harness.ready_names().await.len();
    harness
        .emulator_send(
            reqwest::Method::POST,
            "rate-limit",
            serde_json::json!({"perSecond": 20}),
        )
        .await;
    let lifted = std::time::Instant::now();
    harness
        .wait_all_ready(COUNT, Duration::from_secs(60), &controller)
        .await;
    let half = THROTTLED_FOR.as_secs_f64() / 2.0;
    let (first_rate, second_rate) = (
        first_half as f64 / half,
        (refused - first_half) as f64 / half,
    );
    println!(
        "throttled to 2/s for {THROTTLED_FOR:?}: refusals {first_rate:.1}/s in the first half, \
         {second_rate:.1}/s in the second (the client may send 20/s); {ready_while_throttled} of \
         {COUNT} Ready, {retrying_seen} Retrying sightings; all Ready {:.1} s after the limit \
         was lifted",
        lifted.elapsed().as_secs_f64()
    );
    assert!(stalled.is_empty(), "throttling stalled {stalled:?}");
    assert!(
        refused > 0 && ready_while_throttled < COUNT,
        "the throttling did nothing"
    );
    // A hot loop meets the full window at every slot: refusals near the client's 20/s.
    assert!(
        first_rate < 5.0 && second_rate < 5.0,
        "refusals {first_rate:.1}/s then {second_rate:.1}/s: a hot loop"
    );
    harness.assert_no_secrets_logged(&controller).await;
}

/// Calls the cloud refused for its rate limit, every action.
async fn refusals(harness: &Harness) -> u64 {
    let mut refused = 0;
    for action in [
        "UpdateProductDynamicRegister",
        "DescribeProducts",
        "DescribeProduct",
    ] {
        refused += harness.cloud_calls(action, "RequestLimitExceeded").await;
    }
    refused
}
