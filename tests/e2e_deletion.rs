//! End-to-end: deletion policies, garbage collection of the published Secret, ObserveOnly,
//! namespace deletion, the credentials' in-use protection, and the handover between claimants.

mod support;

use std::time::{Duration, Instant};

use iothub_dynreg::controller::decision::CREDENTIALS_IN_USE;
use iothub_dynreg::controller::resources::{
    DeletionPolicy, FINALIZER, ManagementPolicy, RegistrationMode,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
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
    // The published Secrets go with their owners: the garbage collector deletes them once it
    // sees the owner gone, a moment after (CI once looked too early).
    for secret in ["disable-product-secret", "orphan-product-secret"] {
        harness
            .wait_for(
                &format!("{secret} to go with its owner"),
                Duration::from_secs(20),
                Some(&controller),
                || async {
                    harness
                        .secrets()
                        .get_opt(secret)
                        .await
                        .unwrap()
                        .is_none()
                        .then_some(())
                },
            )
            .await;
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
    // Observed and published: its job is done (Ready), with nothing drifted.
    let observed = harness
        .wait_reason("watcher", "Observed", Duration::from_secs(20), &controller)
        .await;
    assert_eq!(observed.condition("Ready").unwrap().status, "True");
    assert!(observed.condition("Drifted").is_none());
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
    // Drift goes into a condition of its own; Ready stays True (kstatus: Current).
    let drifted = harness
        .wait_for(
            "the drift to be reported",
            Duration::from_secs(15),
            Some(&controller),
            || async {
                let resource = harness.registrations().get("watcher").await.ok()?;
                resource
                    .condition("Drifted")
                    .filter(|c| c.status == "True")
                    .map(|c| {
                        (
                            c.message.clone(),
                            resource.condition("Ready").unwrap().status.clone(),
                        )
                    })
            },
        )
        .await;
    assert!(
        drifted.0.contains("RegisterLimit is 99, spec wants 7"),
        "{}",
        drifted.0
    );
    assert_eq!(drifted.1, "True");
    harness.kubectl_wait_ready("watcher");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_only_without_values_reads_a_product_another_resource_manages() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    harness
        .create_registration("manager", "ORPHAN0001", RegistrationMode::AutoCreate, 12)
        .await;
    harness
        .wait_reason("manager", "InSync", Duration::from_secs(20), &controller)
        .await;
    // Reading is not fighting: no Conflict, and Ready once observed and published.
    let spec = iothub_dynreg::controller::resources::DynamicRegistrationSpec::observe_only(
        "ORPHAN0001",
        "ap-guangzhou",
    )
    .with_credentials("tencent-credentials");
    harness
        .create(iothub_dynreg::controller::resources::DynamicRegistration::new("reader", spec))
        .await;
    let reader = harness
        .wait_reason("reader", "Observed", Duration::from_secs(20), &controller)
        .await;
    assert_eq!(reader.condition("Ready").unwrap().status, "True");
    let published = harness
        .secrets()
        .get("reader-product-secret")
        .await
        .unwrap();
    assert_eq!(
        support::e2e::secret_data(&published)["productSecret"],
        harness.cloud_product("ORPHAN0001").await["productSecret"]
            .as_str()
            .unwrap()
    );
    assert_eq!(harness.ready_reason("manager").await.unwrap().1, "InSync");
}

fn in_use_finalizers(secret: &k8s_openapi::api::core::v1::Secret) -> bool {
    secret
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == CREDENTIALS_IN_USE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_namespace_disables_the_product_and_the_namespace_goes() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let mut disable = registration("disable", "DISABLE001", RegistrationMode::AutoCreate, 10);
    disable.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(disable).await;
    harness
        .wait_reason("disable", "InSync", Duration::from_secs(30), &controller)
        .await;
    let credentials = harness.secrets().get("tencent-credentials").await.unwrap();
    assert!(in_use_finalizers(&credentials), "credentials not protected");

    // The controller is down (a rollout, a crash) while the namespace is deleted: the namespace
    // controller deletes everything in it, credentials included, before the resource's
    // deletion can run.
    let mut controller = controller;
    controller.signal(libc::SIGKILL);
    let _ = controller.wait_exit(Duration::from_secs(5));
    let namespaces: Api<Namespace> = Api::all(harness.client.clone());
    namespaces
        .delete(&harness.namespace, &DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    harness
        .wait_for(
            "the namespace controller to delete the credentials",
            Duration::from_secs(60),
            None,
            || async {
                let credentials = harness
                    .secrets()
                    .get_opt("tencent-credentials")
                    .await
                    .ok()?;
                match credentials {
                    None => Some(()),
                    Some(secret) => secret.metadata.deletion_timestamp.map(|_| ()),
                }
            },
        )
        .await;
    let controller = harness.spawn_controller(&[]);
    harness
        .wait_namespace_gone(Duration::from_secs(90), &controller)
        .await;
    println!("namespace deleted in {:?}", started.elapsed());
    assert_eq!(
        harness.cloud_product("DISABLE001").await["registerType"],
        0,
        "the product was not disabled"
    );
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_protection_lasts_exactly_as_long_as_a_deletion_needs_it() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let mut controller = harness.spawn_controller(&[]);
    let mut disable = registration("disable", "DISABLE001", RegistrationMode::AutoCreate, 10);
    disable.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(disable).await;
    let protected = |wanted: bool| {
        let harness = &harness;
        move || async move {
            let secret = harness
                .secrets()
                .get_opt("tencent-credentials")
                .await
                .ok()??;
            (in_use_finalizers(&secret) == wanted).then_some(())
        }
    };
    harness
        .wait_for(
            "the protection",
            Duration::from_secs(30),
            Some(&controller),
            protected(true),
        )
        .await;

    // Orphan needs no credentials on deletion: let go at once.
    let set_policy = |policy: &'static str| {
        let harness = &harness;
        async move {
            harness
                .registrations()
                .patch(
                    "disable",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"deletionPolicy": policy}})),
                )
                .await
                .unwrap();
        }
    };
    set_policy("Orphan").await;
    harness
        .wait_for(
            "the protection to go",
            Duration::from_secs(15),
            Some(&controller),
            protected(false),
        )
        .await;
    set_policy("Disable").await;
    harness
        .wait_for(
            "the protection again",
            Duration::from_secs(15),
            Some(&controller),
            protected(true),
        )
        .await;

    // Deleted on purpose: kept, and the resource says what holds it and how to let go.
    harness
        .secrets()
        .delete("tencent-credentials", &DeleteParams::default())
        .await
        .unwrap();
    let held = harness
        .wait_reason(
            "disable",
            "CredentialsDeleting",
            Duration::from_secs(15),
            &controller,
        )
        .await;
    let message = held.condition("Ready").unwrap().message.clone();
    println!("{message}");
    assert!(message.contains("deletionPolicy: Orphan"), "{message}");
    assert!(message.contains(CREDENTIALS_IN_USE), "{message}");
    set_policy("Orphan").await;
    harness
        .wait_for(
            "the credentials to go",
            Duration::from_secs(15),
            Some(&controller),
            || async {
                harness
                    .secrets()
                    .get_opt("tencent-credentials")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;

    // A protection nobody needs, found after a restart (the finalizer of a controller that died
    // before letting go): released.
    controller.signal(libc::SIGKILL);
    let _ = controller.wait_exit(Duration::from_secs(5));
    let stale: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "old-credentials", "finalizers": [CREDENTIALS_IN_USE]},
        "stringData": {"secretId": "x", "secretKey": "y"}
    }))
    .unwrap();
    harness
        .secrets()
        .create(&kube::api::PostParams::default(), &stale)
        .await
        .unwrap();
    let restarted = harness.spawn_controller(&[]);
    harness
        .wait_for(
            "the stale protection to go",
            Duration::from_secs(15),
            Some(&restarted),
            || async {
                let secret = harness.secrets().get("old-credentials").await.ok()?;
                (!in_use_finalizers(&secret)).then_some(())
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_older_claimant_goes_the_next_one_takes_over_at_once() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&["--stalled-retry-interval", "10m"]);
    let mut older = registration("older", "DISABLE001", RegistrationMode::PreCreate, 10);
    older.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(older).await;
    harness
        .wait_reason("older", "InSync", Duration::from_secs(30), &controller)
        .await;
    harness
        .create_registration("younger", "DISABLE001", RegistrationMode::AutoCreate, 20)
        .await;
    harness
        .wait_reason("younger", "Conflict", Duration::from_secs(30), &controller)
        .await;

    // The older one goes, disabling the product; the younger one takes over right after.
    harness
        .registrations()
        .delete("older", &DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    harness
        .wait_reason("younger", "InSync", Duration::from_secs(30), &controller)
        .await;
    println!(
        "handover after the older claimant went: {:?}",
        started.elapsed()
    );
    let cloud = harness.cloud_product("DISABLE001").await;
    assert_eq!(
        (
            cloud["registerType"].as_i64(),
            cloud["registerLimit"].as_i64()
        ),
        (Some(2), Some(20))
    );
}

/// `deletionPolicy: Disable` with a limit the cloud refuses: the resource stalls on it, and
/// deleting it disables the product with the limit the cloud holds (asking the refused limit
/// again failed the disabling, and the deletion stalled for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_uses_the_limit_the_cloud_holds() {
    let products = "products: [{productId: REFUSED001, region: ap-guangzhou, registerType: 2, registerLimit: 50}]";
    let Some(harness) = Harness::with_credentials(products, |config| {
        config.limit_policy.refuse_above = Some(1000);
    })
    .await
    else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    let mut greedy = registration(
        "greedy",
        "REFUSED001",
        RegistrationMode::AutoCreate,
        1_000_000,
    );
    greedy.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(greedy).await;
    let refused = harness
        .wait_reason(
            "greedy",
            "InvalidRequest",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    let cloud = refused.status.unwrap().cloud.unwrap();
    assert_eq!(cloud.register_limit, 50, "the limit the cloud holds");
    harness
        .registrations()
        .delete("greedy", &DeleteParams::default())
        .await
        .unwrap();
    harness
        .wait_for(
            "greedy to be gone",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                let left = harness.registrations().get_opt("greedy").await.unwrap();
                left.is_none().then_some(())
            },
        )
        .await;
    let product = harness.cloud_product("REFUSED001").await;
    assert_eq!(
        (&product["registerType"], &product["registerLimit"]),
        (&json!(0), &json!(50))
    );
    harness.assert_no_secrets_logged(&controller).await;
}

/// Defect: a credentials Secret whose in-use finalizer the controller may not take off (RBAC
/// forbids the PATCH) was tried again at every sweep, about every second under churn, each
/// with a warning. Now: tried again after 30 s, then longer; one warning; a gauge shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_release_of_protection_waits_and_is_reported_once() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let namespace = harness.namespace.clone();
    let secrets = harness.secrets();
    let finalizers = json!({"metadata": {"finalizers": [CREDENTIALS_IN_USE]}});
    secrets
        .patch(
            "tencent-credentials",
            &PatchParams::default(),
            &Patch::Merge(&finalizers),
        )
        .await
        .unwrap();
    // The controller's own rights but PATCH and UPDATE of Secrets.
    let role: serde_json::Value = serde_json::from_str(
        &harness
            .kubectl(&["get", "clusterrole", "iothub-dynreg", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let rules: Vec<serde_json::Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let mut rule = rule.clone();
            if rule["resources"]
                .as_array()
                .unwrap()
                .contains(&json!("secrets"))
            {
                let verbs = rule["verbs"].as_array().unwrap().iter();
                let kept: Vec<_> = verbs
                    .filter(|verb| *verb != "patch" && *verb != "update")
                    .cloned()
                    .collect();
                rule["verbs"] = json!(kept);
            }
            rule
        })
        .collect();
    let account = "no-secret-patch";
    let restricted = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("{namespace}-{account}")}, "rules": rules
    });
    let file = harness.dir.join("restricted-role.json");
    std::fs::write(&file, restricted.to_string()).unwrap();
    harness.kubectl(&["apply", "-f", &file.to_string_lossy()]);
    harness.kubectl(&["create", "serviceaccount", account]);
    harness.kubectl(&[
        "create",
        "clusterrolebinding",
        &format!("{namespace}-{account}"),
        &format!("--clusterrole={namespace}-{account}"),
        &format!("--serviceaccount={namespace}:{account}"),
    ]);
    let token = harness
        .kubectl(&["create", "token", account, "--duration=1h"])
        .unwrap();
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let kubeconfig = harness.dir.join("restricted.kubeconfig");
    harness
        .plane
        .write_kubeconfig(&kubeconfig, &user, token.trim());
    let controller = harness.spawn_controller_as(&kubeconfig, &[]);
    let refused_patches = || {
        harness
            .plane
            .requests_of(&user)
            .iter()
            .filter(|r| r.verb == "patch" && r.resource == "secrets" && r.code == 403)
            .count()
    };
    harness
        .wait_for(
            "the first refused release",
            Duration::from_secs(20),
            Some(&controller),
            || async { (refused_patches() > 0).then_some(()) },
        )
        .await;
    // Churn: every change of the protected Secret wakes the sweep.
    let churn_until = Instant::now() + Duration::from_secs(8);
    let mut touch = 0;
    while Instant::now() < churn_until {
        touch += 1;
        let annotation = json!({"metadata": {"annotations": {"touched": touch.to_string()}}});
        secrets
            .patch(
                "tencent-credentials",
                &PatchParams::default(),
                &Patch::Merge(&annotation),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let refused = refused_patches();
    let warnings = controller
        .stderr()
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("tencent-credentials"))
        .count();
    let (_, metrics) = controller.ops("/metrics").await.unwrap();
    println!("{touch} changes in 8 s: {refused} refused PATCH(es), {warnings} warning(s)");
    // Let go by hand, so the namespace can go.
    let none = json!({"metadata": {"finalizers": null}});
    secrets
        .patch(
            "tencent-credentials",
            &PatchParams::default(),
            &Patch::Merge(&none),
        )
        .await
        .unwrap();
    assert_eq!(refused, 1, "a refused release was tried again within 30 s");
    assert_eq!(warnings, 1, "{}", controller.stderr());
    assert!(
        metrics.contains("iothub_dynreg_protection_refused{what=\"secrets\"} 1"),
        "{metrics}"
    );
}

/// A namespace holding several `Disable` resources deleted at once, the controller running:
/// every product is disabled, each with one update, and the namespace goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_with_several_disable_resources_goes_and_every_product_is_disabled() {
    const COUNT: usize = 8;
    let products = format!("generate: {{count: {COUNT}, region: ap-guangzhou, prefix: NSDEL}}");
    let Some(harness) = Harness::with_credentials(&products, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    for index in 0..COUNT {
        let product = format!("NSDEL{index:05}");
        let mut disable = registration(
            &format!("disable-{index}"),
            &product,
            RegistrationMode::AutoCreate,
            10,
        );
        disable.spec.deletion_policy = DeletionPolicy::Disable;
        harness.create(disable).await;
    }
    harness
        .wait_all_ready(COUNT, Duration::from_secs(60), &controller)
        .await;
    let enabling = harness
        .cloud_calls("UpdateProductDynamicRegister", "Success")
        .await;
    let namespaces: Api<Namespace> = Api::all(harness.client.clone());
    namespaces
        .delete(&harness.namespace, &DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    harness
        .wait_namespace_gone(Duration::from_secs(90), &controller)
        .await;
    println!(
        "namespace with {COUNT} Disable resources deleted in {:?}",
        started.elapsed()
    );
    for index in 0..COUNT {
        let product = harness.cloud_product(&format!("NSDEL{index:05}")).await;
        assert_eq!(product["registerType"], 0, "{product} was not disabled");
    }
    let disabling = harness
        .cloud_calls("UpdateProductDynamicRegister", "Success")
        .await
        - enabling;
    assert_eq!(disabling, COUNT as u64, "one update a product");
    harness.assert_no_secrets_logged(&controller).await;
}
