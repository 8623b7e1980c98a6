//! `iothub-dynreg check`: before a deploy, whether a key can do what the controller needs. The
//! key signs a few calls (STS's `GetCallerIdentity`, then `DescribeProducts` per region,
//! `DescribeProduct` per product, and only when asked `UpdateProductDynamicRegister`, writing
//! each product's current settings back), and the cloud's answers say whether it signs
//! correctly, whose it is, what CAM allows it, which products it reaches, and which permissions
//! it lacks, as a CAM policy to paste.
//!
//! Nothing here holds a secret: the report names the SecretId (not a secret) and the cloud's
//! error codes and messages, which carry no key.

pub mod command;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};

use crate::cloud::{Action, CloudClient, CloudError, Credentials, ErrorClass, Product, Service};

/// What to check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Regions whose products are listed.
    pub regions: Vec<String>,
    /// Products described, as (service, region, ProductId): IoT Hub's with `DescribeProduct`,
    /// IoT Explorer's and IoT Video's with `DescribeProductDynamicRegister`.
    pub products: Vec<(Service, String, String)>,
    /// Also call UpdateProductDynamicRegister, writing each product's current settings back.
    pub write_back: bool,
}

/// What the cloud answered.
#[derive(Clone, Debug)]
pub struct Report {
    /// The key's SecretId.
    pub secret_id: String,
    /// Whose key it is, as STS says, or why it does not say.
    pub identity: Result<Identity, String>,
    /// Every call made (or not made, and why), in order.
    pub calls: Vec<Call>,
    /// The products each region's listing showed, by region (regions whose listing failed
    /// are absent).
    pub reached: BTreeMap<String, Vec<String>>,
}

/// The caller, as STS's `GetCallerIdentity` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The root account's UIN.
    pub account_id: String,
    /// The user (a sub-account's UIN, a role's session).
    pub user_id: String,
    /// The kind of identity, e.g. `CAMUser`.
    pub kind: String,
}

/// One call of the check.
#[derive(Clone, Debug)]
pub struct Call {
    /// The service of the action.
    pub service: Service,
    /// The action.
    pub action: Action,
    /// Its region.
    pub region: String,
    /// The product it is about, if any.
    pub product: Option<String>,
    /// What came of it.
    pub outcome: CallResult,
}

impl Call {
    /// The action as the report names it ([`action_name`]).
    pub fn name(&self) -> String {
        action_name((self.service, self.action))
    }
}

/// An action as the report names it: IoT Hub's and STS's by their names, the others' with
/// their service (`iotexplorer:ModifyProductDynamicRegister`).
pub fn action_name((service, action): (Service, Action)) -> String {
    match service {
        Service::IotHub | Service::Sts => action.as_str().to_owned(),
        service => format!("{service}:{action}"),
    }
}

/// What came of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// The cloud did it; what it said, in a few words.
    Allowed(String),
    /// The cloud refused or failed it.
    Refused {
        /// How the controller would take it.
        class: ErrorClass,
        /// The error code (`Transport`, `HTTP 502`… when the cloud did not answer).
        code: String,
        /// The whole error, as the controller would report it.
        message: String,
    },
    /// Not called, and why.
    Skipped(String),
}

/// The error codes by which CAM refuses an action to a key: what a policy grants.
const CAM_REFUSALS: [&str; 2] = [
    "AuthFailure.UnauthorizedOperation",
    "UnauthorizedOperation.PermissionDenied",
];

/// How many products a listing names in the report.
const NAMED_IN_LISTING: usize = 5;

/// Makes the calls `request` asks for with `credentials`.
pub async fn check(client: &CloudClient, credentials: &Credentials, request: &Request) -> Report {
    let sts_region = request
        .regions
        .first()
        .or(request.products.first().map(|(_, region, _)| region))
        .map_or("ap-guangzhou", String::as_str);
    let identity = client
        .get_caller_identity(credentials, sts_region)
        .await
        .map(|answer| Identity {
            account_id: answer.account_id,
            user_id: answer.user_id,
            kind: answer.kind,
        })
        .map_err(|error| error.to_string());
    let mut calls = Vec::new();
    let mut reached = BTreeMap::new();
    let mut products = request.products.clone();
    for region in &request.regions {
        let listed = client.describe_products(credentials, region).await;
        let named = products
            .iter()
            .any(|(service, named_in, _)| *service == Service::IotHub && named_in == region);
        if let (Ok(listing), false) = (&listed, named) {
            // Nothing named in this region: the first product listed shows whether the key may
            // read one.
            if let Some(first) = listing.first() {
                products.push((Service::IotHub, region.clone(), first.product_id.clone()));
            }
        }
        if let Ok(listing) = &listed {
            let ids = listing.iter().map(|product| product.product_id.clone());
            reached.insert(region.clone(), ids.collect());
        }
        calls.push(call(
            (Service::IotHub, Action::DescribeProducts),
            region,
            None,
            listing(listed),
        ));
    }
    describe_each(
        client,
        credentials,
        (&products, request.write_back),
        &mut calls,
    )
    .await;
    Report {
        secret_id: credentials.secret_id.clone(),
        identity,
        calls,
        reached,
    }
}

/// Each product read with its service's call, each written back right after its own read when asked
/// (else one line saying the write was not checked). Written back at once, a product is
/// exposed to a concurrent change (the console, the controller) for one round trip, never for
/// the time the other products take to read: the API has no conditional write.
async fn describe_each(
    client: &CloudClient,
    credentials: &Credentials,
    (products, write_back): (&[(Service, String, String)], bool),
    calls: &mut Vec<Call>,
) {
    for (service, region, product_id) in products {
        let answer = client
            .read_product(*service, credentials, region, product_id)
            .await;
        let outcome = match &answer {
            Ok(product) => CallResult::Allowed(settings(product)),
            Err(error) => refused(error),
        };
        calls.push(call(
            (*service, read_action(*service)),
            region,
            Some(product_id),
            outcome,
        ));
        if let (Ok(product), true) = (answer, write_back) {
            calls
                .push(write_back_settings(client, credentials, (*service, region), &product).await);
        }
    }
    if products.is_empty() {
        let why = "no product to read: name one with --product (or -f), or let DescribeProducts list them";
        calls.push(call(
            (Service::IotHub, Action::DescribeProduct),
            "-",
            None,
            CallResult::Skipped(why.to_owned()),
        ));
    }
    if !write_back {
        let why = "read-only: --write-back writes each product's current settings back";
        calls.push(call(
            (Service::IotHub, Action::UpdateProductDynamicRegister),
            "-",
            None,
            CallResult::Skipped(why.to_owned()),
        ));
    }
}

/// The service's update (`UpdateProductDynamicRegister`, or `ModifyProductDynamicRegister`)
/// with the settings `product` was just read with.
async fn write_back_settings(
    client: &CloudClient,
    credentials: &Credentials,
    (service, region): (Service, &str),
    product: &Product,
) -> Call {
    let current = crate::cloud::RegistrationRequest {
        register_type: product.registration.register_type,
        register_limit: product.registration.register_limit,
    };
    let answer = client
        .update_registration(service, credentials, region, &product.product_id, current)
        .await;
    let outcome = match answer {
        Ok(outcome) => CallResult::Allowed(format!(
            "wrote RegisterType {:?}, RegisterLimit {} back (RequestId {})",
            current.register_type, current.register_limit, outcome.request_id
        )),
        Err(error) => refused(&error),
    };
    call(
        (service, update_action(service)),
        region,
        Some(&product.product_id),
        outcome,
    )
}

/// How `service` reads one product: with its update, what the controller cannot work without
/// (`ObserveOnly` needs only the read). IoT Hub's `DescribeProducts` saves calls, one page for
/// 250 products, but the controller reads products one by one when it is refused.
fn read_action(service: Service) -> Action {
    match service {
        Service::IotHub => Action::DescribeProduct,
        _ => Action::DescribeProductDynamicRegister,
    }
}

/// How `service` sets a product's dynamic registration.
fn update_action(service: Service) -> Action {
    match service {
        Service::IotHub => Action::UpdateProductDynamicRegister,
        _ => Action::ModifyProductDynamicRegister,
    }
}

fn call(
    (service, action): (Service, Action),
    region: &str,
    product: Option<&String>,
    outcome: CallResult,
) -> Call {
    Call {
        service,
        action,
        region: region.to_owned(),
        product: product.cloned(),
        outcome,
    }
}

fn refused(error: &CloudError) -> CallResult {
    CallResult::Refused {
        class: error.class(),
        code: error.code().to_owned(),
        message: error.to_string(),
    }
}

/// A listing's outcome: how many products, and the first few.
fn listing(listed: Result<Vec<Product>, CloudError>) -> CallResult {
    match listed {
        Ok(products) => {
            let mut ids: Vec<&str> = products.iter().map(|p| p.product_id.as_str()).collect();
            let count = ids.len();
            ids.truncate(NAMED_IN_LISTING);
            let more = if count > NAMED_IN_LISTING {
                ", …"
            } else {
                ""
            };
            CallResult::Allowed(format!("{count} products ({}{more})", ids.join(", ")))
        }
        Err(error) => refused(&error),
    }
}

/// A product's settings, in a few words (never its ProductSecret, only whether it has one).
fn settings(product: &Product) -> String {
    let registration = &product.registration;
    let secret = match registration.product_secret {
        Some(_) => "a ProductSecret",
        None => "no ProductSecret yet",
    };
    format!(
        "RegisterType {:?}, RegisterLimit {}, {secret}",
        registration.register_type, registration.register_limit
    )
}

/// Whether the key signs correctly, as the cloud's answers show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// The cloud authenticated it (it answered at least one call on its merits).
    Accepted,
    /// The cloud refused the key itself (its code).
    Refused(String),
    /// The key is fine but its account is suspended (its code).
    AccountSuspended(String),
    /// No answer said (the cloud could not be reached).
    Unknown,
}

impl Report {
    /// What the answers say of the key.
    pub fn key(&self) -> KeyVerdict {
        let refusals = || {
            self.calls.iter().filter_map(|call| match &call.outcome {
                CallResult::Refused { class, code, .. } => Some((*class, code)),
                _ => None,
            })
        };
        if let Some((_, code)) = refusals().find(|(class, _)| *class == ErrorClass::Auth) {
            return KeyVerdict::Refused(code.clone());
        }
        if let Some((_, code)) = refusals().find(|(class, _)| *class == ErrorClass::Account) {
            return KeyVerdict::AccountSuspended(code.clone());
        }
        let judged = self.calls.iter().any(|call| match &call.outcome {
            CallResult::Allowed(_) => true,
            CallResult::Refused { class, .. } => {
                !class.is_retryable() && *class != ErrorClass::Unknown
            }
            CallResult::Skipped(_) => false,
        });
        if judged {
            KeyVerdict::Accepted
        } else {
            KeyVerdict::Unknown
        }
    }

    /// The actions CAM refused the key, in the order of [`Service::all_actions`].
    pub fn lacking(&self) -> Vec<(Service, Action)> {
        let refused: BTreeSet<(Service, Action)> = self
            .calls
            .iter()
            .filter(|call| {
                matches!(&call.outcome, CallResult::Refused { code, .. } if CAM_REFUSALS.contains(&code.as_str()))
            })
            .map(|call| (call.service, call.action))
            .collect();
        Service::all_actions()
            .filter(|api| refused.contains(api))
            .collect()
    }

    /// The CAM policy granting what the key lacks, if it lacks anything. The IoT services'
    /// actions are authorized per operation (CAM lists them with operation-level granularity),
    /// so the statement names every resource.
    pub fn missing_policy(&self) -> Option<serde_json::Value> {
        let lacking = self.lacking();
        if lacking.is_empty() {
            return None;
        }
        let actions: Vec<String> = lacking
            .iter()
            .map(|(service, action)| format!("{service}:{action}"))
            .collect();
        Some(serde_json::json!({
            "version": "2.0",
            "statement": [{"effect": "allow", "action": actions, "resource": ["*"]}],
        }))
    }

    /// 0: the key can do what the controller needs (a refused listing only costs calls);
    /// 1: it cannot (refused, suspended, a required action refused, a product not reached);
    /// 2: the cloud's answers do not say (no answer, or only failures that may pass).
    pub fn exit_code(&self) -> u8 {
        match self.key() {
            KeyVerdict::Refused(_) | KeyVerdict::AccountSuspended(_) => return 1,
            KeyVerdict::Unknown => return 2,
            KeyVerdict::Accepted => {}
        }
        let mut inconclusive = false;
        for call in &self.calls {
            let CallResult::Refused { class, .. } = &call.outcome else {
                continue;
            };
            if class.is_retryable() || *class == ErrorClass::Unknown {
                inconclusive = true;
            } else if call.action == read_action(call.service)
                || call.action == update_action(call.service)
            {
                return 1;
            }
        }
        if inconclusive { 2 } else { 0 }
    }
}
