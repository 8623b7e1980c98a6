//! Credentials from `ClusterCredentials`: whether they select the resource's namespace, their
//! source resolved (the Secret read, or the web identity exchanged with STS), and their status
//! kept saying whether the source resolves and the cloud accepted them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::warn;

use crate::cloud::web_identity::{
    DEFAULT_DURATION_SECONDS, TKE_TOKEN_FILE, WebIdentity, WebIdentityCredentials,
};
use crate::cloud::{CloudClient, Credentials, ErrorClass};
use crate::controller::cluster_credentials::{
    ClusterCredentials, ClusterCredentialsStatus, WebIdentitySource,
};
use crate::controller::crd::MANAGER;
use crate::controller::decision::Problem;
use crate::controller::kube_io;
use crate::controller::read_cache::KnownCredentials;
use crate::controller::secret_cache::SecretCache;

/// The ClusterCredentials and namespaces in view, and the web identities in use.
pub struct ClusterAccess {
    credentials: Store<ClusterCredentials>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    cloud: CloudClient,
    /// One provider per ClusterCredentials, replaced when its web identity changes.
    web_identities: Mutex<HashMap<String, (WebIdentitySource, Arc<WebIdentityCredentials>)>>,
    /// The Ready condition last written per ClusterCredentials: written again only on change.
    written: Mutex<HashMap<String, (i64, bool, String)>>,
}

/// What a reconcile learnt of the ClusterCredentials it used.
pub enum Outcome<'a> {
    /// The cloud answered a call made with them.
    Accepted,
    /// Their source gave no credentials, or the cloud refused them.
    Refused {
        reason: &'static str,
        message: &'a str,
    },
}

impl ClusterAccess {
    /// Reads from these caches.
    pub fn new(
        credentials: Store<ClusterCredentials>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        cloud: CloudClient,
    ) -> Self {
        Self {
            credentials,
            namespaces,
            cloud,
            web_identities: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials of ClusterCredentials `name` for a resource in `namespace`, or why not.
    pub async fn credentials(
        &self,
        client: &Client,
        (cache, known): (&SecretCache, &KnownCredentials),
        name: &str,
        namespace: &str,
    ) -> crate::controller::error::Result<Result<Credentials, Problem>> {
        let Some(declared) = self.credentials.get(&ObjectRef::new(name)) else {
            return Ok(Err(Problem::ClusterCredentialsMissing {
                name: name.to_owned(),
            }));
        };
        let labels = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .map(|found| found.labels().clone())
            .unwrap_or_default();
        if !declared.spec.allows(namespace, &labels) {
            return Ok(Err(Problem::ClusterCredentialsNotAllowed {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            }));
        }
        let unusable = |detail: String| Problem::ClusterCredentialsUnusable {
            name: name.to_owned(),
            detail,
        };
        if let Some(source) = &declared.spec.web_identity {
            let provider = match self.provider(name, source) {
                Ok(provider) => provider,
                Err(detail) => return Ok(Err(unusable(detail))),
            };
            return Ok(provider
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
                    _ => unusable(failure.message),
                }));
        }
        let Some(reference) = &declared.spec.secret_ref else {
            return Ok(Err(unusable(
                "no source: set secretRef or webIdentity".to_owned(),
            )));
        };
        let found = kube_io::credentials_secret(
            client,
            cache,
            known,
            &reference.namespace,
            &reference.name,
        )
        .await?;
        let shown = format!("{}/{}", reference.namespace, reference.name);
        let Some((_, read)) = found else {
            return Ok(Err(unusable(format!("Secret {shown} not found"))));
        };
        Ok(read.map_err(|problem| match problem {
            Problem::CredentialsInvalid { detail, .. } => {
                unusable(format!("Secret {shown}: {detail}"))
            }
            other => other,
        }))
    }

    /// The provider of a web identity, kept across reconciles (it holds the credentials and
    /// their refresh), replaced when the source changes.
    fn provider(
        &self,
        name: &str,
        source: &WebIdentitySource,
    ) -> Result<Arc<WebIdentityCredentials>, String> {
        let mut providers = self
            .web_identities
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Providers of ClusterCredentials that are gone go with them.
        providers.retain(|kept, _| self.credentials.get(&ObjectRef::new(kept)).is_some());
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
    pub async fn record(&self, client: &Client, name: &str, outcome: Outcome<'_>) {
        let Some(declared) = self.credentials.get(&ObjectRef::new(name)) else {
            return;
        };
        let generation = declared.metadata.generation.unwrap_or_default();
        let (ready, reason, message) = match outcome {
            Outcome::Accepted => (
                true,
                "Accepted",
                "the source resolves and the cloud accepted the credentials on their last use",
            ),
            Outcome::Refused { reason, message } => (false, reason, message),
        };
        {
            let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            let current = declared
                .status
                .as_ref()
                .and_then(|status| status.conditions.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|condition| {
                    condition.reason == reason
                        && (condition.status == "True") == ready
                        && condition.observed_generation == Some(generation)
                });
            if current || written.get(name) == Some(&(generation, ready, reason.to_owned())) {
                return;
            }
        }
        let status = ClusterCredentialsStatus {
            conditions: vec![Condition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
                observed_generation: Some(generation),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
            }],
            source: Some(declared.spec.source_kind().to_owned()),
            observed_generation: Some(generation),
        };
        let patch = serde_json::json!({
            "apiVersion": "iothub.dynreg.io/v1alpha1",
            "kind": "ClusterCredentials",
            "status": status,
        });
        let api: Api<ClusterCredentials> = Api::all(client.clone());
        match api
            .patch_status(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                self.written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned(), (generation, ready, reason.to_owned()));
            }
            Err(error) => warn!(clustercredentials = name, %error, "cannot write the status"),
        }
    }
}

/// The web identity a source declares, with the controller's TKE variables for what it leaves
/// out; what neither names is an error saying which field to set.
fn web_identity(
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
