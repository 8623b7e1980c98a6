//! The command line of `iothub-dynreg`: its subcommands and every flag, with the environment
//! variable and default of each (clap), and what the flags become ([`options`] for `plan` and
//! `check`, [`run`] for the controller). In the library so that the documentation's reference
//! of flags is generated from these very types.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cloud::limit::ActionRateLimit;
use crate::controller::runtime::shard::ShardSelector;
use crate::ops::logging::LogFormat;
use crate::preview::command::Output;

pub mod options;
pub mod run;

/// Keeps Tencent Cloud IoT Hub dynamic-registration settings equal to DynamicRegistration
/// resources, and publishes each product's ProductSecret as a Secret.
#[derive(Parser, Debug)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
pub struct PlanFlags {
    /// Manifests: files, directories (their *.yaml, *.yml and *.json files, recursively), or -
    /// for standard input. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// Plan against the built-in emulator, started for the plan on loopback from SEED (default:
    /// the example seed), read with the seed's first account: no account needed.
    #[arg(long, value_name = "SEED", num_args = 0..=1, conflicts_with_all = ["credentials_file", "endpoints"])]
    pub emulator: Option<Option<PathBuf>>,
    /// Credentials as the credentials Secret holds them (secretId, secretKey, token): a YAML or
    /// JSON mapping, or a Secret manifest. Default: TENCENTCLOUD_SECRET_ID,
    /// TENCENTCLOUD_SECRET_KEY and TENCENTCLOUD_SESSION_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    #[command(flatten)]
    pub cloud: CloudFlags,
}

#[derive(Args, Debug)]
pub struct CheckFlags {
    /// Regions whose products are listed (DescribeProducts); repeatable. Default: those of the
    /// manifests, else ap-guangzhou.
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
    /// Products read (DescribeProduct) in each --region; repeatable. Default: the manifests'
    /// products, else the first product each region lists.
    #[arg(long = "product", value_name = "PRODUCT_ID")]
    pub products: Vec<String>,
    /// Manifests whose DynamicRegistrations name the products and regions to check, as for plan.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Also call UpdateProductDynamicRegister, writing each product's current settings back
    /// (RegisterType and RegisterLimit as read): a write that changes nothing.
    #[arg(long)]
    pub write_back: bool,
    /// Credentials from a file holding what the credentials Secret holds (as for plan).
    #[arg(long, value_name = "FILE", group = "source")]
    pub credentials_file: Option<PathBuf>,
    /// Credentials from this credentials Secret in the cluster of the current kubeconfig.
    #[arg(long, value_name = "NAME", group = "source")]
    pub secret: Option<String>,
    /// The namespace of --secret.
    #[arg(
        short = 'n',
        long,
        value_name = "NAMESPACE",
        default_value = "default",
        requires = "secret"
    )]
    pub namespace: String,
    /// Credentials these ClusterCredentials declare, read from the cluster of the current
    /// kubeconfig (a web identity needs its token file readable here).
    #[arg(long, value_name = "NAME", group = "source")]
    pub cluster_credentials: Option<String>,
    /// Check against the built-in emulator, started on loopback from SEED (default: the example
    /// seed), with the seed's first account.
    #[arg(long, value_name = "SEED", num_args = 0..=1, group = "source", conflicts_with_all = ["endpoints", "sts_endpoint"])]
    pub emulator: Option<Option<PathBuf>>,
    /// STS endpoint (GetCallerIdentity, web identity). Default: the STS of --endpoint's site.
    #[arg(long, env = "IOTHUB_DYNREG_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: crate::preflight::command::Output,
    #[command(flatten)]
    pub cloud: CloudFlags,
}

/// Where the cloud's APIs are and how fast they may be called, for `run`, `plan` and `check`.
#[derive(Args, Debug)]
pub struct CloudFlags {
    /// IoT Hub's API endpoint, a host (https) or https://host[:port] (default
    /// iotcloud.tencentcloudapi.com); or SERVICE=URL for another service's (iotexplorer,
    /// iotvideo). Repeatable. A service not set uses the host of IoT Hub's site
    /// (iotexplorer.intl.tencentcloudapi.com beside iotcloud.intl…), or IoT Hub's endpoint itself
    /// when that is a loopback address (the emulator).
    #[arg(
        long = "endpoint",
        value_name = "[SERVICE=]URL",
        env = "IOTHUB_DYNREG_ENDPOINT",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Allow plain-http endpoints on a loopback address (the emulator; never production).
    #[arg(long, env = "IOTHUB_DYNREG_INSECURE_LOOPBACK_ENDPOINT")]
    pub insecure_loopback_endpoint: bool,
    /// Client-side limit per (endpoint, SecretId, service, action), e.g.
    /// UpdateProductDynamicRegister=10 or iotexplorer:ModifyProductDynamicRegister=10 (without a
    /// service: of every service that has the action). Repeat for several; every action
    /// defaults to the cloud's 20 requests/s.
    #[arg(
        long = "rate-limit",
        value_name = "[SERVICE:]ACTION=RPS",
        env = "IOTHUB_DYNREG_RATE_LIMIT",
        value_delimiter = ','
    )]
    pub rate_limits: Vec<ActionRateLimit>,
}

#[derive(Args, Debug)]
pub struct RunFlags {
    #[command(flatten)]
    pub cloud: CloudFlags,
    /// STS endpoint, for web identity credentials (TKE_ROLE_ARN and friends). Default: the STS of
    /// the --endpoint's site, sts.intl.tencentcloudapi.com for an endpoint under
    /// intl.tencentcloudapi.com, else sts.tencentcloudapi.com.
    #[arg(long, env = "IOTHUB_DYNREG_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// Reconcile every resource this often (±10%) to catch changes made in the console.
    #[arg(long, env = "IOTHUB_DYNREG_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Longest age of the shared snapshot of all products (one DescribeProducts page per 250
    /// products) a resync may decide on; products missing from it are read alone.
    #[arg(long, env = "IOTHUB_DYNREG_OBSERVE_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub observe_interval: Duration,
    /// Retry errors a person must fix (bad credentials, product not found) this often.
    #[arg(long, env = "IOTHUB_DYNREG_STALLED_RETRY_INTERVAL", default_value = "15m", value_parser = parse_duration)]
    pub stalled_retry_interval: Duration,
    /// Reconciles running at once per credentials and region (those waiting for cloud quota
    /// included), and eight times this in all: one team's backlog waits in its own queue, never
    /// in another team's (up to eight teams busy at once). A person's spec change overtakes a
    /// backlog, in this queue and in the rate limiter.
    #[arg(long, env = "IOTHUB_DYNREG_CONCURRENCY", default_value_t = 256)]
    pub concurrency: u16,
    /// Requests a second the controller sends to the Kubernetes API, sustained (0: no limit).
    /// Converging, a resource costs about three (its status, an Event, its Secret), so one
    /// account at the cloud's 20/s needs about 60; the Lease is renewed outside this limit.
    #[arg(long, env = "IOTHUB_DYNREG_KUBE_API_QPS", default_value_t = 100.0, value_parser = parse_qps)]
    pub kube_api_qps: f64,
    /// Requests sent to the Kubernetes API at once after a quiet spell.
    #[arg(long, env = "IOTHUB_DYNREG_KUBE_API_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_burst: u32,
    /// Namespaces whose resources may use the controller's own credentials
    /// (TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY, TENCENTCLOUD_SESSION_TOKEN) when they
    /// name no credentialsSecretRef: a comma-separated list, or * for all. Default: none.
    #[arg(
        long,
        env = "IOTHUB_DYNREG_DEFAULT_CREDENTIALS_NAMESPACES",
        default_value = ""
    )]
    pub default_credentials_namespaces: String,
    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, env = "IOTHUB_DYNREG_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// What the controller's RBAC lets it read: `cluster` (a ClusterRole: also ClusterCredentials
    /// and namespace labels) or `namespace` (a Role in the namespace of --watch-namespace only:
    /// no cluster-scoped watches, and ClusterCredentials are unavailable).
    #[arg(
        long,
        env = "IOTHUB_DYNREG_INSTALL_SCOPE",
        value_enum,
        default_value = "cluster"
    )]
    pub install_scope: Scope,
    /// Reconcile only the resources whose labels match this selector, so that several
    /// Deployments split a very large fleet (e.g. `sharding.iothub.dynreg.io/key=shard-2`, and
    /// `!sharding.iothub.dynreg.io/key` for the unlabelled rest). Secrets are watched with the
    /// same selector (published Secrets carry the labels it names) and the Lease is the shard's
    /// own. Shard by cloud account: quota and conflicts are per account, not per process.
    #[arg(long, env = "IOTHUB_DYNREG_WATCH_LABEL_SELECTOR", value_parser = ShardSelector::parse)]
    pub watch_label_selector: Option<ShardSelector>,
    /// Log format.
    #[arg(
        long,
        env = "IOTHUB_DYNREG_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Address of the /metrics endpoint (which answers /healthz and /readyz too).
    #[arg(
        long,
        env = "IOTHUB_DYNREG_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Address of the probes alone (/healthz, /readyz), for the kubelet: no scraper can hold
    /// their connections.
    #[arg(
        long,
        env = "IOTHUB_DYNREG_HEALTH_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub health_addr: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io/v1 Lease, so replicas can run side by side.
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else "default").
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease (default: iothub-dynreg, and with --watch-label-selector
    /// iothub-dynreg-shard-<digest of the selector>).
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION_LEASE_NAME")]
    pub leader_election_lease_name: Option<String>,
    /// A leader that has not renewed for this long loses the Lease; it renews every third of it.
    #[arg(long, env = "IOTHUB_DYNREG_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,
}

/// `--install-scope`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Scope {
    Cluster,
    Namespace,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// `--kube-api-qps`: a finite number, not negative.
pub fn parse_qps(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(qps) if qps.is_finite() && qps >= 0.0 => Ok(qps),
        _ => Err(format!(
            "{text:?} is not a rate: a number of requests a second, 0 for no limit"
        )),
    }
}
