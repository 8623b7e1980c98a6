//! End to end on the real API server: the published Secret shaped by `spec.secretTemplate`
//! (renamed keys, a JSON config key, type, labels, annotations), a template change written once
//! with no churn over resyncs and another manager's key kept, a type change re-creating our
//! Secret, a broken template reported without a secret, and `secretRetention: Retain` keeping the
//! Secret after the resource is deleted.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::{
    DeletionPolicy, RegistrationMode, SecretRetention, SecretTemplate,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::e2e::{ControllerProcess, Harness, registration, secret_data};

const SECRET_NAME: &str = "shaped-product-secret";

fn template(value: Value) -> SecretTemplate {
    serde_json::from_value(value).unwrap()
}

/// Replaces the template (a merge patch would merge its maps).
async fn set_template(harness: &Harness, name: &str, value: Value) {
    let api = harness.registrations();
    // The controller writes the status meanwhile: retry on a stale version.
    for _ in 0..20 {
        let mut resource = api.get(name).await.unwrap();
        resource.spec.secret_template = Some(template(value.clone()));
        match api.replace(name, &PostParams::default(), &resource).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => panic!("{error}"),
        }
    }
    panic!("the resource kept changing");
}

/// The published Secret once `check` holds for it.
async fn secret_when(
    harness: &Harness,
    controller: &ControllerProcess,
    what: &str,
    check: impl Fn(&Secret) -> bool,
) -> Secret {
    harness
        .wait_for(what, Duration::from_secs(20), Some(controller), || async {
            let secret = harness.secrets().get_opt(SECRET_NAME).await.ok()??;
            check(&secret).then_some(secret)
        })
        .await
}

fn secret_writes(harness: &Harness) -> usize {
    ["create", "patch", "delete"]
        .iter()
        .map(|verb| harness.controller_calls(verb, "secrets"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_secret_takes_the_shape_its_consumers_expect() {
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: SHAPE00001, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    let controller =
        harness.spawn_controller(&["--resync-interval", "2s", "--observe-interval", "1s"]);
    let mut resource = registration("shaped", "SHAPE00001", RegistrationMode::AutoCreate, 10);
    resource.spec.secret_name = Some(SECRET_NAME.to_owned());
    resource.spec.secret_template = Some(template(json!({
        "type": "iothub.dynreg.io/product-secret",
        "metadata": {
            "labels": {"backup.example.com/include": "true"},
            "annotations": {"reloader.stakater.com/match": "true"},
        },
        "data": {
            "PRODUCT_SECRET": "{{ productSecret }}",
            "config.json": "{{ {'productId': productId, 'region': region, 'secret': productSecret} | tojson }}",
        },
    })));
    harness.create(resource).await;
    harness
        .wait_reason("shaped", "InSync", Duration::from_secs(20), &controller)
        .await;
    let product_secret = harness.cloud_product("SHAPE00001").await["productSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = harness.secrets().get(SECRET_NAME).await.unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("iothub.dynreg.io/product-secret")
    );
    assert_eq!(secret.labels()["backup.example.com/include"], "true");
    assert_eq!(
        secret.labels()["app.kubernetes.io/managed-by"],
        "iothub-dynreg"
    );
    assert_eq!(secret.annotations()["reloader.stakater.com/match"], "true");
    let data = secret_data(&secret);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["PRODUCT_SECRET", "config.json"]
    );
    assert_eq!(data["PRODUCT_SECRET"], product_secret);
    let config: Value = serde_json::from_str(&data["config.json"]).unwrap();
    assert_eq!(
        config,
        json!({"productId": "SHAPE00001", "region": "ap-guangzhou", "secret": product_secret})
    );

    // Another manager adds a key; then the template renames one key and drops the other.
    harness
        .secrets()
        .patch(
            SECRET_NAME,
            &PatchParams::apply("gateway-tooling"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "stringData": {"theirs": "kept"},
            })),
        )
        .await
        .unwrap();
    let type_and_labels = json!({
        "type": "iothub.dynreg.io/product-secret",
        "metadata": {"labels": {"backup.example.com/include": "true"}},
    });
    let mut renamed = type_and_labels.clone();
    renamed["data"] = json!({"SECRET": "{{ productSecret }}"});
    let before_change = secret_writes(&harness);
    set_template(&harness, "shaped", renamed).await;
    let rewritten = secret_when(&harness, &controller, "the renamed key", |secret| {
        let data = secret_data(secret);
        data.contains_key("SECRET") && !data.contains_key("PRODUCT_SECRET")
    })
    .await;
    let data = secret_data(&rewritten);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["SECRET", "theirs"],
        "keys we no longer publish go; another manager's stays"
    );
    harness
        .wait_reason("shaped", "InSync", Duration::from_secs(10), &controller)
        .await;

    let before = secret_writes(&harness);
    assert_eq!(
        before - before_change,
        2,
        "one rewrite: the apply, and the patch removing the keys no longer published"
    );
    // No churn: three resyncs, no Secret write.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        secret_writes(&harness),
        before,
        "the Secret was written again"
    );

    // A new type: our Secret is re-created (Kubernetes never changes a Secret's type).
    let uid = rewritten.metadata.uid.clone();
    let mut retyped = type_and_labels.clone();
    retyped["type"] = json!("Opaque");
    retyped["data"] = json!({"SECRET": "{{ productSecret }}"});
    set_template(&harness, "shaped", retyped).await;
    let recreated = secret_when(&harness, &controller, "the Opaque Secret", |secret| {
        secret.type_.as_deref() == Some("Opaque")
    })
    .await;
    assert_ne!(recreated.metadata.uid, uid, "a new Secret");
    assert_eq!(secret_data(&recreated)["SECRET"], product_secret);

    // A broken template: stalled, the message names the key and holds no secret.
    let mut broken = type_and_labels;
    broken["type"] = json!("Opaque");
    broken["data"] = json!({"SECRET": "{{ productSecret "});
    set_template(&harness, "shaped", broken).await;
    let refused = harness
        .wait_reason(
            "shaped",
            "SecretTemplateInvalid",
            Duration::from_secs(10),
            &controller,
        )
        .await;
    let message = &refused.condition("Ready").unwrap().message;
    assert!(
        message.contains("secretTemplate.data[SECRET]: syntax error"),
        "{message}"
    );
    assert!(!message.contains(&product_secret));
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_the_secret_after_the_resource_goes() {
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: KEEP000001, region: ap-guangzhou}, {productId: GONE000001, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let mut kept = registration("kept", "KEEP000001", RegistrationMode::AutoCreate, 3);
    kept.spec.secret_retention = SecretRetention::Retain;
    harness.create(kept).await;
    harness
        .create(registration(
            "gone",
            "GONE000001",
            RegistrationMode::AutoCreate,
            3,
        ))
        .await;
    for name in ["kept", "gone"] {
        harness
            .wait_reason(name, "InSync", Duration::from_secs(20), &controller)
            .await;
    }
    for name in ["kept", "gone"] {
        harness
            .registrations()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    harness
        .wait_for(
            "both resources to go",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                let left = harness
                    .registrations()
                    .list(&Default::default())
                    .await
                    .ok()?;
                left.items.is_empty().then_some(())
            },
        )
        .await;
    // The garbage collector deletes the Secret of Delete, and leaves the one of Retain.
    harness
        .wait_for(
            "the garbage collector",
            Duration::from_secs(30),
            Some(&controller),
            || async {
                let gone = harness
                    .secrets()
                    .get_opt("gone-product-secret")
                    .await
                    .ok()?;
                gone.is_none().then_some(())
            },
        )
        .await;
    let kept = harness.secrets().get("kept-product-secret").await.unwrap();
    assert!(
        kept.owner_references().is_empty(),
        "{:?}",
        kept.metadata.owner_references
    );
    assert_eq!(secret_data(&kept)["productId"], "KEEP000001");
}

/// `kubectl delete --cascade=foreground` (how Argo CD prunes) of many Retain resources at once:
/// the garbage collector deletes every dependent of an owner in foreground deletion, so a
/// retained Secret must never depend on its resource. Also after a `secretName` change: the
/// Secret under the former name goes (ours), the one under the new name stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_survives_a_foreground_cascade() {
    const COUNT: usize = 24;
    let products: String = (0..COUNT)
        .map(|index| format!("  - {{productId: CASCADE{index:03}, region: ap-guangzhou}}\n"))
        .collect();
    let Some(harness) = Harness::with_credentials(&format!("products:\n{products}"), |_| {}).await
    else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    for index in 0..COUNT {
        let name = format!("r{index:03}");
        let mut retained = registration(
            &name,
            &format!("CASCADE{index:03}"),
            RegistrationMode::AutoCreate,
            3,
        );
        // One asks to keep its Secret only once published (below).
        if index != 2 {
            retained.spec.secret_retention = SecretRetention::Retain;
        }
        // Half of them disable their product first: a cloud call the deletion waits for.
        if index % 2 == 1 {
            retained.spec.deletion_policy = DeletionPolicy::Disable;
        }
        harness.create(retained).await;
    }
    harness
        .wait_all_ready(COUNT, Duration::from_secs(60), &controller)
        .await;
    // Published to go with its resource, then kept: it loses the ownerReference.
    let collected = harness.secrets().get("r002-product-secret").await.unwrap();
    assert_eq!(collected.owner_references().len(), 1);
    harness
        .registrations()
        .patch(
            "r002",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretRetention": "Retain"}})),
        )
        .await
        .unwrap();
    harness
        .wait_for(
            "r002's Secret to depend on nothing",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                let secret = harness.secrets().get("r002-product-secret").await.ok()?;
                secret.owner_references().is_empty().then_some(())
            },
        )
        .await;
    // One of them renamed: published under the new name, the former Secret deleted.
    harness
        .registrations()
        .patch(
            "r000",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretName": "r000-renamed"}})),
        )
        .await
        .unwrap();
    harness
        .wait_for(
            "the renamed Secret, and the former one gone",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                let secrets = harness.secrets();
                let renamed = secrets.get_opt("r000-renamed").await.ok()??;
                let former = secrets.get_opt("r000-product-secret").await.ok()?;
                (former.is_none() && secret_data(&renamed)["productId"] == "CASCADE000")
                    .then_some(())
            },
        )
        .await;
    harness
        .wait_all_ready(COUNT, Duration::from_secs(20), &controller)
        .await;
    // A slow cloud: the garbage collector has time to act before any call is answered.
    harness
        .emulator_send(reqwest::Method::PUT, "faults", json!({"latencyMs": 1500}))
        .await;
    let foreground = DeleteParams::foreground();
    for index in 0..COUNT {
        harness
            .registrations()
            .delete(&format!("r{index:03}"), &foreground)
            .await
            .unwrap();
    }
    harness
        .wait_for(
            "every resource to go",
            Duration::from_secs(60),
            Some(&controller),
            || async {
                let left = harness
                    .registrations()
                    .list(&Default::default())
                    .await
                    .ok()?;
                left.items.is_empty().then_some(())
            },
        )
        .await;
    // Give the garbage collector time to act on anything that still depended on them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lost = Vec::new();
    for index in 0..COUNT {
        let name = match index {
            0 => "r000-renamed".to_owned(),
            _ => format!("r{index:03}-product-secret"),
        };
        match harness.secrets().get_opt(&name).await.unwrap() {
            Some(kept) => {
                assert!(
                    kept.owner_references().is_empty(),
                    "{name}: {:?}",
                    kept.metadata.owner_references
                );
                assert_eq!(
                    secret_data(&kept)["productId"],
                    format!("CASCADE{index:03}")
                );
            }
            None => lost.push(name),
        }
    }
    assert!(
        lost.is_empty(),
        "retained Secrets lost to the cascade: {lost:?}"
    );
    harness.assert_no_secrets_logged(&controller).await;
}

/// `KEYS` keys of about 1 MB each.
fn huge_template(keys: usize) -> Value {
    let data: serde_json::Map<String, Value> = (0..keys)
        .map(|index| (format!("K{index:03}"), json!("{{ 'x' * 1000000 }}")))
        .collect();
    json!({"data": data})
}

/// The controller's peak resident memory, in MiB.
fn peak_rss_mib(controller: &ControllerProcess) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", controller.pid())).unwrap();
    let kib: f64 = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A tenant's template may not make the shared controller hold what no Secret can: the API
/// server refuses more keys than the schema allows, and a template that renders more than a
/// Secret holds (1 MiB) is stopped while rendering. The resource says why, nothing is written,
/// and the controller stays far within the Deployment's 256 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_larger_than_a_secret_is_refused_within_bounded_memory() {
    let products = "products: [{productId: SHAPE00003, region: ap-guangzhou}]";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let mut resource = registration("huge", "SHAPE00003", RegistrationMode::AutoCreate, 5);
    resource.spec.secret_name = Some(SECRET_NAME.into());
    resource.metadata.namespace = Some(harness.namespace.clone());
    resource.spec.secret_template = Some(template(huge_template(150)));
    let refused = harness
        .registrations()
        .create(&PostParams::default(), &resource)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("must have at most 64 items"), "{refused}");

    let controller = harness.spawn_controller(&[]);
    resource.spec.secret_template = Some(template(huge_template(64)));
    harness.create(resource).await;
    let stalled = harness
        .wait_reason(
            "huge",
            "SecretTemplateInvalid",
            Duration::from_secs(30),
            &controller,
        )
        .await;
    let message = &stalled.condition("Ready").unwrap().message;
    assert!(message.contains("more than a Secret holds"), "{message}");
    // Resyncs render it again, within the same bounds.
    for round in 0..3 {
        harness
            .request_reconcile("huge", &format!("again-{round}"), &controller)
            .await;
    }
    assert!(
        harness
            .secrets()
            .get_opt(SECRET_NAME)
            .await
            .unwrap()
            .is_none()
    );
    let peak = peak_rss_mib(&controller);
    println!("a template of 64 keys of 1 MB each: peak RSS {peak:.1} MiB");
    assert!(peak < 100.0, "peak RSS {peak:.1} MiB");
}

/// Many templated resources of one tenant at once, each publishing a Secret of almost 1 MiB:
/// rendered and written a few at a time, so that the controller's memory does not grow with
/// how many a tenant creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_secrets_at_once_stay_within_bounded_memory() {
    const COUNT: usize = 40;
    let products = format!("generate: {{count: {COUNT}, region: ap-guangzhou, prefix: LARGE}}");
    let Some(harness) = Harness::with_credentials(&products, |_| {}).await else {
        return;
    };
    for index in 0..COUNT {
        let name = format!("large-{index}");
        let mut resource = registration(
            &name,
            &format!("LARGE{index:05}"),
            RegistrationMode::AutoCreate,
            5,
        );
        resource.spec.secret_template =
            Some(template(json!({"data": {"blob": "{{ 'x' * 1000000 }}"}})));
        harness.create(resource).await;
    }
    let controller = harness.spawn_controller(&[]);
    harness
        .wait_all_ready(COUNT, Duration::from_secs(90), &controller)
        .await;
    let peak = peak_rss_mib(&controller);
    println!("{COUNT} Secrets of 1 MB published at once: peak RSS {peak:.1} MiB");
    assert!(peak < 128.0, "peak RSS {peak:.1} MiB");
    // Restarted on the converged fleet: every resource renders its template again at once (to
    // compare it with its Secret), with no cloud update to spread them out.
    drop(controller);
    let restarted = harness.spawn_controller(&[]);
    harness
        .wait_for(
            "a pass over every resource",
            Duration::from_secs(60),
            Some(&restarted),
            || async {
                let (_, metrics) = restarted.ops("/metrics").await?;
                let reconciled: f64 = metrics
                    .lines()
                    .filter(|line| line.starts_with("iothub_dynreg_reconciles_total{"))
                    .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                (reconciled >= COUNT as f64).then_some(())
            },
        )
        .await;
    let peak = peak_rss_mib(&restarted);
    println!("restarted over {COUNT} Secrets of 1 MB: peak RSS {peak:.1} MiB");
    assert!(peak < 128.0, "peak RSS {peak:.1} MiB");
}
