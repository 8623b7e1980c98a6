//! End to end on the real API server: the published Secret shaped by `spec.secretTemplate`
//! (renamed keys, a JSON config key, type, labels, annotations), a template change written once
//! with no churn over resyncs and another manager's key kept, a type change re-creating our
//! Secret, a broken template reported without a secret, and `secretRetention: Retain` keeping the
//! Secret after the resource is deleted.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::{RegistrationMode, SecretRetention, SecretTemplate};
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
