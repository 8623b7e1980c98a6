//! Which cloud credentials a resource uses, in one entry point ([`Resolver::resolve`]): the
//! Secret of its namespace it names ([`secret`]), ClusterCredentials that grant its namespace
//! ([`cluster`]: a Secret anywhere, or a web identity exchanged with STS), or the controller's
//! own where the administrator allows them ([`default`]); then the gate ([`gate`]), which backs off
//! credentials the cloud refused. A credentials Secret that a deletion will need is protected
//! with our finalizer, put on and taken off in [`protection`].

pub mod cluster;
pub mod default;
mod gate;
mod protection;
mod retries;
pub mod secret;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::warn;

use crate::cloud::{CloudClient, Credentials, ErrorClass};
use crate::controller::cache::Caches;
use crate::controller::decision::Problem;
use crate::controller::decision::cluster_credentials::Acceptance;
use crate::controller::decision::secrets::is_valid_secret_name;
use crate::controller::resources::DynamicRegistration;
use crate::ops::metrics::Metrics;

pub use default::{DefaultCredentials, NamespaceAllowList};
pub use gate::{CredentialGate, Probe};
pub use protection::SecretName;

/// The Kubernetes API failed while credentials were looked up; the reconcile is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a credentials Secret failed.
    #[error("cannot read the credentials Secret {secret}: {source}")]
    ReadSecret {
        /// `namespace/name`.
        secret: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// Putting our in-use finalizer on a credentials Secret failed.
    #[error("cannot protect the credentials Secret {secret} with our in-use finalizer: {source}")]
    Protect {
        /// Its name.
        secret: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
}

/// The controller's own credentials, and who may use them; whether ClusterCredentials can be.
#[derive(Clone, Debug)]
pub struct Grants {
    /// The controller's own credentials (`TENCENTCLOUD_*`, or TKE's web identity).
    pub default: Option<DefaultCredentials>,
    /// Namespaces allowed to use them (none by default).
    pub default_namespaces: NamespaceAllowList,
    /// ClusterCredentials are read (an install for the cluster; one for a namespace cannot).
    pub cluster_credentials: bool,
}

impl Default for Grants {
    /// No default credentials; ClusterCredentials available.
    fn default() -> Self {
        Self {
            default: None,
            default_namespaces: NamespaceAllowList::None,
            cluster_credentials: true,
        }
    }
}

/// Resolves the credentials of resources; shared by every reconcile.
pub struct Resolver {
    client: Client,
    caches: Arc<Caches>,
    default: Option<DefaultCredentials>,
    default_namespaces: NamespaceAllowList,
    cluster_credentials: bool,
    gate: CredentialGate,
    known: secret::KnownCredentials,
    cluster: cluster::ClusterAccess,
    /// Our in-use finalizer (each shard has its own).
    in_use_finalizer: String,
}

/// Credentials cleared for use, with the probe to hold while the cloud has not accepted them.
pub struct Usable {
    /// The credentials.
    pub credentials: Credentials,
    _probe: Probe,
}

impl Resolver {
    /// Reads Secrets through `client` when `caches` show a version not read yet; exchanges web
    /// identities through `cloud`; credentials the cloud refused back off for `backoff` (unless they
    /// change); credentials Secrets a deletion needs carry `in_use_finalizer`.
    pub fn new(
        (client, caches): (Client, Arc<Caches>),
        cloud: CloudClient,
        grants: Grants,
        (rest, in_use_finalizer): (Duration, String),
    ) -> Self {
        Self {
            client,
            caches,
            default: grants.default,
            default_namespaces: grants.default_namespaces,
            cluster_credentials: grants.cluster_credentials,
            gate: CredentialGate::new(rest),
            known: secret::KnownCredentials::default(),
            cluster: cluster::ClusterAccess::new(cloud),
            in_use_finalizer,
        }
    }

    /// The credentials `resource` may use now, or why it may not call the cloud: none named or
    /// granted, unusable, or in backoff after a refusal. Unverified credentials are probed by one
    /// caller at a time: hold the [`Usable`] for the whole call.
    pub async fn resolve(
        &self,
        resource: &DynamicRegistration,
    ) -> Result<Result<Usable, Problem>, Error> {
        let credentials = match self.named(resource).await? {
            Ok(credentials) => credentials,
            Err(problem) => return Ok(Err(problem)),
        };
        Ok(self.gate.admit(&credentials).await.map(|probe| Usable {
            credentials,
            _probe: probe,
        }))
    }

    /// The credentials `resource` names (or the controller's own where allowed). A credentials
    /// Secret its deletion will need is protected with our in-use finalizer.
    async fn named(
        &self,
        resource: &DynamicRegistration,
    ) -> Result<Result<Credentials, Problem>, Error> {
        let namespace = resource.namespace().unwrap_or_default();
        if let Some(reference) = &resource.spec.cluster_credentials_ref {
            if !self.cluster_credentials {
                return Ok(Err(Problem::ClusterCredentialsUnavailable {
                    name: reference.name.clone(),
                    namespace,
                }));
            }
            let kube = (&self.client, &*self.caches);
            return self
                .cluster
                .credentials(kube, &self.known, &reference.name, &namespace)
                .await;
        }
        let Some(reference) = &resource.spec.credentials_secret_ref else {
            return Ok(self.default_for(&namespace).await);
        };
        if !is_valid_secret_name(&reference.name) {
            return Ok(Err(Problem::CredentialsInvalid {
                secret: reference.name.clone(),
                detail: "not a valid Secret name".to_owned(),
            }));
        }
        let cache = (&*self.caches.secrets, &self.known);
        let found = secret::read(&self.client, cache, &namespace, &reference.name).await?;
        let Some((metadata, read)) = found else {
            return Ok(Err(Problem::CredentialsMissing {
                secret: reference.name.clone(),
            }));
        };
        let protecting = (resource, self.in_use_finalizer.as_str());
        if let Some(problem) = protection::protect(&self.client, protecting, &metadata).await? {
            return Ok(Err(problem));
        }
        Ok(read)
    }

    /// The controller's own credentials, if configured and allowed for `namespace`.
    async fn default_for(&self, namespace: &str) -> Result<Credentials, Problem> {
        match &self.default {
            Some(default) if self.default_namespaces.allows(namespace) => default.current().await,
            _ => Err(Problem::CredentialsNotAllowed {
                namespace: namespace.to_owned(),
            }),
        }
    }

    /// Takes in what the cloud answered to a call made with `credentials` (`None`: success).
    /// Credentials it refused back off; any answer in which it authenticated the key and judged the
    /// request (success, or a refusal about the product or the action) shows the key is good.
    pub fn judged(&self, credentials: &Credentials, error: Option<(ErrorClass, &str)>) {
        match error {
            None
            | Some((
                ErrorClass::NotFound
                | ErrorClass::Forbidden
                | ErrorClass::Unsupported
                | ErrorClass::Invalid,
                _,
            )) => self.gate.accepted(credentials),
            Some((ErrorClass::Auth | ErrorClass::Account, code)) => {
                warn!(secret_id = %credentials.secret_id, code, "the cloud refused the credentials or their account; backing off");
                self.gate.refused(credentials, code);
            }
            // A clock that is off is the node's problem: the key stays in use.
            Some((
                ErrorClass::Throttled
                | ErrorClass::Transient
                | ErrorClass::Unknown
                | ErrorClass::ClockSkew,
                _,
            )) => {}
        }
    }

    /// Tells ClusterCredentials `name` what a reconcile learnt of them (their status).
    pub async fn record_cluster_credentials(&self, name: &str, acceptance: Acceptance) {
        let kube = (&self.client, &*self.caches);
        self.cluster.record(kube, name, acceptance).await;
    }

    /// How many sets of credentials the cloud refused are in backoff now.
    pub fn backing_off(&self) -> usize {
        self.gate.backing_off()
    }

    /// Our in-use finalizer.
    pub fn in_use_finalizer(&self) -> &str {
        &self.in_use_finalizer
    }

    /// Takes our in-use finalizer off the credentials Secrets no deletion needs any more,
    /// whenever `wake` is notified, every half minute, and as resources stop needing them
    /// (`released`); runs until dropped.
    pub async fn release_unused_protection(
        &self,
        wake: &Notify,
        released: UnboundedReceiver<SecretName>,
        (beyond_view, metrics): (Option<Api<Secret>>, &Metrics),
    ) {
        let sweep = protection::Sweep {
            client: self.client.clone(),
            caches: &self.caches,
            finalizer: &self.in_use_finalizer,
            beyond_view,
            metrics,
        };
        protection::release_unused(sweep, wake, released).await;
    }
}
