//! DynamicRegistration specs as the API server receives them, good and bad, shared by the
//! offline CEL tests and the real API server's.

use serde_json::{Value, json};

/// A resource named `sensors` with `spec`.
pub fn resource(spec: Value) -> Value {
    json!({
        "apiVersion": "iothub.dynreg.io/v1alpha1",
        "kind": "DynamicRegistration",
        "metadata": {"name": "sensors", "namespace": "fleet"},
        "spec": spec,
    })
}

/// Every field set, all valid.
pub fn good_spec() -> Value {
    json!({
        "productId": "ABCDE12345",
        "region": "ap-guangzhou",
        "registerType": "AutoCreate",
        "registerLimit": 10000,
        "credentialsSecretRef": {"name": "tencent-credentials"},
        "secretName": "sensors-product-secret",
    })
}

/// One bad value at a time, and the message that must name the problem.
pub fn bad_values() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "registerLimit",
            json!(-1),
            "registerLimit must be 0 or more",
        ),
        ("productId", json!(""), "productId must not be empty"),
        ("region", json!(""), "region must not be empty"),
        (
            "region",
            json!("Guangzhou"),
            "region must look like ap-guangzhou",
        ),
        (
            "secretName",
            json!("Not_A_Name"),
            "secretName must be a valid Secret name",
        ),
        (
            "credentialsSecretRef",
            json!({"name": "../other"}),
            "credentialsSecretRef.name must be a valid Secret name",
        ),
        (
            "secretTemplate",
            json!({"data": {"bad key!": "{{ productSecret }}"}}),
            "secretTemplate.data keys must be valid Secret keys",
        ),
        // Secrets Kubernetes fills in or trusts: the controller's Secret rights would mint a
        // service account's token for a tenant who may not write Secrets.
        (
            "secretTemplate",
            json!({"type": "kubernetes.io/service-account-token",
                   "metadata": {"annotations": {"example.com/note": "x"}}}),
            "secretTemplate.type kubernetes.io/service-account-token and bootstrap.kubernetes.io/token are refused",
        ),
        (
            "secretTemplate",
            json!({"type": "bootstrap.kubernetes.io/token"}),
            "secretTemplate.type kubernetes.io/service-account-token and bootstrap.kubernetes.io/token are refused",
        ),
        (
            "secretTemplate",
            json!({"metadata": {"annotations": {"kubernetes.io/service-account.name": "default"}}}),
            "secretTemplate.metadata.annotations: keys in the kubernetes.io and k8s.io domains are reserved",
        ),
        (
            "secretTemplate",
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
            "secretTemplate.metadata.labels: keys in the kubernetes.io and k8s.io domains are reserved",
        ),
        (
            "secretTemplate",
            json!({"metadata": {"labels": {"k8s.io/x": "y"}}}),
            "secretTemplate.metadata.labels: keys in the kubernetes.io and k8s.io domains are reserved",
        ),
    ]
}

/// Templates the schema keeps: built-in types Kubernetes does not fill in, a type of one's own,
/// the recommended `app.kubernetes.io/` labels.
pub fn good_templates() -> Vec<Value> {
    vec![
        json!({"type": "kubernetes.io/basic-auth",
               "data": {"username": "{{ productId }}", "password": "{{ productSecret }}"}}),
        json!({"type": "example.com/product",
               "metadata": {"labels": {"app.kubernetes.io/name": "sensors",
                                       "app.kubernetes.io/part-of": "fleet"},
                            "annotations": {"example.com/kubernetes.io": "kept"}}}),
    ]
}
