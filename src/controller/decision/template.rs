//! The published Secret's keys, rendered from `spec.secretTemplate.data` with minijinja: no
//! loader (so no file or network access), strict about undefined names, and bounded: one fuel
//! budget for all the keys of a template (minijinja charges every instruction, and every byte a
//! template makes or writes), and at most [`MAX_DATA_BYTES`] of output in all, checked as it is
//! written. So no template can keep the controller busy, or make it hold more than a few MiB
//! while rendering, however many keys it has. An error never quotes a value: the ProductSecret
//! is one of them.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::controller::resources::{RegistrationMode, SecretTemplate};

/// The work a template may do over all its keys before it is stopped: instructions, plus one
/// for every 64 bytes of data it makes or writes (minijinja's accounting), so 3.2 MB of data at
/// the very most.
const FUEL: u64 = 50_000;

/// The most a Secret's data may hold, its values counted (the API server refuses more).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// What a template may use.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Values<'a> {
    /// The product's ID.
    pub product_id: &'a str,
    /// Its ProductSecret.
    pub product_secret: &'a str,
    /// Its region.
    pub region: &'a str,
    /// The RegisterType the cloud holds, by name.
    pub register_type: RegistrationMode,
    /// The RegisterLimit the cloud holds.
    pub register_limit: i64,
}

fn environment(fuel: u64) -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    // Zero would turn fuel accounting off.
    environment.set_fuel(Some(fuel.max(1)));
    environment
}

/// Secret types the controller never publishes: Kubernetes fills a service account's token
/// into the first and trusts the second to join nodes to the cluster, so a tenant who may only
/// write DynamicRegistrations would get, through the controller's Secret rights, a credential
/// of the cluster.
pub const REFUSED_TYPES: [&str; 2] = [
    "kubernetes.io/service-account-token",
    "bootstrap.kubernetes.io/token",
];

/// Whether a label or annotation key lies in the domains Kubernetes reserves for its own
/// components (`kubernetes.io/`, `k8s.io/` and their subdomains), where a key can change what
/// Kubernetes does with the Secret (`kubernetes.io/service-account.name`). The recommended
/// labels (`app.kubernetes.io/`) are meant for everyone's objects and stay allowed.
pub fn is_reserved_key(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let prefix = prefix.to_ascii_lowercase();
    let reserved = ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|domain| prefix == *domain || prefix.ends_with(&format!(".{domain}")));
    reserved && prefix != "app.kubernetes.io"
}

/// Checks what the template asks of the Secret: a type Kubernetes neither fills in nor trusts,
/// labels and annotations outside its reserved domains, and templates that compile. The
/// message names the field, the key and the line, never a value.
pub fn check(template: &SecretTemplate) -> Result<(), String> {
    if let Some(type_) = &template.type_
        && REFUSED_TYPES.contains(&type_.as_str())
    {
        return Err(format!(
            "secretTemplate.type {type_} is refused: Kubernetes fills in or trusts Secrets of that type; use Opaque or a type of your own"
        ));
    }
    if let Some(metadata) = &template.metadata {
        let fields = [
            ("labels", &metadata.labels),
            ("annotations", &metadata.annotations),
        ];
        for (field, entries) in fields {
            if let Some(key) = entries.keys().find(|key| is_reserved_key(key)) {
                return Err(format!(
                    "secretTemplate.metadata.{field}[{key}] is refused: the kubernetes.io and k8s.io domains are reserved for Kubernetes (app.kubernetes.io is allowed)"
                ));
            }
        }
    }
    let environment = environment(FUEL);
    for (key, source) in &template.data {
        environment
            .template_from_str(source)
            .map_err(|error| describe(key, &error, true))?;
    }
    Ok(())
}

/// The Secret's data: each key rendered, or productId and productSecret without a template.
pub fn render(
    template: Option<&SecretTemplate>,
    values: &Values<'_>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let Some(template) = template.filter(|template| !template.data.is_empty()) else {
        return Ok(BTreeMap::from([
            (
                "productId".to_owned(),
                values.product_id.as_bytes().to_vec(),
            ),
            (
                "productSecret".to_owned(),
                values.product_secret.as_bytes().to_vec(),
            ),
        ]));
    };
    let context = minijinja::Value::from(minijinja::value::Serde(values));
    let mut budget = Budget {
        fuel: FUEL,
        room: MAX_DATA_BYTES,
    };
    let mut data = BTreeMap::new();
    for (key, source) in &template.data {
        let rendered = render_key((key, source), &context, &mut budget)?;
        data.insert(key.clone(), rendered);
    }
    Ok(data)
}

/// What the keys not rendered yet may still use.
struct Budget {
    fuel: u64,
    /// Bytes of output.
    room: usize,
}

/// One key, rendered within what is left of `budget`, which it then uses up.
fn render_key(
    (key, source): (&str, &str),
    context: &minijinja::Value,
    budget: &mut Budget,
) -> Result<Vec<u8>, String> {
    let environment = environment(budget.fuel);
    let compiled = environment
        .template_from_str(source)
        .map_err(|error| describe(key, &error, true))?;
    let mut output = Bounded {
        bytes: Vec::new(),
        room: budget.room,
        overflowed: false,
    };
    let rendered = compiled.render_captured_to(context, &mut output);
    if output.overflowed {
        return Err(format!(
            "secretTemplate.data[{key}]: the data rendered would hold more than {MAX_DATA_BYTES} bytes in all, more than a Secret holds"
        ));
    }
    // A rendering error's detail may quote a value: only its kind and line.
    let captured = rendered.map_err(|error| describe(key, &error, false))?;
    let (consumed, _) = captured.state().fuel_levels().unwrap_or((budget.fuel, 0));
    budget.fuel = budget.fuel.saturating_sub(consumed);
    budget.room -= output.bytes.len();
    Ok(output.bytes)
}

/// Output that refuses to grow past `room` bytes: rendering stops there, before the output
/// exists in memory beyond the bound.
struct Bounded {
    bytes: Vec<u8>,
    room: usize,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buffer.len() > self.room {
            self.overflowed = true;
            return Err(std::io::Error::other("the Secret's data is full"));
        }
        self.bytes.extend_from_slice(buffer);
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn describe(key: &str, error: &minijinja::Error, with_detail: bool) -> String {
    let mut message = format!("secretTemplate.data[{key}]: {}", error.kind());
    if let Some(line) = error.line() {
        message.push_str(&format!(" at line {line}"));
    }
    if with_detail && let Some(detail) = error.detail() {
        message.push_str(&format!(": {detail}"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources::SecretTemplateMetadata;

    const SECRET: &str = "s3cr3t-product-secret";

    fn values() -> Values<'static> {
        Values {
            product_id: "ABCDE12345",
            product_secret: SECRET,
            region: "ap-guangzhou",
            register_type: RegistrationMode::AutoCreate,
            register_limit: 100,
        }
    }

    fn template(pairs: &[(&str, &str)]) -> SecretTemplate {
        SecretTemplate {
            data: pairs
                .iter()
                .map(|(key, source)| ((*key).to_owned(), (*source).to_owned()))
                .collect(),
            ..SecretTemplate::default()
        }
    }

    fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> String {
        String::from_utf8(data[key].clone()).unwrap()
    }

    #[test]
    fn without_data_the_keys_are_product_id_and_product_secret() {
        let data = render(None, &values()).unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["productId", "productSecret"]
        );
        assert_eq!(text(&data, "productSecret"), SECRET);
    }

    #[test]
    fn keys_are_renamed_and_a_json_config_is_built() {
        let template = template(&[
            ("PRODUCT_SECRET", "{{ productSecret }}"),
            (
                "config.json",
                "{{ {'productId': productId, 'region': region, 'secret': productSecret, 'limit': registerLimit, 'type': registerType} | tojson }}",
            ),
        ]);
        check(&template).unwrap();
        let data = render(Some(&template), &values()).unwrap();
        assert_eq!(text(&data, "PRODUCT_SECRET"), SECRET);
        let config: serde_json::Value = serde_json::from_str(&text(&data, "config.json")).unwrap();
        assert_eq!(config["productId"], "ABCDE12345");
        assert_eq!(config["secret"], SECRET);
        assert_eq!(config["limit"], 100);
        assert_eq!(config["type"], "AutoCreate");
        assert_eq!(data.len(), 2, "only the keys of the template");
    }

    #[test]
    fn errors_name_the_key_and_never_quote_a_value() {
        let broken = template(&[("A", "{{ productSecret ")]);
        let error = check(&broken).unwrap_err();
        assert!(
            error.starts_with("secretTemplate.data[A]: syntax error"),
            "{error}"
        );
        let undefined = template(&[("B", "{{ productSecrett }}")]);
        check(&undefined).unwrap();
        let error = render(Some(&undefined), &values()).unwrap_err();
        assert!(
            error.starts_with("secretTemplate.data[B]: undefined value"),
            "{error}"
        );
        let misuse = template(&[("C", "{{ productSecret | int + productSecret }}")]);
        let error = render(Some(&misuse), &values()).unwrap_err();
        assert!(!error.contains(SECRET), "{error}");
        let endless = template(&[(
            "D",
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        )]);
        let error = render(Some(&endless), &values()).unwrap_err();
        assert!(error.contains("fuel"), "{error}");
    }

    #[test]
    fn types_kubernetes_fills_in_and_reserved_keys_are_refused() {
        for refused in REFUSED_TYPES {
            let template = SecretTemplate {
                type_: Some(refused.to_owned()),
                ..SecretTemplate::default()
            };
            let error = check(&template).unwrap_err();
            assert!(
                error.contains(refused) && error.contains("refused"),
                "{error}"
            );
        }
        for kept in [
            "Opaque",
            "kubernetes.io/tls",
            "kubernetes.io/basic-auth",
            "example.com/x",
        ] {
            let template = SecretTemplate {
                type_: Some(kept.to_owned()),
                ..SecretTemplate::default()
            };
            assert_eq!(check(&template), Ok(()), "{kept}");
        }
        let reserved = [
            "kubernetes.io/service-account.name",
            "k8s.io/anything",
            "node-role.kubernetes.io/control-plane",
            "kubectl.kubernetes.io/last-applied-configuration",
            "Kubernetes.IO/upper",
            "x.k8s.io/y",
        ];
        for key in reserved {
            assert!(is_reserved_key(key), "{key}");
            for field in ["labels", "annotations"] {
                let mut metadata = SecretTemplateMetadata::default();
                let entries = if field == "labels" {
                    &mut metadata.labels
                } else {
                    &mut metadata.annotations
                };
                entries.insert(key.to_owned(), "v".to_owned());
                let template = SecretTemplate {
                    metadata: Some(metadata),
                    ..SecretTemplate::default()
                };
                let error = check(&template).unwrap_err();
                assert!(error.contains(field) && error.contains(key), "{error}");
            }
        }
        let allowed = [
            "app.kubernetes.io/name",
            "example.com/kubernetes.io",
            "notkubernetes.io/x",
            "plain",
            "reloader.stakater.com/match",
        ];
        for key in allowed {
            assert!(!is_reserved_key(key), "{key}");
        }
    }

    #[test]
    fn one_budget_bounds_every_key_of_a_template() {
        // 150 keys of about 1 MB each: stopped once the data would pass what a Secret holds.
        let keys: Vec<(String, String)> = (0..150)
            .map(|index| (format!("K{index:03}"), "{{ 'x' * 1000000 }}".to_owned()))
            .collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let error = render(Some(&template(&pairs)), &values()).unwrap_err();
        assert!(error.contains("more than a Secret holds"), "{error}");
        // Data made but not written counts too: a key that only builds large strings runs out.
        let builder = "{% set a = productSecret * 40000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c | length }}";
        let keys: Vec<(String, &str)> = (0..10)
            .map(|index| (format!("B{index}"), builder))
            .collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let error = render(Some(&template(&pairs)), &values()).unwrap_err();
        assert!(error.contains("fuel"), "{error}");
        assert!(!error.contains(SECRET), "{error}");
        // What fits is rendered whole.
        let fits = template(&[("A", "{{ 'y' * 500000 }}"), ("B", "{{ 'z' * 500000 }}")]);
        let data = render(Some(&fits), &values()).unwrap();
        assert_eq!(data["A"].len() + data["B"].len(), 1_000_000);
    }
}
