//! The Helm chart with the real tools: Helm v4 (fetched and checked by `scripts/helm.sh`) lints
//! it and renders it with each values file of `charts/iothub-dynreg/ci/`, refuses wrong values
//! with their path, and installs, upgrades and uninstalls it on the real API server; a
//! namespace-scoped install runs the controller as its ServiceAccount with the Role alone.
//!
//! Without Helm (it cannot be fetched) the tests say so and pass, except under CI.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iothub_dynreg::controller::resources::{ClusterCredentialsReference, RegistrationMode};
use serde_json::Value;
use support::control_plane::{ControlPlane, yaml_documents};
use support::e2e::{Harness, registration};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/iothub-dynreg");
const CRDS: [&str; 2] = [
    "dynamicregistrations.iothub.dynreg.io",
    "clustercredentials.iothub.dynreg.io",
];

/// The tests that change what is installed on the shared API server take turns: one deletes
/// the CRDs so that Helm installs them.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Helm, with its caches and configuration under target/tmp.
struct Helm {
    program: PathBuf,
    home: PathBuf,
}

impl Helm {
    /// `None` (the test is not run) when Helm cannot be fetched, except under CI.
    fn new() -> Option<Self> {
        let fetched = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/helm.sh"))
            .output()
            .ok()
            .filter(|output| output.status.success());
        let Some(fetched) = fetched else {
            let missing = "helm (scripts/helm.sh could neither find it cached nor fetch it)";
            support::skip::missing_program(&support::skip::current_test(), missing);
            return None;
        };
        let path = String::from_utf8_lossy(&fetched.stdout).trim().to_owned();
        let home =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("helm-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        Some(Self {
            program: Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
            home,
        })
    }

    /// Runs helm: what it printed, or (with its errors) why it failed.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(&self.program)
            .args(args)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .output()
            .expect("run helm");
        outcome(output)
    }

    /// `helm template` of the chart in namespace `controllers` with a values file of ci/ (or
    /// the defaults) and `--set`s.
    fn template(&self, values: Option<&str>, sets: &[&str]) -> Result<Rendered, String> {
        let file = values.map(|name| format!("{CHART}/ci/{name}"));
        let mut args = vec![
            "template",
            "iothub-dynreg",
            CHART,
            "--namespace",
            "controllers",
        ];
        if let Some(file) = &file {
            args.extend(["--values", file]);
        }
        for set in sets {
            args.extend(["--set", set]);
        }
        let text = self.run(&args)?;
        Ok(Rendered(yaml_documents(&text, "helm template")?))
    }
}

impl Drop for Helm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Helm, and its rendering with a values file of ci/ (or the defaults).
fn rendered(values: Option<&str>) -> Option<(Helm, Rendered)> {
    let helm = Helm::new()?;
    let rendered = helm.template(values, &[]).unwrap();
    Some((helm, rendered))
}

/// The objects a rendering holds.
struct Rendered(Vec<Value>);

impl Rendered {
    fn kinds_and_names(&self) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = self
            .0
            .iter()
            .map(|object| {
                let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
                (text(&object["kind"]), text(&object["metadata"]["name"]))
            })
            .collect();
        found.sort();
        found
    }

    fn names_of(&self, kind: &str) -> Vec<String> {
        let pairs = self.kinds_and_names().into_iter();
        pairs
            .filter(|(k, _)| k == kind)
            .map(|(_, name)| name)
            .collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.0
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", self.kinds_and_names()))
    }

    fn pod(&self, deployment: &str) -> &Value {
        &self.get("Deployment", deployment)["spec"]["template"]["spec"]
    }

    fn args(&self, deployment: &str) -> Vec<String> {
        strings(&self.pod(deployment)["containers"][0]["args"])
    }

    fn env(&self, deployment: &str, name: &str) -> Option<&Value> {
        let env = self.pod(deployment)["containers"][0]["env"].as_array()?;
        env.iter().find(|variable| variable["name"] == name)
    }
}

fn strings(value: &Value) -> Vec<String> {
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Every resource and verb a rendered role grants.
fn granted(role: &Value) -> Vec<String> {
    let rules = role["rules"].as_array().unwrap();
    rules
        .iter()
        .flat_map(|rule| strings(&rule["resources"]))
        .collect()
}

#[test]
fn lint_is_strict_clean_with_every_values_file() {
    let Some(helm) = Helm::new() else {
        return;
    };
    helm.run(&["lint", "--strict", CHART]).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(format!("{CHART}/ci"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "values files of ci/: {files:?}");
    for file in files {
        let file = file.display().to_string();
        helm.run(&["lint", "--strict", CHART, "--values", &file])
            .unwrap_or_else(|output| panic!("helm lint --values {file}:\n{output}"));
    }
}

#[test]
fn the_defaults_give_two_replicas_one_leading_spread_and_budgeted() {
    let Some((_helm, rendered)) = rendered(None) else {
        return;
    };
    let expected = [
        ("ClusterRole", "iothub-dynreg"),
        ("ClusterRoleBinding", "iothub-dynreg"),
        ("Deployment", "iothub-dynreg"),
        ("PodDisruptionBudget", "iothub-dynreg"),
        ("Role", "iothub-dynreg-leader-election"),
        ("RoleBinding", "iothub-dynreg-leader-election"),
        ("Service", "iothub-dynreg-metrics"),
        ("ServiceAccount", "iothub-dynreg"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(kind, name)| (kind.to_string(), name.to_string()))
        .collect();
    assert_eq!(rendered.kinds_and_names(), expected);

    let deployment = rendered.get("Deployment", "iothub-dynreg");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = rendered.args("iothub-dynreg");
    assert!(args.contains(&"--leader-election".to_owned()), "{args:?}");
    assert!(
        !args.iter().any(|arg| arg.starts_with("--watch-")),
        "{args:?}"
    );
    let pod = rendered.pod("iothub-dynreg");
    assert_eq!(pod["serviceAccountName"], "iothub-dynreg");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "iothub-dynreg:0.1.0");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "probes");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "probes");
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway");
    let budget = rendered.get("PodDisruptionBudget", "iothub-dynreg");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    let grants = granted(rendered.get("ClusterRole", "iothub-dynreg"));
    assert!(
        grants.contains(&"clustercredentials".to_owned()),
        "{grants:?}"
    );
    // No default credentials unless given.
    let namespaces = rendered.env(
        "iothub-dynreg",
        "IOTHUB_DYNREG_DEFAULT_CREDENTIALS_NAMESPACES",
    );
    assert_eq!(namespaces.unwrap()["value"], "");
    assert!(
        rendered
            .env("iothub-dynreg", "TENCENTCLOUD_SECRET_ID")
            .is_none()
    );
}

#[test]
fn one_replica_has_no_budget_and_no_lease() {
    let Some((helm, rendered)) = rendered(Some("single-replica-values.yaml")) else {
        return;
    };
    assert!(rendered.names_of("PodDisruptionBudget").is_empty());
    assert_eq!(rendered.names_of("Role"), Vec::<String>::new());
    let args = rendered.args("iothub-dynreg");
    assert!(
        !args.iter().any(|arg| arg.starts_with("--leader-election")),
        "{args:?}"
    );
    // A budget asked for explicitly is there even with one replica.
    let asked = helm
        .template(
            Some("single-replica-values.yaml"),
            &["podDisruptionBudget.enabled=true"],
        )
        .unwrap();
    assert_eq!(asked.names_of("PodDisruptionBudget"), ["iothub-dynreg"]);
}

#[test]
fn namespace_scope_grants_a_role_in_that_namespace_only() {
    let Some((helm, rendered)) = rendered(Some("namespace-scope-values.yaml")) else {
        return;
    };
    assert!(rendered.names_of("ClusterRole").is_empty());
    assert!(rendered.names_of("ClusterRoleBinding").is_empty());
    let role = rendered.get("Role", "iothub-dynreg");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    let grants = granted(role);
    for cluster_scoped in [
        "clustercredentials",
        "clustercredentials/status",
        "namespaces",
    ] {
        assert!(!grants.contains(&cluster_scoped.to_owned()), "{grants:?}");
    }
    let binding = rendered.get("RoleBinding", "iothub-dynreg");
    assert_eq!(binding["metadata"]["namespace"], "team-a");
    assert_eq!(binding["subjects"][0]["namespace"], "controllers");
    // Leader election stays in the release's namespace.
    let lease_role = rendered.get("Role", "iothub-dynreg-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "controllers");
    let args = rendered.args("iothub-dynreg");
    assert!(
        args.contains(&"--watch-namespace=team-a".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--install-scope=namespace".to_owned()),
        "{args:?}"
    );
    // Without watchNamespace the release's namespace is watched.
    let own = helm.template(None, &["installScope=Namespace"]).unwrap();
    let args = own.args("iothub-dynreg");
    assert!(
        args.contains(&"--watch-namespace=controllers".to_owned()),
        "{args:?}"
    );
}

#[test]
fn each_shard_gets_its_deployment_service_budget_and_selector() {
    let Some((_helm, rendered)) = rendered(Some("shards-values.yaml")) else {
        return;
    };
    let deployments = [
        "iothub-dynreg",
        "iothub-dynreg-shard-2",
        "iothub-dynreg-shard-3",
    ];
    assert_eq!(rendered.names_of("Deployment"), deployments);
    assert_eq!(rendered.names_of("PodDisruptionBudget"), deployments);
    let services: Vec<String> = deployments.iter().map(|d| format!("{d}-metrics")).collect();
    assert_eq!(rendered.names_of("Service"), services);
    let selectors = [
        "--watch-label-selector=!sharding.iothub.dynreg.io/key",
        "--watch-label-selector=sharding.iothub.dynreg.io/key=shard-2",
        "--watch-label-selector=sharding.iothub.dynreg.io/key=shard-3",
    ];
    for (deployment, selector) in deployments.iter().zip(selectors) {
        let args = rendered.args(deployment);
        assert!(
            args.contains(&selector.to_owned()),
            "{deployment}: {args:?}"
        );
        // Each selects its own pods only, for its Service and budget.
        let selected = &rendered.get("Deployment", deployment)["spec"]["selector"];
        assert_eq!(
            selected["matchLabels"]["app.kubernetes.io/name"],
            *deployment
        );
        let service = rendered.get("Service", &format!("{deployment}-metrics"));
        assert_eq!(
            service["spec"]["selector"]["app.kubernetes.io/name"],
            *deployment
        );
    }
}

#[test]
fn web_identity_projects_a_token_for_its_audience() {
    let Some((_helm, rendered)) = rendered(Some("web-identity-values.yaml")) else {
        return;
    };
    let pod = rendered.pod("iothub-dynreg");
    let projected = &pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(projected["audience"], "sts.cloud.tencent.com");
    assert_eq!(projected["expirationSeconds"], 7200);
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["readOnly"], true);
    let token_file = rendered
        .env("iothub-dynreg", "TKE_WEB_IDENTITY_TOKEN_FILE")
        .unwrap();
    let expected = format!(
        "{}/{}",
        mount["mountPath"].as_str().unwrap(),
        projected["path"].as_str().unwrap()
    );
    assert_eq!(token_file["value"], expected);
    for (name, value) in [
        (
            "TKE_ROLE_ARN",
            "qcs::cam::uin/100000000001:roleName/iothub-dynreg",
        ),
        ("TKE_PROVIDER_ID", "cls-oidc-test"),
        ("TKE_REGION", "ap-guangzhou"),
        (
            "IOTHUB_DYNREG_DEFAULT_CREDENTIALS_NAMESPACES",
            "fleet,gateways",
        ),
    ] {
        assert_eq!(rendered.env("iothub-dynreg", name).unwrap()["value"], value);
    }
}

#[test]
fn production_values_reach_the_pod_spec() {
    let Some((_helm, rendered)) = rendered(Some("production-values.yaml")) else {
        return;
    };
    let deployment = rendered.get("Deployment", "iothub-dynreg");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = rendered.pod("iothub-dynreg");
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/platform/iothub-dynreg@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry-pull");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"]["node-role.kubernetes.io/platform"], "");
    assert_eq!(pod["tolerations"][0]["value"], "platform");
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread.len(), 1, "the given constraints replace the default");
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    let args = rendered.args("iothub-dynreg");
    for expected in [
        "--leader-election-lease-duration=20s",
        "--log-format=text",
        "--concurrency=64",
        "--resync-interval=30m",
        "--rate-limit=UpdateProductDynamicRegister=10",
        "--kube-api-qps=50",
        "--kube-api-burst=100",
        "--observe-interval=5m",
    ] {
        assert!(args.contains(&expected.to_owned()), "{expected}: {args:?}");
    }
    let secret_id = rendered
        .env("iothub-dynreg", "TENCENTCLOUD_SECRET_ID")
        .unwrap();
    let reference = &secret_id["valueFrom"]["secretKeyRef"];
    assert_eq!(reference["name"], "tencent-default");
    assert_eq!(reference["key"], "secretId");
    assert_eq!(reference["optional"], false);
    assert_eq!(
        rendered.env("iothub-dynreg", "RUST_LOG").unwrap()["value"],
        "info"
    );
    let budget = rendered.get("PodDisruptionBudget", "iothub-dynreg");
    assert_eq!(budget["spec"]["maxUnavailable"], 2);
    let annotations = &pod["containers"];
    assert!(annotations.is_array());
    let template = &deployment["spec"]["template"]["metadata"];
    assert_eq!(template["annotations"]["example.com/team"], "platform");
    let account = rendered.get("ServiceAccount", "iothub-dynreg");
    assert_eq!(
        account["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );
}

#[test]
fn monitoring_values_give_a_service_monitor_per_metrics_service_and_the_tested_alerts() {
    let Some((helm, rendered)) = rendered(Some("monitoring-values.yaml")) else {
        return;
    };
    let services = rendered.names_of("Service");
    let monitors = rendered.names_of("ServiceMonitor");
    assert_eq!(
        monitors,
        ["iothub-dynreg", "iothub-dynreg-shard-2"],
        "one per metrics Service ({services:?})"
    );
    for name in &monitors {
        let monitor = rendered.get("ServiceMonitor", name);
        assert_eq!(
            monitor["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        let selected = &monitor["spec"]["selector"]["matchLabels"];
        let service = rendered.get("Service", &format!("{name}-metrics"));
        for (key, value) in selected.as_object().unwrap() {
            assert_eq!(&service["metadata"]["labels"][key], value, "{name}: {key}");
        }
        let port = &monitor["spec"]["endpoints"][0];
        assert_eq!(port["port"], service["spec"]["ports"][0]["name"]);
        assert_eq!(port["interval"], "15s");
    }
    // The rule carries exactly the groups promtool tests (tests/monitoring/alerts-test.yaml).
    let rule = rendered.get("PrometheusRule", "iothub-dynreg");
    let path = format!("{CHART}/files/alerts.yaml");
    let tested = &support::control_plane::read_yaml(Path::new(&path)).unwrap()[0];
    assert_eq!(rule["spec"], *tested);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    // The dashboard, for Grafana's sidecar in Grafana's namespace.
    let dashboard = rendered.get("ConfigMap", "iothub-dynreg-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "grafana");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped = std::fs::read_to_string(format!("{CHART}/files/dashboard.json")).unwrap();
    let carried = dashboard["data"]["iothub-dynreg.json"].as_str().unwrap();
    assert_eq!(carried.trim_end(), shipped.trim_end());
    // Off by default.
    let defaults = helm.template(None, &[]).unwrap();
    assert!(defaults.names_of("ServiceMonitor").is_empty());
    assert!(defaults.names_of("PrometheusRule").is_empty());
    assert!(defaults.names_of("ConfigMap").is_empty());
}

/// The Prometheus Operator's CRDs of ../shared/testdata, as a cluster running it has them.
fn install_prometheus_operator_crds(plane: &ControlPlane) {
    let testdata = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/prometheus-operator"
    );
    for kind in ["servicemonitors", "prometheusrules", "podmonitors"] {
        let file = format!("{testdata}/monitoring.coreos.com_{kind}.yaml");
        kubectl(plane, &["apply", "--server-side", "-f", &file]).unwrap();
    }
    for kind in ["servicemonitors", "prometheusrules"] {
        let crd = format!("crd/{kind}.monitoring.coreos.com");
        kubectl(
            plane,
            &["wait", "--for=condition=Established", "--timeout=30s", &crd],
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_api_server_accepts_the_service_monitors_and_the_rule() {
    let Some((_helm, rendered)) = rendered(Some("monitoring-values.yaml")) else {
        return;
    };
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    install_prometheus_operator_crds(plane);
    // The namespace the rendering names (Helm::template).
    let namespace = "controllers";
    let _ = kubectl(plane, &["create", "namespace", namespace]);
    let dir = plane.dir().join(namespace);
    std::fs::create_dir_all(&dir).unwrap();
    for object in rendered.0.iter().filter(|o| {
        o["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
    }) {
        let name = object["metadata"]["name"].as_str().unwrap();
        let kind = object["kind"].as_str().unwrap();
        let file = dir.join(format!("{kind}-{name}.json"));
        std::fs::write(&file, object.to_string()).unwrap();
        let file = file.to_str().unwrap();
        // Created for real, in the namespace of the release: the server checked the schema.
        let applied = kubectl(plane, &["apply", "-n", namespace, "-f", file]);
        let applied = applied.unwrap_or_else(|e| panic!("{kind} {name} refused: {e}"));
        assert!(
            applied.contains("created") || applied.contains("configured"),
            "{applied}"
        );
        let stored = get_json(plane, &["get", kind, name, "-n", namespace]);
        assert_eq!(stored["spec"], object["spec"], "{kind} {name} lost fields");
    }
    // The kustomize component (rendered from the chart) is accepted too.
    let _ = kubectl(plane, &["create", "namespace", "iothub-dynreg"]);
    let component = format!("{CHART}/../../deploy/components/monitoring/monitoring.yaml");
    let dry_run = ["apply", "--dry-run=server", "-f", &component];
    let applied = kubectl(plane, &dry_run).unwrap_or_else(|e| panic!("the component: {e}"));
    for kind in ["servicemonitor", "prometheusrule", "configmap"] {
        assert!(applied.contains(kind), "{applied}");
    }
}

#[test]
fn wrong_values_fail_with_their_path_and_what_is_expected() {
    let Some(helm) = Helm::new() else {
        return;
    };
    let cases = [
        ("replicaCount=two", "/replicaCount"),
        ("installScope=Everywhere", "/installScope"),
        ("replicas=3", "replicas"),
        (
            "replicaCount=3,leaderElection.enabled=false",
            "leaderElection",
        ),
        ("webIdentity.enabled=true", "/webIdentity/roleArn"),
        ("sharding.shards={Shard_2}", "/sharding/shards/0"),
        ("image.digest=latest", "/image/digest"),
        ("logFormat=xml", "/logFormat"),
        (
            "leaderElection.leaseDuration=15",
            "/leaderElection/leaseDuration",
        ),
        ("rateLimits={UpdateProductDynamicRegister}", "/rateLimits/0"),
        ("watchNamespace=Team_A", "/watchNamespace"),
        ("kubeApi.qps=-1", "/kubeApi/qps"),
        ("kubeApi.burst=0", "/kubeApi/burst"),
    ];
    for (set, path) in cases {
        let refused = match helm.template(None, &[set]) {
            Ok(_) => panic!("--set {set} was accepted"),
            Err(output) => output,
        };
        assert!(
            refused.contains("values don't meet the specifications of the schema"),
            "--set {set}: {refused}"
        );
        assert!(
            refused.contains(path),
            "--set {set} does not name {path}: {refused}"
        );
    }
}

/// kubectl as the cluster's admin: what it printed, or (with its errors) why it failed.
fn kubectl(plane: &ControlPlane, args: &[&str]) -> Result<String, String> {
    kubectl_with(&plane.admin_kubeconfig(), args)
}

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("CI needs kubectl");
    outcome(output)
}

/// What a command printed when it succeeded; all it printed (errors too) when it failed.
fn outcome(output: std::process::Output) -> Result<String, String> {
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(printed)
    } else {
        Err(printed + &String::from_utf8_lossy(&output.stderr))
    }
}

fn get_json(plane: &ControlPlane, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let text = kubectl(plane, &args).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn exists(plane: &ControlPlane, args: &[&str]) -> bool {
    let mut args = args.to_vec();
    args.extend(["--ignore-not-found", "-o", "name"]);
    !kubectl(plane, &args).unwrap().trim().is_empty()
}

/// Waits until `done`, up to `timeout`.
async fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_and_uninstall_on_the_real_api_server_keep_crds_and_resources() {
    let Some(helm) = Helm::new() else {
        return;
    };
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let _turn = SERVER.lock().await;
    let admin = plane.admin_kubeconfig();
    let admin = admin.to_str().unwrap();
    // A cluster without the CRDs: the chart brings them.
    let mut delete_crds = vec!["delete", "crd", "--wait=true"];
    delete_crds.extend(CRDS);
    kubectl(plane, &delete_crds).unwrap();
    let release = [
        "--namespace",
        "platform",
        "--kubeconfig",
        admin,
        "--create-namespace",
    ];
    let install = |command: &str, sets: &[&str]| {
        let mut args = vec![command, "dynreg", CHART];
        args.extend(release);
        for set in sets {
            args.extend(["--set", set]);
        }
        helm.run(&args)
            .unwrap_or_else(|e| panic!("helm {command} {sets:?}: {e}"))
    };
    install(
        "install",
        &[
            "defaultCredentials.existingSecret=tencent-default",
            "defaultCredentials.optional=true",
        ],
    );
    for crd in CRDS {
        assert!(
            exists(plane, &["get", "crd", crd]),
            "helm installed no CRD {crd}"
        );
    }
    // Every object of the release is on the server, as the chart rendered it.
    let manifest = helm.run(&[
        "get",
        "manifest",
        "dynreg",
        "--namespace",
        "platform",
        "--kubeconfig",
        admin,
    ]);
    let objects = yaml_documents(&manifest.unwrap(), "helm get manifest").unwrap();
    assert_eq!(objects.len(), 8, "{objects:?}");
    for object in &objects {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("platform");
        assert!(
            exists(plane, &["get", kind, name, "-n", namespace]),
            "{kind} {name}"
        );
    }
    let deployment = get_json(
        plane,
        &[
            "get",
            "deployment",
            "dynreg-iothub-dynreg",
            "-n",
            "platform",
        ],
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "dynreg-iothub-dynreg");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "probes");
    let secret_id = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "TENCENTCLOUD_SECRET_ID");
    assert_eq!(
        secret_id.unwrap()["valueFrom"]["secretKeyRef"]["optional"],
        true
    );

    // A tenant's resource, which neither upgrades nor the uninstall may touch.
    kubectl(plane, &["create", "namespace", "tenant"]).unwrap();
    let kept = registration("kept", "KEPT000001", RegistrationMode::AutoCreate, 5);
    let kept = serde_json::to_string(&kept).unwrap();
    let kept_file = plane.dir().join("kept.json");
    std::fs::write(&kept_file, kept).unwrap();
    kubectl(
        plane,
        &["create", "-n", "tenant", "-f", kept_file.to_str().unwrap()],
    )
    .unwrap();

    // Upgrades: a shard and three replicas, then one replica without leader election.
    install(
        "upgrade",
        &[
            "replicaCount=3",
            "logFormat=text",
            "sharding.enabled=true",
            "sharding.shards={east}",
        ],
    );
    let main = get_json(
        plane,
        &[
            "get",
            "deployment",
            "dynreg-iothub-dynreg",
            "-n",
            "platform",
        ],
    );
    assert_eq!(main["spec"]["replicas"], 3);
    let args = strings(&main["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args.contains(&"--log-format=text".to_owned()), "{args:?}");
    assert!(args.contains(&"--watch-label-selector=!sharding.iothub.dynreg.io/key".to_owned()));
    assert!(exists(
        plane,
        &[
            "get",
            "deployment",
            "dynreg-iothub-dynreg-east",
            "-n",
            "platform"
        ]
    ));
    assert!(exists(
        plane,
        &["get", "pdb", "dynreg-iothub-dynreg-east", "-n", "platform"]
    ));
    install(
        "upgrade",
        &["replicaCount=1", "leaderElection.enabled=false"],
    );
    for gone in [
        ["deployment", "dynreg-iothub-dynreg-east"],
        ["pdb", "dynreg-iothub-dynreg"],
        ["role", "dynreg-iothub-dynreg-leader-election"],
    ] {
        let args = ["get", gone[0], gone[1], "-n", "platform"];
        assert!(
            !exists(plane, &args),
            "still there after the upgrade: {gone:?}"
        );
    }

    helm.run(&[
        "uninstall",
        "dynreg",
        "--namespace",
        "platform",
        "--kubeconfig",
        admin,
    ])
    .unwrap();
    eventually(
        "the release's objects to go",
        Duration::from_secs(30),
        || {
            !exists(
                plane,
                &[
                    "get",
                    "deployment",
                    "dynreg-iothub-dynreg",
                    "-n",
                    "platform",
                ],
            ) && !exists(plane, &["get", "clusterrole", "dynreg-iothub-dynreg"])
        },
    )
    .await;
    for crd in CRDS {
        assert!(
            exists(plane, &["get", "crd", crd]),
            "uninstall deleted {crd}"
        );
    }
    assert!(exists(
        plane,
        &["get", "dynamicregistration", "kept", "-n", "tenant"]
    ));
}

/// The environment the Deployment gives its container: literal values, and the pod's name and
/// namespace.
fn pod_environment(container: &Value, pod: &str, namespace: &str) -> Vec<(String, String)> {
    let variables = container["env"].as_array().unwrap();
    let mut environment = Vec::new();
    for variable in variables {
        let name = variable["name"].as_str().unwrap().to_owned();
        let field = variable["valueFrom"]["fieldRef"]["fieldPath"].as_str();
        let value = match (variable["value"].as_str(), field) {
            (Some(value), _) => value.to_owned(),
            (None, Some("metadata.name")) => pod.to_owned(),
            (None, Some("metadata.namespace")) => namespace.to_owned(),
            // The API server leaves an empty value out.
            (None, None) if variable.get("valueFrom").is_none() => String::new(),
            _ => panic!("no value for {variable}"),
        };
        environment.push((name, value));
    }
    environment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_install_reconciles_with_its_role_alone() {
    let Some(helm) = Helm::new() else {
        return;
    };
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: SCOPED0001, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    let _turn = SERVER.lock().await;
    let (plane, namespace) = (harness.plane, harness.namespace.as_str());
    let admin = plane.admin_kubeconfig();
    let admin = admin.to_str().unwrap();
    helm.run(&[
        "install",
        "team",
        CHART,
        "--namespace",
        namespace,
        "--kubeconfig",
        admin,
        "--set",
        "installScope=Namespace",
        "--set",
        "replicaCount=1",
    ])
    .unwrap();
    let cluster_roles = kubectl(
        plane,
        &[
            "get",
            "clusterroles",
            "-l",
            "app.kubernetes.io/instance=team",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        cluster_roles.unwrap().trim(),
        "",
        "a namespace-scoped install made ClusterRoles"
    );

    // The controller as the pod would run: the Deployment's arguments and environment, as its
    // ServiceAccount.
    let account = "team-iothub-dynreg";
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let token = kubectl(
        plane,
        &["create", "token", account, "-n", namespace, "--duration=1h"],
    )
    .unwrap();
    let kubeconfig = harness.dir.join("team.kubeconfig");
    plane.write_kubeconfig(&kubeconfig, &user, token.trim());
    let deployment = get_json(plane, &["get", "deployment", account, "-n", namespace]);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = strings(&container["args"])
        .into_iter()
        .filter(|arg| !arg.starts_with("--metrics-addr") && !arg.starts_with("--health-addr"))
        .collect();
    assert!(
        args.contains(&"--install-scope=namespace".to_owned()),
        "{args:?}"
    );
    let environment = pod_environment(container, "team-0", namespace);
    let environment: Vec<(&str, &str)> = environment
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let controller = harness.spawn_as(&kubeconfig, &args, &environment);

    harness
        .create(registration(
            "scoped",
            "SCOPED0001",
            RegistrationMode::AutoCreate,
            9,
        ))
        .await;
    let mut wants_cluster = registration(
        "wants-cluster",
        "SCOPED0001",
        RegistrationMode::AutoCreate,
        9,
    );
    wants_cluster.spec.credentials_secret_ref = None;
    wants_cluster.spec.cluster_credentials_ref = Some(ClusterCredentialsReference {
        name: "shared".to_owned(),
    });
    harness.create(wants_cluster).await;
    harness
        .wait_reason("scoped", "InSync", Duration::from_secs(30), &controller)
        .await;
    let told = harness
        .wait_reason(
            "wants-cluster",
            "CredentialsNotAllowed",
            Duration::from_secs(30),
            &controller,
        )
        .await;
    let message = &told.condition("Ready").unwrap().message;
    assert!(
        message.contains("unavailable") && message.contains("--install-scope namespace"),
        "{message}"
    );
    let ready = reqwest::get(format!("{}/readyz", controller.probes_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Every request it made was allowed, and in its own namespace.
    let requests = plane.requests_of(&user);
    assert!(!requests.is_empty());
    for request in &requests {
        // (A 404 is the first look for its Lease.)
        assert!(![401, 403].contains(&request.code), "refused: {request:?}");
        assert_eq!(
            request.namespace, namespace,
            "outside its namespace: {request:?}"
        );
    }
    // And its Role gives nothing elsewhere.
    let elsewhere = kubectl_with(&kubeconfig, &["get", "secrets", "-n", "iothub-dynreg"]);
    assert!(elsewhere.unwrap_err().contains("Forbidden"));
    let cluster = kubectl_with(&kubeconfig, &["get", "clustercredentials"]);
    assert!(cluster.unwrap_err().contains("Forbidden"));
    harness.assert_no_secrets_logged(&controller).await;
    drop(controller);

    // The same Role with the cluster scope (what such an install was before there was a
    // namespace scope): never ready, and the log says why and what to do.
    let mut cluster_scoped: Vec<String> = args
        .iter()
        .filter(|arg| !arg.starts_with("--install-scope"))
        .cloned()
        .collect();
    cluster_scoped.push("--leader-election-lease-name=cluster-scoped".to_owned());
    let misinstalled = harness.spawn_as(&kubeconfig, &cluster_scoped, &environment);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ready = reqwest::get(format!("{}/readyz", misinstalled.probes_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        misinstalled.stderr().contains("--install-scope namespace"),
        "{}",
        misinstalled.stderr()
    );
    drop(misinstalled);
    helm.run(&[
        "uninstall",
        "team",
        "--namespace",
        namespace,
        "--kubeconfig",
        admin,
    ])
    .unwrap();
}
