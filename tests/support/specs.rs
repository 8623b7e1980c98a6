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
    ]
}
