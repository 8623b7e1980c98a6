//! A real Kubernetes control plane for the tests, as envtest gives controller-runtime projects:
//! etcd, kube-apiserver (TLS on loopback, token authentication, RBAC, audit log) and
//! kube-controller-manager (garbage collector, namespace controller), started once per test
//! binary and shared by its tests, each in its own namespace.
//!
//! The CRDs come from `crds/`, the controller's RBAC from `deploy/`: the controller runs as the
//! ServiceAccount `iothub-dynreg/iothub-dynreg`, with exactly what `deploy/` grants it. The
//! audit log records every request that identity makes, from the server's side.
//!
//! Without the executables (see [`assets`]) the tests print why and skip (listed, see
//! [`skip`]), except under CI (`CI` set), where they fail; any other failure to start fails. Every process dies with the test binary (see [`process`]).

pub mod assets;
mod pki;
pub mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde::Deserialize;
use serde_json::Value;

use super::ports::unused_port;
use super::skip;
use assets::{Executables, Unavailable};
use process::Supervised;

/// Namespace and name of the controller's ServiceAccount in `deploy/`.
pub const CONTROLLER_NAMESPACE: &str = "iothub-dynreg";
/// The user the controller runs as: that ServiceAccount.
pub const CONTROLLER_USER: &str = "system:serviceaccount:iothub-dynreg:iothub-dynreg";
const CONTROLLER_TOKEN: &str = "controller-token-for-tests";
const ADMIN_USER: &str = "e2e-admin";
const ADMIN_TOKEN: &str = "admin-token-for-tests";
/// What `kubectl apply -f deploy/...` would need: the kinds of `deploy/` that grant access.
const RBAC_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];
/// How long a start may take on a loaded 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopping kube-apiserver may take before it is killed (with watches open it
/// never ends by itself; 10 s made each restart of the soak cost 12 s).
const APISERVER_GRACE: Duration = Duration::from_secs(2);

/// The running control plane of this test binary.
pub struct ControlPlane {
    dir: PathBuf,
    executables: Executables,
    etcd_port: u16,
    /// Port of kube-apiserver's HTTPS endpoint on 127.0.0.1.
    pub api_port: u16,
    ca_pem: String,
    apiserver: Mutex<Option<Supervised>>,
    /// Held so that it lives (and dies) with the plane.
    _etcd: Supervised,
    controller_manager: Mutex<Option<Supervised>>,
}

impl ControlPlane {
    /// The control plane of this test binary, started on first use; `None` (with the reason
    /// printed and listed, see [`skip`]) when an executable is missing outside CI. A plane that
    /// cannot start for any other reason (a CRD the API server refuses, RBAC of `deploy/` that
    /// does not apply) fails the test, here and under CI alike.
    pub fn shared() -> Option<&'static ControlPlane> {
        static PLANE: OnceLock<Result<ControlPlane, Unavailable>> = OnceLock::new();
        let started = PLANE.get_or_init(|| {
            // Its own thread and runtime: the caller is a test's runtime, which cannot block
            // on another future, and which ends with the test.
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Unavailable::Broken(e.to_string()))?
                    .block_on(Self::start())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Unavailable::Broken(
                    "starting the control plane panicked".into(),
                ))
            })
        });
        match started {
            Ok(plane) => Some(plane),
            Err(Unavailable::Missing(why)) => {
                skip::missing_program(&skip::current_test(), why);
                None
            }
            Err(Unavailable::Broken(why)) => {
                panic!("the real Kubernetes control plane could not start: {why}")
            }
        }
    }

    async fn start() -> Result<Self, Unavailable> {
        let executables = assets::locate()?;
        Self::start_with(executables)
            .await
            .map_err(Unavailable::Broken)
    }

    async fn start_with(executables: Executables) -> Result<Self, String> {
        let dir = data_dir()?;
        let pki = pki::write(&dir)?;
        write_file(
            &dir.join("tokens.csv"),
            &format!(
                "{ADMIN_TOKEN},{ADMIN_USER},admin-uid,\"system:masters\"\n\
                 {CONTROLLER_TOKEN},{CONTROLLER_USER},controller-uid,\
                 \"system:serviceaccounts,system:serviceaccounts:{CONTROLLER_NAMESPACE},system:authenticated\"\n"
            ),
        )?;
        write_file(&dir.join("audit-policy.yaml"), AUDIT_POLICY)?;
        let [etcd_port, etcd_peer_port, api_port] =
            [unused_port()?, unused_port()?, unused_port()?];
        let etcd = start_etcd(&executables, &dir, etcd_port, etcd_peer_port).await?;
        let plane = Self {
            dir,
            executables,
            etcd_port,
            api_port,
            ca_pem: pki.ca_pem,
            apiserver: Mutex::new(None),
            _etcd: etcd,
            controller_manager: Mutex::new(None),
        };
        plane.start_apiserver().await?;
        write_file(
            &plane.dir.join("admin.kubeconfig"),
            &plane.kubeconfig(ADMIN_USER, ADMIN_TOKEN),
        )?;
        let client = plane.admin_client().await;
        install_crds(&client).await?;
        apply_rbac_of_deploy(&client).await?;
        // After the CRDs, so the garbage collector watches their kinds from its first sync.
        let controller_manager = plane.spawn_logged(
            &plane.executables.controller_manager,
            "kube-controller-manager",
            &[
                "--kubeconfig",
                &plane.path("admin.kubeconfig"),
                "--authentication-kubeconfig",
                &plane.path("admin.kubeconfig"),
                "--authorization-kubeconfig",
                &plane.path("admin.kubeconfig"),
                "--leader-elect=false",
                "--controllers=garbage-collector-controller,namespace-controller",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
            ],
        )?;
        *plane.controller_manager.lock().unwrap() = Some(controller_manager);
        Ok(plane)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts a process with its output in `<dir>/<name>.log`.
    fn spawn_logged(
        &self,
        program: &Path,
        name: &str,
        args: &[&str],
    ) -> Result<Supervised, String> {
        spawn_logged(&self.dir, program, name, args)
    }

    async fn start_apiserver(&self) -> Result<(), String> {
        let etcd = format!("http://127.0.0.1:{}", self.etcd_port);
        let port = self.api_port.to_string();
        let process = self.spawn_logged(
            &self.executables.apiserver,
            "kube-apiserver",
            &[
                "--etcd-servers",
                &etcd,
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--secure-port",
                &port,
                "--tls-cert-file",
                &self.path("apiserver.crt"),
                "--tls-private-key-file",
                &self.path("apiserver.key"),
                "--token-auth-file",
                &self.path("tokens.csv"),
                "--authorization-mode=RBAC",
                // As hardened clusters (OpenShift) run it: setting blockOwnerDeletion on the
                // published Secret's ownerReference needs `update` on the owner's finalizers.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                // API Priority and Fairness stays on (the default), as in every real cluster:
                // the controller's ServiceAccount lands in the default FlowSchema
                // `service-accounts`, priority level `workload-low` (tests/control_plane.rs).
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-account-key-file",
                &self.path("sa.pub"),
                "--service-account-signing-key-file",
                &self.path("sa.key"),
                "--service-cluster-ip-range=10.96.0.0/16",
                "--audit-policy-file",
                &self.path("audit-policy.yaml"),
                "--audit-log-path",
                &self.path("audit.log"),
                "--audit-log-maxsize=0",
            ],
        )?;
        *self.apiserver.lock().unwrap() = Some(process);
        self.wait_ready().await
    }

    /// Waits for `/readyz` to answer 200, or for the API server to exit.
    async fn wait_ready(&self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes())
                    .map_err(|e| e.to_string())?,
            )
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let answer = http
                .get(format!("https://127.0.0.1:{}/readyz", self.api_port))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            let exited = self
                .apiserver
                .lock()
                .unwrap()
                .as_mut()
                .and_then(Supervised::try_wait);
            if let Some(status) = exited {
                return Err(format!(
                    "kube-apiserver exited ({status}):\n{}",
                    log_tail(&self.dir, "kube-apiserver")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "kube-apiserver not ready within {READY_TIMEOUT:?}:\n{}",
            log_tail(&self.dir, "kube-apiserver")
        ))
    }

    /// Stops kube-apiserver (SIGTERM, as an upgrade does), keeps it down for `outage`, and
    /// starts it again on the same port; returns when it is ready. It stops listening at once,
    /// then waits for its open watches to end, which they do not: it is killed after
    /// [`APISERVER_GRACE`], as the kubelet kills it at the end of its grace period.
    pub async fn restart_apiserver(&'static self, outage: Duration) {
        tokio::task::spawn_blocking(move || {
            if let Some(mut running) = self.apiserver.lock().unwrap().take() {
                running.stop(APISERVER_GRACE);
            }
        })
        .await
        .unwrap();
        tokio::time::sleep(outage).await;
        self.start_apiserver()
            .await
            .unwrap_or_else(|why| panic!("kube-apiserver did not come back: {why}"));
    }

    /// Freezes kube-apiserver (SIGSTOP) or thaws it (SIGCONT): open connections stay up and
    /// requests go unanswered, as with a server that hangs or a network that drops packets.
    pub fn freeze_apiserver(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        if let Some(apiserver) = self.apiserver.lock().unwrap().as_ref() {
            apiserver.signal(signal);
        }
    }

    /// Compacts etcd up to its current revision, so that watches resuming from an older
    /// resourceVersion are answered 410 Gone once they are served from etcd.
    pub async fn compact_etcd(&self) -> u64 {
        let etcd = format!("http://127.0.0.1:{}", self.etcd_port);
        let http = reqwest::Client::new();
        let range = http
            .post(format!("{etcd}/v3/kv/range"))
            // Any key will do: the answer's header carries the store's revision.
            .body(r#"{"key":"Lw==","count_only":true}"#)
            .send()
            .await
            .expect("etcd answers")
            .bytes()
            .await
            .expect("etcd answers in full");
        let range: Value = serde_json::from_slice(&range).expect("etcd answers JSON");
        // The gRPC gateway writes 64-bit integers as strings.
        let revision: u64 = range["header"]["revision"]
            .as_str()
            .and_then(|text| text.parse().ok())
            .expect("a revision in etcd's answer");
        let compacted = http
            .post(format!("{etcd}/v3/kv/compaction"))
            .body(format!(r#"{{"revision":"{revision}","physical":true}}"#))
            .send()
            .await
            .expect("etcd answers");
        let status = compacted.status();
        let answer = compacted.text().await.unwrap_or_default();
        // Nothing written since the last compaction: that revision is compacted already.
        let compacted_already = answer.contains("required revision has been compacted");
        assert!(
            status.is_success() || compacted_already,
            "compaction: {status} {answer}"
        );
        revision
    }

    /// A kubeconfig for `user` (one of the two identities) at this API server.
    fn kubeconfig(&self, user: &str, token: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: {user}}}\ncurrent-context: e2e\nusers:\n- name: {user}\n  user: {{token: {token}}}\n",
            port = self.api_port
        )
    }

    /// A client as the controller's identity (the ServiceAccount of `deploy/`).
    pub async fn controller_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(
            &self.kubeconfig(CONTROLLER_USER, CONTROLLER_TOKEN),
        )
        .expect("the controller's kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("the controller's kubeconfig is complete");
        kube::Client::try_from(config).expect("a client for the controller's kubeconfig")
    }

    /// Writes the controller's kubeconfig (the ServiceAccount of `deploy/`) into `dir`.
    pub fn write_controller_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("controller.kubeconfig");
        write_file(&path, &self.kubeconfig(CONTROLLER_USER, CONTROLLER_TOKEN)).unwrap();
        path
    }

    /// The admin kubeconfig's path (for kubectl).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A client with cluster-admin rights, for the test's own requests. Make one per test:
    /// a client's connections belong to the runtime that made them.
    pub async fn admin_client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&self.kubeconfig(ADMIN_USER, ADMIN_TOKEN))
                .expect("the admin kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("the admin kubeconfig is complete");
        kube::Client::try_from(config).expect("a client for the admin kubeconfig")
    }

    /// A fresh namespace named after `name`, for one test.
    pub async fn create_namespace(&self, client: &kube::Client, name: &str) {
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    }

    /// Every request the controller's identity made so far, as the API server's audit log
    /// records them (once each, when the response completed).
    pub fn controller_requests(&self) -> Vec<AuditedRequest> {
        self.requests_of(CONTROLLER_USER)
    }

    /// Every request a ServiceAccount (`system:serviceaccount:<namespace>:<name>`) made so far.
    pub fn requests_of(&self, user: &str) -> Vec<AuditedRequest> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<AuditEvent>(line).ok())
            .filter(|event| event.user.username == user)
            .map(AuditedRequest::from)
            .collect()
    }

    /// A kubeconfig at this API server with `token` (e.g. from `kubectl create token`).
    pub fn write_kubeconfig(&self, path: &Path, user: &str, token: &str) {
        write_file(path, &self.kubeconfig(user, token)).unwrap();
    }

    /// Process ids of etcd, kube-apiserver and kube-controller-manager.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self._etcd.id()];
        for process in [&self.apiserver, &self.controller_manager] {
            pids.extend(process.lock().unwrap().as_ref().map(Supervised::id));
        }
        pids
    }

    /// The directory holding this plane's data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// One request as the API server audited it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditedRequest {
    pub verb: String,
    pub group: String,
    /// The resource, with its subresource after a slash (`dynamicregistrations/status`).
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    /// When the API server received it.
    pub received: jiff::Timestamp,
}

#[derive(Deserialize)]
struct AuditEvent {
    verb: String,
    user: AuditUser,
    #[serde(rename = "objectRef", default)]
    object: AuditObject,
    #[serde(rename = "responseStatus", default)]
    response: AuditResponse,
    #[serde(rename = "requestReceivedTimestamp", default)]
    received: String,
}

#[derive(Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Deserialize, Default)]
struct AuditObject {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "apiGroup", default)]
    group: String,
}

#[derive(Deserialize, Default)]
struct AuditResponse {
    #[serde(default)]
    code: u16,
}

impl From<AuditEvent> for AuditedRequest {
    fn from(event: AuditEvent) -> Self {
        let object = event.object;
        let resource = if object.subresource.is_empty() {
            object.resource
        } else {
            format!("{}/{}", object.resource, object.subresource)
        };
        Self {
            verb: event.verb,
            group: object.group,
            resource,
            namespace: object.namespace,
            name: object.name,
            code: event.response.code,
            received: event.received.parse().unwrap_or_default(),
        }
    }
}

/// Audit the ServiceAccounts (the controller's identity, and those of controllers installed by
/// a test) only, once per request (when its response completed).
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"#;

/// `target/tmp/kube-plane/<pid>`, after removing the directories of test binaries that are gone.
fn data_dir() -> Result<PathBuf, String> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kube-plane");
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Kept for a look at the logs when asked to; removed by the next run otherwise.
    if std::env::var_os("IOTHUB_DYNREG_KEEP_PLANE").is_none() {
        process::remove_at_exit(dir.clone());
    }
    Ok(dir)
}

fn spawn_logged(
    dir: &Path,
    program: &Path,
    name: &str,
    args: &[&str],
) -> Result<Supervised, String> {
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    Supervised::spawn(command).map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// The last lines of a process's log, for error messages.
pub fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

async fn start_etcd(
    executables: &Executables,
    dir: &Path,
    port: u16,
    peer_port: u16,
) -> Result<Supervised, String> {
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data = dir.join("etcd").display().to_string();
    let mut etcd = spawn_logged(
        dir,
        &executables.etcd,
        "etcd",
        &[
            "--data-dir",
            &data,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("default={peer_url}"),
            "--unsafe-no-fsync",
        ],
    )?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        let health = reqwest::get(format!("{client_url}/health")).await;
        if health.is_ok_and(|response| response.status().is_success()) {
            return Ok(etcd);
        }
        if let Some(status) = etcd.try_wait() {
            return Err(format!(
                "etcd exited ({status}):\n{}",
                log_tail(dir, "etcd")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "etcd not healthy within {READY_TIMEOUT:?}:\n{}",
        log_tail(dir, "etcd")
    ))
}

/// Applies every CRD in `crds/` and waits until each is Established.
async fn install_crds(client: &kube::Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for document in documents_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))? {
        let crd: CustomResourceDefinition =
            serde_json::from_value(document).map_err(|e| format!("crds/: {e}"))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| format!("apply CRD {name}: {e}"))?;
        let established = kube::runtime::conditions::is_crd_established();
        tokio::time::timeout(
            READY_TIMEOUT,
            kube::runtime::wait::await_condition(crds.clone(), &name, established),
        )
        .await
        .map_err(|_| format!("CRD {name} not Established"))?
        .map_err(|e| format!("CRD {name}: {e}"))?;
    }
    Ok(())
}

/// Applies the access-granting objects of `deploy/` (the files its kustomization lists):
/// whatever they grant is all the controller may do in these tests.
async fn apply_rbac_of_deploy(client: &kube::Client) -> Result<(), String> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut objects = Vec::new();
    for file in kustomization_files(&deploy)? {
        objects.extend(read_yaml(&file)?);
    }
    // Namespaces before what lives in them.
    objects.retain(|object| RBAC_KINDS.contains(&object["kind"].as_str().unwrap_or_default()));
    objects.sort_by_key(|object| object["kind"] != "Namespace");
    for object in objects {
        apply_object(client, object).await?;
    }
    Ok(())
}

/// The files the kustomization in `dir` lists, those of the directories it lists included.
fn kustomization_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let kustomization: Value = read_yaml(&dir.join("kustomization.yaml"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}/kustomization.yaml is empty", dir.display()))?;
    let listed = kustomization["resources"]
        .as_array()
        .ok_or_else(|| format!("{}/kustomization.yaml lists no resources", dir.display()))?;
    let mut files = Vec::new();
    for entry in listed.iter().filter_map(Value::as_str) {
        let path = dir.join(entry);
        if path.is_dir() {
            files.extend(kustomization_files(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

async fn apply_object(client: &kube::Client, object: Value) -> Result<(), String> {
    let object: DynamicObject = serde_json::from_value(object).map_err(|e| e.to_string())?;
    let types = object
        .types
        .clone()
        .ok_or("an object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| e.to_string())?;
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("discover {}: {e}", types.kind))?;
    let api: Api<DynamicObject> = match (&object.metadata.namespace, capabilities.scope) {
        (Some(namespace), kube::discovery::Scope::Namespaced) => {
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    let name = object.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(|e| format!("apply {} {name}: {e}", types.kind))?;
    Ok(())
}

/// The YAML documents of every `*.yaml` file in `dir`, as JSON values.
fn documents_in(dir: &Path) -> Result<Vec<Value>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        documents.extend(read_yaml(&file)?);
    }
    Ok(documents)
}

/// The non-empty YAML documents of a file, as JSON values.
pub fn read_yaml(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    yaml_documents(&text, &path.display().to_string())
}

/// The documents of a YAML stream (`origin` names it in errors), empty ones left out.
pub fn yaml_documents(text: &str, origin: &str) -> Result<Vec<Value>, String> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value =
            serde_yaml::Value::deserialize(document).map_err(|e| format!("{origin}: {e}"))?;
        if !value.is_null() {
            documents.push(serde_json::to_value(value).map_err(|e| e.to_string())?);
        }
    }
    Ok(documents)
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
