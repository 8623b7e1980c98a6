//! The CRD, the examples and deploy/ against the real API server: bad input is refused by the
//! server itself with the intended messages, `kubectl apply -f examples/` works on a fresh
//! cluster, and the server validates every object of deploy/.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::DynamicRegistration;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;
use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::specs::{bad_values, good_spec, good_templates, resource};

fn registrations(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let kind = GroupVersionKind::gvk("iothub.dynreg.io", "v1alpha1", "DynamicRegistration");
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&kind, "dynamicregistrations"),
    )
}

fn object(mut value: Value, namespace: &str) -> DynamicObject {
    value["metadata"]["namespace"] = json!(namespace);
    serde_json::from_value(value).unwrap()
}

/// The API server's refusal message, or `None` when it accepted.
async fn refusal(result: Result<DynamicObject, kube::Error>) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            Some(status.message)
        }
        Err(other) => panic!("not an API answer: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_bad_input_with_clear_messages() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let client = plane.admin_client().await;
    plane.create_namespace(&client, "validation").await;
    let api = registrations(&client, "validation");
    let create = |spec: Value| {
        let api = api.clone();
        async move {
            api.create(
                &PostParams::default(),
                &object(resource(spec), "validation"),
            )
            .await
        }
    };

    let mut cases = bad_values();
    cases.push((
        "registerType",
        json!("Sometimes"),
        r#"supported values: "Disabled", "PreCreate", "AutoCreate""#,
    ));
    for (field, value, expected) in cases {
        let mut spec = good_spec();
        spec[field] = value.clone();
        let message = refusal(create(spec).await)
            .await
            .unwrap_or_else(|| panic!("{field}={value} was accepted"));
        println!("{field}={value}: {message}");
        assert!(message.contains(expected), "{field}={value}: {message}");
    }
    let mut spec = good_spec();
    spec["managementPolicy"] = json!("ObserveOnly");
    spec["deletionPolicy"] = json!("Disable");
    let message = refusal(create(spec).await)
        .await
        .expect("ObserveOnly with Disable accepted");
    assert!(
        message.contains("managementPolicy ObserveOnly never does"),
        "{message}"
    );
    let mut spec = good_spec();
    spec.as_object_mut().unwrap().remove("registerLimit");
    let message = refusal(create(spec).await)
        .await
        .expect("accepted without a limit");
    assert!(
        message.contains(
            "registerType and registerLimit are required unless managementPolicy is ObserveOnly"
        ),
        "{message}"
    );

    // Templates Kubernetes does not act on are kept (each created and deleted again).
    for template in good_templates() {
        let mut spec = good_spec();
        spec["secretTemplate"] = template.clone();
        assert_eq!(refusal(create(spec).await).await, None, "{template}");
        api.delete("sensors", &Default::default()).await.unwrap();
    }

    // A good resource is accepted and typed; its productId cannot change afterwards.
    assert_eq!(refusal(create(good_spec()).await).await, None);
    let typed: Api<DynamicRegistration> = Api::namespaced(client.clone(), "validation");
    assert_eq!(
        typed.get("sensors").await.unwrap().spec.register_limit,
        Some(10000)
    );
    let changed = api
        .patch(
            "sensors",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"productId": "ZZZZZ99999"}})),
        )
        .await;
    let message = refusal(changed).await.expect("productId changed");
    assert!(message.contains("productId is immutable"), "{message}");
    let limit_changed = api
        .patch(
            "sensors",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"registerLimit": 5}})),
        )
        .await;
    assert_eq!(
        refusal(limit_changed).await,
        None,
        "other fields may change"
    );
}

/// kubectl with the admin's kubeconfig; `None` when kubectl is missing outside CI.
fn kubectl(plane: &ControlPlane, args: &[&str]) -> Option<Output> {
    let output = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", plane.admin_kubeconfig())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match output {
        Ok(output) => Some(output),
        Err(error) => {
            let missing = format!("kubectl ({error})");
            support::skip::missing_program(&support::skip::current_test(), &missing);
            None
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_examples_and_the_server_validates_deploy() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    // The examples on a fresh cluster with the CRD installed: they create their namespace.
    let Some(applied) = kubectl(plane, &["apply", "-f", "examples/"]) else {
        return;
    };
    println!("kubectl apply -f examples/\n{}", text(&applied));
    assert!(applied.status.success(), "{}", text(&applied));
    let client = plane.admin_client().await;
    let example: Api<DynamicRegistration> = Api::namespaced(client, "fleet");
    assert_eq!(
        example.get("sensors").await.unwrap().spec.product_id,
        "ABCDE12345"
    );

    // Every object of the kustomize base, validated by the server without being stored.
    let validated = kubectl(plane, &["apply", "--dry-run=server", "-k", "deploy/"]).unwrap();
    println!(
        "kubectl apply --dry-run=server -k deploy/\n{}",
        text(&validated)
    );
    assert!(validated.status.success(), "{}", text(&validated));
    let summary = text(&validated);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/dynamicregistrations.iothub.dynreg.io",
        "customresourcedefinition.apiextensions.k8s.io/clustercredentials.iothub.dynreg.io",
        "namespace/iothub-dynreg",
        "serviceaccount/iothub-dynreg",
        "clusterrole.rbac.authorization.k8s.io/iothub-dynreg",
        "deployment.apps/iothub-dynreg",
        "service/iothub-dynreg-metrics",
    ] {
        assert!(
            summary.contains(object),
            "{object} missing from:\n{summary}"
        );
    }
    // The one-file bundle, as its first line says to apply it.
    let bundle = kubectl(
        plane,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "install.yaml",
        ],
    )
    .unwrap();
    assert!(bundle.status.success(), "{}", text(&bundle));
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/dynamicregistrations.iothub.dynreg.io",
        "namespace/iothub-dynreg",
        "clusterrolebinding.rbac.authorization.k8s.io/iothub-dynreg",
        "poddisruptionbudget.policy/iothub-dynreg",
        "deployment.apps/iothub-dynreg",
    ] {
        assert!(
            text(&bundle).contains(object),
            "{object} missing:\n{}",
            text(&bundle)
        );
    }
    // The two-shard overlay: both Deployments, each with its own selector, pods and metrics.
    let sharded = kubectl(
        plane,
        &["apply", "--dry-run=server", "-k", "overlays/two-shards/"],
    )
    .unwrap();
    assert!(sharded.status.success(), "{}", text(&sharded));
    for object in [
        "deployment.apps/iothub-dynreg ",
        "deployment.apps/iothub-dynreg-shard-2 ",
        "service/iothub-dynreg-shard-2-metrics ",
        "poddisruptionbudget.policy/iothub-dynreg-shard-2 ",
    ] {
        assert!(
            text(&sharded).contains(object),
            "{object} missing:\n{}",
            text(&sharded)
        );
    }
    let rendered = kubectl(plane, &["kustomize", "overlays/two-shards/"]).unwrap();
    let deployments: Vec<Value> = serde_yaml::Deserializer::from_slice(&rendered.stdout)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|object| object["kind"] == "Deployment")
        .collect();
    let shards: Vec<(String, String, Vec<String>)> = deployments
        .iter()
        .map(|deployment| {
            let selected = deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
                .as_str()
                .unwrap()
                .to_owned();
            let selectors = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|arg| arg.as_str()?.strip_prefix("--watch-label-selector="))
                .map(str::to_owned)
                .collect();
            (
                deployment["metadata"]["name"].as_str().unwrap().to_owned(),
                selected,
                selectors,
            )
        })
        .collect();
    assert_eq!(
        shards,
        [
            (
                "iothub-dynreg".to_owned(),
                "iothub-dynreg".to_owned(),
                vec!["!sharding.iothub.dynreg.io/key".to_owned()]
            ),
            (
                "iothub-dynreg-shard-2".to_owned(),
                "iothub-dynreg-shard-2".to_owned(),
                vec!["sharding.iothub.dynreg.io/key=shard-2".to_owned()]
            ),
        ]
    );

    // The ClusterCredentials examples, as the platform team would apply them.
    let examples = kubectl(
        plane,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            "deploy/cluster-credentials-example.yaml",
        ],
    )
    .unwrap();
    assert!(examples.status.success(), "{}", text(&examples));
    assert!(
        text(&examples).contains("clustercredentials.iothub.dynreg.io/gateways-role"),
        "{}",
        text(&examples)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_well() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    // The server publishes a new CRD's OpenAPI some seconds after it is Established, at first
    // without the descriptions: ask until the one of `field` itself is there.
    let explain = |field: &str, description: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let output = kubectl(plane, &["explain", field])?;
            if text(&output).contains(description) || Instant::now() > deadline {
                return Some(output);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let Some(explained) = explain("dynamicregistration.spec", "Declares the dynamic") else {
        return;
    };
    let spec = text(&explained);
    println!("{spec}");
    assert!(explained.status.success(), "{spec}");
    for expected in [
        "productId",
        "ID of the product, as shown in the console of its service",
        "service",
        "IoTExplorer (IoT Explorer",
        "registerType",
        "Required unless managementPolicy is ObserveOnly",
        "deletionPolicy",
        "credentialsSecretRef",
        "suspend",
    ] {
        assert!(spec.contains(expected), "{expected} missing from:\n{spec}");
    }
    let status = explain("dynamicregistration.status", "Observed state").unwrap();
    let status = text(&status);
    for expected in [
        "lastHandledReconcileAt",
        "reconcile.fluxcd.io/requestedAt",
        "conditions",
    ] {
        assert!(
            status.contains(expected),
            "{expected} missing from:\n{status}"
        );
    }
    assert!(spec.contains("clusterCredentialsRef"), "{spec}");
    let cluster = explain("clustercredentials.spec", "namespaceSelector").unwrap();
    let cluster = text(&cluster);
    println!("{cluster}");
    for expected in [
        "secretRef",
        "webIdentity",
        "namespaceSelector",
        "nobody may",
    ] {
        assert!(
            cluster.contains(expected),
            "{expected} missing from:\n{cluster}"
        );
    }
}
