//! Lets go of credentials Secrets no deletion needs any more: our in-use finalizer comes off a
//! Secret as soon as no resource in its namespace needs it (the resource went, switched to
//! `Orphan`, or names other credentials), and after a restart too: the sweep looks at every
//! Secret carrying the finalizer, not only at the ones this process put it on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::controller::context::Context;
use crate::controller::decision::{CREDENTIALS_IN_USE, secrets};
use crate::controller::index::ResourceKey;
use crate::controller::kube_io;

/// A sweep also runs this often without being woken, to catch what a missed event would leave.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// At most one sweep in this long: status writes of thousands of resources wake it too.
const SWEEP_SPACING: Duration = Duration::from_secs(1);

/// Sweeps whenever `wake` is notified (a resource or a protected Secret changed) and every
/// [`SWEEP_INTERVAL`]; runs until dropped.
pub async fn release_unused_protection(ctx: Arc<Context>, wake: Arc<Notify>) {
    loop {
        ctx.cache_ready().await;
        sweep(&ctx).await;
        tokio::time::sleep(SWEEP_SPACING).await;
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}

async fn sweep(ctx: &Context) {
    for secret in ctx.secrets.with_finalizer(CREDENTIALS_IN_USE) {
        let namespace = secret.namespace.clone().unwrap_or_default();
        let name = secret.name.clone().unwrap_or_default();
        let users = ctx.resources_with(&ResourceKey::Secret(namespace.clone(), name.clone()));
        if secrets::credentials_in_use(&name, users.iter().map(|resource| &**resource)) {
            continue;
        }
        match kube_io::set_secret_finalizer(&ctx.client, &secret, CREDENTIALS_IN_USE, false).await {
            Ok(()) => {
                info!(namespace, secret = %name, "no deletion needs the credentials Secret any more: let go of it")
            }
            Err(error) => {
                warn!(%error, namespace, secret = %name, "could not let go of the credentials Secret; retrying")
            }
        }
    }
}
