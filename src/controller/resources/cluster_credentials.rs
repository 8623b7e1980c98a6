//! The `ClusterCredentials` custom resource (`iothub.dynreg.io/v1alpha1`, cluster-scoped):
//! credentials a platform team declares once and grants to the namespaces it chooses.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::{Selector, SelectorExt};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tencent Cloud credentials for DynamicRegistrations of the namespaces it selects: a Secret
/// holding a key, or a web identity (TKE workload identity) exchanged with STS for temporary
/// credentials. Exactly one source.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "iothub.dynreg.io",
    version = "v1alpha1",
    kind = "ClusterCredentials",
    plural = "clustercredentials",
    status = "ClusterCredentialsStatus",
    derive = "PartialEq",
    doc = "ClusterCredentials declares Tencent Cloud credentials once, for the DynamicRegistrations of the namespaces it selects (spec.clusterCredentialsRef).",
    printcolumn = r#"{"name": "Source", "type": "string", "jsonPath": ".status.source"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.secretRef) != has(self.webIdentity)").message("exactly one source: secretRef or webIdentity")
)]
pub struct ClusterCredentialsSpec {
    /// A Secret with the keys secretId, secretKey and, for temporary credentials, token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NamespacedSecretRef>,

    /// A CAM role assumed with the controller's projected service-account token (TKE workload
    /// identity): STS AssumeRoleWithWebIdentity, refreshed before the credentials expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<WebIdentitySource>,

    /// Namespaces whose labels match may use these credentials. Absent: none by labels; {}
    /// selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces that may use these credentials, by name. With neither this nor
    /// namespaceSelector, nobody may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// A Secret in a namespace of the platform team's choosing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespacedSecretRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A web identity: what it leaves out comes from the variables TKE injects into the
/// controller's pod, so `webIdentity: {}` grants the controller's own pod identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebIdentitySource {
    /// The role to assume, qcs::cam::uin/<uin>:roleName/<name>. Default: TKE_ROLE_ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The OIDC identity provider the role trusts. Default: TKE_PROVIDER_ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Region of the STS call, e.g. ap-guangzhou. Default: TKE_REGION.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The projected token in the controller's pod. Default: TKE_WEB_IDENTITY_TOKEN_FILE, else
    /// /var/run/secrets/tke.cloud.tencent.com/identity/token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Names the session in CloudAudit. Default: iothub-dynreg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Lifetime of the temporary credentials asked for, 900 to 43200 seconds. Default: 7200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 900, max = 43200))]
    pub duration_seconds: Option<u64>,
}

/// What the controller found of these credentials. Never holds a secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialsStatus {
    /// Ready: the source resolves and the cloud accepted the credentials on their last use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `secretRef` or `webIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl ClusterCredentialsSpec {
    /// Whether a namespace with this name and these labels may use the credentials: named in
    /// `namespaces`, or matched by `namespaceSelector`. A selector that cannot be read selects
    /// nobody.
    pub fn allows(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.namespaces.iter().any(|name| name == namespace) {
            return true;
        }
        let Some(selector) = &self.namespace_selector else {
            return false;
        };
        Selector::try_from(selector.clone()).is_ok_and(|selector| selector.matches(labels))
    }

    /// The source's name, for status and messages.
    pub fn source_kind(&self) -> &'static str {
        if self.web_identity.is_some() {
            "webIdentity"
        } else {
            "secretRef"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn spec(selector: Option<LabelSelector>, namespaces: &[&str]) -> ClusterCredentialsSpec {
        ClusterCredentialsSpec {
            secret_ref: Some(NamespacedSecretRef {
                namespace: "platform".to_owned(),
                name: "key".to_owned(),
            }),
            web_identity: None,
            namespace_selector: selector,
            namespaces: namespaces.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn namespaces_are_selected_by_name_or_labels_and_nobody_by_default() {
        let team = labels(&[("team", "sensors")]);
        assert!(
            !spec(None, &[]).allows("fleet", &team),
            "no selector: nobody"
        );
        assert!(spec(None, &["fleet"]).allows("fleet", &BTreeMap::new()));
        let by_label = LabelSelector {
            match_labels: Some(labels(&[("team", "sensors")])),
            ..LabelSelector::default()
        };
        assert!(spec(Some(by_label.clone()), &[]).allows("fleet", &team));
        assert!(!spec(Some(by_label), &[]).allows("fleet", &labels(&[("team", "other")])));
        let expression = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec!["sensors".to_owned(), "gateways".to_owned()]),
            }]),
            ..LabelSelector::default()
        };
        assert!(spec(Some(expression), &[]).allows("x", &team));
        assert!(
            spec(Some(LabelSelector::default()), &[]).allows("any", &BTreeMap::new()),
            "an empty selector selects every namespace, as in Kubernetes"
        );
        let unreadable = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".to_owned(),
                operator: "Sometimes".to_owned(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        assert!(!spec(Some(unreadable), &[]).allows("fleet", &team));
    }
}
