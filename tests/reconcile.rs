//! One reconcile against a mocked Kubernetes API (every request asserted, in order) with the
//! in-process emulator as the cloud: the exact requests a reconcile makes.

mod support;

use std::sync::Arc;

use base64::Engine;
use iothub_dynreg::cloud::observe::Observer;
use iothub_dynreg::cloud::{ClientConfig, CloudClient, Endpoint};
use iothub_dynreg::controller::cache::Caches;
use iothub_dynreg::controller::cache::index::{ResourceIndex, resource_keys};
use iothub_dynreg::controller::credentials::{Grants, Resolver};
use iothub_dynreg::controller::decision::CREDENTIALS_IN_USE;
use iothub_dynreg::controller::decision::Progress;
use iothub_dynreg::controller::reconcile::events::EventPublisher;
use iothub_dynreg::controller::reconcile::{Context, reconcile};
use iothub_dynreg::controller::resources::{
    DeletionPolicy, DynamicRegistration, FINALIZER, MANAGER, RegistrationMode,
};
use iothub_dynreg::emulator::{EmulatorConfig, LimitPolicy, RunningEmulator, Seed};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
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
const SECRETS_PATH: &str = "/api/v1/namespaces/fleet/secrets";
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
        "metadata": {"name": "tencent-credentials", "namespace": NS, "resourceVersion": "5"},
        "data": {"secretId": b64("AKIDtest"), "secretKey": b64("test-key")}
    })
}

/// The credentials Secret with our in-use finalizer already on.
fn protected_credentials_secret() -> Value {
    let mut secret = credentials_secret();
    secret["metadata"]["finalizers"] = json!([CREDENTIALS_IN_USE]);
    secret
}

fn published_secret(product_id: &str, secret: &str, owner_uid: Option<&str>) -> Value {
    let mut value = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "sensors-product-secret", "namespace": NS, "resourceVersion": "30",
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

/// A reconcile scenario: a fresh emulator and the controller's context with `resources` in its
/// cache, and the mocked API through which the test answers each request.
struct Scenario {
    emulator: RunningEmulator,
    ctx: Arc<Context>,
}

impl Scenario {
    async fn start(
        limit_policy: LimitPolicy,
        resources: &[DynamicRegistration],
    ) -> (Self, MockApi) {
        let mut config = EmulatorConfig::new(Seed::from_yaml(SEED).unwrap());
        config.limit_policy = limit_policy;
        let emulator = RunningEmulator::start(config).await.unwrap();
        let (client, api) = MockApi::new();
        let ctx = context(client, &emulator, resources);
        let scenario = Self { emulator, ctx };
        (scenario, api)
    }

    /// [`Scenario::reconciling`] with `secret` in the Secret metadata cache (a published Secret
    /// the reconcile then reads, unless it knows that version).
    async fn reconciling_with(
        resource: &DynamicRegistration,
        secret: &Value,
    ) -> (Self, MockApi, tokio::task::JoinHandle<Option<Progress>>) {
        let (scenario, api) =
            Self::start(LimitPolicy::default(), std::slice::from_ref(resource)).await;
        scenario.secret_in_cache(secret);
        let task = scenario.reconcile(resource);
        (scenario, api, task)
    }

    /// The metadata watch shows `secret`.
    fn secret_in_cache(&self, secret: &Value) {
        let metadata: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": secret["metadata"]
        }))
        .unwrap();
        self.ctx
            .caches
            .secrets
            .apply(&watcher::Event::Apply(metadata));
    }

    /// The usual case: `resource` alone in the cache, the cloud applying what it is asked, and
    /// its reconcile started.
    async fn reconciling(
        resource: &DynamicRegistration,
    ) -> (Self, MockApi, tokio::task::JoinHandle<Option<Progress>>) {
        let (scenario, api) =
            Self::start(LimitPolicy::default(), std::slice::from_ref(resource)).await;
        let task = scenario.reconcile(resource);
        (scenario, api, task)
    }

    /// Starts one reconcile of `resource`; the test answers its requests through `api`.
    fn reconcile(
        &self,
        resource: &DynamicRegistration,
    ) -> tokio::task::JoinHandle<Option<Progress>> {
        let (resource, ctx) = (resource.clone(), self.ctx.clone());
        tokio::spawn(async move { reconcile(&resource, &ctx).await.unwrap() })
    }

    /// Starts one reconcile of `resource` that may fail.
    fn try_reconcile(
        &self,
        resource: &DynamicRegistration,
    ) -> tokio::task::JoinHandle<Result<Option<Progress>, String>> {
        let (resource, ctx) = (resource.clone(), self.ctx.clone());
        tokio::spawn(async move {
            reconcile(&resource, &ctx)
                .await
                .map_err(|error| error.to_string())
        })
    }

    /// A product as the emulator's control endpoint shows it (with its ProductSecret).
    async fn cloud_product(&self, product_id: &str) -> Value {
        let products = self.emulator_get("products").await;
        products
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["productId"] == product_id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn stats(&self) -> Value {
        self.emulator_get("stats").await
    }

    async fn emulator_get(&self, path: &str) -> Value {
        let url = format!("{}/_emulator/{path}", self.emulator.endpoint());
        let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }
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
    let events = EventPublisher::new(client.clone(), MANAGER, None);
    let (reader, mut writer) = reflector::store();
    let resource_index = ResourceIndex::new(resource_keys);
    let listed = std::iter::once(watcher::Event::Init)
        .chain(resources.iter().cloned().map(watcher::Event::InitApply))
        .chain([watcher::Event::InitDone]);
    for event in listed {
        writer.apply_watcher_event(&event);
        resource_index.apply(&event);
    }
    // The store must outlive the writer's drop: keep the writer alive for the test.
    std::mem::forget(writer);
    let caches = Arc::new(Caches {
        resources: reader,
        resource_index: Arc::new(resource_index),
        secrets: Arc::default(),
        known_secrets: Default::default(),
        verified_secrets: Default::default(),
        observations: Default::default(),
        updates: Default::default(),
        cluster_credentials: reflector::store().0,
        namespaces: reflector::store().0,
        listed: tokio::sync::watch::channel(true).1,
    });
    let credentials = Resolver::new(
        (client.clone(), caches.clone()),
        cloud.clone(),
        Grants::default(),
        (
            std::time::Duration::from_secs(900),
            CREDENTIALS_IN_USE.to_owned(),
        ),
    );
    Arc::new(Context {
        client,
        observer: Observer::new(cloud.clone(), std::time::Duration::from_secs(60)),
        cloud,
        caches,
        credentials,
        events,
        inherited_labels: Vec::new(),
        renders: Default::default(),
        metrics: Arc::new(iothub_dynreg::ops::metrics::Metrics::new()),
        claim_changes: tokio::sync::mpsc::unbounded_channel().0,
    })
}

/// The reads every reconcile starts with: the published Secret (`None`: there is none, and the
/// watch cache shows none: no read), then the credentials Secret.
async fn answer_reads(api: &mut MockApi, published: Option<Value>) {
    if let Some(found) = published {
        api.expect("GET", PRODUCT_SECRET_PATH)
            .await
            .respond(200, found);
    }
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
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
    let resource = registration("NEW0000001", 100);
    let (scenario, mut api, task) = Scenario::reconciling(&resource).await;

    answer_reads(&mut api, None).await;

    // Absent: created, never applied over a Secret someone might create meanwhile.
    let create = api.expect("POST", SECRETS_PATH).await;
    assert_eq!(create.content_type, "application/json");
    let secret = create.body.clone();
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "iothub-dynreg"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["uid"].as_str(),
            owner["controller"].as_bool(),
            owner["blockOwnerDeletion"].as_bool()
        ),
        (Some("uid-sensors"), Some(true), Some(true))
    );
    assert_eq!(secret["data"]["productId"], b64("NEW0000001"));
    let cloud_secret = scenario.cloud_product("NEW0000001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(secret["data"]["productSecret"], b64(&cloud_secret));
    create.echo();
    // One Event for the whole change: the cloud update and the Secret written.
    let updated = api.expect_event(NS).await;
    assert_eq!(updated["reason"], "Updated");
    assert_eq!(updated["type"], "Normal");
    let note = updated["note"].as_str().unwrap();
    assert!(note.contains("RegisterLimit 100"), "{note}");
    assert!(
        note.contains("wrote Secret sensors-product-secret"),
        "{note}"
    );

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

    // Settled: resynced after --resync-interval.
    assert_eq!(task.await.unwrap(), Some(Progress::Settled));
    api.expect_nothing_more().await;
    let stats = scenario.stats().await;
    // One page of DescribeProducts fills the shared snapshot; no DescribeProduct needed.
    assert_eq!(stats["calls"]["DescribeProducts"]["Success"], 1);
    assert!(stats["calls"].get("DescribeProduct").is_none(), "{stats}");
    assert_eq!(stats["calls"]["UpdateProductDynamicRegister"]["Success"], 1);
}

#[tokio::test]
async fn steady_state_makes_no_update_and_no_secret_write() {
    let resource = registration("STEADY0001", 100);
    let published = published_secret("STEADY0001", "steady-product-secret", Some("uid-sensors"));
    let (scenario, mut api, task) = Scenario::reconciling_with(&resource, &published).await;

    answer_reads(&mut api, Some(published)).await;
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    assert_eq!(ready(&status_patch.body["status"])["reason"], "InSync");
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    task.await.unwrap();
    api.expect_nothing_more().await;
    let stats = scenario.stats().await;
    assert_eq!(stats["calls"]["DescribeProducts"]["Success"], 1);
    assert!(
        stats["calls"].get("UpdateProductDynamicRegister").is_none(),
        "{stats}"
    );
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let resource = registration("STEADY0001", 100);
    let foreign = published_secret("OTHER", "someone-elses", None);
    let (_scenario, mut api, task) = Scenario::reconciling_with(&resource, &foreign).await;

    answer_reads(&mut api, Some(foreign)).await;
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
    task.await.unwrap();
    api.expect_nothing_more().await;
}

#[tokio::test]
async fn missing_credentials_make_no_cloud_call() {
    let resource = registration("NEW0000001", 100);
    let (scenario, mut api, task) = Scenario::reconciling(&resource).await;

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
    task.await.unwrap();
    assert_eq!(scenario.stats().await["totalCalls"], 0);
}

#[tokio::test]
async fn product_not_found_stalls() {
    let resource = registration("NOSUCHPROD", 100);
    let (_scenario, mut api, task) = Scenario::reconciling(&resource).await;

    answer_reads(&mut api, None).await;
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "ProductNotFound");
    assert!(has_condition(&status, "Stalled"));
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "ProductNotFound");
    // Stalled: retried slowly (--stalled-retry-interval), never in a hot loop.
    assert_eq!(task.await.unwrap(), Some(Progress::Stalled));
}

#[tokio::test]
async fn a_limit_the_cloud_rewrites_is_asked_for_once() {
    let resource = registration("NEW0000001", 10);
    let (scenario, mut api) = Scenario::start(
        LimitPolicy {
            max: None,
            override_to: Some(10_000),
            refuse_above: None,
        },
        std::slice::from_ref(&resource),
    )
    .await;
    let task = scenario.reconcile(&resource);

    answer_reads(&mut api, None).await;
    api.expect("POST", SECRETS_PATH).await.echo();
    assert_eq!(api.expect_event(NS).await["reason"], "Updated");
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "NotAccepted");
    assert_eq!(status["cloud"]["registerLimit"], 10_000);
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "NotAccepted");
    task.await.unwrap();

    // The next reconcile of the same generation sees the recorded refusal and does not ask again.
    let mut again = resource.clone();
    again.status = Some(serde_json::from_value(status).unwrap());
    let cloud_secret = scenario.cloud_product("NEW0000001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let published = published_secret("NEW0000001", &cloud_secret, Some("uid-sensors"));
    scenario.secret_in_cache(&published);
    let task = scenario.reconcile(&again);
    api.expect("GET", PRODUCT_SECRET_PATH)
        .await
        .respond(200, published);
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    assert_eq!(ready(&status_patch.body["status"])["reason"], "NotAccepted");
    status_patch.respond(200, serde_json::to_value(&again).unwrap());
    task.await.unwrap();
    api.expect_nothing_more().await;
    assert_eq!(
        scenario.stats().await["calls"]["UpdateProductDynamicRegister"]["Success"],
        1
    );
}

#[tokio::test]
async fn the_newer_of_two_claimants_makes_no_change() {
    let mut older = registration("NEW0000001", 100);
    older.metadata.name = Some("older".into());
    older.metadata.uid = Some("uid-older".into());
    // The older claim counts: its credentials reached the product.
    older.status = Some(
        serde_json::from_value(json!({
            "cloud": {"registerType": "AutoCreate", "registerLimit": 100},
            "conditions": [{"type": "Ready", "status": "True", "reason": "InSync", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }))
        .unwrap(),
    );
    let mut resource = registration("NEW0000001", 100);
    resource.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
    let (scenario, mut api) =
        Scenario::start(LimitPolicy::default(), &[older, resource.clone()]).await;
    let task = scenario.reconcile(&resource);

    // It reads the product with its own credentials first: only a claim that reaches the
    // product defers to an older one.
    answer_reads(&mut api, None).await;
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "Conflict");
    assert!(
        ready(&status)["message"]
            .as_str()
            .unwrap()
            .contains("the older DynamicRegistration older in this namespace")
    );
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "Conflict");
    task.await.unwrap();
    let calls = &scenario.stats().await["calls"];
    assert!(
        calls.get("UpdateProductDynamicRegister").is_none(),
        "{calls}"
    );
}

#[tokio::test]
async fn deletion_policy_disable_adds_a_finalizer_and_disables_before_release() {
    let mut resource = registration("STEADY0001", 100);
    resource.spec.deletion_policy = DeletionPolicy::Disable;
    let (scenario, mut api) =
        Scenario::start(LimitPolicy::default(), std::slice::from_ref(&resource)).await;
    let published = published_secret("STEADY0001", "steady-product-secret", Some("uid-sensors"));
    scenario.secret_in_cache(&published);

    // Alive: the finalizer goes on first, guarded by the resourceVersion.
    let task = scenario.reconcile(&resource);
    let patch = api.expect("PATCH", RESOURCE_PATH).await;
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(
        patch.body,
        json!({"metadata": {"resourceVersion": "10", "finalizers": [FINALIZER]}})
    );
    patch.respond(200, serde_json::to_value(&resource).unwrap());
    answer_reads(&mut api, Some(published)).await;
    // The credentials its deletion will need get our in-use finalizer, guarded likewise.
    let protect = api.expect("PATCH", CREDENTIALS_PATH).await;
    assert_eq!(
        protect.body,
        json!({"metadata": {"resourceVersion": "5", "finalizers": [CREDENTIALS_IN_USE]}})
    );
    protect.respond(200, protected_credentials_secret());
    api.expect("PATCH", STATUS_PATH)
        .await
        .respond(200, serde_json::to_value(&resource).unwrap());
    task.await.unwrap();

    // Deleted: RegisterType 0 in the cloud, then the finalizer comes off.
    resource.metadata.finalizers = Some(vec!["other.io/keep".into(), FINALIZER.into()]);
    resource.metadata.resource_version = Some("11".into());
    resource.metadata.deletion_timestamp = resource.metadata.creation_timestamp.clone();
    let task = scenario.reconcile(&resource);
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, protected_credentials_secret());
    assert_eq!(api.expect_event(NS).await["reason"], "RegistrationDisabled");
    let release = api.expect("PATCH", RESOURCE_PATH).await;
    assert_eq!(
        release.body,
        json!({"metadata": {"resourceVersion": "11", "finalizers": ["other.io/keep"]}})
    );
    release.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(task.await.unwrap(), None, "let go: no requeue");
    assert_eq!(
        scenario.cloud_product("STEADY0001").await["registerType"],
        0
    );
}

/// Defect: the product was disabled, then the finalizer's removal was turned away (409: the
/// resource changed meanwhile, as while its namespace goes); the retry disabled it again.
#[tokio::test]
async fn a_disable_is_not_sent_again_when_the_finalizer_release_failed() {
    let mut resource = registration("STEADY0001", 100);
    resource.spec.deletion_policy = DeletionPolicy::Disable;
    resource.metadata.finalizers = Some(vec![FINALIZER.into()]);
    resource.metadata.deletion_timestamp = resource.metadata.creation_timestamp.clone();
    let (scenario, mut api) =
        Scenario::start(LimitPolicy::default(), std::slice::from_ref(&resource)).await;
    let conflict = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409
    });
    let first = scenario.try_reconcile(&resource);
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, protected_credentials_secret());
    assert_eq!(api.expect_event(NS).await["reason"], "RegistrationDisabled");
    api.expect("PATCH", RESOURCE_PATH)
        .await
        .respond(409, conflict);
    assert!(first.await.unwrap().is_err());

    let retry = scenario.reconcile(&resource);
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, protected_credentials_secret());
    let event = api.expect_event(NS).await;
    assert_eq!(event["reason"], "RegistrationDisabled");
    let release = api.expect("PATCH", RESOURCE_PATH).await;
    release.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(retry.await.unwrap(), None);
    assert_eq!(
        scenario.stats().await["calls"]["UpdateProductDynamicRegister"]["Success"],
        1,
        "disabled twice"
    );
}

#[tokio::test]
async fn deleting_a_resource_whose_product_is_gone_does_not_wedge() {
    let mut resource = registration("NOSUCHPROD", 100);
    resource.spec.deletion_policy = DeletionPolicy::Disable;
    resource.metadata.finalizers = Some(vec![FINALIZER.into()]);
    resource.metadata.deletion_timestamp = resource.metadata.creation_timestamp.clone();
    let (_scenario, mut api, task) = Scenario::reconciling(&resource).await;
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, protected_credentials_secret());
    let warning = api.expect_event(NS).await;
    assert_eq!(
        (warning["type"].as_str(), warning["reason"].as_str()),
        (Some("Warning"), Some("CloudLeftAsIs"))
    );
    let release = api.expect("PATCH", RESOURCE_PATH).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    release.respond(200, serde_json::to_value(&resource).unwrap());
    task.await.unwrap();
}

#[tokio::test]
async fn a_secret_created_by_someone_else_meanwhile_is_never_taken_over() {
    let resource = registration("NEW0000001", 100);
    let (scenario, mut api, task) = Scenario::reconciling(&resource).await;
    answer_reads(&mut api, None).await;
    // Absent from the watch cache, but created by someone else before our create: 409
    // AlreadyExists.
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "secrets \"sensors-product-secret\" already exists",
        "reason": "AlreadyExists", "code": 409
    });
    api.expect("POST", SECRETS_PATH).await.respond(409, status);
    assert_eq!(api.expect_event(NS).await["reason"], "Updated");
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "SecretConflict");
    assert!(status.get("secretName").is_none(), "{status}");
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "SecretConflict");
    assert_eq!(task.await.unwrap(), Some(Progress::Stalled));
    api.expect_nothing_more().await;
    drop(scenario);
}

#[tokio::test]
async fn an_owned_secret_is_rewritten_only_in_the_version_found() {
    let resource = registration("STEADY0001", 100);
    let mut stale = published_secret("STEADY0001", "tampered", Some("uid-sensors"));
    stale["metadata"]["resourceVersion"] = json!("77");
    let (_scenario, mut api, task) = Scenario::reconciling_with(&resource, &stale).await;
    answer_reads(&mut api, Some(stale)).await;
    let apply = api.expect("PATCH", PRODUCT_SECRET_PATH).await;
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert_eq!(
        apply.body["metadata"]["resourceVersion"], "77",
        "no precondition"
    );
    assert!(
        apply.query.contains("fieldManager=iothub-dynreg"),
        "{}",
        apply.query
    );
    apply.echo();
    assert_eq!(api.expect_event(NS).await["reason"], "SecretPublished");
    api.expect("PATCH", STATUS_PATH)
        .await
        .respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(task.await.unwrap(), Some(Progress::Settled));
}

/// An answer of the API server's for a request that failed on its side.
fn server_error() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500})
}

/// The update succeeded, then publishing the Secret failed: the retry finds the cloud in sync
/// and makes no update, yet the status it writes carries the update's RequestId and the
/// "Updated" Event it owed is sent.
#[tokio::test]
async fn an_update_answer_outlives_a_failed_secret_write() {
    let resource = registration("NEW0000001", 100);
    let (scenario, mut api) =
        Scenario::start(LimitPolicy::default(), std::slice::from_ref(&resource)).await;
    let first = scenario.try_reconcile(&resource);
    answer_reads(&mut api, None).await;
    api.expect("POST", SECRETS_PATH)
        .await
        .respond(500, server_error());
    let failed = first.await.unwrap();
    assert!(failed.is_err(), "{failed:?}");

    let retry = scenario.reconcile(&resource);
    answer_reads(&mut api, None).await;
    api.expect("POST", SECRETS_PATH).await.echo();
    let event = api.expect_event(NS).await;
    assert_eq!(event["reason"], "Updated", "{event}");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("RequestId") && note.contains("wrote Secret"),
        "{note}"
    );
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "InSync");
    let request_id = status["lastRequestId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !request_id.is_empty(),
        "the update's RequestId was lost: {status}"
    );
    assert!(note.contains(&request_id), "{note} / {request_id}");
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    retry.await.unwrap();
    api.expect_nothing_more().await;
    assert_eq!(
        scenario.stats().await["calls"]["UpdateProductDynamicRegister"]["Success"],
        1
    );
}

/// A limit the cloud rewrites, and the status write carrying that refusal failed: the retry
/// does not ask the cloud again, and records the refusal with the update's RequestId.
#[tokio::test]
async fn a_refused_update_is_not_sent_again_when_its_status_write_failed() {
    let resource = registration("NEW0000001", 10);
    let (scenario, mut api) = Scenario::start(
        LimitPolicy {
            max: None,
            override_to: Some(10_000),
            refuse_above: None,
        },
        std::slice::from_ref(&resource),
    )
    .await;
    let first = scenario.try_reconcile(&resource);
    answer_reads(&mut api, None).await;
    api.expect("POST", SECRETS_PATH).await.echo();
    assert_eq!(api.expect_event(NS).await["reason"], "Updated");
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let asked_id = status_patch.body["status"]["lastRequestId"].clone();
    status_patch.respond(500, server_error());
    assert!(first.await.unwrap().is_err());

    let cloud_secret = scenario.cloud_product("NEW0000001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let published = published_secret("NEW0000001", &cloud_secret, Some("uid-sensors"));
    scenario.secret_in_cache(&published);
    let retry = scenario.reconcile(&resource);
    api.expect("GET", PRODUCT_SECRET_PATH)
        .await
        .respond(200, published);
    api.expect("GET", CREDENTIALS_PATH)
        .await
        .respond(200, credentials_secret());
    let status_patch = api.expect("PATCH", STATUS_PATH).await;
    let status = status_patch.body["status"].clone();
    assert_eq!(ready(&status)["reason"], "NotAccepted", "{status}");
    assert_eq!(status["lastRequestId"], asked_id);
    status_patch.respond(200, serde_json::to_value(&resource).unwrap());
    assert_eq!(api.expect_event(NS).await["reason"], "NotAccepted");
    retry.await.unwrap();
    api.expect_nothing_more().await;
    assert_eq!(
        scenario.stats().await["calls"]["UpdateProductDynamicRegister"]["Success"],
        1,
        "the refused update was sent again"
    );
}
