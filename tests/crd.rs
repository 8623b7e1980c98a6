//! The committed CRD matches the code, and its schema and CEL rules accept good resources and
//! reject bad ones with messages a person understands.

mod support;

use std::process::Command;

use iothub_dynreg::controller::resources::DynamicRegistration;
use serde_json::{Value, json};
use support::specs::{bad_values, good_spec, good_templates, resource};

/// One file per CRD in crds/, in the order `iothub-dynreg crd` prints them.
const CRD_FILES: [&str; 2] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/iothub.dynreg.io_dynamicregistrations.yaml"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/iothub.dynreg.io_clustercredentials.yaml"
    ),
];

/// kustomize cannot reach files outside deploy/, so the base carries its own copy of both.
const DEPLOY_CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crd.yaml");

#[test]
fn committed_crds_match_the_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg"))
        .arg("crd")
        .output()
        .expect("run iothub-dynreg crd");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let regenerate = "run `cargo run -- crd > deploy/crd.yaml` and split its documents into crds/";
    assert!(
        printed == std::fs::read_to_string(DEPLOY_CRD_FILE).unwrap(),
        "{DEPLOY_CRD_FILE} is stale: {regenerate}"
    );
    let documents: Vec<&str> = printed.split("---\n").collect();
    assert_eq!(documents.len(), CRD_FILES.len());
    for (document, file) in documents.iter().zip(CRD_FILES) {
        assert!(
            *document == std::fs::read_to_string(file).unwrap(),
            "{file} is stale: {regenerate}"
        );
    }
}

fn schema() -> Value {
    let crd = iothub_dynreg::controller::resources::definition();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// CEL rules of the schema, evaluated as the API server would.
fn cel_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn cel_rules_accept_a_good_resource() {
    assert_eq!(
        cel_errors(&resource(good_spec()), None),
        Vec::<String>::new()
    );
    // The example under examples/ too.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/3-dynamicregistration.yaml"
    ))
    .unwrap()
        + "\n---\n"
        + &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/4-observe-only.yaml"
        ))
        .unwrap();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value =
            serde_json::to_value(serde_yaml::Value::deserialize(document).unwrap()).unwrap();
        if value["kind"] == "DynamicRegistration" {
            assert_eq!(cel_errors(&value, None), Vec::<String>::new());
            serde_json::from_value::<DynamicRegistration>(value).expect("example deserializes");
        }
    }
}

use serde::Deserialize;

#[test]
fn cel_rules_reject_bad_input_with_clear_messages() {
    let cases = bad_values();
    for (field, value, message) in cases {
        let mut spec = good_spec();
        spec[field] = value.clone();
        let errors = cel_errors(&resource(spec), None);
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "{field}={value}: expected {message:?}, got {errors:?}"
        );
    }
}

#[test]
fn cel_rules_keep_templates_kubernetes_does_not_act_on() {
    for template in good_templates() {
        let mut spec = good_spec();
        spec["secretTemplate"] = template.clone();
        assert_eq!(
            cel_errors(&resource(spec), None),
            Vec::<String>::new(),
            "{template}"
        );
    }
}

#[test]
fn desired_values_are_required_unless_observe_only() {
    let mut spec = good_spec();
    spec.as_object_mut().unwrap().remove("registerType");
    let errors = cel_errors(&resource(spec.clone()), None);
    assert!(
        errors.iter().any(|e| e.contains(
            "registerType and registerLimit are required unless managementPolicy is ObserveOnly"
        )),
        "{errors:?}"
    );
    spec.as_object_mut().unwrap().remove("registerLimit");
    spec["managementPolicy"] = json!("ObserveOnly");
    assert_eq!(cel_errors(&resource(spec), None), Vec::<String>::new());
}

#[test]
fn observe_only_cannot_disable_on_deletion() {
    let mut spec = good_spec();
    spec["managementPolicy"] = json!("ObserveOnly");
    spec["deletionPolicy"] = json!("Disable");
    let errors = cel_errors(&resource(spec.clone()), None);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("managementPolicy ObserveOnly never does")),
        "{errors:?}"
    );
    spec["deletionPolicy"] = json!("Orphan");
    assert_eq!(cel_errors(&resource(spec), None), Vec::<String>::new());
}

#[test]
fn product_id_is_immutable() {
    let old = resource(good_spec());
    let mut spec = good_spec();
    spec["productId"] = json!("ZZZZZ99999");
    let errors = cel_errors(&resource(spec), Some(&old));
    assert!(
        errors.iter().any(|e| e.contains("productId is immutable")),
        "{errors:?}"
    );
    // Other fields may change.
    let mut spec = good_spec();
    spec["registerLimit"] = json!(5);
    assert_eq!(
        cel_errors(&resource(spec), Some(&old)),
        Vec::<String>::new()
    );
}

#[test]
fn schema_restricts_types_and_names_required_fields() {
    let schema = schema();
    let spec = &schema["properties"]["spec"];
    assert_eq!(
        spec["properties"]["registerType"]["enum"],
        json!(["Disabled", "PreCreate", "AutoCreate"])
    );
    assert_eq!(
        spec["properties"]["managementPolicy"]["enum"],
        json!(["Full", "ObserveOnly"])
    );
    assert_eq!(
        spec["properties"]["deletionPolicy"]["enum"],
        json!(["Orphan", "Disable"])
    );
    assert_eq!(spec["properties"]["registerLimit"]["type"], "integer");
    let mut required: Vec<_> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(required, ["productId", "region"]);
    // Every field is described, so `kubectl explain` reads well.
    fn walk(path: &str, node: &Value, missing: &mut Vec<String>) {
        if let Some(properties) = node["properties"].as_object() {
            for (name, child) in properties {
                let child_path = format!("{path}.{name}");
                if child["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(child_path.clone());
                }
                walk(&child_path, child, missing);
                walk(&child_path, &child["items"], missing);
            }
        }
    }
    let mut missing = Vec::new();
    walk("", &schema["properties"]["spec"], &mut missing);
    walk("", &schema["properties"]["status"], &mut missing);
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
}
