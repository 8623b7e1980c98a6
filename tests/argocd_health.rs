//! deploy/argocd-health.lua under Lua 5.1 (the dialect of Argo CD's gopher-lua), against the
//! statuses the controller writes.

use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::{Value, json};

fn health(object: Value) -> (String, String) {
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/argocd-health.lua"
    ))
    .unwrap();
    let lua = Lua::new();
    lua.globals()
        .set("obj", lua.to_value(&object).unwrap())
        .unwrap();
    let result: Table = lua.load(&script).eval().unwrap();
    (
        result.get("status").unwrap(),
        result.get("message").unwrap(),
    )
}

fn resource(generation: i64, observed: i64, conditions: Value) -> Value {
    json!({
        "apiVersion": "iothub.dynreg.io/v1alpha1", "kind": "DynamicRegistration",
        "metadata": {"name": "sensors", "namespace": "fleet", "generation": generation},
        "spec": {"productId": "ABCDE12345", "region": "ap-guangzhou", "registerType": "AutoCreate", "registerLimit": 10},
        "status": {"observedGeneration": observed, "conditions": conditions}
    })
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": format!("{reason} message"), "lastTransitionTime": "2026-11-28T00:00:00Z"})
}

#[test]
fn maps_kstatus_conditions_to_argo_health() {
    let cases = [
        (
            resource(2, 2, json!([condition("Ready", "True", "InSync")])),
            "Healthy",
        ),
        (
            resource(3, 2, json!([condition("Ready", "True", "InSync")])),
            "Progressing",
        ),
        (
            resource(
                1,
                1,
                json!([
                    condition("Ready", "False", "CloudUnavailable"),
                    condition("Reconciling", "True", "CloudUnavailable")
                ]),
            ),
            "Progressing",
        ),
        (
            resource(
                1,
                1,
                json!([
                    condition("Ready", "False", "ProductNotFound"),
                    condition("Stalled", "True", "ProductNotFound")
                ]),
            ),
            "Degraded",
        ),
        (
            resource(
                1,
                1,
                json!([
                    condition("Ready", "True", "Observed"),
                    condition("Drifted", "True", "Drifted")
                ]),
            ),
            "Healthy",
        ),
        (
            resource(1, 1, json!([condition("Ready", "False", "Something")])),
            "Progressing",
        ),
        (
            json!({"metadata": {"name": "new", "generation": 1}, "spec": {}}),
            "Progressing",
        ),
    ];
    for (object, expected) in cases {
        let (status, message) = health(object.clone());
        assert_eq!(status, expected, "{object}: {message}");
    }
    let mut suspended = resource(
        1,
        1,
        json!([
            condition("Ready", "True", "InSync"),
            condition("Suspended", "True", "Suspended")
        ]),
    );
    suspended["spec"]["suspend"] = json!(true);
    assert_eq!(health(suspended).0, "Suspended");
    let (_, message) = health(resource(
        1,
        1,
        json!([
            condition("Ready", "True", "Observed"),
            condition("Drifted", "True", "Drifted")
        ]),
    ));
    assert!(message.contains("Drifted: Drifted message"), "{message}");
    let (_, message) = health(resource(
        1,
        1,
        json!([
            condition("Ready", "False", "ProductNotFound"),
            condition("Stalled", "True", "ProductNotFound")
        ]),
    ));
    assert_eq!(message, "ProductNotFound: ProductNotFound message");
}
