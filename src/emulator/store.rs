//! The emulated products of the three IoT services, and the API actions on them.

use std::collections::BTreeMap;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::seed::SeedProduct;
use super::verify::Refusal;
use crate::cloud::Service;
use crate::cloud::redacted::Redacted;
use crate::cloud::wire::{self, Action};

/// Product types that support dynamic registration (ordinary products and gateways).
const TYPES_WITH_DYNAMIC_REGISTRATION: [i64; 2] = [0, 5];

/// A product as the emulator holds it. Serialized for the control endpoint only.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductRecord {
    /// ProductId.
    pub product_id: String,
    /// ProductName.
    pub product_name: String,
    /// Region it lives in.
    pub region: String,
    /// The service it belongs to.
    pub service: Service,
    /// Explorer and Video: certificate authentication only, so no dynamic registration.
    pub certificate_only: bool,
    /// Product type.
    pub product_type: i64,
    /// Forbidden by the platform.
    pub forbidden: bool,
    /// 0, 1 or 2.
    pub register_type: i64,
    /// Device limit.
    pub register_limit: i64,
    /// Empty until registration is first enabled. A made-up value of the emulator's own.
    pub product_secret: String,
    /// Unix seconds.
    pub creation_date: i64,
    /// The cloud account owning it.
    pub account: String,
    /// Update (or Modify) ProductDynamicRegister calls that succeeded for it: a soak checks
    /// that nothing writes a product it may only observe.
    pub updates: u64,
}

/// Where a call looks: a region, within the caller's account.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// `X-TC-Region`.
    pub region: &'a str,
    /// The caller key's account.
    pub account: &'a str,
}

/// An edit made "in the console", behind the controller's back.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsoleEdit {
    /// New registration type.
    pub register_type: Option<i64>,
    /// New device limit.
    pub register_limit: Option<i64>,
    /// Forbid or allow the product.
    pub forbidden: Option<bool>,
}

/// How the emulated cloud rewrites the RegisterLimit it is asked for, to model the real cloud
/// applying another value than the one requested.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Limits above this are lowered to it.
    pub max: Option<i64>,
    /// Every update gets this limit, whatever was asked (the public example asks 10, gets 10000).
    pub override_to: Option<i64>,
    /// Updates asking for a limit above this are refused (`InvalidParameterValue`), as a cloud
    /// that checks the limit against the product's quota would.
    pub refuse_above: Option<i64>,
}

impl LimitPolicy {
    fn check(self, asked: i64) -> Result<(), Refusal> {
        match self.refuse_above {
            Some(most) if asked > most => Err(Refusal::new(
                "InvalidParameterValue",
                "RegisterLimit is above what the product may have",
            )),
            _ => Ok(()),
        }
    }

    fn apply(self, asked: i64) -> i64 {
        let limit = self.override_to.unwrap_or(asked);
        self.max.map_or(limit, |max| limit.min(max))
    }
}

/// All products, by service and ProductId (ordered, so pages are stable): one ID may exist in
/// two services.
#[derive(Debug, Default)]
pub struct Store {
    products: BTreeMap<(Service, String), ProductRecord>,
    /// RegisterLimit rewriting.
    pub limit_policy: LimitPolicy,
    /// DescribeProducts answers leave ProductSecret out (DescribeProduct still has it): the
    /// controller must not rely on list answers for the secret.
    pub list_omits_product_secret: bool,
}

impl Store {
    /// A store holding the seed's products.
    pub fn new(products: Vec<SeedProduct>, now: i64) -> Self {
        let products = products
            .into_iter()
            .map(|seed| {
                let record = ProductRecord {
                    product_name: seed
                        .product_name
                        .unwrap_or_else(|| seed.product_id.to_lowercase()),
                    region: seed.region,
                    service: seed.service,
                    certificate_only: seed.certificate_only,
                    product_type: seed.product_type,
                    forbidden: seed.forbidden,
                    register_type: seed.register_type,
                    register_limit: seed.register_limit,
                    product_secret: seed.product_secret.unwrap_or_else(|| {
                        if seed.register_type == 0 {
                            String::new()
                        } else {
                            new_product_secret()
                        }
                    }),
                    creation_date: now,
                    product_id: seed.product_id.clone(),
                    account: seed
                        .account
                        .unwrap_or_else(|| crate::emulator::seed::DEFAULT_ACCOUNT.to_owned()),
                    updates: 0,
                };
                ((seed.service, seed.product_id), record)
            })
            .collect();
        Self {
            products,
            limit_policy: LimitPolicy::default(),
            list_omits_product_secret: false,
        }
    }

    /// Every product, for the control endpoint.
    pub fn list(&self) -> Vec<ProductRecord> {
        self.products.values().cloned().collect()
    }

    /// Applies a console edit to the product of that ID (of `service` if given, else of the
    /// only service that has it); an error when there is none, or one in several services.
    pub fn edit(
        &mut self,
        (service, product_id): (Option<Service>, &str),
        edit: ConsoleEdit,
    ) -> Result<ProductRecord, String> {
        let mut matching = self.products.iter_mut().filter(|((of, id), _)| {
            id == product_id && service.is_none_or(|service| service == *of)
        });
        let (Some((_, product)), None) = (matching.next(), matching.next()) else {
            return Err(format!(
                "no single product {product_id}: name its service (products/SERVICE/ID)"
            ));
        };
        if let Some(register_type) = edit.register_type {
            if !(0..=2).contains(&register_type) {
                return Err("registerType must be 0, 1 or 2".to_owned());
            }
            product.register_type = register_type;
            ensure_secret(product);
        }
        if let Some(limit) = edit.register_limit {
            if limit < 0 {
                return Err("registerLimit must not be negative".to_owned());
            }
            product.register_limit = limit;
        }
        if let Some(forbidden) = edit.forbidden {
            product.forbidden = forbidden;
        }
        Ok(product.clone())
    }

    /// Deletes the products of that ID (of `service` if given), as if removed in the console.
    pub fn remove(&mut self, (service, product_id): (Option<Service>, &str)) -> bool {
        let before = self.products.len();
        self.products.retain(|(of, id), _| {
            id != product_id || service.is_some_and(|service| service != *of)
        });
        self.products.len() < before
    }

    /// Serves one action of `service` for a caller in `region`.
    pub fn handle(
        &mut self,
        (service, action): (Service, Action),
        scope: &Scope<'_>,
        params: &Map<String, Value>,
        request_id: &str,
    ) -> Result<Value, Refusal> {
        let answer = match action {
            Action::DescribeProduct => {
                let product_id = required_string(params, "ProductId")?;
                let product = self.find((service, scope), &product_id)?;
                to_value(wire::DescribeProductResponse {
                    product_id: product.product_id.clone(),
                    product_name: product.product_name.clone(),
                    product_metadata: Some(metadata(product)),
                    product_properties: properties(product),
                    request_id: request_id.to_owned(),
                })
            }
            Action::DescribeProducts => self.describe_products(scope, params, request_id)?,
            Action::UpdateProductDynamicRegister => self.update(scope, params, request_id)?,
            Action::DescribeProductDynamicRegister => {
                let product_id = required_string(params, "ProductId")?;
                dynamic_register(self.find((service, scope), &product_id)?, request_id)
            }
            Action::ModifyProductDynamicRegister => {
                self.modify((service, scope), params, request_id)?
            }
            // STS actions: served by the server, never by the product store.
            Action::AssumeRoleWithWebIdentity | Action::GetCallerIdentity => {
                return Err(Refusal::new(
                    "InvalidAction",
                    format!("{action} is an sts action, not iotcloud's"),
                ));
            }
        };
        Ok(answer)
    }

    /// A product of the service, in the caller's account and region; another account's is as
    /// good as absent.
    fn find(
        &self,
        (service, scope): (Service, &Scope<'_>),
        product_id: &str,
    ) -> Result<&ProductRecord, Refusal> {
        self.products
            .get(&(service, product_id.to_owned()))
            .filter(|product| product.region == scope.region && product.account == scope.account)
            .ok_or_else(|| not_found(service, product_id, scope.region))
    }

    /// `ModifyProductDynamicRegister` (IoT Explorer, IoT Video).
    fn modify(
        &mut self,
        (service, scope): (Service, &Scope<'_>),
        params: &Map<String, Value>,
        request_id: &str,
    ) -> Result<Value, Refusal> {
        let product_id = required_string(params, "ProductId")?;
        let (register_type, register_limit) = self.checked_settings(params)?;
        self.find((service, scope), &product_id)?;
        let limit_policy = self.limit_policy;
        let product = self
            .products
            .get_mut(&(service, product_id.clone()))
            .ok_or_else(|| not_found(service, &product_id, scope.region))?;
        if product.certificate_only {
            return Err(Refusal::new(
                "UnauthorizedOperation.ProductNotSupportPSK",
                format!(
                    "product {product_id} authenticates by certificate and has no dynamic registration"
                ),
            ));
        }
        product.register_type = register_type;
        product.register_limit = limit_policy.apply(register_limit);
        product.updates += 1;
        ensure_secret(product);
        Ok(dynamic_register(product, request_id))
    }

    /// The type and limit asked for, checked as the cloud checks them.
    fn checked_settings(&self, params: &Map<String, Value>) -> Result<(i64, i64), Refusal> {
        let register_type = required_integer(params, "RegisterType")?;
        let register_limit = required_integer(params, "RegisterLimit")?;
        if !(0..=2).contains(&register_type) {
            return Err(Refusal::new(
                "InvalidParameterValue",
                "RegisterType must be 0 (disabled), 1 (pre-create) or 2 (auto-create)",
            ));
        }
        if register_limit < 0 {
            return Err(Refusal::new(
                "InvalidParameterValue",
                "RegisterLimit must not be negative",
            ));
        }
        self.limit_policy.check(register_limit)?;
        Ok((register_type, register_limit))
    }

    fn describe_products(
        &self,
        scope: &Scope<'_>,
        params: &Map<String, Value>,
        request_id: &str,
    ) -> Result<Value, Refusal> {
        let offset = required_integer(params, "Offset")?;
        let limit = required_integer(params, "Limit")?;
        if offset < 0 {
            return Err(Refusal::new(
                "InvalidParameterValue",
                "Offset must not be negative",
            ));
        }
        let allowed =
            wire::DESCRIBE_PRODUCTS_MIN_LIMIT as i64..=wire::DESCRIBE_PRODUCTS_MAX_LIMIT as i64;
        if !allowed.contains(&limit) {
            return Err(Refusal::new(
                "InvalidParameterValue",
                format!(
                    "Limit must be between {} and {}",
                    allowed.start(),
                    allowed.end()
                ),
            ));
        }
        let in_region: Vec<&ProductRecord> = self
            .products
            .values()
            .filter(|product| {
                product.service == Service::IotHub
                    && product.region == scope.region
                    && product.account == scope.account
            })
            .collect();
        let page = in_region
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(|product| {
                let mut product_properties = properties(product);
                if self.list_omits_product_secret {
                    product_properties.product_secret = None;
                }
                wire::ProductInfo {
                    product_id: product.product_id.clone(),
                    product_name: product.product_name.clone(),
                    product_metadata: Some(metadata(product)),
                    product_properties,
                }
            })
            .collect();
        Ok(to_value(wire::DescribeProductsResponse {
            total_count: in_region.len() as u64,
            products: page,
            request_id: request_id.to_owned(),
        }))
    }

    fn update(
        &mut self,
        scope: &Scope<'_>,
        params: &Map<String, Value>,
        request_id: &str,
    ) -> Result<Value, Refusal> {
        let product_id = required_string(params, "ProductId")?;
        let (register_type, register_limit) = self.checked_settings(params)?;
        let limit_policy = self.limit_policy;
        let service = Service::IotHub;
        self.find((service, scope), &product_id)?;
        let product = self
            .products
            .get_mut(&(service, product_id.clone()))
            .ok_or_else(|| not_found(service, &product_id, scope.region))?;
        if product.forbidden {
            return Err(Refusal::new(
                "UnauthorizedOperation.ProductIsForbidden",
                format!("product {product_id} is forbidden"),
            ));
        }
        if !TYPES_WITH_DYNAMIC_REGISTRATION.contains(&product.product_type) {
            return Err(Refusal::new(
                "InvalidParameterValue.ProductTypeNotSupport",
                format!(
                    "product type {} does not support dynamic registration",
                    product.product_type
                ),
            ));
        }
        product.register_type = register_type;
        product.register_limit = limit_policy.apply(register_limit);
        product.updates += 1;
        ensure_secret(product);
        Ok(to_value(wire::UpdateProductDynamicRegisterResponse {
            register_type: product.register_type,
            product_secret: Some(Redacted::new(product.product_secret.clone())),
            register_limit: product.register_limit,
            request_id: request_id.to_owned(),
        }))
    }
}

/// The cloud makes a ProductSecret the first time registration is enabled.
fn ensure_secret(product: &mut ProductRecord) {
    if product.register_type != 0 && product.product_secret.is_empty() {
        product.product_secret = new_product_secret();
    }
}

fn new_product_secret() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// IoT Explorer names its products "studio products" in this error; the others do not.
fn not_found(service: Service, product_id: &str, region: &str) -> Refusal {
    let code = match service {
        Service::IotExplorer => "ResourceNotFound.StudioProductNotExist",
        _ => "ResourceNotFound.ProductNotExist",
    };
    Refusal::new(
        code,
        format!("product {product_id} does not exist in {service} in {region}"),
    )
}

/// The answer of `Describe`/`ModifyProductDynamicRegister`: the settings in force.
fn dynamic_register(product: &ProductRecord, request_id: &str) -> Value {
    to_value(wire::ProductDynamicRegisterResponse {
        register_type: Some(product.register_type),
        product_secret: Some(Redacted::new(product.product_secret.clone())),
        register_limit: Some(product.register_limit),
        request_id: request_id.to_owned(),
    })
}

fn metadata(product: &ProductRecord) -> wire::ProductMetadata {
    wire::ProductMetadata {
        creation_date: product.creation_date,
    }
}

fn properties(product: &ProductRecord) -> wire::ProductProperties {
    wire::ProductProperties {
        product_description: Some(String::new()),
        region: Some(product.region.clone()),
        product_type: Some(product.product_type),
        register_type: Some(product.register_type),
        register_limit: Some(product.register_limit),
        product_secret: Some(Redacted::new(product.product_secret.clone())),
        forbidden_status: Some(i64::from(product.forbidden)),
    }
}

fn to_value<T: Serialize>(answer: T) -> Value {
    // Our own wire structs always serialize: no maps with non-string keys, no failing impls.
    serde_json::to_value(answer).expect("wire types serialize to JSON")
}

fn required_string(params: &Map<String, Value>, name: &str) -> Result<String, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(_) => Err(Refusal::new(
            "InvalidParameterValue",
            format!("{name} must be a non-empty string"),
        )),
    }
}

/// An integer parameter; query and form parameters arrive as numeric strings.
fn required_integer(params: &Map<String, Value>, name: &str) -> Result<i64, Refusal> {
    let invalid = || Refusal::new("InvalidParameter", format!("{name} must be an integer"));
    match params.get(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(Value::Number(number)) => number.as_i64().ok_or_else(invalid),
        Some(Value::String(text)) => text.parse().map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

fn missing(name: &str) -> Refusal {
    Refusal::new(
        "MissingParameter",
        format!("the parameter {name} is missing"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_product(id: &str, region: &str) -> SeedProduct {
        SeedProduct {
            product_id: id.into(),
            product_name: None,
            region: region.into(),
            service: Service::IotHub,
            certificate_only: false,
            product_type: 0,
            forbidden: false,
            register_type: 0,
            register_limit: 0,
            product_secret: None,
            account: None,
            undocumented: false,
        }
    }

    /// Region `region` of the default account.
    fn scope(region: &str) -> Scope<'_> {
        Scope {
            region,
            account: crate::emulator::seed::DEFAULT_ACCOUNT,
        }
    }

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn enabling_registration_creates_a_secret_once() {
        let mut store = Store::new(vec![seed_product("P1", "r")], 0);
        let update = |store: &mut Store, kind: i64| {
            store
                .handle(
                    (Service::IotHub, Action::UpdateProductDynamicRegister),
                    &scope("r"),
                    &params(json!({"ProductId": "P1", "RegisterType": kind, "RegisterLimit": 5})),
                    "id",
                )
                .unwrap()
        };
        assert_eq!(store.list()[0].product_secret, "");
        let first = update(&mut store, 2);
        let secret = first["ProductSecret"].as_str().unwrap().to_owned();
        assert_eq!(secret.len(), 24);
        let again = update(&mut store, 1);
        assert_eq!(again["ProductSecret"], secret.as_str());
    }

    #[test]
    fn limit_policy_rewrites_the_limit() {
        let policy = LimitPolicy {
            max: Some(1000),
            override_to: None,
            refuse_above: None,
        };
        assert_eq!(policy.apply(10), 10);
        assert_eq!(policy.apply(5000), 1000);
        let policy = LimitPolicy {
            max: None,
            override_to: Some(10_000),
            refuse_above: None,
        };
        assert_eq!(policy.apply(10), 10_000);
    }

    #[test]
    fn documented_errors() {
        let mut lora = seed_product("LORA", "r");
        lora.product_type = 3;
        let mut forbidden = seed_product("FORBID", "r");
        forbidden.forbidden = true;
        let mut store = Store::new(vec![seed_product("P1", "r"), lora, forbidden], 0);
        let cases = [
            (
                json!({"ProductId": "P1", "RegisterType": 1, "RegisterLimit": 1}),
                "s",
                "ResourceNotFound.ProductNotExist",
            ),
            (
                json!({"ProductId": "NOPE", "RegisterType": 1, "RegisterLimit": 1}),
                "r",
                "ResourceNotFound.ProductNotExist",
            ),
            (
                json!({"ProductId": "LORA", "RegisterType": 1, "RegisterLimit": 1}),
                "r",
                "InvalidParameterValue.ProductTypeNotSupport",
            ),
            (
                json!({"ProductId": "FORBID", "RegisterType": 1, "RegisterLimit": 1}),
                "r",
                "UnauthorizedOperation.ProductIsForbidden",
            ),
            (
                json!({"ProductId": "P1", "RegisterType": 3, "RegisterLimit": 1}),
                "r",
                "InvalidParameterValue",
            ),
            (
                json!({"ProductId": "P1", "RegisterType": 1, "RegisterLimit": -1}),
                "r",
                "InvalidParameterValue",
            ),
            (
                json!({"ProductId": "P1", "RegisterType": 1}),
                "r",
                "MissingParameter",
            ),
            (
                json!({"ProductId": "P1", "RegisterType": "x", "RegisterLimit": 1}),
                "r",
                "InvalidParameter",
            ),
        ];
        for (request, region, code) in cases {
            let refusal = store
                .handle(
                    (Service::IotHub, Action::UpdateProductDynamicRegister),
                    &scope(region),
                    &params(request.clone()),
                    "id",
                )
                .unwrap_err();
            assert_eq!(refusal.code, code, "{request}");
        }
    }

    #[test]
    fn pages_products_of_the_region() {
        let mut products: Vec<_> = (0..25)
            .map(|i| seed_product(&format!("P{i:02}"), "r"))
            .collect();
        products.push(seed_product("OTHER", "s"));
        let mut store = Store::new(products, 0);
        let page = |store: &mut Store, offset: i64, limit: i64| {
            store.handle(
                (Service::IotHub, Action::DescribeProducts),
                &scope("r"),
                &params(json!({"Offset": offset, "Limit": limit})),
                "id",
            )
        };
        let second = page(&mut store, 10, 10).unwrap();
        assert_eq!(second["TotalCount"], 25);
        assert_eq!(second["Products"].as_array().unwrap().len(), 10);
        assert_eq!(second["Products"][0]["ProductId"], "P10");
        let last = page(&mut store, 20, 10).unwrap();
        assert_eq!(last["Products"].as_array().unwrap().len(), 5);
        assert_eq!(
            page(&mut store, 0, 9).unwrap_err().code,
            "InvalidParameterValue"
        );
        assert_eq!(
            page(&mut store, 0, 251).unwrap_err().code,
            "InvalidParameterValue"
        );
    }
}
