//! The real `iothub-dynreg run` process between the real Kubernetes API server and the emulator:
//! create, steady state, spec change, drift, Secret restore, credentials, deletion.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::RegistrationMode;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::e2e::{ControllerProcess, Harness, SECRET_KEY, secret_data};

const PRODUCTS: &str = r#"
products:
  - {productId: LIFE000001, region: ap-guangzhou, registerType: 0}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_steady_state_then_spec_change() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller =
        harness.spawn_controller(&["--resync-interval", "2s", "--observe-interval", "1s"]);
    let started = std::time::Instant::now();
    harness
        .create_registration("sensors", "LIFE000001", RegistrationMode::AutoCreate, 100)
        .await;

    // 1. Created: one update, the Secret published and owned, Ready=True for this generation.
    let ready = harness
        .wait_reason("sensors", "InSync", Duration::from_secs(30), &controller)
        .await;
    println!("create → Ready in {:?}", started.elapsed());
    let status = ready.status.clone().unwrap();
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        1
    );
    let cloud = harness.cloud_product("LIFE000001").await;
    assert_eq!(cloud["registerType"], 2);
    assert_eq!(cloud["registerLimit"], 100);
    let secret = harness
        .secrets()
        .get("sensors-product-secret")
        .await
        .unwrap();
    let data = secret_data(&secret);
    assert_eq!(data["productId"], "LIFE000001");
    assert_eq!(
        data["productSecret"],
        cloud["productSecret"].as_str().unwrap()
    );
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (ready.metadata.uid.as_deref().unwrap(), Some(true))
    );

    // 2. Steady state: several resyncs, no update and no Secret write.
    let secret_writes = || {
        harness.controller_calls("create", "secrets") + harness.controller_calls("patch", "secrets")
    };
    let written = secret_writes();
    assert_eq!(
        written, 1,
        "the Secret was published once, as the API server saw it"
    );
    // Resyncs read the shared snapshot, refreshed at most every --observe-interval (1 s here).
    let describes_before = harness.cloud_calls("DescribeProducts", "Success").await;
    let reads_before = harness.controller_calls("get", "secrets");
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Neither the published Secret nor the credentials are read again: the metadata watch shows
    // their versions unchanged.
    assert_eq!(
        harness.controller_calls("get", "secrets"),
        reads_before,
        "Secrets read in steady state"
    );
    let describes_after = harness.cloud_calls("DescribeProducts", "Success").await;
    assert!(
        describes_after >= describes_before + 2,
        "resyncs happened: {describes_before} → {describes_after}"
    );
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        1,
        "no update in steady state"
    );
    assert_eq!(secret_writes(), written, "no Secret write in steady state");

    // 3. Spec change: one more update, status follows the new generation.
    harness
        .registrations()
        .patch(
            "sensors",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"registerType": "PreCreate", "registerLimit": 5}})),
        )
        .await
        .unwrap();
    harness
        .wait_for(
            "the spec change to reach the cloud",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                let cloud = harness.cloud_product("LIFE000001").await;
                (cloud["registerType"] == 1 && cloud["registerLimit"] == 5).then_some(())
            },
        )
        .await;
    let changed = harness
        .wait_reason("sensors", "InSync", Duration::from_secs(20), &controller)
        .await;
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(changed.status.unwrap().cloud.unwrap().register_limit, 5);
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        2
    );
    let log = controller.stderr();
    assert!(!log.contains(SECRET_KEY));
    for line in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        println!("controller: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_drift_is_corrected_and_a_deleted_secret_restored() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[
        "--resync-interval",
        "2s",
        "--observe-interval",
        "2s",
        "--log-format",
        "json",
    ]);
    harness
        .create_registration("sensors", "LIFE000001", RegistrationMode::AutoCreate, 100)
        .await;
    harness
        .wait_reason("sensors", "InSync", Duration::from_secs(30), &controller)
        .await;

    // 4. Someone changes the product in the console: corrected on the next resync.
    harness
        .emulator_send(
            reqwest::Method::POST,
            "products/LIFE000001",
            json!({"registerType": 0, "registerLimit": 1}),
        )
        .await;
    harness
        .wait_for(
            "the drift to be corrected",
            Duration::from_secs(15),
            Some(&controller),
            || async {
                let cloud = harness.cloud_product("LIFE000001").await;
                (cloud["registerType"] == 2 && cloud["registerLimit"] == 100).then_some(())
            },
        )
        .await;

    // 5. Someone deletes the Secret: restored. Someone edits it: restored.
    harness
        .secrets()
        .delete("sensors-product-secret", &DeleteParams::default())
        .await
        .unwrap();
    let expected = harness.cloud_product("LIFE000001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let restored = harness
        .wait_for(
            "the Secret to be restored",
            Duration::from_secs(15),
            Some(&controller),
            || async {
                harness
                    .secrets()
                    .get_opt("sensors-product-secret")
                    .await
                    .ok()
                    .flatten()
            },
        )
        .await;
    assert_eq!(secret_data(&restored)["productSecret"], expected);
    tamper_and_wait_restored(&harness, &controller, &expected, Duration::from_secs(15)).await;

    // JSON logs: every line parses, and every line of a reconcile names the resource.
    let log = controller.stderr();
    let mut reconcile_lines = 0;
    for line in log.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let span = &entry["span"];
        if span["name"] == "reconcile" {
            reconcile_lines += 1;
            assert_eq!(span["namespace"], harness.namespace, "{line}");
            assert_eq!(span["product_id"], "LIFE000001", "{line}");
            assert!(span.get("name").is_some(), "{line}");
        }
    }
    assert!(
        reconcile_lines > 3,
        "only {reconcile_lines} reconcile lines"
    );
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_labels_of_other_managers_stay_and_cause_no_writes() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller =
        harness.spawn_controller(&["--resync-interval", "1s", "--observe-interval", "1s"]);
    harness
        .create_registration("sensors", "LIFE000001", RegistrationMode::AutoCreate, 100)
        .await;
    harness
        .wait_reason("sensors", "InSync", Duration::from_secs(30), &controller)
        .await;

    // A backup tool labels the Secret and a provisioning job adds a key of its own.
    let theirs = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "sensors-product-secret", "labels": {"backup.example.com/include": "true"}},
        "stringData": {"endpoint": "mqtt.example.com"}
    });
    harness
        .secrets()
        .patch(
            "sensors-product-secret",
            &PatchParams::apply("provisioning-job"),
            &Patch::Apply(theirs),
        )
        .await
        .unwrap();
    let writes = harness.controller_calls("patch", "secrets");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        harness.controller_calls("patch", "secrets"),
        writes,
        "the Secret was rewritten although our keys were right"
    );
    let secret = harness
        .secrets()
        .get("sensors-product-secret")
        .await
        .unwrap();
    let data = secret_data(&secret);
    assert_eq!(data["endpoint"], "mqtt.example.com");
    assert!(data.contains_key("productSecret"));
    assert_eq!(
        secret.metadata.labels.unwrap()["backup.example.com/include"],
        "true"
    );
    let events = harness.controller_calls("create", "events");
    println!("secret writes: {writes}, events: {events} after six resyncs with a foreign key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_secret_leaves_nothing_behind_and_touches_nothing_foreign() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let mut resource =
        support::e2e::registration("sensors", "LIFE000001", RegistrationMode::AutoCreate, 100);
    resource.spec.secret_name = Some("first-name".into());
    harness.create(resource).await;
    harness
        .wait_reason("sensors", "InSync", Duration::from_secs(30), &controller)
        .await;
    let rename = |name: &'static str| {
        let harness = &harness;
        async move {
            harness
                .registrations()
                .patch(
                    "sensors",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"secretName": name}})),
                )
                .await
                .unwrap();
        }
    };

    // Renamed: published under the new name, and the old Secret (ours, labelled) deleted.
    rename("second-name").await;
    let gone = |name: &'static str| {
        let harness = &harness;
        move || async move {
            harness
                .secrets()
                .get_opt(name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    };
    harness
        .wait_for(
            "the old Secret to go",
            Duration::from_secs(20),
            Some(&controller),
            gone("first-name"),
        )
        .await;
    let second = harness.secrets().get("second-name").await.unwrap();
    assert!(secret_data(&second).contains_key("productSecret"));

    // Renamed onto someone else's Secret: theirs untouched, ours kept until ours can move.
    let foreign: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "third-name"}, "stringData": {"theirs": "yes"}
    }))
    .unwrap();
    harness
        .secrets()
        .create(&kube::api::PostParams::default(), &foreign)
        .await
        .unwrap();
    rename("third-name").await;
    harness
        .wait_reason(
            "sensors",
            "SecretConflict",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    let theirs = harness.secrets().get("third-name").await.unwrap();
    assert_eq!(secret_data(&theirs).keys().collect::<Vec<_>>(), ["theirs"]);
    assert!(theirs.metadata.owner_references.is_none());
    assert!(
        harness
            .secrets()
            .get_opt("second-name")
            .await
            .unwrap()
            .is_some()
    );
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_secret_is_repaired_when_list_answers_lack_the_product_secret() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |config| {
        config.list_omits_product_secret = true;
    })
    .await
    else {
        return;
    };
    let controller =
        harness.spawn_controller(&["--resync-interval", "1s", "--observe-interval", "1s"]);
    harness
        .create_registration("sensors", "LIFE000001", RegistrationMode::AutoCreate, 100)
        .await;
    harness
        .wait_reason("sensors", "InSync", Duration::from_secs(30), &controller)
        .await;
    let expected = harness.cloud_product("LIFE000001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Wait for the shared snapshot to be refilled from list answers, which lack the
    // ProductSecret that the update's answer had put in it.
    let pages = harness.cloud_calls("DescribeProducts", "Success").await;
    harness
        .wait_for(
            "a snapshot refresh",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                (harness.cloud_calls("DescribeProducts", "Success").await > pages).then_some(())
            },
        )
        .await;
    tamper_and_wait_restored(&harness, &controller, &expected, Duration::from_secs(20)).await;
    // Once repaired and checked, resyncs read no product alone.
    let single_reads = harness.cloud_calls("DescribeProduct", "Success").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        harness.cloud_calls("DescribeProduct", "Success").await,
        single_reads,
        "a trusted Secret was checked again"
    );
    harness.assert_no_secrets_logged(&controller).await;
}

/// Two products with registration off.
const TWO_DISABLED: &str = r#"
products:
  - {productId: LIFE000001, region: ap-guangzhou, registerType: 0}
  - {productId: LIFE000002, region: ap-guangzhou, registerType: 0}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resources_naming_one_secret_never_share_or_steal_it() {
    let Some(harness) = Harness::with_credentials(TWO_DISABLED, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let resources = ["LIFE000001", "LIFE000002"].map(|product| {
        let mut resource = support::e2e::registration(
            &product.to_lowercase(),
            product,
            RegistrationMode::AutoCreate,
            5,
        );
        resource.spec.secret_name = Some("shared-name".into());
        resource
    });
    futures::future::join_all(resources.map(|resource| harness.create(resource))).await;
    let settled = harness
        .wait_for(
            "both to settle",
            Duration::from_secs(30),
            Some(&controller),
            || async {
                let a = harness.ready_reason("life000001").await?.1;
                let b = harness.ready_reason("life000002").await?.1;
                let mut reasons = [a, b];
                reasons.sort();
                (reasons == ["InSync", "SecretConflict"]).then_some(reasons)
            },
        )
        .await;
    println!("{settled:?}");
    let secret = harness.secrets().get("shared-name").await.unwrap();
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let winner = if harness.ready_reason("life000001").await.unwrap().1 == "InSync" {
        "life000001"
    } else {
        "life000002"
    };
    assert_eq!(owners[0].name, winner);
}

/// A Secret another resource published is never acted on, however often the second claimant
/// of its name reconciles: its memory of Secret versions knows who published each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_claimant_of_a_secret_name_never_takes_it_over() {
    let Some(harness) = Harness::with_credentials(TWO_DISABLED, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let claimant = |name: &str, product: &str| {
        let mut resource =
            support::e2e::registration(name, product, RegistrationMode::AutoCreate, 5);
        resource.spec.secret_name = Some("taken".into());
        resource
    };
    harness.create(claimant("first", "LIFE000001")).await;
    harness
        .wait_reason("first", "InSync", Duration::from_secs(20), &controller)
        .await;
    let published = harness.secrets().get("taken").await.unwrap();
    // The second wants another type: acting on the first's Secret would re-create it.
    let mut second = claimant("second", "LIFE000002");
    second.spec.secret_template = Some(iothub_dynreg::controller::resources::SecretTemplate {
        type_: Some("iothub.dynreg.io/other".into()),
        ..Default::default()
    });
    harness.create(second).await;
    harness
        .wait_reason(
            "second",
            "SecretConflict",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    for round in 0..5 {
        let handled = harness
            .request_reconcile("second", &format!("round-{round}"), &controller)
            .await;
        let reason = handled.condition("Ready").map(|c| c.reason.clone());
        assert_eq!(reason.as_deref(), Some("SecretConflict"), "round {round}");
        let now = harness.secrets().get("taken").await.unwrap();
        assert_eq!(
            now.metadata.uid, published.metadata.uid,
            "round {round}: re-created"
        );
        assert_eq!(now.data, published.data, "round {round}: rewritten");
        assert_eq!(now.type_, published.type_, "round {round}");
    }
    harness
        .wait_reason("first", "InSync", Duration::from_secs(5), &controller)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_request_reads_the_cloud_afresh_at_once() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    // Nothing else would look at the cloud for ten minutes.
    let controller =
        harness.spawn_controller(&["--resync-interval", "10m", "--observe-interval", "10m"]);
    harness
        .create_registration("sensors", "LIFE000001", RegistrationMode::AutoCreate, 100)
        .await;
    harness
        .wait_reason("sensors", "InSync", Duration::from_secs(30), &controller)
        .await;
    harness
        .emulator_send(
            reqwest::Method::POST,
            "products/LIFE000001",
            json!({"registerLimit": 3}),
        )
        .await;
    let single_reads = harness.cloud_calls("DescribeProduct", "Success").await;

    // `flux reconcile` / `kubectl annotate --overwrite reconcile.fluxcd.io/requestedAt=...`.
    let request = |value: &'static str| {
        let harness = &harness;
        async move {
            harness
                .registrations()
                .patch(
                    "sensors",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": value}}})),
                )
                .await
                .unwrap();
        }
    };
    let asked = std::time::Instant::now();
    request("2026-11-28T12:00:00Z").await;
    let handled = harness
        .wait_for(
            "the request to be handled",
            Duration::from_secs(10),
            Some(&controller),
            || async {
                let resource = harness.registrations().get("sensors").await.ok()?;
                let status = resource.status?;
                (status.last_handled_reconcile_at.as_deref() == Some("2026-11-28T12:00:00Z"))
                    .then_some(status)
            },
        )
        .await;
    println!("reconcile request handled in {:?}", asked.elapsed());
    assert_eq!(
        handled.cloud.unwrap().register_limit,
        100,
        "the drift was corrected"
    );
    assert_eq!(
        harness.cloud_product("LIFE000001").await["registerLimit"],
        100
    );
    assert!(
        harness.cloud_calls("DescribeProduct", "Success").await > single_reads,
        "the cloud was not read afresh"
    );

    // kubectl shows what the cloud has next to what is wanted.
    let Some(table) = harness.kubectl(&["get", "dynreg"]) else {
        return;
    };
    println!("{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PRODUCT",
            "REGION",
            "TYPE",
            "LIMIT",
            "CLOUD-TYPE",
            "CLOUD-LIMIT",
            "READY",
            "REASON",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..9],
        [
            "sensors",
            "LIFE000001",
            "ap-guangzhou",
            "AutoCreate",
            "100",
            "AutoCreate",
            "100",
            "True",
            "InSync"
        ]
    );
    let wide = harness.kubectl(&["get", "dynreg", "-o", "wide"]).unwrap();
    assert!(wide.lines().next().unwrap().contains("SECRET"), "{wide}");
    assert!(wide.contains("sensors-product-secret"), "{wide}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_resource_keeps_its_verdict_and_changes_nothing() {
    const TWO_PRODUCTS: &str = r#"
products:
  - {productId: LIFE000001, region: ap-guangzhou, registerType: 0}
  - {productId: LIFE000002, region: ap-guangzhou, registerType: 0}
"#;
    let Some(harness) = Harness::with_credentials(TWO_PRODUCTS, |_| {}).await else {
        return;
    };
    // Resyncs every 2 s: anything not suspended would be corrected quickly.
    let controller =
        harness.spawn_controller(&["--resync-interval", "2s", "--observe-interval", "2s"]);
    harness
        .create_registration("sensors", "LIFE000001", RegistrationMode::AutoCreate, 100)
        .await;
    harness
        .wait_reason("sensors", "InSync", Duration::from_secs(30), &controller)
        .await;
    harness.kubectl_wait_ready("sensors");

    let suspend = |value: bool| {
        let harness = &harness;
        async move {
            harness
                .registrations()
                .patch(
                    "sensors",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"suspend": value}})),
                )
                .await
                .unwrap();
        }
    };
    suspend(true).await;
    let suspended = harness
        .wait_for(
            "the Suspended condition",
            Duration::from_secs(10),
            Some(&controller),
            || async {
                let resource = harness.registrations().get("sensors").await.ok()?;
                let condition = resource.condition("Suspended")?;
                (condition.status == "True"
                    && condition.observed_generation == resource.metadata.generation)
                    .then_some(resource)
            },
        )
        .await;
    // The last verdict stands: Ready for kstatus, Flux and `kubectl wait`.
    assert_eq!(suspended.condition("Ready").unwrap().reason, "InSync");
    harness.kubectl_wait_ready("sensors");

    // Neither a console change nor a deleted Secret is touched while suspended.
    let updates = harness
        .cloud_calls("UpdateProductDynamicRegister", "Success")
        .await;
    harness
        .emulator_send(
            reqwest::Method::POST,
            "products/LIFE000001",
            json!({"registerLimit": 3}),
        )
        .await;
    harness
        .secrets()
        .delete("sensors-product-secret", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        updates
    );
    assert_eq!(
        harness.cloud_product("LIFE000001").await["registerLimit"],
        3
    );
    assert!(
        harness
            .secrets()
            .get_opt("sensors-product-secret")
            .await
            .unwrap()
            .is_none()
    );

    // Resumed: corrected at once, and the Suspended condition is gone.
    suspend(false).await;
    let resumed = harness
        .wait_reason("sensors", "InSync", Duration::from_secs(10), &controller)
        .await;
    assert!(resumed.condition("Suspended").is_none());
    assert_eq!(
        harness.cloud_product("LIFE000001").await["registerLimit"],
        100
    );
    harness
        .secrets()
        .get("sensors-product-secret")
        .await
        .unwrap();

    // Suspended from the start: nothing observed, nothing will happen until someone resumes
    // it, so kstatus reads Failed (Stalled), not "in progress" forever.
    let mut dormant =
        support::e2e::registration("dormant", "LIFE000002", RegistrationMode::PreCreate, 5);
    dormant.spec.suspend = true;
    harness.create(dormant).await;
    let dormant = harness
        .wait_reason("dormant", "Suspended", Duration::from_secs(10), &controller)
        .await;
    assert_eq!(dormant.condition("Ready").unwrap().status, "False");
    assert_eq!(dormant.condition("Stalled").unwrap().status, "True");
    assert_eq!(harness.cloud_product("LIFE000002").await["registerType"], 0);
    harness.assert_no_secrets_logged(&controller).await;
}

/// Overwrites the published ProductSecret as a person might, and waits until the controller has
/// written `expected` back.
async fn tamper_and_wait_restored(
    harness: &Harness,
    controller: &ControllerProcess,
    expected: &str,
    timeout: Duration,
) {
    harness
        .secrets()
        .patch(
            "sensors-product-secret",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"productSecret": "tampered"}})),
        )
        .await
        .unwrap();
    harness
        .wait_for(
            "the tampered Secret to be restored",
            timeout,
            Some(controller),
            || async {
                let secret = harness.secrets().get("sensors-product-secret").await.ok()?;
                (secret_data(&secret)["productSecret"] == expected).then_some(())
            },
        )
        .await;
}
