//! End-to-end harness: the real Kubernetes control plane (one per test binary, a namespace per
//! test), the emulator, and the real `iothub-dynreg run` process between them, running as the
//! ServiceAccount that `deploy/` grants its rights to.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::{
    DynamicRegistration, DynamicRegistrationSpec, RegistrationMode,
};
use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::control_plane::process::Supervised;
use super::control_plane::{AuditedRequest, CONTROLLER_NAMESPACE, ControlPlane};
use super::ports::unused_port;

pub const SECRET_ID: &str = "AKIDe2eTEST000000001";
pub const SECRET_KEY: &str = "e2e-SECRETKEY-never-logged-5be1";

static NAMESPACE_COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct Harness {
    pub plane: &'static ControlPlane,
    /// This test's namespace: its resources, Secrets, and the controller's watch.
    pub namespace: String,
    pub emulator: RunningEmulator,
    /// The test's own client, with cluster-admin rights.
    pub client: kube::Client,
    pub dir: PathBuf,
    /// The controller's kubeconfig: the ServiceAccount of deploy/.
    pub kubeconfig: PathBuf,
}

/// The controller as a child process; killed when dropped.
pub struct ControllerProcess {
    child: Supervised,
    stderr: Arc<Mutex<String>>,
    /// `http://127.0.0.1:<port>` of its /metrics, /healthz and /readyz.
    pub ops_url: String,
    /// `http://127.0.0.1:<port>` of its probes alone (/healthz, /readyz).
    pub probes_url: String,
}

impl ControllerProcess {
    /// GET on the operations endpoint: status and body, or `None` when it does not answer.
    pub async fn ops(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.ops_url)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }
}

impl ControllerProcess {
    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGKILL`).
    pub fn signal(&self, signal: libc::c_int) {
        self.child.signal(signal);
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_timeout(timeout)
    }
}

impl Harness {
    /// A namespace of its own on the shared control plane, and an emulator with
    /// `products_yaml` (the `products:` list and any other seed keys) and the e2e account.
    /// `None` when there is no control plane here (the reason is printed; CI fails instead).
    pub async fn start(
        products_yaml: &str,
        configure: impl FnOnce(&mut EmulatorConfig),
    ) -> Option<Self> {
        let seed = format!(
            "accounts: [{{secretId: {SECRET_ID}, secretKey: {SECRET_KEY}}}]\n{products_yaml}"
        );
        Self::start_seeded(&seed, configure).await
    }

    /// [`Harness::start`] with a whole emulator seed (its `accounts:` should hold the e2e one).
    pub async fn start_seeded(
        seed: &str,
        configure: impl FnOnce(&mut EmulatorConfig),
    ) -> Option<Self> {
        let plane = ControlPlane::shared()?;
        let client = plane.admin_client().await;
        let namespace = unique_namespace();
        plane.create_namespace(&client, &namespace).await;
        let mut config = EmulatorConfig::new(Seed::from_yaml(seed).unwrap());
        configure(&mut config);
        let emulator = RunningEmulator::start(config).await.unwrap();
        let dir = plane.dir().join(&namespace);
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = plane.write_controller_kubeconfig(&dir);
        Some(Self {
            plane,
            namespace,
            emulator,
            client,
            dir,
            kubeconfig,
        })
    }

    /// [`Harness::start`], with the credentials Secret `tencent-credentials` of the emulator's
    /// account in place.
    pub async fn with_credentials(
        products_yaml: &str,
        configure: impl FnOnce(&mut EmulatorConfig),
    ) -> Option<Self> {
        let harness = Self::start(products_yaml, configure).await?;
        harness
            .create_credentials("tencent-credentials", SECRET_KEY)
            .await;
        Some(harness)
    }

    /// The Lease of leader election in these tests: one per test, in the namespace where
    /// deploy/ lets the controller hold Leases.
    pub fn lease(&self) -> (&'static str, &str) {
        (CONTROLLER_NAMESPACE, &self.namespace)
    }

    /// The requests the controller made for this test (its namespace and its Lease), as the
    /// API server audited them.
    pub fn controller_requests(&self) -> Vec<AuditedRequest> {
        let (lease_namespace, lease_name) = self.lease();
        self.plane
            .controller_requests()
            .into_iter()
            .filter(|request| {
                request.namespace == self.namespace
                    || (request.namespace == lease_namespace && request.name == lease_name)
                    // Cluster-scoped kinds: every controller of the plane reads the same ones.
                    || request.namespace.is_empty()
            })
            .collect()
    }

    /// How many `verb` requests on `resource` the controller made in this test.
    pub fn controller_calls(&self, verb: &str, resource: &str) -> usize {
        self.controller_requests()
            .iter()
            .filter(|request| request.verb == verb && request.resource == resource)
            .count()
    }

    /// Starts `iothub-dynreg run` for this test's namespace, against the emulator, with fast
    /// intervals unless overridden.
    pub fn spawn_controller(&self, extra: &[&str]) -> ControllerProcess {
        let mut args = vec!["--watch-namespace", self.namespace.as_str()];
        args.extend_from_slice(extra);
        self.spawn_controller_cluster_wide(&args)
    }

    /// Starts `iothub-dynreg run` watching every namespace: only for a test binary whose one
    /// test owns the whole control plane.
    pub fn spawn_controller_cluster_wide(&self, extra: &[&str]) -> ControllerProcess {
        self.spawn(extra, &[])
    }

    /// [`Harness::spawn_controller`] with environment variables set (e.g. TKE's web identity).
    pub fn spawn_controller_with_env(
        &self,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ControllerProcess {
        let mut args = vec!["--watch-namespace", self.namespace.as_str()];
        args.extend_from_slice(extra);
        self.spawn(&args, env)
    }

    /// [`Harness::spawn_controller`] as the identity of `kubeconfig` instead of deploy/'s.
    pub fn spawn_controller_as(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> ControllerProcess {
        let mut args = vec!["--watch-namespace", self.namespace.as_str()];
        args.extend_from_slice(extra);
        self.spawn_with(kubeconfig, &args, &[])
    }

    fn spawn(&self, extra: &[&str], env: &[(&str, &str)]) -> ControllerProcess {
        self.spawn_with(&self.kubeconfig, extra, env)
    }

    fn spawn_with(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ControllerProcess {
        let mut args: Vec<String> = vec!["run".into()];
        if extra.contains(&"--leader-election") {
            let (lease_namespace, lease_name) = self.lease();
            args.extend(["--leader-election-namespace".into(), lease_namespace.into()]);
            // A shard names its own Lease after its selector, unless told.
            let sharded = extra
                .iter()
                .any(|a| a.starts_with("--watch-label-selector"));
            if !extra.contains(&"--leader-election-lease-name") && !sharded {
                args.extend(["--leader-election-lease-name".into(), lease_name.into()]);
            }
        }
        if !extra.contains(&"--resync-interval") {
            args.extend(["--resync-interval".into(), "30s".into()]);
        }
        if !extra.contains(&"--observe-interval") {
            args.extend(["--observe-interval".into(), "2s".into()]);
        }
        if !extra.contains(&"--stalled-retry-interval") {
            args.extend(["--stalled-retry-interval".into(), "30s".into()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        self.spawn_as(kubeconfig, &args, env)
    }

    /// Starts `iothub-dynreg` with exactly `args` (and the emulator's endpoint, and addresses of
    /// its own for metrics and probes) as the identity of `kubeconfig`.
    pub fn spawn_as(
        &self,
        kubeconfig: &std::path::Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> ControllerProcess {
        let (port, probes_port) = (unused_port().unwrap(), unused_port().unwrap());
        let mut command = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg"));
        command
            .args(args)
            .args(["--endpoint", &self.emulator.endpoint()])
            .arg("--insecure-loopback-endpoint")
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--health-addr=127.0.0.1:{probes_port}"))
            .env("KUBECONFIG", kubeconfig)
            // E2E_RUST_LOG overrides the controller's log filter, to debug a test.
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info,iothub_dynreg=debug".into()),
            )
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY")
            .env_remove("TKE_ROLE_ARN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = Supervised::spawn(command).expect("start iothub-dynreg run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.take_stderr().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        ControllerProcess {
            child,
            stderr,
            ops_url: format!("http://127.0.0.1:{port}"),
            probes_url: format!("http://127.0.0.1:{probes_port}"),
        }
    }

    pub fn registrations(&self) -> Api<DynamicRegistration> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The credentials Secret the resources reference.
    pub async fn create_credentials(&self, name: &str, secret_key: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace},
            "stringData": {"secretId": SECRET_ID, "secretKey": secret_key}
        }))
        .unwrap();
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    pub async fn create_registration(
        &self,
        name: &str,
        product_id: &str,
        kind: RegistrationMode,
        limit: i64,
    ) -> DynamicRegistration {
        self.create(registration(name, product_id, kind, limit))
            .await
    }

    /// Creates `resource` in this test's namespace.
    pub async fn create(&self, mut resource: DynamicRegistration) -> DynamicRegistration {
        resource.metadata.namespace = Some(self.namespace.clone());
        self.registrations()
            .create(&PostParams::default(), &resource)
            .await
            .unwrap()
    }

    /// The emulator's product, as the control endpoint shows it.
    pub async fn cloud_product(&self, product_id: &str) -> Value {
        let products = self.emulator_get("products").await;
        products
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["productId"] == product_id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub async fn emulator_get(&self, path: &str) -> Value {
        emulator_get(&self.emulator, path).await
    }

    pub async fn emulator_send(&self, method: reqwest::Method, path: &str, body: Value) {
        let response = reqwest::Client::new()
            .request(
                method,
                format!("{}/_emulator/{path}", self.emulator.endpoint()),
            )
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    /// Calls of an action with a result, per the emulator.
    pub async fn cloud_calls(&self, action: &str, result: &str) -> u64 {
        self.emulator_get("stats").await["calls"][action][result]
            .as_u64()
            .unwrap_or(0)
    }

    /// Polls `check` every 100 ms until it returns Some, or panics after `timeout` with the
    /// controller's log tail.
    pub async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        controller: Option<&ControllerProcess>,
        mut check: F,
    ) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                let log = controller.map(|c| c.stderr()).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "timed out after {timeout:?} waiting for {what}\ncontroller log tail:\n{tail}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `controller` answers `/readyz` with 200.
    pub async fn wait_ready(&self, controller: &ControllerProcess, timeout: Duration) {
        self.wait_for("/readyz", timeout, Some(controller), || async {
            let (status, _) = controller.ops("/readyz").await?;
            (status == 200).then_some(())
        })
        .await;
    }

    /// kubectl with the admin's kubeconfig in the test's namespace: its stdout, or `None`
    /// when kubectl is missing outside CI. Panics when kubectl fails.
    pub fn kubectl(&self, args: &[&str]) -> Option<String> {
        let output = std::process::Command::new("kubectl")
            .args(args)
            .args(["--namespace", &self.namespace])
            .env("KUBECONFIG", self.plane.admin_kubeconfig())
            .output();
        match output {
            Ok(output) => {
                assert!(
                    output.status.success(),
                    "kubectl {args:?}: {}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                Some(String::from_utf8_lossy(&output.stdout).into_owned())
            }
            Err(error) if std::env::var_os("CI").is_some() => panic!("CI needs kubectl: {error}"),
            Err(_) => None,
        }
    }

    /// `kubectl wait --for=condition=Ready` on a resource, as a pipeline would run it.
    pub fn kubectl_wait_ready(&self, name: &str) {
        let target = format!("dynamicregistration/{name}");
        self.kubectl(&["wait", "--for=condition=Ready", "--timeout=10s", &target]);
    }

    /// The Ready condition's (status, reason) of a resource, once its status is current.
    pub async fn ready_reason(&self, name: &str) -> Option<(String, String)> {
        let resource = self.registrations().get_opt(name).await.ok()??;
        let status = resource.status.as_ref()?;
        if status.observed_generation != resource.metadata.generation {
            return None;
        }
        let ready = resource.condition("Ready")?;
        Some((ready.status.clone(), ready.reason.clone()))
    }

    /// Waits until the resource reports `reason` for its current generation.
    pub async fn wait_reason(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
        controller: &ControllerProcess,
    ) -> DynamicRegistration {
        self.wait_for(
            &format!("{name} to report {reason}"),
            timeout,
            Some(controller),
            || async {
                match self.ready_reason(name).await {
                    Some((_, found)) if found == reason => {
                        self.registrations().get_opt(name).await.ok().flatten()
                    }
                    _ => None,
                }
            },
        )
        .await
    }

    /// Waits until the harness's namespace is gone (deleted, every finalizer in it let go).
    pub async fn wait_namespace_gone(&self, timeout: Duration, controller: &ControllerProcess) {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        self.wait_for("the namespace to go", timeout, Some(controller), || async {
            let found = namespaces.get_opt(&self.namespace).await.ok()?;
            found.is_none().then_some(())
        })
        .await;
    }

    /// Asks for a reconcile of `name` as Flux does (the annotation `reconcile.fluxcd.io/
    /// requestedAt` set to `value`) and waits until its status says it was handled.
    pub async fn request_reconcile(
        &self,
        name: &str,
        value: &str,
        controller: &ControllerProcess,
    ) -> DynamicRegistration {
        let annotation =
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": value}}});
        self.registrations()
            .patch(name, &PatchParams::default(), &Patch::Merge(annotation))
            .await
            .unwrap();
        self.wait_for(
            &format!("the reconcile request {value} of {name} to be handled"),
            Duration::from_secs(20),
            Some(controller),
            || async {
                let resource = self.registrations().get_opt(name).await.ok()??;
                let handled = resource
                    .status
                    .as_ref()?
                    .last_handled_reconcile_at
                    .as_deref();
                (handled == Some(value)).then_some(resource)
            },
        )
        .await
    }
}

/// A namespace name unique in this control plane, after the running test where it can.
fn unique_namespace() -> String {
    let test = std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("e2e")
        .rsplit("::")
        .next()
        .unwrap_or("e2e")
        .replace('_', "-");
    let number = NAMESPACE_COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut name: String = test.chars().take(50).collect();
    name = name.trim_end_matches('-').to_owned();
    format!("{name}-{number}")
}

/// A resource for `product_id` in ap-guangzhou using the Secret `tencent-credentials`.
pub fn registration(
    name: &str,
    product_id: &str,
    kind: RegistrationMode,
    limit: i64,
) -> DynamicRegistration {
    let spec = DynamicRegistrationSpec::new(product_id, "ap-guangzhou", kind, limit);
    DynamicRegistration::new(name, spec.with_credentials("tencent-credentials"))
}

/// GET on an emulator's control endpoint `/_emulator/<path>`, e.g. `stats`.
pub async fn emulator_get(emulator: &RunningEmulator, path: &str) -> Value {
    let body = reqwest::get(format!("{}/_emulator/{path}", emulator.endpoint()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Decoded data of a Secret.
pub fn secret_data(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

impl Harness {
    /// Fails if the controller's stderr holds the SecretKey or any ProductSecret the cloud has.
    pub async fn assert_no_secrets_logged(&self, controller: &ControllerProcess) {
        let log = controller.stderr();
        assert!(!log.is_empty(), "the controller logged nothing at all");
        assert!(
            !log.contains(SECRET_KEY),
            "SecretKey in the controller's log"
        );
        let products = self.emulator_get("products").await;
        for product in products.as_array().unwrap() {
            let secret = product["productSecret"].as_str().unwrap_or_default();
            if !secret.is_empty() {
                assert!(
                    !log.contains(secret),
                    "a ProductSecret in the controller's log"
                );
            }
        }
    }

    /// Replaces the credentials Secret's key (rotation).
    pub async fn set_credentials_key(&self, name: &str, secret_key: &str) {
        use kube::api::{Patch, PatchParams};
        self.secrets()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"secretKey": secret_key}})),
            )
            .await
            .unwrap();
    }

    /// Waits until `count` resources report Ready=True for their current generation.
    pub async fn wait_all_ready(
        &self,
        count: usize,
        timeout: Duration,
        controller: &ControllerProcess,
    ) {
        self.wait_for(
            &format!("{count} Ready"),
            timeout,
            Some(controller),
            || async { (self.ready_names().await.len() == count).then_some(()) },
        )
        .await;
    }

    /// Names of the resources reporting Ready=True for their current generation.
    pub async fn ready_names(&self) -> Vec<String> {
        let list = self
            .registrations()
            .list(&Default::default())
            .await
            .unwrap();
        list.items
            .iter()
            .filter(|r| {
                r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
            })
            .filter(|r| r.condition("Ready").is_some_and(|c| c.status == "True"))
            .filter_map(|r| r.metadata.name.clone())
            .collect()
    }
}
