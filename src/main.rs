//! `iothub-dynreg`: flags → clients → controller. No logic lives here.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use iothub_dynreg::cli::{CheckFlags, Cli, Command, PlanFlags, RunFlags, Scope};
use iothub_dynreg::cloud::limit::{ActionRateLimit, RateLimits};
use iothub_dynreg::cloud::web_identity::{WebIdentity, WebIdentityCredentials};
use iothub_dynreg::cloud::{ClientConfig, CloudClient, Endpoint};
use iothub_dynreg::controller::credentials::default::from_environment;
use iothub_dynreg::controller::credentials::{DefaultCredentials, Grants, NamespaceAllowList};
use iothub_dynreg::controller::decision::requeue::Delays;
use iothub_dynreg::controller::resources;
use iothub_dynreg::controller::runtime::{InstallScope, Settings, Shared, leading};
use iothub_dynreg::ops::http::{self, Health};
use iothub_dynreg::ops::kube_client::{self, RequestRate};
use iothub_dynreg::ops::leader::LeaseSettings;
use iothub_dynreg::ops::logging;
use iothub_dynreg::ops::metrics::Metrics;
use iothub_dynreg::ops::shutdown;
use iothub_dynreg::preflight::command as check;
use iothub_dynreg::preview::command;

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
