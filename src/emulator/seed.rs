//! The emulator's starting state, read from YAML (`--seed FILE`).

use serde::Deserialize;

use crate::cloud::Service;

/// Accounts and products the emulator starts with.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    /// Who may call.
    #[serde(default)]
    pub accounts: Vec<SeedAccount>,
    /// What exists.
    #[serde(default)]
    pub products: Vec<SeedProduct>,
    /// Many look-alike products, for benchmarks.
    #[serde(default)]
    pub generate: Option<GeneratedProducts>,
    /// Roles STS lets web identities assume (`AssumeRoleWithWebIdentity`).
    #[serde(default)]
    pub roles: Vec<SeedRole>,
    /// Cloud accounts in arrears: every call their keys may make answers
    /// `FailedOperation.AccountIsolated`.
    #[serde(default)]
    pub isolated_accounts: Vec<String>,
}

/// A CAM role trusting an OIDC provider: STS exchanges the tokens listed for temporary
/// credentials of the role's account.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRole {
    /// `qcs::cam::uin/<uin>:roleName/<name>`.
    pub role_arn: String,
    /// The identity provider it trusts.
    pub provider_id: String,
    /// Web identity tokens the provider vouches for (a real one checks a signed JWT).
    pub tokens: Vec<String>,
    /// The cloud account of the role. Default `default`.
    #[serde(default)]
    pub account: Option<String>,
}

/// An API key the emulator accepts.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedAccount {
    /// SecretId.
    pub secret_id: String,
    /// SecretKey.
    pub secret_key: String,
    /// Session token; when set, requests must carry it in `X-TC-Token`.
    #[serde(default)]
    pub token: Option<String>,
    /// The cloud account the key belongs to: it sees that account's products only. Default
    /// `default`.
    #[serde(default)]
    pub account: Option<String>,
    /// A CAM policy restricting the key; without it, the key may do everything in its account.
    #[serde(default)]
    pub policy: Option<SeedPolicy>,
}

/// What a key may do, as a CAM policy grants it: refused calls answer
/// `AuthFailure.UnauthorizedOperation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedPolicy {
    /// Allowed actions (e.g. `DescribeProduct`); all when absent.
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// Allowed ProductIds; all when absent. A key restricted to some products may not list
    /// them all (DescribeProducts is refused), as resource-level CAM policies behave.
    #[serde(default)]
    pub products: Option<Vec<String>>,
}

/// The account of keys and products that name none.
pub const DEFAULT_ACCOUNT: &str = "default";

/// A product.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedProduct {
    /// ProductId, as the cloud assigns them (ten upper-case letters and digits).
    pub product_id: String,
    /// ProductName.
    #[serde(default)]
    pub product_name: Option<String>,
    /// The region it lives in; calls for another region do not see it.
    pub region: String,
    /// The service it belongs to (`iotcloud`, `iotexplorer`, `iotvideo`; default `iotcloud`):
    /// calls of another service do not see it.
    #[serde(default)]
    pub service: Service,
    /// IoT Explorer and IoT Video: the product authenticates by certificate only, so
    /// `ModifyProductDynamicRegister` refuses it (`UnauthorizedOperation.ProductNotSupportPSK`).
    #[serde(default)]
    pub certificate_only: bool,
    /// 0 ordinary, 2 NB-IoT, 3 LoRa, 4 LoRa gateway, 5 ordinary gateway. Only 0 and 5 support
    /// dynamic registration here; the others answer `ProductTypeNotSupport`.
    #[serde(default)]
    pub product_type: i64,
    /// A forbidden product refuses updates with `UnauthorizedOperation.ProductIsForbidden`.
    #[serde(default)]
    pub forbidden: bool,
    /// 0 disabled, 1 pre-create, 2 auto-create.
    #[serde(default)]
    pub register_type: i64,
    /// Device limit.
    #[serde(default)]
    pub register_limit: i64,
    /// The ProductSecret; generated when registration is first enabled if absent.
    #[serde(default)]
    pub product_secret: Option<String>,
    /// The cloud account owning it. Default `default`.
    #[serde(default)]
    pub account: Option<String>,
    /// Lets `registerType` and `registerLimit` hold values the documentation does not list (a
    /// RegisterType outside 0–2, a negative limit), answered as they are, as a cloud newer than
    /// the client might: for testing how a client takes an answer it cannot read.
    #[serde(default)]
    pub undocumented: bool,
}

/// `count` products named `<prefix><index>` in one region, registration disabled.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratedProducts {
    /// How many.
    pub count: usize,
    /// Their region.
    pub region: String,
    /// ProductId prefix; the index fills the id up to ten characters.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The cloud account owning them. Default `default`.
    #[serde(default)]
    pub account: Option<String>,
    /// Their service. Default `iotcloud`.
    #[serde(default)]
    pub service: Service,
}

fn default_prefix() -> String {
    "GEN".to_owned()
}

impl GeneratedProducts {
    /// The products this stands for.
    pub fn products(&self) -> impl Iterator<Item = SeedProduct> + '_ {
        let width = 10usize.saturating_sub(self.prefix.len()).max(1);
        (0..self.count).map(move |index| SeedProduct {
            product_id: format!("{}{index:0width$}", self.prefix),
            product_name: None,
            region: self.region.clone(),
            service: self.service,
            certificate_only: false,
            product_type: 0,
            forbidden: false,
            register_type: 0,
            register_limit: 0,
            product_secret: None,
            account: self.account.clone(),
            undocumented: false,
        })
    }
}

impl Seed {
    /// Reads and checks a seed file.
    pub fn from_yaml(text: &str) -> Result<Seed, String> {
        let seed: Seed = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        seed.check()?;
        Ok(seed)
    }

    fn check(&self) -> Result<(), String> {
        if self.accounts.is_empty() {
            return Err("the seed has no accounts: nobody could call the emulator".to_owned());
        }
        let mut ids = std::collections::HashSet::new();
        for product in self.all_products() {
            // One ID may exist in two services, as in the cloud.
            if !ids.insert((product.service, product.product_id.clone())) {
                return Err(format!(
                    "product {} of {} is listed twice",
                    product.product_id, product.service
                ));
            }
            if product.undocumented {
                continue;
            }
            if !(0..=2).contains(&product.register_type) {
                return Err(format!(
                    "product {}: registerType must be 0, 1 or 2",
                    product.product_id
                ));
            }
            if product.register_limit < 0 {
                return Err(format!(
                    "product {}: registerLimit must not be negative",
                    product.product_id
                ));
            }
        }
        Ok(())
    }

    /// Listed and generated products together.
    pub fn all_products(&self) -> Vec<SeedProduct> {
        let mut products = self.products.clone();
        if let Some(generate) = &self.generate {
            products.extend(generate.products());
        }
        products
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_example_seed() {
        let text = include_str!("example-seed.yaml");
        let seed = Seed::from_yaml(text).unwrap();
        assert!(!seed.accounts.is_empty());
        assert!(!seed.all_products().is_empty());
    }

    #[test]
    fn rejects_bad_seeds() {
        let account = "accounts: [{secretId: a, secretKey: b}]\n";
        for (bad, expected) in [
            ("products: []", "no accounts"),
            (
                "products: [{productId: P, region: r, registerType: 3}]",
                "registerType",
            ),
            (
                "products: [{productId: P, region: r, registerLimit: -1}]",
                "registerLimit",
            ),
            (
                "products: [{productId: P, region: r}, {productId: P, region: s}]",
                "twice",
            ),
            (
                "products: [{productId: P, region: r, service: iotnope}]",
                "unknown variant",
            ),
            (
                "products: [{productId: P, region: r, colour: red}]",
                "unknown field",
            ),
        ] {
            let text = if expected == "no accounts" {
                bad.to_owned()
            } else {
                format!("{account}{bad}")
            };
            let err = Seed::from_yaml(&text).unwrap_err();
            assert!(err.contains(expected), "{bad}: {err}");
        }
    }

    #[test]
    fn generates_ten_character_ids() {
        let generate = GeneratedProducts {
            count: 3,
            region: "ap-guangzhou".into(),
            prefix: "BENCH".into(),
            account: None,
            service: Service::IotHub,
        };
        let ids: Vec<_> = generate.products().map(|p| p.product_id).collect();
        assert_eq!(ids, ["BENCH00000", "BENCH00001", "BENCH00002"]);
    }
}
