//! End to end on the real API server: ClusterCredentials declared by the platform team, granted
//! to namespaces by name or label; a namespace not selected gets CredentialsNotAllowed with no
//! cloud call, and labelling it (or changing the selector) re-evaluates its resources at once;
//! a Secret source in the platform's namespace and a web identity source; their status says
//! whether the cloud accepted them, and never holds a secret.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::ClusterCredentials;
use iothub_dynreg::controller::resources::{ClusterCredentialsReference, RegistrationMode};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::e2e::{Harness, SECRET_ID, SECRET_KEY, registration};

const ROLE: &str = "qcs::cam::uin/100000000001:roleName/iothub-dynreg";
const PROVIDER: &str = "tke-oidc-cls-e2e";
const TOKEN: &str = "eyJ.e2e-token.sig";

fn products() -> String {
    format!(
        "products: [{{productId: CLUSTER001, region: ap-guangzhou}}, {{productId: CLUSTER002, region: ap-guangzhou}}]\nroles:\n  - {{roleArn: '{ROLE}', providerId: {PROVIDER}, tokens: ['{TOKEN}']}}\n"
    )
}

async fn apply_cluster_credentials(api: &Api<ClusterCredentials>, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "iothub.dynreg.io/v1alpha1",
        "kind": "ClusterCredentials",
        "metadata": {"name": name},
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply("platform-team").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap();
}

/// The Ready condition of a ClusterCredentials: (status, reason, message).
async fn ready_of(api: &Api<ClusterCredentials>, name: &str) -> Option<(String, String, String)> {
    let found = api.get(name).await.ok()?;
    let ready = found
        .status?
        .conditions
        .into_iter()
        .find(|condition| condition.type_ == "Ready")?;
    Some((ready.status, ready.reason, ready.message))
}

/// The platform team's key, in a namespace of its own.
async fn platform_key(harness: &Harness) -> String {
    let platform = format!("{}-platform", harness.namespace);
    harness
        .plane
        .create_namespace(&harness.client, &platform)
        .await;
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "team-key", "namespace": platform},
        "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY},
    }))
    .unwrap();
    Api::<Secret>::namespaced(harness.client.clone(), &platform)
        .create(&PostParams::default(), &key)
        .await
        .unwrap();
    platform
}

/// A resource of the harness's namespace using ClusterCredentials `credentials`.
async fn create_user(harness: &Harness, name: &str, credentials: &str) {
    let mut resource = registration(name, "CLUSTER001", RegistrationMode::AutoCreate, 50);
    resource.spec.credentials_secret_ref = None;
    resource.spec.cluster_credentials_ref = Some(ClusterCredentialsReference {
        name: credentials.to_owned(),
    });
    harness.create(resource).await;
}

/// Slow retries (30 s) leave only the watches to explain a quick re-evaluation.
const SLOW_RETRIES: [&str; 2] = ["--stalled-retry-interval", "30s"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_not_selected_is_refused_without_a_cloud_call_until_labelled() {
    let Some(harness) = Harness::start(&products(), |_| {}).await else {
        return;
    };
    let namespace = harness.namespace.clone();
    let platform = platform_key(&harness).await;
    let declared: Api<ClusterCredentials> = Api::all(harness.client.clone());
    let name = format!("{namespace}-sensors");
    let by_label = json!({
        "secretRef": {"namespace": platform, "name": "team-key"},
        "namespaceSelector": {"matchLabels": {"team": "sensors"}},
    });
    apply_cluster_credentials(&declared, &name, by_label).await;
    let controller = harness.spawn_controller(&SLOW_RETRIES);
    create_user(&harness, "user", &name).await;
    let refused = harness
        .wait_reason(
            "user",
            "CredentialsNotAllowed",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    let message = &refused.condition("Ready").unwrap().message;
    assert!(
        message.contains(&name) && message.contains(&namespace),
        "{message}"
    );
    let stats = harness.emulator_get("stats").await;
    assert_eq!(
        stats["totalCalls"], 0,
        "no cloud call for a namespace not selected: {stats}"
    );

    // The platform team labels the namespace: re-evaluated at once, not at the slow retry.
    let labelled = std::time::Instant::now();
    Api::<Namespace>::all(harness.client.clone())
        .patch(
            &namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "sensors"}}})),
        )
        .await
        .unwrap();
    harness
        .wait_reason("user", "InSync", Duration::from_secs(10), &controller)
        .await;
    println!(
        "InSync {:?} after the namespace was labelled",
        labelled.elapsed()
    );
    assert_eq!(
        harness.cloud_product("CLUSTER001").await["registerLimit"],
        50
    );
    harness.assert_no_secrets_logged(&controller).await;
}

/// ClusterCredentials holding the platform's key and granting the harness's namespace by name,
/// and a resource using them, InSync: (their API, their name, the secretRef, the controller).
async fn granted_user(
    harness: &Harness,
) -> (
    Api<ClusterCredentials>,
    String,
    Value,
    support::e2e::ControllerProcess,
) {
    let platform = platform_key(harness).await;
    let declared: Api<ClusterCredentials> = Api::all(harness.client.clone());
    let name = format!("{}-sensors", harness.namespace);
    let source = json!({"namespace": platform, "name": "team-key"});
    let by_name = json!({"secretRef": source, "namespaces": [harness.namespace]});
    apply_cluster_credentials(&declared, &name, by_name).await;
    let controller = harness.spawn_controller(&SLOW_RETRIES);
    create_user(harness, "user", &name).await;
    harness
        .wait_reason("user", "InSync", Duration::from_secs(20), &controller)
        .await;
    (declared, name, source, controller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn their_status_says_the_cloud_accepted_them_and_holds_no_secret() {
    let Some(harness) = Harness::start(&products(), |_| {}).await else {
        return;
    };
    let (declared, name, _, controller) = granted_user(&harness).await;
    harness
        .wait_for(
            "the ClusterCredentials to report Ready",
            Duration::from_secs(10),
            Some(&controller),
            || async {
                ready_of(&declared, &name)
                    .await
                    .filter(|(status, reason, _)| status == "True" && reason == "Accepted")
            },
        )
        .await;
    let status = serde_json::to_string(&declared.get(&name).await.unwrap().status).unwrap();
    assert!(status.contains("secretRef"), "{status}");
    assert!(
        !status.contains(SECRET_KEY),
        "the status holds the key: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_that_no_longer_matches_refuses_their_users_at_once() {
    let Some(harness) = Harness::start(&products(), |_| {}).await else {
        return;
    };
    let (declared, name, source, controller) = granted_user(&harness).await;
    let elsewhere = json!({
        "secretRef": source,
        "namespaceSelector": {"matchLabels": {"team": "gateways"}},
    });
    apply_cluster_credentials(&declared, &name, elsewhere).await;
    harness
        .wait_reason(
            "user",
            "CredentialsNotAllowed",
            Duration::from_secs(10),
            &controller,
        )
        .await;
    let by_name = json!({"secretRef": source, "namespaces": [harness.namespace]});
    apply_cluster_credentials(&declared, &name, by_name).await;
    harness
        .wait_reason("user", "InSync", Duration::from_secs(10), &controller)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn their_secret_deleted_or_restored_reaches_their_users_at_once() {
    let Some(harness) = Harness::start(&products(), |_| {}).await else {
        return;
    };
    let namespace = harness.namespace.clone();
    let declared: Api<ClusterCredentials> = Api::all(harness.client.clone());
    let name = format!("{namespace}-sensors");
    // The controller watches Secrets where it watches resources: this namespace, under
    // --watch-namespace.
    let watched = json!({
        "secretRef": {"namespace": namespace, "name": "watched-key"},
        "namespaces": [namespace],
    });
    apply_cluster_credentials(&declared, &name, watched).await;
    let controller = harness.spawn_controller(&SLOW_RETRIES);
    create_user(&harness, "user", &name).await;
    let reason = |reason: &'static str| {
        harness.wait_reason("user", reason, Duration::from_secs(10), &controller)
    };
    reason("CredentialsInvalid").await;
    harness.create_credentials("watched-key", SECRET_KEY).await;
    reason("InSync").await;
    harness
        .secrets()
        .delete("watched-key", &Default::default())
        .await
        .unwrap();
    reason("CredentialsInvalid").await;
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_cluster_credentials_leave_their_users_credentials_missing() {
    let Some(harness) = Harness::start(&products(), |_| {}).await else {
        return;
    };
    let (declared, name, _, controller) = granted_user(&harness).await;
    declared.delete(&name, &Default::default()).await.unwrap();
    harness
        .wait_reason(
            "user",
            "CredentialsMissing",
            Duration::from_secs(10),
            &controller,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_identity_source_and_a_refused_token() {
    let Some(harness) = Harness::start(&products(), |_| {}).await else {
        return;
    };
    let namespace = harness.namespace.clone();
    let good = harness.dir.join("good-token");
    std::fs::write(&good, TOKEN).unwrap();
    let bad = harness.dir.join("bad-token");
    std::fs::write(&bad, "eyJ.not-trusted.sig").unwrap();
    let declared: Api<ClusterCredentials> = Api::all(harness.client.clone());
    for (name, file) in [("web", &good), ("web-bad", &bad)] {
        apply_cluster_credentials(
            &declared,
            &format!("{namespace}-{name}"),
            json!({
                "webIdentity": {
                    "roleArn": ROLE,
                    "providerId": PROVIDER,
                    "region": "ap-guangzhou",
                    "tokenFile": file.display().to_string(),
                },
                "namespaces": [namespace],
            }),
        )
        .await;
    }
    let endpoint = harness.emulator.endpoint();
    let controller = harness.spawn_controller(&[
        "--sts-endpoint",
        &endpoint,
        "--resync-interval",
        "2s",
        "--stalled-retry-interval",
        "2s",
    ]);
    for (resource_name, product, credentials) in [
        ("web", "CLUSTER001", "web"),
        ("web-bad", "CLUSTER002", "web-bad"),
    ] {
        let mut resource = registration(resource_name, product, RegistrationMode::PreCreate, 7);
        resource.spec.credentials_secret_ref = None;
        resource.spec.cluster_credentials_ref = Some(ClusterCredentialsReference {
            name: format!("{namespace}-{credentials}"),
        });
        harness.create(resource).await;
    }
    harness
        .wait_reason("web", "InSync", Duration::from_secs(20), &controller)
        .await;
    let refused = harness
        .wait_reason(
            "web-bad",
            "AuthFailed",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    let message = &refused.condition("Ready").unwrap().message;
    assert!(
        message.contains("InvalidParameter.WebIdentityTokenError"),
        "{message}"
    );
    // Retried every 2 s for 6 s: the refused token is not offered again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        harness
            .cloud_calls(
                "AssumeRoleWithWebIdentity",
                "InvalidParameter.WebIdentityTokenError"
            )
            .await,
        1
    );
    let good_name = format!("{namespace}-web");
    let bad_name = format!("{namespace}-web-bad");
    harness
        .wait_for(
            "both ClusterCredentials to report",
            Duration::from_secs(10),
            Some(&controller),
            || async {
                let good = ready_of(&declared, &good_name).await?;
                let bad = ready_of(&declared, &bad_name).await?;
                (good.0 == "True" && bad.0 == "False" && bad.1 == "AuthFailed").then_some(())
            },
        )
        .await;
    harness.assert_no_secrets_logged(&controller).await;
    let log = controller.stderr();
    assert!(!log.contains(TOKEN), "the log holds the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_two_sources_or_two_references() {
    let Some(harness) = Harness::start(&products(), |_| {}).await else {
        return;
    };
    let declared: Api<ClusterCredentials> = Api::all(harness.client.clone());
    let both = serde_json::from_value::<ClusterCredentials>(json!({
        "apiVersion": "iothub.dynreg.io/v1alpha1",
        "kind": "ClusterCredentials",
        "metadata": {"name": format!("{}-both", harness.namespace)},
        "spec": {
            "secretRef": {"namespace": "a", "name": "b"},
            "webIdentity": {"roleArn": ROLE, "providerId": PROVIDER, "region": "ap-guangzhou"},
        }
    }))
    .unwrap();
    let error = declared
        .create(&PostParams::default(), &both)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("exactly one source: secretRef or webIdentity"),
        "{error}"
    );

    let mut resource = registration("two-refs", "CLUSTER001", RegistrationMode::AutoCreate, 1);
    resource.spec.cluster_credentials_ref = Some(ClusterCredentialsReference {
        name: "anything".to_owned(),
    });
    resource.metadata.namespace = Some(harness.namespace.clone());
    let error = harness
        .registrations()
        .create(&PostParams::default(), &resource)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("credentialsSecretRef and clusterCredentialsRef are mutually exclusive"),
        "{error}"
    );
}

/// Warning Events in the harness's namespace with one of `reasons`.
async fn warnings(harness: &Harness, reasons: &[&str]) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(harness.client.clone(), &harness.namespace);
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.type_.as_deref() == Some("Warning"))
        .filter_map(|event| event.reason)
        .filter(|reason| reasons.contains(&reason.as_str()))
        .collect()
}

/// Restarted over resources that use ClusterCredentials, the controller decides nothing before
/// the ClusterCredentials and the namespaces are listed: no resource is told its credentials
/// are missing or not granted, so none loses its claim or warns. (Many other ClusterCredentials
/// make their list the slowest of the controller's lists.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_decide_nothing_before_the_cluster_credentials_are_listed() {
    const USERS: usize = 20;
    let products = format!("generate: {{count: {USERS}, region: ap-guangzhou, prefix: RESTCC}}");
    let Some(harness) = Harness::start(&products, |_| {}).await else {
        return;
    };
    let platform = platform_key(&harness).await;
    let declared: Api<ClusterCredentials> = Api::all(harness.client.clone());
    let others: Vec<String> = (0..400)
        .map(|index| format!("{}-other-{index}", harness.namespace))
        .collect();
    for chunk in others.chunks(50) {
        futures::future::join_all(chunk.iter().map(|name| {
            let spec = json!({"secretRef": {"namespace": platform, "name": "team-key"}});
            apply_cluster_credentials(&declared, name, spec)
        }))
        .await;
    }
    let name = format!("{}-restarts", harness.namespace);
    let by_label = json!({
        "secretRef": {"namespace": platform, "name": "team-key"},
        "namespaceSelector": {"matchLabels": {"team": "restarts"}},
    });
    apply_cluster_credentials(&declared, &name, by_label).await;
    Api::<Namespace>::all(harness.client.clone())
        .patch(
            &harness.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "restarts"}}})),
        )
        .await
        .unwrap();
    for index in 0..USERS {
        let mut resource = registration(
            &format!("user-{index}"),
            &format!("RESTCC{index:04}"),
            RegistrationMode::AutoCreate,
            5,
        );
        resource.spec.credentials_secret_ref = None;
        resource.spec.cluster_credentials_ref =
            Some(ClusterCredentialsReference { name: name.clone() });
        harness.create(resource).await;
    }
    let mut controller = harness.spawn_controller(&[]);
    harness
        .wait_all_ready(USERS, Duration::from_secs(60), &controller)
        .await;
    let refusals = ["CredentialsMissing", "CredentialsNotAllowed"];
    let warned = warnings(&harness, &refusals).await;
    assert!(warned.is_empty(), "first start: {warned:?}");
    for restart in 0..4 {
        drop(controller);
        controller = harness.spawn_controller(&[]);
        harness
            .wait_ready(&controller, Duration::from_secs(30))
            .await;
        // Long enough for a pass over every resource.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let warned = warnings(&harness, &refusals).await;
        assert!(warned.is_empty(), "restart {restart}: {warned:?}");
        assert_eq!(
            harness.ready_names().await.len(),
            USERS,
            "restart {restart}"
        );
    }
    let delete = kube::api::DeleteParams::default();
    for chunk in others.chunks(50) {
        futures::future::join_all(chunk.iter().map(|name| declared.delete(name, &delete))).await;
    }
}
