//! `run`: the flags made into the clients, the settings and the Lease, then the controller until
//! shutdown.

use std::sync::Arc;

use crate::cloud::web_identity::{WebIdentity, WebIdentityCredentials};
use crate::cloud::{ClientConfig, CloudClient};
use crate::controller::credentials::default::from_environment;
use crate::controller::credentials::{DefaultCredentials, Grants, NamespaceAllowList};
use crate::controller::decision::delays::Delays;
use crate::controller::runtime::{InstallScope, Settings, Shared, leading};
use crate::ops::http::{self, Health};
use crate::ops::kube_client::{self, RequestRate};
use crate::ops::leader::LeaseSettings;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown;

use super::options::{rate_limits, sts_endpoint};
use super::{RunFlags, Scope};

/// Runs the controller until a shutdown signal; an error is a flag or an environment that
/// cannot work, said in one sentence.
pub async fn run(flags: RunFlags) -> Result<(), String> {
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

/// The cloud client: the services' endpoints, rate limits, and metrics of every call.
fn cloud_client(flags: &RunFlags, metrics: Arc<Metrics>) -> Result<CloudClient, String> {
    let insecure = flags.cloud.insecure_loopback_endpoint;
    let (endpoint, service_endpoints) = flags.cloud.endpoints()?;
    let sts_endpoint = sts_endpoint(&endpoint, flags.sts_endpoint.as_deref(), insecure)?;
    let client = CloudClient::new(ClientConfig {
        endpoint,
        service_endpoints,
        sts_endpoint,
        rate_limits: rate_limits(&flags.cloud.rate_limits),
        ..ClientConfig::default()
    })
    .map_err(|e| e.to_string())?;
    Ok(client.observed_by(metrics))
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
