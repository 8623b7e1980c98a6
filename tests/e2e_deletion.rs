//! End-to-end: deletion policies, garbage collection of the published Secret, ObserveOnly.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::crd::{
    DeletionPolicy, FINALIZER, ManagementPolicy, RegistrationMode,
};
use kube::api::DeleteParams;
use serde_json::json;
use support::e2e::{Harness, registration};

const PRODUCTS: &str = r#"
products:
  - {productId: DISABLE001, region: ap-guangzhou}
  - {productId: ORPHAN0001, region: ap-guangzhou}
  - {productId: OBSERVE001, region: ap-guangzhou, registerType: 1, registerLimit: 7, productSecret: observed-secret-value}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_disable_and_with_orphan() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let mut disable = registration("disable", "DISABLE001", RegistrationMode::AutoCreate, 10);
    disable.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(disable).await;
    harness
        .create_registration("orphan", "ORPHAN0001", RegistrationMode::AutoCreate, 10)
        .await;
    let ready = harness
        .wait_reason("disable", "InSync", Duration::from_secs(20), &controller)
        .await;
    assert!(
        ready
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_owned())
    );
    let orphan = harness
        .wait_reason("orphan", "InSync", Duration::from_secs(20), &controller)
        .await;
    assert!(
        orphan.metadata.finalizers.unwrap_or_default().is_empty(),
        "Orphan needs no finalizer"
    );
    for secret in ["disable-product-secret", "orphan-product-secret"] {
        harness.secrets().get(secret).await.unwrap();
    }

    for name in ["disable", "orphan"] {
        harness
            .registrations()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in ["disable", "orphan"] {
        harness
            .wait_for(
                &format!("{name} to be gone"),
                Duration::from_secs(20),
                Some(&controller),
                || async {
                    harness
                        .registrations()
                        .get_opt(name)
                        .await
                        .unwrap()
                        .is_none()
                        .then_some(())
                },
            )
            .await;
    }
    // Disable: registration switched off before the resource went. Orphan: the cloud untouched.
    assert_eq!(harness.cloud_product("DISABLE001").await["registerType"], 0);
    assert_eq!(harness.cloud_product("ORPHAN0001").await["registerType"], 2);
    // The published Secrets went with their owners.
    for secret in ["disable-product-secret", "orphan-product-secret"] {
        assert!(
            harness.secrets().get_opt(secret).await.unwrap().is_none(),
            "{secret} left behind"
        );
    }
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_only_reports_drift_and_never_writes_to_the_cloud() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&["--resync-interval", "2s"]);
    let mut watcher = registration("watcher", "OBSERVE001", RegistrationMode::PreCreate, 7);
    watcher.spec.management_policy = ManagementPolicy::ObserveOnly;
    harness.create(watcher).await;
    harness
        .wait_reason("watcher", "InSync", Duration::from_secs(20), &controller)
        .await;
    // It still publishes the ProductSecret: that is a Kubernetes write, not a cloud one.
    harness
        .secrets()
        .get("watcher-product-secret")
        .await
        .unwrap();

    harness
        .emulator_send(
            reqwest::Method::POST,
            "products/OBSERVE001",
            json!({"registerLimit": 99}),
        )
        .await;
    let drifted = harness
        .wait_reason("watcher", "Drifted", Duration::from_secs(15), &controller)
        .await;
    let message = drifted.condition("Ready").unwrap().message.clone();
    assert!(
        message.contains("RegisterLimit is 99, spec wants 7"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        0
    );
    assert_eq!(
        harness.cloud_product("OBSERVE001").await["registerLimit"],
        99
    );
    harness.assert_no_secrets_logged(&controller).await;
}
