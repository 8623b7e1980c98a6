//! Offline validation of a DynamicRegistration, as the API server would validate it on
//! `kubectl apply`: unknown fields (kubectl's default strict field validation), defaults, the
//! structural schema, then the CEL rules, all read from the CRD this binary generates (the one in
//! `crds/`), with the server's messages. Only creation is judged: rules comparing with the stored
//! object (`oldSelf`, e.g. productId is immutable) need the cluster.

use serde_json::{Map, Value};

use crate::controller::resources::{self, DynamicRegistration};
// A resource's name follows the rule of a Secret's: a DNS-1123 subdomain.
use crate::controller::decision::secrets::is_valid_secret_name;

/// One refusal, as the server words it: `spec.registerLimit: Invalid value: ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field, e.g. `spec.registerLimit`; empty when the object as a whole is refused.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The CRD's schema, compiled once for many objects.
pub struct Validator {
    version: String,
    schema: Value,
    compiled: kube::core::cel::CompiledSchema,
    cel: kube::core::cel::Validator,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// The schema of the CRD in `crds/`.
    pub fn new() -> Self {
        let definition = resources::definition();
        let version = &definition.spec.versions[0];
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .and_then(|schema| schema.open_api_v3_schema.as_ref())
                .expect("the derived CRD has a schema"),
        )
        .expect("a schema serialises");
        let compiled = kube::core::cel::compile_schema(&schema);
        Self {
            version: format!("{}/{}", definition.spec.group, version.name),
            schema,
            compiled,
            cel: kube::core::cel::Validator::new(),
        }
    }

    /// The typed resource with the server's defaults, or every refusal the server would give.
    pub fn validate(&self, object: &Value) -> Result<DynamicRegistration, Vec<Violation>> {
        if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str)
            && api_version != self.version
        {
            return Err(vec![Violation {
                field: "apiVersion".to_owned(),
                message: format!(
                    "no matches for kind \"DynamicRegistration\" in version \"{api_version}\" (served: {})",
                    self.version
                ),
            }]);
        }
        let mut unknown = Vec::new();
        unknown_fields(&self.schema, object, "", &mut unknown);
        if !unknown.is_empty() {
            // kubectl asks for strict field validation: the server refuses before validating.
            let fields: Vec<String> = unknown
                .iter()
                .map(|path| format!("unknown field \"{path}\""))
                .collect();
            return Err(vec![Violation {
                field: String::new(),
                message: format!("strict decoding error: {}", fields.join(", ")),
            }]);
        }
        let object = kube::core::cel::apply_defaults(&self.schema, object);
        let mut violations = metadata_violations(&object);
        structural(&self.schema, &object, "", &mut violations);
        if violations.is_empty() {
            let mut cel = self.cel_violations(&object);
            // The CEL validator's order varies from run to run; the server lists by field.
            cel.sort_by(|a, b| a.field.cmp(&b.field));
            violations.extend(cel);
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        serde_json::from_value(object).map_err(|error| {
            vec![Violation {
                field: "spec".to_owned(),
                message: format!("cannot be read: {error}"),
            }]
        })
    }

    fn cel_violations(&self, object: &Value) -> Vec<Violation> {
        let Err(errors) = self.cel.validate_compiled(&self.compiled, object, None) else {
            return Vec::new();
        };
        errors
            .iter()
            // Transition rules have no old object on creation; the server skips them too.
            .filter(|error| !error.rule.contains("oldSelf"))
            .map(|error| Violation {
                field: error.field_path.clone(),
                message: match shown_value(object, &error.field_path) {
                    Some(value) => format!("Invalid value: {value}: {}", error.message),
                    None => format!("Invalid value: {}", error.message),
                },
            })
            .collect()
    }
}

/// The value at `path` as the server shows it in a refusal: a scalar as written; an object or a
/// list not at all (the API server, 1.36 here, leaves a composite value out of the message).
fn shown_value(object: &Value, path: &str) -> Option<String> {
    let value = path
        .split('.')
        .filter(|part| !part.is_empty())
        .try_fold(object, |node, part| node.get(part));
    match value {
        Some(Value::Object(_) | Value::Array(_)) | None => None,
        Some(scalar) => Some(scalar.to_string()),
    }
}

/// The schema type of the field at `path`.
fn type_at<'a>(schema: &'a Value, path: &str) -> &'a str {
    let mut node = schema;
    for part in path.split('.').filter(|part| !part.is_empty()) {
        match node
            .get("properties")
            .and_then(|properties| properties.get(part))
        {
            Some(child) => node = child,
            None => return "object",
        }
    }
    node.get("type").and_then(Value::as_str).unwrap_or("object")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Fields the schema does not know (metadata is the server's, not the schema's).
fn unknown_fields(schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    let (Some(properties), Value::Object(fields)) =
        (schema.get("properties").and_then(Value::as_object), value)
    else {
        return;
    };
    for (key, field) in fields {
        if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match properties.get(key) {
            Some(child) => unknown_fields(child, field, &join(path, key), found),
            None => found.push(join(path, key)),
        }
    }
}

/// The structural schema's checks: types, required fields, enums, lengths.
fn structural(schema: &Value, value: &Value, path: &str, violations: &mut Vec<Violation>) {
    let mut refuse = |message: String| {
        violations.push(Violation {
            field: path.to_owned(),
            message,
        })
    };
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !path.is_empty() {
            refuse(format!(
                "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                type_at(schema, "")
            ));
        }
        return;
    }
    if let Some(wanted) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, wanted)
    {
        let found = type_name(value);
        refuse(format!(
            "Invalid value: \"{found}\": {path} in body must be of type {wanted}: \"{found}\""
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(Value::to_string).collect();
        refuse(format!(
            "Unsupported value: {value}: supported values: {}",
            supported.join(", ")
        ));
    }
    if let (Some(max), Some(text)) = (
        schema.get("maxLength").and_then(Value::as_u64),
        value.as_str(),
    ) && text.chars().count() as u64 > max
    {
        refuse(format!("Too long: may not be more than {max} bytes"));
    }
    if let Value::Object(fields) = value {
        object_fields(schema, fields, path, violations);
    }
}

fn object_fields(
    schema: &Value,
    fields: &Map<String, Value>,
    path: &str,
    violations: &mut Vec<Violation>,
) {
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(required) {
            violations.push(Violation {
                field: join(path, required),
                message: "Required value".to_owned(),
            });
        }
    }
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, field) in fields {
        if let Some(child) = properties.get(key)
            && !(path.is_empty() && key == "metadata")
        {
            structural(child, field, &join(path, key), violations);
        }
    }
}

fn has_type(value: &Value, wanted: &str) -> bool {
    match wanted {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `metadata.name`: required, and a DNS subdomain as for every object.
fn metadata_violations(object: &Value) -> Vec<Violation> {
    let field = "metadata.name".to_owned();
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        None | Some("") => vec![Violation {
            field,
            message: "Required value: name or generateName is required".to_owned(),
        }],
        Some(name) if !is_valid_secret_name(name) => vec![Violation {
            field,
            message: format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        }],
        Some(_) => Vec::new(),
    }
}
