//! The custom resources: `DynamicRegistration` (namespaced: one product's settings and its
//! published Secret) and `ClusterCredentials` (cluster-scoped: credentials a platform team grants
//! to namespaces), with their schemas as the API server checks them.

mod cluster_credentials;
mod dynamic_registration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use cluster_credentials::{
    ClusterCredentials, ClusterCredentialsSpec, ClusterCredentialsStatus, NamespacedSecretRef,
    WebIdentitySource,
};
pub use dynamic_registration::{
    CloudSettings, ClusterCredentialsReference, CredentialsSource, DeletionPolicy,
    DynamicRegistration, DynamicRegistrationSpec, DynamicRegistrationStatus, FINALIZER, MANAGER,
    ManagementPolicy, ProductService, REQUESTED_AT, RegistrationMode, SecretReference,
    SecretRetention, SecretTemplate, SecretTemplateMetadata,
};

/// The DynamicRegistration CRD as installed: the derived one with every description reflowed
/// into paragraphs. Doc comments break lines at 100 columns, and `kubectl explain` wraps text
/// again but keeps those breaks, which would cut sentences in two.
pub fn definition() -> CustomResourceDefinition {
    reflowed(DynamicRegistration::crd())
}

/// Every CRD of the controller, as installed (`crds/`, `iothub-dynreg crd`).
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![definition(), reflowed(ClusterCredentials::crd())]
}

fn reflowed(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(crd).expect("a derived CRD always serialises");
    reflow_descriptions(&mut crd);
    serde_json::from_value(crd).expect("reflowing text keeps the CRD valid")
}

fn reflow_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                match field {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = reflow(text);
                    }
                    _ => reflow_descriptions(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

/// Joins the lines of each paragraph; paragraphs stay apart.
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_reflowed_into_paragraphs() {
        assert_eq!(reflow("one\ntwo  three\n\nfour\n"), "one two three\n\nfour");
        let crd = serde_json::to_value(definition()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let text = spec["properties"]["productId"]["description"]
            .as_str()
            .unwrap();
        assert!(!text.contains('\n'), "{text}");
    }
}
