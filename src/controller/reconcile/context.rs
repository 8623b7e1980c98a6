//! What every reconcile shares: the clients, the caches, the credentials resolver, and where to
//! report (Events, metrics, claim changes). Policy (who wins a claim, when to reconcile again)
//! lives in `decision`; queues and backoff in `runtime`.

use std::sync::Arc;

use kube::Client;
use tokio::sync::mpsc::UnboundedSender;

use super::events::EventPublisher;
use crate::cloud::CloudClient;
use crate::cloud::observe::Observer;
use crate::controller::cache::Caches;
use crate::controller::credentials::Resolver;
use crate::controller::resources::DynamicRegistration;
use crate::ops::metrics::Metrics;

/// Shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Tencent Cloud client (rate-limited, retrying), for updates.
    pub cloud: CloudClient,
    /// Shared snapshots of the cloud's products, for reads.
    pub observer: Observer,
    /// What the watches know, and the Secret versions we wrote or read.
    pub caches: Arc<Caches>,
    /// The credentials each resource may use.
    pub credentials: Resolver,
    /// Publishes Events.
    pub events: EventPublisher,
    /// The label keys whose values a published Secret takes from its resource (a shard's
    /// selector: the shard's Secret watch must see the Secret).
    pub inherited_labels: Vec<String>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where a resource whose claim changed is announced (it now reaches its product, or no
    /// longer does), so that the other claimants of the product reconcile at once.
    pub claim_changes: UnboundedSender<DynamicRegistration>,
}
