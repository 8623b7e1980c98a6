//! One reconcile of a `DynamicRegistration`, a step a file: [`sync`] for a live resource
//! ([`gather`] → decide with the pure `decision` functions → [`act`] on the cloud and
//! [`publish`] the Secret → [`record`] the status), [`finalize`] for one being deleted. What
//! every reconcile shares is the [`Context`]; a step that fails on the Kubernetes API returns an
//! [`Error`] naming it (verdicts about the cloud are recorded, never errors).

mod act;
mod context;
mod error;
pub mod events;
mod finalize;
mod gather;
mod publish;
mod record;
mod sync;

use kube::ResourceExt;
use tracing::{Instrument, info_span};

use crate::controller::decision::Progress;
use crate::controller::resources::DynamicRegistration;

pub use context::{Context, Renders};
pub use error::{Error, Result};

/// Reconciles `resource` once, logged under its name and measured: where it stands after, or
/// `None` once a deleted resource has been let go.
pub async fn reconcile(resource: &DynamicRegistration, ctx: &Context) -> Result<Option<Progress>> {
    let namespace = resource
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let span = info_span!(
        "reconcile",
        namespace = %namespace,
        name = %resource.name_any(),
        service = ?resource.spec.service,
        product_id = %resource.spec.product_id,
    );
    async move {
        let started = tokio::time::Instant::now();
        let outcome = reconcile_once(resource, ctx, &namespace).await;
        let result = match &outcome {
            Ok(progress) => progress.unwrap_or(Progress::Settled).metric_label(),
            Err(_) => "error",
        };
        ctx.metrics.reconciled(result, started.elapsed());
        outcome
    }
    .instrument(span)
    .await
}

async fn reconcile_once(
    resource: &DynamicRegistration,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Progress>> {
    // Conflict detection needs every resource in view, not a half-listed cache.
    ctx.caches.wait_until_listed().await;
    if resource.metadata.deletion_timestamp.is_some() {
        return finalize::finalize(resource, ctx, namespace).await;
    }
    finalize::keep_finalizer_in_line(resource, ctx).await?;
    sync::sync(resource, ctx, namespace).await.map(Some)
}
