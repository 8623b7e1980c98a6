//! JSON shapes of the APIs this crate calls (IoT Hub, IoT Explorer and IoT Video, STS), shared
//! by the client and the emulator so that the two cannot drift apart. Numbers stay raw here; [`super::types`] turns them
//! into checked values.

use serde::{Deserialize, Serialize};

use crate::cloud::redacted::Redacted;

/// The largest `Limit` `DescribeProducts` accepts.
pub const DESCRIBE_PRODUCTS_MAX_LIMIT: u64 = 250;
/// The smallest `Limit` `DescribeProducts` accepts.
pub const DESCRIBE_PRODUCTS_MIN_LIMIT: u64 = 10;

/// The API actions this project calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Reads one product.
    DescribeProduct,
    /// Pages through all products.
    DescribeProducts,
    /// Sets a product's dynamic-registration settings (IoT Hub).
    UpdateProductDynamicRegister,
    /// Reads a product's dynamic-registration settings (IoT Explorer, IoT Video).
    DescribeProductDynamicRegister,
    /// Sets a product's dynamic-registration settings (IoT Explorer, IoT Video).
    ModifyProductDynamicRegister,
    /// STS: exchanges a web identity (OIDC) token for temporary credentials of a role.
    AssumeRoleWithWebIdentity,
    /// STS: whose key signs the call (`iothub-dynreg check`).
    GetCallerIdentity,
}

impl Action {
    /// Every action, for per-action tables (rate limits, metrics).
    pub const ALL: [Action; 7] = [
        Action::DescribeProduct,
        Action::DescribeProducts,
        Action::UpdateProductDynamicRegister,
        Action::DescribeProductDynamicRegister,
        Action::ModifyProductDynamicRegister,
        Action::AssumeRoleWithWebIdentity,
        Action::GetCallerIdentity,
    ];

    /// The name on the wire (`X-TC-Action`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::DescribeProduct => "DescribeProduct",
            Action::DescribeProducts => "DescribeProducts",
            Action::UpdateProductDynamicRegister => "UpdateProductDynamicRegister",
            Action::DescribeProductDynamicRegister => "DescribeProductDynamicRegister",
            Action::ModifyProductDynamicRegister => "ModifyProductDynamicRegister",
            Action::AssumeRoleWithWebIdentity => "AssumeRoleWithWebIdentity",
            Action::GetCallerIdentity => "GetCallerIdentity",
        }
    }

    /// The action of a wire name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `AssumeRoleWithWebIdentity` parameters, sent unsigned (the token is the proof). No `Debug`:
/// the token is a bearer credential.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleWithWebIdentityRequest {
    /// The OIDC identity provider the role trusts.
    pub provider_id: String,
    /// The OIDC token (the projected service-account token).
    pub web_identity_token: String,
    /// The role to assume, `qcs::cam::uin/…:roleName/…`.
    pub role_arn: String,
    /// Names the session in the audit log.
    pub role_session_name: String,
    /// Lifetime of the credentials asked for, in seconds.
    pub duration_seconds: u64,
}

/// `AssumeRoleWithWebIdentity` answer. No `Debug`: it holds a key.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleWithWebIdentityResponse {
    /// The temporary credentials.
    pub credentials: TemporaryCredentials,
    /// When they expire, Unix seconds.
    pub expired_time: i64,
}

/// `GetCallerIdentity`'s answer: whose key signed the call.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetCallerIdentityResponse {
    /// The caller, e.g. `qcs::cam::uin/100001:uin/100002`.
    #[serde(default)]
    pub arn: String,
    /// The root account's UIN.
    #[serde(default)]
    pub account_id: String,
    /// The user (a sub-account's UIN, a role's `roleId:session`).
    #[serde(default)]
    pub user_id: String,
    /// The kind of identity, e.g. `CAMUser`.
    #[serde(default, rename = "Type")]
    pub kind: String,
}

/// Temporary credentials as STS issues them.
#[derive(Serialize, Deserialize)]
pub struct TemporaryCredentials {
    /// The session token, sent as `X-TC-Token`.
    #[serde(rename = "Token")]
    pub token: String,
    /// The temporary SecretId.
    #[serde(rename = "TmpSecretId")]
    pub tmp_secret_id: String,
    /// The temporary SecretKey.
    #[serde(rename = "TmpSecretKey")]
    pub tmp_secret_key: String,
}

/// Every answer is wrapped in `{"Response": …}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The answer.
    #[serde(rename = "Response")]
    pub response: T,
}

/// The error form of an answer: HTTP 200 with `Error` and `RequestId`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ApiError,
    /// The cloud's id of the request, for support tickets.
    #[serde(default)]
    pub request_id: String,
}

/// `Error` of an error answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiError {
    /// Dotted error code, e.g. `ResourceNotFound.ProductNotExist`.
    pub code: String,
    /// Human-readable message, in the language of `X-TC-Language`.
    #[serde(default)]
    pub message: String,
}

/// `DescribeProduct` parameters.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeProductRequest {
    /// The product to read.
    pub product_id: String,
}

/// `DescribeProducts` parameters.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeProductsRequest {
    /// Index of the first product of the page.
    pub offset: u64,
    /// Page size, 10 to 250.
    pub limit: u64,
}

impl DescribeProductsRequest {
    /// The page at `offset` of about `size` products: the cloud refuses a `Limit` outside
    /// 10–250 (`InvalidParameterValue`), so a smaller page asks for 10 and a larger one for 250.
    pub fn page(offset: u64, size: u64) -> Self {
        Self {
            offset,
            limit: size.clamp(DESCRIBE_PRODUCTS_MIN_LIMIT, DESCRIBE_PRODUCTS_MAX_LIMIT),
        }
    }
}

/// `UpdateProductDynamicRegister` parameters.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateProductDynamicRegisterRequest {
    /// The product to change.
    pub product_id: String,
    /// 0 disabled, 1 pre-create device, 2 auto-create device.
    pub register_type: i64,
    /// Most devices that may register themselves.
    pub register_limit: i64,
}

/// `DescribeProduct` answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeProductResponse {
    /// The product's id.
    pub product_id: String,
    /// The product's name.
    #[serde(default)]
    pub product_name: String,
    /// Creation date and the like.
    #[serde(default)]
    pub product_metadata: Option<ProductMetadata>,
    /// The settings this project manages, among others.
    pub product_properties: ProductProperties,
    /// The cloud's id of the request.
    #[serde(default)]
    pub request_id: String,
}

/// One product of a `DescribeProducts` page.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProductInfo {
    /// The product's id.
    pub product_id: String,
    /// The product's name.
    #[serde(default)]
    pub product_name: String,
    /// Creation date and the like.
    #[serde(default)]
    pub product_metadata: Option<ProductMetadata>,
    /// The settings this project manages, among others.
    pub product_properties: ProductProperties,
}

/// `DescribeProducts` answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeProductsResponse {
    /// How many products the account has in the region.
    pub total_count: u64,
    /// This page.
    #[serde(default)]
    pub products: Vec<ProductInfo>,
    /// The cloud's id of the request.
    #[serde(default)]
    pub request_id: String,
}

/// A `DescribeProducts` page as the client reads it: each product left unparsed, so that one
/// entry the client cannot read (an unknown RegisterType, `null` properties) costs that entry
/// alone, not the page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeProductsPage {
    /// How many products the account has in the region.
    pub total_count: u64,
    /// This page, one JSON value per product.
    #[serde(default)]
    pub products: Vec<serde_json::Value>,
}

/// `ProductMetadata`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProductMetadata {
    /// Unix seconds of creation.
    #[serde(default)]
    pub creation_date: i64,
}

/// `ProductProperties`: the fields this project reads. The cloud documents most of them as
/// possibly `null`, hence the defaults.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProductProperties {
    /// Free text.
    #[serde(default)]
    pub product_description: Option<String>,
    /// Region the product lives in.
    #[serde(default)]
    pub region: Option<String>,
    /// 0 ordinary, 2 NB-IoT, 3 LoRa, 4 LoRa gateway, 5 ordinary gateway.
    #[serde(default)]
    pub product_type: Option<i64>,
    /// 0 disabled, 1 pre-create device, 2 auto-create device; `null` when never configured.
    #[serde(default)]
    pub register_type: Option<i64>,
    /// Most devices that may register themselves.
    #[serde(default)]
    pub register_limit: Option<i64>,
    /// The key devices use to register; empty while registration was never enabled.
    #[serde(default)]
    pub product_secret: Option<Redacted>,
    /// 1 when the product is forbidden (suspended by the platform).
    #[serde(default)]
    pub forbidden_status: Option<i64>,
}

/// `UpdateProductDynamicRegister` answer: what the cloud actually applied.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateProductDynamicRegisterResponse {
    /// The type now in force.
    pub register_type: i64,
    /// The key devices use to register.
    #[serde(default)]
    pub product_secret: Option<Redacted>,
    /// The limit now in force (may differ from the one asked).
    pub register_limit: i64,
    /// The cloud's id of the request.
    #[serde(default)]
    pub request_id: String,
}

/// `DescribeProductDynamicRegister` parameters (IoT Explorer, IoT Video).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeProductDynamicRegisterRequest {
    /// The product to read.
    pub product_id: String,
}

/// `ModifyProductDynamicRegister` parameters (IoT Explorer, IoT Video).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModifyProductDynamicRegisterRequest {
    /// The product to change.
    pub product_id: String,
    /// 0 disabled, 1 pre-create device, 2 auto-create device.
    pub register_type: i64,
    /// Most devices that may register themselves.
    pub register_limit: i64,
}

/// The answer of `DescribeProductDynamicRegister` and of `ModifyProductDynamicRegister` (the
/// same fields: the settings in force after the call). The SDKs read each field as optional.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProductDynamicRegisterResponse {
    /// 0 disabled, 1 pre-create device, 2 auto-create device.
    #[serde(default)]
    pub register_type: Option<i64>,
    /// The key devices use to register.
    #[serde(default)]
    pub product_secret: Option<Redacted>,
    /// Most devices that may register themselves.
    #[serde(default)]
    pub register_limit: Option<i64>,
    /// The cloud's id of the request.
    #[serde(default)]
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_products_pages_ask_for_10_to_250() {
        let limits = [0, 1, 9, 10, 100, 250, 251, u64::MAX]
            .map(|size| DescribeProductsRequest::page(500, size).limit);
        assert_eq!(limits, [10, 10, 10, 10, 100, 250, 250, 250]);
        let sent = serde_json::to_value(DescribeProductsRequest::page(500, 1)).unwrap();
        assert_eq!(sent, serde_json::json!({"Offset": 500, "Limit": 10}));
    }
}
