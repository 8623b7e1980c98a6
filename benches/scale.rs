//! Scale benchmark: the real controller (release build) between a Kubernetes API and the
//! emulator, converging N products at a scaled rate limit, against a naive baseline in the same
//! run, and the fairness of two accounts ([`fairness`]).
//! `cargo bench --bench scale -- [--api real|stand-in] [N ...] [--fairness[=A,B]]` (default: the
//! real kube-apiserver of the tests (tests/support/control_plane), the controller under deploy/'s
//! RBAC; N = 100 1000 5000 20000, and fairness with A = 5000, B = 100; given sizes, fairness runs
//! only when asked). `--api stand-in` runs against the loopback stand-in of benches/support, to
//! measure the controller without the API server's cost (see its header).

#[path = "support/kube_api.rs"]
mod kube_api;

#[path = "../tests/support/control_plane/mod.rs"]
#[allow(dead_code)]
mod control_plane;

#[path = "scale/fairness.rs"]
mod fairness;

#[path = "../tests/support/ports.rs"]
mod ports;

#[path = "../tests/support/skip.rs"]
#[allow(dead_code)]
mod skip;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use iothub_dynreg::cloud::limit::RateLimits;
use iothub_dynreg::cloud::retry::RetryPolicy;
use iothub_dynreg::cloud::{
    ClientConfig, CloudClient, Credentials, Endpoint, RegisterType, RegistrationRequest,
};
use iothub_dynreg::controller::resources::{
    DynamicRegistration, DynamicRegistrationSpec, RegistrationMode,
};
use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};

/// The scaled limit: 5× the cloud's 20/s keeps runs short; the ratios are what count.
const LIMIT: u32 = 100;
/// The controller's Kubernetes client limit (--kube-api-qps 100, --kube-api-burst 200 by
/// default) scaled like the cloud's: converging, the requests to Kubernetes follow the cloud's
/// pace, about three a resource. `BENCH_KUBE_QPS` sets another (0: none), to measure its cost.
const KUBE_QPS: &str = "500";
const KUBE_BURST: &str = "1000";

fn kube_qps() -> String {
    std::env::var("BENCH_KUBE_QPS").unwrap_or_else(|_| KUBE_QPS.to_owned())
}
const SECRET_ID: &str = "AKIDbenchmark0000001";
const SECRET_KEY: &str = "benchmark-secret-key";
const PAGE: u64 = 250;
/// Resync and observe interval of the steady-state measurement.
const RESYNC: Duration = Duration::from_secs(20);

struct Report {
    n: usize,
    converge: Duration,
    ideal: Duration,
    peaks: Value,
    throttled: u64,
    describes_steady: u64,
    api_requests_steady: usize,
    updates_steady: u64,
    steady_window: Duration,
    rss_kib: u64,
    priority_latency: Option<Duration>,
    startup_list: Duration,
    first_pass: Duration,
    describes_first_pass: u64,
    api_requests_converge: usize,
    rejected_converge: usize,
    kube_writes_steady: usize,
    kube_gets_steady: usize,
    kube_writes_restart: usize,
    naive_time: Duration,
    naive_throttled: u64,
    naive_peak: Value,
}

fn seed(n: usize) -> Seed {
    Seed::from_yaml(&format!(
        "accounts: [{{secretId: {SECRET_ID}, secretKey: {SECRET_KEY}}}]\ngenerate: {{count: {n}, region: ap-guangzhou, prefix: B}}"
    ))
    .unwrap()
}

fn product_id(index: usize) -> String {
    format!("B{index:09}")
}

async fn emulator(n: usize) -> RunningEmulator {
    let mut config = EmulatorConfig::new(seed(n));
    config.rate_limit_per_second = LIMIT;
    RunningEmulator::start(config).await.unwrap()
}

async fn stats(emulator: &RunningEmulator) -> Value {
    let body = reqwest::get(format!("{}/_emulator/stats", emulator.endpoint()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn reset_stats(emulator: &RunningEmulator) {
    reqwest::Client::new()
        .post(format!("{}/_emulator/stats/reset", emulator.endpoint()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
}

fn calls(stats: &Value, action: &str) -> u64 {
    stats["calls"][action].as_object().map_or(0, |results| {
        results.values().filter_map(Value::as_u64).sum()
    })
}

fn resource(index: usize) -> DynamicRegistration {
    let spec = DynamicRegistrationSpec::new(
        product_id(index),
        "ap-guangzhou",
        RegistrationMode::AutoCreate,
        1000,
    );
    DynamicRegistration::new(
        &format!("r{index:05}"),
        spec.with_credentials("credentials"),
    )
}

/// Which Kubernetes API server the controller runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApiKind {
    /// The loopback stand-in of benches/support: the controller's own cost alone.
    StandIn,
    /// The real kube-apiserver of the tests, with etcd, on the same machine.
    Real,
}

/// The Kubernetes side of one run.
enum Cluster {
    StandIn(kube_api::FakeKubeApi),
    Real(&'static control_plane::ControlPlane),
}

impl Cluster {
    async fn start(kind: ApiKind, namespace: &str) -> Self {
        match kind {
            ApiKind::StandIn => {
                let crds = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
                let registrations = crds.join("iothub.dynreg.io_dynamicregistrations.yaml");
                let credentials = crds.join("iothub.dynreg.io_clustercredentials.yaml");
                Cluster::StandIn(
                    kube_api::FakeKubeApi::start(&[&registrations, &credentials]).await,
                )
            }
            ApiKind::Real => {
                let plane = control_plane::ControlPlane::shared()
                    .expect("--api real needs the control plane of the tests");
                plane
                    .create_namespace(&plane.admin_client().await, namespace)
                    .await;
                Cluster::Real(plane)
            }
        }
    }

    async fn client(&self) -> kube::Client {
        match self {
            Cluster::StandIn(api) => api.client(),
            Cluster::Real(plane) => plane.admin_client().await,
        }
    }

    /// The controller's kubeconfig (on the real server: deploy/'s ServiceAccount).
    fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        match self {
            Cluster::StandIn(api) => api.write_kubeconfig(dir),
            Cluster::Real(plane) => plane.write_controller_kubeconfig(dir),
        }
    }

    /// Requests the controller made so far, counted by the API server.
    fn controller_requests(&self) -> usize {
        self.controller_request_kinds().len()
    }

    /// (verb, resource) of every request the controller made, in order, with its status code
    /// (the stand-in never turns a request away: 200).
    fn controller_request_kinds(&self) -> Vec<Requested> {
        match self {
            Cluster::StandIn(api) => api
                .requests()
                .iter()
                .filter(|r| r.by_controller)
                .map(|r| ((r.verb.clone(), r.resource.clone()), 200))
                .collect(),
            Cluster::Real(plane) => plane
                .controller_requests()
                .into_iter()
                .map(|r| ((r.verb, r.resource), r.code))
                .collect(),
        }
    }
}

/// A request the controller made: (verb, resource) and the answer's status code.
type Requested = ((String, String), u16);

fn is_write(((verb, _), _): &Requested) -> bool {
    matches!(verb.as_str(), "create" | "update" | "patch" | "delete")
}

/// Requests by (verb, resource).
fn by_kind(requests: &[Requested]) -> std::collections::BTreeMap<(String, String), usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for (kind, _) in requests {
        *kinds.entry(kind.clone()).or_insert(0usize) += 1;
    }
    kinds
}

fn is_ready(resource: &DynamicRegistration) -> bool {
    resource.status.as_ref().and_then(|s| s.observed_generation) == resource.metadata.generation
        && resource
            .condition("Ready")
            .is_some_and(|c| c.status == "True")
}

/// A watch-fed cache of the resources, so that counting Ready ones costs the API server nothing
/// more than one watch.
fn track(registrations: Api<DynamicRegistration>) -> reflector::Store<DynamicRegistration> {
    let (reader, writer) = reflector::store();
    let stream = watcher(registrations, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    reader
}

fn ready_count(store: &reflector::Store<DynamicRegistration>) -> usize {
    store.state().iter().filter(|r| is_ready(r)).count()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// What one controller run measured.
struct ControllerRun {
    converge: Duration,
    ideal: Duration,
    peaks: Value,
    throttled: u64,
    describes_steady: u64,
    api_requests_steady: usize,
    updates_steady: u64,
    steady_window: Duration,
    rss_kib: u64,
    priority_latency: Option<Duration>,
    /// Restarted on the converged fleet: until /readyz, until every resource was reconciled.
    startup_list: Duration,
    first_pass: Duration,
    describes_first_pass: u64,
    /// Kubernetes API requests from the start until all were Ready.
    api_requests_converge: usize,
    /// Of those, turned away by the API server (429, Priority and Fairness).
    rejected_converge: usize,
    /// Kubernetes writes (create, update, patch, delete) and GETs in one steady resync.
    kube_writes_steady: usize,
    kube_gets_steady: usize,
    /// Kubernetes writes from the restart until every resource was reconciled once.
    kube_writes_restart: usize,
}

async fn controller_run(n: usize, kind: ApiKind) -> ControllerRun {
    let namespace = format!("bench-{n}");
    let cluster = Cluster::start(kind, &namespace).await;
    let emulator = emulator(n).await;
    let dir = std::env::temp_dir().join(format!("iothub-dynreg-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = cluster.write_kubeconfig(&dir);
    let client = cluster.client().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &namespace);
    let credentials: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "credentials"},
        "stringData": {"secretId": SECRET_ID, "secretKey": SECRET_KEY}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &credentials)
        .await
        .unwrap();
    let registrations: Api<DynamicRegistration> = Api::namespaced(client.clone(), &namespace);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let creations = chunk.iter().map(|&index| {
            let registrations = registrations.clone();
            async move {
                registrations
                    .create(&PostParams::default(), &resource(index))
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(creations).await;
    }
    let store = track(registrations.clone());

    let rate = format!(
        "DescribeProduct={LIMIT},DescribeProducts={LIMIT},UpdateProductDynamicRegister={LIMIT}"
    );
    let seconds = format!("{}s", RESYNC.as_secs());
    let requests_at_start = cluster.controller_request_kinds().len();
    let started = Instant::now();
    // Converging, resyncs are the default 10 minutes away, as in a cluster: the cost per
    // converged resource is the convergence's own. The steady state below resyncs every RESYNC.
    let kube_qps = kube_qps();
    let args = [
        "--rate-limit",
        &rate,
        "--observe-interval",
        &seconds,
        "--kube-api-qps",
        &kube_qps,
        "--kube-api-burst",
        KUBE_BURST,
    ];
    let steady_args = [
        "--kube-api-qps",
        &kube_qps,
        "--kube-api-burst",
        KUBE_BURST,
        "--rate-limit",
        &rate,
        "--resync-interval",
        &seconds,
        "--observe-interval",
        &seconds,
    ];
    let (mut controller, _) =
        start_controller(&kubeconfig, &emulator.endpoint(), &namespace, &args);

    // Half-way, a person changes the spec of a resource that is already Ready: how long until
    // the cloud has it, while the rest of the backlog waits?
    let mut priority_latency = None;
    let mut changed = false;
    let mut changed_at = Instant::now();
    let mut target = String::new();
    loop {
        let ready = ready_count(&store);
        if ready == n {
            break;
        }
        if !changed
            && n >= 1000
            && ready >= n / 4
            && let Some(object) = store.state().into_iter().find(|r| is_ready(r))
        {
            let name = object.name_any();
            target = object.spec.product_id.clone();
            registrations
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"registerLimit": 7}})),
                )
                .await
                .unwrap();
            changed = true;
            changed_at = Instant::now();
        }
        if changed && priority_latency.is_none() {
            let products: Value = serde_json::from_slice(
                &reqwest::get(format!("{}/_emulator/products", emulator.endpoint()))
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap(),
            )
            .unwrap();
            if products
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["productId"] == target.as_str() && p["registerLimit"] == 7)
            {
                priority_latency = Some(changed_at.elapsed());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not converged after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converge = started.elapsed();
    let converge_requests = cluster
        .controller_request_kinds()
        .split_off(requests_at_start);
    eprintln!(
        "N = {n}: Kubernetes API requests until all Ready, by verb and resource: {:?}",
        by_kind(&converge_requests)
    );
    let api_requests_converge = converge_requests.len();
    let rejected_converge = converge_requests
        .iter()
        .filter(|(_, code)| *code == 429)
        .count();
    let converged = stats(&emulator).await;
    let peaks = converged["peakCallsPerSecondByAction"].clone();
    let throttled = converged["requestLimitExceeded"].as_u64().unwrap_or(0);

    let mut rss = peak_rss_kib(controller.id());
    eprintln!(
        "N = {n}: peak RSS converging {:.1} MiB",
        rss as f64 / 1024.0
    );
    let _ = controller.kill();
    let _ = controller.wait();

    // Restart on the converged fleet, resyncing every RESYNC: the first list, then a pass over
    // every resource; then one full resync period (plus its jitter) of the in-sync fleet.
    reset_stats(&emulator).await;
    let requests_before_restart = cluster.controller_requests();
    let restarted = Instant::now();
    let (mut controller, ops) =
        start_controller(&kubeconfig, &emulator.endpoint(), &namespace, &steady_args);
    let (startup_list, first_pass) = restart_pass(&ops, restarted, n).await;
    let pass = stats(&emulator).await;
    let describes_first_pass = calls(&pass, "DescribeProduct") + calls(&pass, "DescribeProducts");
    let restart_requests = cluster
        .controller_request_kinds()
        .split_off(requests_before_restart);
    let kube_writes_restart = restart_requests.iter().filter(|r| is_write(r)).count();

    reset_stats(&emulator).await;
    let requests_before = cluster.controller_requests();
    let window = RESYNC + RESYNC / 10;
    tokio::time::sleep(window).await;
    let steady = stats(&emulator).await;
    let steady_requests = cluster
        .controller_request_kinds()
        .split_off(requests_before);
    let api_requests_steady = steady_requests.len();
    let steady_kinds = by_kind(&steady_requests);
    eprintln!(
        "N = {n}: Kubernetes API requests in one resync, by verb and resource: {steady_kinds:?}"
    );
    let kube_writes_steady = steady_requests.iter().filter(|r| is_write(r)).count();
    let kube_gets_steady = steady_requests
        .iter()
        .filter(|((verb, _), _)| verb == "get")
        .count();
    let describes = calls(&steady, "DescribeProduct") + calls(&steady, "DescribeProducts");
    let updates = calls(&steady, "UpdateProductDynamicRegister");
    let throttled = throttled + steady["requestLimitExceeded"].as_u64().unwrap_or(0);
    let restart_rss = peak_rss_kib(controller.id());
    eprintln!(
        "N = {n}: peak RSS restarted {:.1} MiB",
        restart_rss as f64 / 1024.0
    );
    rss = rss.max(restart_rss);
    let _ = controller.kill();
    let _ = controller.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let ideal = Duration::from_secs_f64(n as f64 / f64::from(LIMIT));
    ControllerRun {
        converge,
        ideal,
        peaks,
        throttled,
        describes_steady: describes,
        api_requests_steady,
        updates_steady: updates,
        steady_window: window,
        rss_kib: rss,
        priority_latency,
        startup_list,
        first_pass,
        describes_first_pass,
        api_requests_converge,
        rejected_converge,
        kube_writes_steady,
        kube_gets_steady,
        kube_writes_restart,
    }
}

/// Starts the release controller for `namespace` against `endpoint`, with `args` and any in
/// `BENCH_CONTROLLER_ARGS` (its log filter from `BENCH_CONTROLLER_RUST_LOG`, default warn).
fn start_controller(
    kubeconfig: &std::path::Path,
    endpoint: &str,
    namespace: &str,
    args: &[&str],
) -> (Child, String) {
    let (port, probes_port) = (ports::unused_port().unwrap(), ports::unused_port().unwrap());
    // BENCH_CONTROLLER_WRAPPER runs the controller under a profiler (e.g. heaptrack).
    let binary = env!("CARGO_BIN_EXE_iothub-dynreg");
    let mut command = match std::env::var("BENCH_CONTROLLER_WRAPPER") {
        Ok(wrapper) => {
            let mut command = Command::new(wrapper);
            command.arg(binary);
            command
        }
        Err(_) => Command::new(binary),
    };
    let child = command
        .args([
            "run",
            "--endpoint",
            endpoint,
            "--insecure-loopback-endpoint",
            "--watch-namespace",
            namespace,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--health-addr",
            &format!("127.0.0.1:{probes_port}"),
        ])
        .args(args)
        .args(
            std::env::var("BENCH_CONTROLLER_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_CONTROLLER_RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::null())
        // BENCH_CONTROLLER_LOG=FILE keeps the controller's log (appended), to see where time goes.
        .stderr(match std::env::var_os("BENCH_CONTROLLER_LOG") {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

/// Reconciles the controller at `ops` counted so far (every result).
async fn reconciles_done(ops: &str) -> u64 {
    let Ok(response) = reqwest::get(format!("{ops}/metrics")).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with("iothub_dynreg_reconciles_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Restarted on a converged fleet: when `/readyz` answers (the first lists are in) and when
/// every resource was reconciled once, from the start.
async fn restart_pass(ops: &str, started: Instant, n: usize) -> (Duration, Duration) {
    let mut listed = None;
    loop {
        if listed.is_none()
            && let Ok(response) = reqwest::get(format!("{ops}/readyz")).await
            && response.status().is_success()
        {
            listed = Some(started.elapsed());
        }
        if listed.is_some() && reconciles_done(ops).await >= n as u64 {
            return (listed.unwrap_or_default(), started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the restarted controller did not reconcile everything in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The naive way: each resource read with DescribeProduct then updated, 16 at a time, no
/// client-side limit, and on RequestLimitExceeded the official SDK's back-off of 2^n seconds.
async fn naive_run(n: usize) -> (Duration, u64, Value) {
    let emulator = emulator(n).await;
    let client = CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&emulator.endpoint(), true).unwrap(),
        rate_limits: RateLimits::uniform(1_000_000),
        retry: RetryPolicy::none(),
        ..ClientConfig::default()
    })
    .unwrap();
    let credentials = Credentials::new(SECRET_ID, SECRET_KEY);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers = (0..16).map(|_| {
        let (client, credentials, next) = (client.clone(), credentials.clone(), next.clone());
        async move {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst) as usize;
                if index >= n {
                    return;
                }
                let id = product_id(index);
                with_sdk_backoff(|| client.describe_product(&credentials, "ap-guangzhou", &id))
                    .await;
                let wanted = RegistrationRequest {
                    register_type: RegisterType::AutoCreate,
                    register_limit: 1000,
                };
                with_sdk_backoff(|| {
                    client.update_product_dynamic_register(
                        &credentials,
                        "ap-guangzhou",
                        &id,
                        wanted,
                    )
                })
                .await;
            }
        }
    });
    futures::future::join_all(workers).await;
    let elapsed = started.elapsed();
    let stats = stats(&emulator).await;
    (
        elapsed,
        stats["requestLimitExceeded"].as_u64().unwrap_or(0),
        stats["peakCallsPerSecondByAction"].clone(),
    )
}

async fn with_sdk_backoff<T, F, Fut>(mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, iothub_dynreg::cloud::CloudError>>,
{
    for attempt in 0..10u32 {
        match call().await {
            Ok(_) => return,
            Err(error) if error.code().starts_with("RequestLimitExceeded") => {
                tokio::time::sleep(Duration::from_secs(1 << attempt.min(5))).await;
            }
            Err(error) => panic!("naive baseline: {error}"),
        }
    }
    panic!("naive baseline: gave up after 10 attempts");
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let kind = match arguments.iter().position(|arg| arg == "--api") {
        Some(at) => match arguments.get(at + 1).map(String::as_str) {
            Some("real") => ApiKind::Real,
            Some("stand-in") => ApiKind::StandIn,
            other => panic!("--api takes real or stand-in, not {other:?}"),
        },
        None => ApiKind::Real,
    };
    let sizes: Vec<usize> = arguments
        .iter()
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let fairness_flag = arguments.iter().find(|arg| arg.starts_with("--fairness"));
    let default_run = sizes.is_empty() && fairness_flag.is_none();
    let fairness_sizes = match fairness_flag.map(|flag| flag.split_once('=')) {
        Some(Some((_, sizes))) => {
            let (a, b) = sizes
                .split_once(',')
                .expect("--fairness=A,B: two resource counts");
            Some((a.parse().unwrap(), b.parse().unwrap()))
        }
        Some(None) => Some((5000, 100)),
        None => default_run.then_some((5000, 100)),
    };
    let sizes = if default_run {
        vec![100, 1000, 5000, 20000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut reports = Vec::new();
    for n in sizes {
        eprintln!("N = {n}: controller run against the {kind:?} API…");
        let run = runtime.block_on(controller_run(n, kind));
        eprintln!("N = {n}: naive baseline…");
        let (naive_time, naive_throttled, naive_peak) =
            if std::env::var_os("BENCH_SKIP_NAIVE").is_some() {
                (Duration::ZERO, 0, Value::Null)
            } else {
                runtime.block_on(naive_run(n))
            };
        reports.push(Report {
            n,
            converge: run.converge,
            ideal: run.ideal,
            peaks: run.peaks,
            throttled: run.throttled,
            describes_steady: run.describes_steady,
            api_requests_steady: run.api_requests_steady,
            updates_steady: run.updates_steady,
            steady_window: run.steady_window,
            rss_kib: run.rss_kib,
            priority_latency: run.priority_latency,
            startup_list: run.startup_list,
            first_pass: run.first_pass,
            describes_first_pass: run.describes_first_pass,
            api_requests_converge: run.api_requests_converge,
            rejected_converge: run.rejected_converge,
            kube_writes_steady: run.kube_writes_steady,
            kube_gets_steady: run.kube_gets_steady,
            kube_writes_restart: run.kube_writes_restart,
            naive_time,
            naive_throttled,
            naive_peak,
        });
    }
    println!("Kubernetes API: {kind:?}");
    if !reports.is_empty() {
        print_scale(&reports);
    }
    if let Some((a, b)) = fairness_sizes {
        let cases = runtime.block_on(fairness::run(kind, a, b));
        fairness::print(&cases);
    }
}

/// The scale tables, each number against its ideal.
fn print_scale(reports: &[Report]) {
    println!(
        "limit: {LIMIT} requests/s per action (the cloud's 20/s scaled); page: {PAGE} products; resync = observe interval = {}s",
        RESYNC.as_secs()
    );
    println!();
    println!("Converging N new resources (created before the controller starts):");
    println!(
        "| N | all Ready | ideal N/limit | ratio (target ≤ 1.06) | peak calls/s (Describe, DescribeProducts, Update) | RequestLimitExceeded | Kubernetes API requests per resource | 429 answers (ideal 0) | peak RSS | spec change during backlog | naive: time | naive ratio | naive RequestLimitExceeded | naive peak calls/s (Describe, Update) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let peak = |peaks: &Value, action: &str| {
            peaks[action]
                .as_u64()
                .map_or("-".to_owned(), |p| p.to_string())
        };
        println!(
            "| {} | {:.2} s | {:.2} s | {:.3} | {}, {}, {} | {} | {:.2} | {} | {:.1} MiB | {} | {:.2} s | {:.2} | {} | {}, {} |",
            r.n,
            r.converge.as_secs_f64(),
            r.ideal.as_secs_f64(),
            r.converge.as_secs_f64() / r.ideal.as_secs_f64(),
            peak(&r.peaks, "DescribeProduct"),
            peak(&r.peaks, "DescribeProducts"),
            peak(&r.peaks, "UpdateProductDynamicRegister"),
            r.throttled,
            r.api_requests_converge as f64 / r.n as f64,
            r.rejected_converge,
            r.rss_kib as f64 / 1024.0,
            r.priority_latency
                .map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
            r.naive_time.as_secs_f64(),
            r.naive_time.as_secs_f64() / r.ideal.as_secs_f64(),
            r.naive_throttled,
            peak(&r.naive_peak, "DescribeProduct"),
            peak(&r.naive_peak, "UpdateProductDynamicRegister"),
        );
    }
    println!();
    println!(
        "Steady state (one resync, {}s) and a restart on the converged fleet:",
        (RESYNC + RESYNC / 10).as_secs()
    );
    println!(
        "| N | Describe calls in one resync | bound ceil(N/250)+1 | Kubernetes API requests in it | Kubernetes writes in it (ideal 0) | GETs in it (ideal 0) | Updates (ideal 0) | restart: lists in (/readyz) | restart: every resource reconciled | Describe calls in that pass | bound ceil(N/250)+1 | Kubernetes writes in that pass (ideal 0) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let bound = (r.n as u64).div_ceil(PAGE) + 1;
        println!(
            "| {} | {} | {bound} | {} | {} | {} | {} | {:.2} s | {:.2} s | {} | {bound} | {} |",
            r.n,
            r.describes_steady,
            r.api_requests_steady,
            r.kube_writes_steady,
            r.kube_gets_steady,
            r.updates_steady,
            r.startup_list.as_secs_f64(),
            r.first_pass.as_secs_f64(),
            r.describes_first_pass,
            r.kube_writes_restart,
        );
        let _ = r.steady_window;
    }
}
