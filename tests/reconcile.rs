//! `reconcile` against a mocked Kubernetes API (every request asserted, in order) with the
//! in-process emulator as the cloud.

mod support;

use std::sync::Arc;

use base64::Engine;
use iothub_dynreg::cloud::{ClientConfig, CloudClient, Endpoint};
use iothub_dynreg::context::{Context, Settings};
use iothub_dynreg::crd::{
    DeletionPolicy, DynamicRegistration, FINALIZER, MANAGER, RegistrationMode,
};
use iothub_dynreg::emulator::{EmulatorConfig, LimitPolicy, RunningEmulator, Seed};
use iothub_dynreg::reconcile::reconcile;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};
use support::mock_kube::MockApi;

const NS: &str = "fleet";
const SEED: &str = r#"
accounts: [{secretId: AKIDtest, secretKey: test-key}]
products:
  - {productId: NEW0000001, region: ap-guangzhou, registerType: 0}
  - {productId: STEADY0001, region: ap-guangzhou, registerType: 2, registerLimit: 100, productSecret: steady-product-secret}
"#;
const PRODUCT_SECRET_PATH: &str = "/api/v1/namespaces/fleet/secrets/sensors-product-secret";
const CREDENTIALS_PATH: &str = "/api/v1/namespaces/fleet/secrets/tencent-credentials";
const STATUS_PATH: &str =
    "/apis/iothub.dynreg.io/v1alpha1/namespaces/fleet/dynamicregistrations/sensors/status";
const RESOURCE_PATH: &str =
    "/apis/iothub.dynreg.io/v1alpha1/namespaces/fleet/dynamicregistrations/sensors";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The shared test resource, with the metadata the API server would have set.
fn registration(product_id: &str, limit: i64) -> DynamicRegistration {
    let mut resource =
        support::e2e::registration("sensors", product_id, RegistrationMode::AutoCreate, limit);
    resource.metadata.namespace = Some("fleet".into());
    resource.metadata.uid = Some("uid-sensors".into());
    resource.metadata.generation = Some(1);
    resource.metadata.resource_version = Some("10".into());
    resource.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        ));
    resource
}

fn credentials_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tencent-credentials", "namespace": NS},
        "data": {"secretId": b64("AKIDtest"), "secretKey": b64("test-key")}
    })
}

fn published_secret(product_id: &str, secret: &str, owner_uid: Option<&str>) -> Value {
    let mut value = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "sensors-product-secret", "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "iothub-dynreg"}
        },
        "data": {"productId": b64(product_id), "productSecret": b64(secret)}
    });
    if let Some(uid) = owner_uid {
        value["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "iothub.dynreg.io/v1alpha1", "kind": "DynamicRegistration",
            "name": "sensors", "uid": uid, "controller": true, "blockOwnerDeletion": true
        }]);
    }
    value
}

async fn emulator(limit_policy: LimitPolicy) -> RunningEmulator {
    let mut config = EmulatorConfig::new(Seed::from_yaml(SEED).unwrap());
    config.limit_policy = limit_policy;
    RunningEmulator::start(config).await.unwrap()
}

fn context(
    client: kube::Client,
    emulator: &RunningEmulator,
    resources: &[DynamicRegistration],
) -> Arc<Context> {
    let cloud = CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&emulator.endpoint(), true).unwrap(),
        ..ClientConfig::default()
    })
    .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: None,
        },
    );
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for resource in resources {
        writer.apply_watcher_event(&watcher::Event::InitApply(resource.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    // The store must outlive the writer's drop: keep the writer alive for the test.
    std::mem::forget(writer);
    let (_, ready) = tokio::sync::watch::channel(true);
    Arc::new(Context::new(
        client,
        cloud,
        recorder,
        Settings::default(),
        reader,
        ready,
        Arc::new(iothub_dynreg::metrics::Metrics::new()),
    ))
}

/// A product as the emulator's control endpoint shows it (with its ProductSecret).
async fn cloud_product(emulator: &RunningEmulator, product_id: &str) -> Value {
    let body = reqwest::get(format!("{}/_emulator/products", emulator.endpoint()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let products: Value = serde_json::from_slice(&body).unwrap();
    products
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["productId"] == product_id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn stats(emulator: &RunningEmulator) -> Value {
    let body = reqwest::get(format!("{}/_emulator/stats", emulator.endpoint()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Seconds until the requeue an `Action` asks for (its Debug form is the only public view).
fn requeue_seconds(action: &kube::runtime::controller::Action) -> Option<f64> {
    let text = format!("{action:?}");
    let start = text.find("Some(")? + "Some(".len();
    let rest = &text[start..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let value: f64 = rest[..end].parse().ok()?;
    Some(match &rest[end..] {
        unit if unit.starts_with("ms") => value / 1000.0,
        _ => value,
    })
}

fn ready(status: &Value) -> &Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
}

fn has_condition(status: &Value, type_: &str) -> bool {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

#[tokio::test]
async fn new_resource_updates_the_cloud_publishes_the_secret_and_reports_ready() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let resource = registration("NEW0000001", 100);
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));

    api.expect("GET", PRODUCT_SECRET_PATH).await.not_found();
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let updated = api.expect_event(NS).await;
    assert_eq!(updated["reason"], "Updated");
    assert_eq!(updated["type"], "Normal");
    assert!(
        updated["note"]
            .as_str()
            .unwrap()
            .contains("RegisterLimit 100")
    );

    let apply = api.expect("PATCH", PRODUCT_SECRET_PATH).await;
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert!(
        apply.query.contains("fieldManager=iothub-dynreg") && apply.query.contains("force=true"),
        "{}",
        apply.query
    );
    let secret = apply.body.clone();
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "iothub-dynreg"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["uid"].as_str(), owner["controller"].as_bool()),
        (Some("uid-sensors"), Some(true))
    );
    assert_eq!(secret["data"]["productId"], b64("NEW0000001"));
    let cloud_secret = cloud_product(&emulator, "NEW0000001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(secret["data"]["productSecret"], b64(&cloud_secret));
    apply.echo();
    assert_eq!(api.expect_event(NS).await["reason"], "SecretPublished");

    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    assert_eq!(status_patch.content_type, "application/apply-patch+yaml");
    let status = status_patch.body["status"].clone();
    assert_eq!(status_patch.body["kind"], "DynamicRegistration");
    assert_eq!(ready(&status)["status"], "True");
    assert_eq!(ready(&status)["reason"], "InSync");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["cloud"],
        json!({"registerType": "AutoCreate", "registerLimit": 100})
    );
    assert_eq!(status["secretName"], "sensors-product-secret");
    assert!(
        status["lastRequestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        !status.to_string().contains(&cloud_secret),
        "ProductSecret in status"
    );
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());

    let action = task.await.unwrap().unwrap();
    // Resync after 10 min ± 10%.
    let after = requeue_seconds(&action).expect("requeued");
    assert!((540.0..=660.0).contains(&after), "{action:?}");
    api.expect_nothing_more().await;
    let stats = stats(&emulator).await;
    // One page of DescribeProducts fills the shared snapshot; no DescribeProduct needed.
    assert_eq!(stats["calls"]["DescribeProducts"]["Success"], 1);
    assert!(stats["calls"].get("DescribeProduct").is_none(), "{stats}");
    assert_eq!(stats["calls"]["UpdateProductDynamicRegister"]["Success"], 1);
}

#[tokio::test]
async fn steady_state_makes_no_update_and_no_secret_write() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let resource = registration("STEADY0001", 100);
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));

    api.expect("GET", PRODUCT_SECRET_PATH).await.respond(
        200,
        published_secret("STEADY0001", "steady-product-secret", Some("uid-sensors")),
    );
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    assert_eq!(ready(&status_patch.body["status"])["reason"], "InSync");
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    task.await.unwrap().unwrap();
    api.expect_nothing_more().await;
    let stats = stats(&emulator).await;
    assert_eq!(stats["calls"]["DescribeProducts"]["Success"], 1);
    assert!(
        stats["calls"].get("UpdateProductDynamicRegister").is_none(),
        "{stats}"
    );
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let resource = registration("STEADY0001", 100);
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));

    api.expect("GET", PRODUCT_SECRET_PATH)
        .await
        .respond(200, published_secret("OTHER", "someone-elses", None));
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "SecretConflict");
    assert!(has_condition(&status, "Stalled"));
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    let warning = api.expect_event(NS).await;
    assert_eq!(
        (warning["type"].as_str(), warning["reason"].as_str()),
        (Some("Warning"), Some("SecretConflict"))
    );
    task.await.unwrap().unwrap();
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn missing_credentials_make_no_cloud_call() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let resource = registration("NEW0000001", 100);
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));

    api.expect("GET", PRODUCT_SECRET_PATH).await.not_found();
    api.expect("GET", CREDENTIALS_PATH).await.not_found();
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "CredentialsMissing");
    assert!(
        ready(&status)["message"]
            .as_str()
            .unwrap()
            .contains("tencent-credentials")
    );
    assert!(has_condition(&status, "Stalled"));
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "CredentialsMissing");
    task.await.unwrap().unwrap();
    assert_eq!(stats(&emulator).await["totalCalls"], 0);
}

#[tokio::test]
async fn product_not_found_stalls() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let resource = registration("NOSUCHPROD", 100);
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));

    api.expect("GET", PRODUCT_SECRET_PATH).await.not_found();
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "ProductNotFound");
    assert!(has_condition(&status, "Stalled"));
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "ProductNotFound");
    let action = task.await.unwrap().unwrap();
    // Slow retry (15 min ± 10%), not a hot loop.
    let after = requeue_seconds(&action).expect("requeued");
    assert!((810.0..=990.0).contains(&after), "{action:?}");
}

#[tokio::test]
async fn a_limit_the_cloud_rewrites_is_asked_for_once() {
    let emulator = emulator(LimitPolicy {
        max: None,
        override_to: Some(10_000),
    })
    .await;
    let (client, mut api) = MockApi::new();
    let resource = registration("NEW0000001", 10);
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx.clone()));

    api.expect("GET", PRODUCT_SECRET_PATH).await.not_found();
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    assert_eq!(api.expect_event(NS).await["reason"], "Updated");
    api.expect("PATCH", PRODUCT_SECRET_PATH).await.echo();
    assert_eq!(api.expect_event(NS).await["reason"], "SecretPublished");
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "NotAccepted");
    assert_eq!(status["cloud"]["registerLimit"], 10_000);
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "NotAccepted");
    task.await.unwrap().unwrap();

    // The next reconcile of the same generation sees the recorded refusal and does not ask again.
    let mut again = resource.clone();
    again.status = Some(serde_json::from_value(status).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(again.clone()), ctx));
    let secret = api.expect("GET", PRODUCT_SECRET_PATH).await;
    let cloud_secret = cloud_product(&emulator, "NEW0000001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    secret.respond(
        200,
        published_secret("NEW0000001", &cloud_secret, Some("uid-sensors")),
    );
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    assert_eq!(ready(&status_patch.body["status"])["reason"], "NotAccepted");
    status_patch.respond(200, serde_json::to_value(&again).unwrap());
    task.await.unwrap().unwrap();
    api.expect_nothing_more().await;
    assert_eq!(
        stats(&emulator).await["calls"]["UpdateProductDynamicRegister"]["Success"],
        1
    );
}

#[tokio::test]
async fn the_newer_of_two_claimants_makes_no_cloud_call() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let mut older = registration("NEW0000001", 100);
    older.metadata.name = Some("older".into());
    older.metadata.uid = Some("uid-older".into());
    let mut resource = registration("NEW0000001", 100);
    resource.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
    let ctx = context(client, &emulator, &[older, resource.clone()]);
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));

    api.expect("GET", PRODUCT_SECRET_PATH).await.not_found();
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "Conflict");
    assert!(
        ready(&status)["message"]
            .as_str()
            .unwrap()
            .contains("fleet/older")
    );
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "Conflict");
    task.await.unwrap().unwrap();
    assert_eq!(stats(&emulator).await["totalCalls"], 0);
}

#[tokio::test]
async fn deletion_policy_disable_adds_a_finalizer_and_disables_before_release() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let mut resource = registration("STEADY0001", 100);
    resource.spec.deletion_policy = DeletionPolicy::Disable;
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));

    // Alive: the finalizer goes on first, guarded by the resourceVersion.
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx.clone()));
    let patch = api.expect("PATCH", RESOURCE_PATH).await;
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(
        patch.body,
        json!({"metadata": {"resourceVersion": "10", "finalizers": [FINALIZER]}})
    );
    patch.respond(200, serde_json::to_value(&resource).unwrap());
    api.expect("GET", PRODUCT_SECRET_PATH).await.respond(
        200,
        published_secret("STEADY0001", "steady-product-secret", Some("uid-sensors")),
    );
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    api.expect("PATCH", STATUS_PATH)
        .await
        .respond(200, serde_json::to_value(&resource).unwrap());
    task.await.unwrap().unwrap();

    // Deleted: RegisterType 0 in the cloud, then the finalizer comes off.
    resource.metadata.finalizers = Some(vec!["other.io/keep".into(), FINALIZER.into()]);
    resource.metadata.resource_version = Some("11".into());
    resource.metadata.deletion_timestamp = resource.metadata.creation_timestamp.clone();
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    assert_eq!(api.expect_event(NS).await["reason"], "RegistrationDisabled");
    let release = api.expect("PATCH", RESOURCE_PATH).await;
    assert_eq!(
        release.body,
        json!({"metadata": {"resourceVersion": "11", "finalizers": ["other.io/keep"]}})
    );
    release.respond(200, serde_json::to_value(&resource).unwrap());
    let action = task.await.unwrap().unwrap();
    assert_eq!(requeue_seconds(&action), None, "{action:?}");
    assert_eq!(
        cloud_product(&emulator, "STEADY0001").await["registerType"],
        0
    );
}

#[tokio::test]
async fn deleting_a_resource_whose_product_is_gone_does_not_wedge() {
    let emulator = emulator(LimitPolicy::default()).await;
    let (client, mut api) = MockApi::new();
    let mut resource = registration("NOSUCHPROD", 100);
    resource.spec.deletion_policy = DeletionPolicy::Disable;
    resource.metadata.finalizers = Some(vec![FINALIZER.into()]);
    resource.metadata.deletion_timestamp = resource.metadata.creation_timestamp.clone();
    let ctx = context(client, &emulator, std::slice::from_ref(&resource));
    let task = tokio::spawn(reconcile(Arc::new(resource.clone()), ctx));
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let warning = api.expect_event(NS).await;
    assert_eq!(
        (warning["type"].as_str(), warning["reason"].as_str()),
        (Some("Warning"), Some("CloudLeftAsIs"))
    );
    let release = api.expect("PATCH", RESOURCE_PATH).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    release.respond(200, serde_json::to_value(&resource).unwrap());
    task.await.unwrap().unwrap();
}
