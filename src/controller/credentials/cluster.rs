//! Credentials from `ClusterCredentials`: whether they grant the resource's namespace, their
//! source resolved (the Secret read, or the web identity exchanged with STS), and their status
//! kept saying whether the source resolves and the cloud accepted them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tracing::warn;

use super::{Error, secret};
use crate::cloud::web_identity::{
    DEFAULT_DURATION_SECONDS, TKE_TOKEN_FILE, WebIdentity, WebIdentityCredentials,
};
use crate::cloud::{CloudClient, Credentials, ErrorClass};
use crate::controller::cache::Caches;
use crate::controller::decision::Problem;
use crate::controller::decision::cluster_credentials::{self, Acceptance};
use crate::controller::resources::{
    ClusterCredentials, MANAGER, NamespacedSecretRef, WebIdentitySource,
};

/// The web identities in use, and what was last written on each ClusterCredentials' status.
pub struct ClusterAccess {
    cloud: CloudClient,
    /// One provider per ClusterCredentials, replaced when its web identity changes.
    web_identities: Mutex<HashMap<String, (WebIdentitySource, Arc<WebIdentityCredentials>)>>,
    /// The acceptance last written per ClusterCredentials and generation: written again only on
    /// change (the watch may not show our write yet).
    written: Mutex<HashMap<String, (i64, Acceptance)>>,
}

impl ClusterAccess {
    /// Exchanges web identities through `cloud`.
    pub fn new(cloud: CloudClient) -> Self {
        Self {
            cloud,
            web_identities: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials of ClusterCredentials `name` for a resource in `namespace`, or why not.
    pub async fn credentials(
        &self,
        (client, caches): (&Client, &Caches),
        known: &secret::KnownCredentials,
        name: &str,
        namespace: &str,
    ) -> Result<Result<Credentials, Problem>, Error> {
        let declared = match granted(caches, name, namespace) {
            Ok(declared) => declared,
            Err(problem) => return Ok(Err(problem)),
        };
        if let Some(source) = &declared.spec.web_identity {
            return Ok(self.exchanged(caches, name, source).await);
        }
        let Some(reference) = &declared.spec.secret_ref else {
            return Ok(Err(unusable(
                name,
                "no source: set secretRef or webIdentity",
            )));
        };
        from_secret(client, (caches, known), name, reference).await
    }

    /// Temporary credentials exchanged for the web identity `source` declares.
    async fn exchanged(
        &self,
        caches: &Caches,
        name: &str,
        source: &WebIdentitySource,
    ) -> Result<Credentials, Problem> {
        let provider = self
            .provider(caches, name, source)
            .map_err(|detail| unusable(name, &detail))?;
        provider
            .credentials()
            .await
            .map_err(|failure| match failure.class {
                // STS refused, or could not be reached: the cloud's word, as for any call.
                ErrorClass::Auth | ErrorClass::Throttled | ErrorClass::Transient => {
                    Problem::Cloud {
                        class: failure.class,
                        message: failure.message,
                    }
                }
                _ => unusable(name, &failure.message),
            })
    }

    /// The provider of a web identity, kept across reconciles (it holds the credentials and
    /// their refresh), replaced when the source changes.
    fn provider(
        &self,
        caches: &Caches,
        name: &str,
        source: &WebIdentitySource,
    ) -> Result<Arc<WebIdentityCredentials>, String> {
        let mut providers = self
            .web_identities
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Providers of ClusterCredentials that are gone go with them.
        providers.retain(|kept, _| {
            caches
                .cluster_credentials
                .get(&ObjectRef::new(kept))
                .is_some()
        });
        if let Some((known, provider)) = providers.get(name)
            && known == source
        {
            return Ok(provider.clone());
        }
        let identity = web_identity(source, |variable| std::env::var(variable).ok())?;
        let provider = Arc::new(WebIdentityCredentials::new(identity, self.cloud.clone()));
        providers.insert(name.to_owned(), (source.clone(), provider.clone()));
        Ok(provider)
    }

    /// Records on the ClusterCredentials' status what their last use showed, when it differs
    /// from what was written last. Failing to write is logged, never the reconcile's failure.
    pub async fn record(
        &self,
        (client, caches): (&Client, &Caches),
        name: &str,
        acceptance: Acceptance,
    ) {
        let Some(declared) = caches.cluster_credentials.get(&ObjectRef::new(name)) else {
            return;
        };
        let generation = declared.metadata.generation.unwrap_or_default();
        let written_already = {
            let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            written.get(name) == Some(&(generation, acceptance.clone()))
        };
        if written_already
            || cluster_credentials::says(declared.status.as_ref(), generation, &acceptance)
        {
            return;
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = cluster_credentials::status(&declared.spec, generation, &acceptance, &now);
        let patch = serde_json::json!({
            "apiVersion": "iothub.dynreg.io/v1alpha1",
            "kind": "ClusterCredentials",
            "status": status,
        });
        let api: Api<ClusterCredentials> = Api::all(client.clone());
        let params = PatchParams::apply(MANAGER).force();
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {
                self.written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned(), (generation, acceptance));
            }
            Err(error) => warn!(clustercredentials = name, %error, "cannot write the status"),
        }
    }
}

/// ClusterCredentials `name`, if they exist and grant `namespace` (by name or by its labels).
fn granted(
    caches: &Caches,
    name: &str,
    namespace: &str,
) -> Result<Arc<ClusterCredentials>, Problem> {
    let Some(declared) = caches.cluster_credentials.get(&ObjectRef::new(name)) else {
        return Err(Problem::ClusterCredentialsMissing {
            name: name.to_owned(),
        });
    };
    let labels = caches
        .namespaces
        .get(&ObjectRef::new(namespace))
        .map(|found| found.labels().clone())
        .unwrap_or_default();
    if !declared.spec.allows(namespace, &labels) {
        return Err(Problem::ClusterCredentialsNotAllowed {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        });
    }
    Ok(declared)
}

/// The credentials in the Secret a ClusterCredentials' `secretRef` names.
async fn from_secret(
    client: &Client,
    (caches, known): (&Caches, &secret::KnownCredentials),
    name: &str,
    reference: &NamespacedSecretRef,
) -> Result<Result<Credentials, Problem>, Error> {
    let found = secret::read(
        client,
        (&caches.secrets, known),
        &reference.namespace,
        &reference.name,
    )
    .await?;
    let shown = format!("{}/{}", reference.namespace, reference.name);
    let Some((_, read)) = found else {
        return Ok(Err(unusable(name, &format!("Secret {shown} not found"))));
    };
    Ok(read.map_err(|problem| match problem {
        Problem::CredentialsInvalid { detail, .. } => {
            unusable(name, &format!("Secret {shown}: {detail}"))
        }
        other => other,
    }))
}

fn unusable(name: &str, detail: &str) -> Problem {
    Problem::ClusterCredentialsUnusable {
        name: name.to_owned(),
        detail: detail.to_owned(),
    }
}

/// The web identity a source declares, with the controller's TKE variables for what it leaves
/// out; what neither names is an error saying which field to set.
pub fn web_identity(
    source: &WebIdentitySource,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<WebIdentity, String> {
    let pick = |declared: &Option<String>, variable: &str, field: &str| {
        declared
            .clone()
            .or_else(|| environment(variable))
            .filter(|value| !value.trim().is_empty())
            .ok_or_else(|| {
                format!("webIdentity.{field} is not set and the controller has no {variable}")
            })
    };
    let token_file = source
        .token_file
        .clone()
        .or_else(|| environment("TKE_WEB_IDENTITY_TOKEN_FILE"))
        .unwrap_or_else(|| TKE_TOKEN_FILE.to_owned());
    Ok(WebIdentity {
        role_arn: pick(&source.role_arn, "TKE_ROLE_ARN", "roleArn")?,
        provider_id: pick(&source.provider_id, "TKE_PROVIDER_ID", "providerId")?,
        region: pick(&source.region, "TKE_REGION", "region")?,
        token_file: PathBuf::from(token_file),
        session_name: source
            .session_name
            .clone()
            .unwrap_or_else(|| "iothub-dynreg".to_owned()),
        duration_seconds: source.duration_seconds.unwrap_or(DEFAULT_DURATION_SECONDS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_web_identity_takes_what_it_leaves_out_from_the_controllers_tke_variables() {
        let tke = |variable: &str| match variable {
            "TKE_ROLE_ARN" => Some("qcs::cam::uin/1:roleName/own".to_owned()),
            "TKE_PROVIDER_ID" => Some("cls-oidc".to_owned()),
            "TKE_REGION" => Some("ap-shanghai".to_owned()),
            _ => None,
        };
        let own = web_identity(&WebIdentitySource::default(), tke).unwrap();
        assert_eq!(own.role_arn, "qcs::cam::uin/1:roleName/own");
        assert_eq!(own.token_file, PathBuf::from(TKE_TOKEN_FILE));
        let declared = WebIdentitySource {
            role_arn: Some("qcs::cam::uin/1:roleName/team".to_owned()),
            region: Some("ap-guangzhou".to_owned()),
            ..WebIdentitySource::default()
        };
        let team = web_identity(&declared, tke).unwrap();
        assert_eq!(
            (
                team.role_arn.as_str(),
                team.provider_id.as_str(),
                team.region.as_str()
            ),
            ("qcs::cam::uin/1:roleName/team", "cls-oidc", "ap-guangzhou")
        );
        let error = web_identity(&declared, |_| None).unwrap_err();
        assert_eq!(
            error,
            "webIdentity.providerId is not set and the controller has no TKE_PROVIDER_ID"
        );
    }
}
