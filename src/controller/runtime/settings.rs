//! How the controller runs, as the administrator set it (flags).

use std::time::Duration;

use super::shard::ShardSelector;
use crate::controller::credentials::Grants;
use crate::controller::decision::delays::Delays;

/// Operator-chosen behaviour.
#[derive(Clone, Debug)]
pub struct Settings {
    /// When resources are reconciled again: the resync, the slow retry, the backoff.
    pub requeue: Delays,
    /// Longest age of the shared product snapshot a reconcile may decide on.
    pub observe_interval: Duration,
    /// Reconciles under way at once per credentials source and region (admission).
    pub reconciles_per_source: usize,
    /// The resources and Secrets in view, in a shard (`--watch-label-selector`).
    pub shard: Option<ShardSelector>,
    /// The controller's own credentials, and who may use them.
    pub credentials: Grants,
    /// Watch one namespace instead of the whole cluster.
    pub watch_namespace: Option<String>,
    /// What the controller may read beyond its namespaces: cluster-scoped objects
    /// (ClusterCredentials, namespace labels) only when installed for the cluster.
    pub install_scope: InstallScope,
    /// Name of this replica, for Events (the pod name).
    pub instance: Option<String>,
}

impl Default for Settings {
    /// Resync 10 min, stalled retry 15 min, backoff 2 s to 5 min, snapshots 1 min old at most,
    /// 256 reconciles per source, every namespace, no shard, no default credentials.
    fn default() -> Self {
        Self {
            requeue: Delays::default(),
            observe_interval: Duration::from_secs(60),
            reconciles_per_source: 256,
            shard: None,
            credentials: Grants::default(),
            watch_namespace: None,
            install_scope: InstallScope::Cluster,
            instance: None,
        }
    }
}

/// Where the controller is installed, and so what its RBAC lets it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallScope {
    /// A ClusterRole: every namespace (or one, `--watch-namespace`), ClusterCredentials and
    /// namespace labels.
    Cluster,
    /// A Role in the namespace it watches and nothing beyond: no ClusterCredentials (a resource
    /// naming them is told so) and no namespace labels; readiness waits for what it can watch.
    Namespace,
}
