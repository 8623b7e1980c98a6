//! The published Secret's keys, rendered from `spec.secretTemplate.data` with minijinja: no
//! loader (so no file or network access), strict about undefined names, and bounded by fuel so
//! that no template can keep the controller busy. An error never quotes a value: the
//! ProductSecret is one of them.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::controller::resources::{RegistrationMode, SecretTemplate};

/// Instructions a template may run before it is stopped.
const FUEL: u64 = 50_000;

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

fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_fuel(Some(FUEL));
    environment
}

/// Checks that every template compiles; the message names the key and the line.
pub fn check(template: &SecretTemplate) -> Result<(), String> {
    let environment = environment();
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
    let environment = environment();
    let context = minijinja::Value::from(minijinja::value::Serde(values));
    template
        .data
        .iter()
        .map(|(key, source)| {
            let rendered = environment
                .template_from_str(source)
                .and_then(|compiled| compiled.render(&context))
                // A rendering error's detail may quote a value: only its kind and line.
                .map_err(|error| describe(key, &error, false))?;
            Ok((key.clone(), rendered.into_bytes()))
        })
        .collect()
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
}
