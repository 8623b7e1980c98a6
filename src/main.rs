//! `iothub-dynreg`: flags → clients → controller. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use iothub_dynreg::cloud::limit::{ActionRateLimit, RateLimits};
use iothub_dynreg::cloud::web_identity::{WebIdentity, WebIdentityCredentials};
use iothub_dynreg::cloud::{ClientConfig, CloudClient, Endpoint};
use iothub_dynreg::controller::credentials::default::from_environment;
use iothub_dynreg::controller::credentials::{DefaultCredentials, Grants, NamespaceAllowList};
use iothub_dynreg::controller::decision::requeue::Delays;
use iothub_dynreg::controller::resources;
use iothub_dynreg::controller::runtime::shard::ShardSelector;
use iothub_dynreg::controller::runtime::{InstallScope, Settings, Shared, leading};
use iothub_dynreg::ops::http::{self, Health};
use iothub_dynreg::ops::kube_client::{self, RequestRate};
use iothub_dynreg::ops::leader::LeaseSettings;
use iothub_dynreg::ops::logging::{self, LogFormat};
use iothub_dynreg::ops::metrics::Metrics;
use iothub_dynreg::ops::shutdown;
use iothub_dynreg::preflight::command as check;
use iothub_dynreg::preview::command::{self, Output};

/// mimalloc rather than glibc's malloc: a start on a large fleet allocates in a burst (every
/// resource listed, triggered and parked at once) and glibc keeps what the burst freed scattered
/// over its heap, so the process stays far above what it holds (docs/benchmarks.md, "Scale 2, memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the 16th of `mi_option_e` in the v2 header this build
/// vendors; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives memory back to the system as soon as it is freed. By default mimalloc purges freed
/// pages after a delay, at its next call in the same thread, and the threads that freed the
/// burst of a start over a large fleet may not call it again for long: the restart at
/// N = 20,000 held 132 MiB instead of 125 (docs/benchmarks.md).
fn purge_freed_memory_at_once() {
    // SAFETY: sets an integer option of the allocator; no memory is passed.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// Keeps this process's memory in small pages. mimalloc asks for transparent huge pages for its
/// arenas, and a node with THP enabled then backs each touched 2 MiB at once: 36 MiB instead of
/// 21 MiB for 100 resources, 48 instead of 35 for 1000. A controller gains nothing from fewer
/// TLB misses.
fn keep_memory_in_small_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Keeps Tencent Cloud IoT Hub dynamic-registration settings equal to DynamicRegistration
/// resources, and publishes each product's ProductSecret as a Secret.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunFlags>),
    /// Show what applying DynamicRegistration manifests would change in the cloud, with no
    /// cluster: validated as the API server would, decided as the controller would; the cloud
    /// is read, never written. Exit status: 0 nothing to change, 2 changes pending, 1 errors.
    Plan(Box<PlanFlags>),
    /// Check, before a deploy, whether a key can do what the controller needs: whether it signs
    /// correctly and whose it is, which of DescribeProducts, DescribeProduct and (only with
    /// --write-back, writing each product's current settings back) UpdateProductDynamicRegister
    /// CAM allows it, which products it reaches, and the CAM policy it lacks. Read-only by
    /// default; never prints a secret. Exit status: 0 ready, 1 not (the key, its account or a
    /// permission), 2 inconclusive (the cloud could not be asked).
    Check(Box<CheckFlags>),
    /// Print the CustomResourceDefinitions (DynamicRegistration, ClusterCredentials) as YAML.
    Crd,
}

#[derive(Args, Debug)]
struct PlanFlags {
    /// Manifests: files, directories (their *.yaml, *.yml and *.json files, recursively), or -
    /// for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
    /// Plan against the built-in emulator, started for the plan on loopback from SEED (default:
    /// the example seed), read with the seed's first account: no account needed.
    #[arg(long, value_name = "SEED", num_args = 0..=1, conflicts_with_all = ["credentials_file", "endpoint"])]
    emulator: Option<Option<PathBuf>>,
    /// Credentials as the credentials Secret holds them (secretId, secretKey, token): a YAML or
    /// JSON mapping, or a Secret manifest. Default: TENCENTCLOUD_SECRET_ID,
    /// TENCENTCLOUD_SECRET_KEY and TENCENTCLOUD_SESSION_TOKEN.
    #[arg(long, value_name = "FILE")]
    credentials_file: Option<PathBuf>,
    #[command(flatten)]
    cloud: CloudFlags,
}

#[derive(Args, Debug)]
struct CheckFlags {
    /// Regions whose products are listed (DescribeProducts); repeatable. Default: those of the
    /// manifests, else ap-guangzhou.
    #[arg(long = "region", value_name = "REGION")]
    regions: Vec<String>,
    /// Products read (DescribeProduct) in each --region; repeatable. Default: the manifests'
    /// products, else the first product each region lists.
    #[arg(long = "product", value_name = "PRODUCT_ID")]
    products: Vec<String>,
    /// Manifests whose DynamicRegistrations name the products and regions to check, as for plan.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Also call UpdateProductDynamicRegister, writing each product's current settings back
    /// (RegisterType and RegisterLimit as read): a write that changes nothing.
    #[arg(long)]
    write_back: bool,
    /// Credentials from a file holding what the credentials Secret holds (as for plan).
    #[arg(long, value_name = "FILE", group = "source")]
    credentials_file: Option<PathBuf>,
    /// Credentials from this credentials Secret in the cluster of the current kubeconfig.
    #[arg(long, value_name = "NAME", group = "source")]
    secret: Option<String>,
    /// The namespace of --secret.
    #[arg(
        short = 'n',
        long,
        value_name = "NAMESPACE",
        default_value = "default",
        requires = "secret"
    )]
    namespace: String,
    /// Credentials these ClusterCredentials declare, read from the cluster of the current
    /// kubeconfig (a web identity needs its token file readable here).
    #[arg(long, value_name = "NAME", group = "source")]
    cluster_credentials: Option<String>,
    /// Check against the built-in emulator, started on loopback from SEED (default: the example
    /// seed), with the seed's first account.
    #[arg(long, value_name = "SEED", num_args = 0..=1, group = "source", conflicts_with_all = ["endpoint", "sts_endpoint"])]
    emulator: Option<Option<PathBuf>>,
    /// STS endpoint (GetCallerIdentity, web identity). Default: the STS of --endpoint's site.
    #[arg(long, env = "IOTHUB_DYNREG_STS_ENDPOINT")]
    sts_endpoint: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: check::Output,
    #[command(flatten)]
    cloud: CloudFlags,
}

/// Where the IoT Hub API is and how fast it may be called, for `run`, `plan` and `check`.
#[derive(Args, Debug)]
struct CloudFlags {
    /// IoT Hub API endpoint: a host (https) or https://host[:port].
    #[arg(long, env = "IOTHUB_DYNREG_ENDPOINT", default_value = iothub_dynreg::cloud::client::DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Allow a plain-http endpoint on a loopback address (the emulator; never production).
    #[arg(long, env = "IOTHUB_DYNREG_INSECURE_LOOPBACK_ENDPOINT")]
    insecure_loopback_endpoint: bool,
    /// Client-side limit per (endpoint, SecretId, action), e.g. UpdateProductDynamicRegister=10.
    /// Repeat for several actions; every action defaults to the cloud's 20 requests/s.
    #[arg(
        long = "rate-limit",
        value_name = "ACTION=RPS",
        env = "IOTHUB_DYNREG_RATE_LIMIT",
        value_delimiter = ','
    )]
    rate_limits: Vec<ActionRateLimit>,
}

#[derive(Args, Debug)]
struct RunFlags {
    #[command(flatten)]
    cloud: CloudFlags,
    /// STS endpoint, for web identity credentials (TKE_ROLE_ARN and friends). Default: the STS of
    /// the --endpoint's site, sts.intl.tencentcloudapi.com for an endpoint under
    /// intl.tencentcloudapi.com, else sts.tencentcloudapi.com.
    #[arg(long, env = "IOTHUB_DYNREG_STS_ENDPOINT")]
    sts_endpoint: Option<String>,
    /// Reconcile every resource this often (±10%) to catch changes made in the console.
    #[arg(long, env = "IOTHUB_DYNREG_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    resync_interval: Duration,
    /// Longest age of the shared snapshot of all products (one DescribeProducts page per 250
    /// products) a resync may decide on; products missing from it are read alone.
    #[arg(long, env = "IOTHUB_DYNREG_OBSERVE_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    observe_interval: Duration,
    /// Retry errors a person must fix (bad credentials, product not found) this often.
    #[arg(long, env = "IOTHUB_DYNREG_STALLED_RETRY_INTERVAL", default_value = "15m", value_parser = parse_duration)]
    stalled_retry_interval: Duration,
    /// Reconciles running at once per credentials and region (those waiting for cloud quota
    /// included), and eight times this in all: one team's backlog waits in its own queue, never
    /// in another team's (up to eight teams busy at once). A person's spec change overtakes a
    /// backlog, in this queue and in the rate limiter.
    #[arg(long, env = "IOTHUB_DYNREG_CONCURRENCY", default_value_t = 256)]
    concurrency: u16,
    /// Requests a second the controller sends to the Kubernetes API, sustained (0: no limit).
    /// Converging, a resource costs about three (its status, an Event, its Secret), so one
    /// account at the cloud's 20/s needs about 60; the Lease is renewed outside this limit.
    #[arg(long, env = "IOTHUB_DYNREG_KUBE_API_QPS", default_value_t = 100.0, value_parser = parse_qps)]
    kube_api_qps: f64,
    /// Requests sent to the Kubernetes API at once after a quiet spell.
    #[arg(long, env = "IOTHUB_DYNREG_KUBE_API_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    kube_api_burst: u32,
    /// Namespaces whose resources may use the controller's own credentials
    /// (TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY, TENCENTCLOUD_SESSION_TOKEN) when they
    /// name no credentialsSecretRef: a comma-separated list, or * for all. Default: none.
    #[arg(
        long,
        env = "IOTHUB_DYNREG_DEFAULT_CREDENTIALS_NAMESPACES",
        default_value = ""
    )]
    default_credentials_namespaces: String,
    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, env = "IOTHUB_DYNREG_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// What the controller's RBAC lets it read: `cluster` (a ClusterRole: also ClusterCredentials
    /// and namespace labels) or `namespace` (a Role in the namespace of --watch-namespace only:
    /// no cluster-scoped watches, and ClusterCredentials are unavailable).
    #[arg(
        long,
        env = "IOTHUB_DYNREG_INSTALL_SCOPE",
        value_enum,
        default_value = "cluster"
    )]
    install_scope: Scope,
    /// Reconcile only the resources whose labels match this selector, so that several
    /// Deployments split a very large fleet (e.g. `sharding.iothub.dynreg.io/key=shard-2`, and
    /// `!sharding.iothub.dynreg.io/key` for the unlabelled rest). Secrets are watched with the
    /// same selector (published Secrets carry the labels it names) and the Lease is the shard's
    /// own. Shard by cloud account: quota and conflicts are per account, not per process.
    #[arg(long, env = "IOTHUB_DYNREG_WATCH_LABEL_SELECTOR", value_parser = ShardSelector::parse)]
    watch_label_selector: Option<ShardSelector>,
    /// Log format.
    #[arg(
        long,
        env = "IOTHUB_DYNREG_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Address of the /metrics endpoint (which answers /healthz and /readyz too).
    #[arg(
        long,
        env = "IOTHUB_DYNREG_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Address of the probes alone (/healthz, /readyz), for the kubelet: no scraper can hold
    /// their connections.
    #[arg(
        long,
        env = "IOTHUB_DYNREG_HEALTH_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    health_addr: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io/v1 Lease, so replicas can run side by side.
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else "default").
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease (default: iothub-dynreg, and with --watch-label-selector
    /// iothub-dynreg-shard-<digest of the selector>).
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION_LEASE_NAME")]
    leader_election_lease_name: Option<String>,
    /// A leader that has not renewed for this long loses the Lease; it renews every third of it.
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
}

/// `--install-scope`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Scope {
    Cluster,
    Namespace,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: kube::core::Duration = text
        .parse()
        .map_err(|e| format!("{e} (e.g. 30s, 10m, 1h)"))?;
    if parsed.is_negative() {
        return Err("must not be negative".to_owned());
    }
    let duration = Duration::from(parsed);
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(duration)
}

#[tokio::main]
async fn main() -> ExitCode {
    keep_memory_in_small_pages();
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match resources::definitions()
            .iter()
            .map(serde_yaml::to_string)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(documents) => {
                print!("{}", documents.join("---\n"));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("iothub-dynreg: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Plan(flags) => {
            let planned = match plan_options(*flags) {
                Ok(options) => command::run(options).await,
                Err(message) => Err(message),
            };
            match planned {
                Ok(code) => ExitCode::from(code),
                Err(message) => {
                    eprintln!("iothub-dynreg plan: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check(flags) => {
            let checked = match check_options(*flags) {
                Ok(options) => check::run(options).await,
                Err(message) => Err(message),
            };
            match checked {
                Ok(code) => ExitCode::from(code),
                Err(message) => {
                    eprintln!("iothub-dynreg check: {message}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(flags) => {
            logging::init(flags.log_format);
            match run(*flags).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    tracing::error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn plan_options(flags: PlanFlags) -> Result<command::Options, String> {
    let cloud = match flags.emulator {
        Some(seed) => command::Cloud::Emulator { seed },
        None => command::Cloud::Endpoint {
            endpoint: Endpoint::parse(
                &flags.cloud.endpoint,
                flags.cloud.insecure_loopback_endpoint,
            )
            .map_err(|e| e.to_string())?,
            credentials_file: flags.credentials_file,
        },
    };
    Ok(command::Options {
        paths: flags.paths,
        output: flags.output,
        cloud,
        rate_limits: rate_limits(&flags.cloud.rate_limits),
    })
}

fn check_options(flags: CheckFlags) -> Result<check::Options, String> {
    let insecure = flags.cloud.insecure_loopback_endpoint;
    let endpoint = Endpoint::parse(&flags.cloud.endpoint, insecure).map_err(|e| e.to_string())?;
    let sts_endpoint = flags
        .sts_endpoint
        .as_deref()
        .map(|text| sts_endpoint(&endpoint, Some(text), insecure))
        .transpose()?;
    let source = match (
        flags.credentials_file,
        flags.secret,
        flags.cluster_credentials,
    ) {
        (Some(path), ..) => check::Source::File(path),
        (_, Some(name), _) => check::Source::Secret {
            namespace: flags.namespace,
            name,
        },
        (.., Some(name)) => check::Source::ClusterCredentials(name),
        _ => check::Source::Environment,
    };
    let target = match flags.emulator {
        Some(seed) => check::Target::Emulator(seed),
        None => check::Target::Cloud {
            source,
            endpoint,
            sts_endpoint,
        },
    };
    Ok(check::Options {
        target,
        rate_limits: rate_limits(&flags.cloud.rate_limits),
        regions: flags.regions,
        products: flags.products,
        manifests: flags.paths,
        write_back: flags.write_back,
        output: flags.output,
    })
}

async fn run(flags: RunFlags) -> Result<(), String> {
    if matches!(flags.install_scope, Scope::Namespace) && flags.watch_namespace.is_none() {
        return Err("--install-scope namespace needs --watch-namespace: the namespace the controller's Role is in".to_owned());
    }
    let metrics = Arc::new(Metrics::new());
    let cloud = cloud_client(&flags, metrics.clone())?;
    let identity = replica_identity();
    let settings = settings(&flags, default_credentials(&cloud)?, &identity);
    let (client, lease_client) = kube_clients(&flags, &metrics).await?;
    let lease = flags.leader_election.then(|| LeaseSettings {
        name: lease_name(&flags),
        namespace: flags
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into()),
        identity: identity.clone(),
        lease_duration: flags.leader_election_lease_duration,
    });
    let shared = Shared {
        metrics,
        health: Arc::new(Health::new(
            lease.as_ref().map(LeaseSettings::renew_interval),
        )),
    };
    serve_operations(&flags, &shared).await?;
    let shutdown = shutdown::requested();
    let lease = lease.map(|lease| (lease, lease_client));
    leading::operate((client, cloud), settings, shared, lease, shutdown).await;
    Ok(())
}

/// The metrics endpoint and the probes, each on its address.
async fn serve_operations(flags: &RunFlags, shared: &Shared) -> Result<(), String> {
    let endpoints = [
        (
            "--metrics-addr",
            flags.metrics_addr,
            http::Endpoint::Metrics,
        ),
        ("--health-addr", flags.health_addr, http::Endpoint::Probes),
    ];
    for (flag, addr, endpoint) in endpoints {
        let (metrics, health) = (shared.metrics.clone(), shared.health.clone());
        let bound = http::start((addr, endpoint), metrics, health)
            .await
            .map_err(|e| format!("cannot listen on {flag} {addr}: {e}"))?;
        tracing::info!(addr = %bound, ?endpoint, "serving the operations endpoint");
    }
    Ok(())
}

/// The IoT Hub client: endpoint, rate limits, and metrics of every call.
/// The client of the reconciles, paced by `--kube-api-qps`, and the Lease's own, unpaced: a
/// renewal never waits behind a backlog of status writes.
async fn kube_clients(
    flags: &RunFlags,
    metrics: &Arc<Metrics>,
) -> Result<(kube::Client, kube::Client), String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!("cannot reach the Kubernetes API (kubeconfig or in-cluster config): {e}")
    })?;
    let rate = (flags.kube_api_qps > 0.0).then_some(RequestRate {
        qps: flags.kube_api_qps,
        burst: flags.kube_api_burst,
    });
    let connect = |rate| {
        kube_client::connect(config.clone(), rate, metrics.clone())
            .map_err(|e| format!("cannot make a Kubernetes client: {e}"))
    };
    Ok((connect(rate)?, connect(None)?))
}

/// `--kube-api-qps`: a finite number, not negative.
fn parse_qps(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(qps) if qps.is_finite() && qps >= 0.0 => Ok(qps),
        _ => Err(format!(
            "{text:?} is not a rate: a number of requests a second, 0 for no limit"
        )),
    }
}

fn cloud_client(flags: &RunFlags, metrics: Arc<Metrics>) -> Result<CloudClient, String> {
    let rate_limits = rate_limits(&flags.cloud.rate_limits);
    let endpoint = Endpoint::parse(
        &flags.cloud.endpoint,
        flags.cloud.insecure_loopback_endpoint,
    )
    .map_err(|e| e.to_string())?;
    let sts_endpoint = sts_endpoint(
        &endpoint,
        flags.sts_endpoint.as_deref(),
        flags.cloud.insecure_loopback_endpoint,
    )?;
    let client = CloudClient::new(ClientConfig {
        endpoint,
        sts_endpoint,
        rate_limits,
        ..ClientConfig::default()
    })
    .map_err(|e| e.to_string())?;
    Ok(client.observed_by(metrics))
}

/// `--sts-endpoint`, else the STS of `endpoint`'s site.
fn sts_endpoint(
    endpoint: &Endpoint,
    flag: Option<&str>,
    insecure_loopback: bool,
) -> Result<Endpoint, String> {
    match flag {
        Some(text) => {
            Endpoint::parse(text, insecure_loopback).map_err(|e| format!("--sts-endpoint: {e}"))
        }
        None => Ok(endpoint.matching_sts()),
    }
}

fn rate_limits(flags: &[ActionRateLimit]) -> RateLimits {
    let mut rate_limits = RateLimits::default();
    for limit in flags {
        rate_limits.set(*limit);
    }
    rate_limits
}

/// The controller's own credentials: `TENCENTCLOUD_*` keys, else the web identity TKE injects
/// (`TKE_ROLE_ARN`, …), else none.
fn default_credentials(cloud: &CloudClient) -> Result<Option<DefaultCredentials>, String> {
    let environment = |name: &str| std::env::var(name).ok();
    if let Some(keys) = from_environment(environment) {
        return Ok(Some(DefaultCredentials::Keys(keys)));
    }
    Ok(
        WebIdentity::from_tke_environment(environment)?.map(|identity| {
            tracing::info!(role = %identity.role_arn, "default credentials: web identity");
            DefaultCredentials::WebIdentity(Arc::new(WebIdentityCredentials::new(
                identity,
                cloud.clone(),
            )))
        }),
    )
}

fn settings(
    flags: &RunFlags,
    default_credentials: Option<DefaultCredentials>,
    identity: &str,
) -> Settings {
    Settings {
        requeue: Delays {
            resync: flags.resync_interval,
            stalled: flags.stalled_retry_interval,
            ..Delays::default()
        },
        observe_interval: flags.observe_interval,
        reconciles_per_source: usize::from(flags.concurrency.max(1)),
        shard: flags.watch_label_selector.clone(),
        credentials: Grants {
            default: default_credentials,
            default_namespaces: NamespaceAllowList::parse(&flags.default_credentials_namespaces),
            cluster_credentials: matches!(flags.install_scope, Scope::Cluster),
        },
        watch_namespace: flags.watch_namespace.clone(),
        install_scope: match flags.install_scope {
            Scope::Cluster => InstallScope::Cluster,
            Scope::Namespace => InstallScope::Namespace,
        },
        instance: Some(identity.to_owned()),
    }
}

/// `--leader-election-lease-name`, else one Lease per shard.
fn lease_name(flags: &RunFlags) -> String {
    const DEFAULT: &str = "iothub-dynreg";
    match (
        &flags.leader_election_lease_name,
        &flags.watch_label_selector,
    ) {
        (Some(name), _) => name.clone(),
        (None, Some(shard)) => shard.lease_name(DEFAULT),
        (None, None) => DEFAULT.to_owned(),
    }
}

/// The pod's name (`POD_NAME`), else host name and process id: unique among replicas.
fn replica_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "iothub-dynreg".into()),
            std::process::id()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set at start is the purge delay: its default is 10 ms (the option before it,
    /// eager_commit_delay, defaults to 1 and the one after, use_numa_nodes, to 0).
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // Set from outside: its default cannot be seen.
        }
        // SAFETY: reads integer options of the allocator.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 10);
        purge_freed_memory_at_once();
        // SAFETY: as above.
        let set = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(set, 0);
    }
}
