//! Authenticates a request as the cloud does, from the bytes received.

use std::collections::HashMap;

use subtle::ConstantTimeEq;

use crate::cloud::Service;
use crate::cloud::sign::{self, Method};
use crate::cloud::wire::Action;
use crate::emulator::seed::SeedPolicy;

/// An API key the emulator knows.
#[derive(Clone)]
pub struct Account {
    /// SecretKey.
    pub secret_key: String,
    /// Session token the requests must carry, for temporary credentials.
    pub token: Option<String>,
    /// Temporary credentials STS issued are refused from then on (Unix seconds).
    pub expires_at: Option<i64>,
    /// The cloud account whose products the key sees.
    pub owner: String,
    /// What the key may do.
    pub policy: Option<SeedPolicy>,
}

/// The parts of an HTTP request the checks need.
pub struct Incoming<'a> {
    /// `POST` or `GET`.
    pub method: &'a str,
    /// Raw query string, without `?`.
    pub query: &'a str,
    /// Looks up a header by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    /// The body exactly as received.
    pub body: &'a [u8],
}

/// Who called, what for, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The verified SecretId.
    pub secret_id: String,
    /// The service called (`iotcloud`, `iotexplorer`, `iotvideo`, `sts`).
    pub service: Service,
    /// The action asked for.
    pub action: Action,
    /// `X-TC-Region`.
    pub region: String,
    /// The cloud account of the key.
    pub owner: String,
    /// What the key may do.
    pub policy: Option<SeedPolicy>,
}

impl Caller {
    /// Refuses what the key's policy does not grant, as CAM does.
    pub fn check_policy(&self, product_id: Option<&str>) -> Result<(), Refusal> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let action = self.action.as_str();
        let service = self.service.name();
        let refused = || {
            Refusal::new(
                "AuthFailure.UnauthorizedOperation",
                format!(
                    "the key may not perform {service}:{action} on {}",
                    product_id.unwrap_or("all products")
                ),
            )
        };
        // A policy names `service:Action`; a bare action name means IoT Hub's.
        let grants = |allowed: &String| match allowed.split_once(':') {
            Some((of, name)) => of == service && name == action,
            None => self.service == Service::IotHub && allowed == action,
        };
        if policy
            .actions
            .as_ref()
            .is_some_and(|actions| !actions.iter().any(grants))
        {
            return Err(refused());
        }
        match (&policy.products, product_id) {
            (None, _) => Ok(()),
            (Some(products), Some(id)) if products.iter().any(|allowed| allowed == id) => Ok(()),
            (Some(_), _) => Err(refused()),
        }
    }
}

/// Why the cloud refuses a request: an error code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Dotted error code.
    pub code: String,
    /// Explanation.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What the checks need to know besides the request.
pub struct Verifier<'a> {
    /// Known keys by SecretId.
    pub accounts: &'a HashMap<String, Account>,
    /// Unix seconds now.
    pub now: i64,
    /// How far `X-TC-Timestamp` may be from now, in seconds (the cloud allows 300).
    pub window: i64,
}

impl Verifier<'_> {
    /// Checks signature, timestamp, key, token, action, version and region, in that order.
    pub fn authenticate(&self, request: &Incoming<'_>) -> Result<Caller, Refusal> {
        let method = match request.method {
            "POST" => Method::Post,
            "GET" => Method::Get,
            other => {
                return Err(Refusal::new(
                    "UnsupportedProtocol",
                    format!("HTTP method {other} is not supported; use POST or GET"),
                ));
            }
        };
        let header = |name| (request.header)(name);
        let authorization = header("authorization")
            .and_then(sign::parse_authorization)
            .ok_or_else(|| {
                Refusal::new(
                    "AuthFailure.InvalidAuthorization",
                    "the Authorization header is missing or not TC3-HMAC-SHA256",
                )
            })?;
        let timestamp = self.timestamp(header("x-tc-timestamp"))?;
        let account = self.accounts.get(&authorization.secret_id).ok_or_else(|| {
            Refusal::new(
                "AuthFailure.SecretIdNotFound",
                "the SecretId does not exist or has been disabled",
            )
        })?;
        check_token(account, header("x-tc-token"))?;
        if account.expires_at.is_some_and(|expiry| self.now >= expiry) {
            return Err(Refusal::new(
                "AuthFailure.TokenFailure",
                "the temporary credentials have expired",
            ));
        }
        let service = called_service(
            header("host"),
            header("x-tc-action").and_then(Action::from_name),
            &authorization.service,
        );
        check_scope(&authorization, timestamp, service.name())?;

        check_signature(
            request,
            method,
            &authorization,
            timestamp,
            &account.secret_key,
        )?;
        let (action, region) = target(service, &header)?;
        Ok(Caller {
            secret_id: authorization.secret_id,
            service,
            action,
            region,
            owner: account.owner.clone(),
            policy: account.policy.clone(),
        })
    }

    fn timestamp(&self, header: Option<&str>) -> Result<i64, Refusal> {
        let text =
            header.ok_or_else(|| Refusal::new("MissingParameter", "X-TC-Timestamp is missing"))?;
        let timestamp: i64 = text
            .trim()
            .parse()
            .map_err(|_| Refusal::new("InvalidParameter", "X-TC-Timestamp must be Unix seconds"))?;
        // Hostile timestamps (i64::MIN, i64::MAX) must not overflow: compare distances unsigned.
        if self.now.abs_diff(timestamp) > self.window.unsigned_abs() {
            return Err(Refusal::new(
                "AuthFailure.SignatureExpire",
                format!(
                    "the signature expired: X-TC-Timestamp {timestamp} is more than {} s from the server time {}",
                    self.window, self.now
                ),
            ));
        }
        Ok(timestamp)
    }
}

fn check_token(account: &Account, sent: Option<&str>) -> Result<(), Refusal> {
    let sent = sent.filter(|token| !token.is_empty());
    match (&account.token, sent) {
        (None, None) => Ok(()),
        (Some(expected), Some(sent)) if bool::from(expected.as_bytes().ct_eq(sent.as_bytes())) => {
            Ok(())
        }
        (Some(_), None) => Err(Refusal::new(
            "AuthFailure.TokenFailure",
            "temporary credentials need X-TC-Token",
        )),
        _ => Err(Refusal::new(
            "AuthFailure.TokenFailure",
            "the token is invalid",
        )),
    }
}

/// The signature, recomputed from the received parts, must match (compared in constant time).
fn check_signature(
    request: &Incoming<'_>,
    method: Method,
    authorization: &sign::Authorization,
    timestamp: i64,
    secret_key: &str,
) -> Result<(), Refusal> {
    let header = |name| (request.header)(name);
    let content_type = header("content-type").unwrap_or("");
    let host = header("host").unwrap_or("");
    let canonical = sign::canonical_request(
        method,
        request.query,
        content_type,
        host,
        sign::signed_payload(method, request.body),
    );
    let to_sign = sign::string_to_sign(
        timestamp,
        &sign::credential_scope(&authorization.date, &authorization.service),
        &canonical,
    );
    let expected = sign::signature(
        secret_key,
        &authorization.date,
        &authorization.service,
        &to_sign,
    );
    if bool::from(
        expected
            .as_bytes()
            .ct_eq(authorization.signature.as_bytes()),
    ) {
        return Ok(());
    }
    Err(Refusal::new(
        "AuthFailure.SignatureFailure",
        "the request signature does not match; check the SecretKey and the signing method",
    ))
}

/// The service a request is for. The cloud knows it from the host (`iotexplorer.…`); at a
/// loopback address, from the action when one service serves it, else (`Describe`/
/// `ModifyProductDynamicRegister`, in both Explorer and Video) from the signature's scope, when
/// that names one of them. A scope naming another service then fails the scope check.
fn called_service(host: Option<&str>, action: Option<Action>, scope: &str) -> Service {
    let by_host = host
        .and_then(|host| host.split('.').next())
        .filter(|_| host.is_some_and(|host| host.ends_with(".tencentcloudapi.com")))
        .and_then(Service::from_name);
    if let Some(service) = by_host {
        return service;
    }
    let Some(action) = action else {
        return Service::from_name(scope).unwrap_or(Service::IotHub);
    };
    let mut serving = Service::ALL
        .into_iter()
        .filter(|service| service.serves(action));
    let first = serving.clone().next().unwrap_or(Service::IotHub);
    serving
        .find(|service| service.name() == scope)
        .unwrap_or(first)
}

/// The action, version and region the request names.
fn target<'a>(
    service: Service,
    header: &impl Fn(&'a str) -> Option<&'a str>,
) -> Result<(Action, String), Refusal> {
    let action = match header("x-tc-action") {
        None | Some("") => {
            return Err(Refusal::new("MissingParameter", "X-TC-Action is missing"));
        }
        Some(name) => Action::from_name(name)
            .filter(|action| service.serves(*action))
            .ok_or_else(|| {
                Refusal::new(
                    "InvalidAction",
                    format!("the action {name} does not exist in {service}"),
                )
            })?,
    };
    let version = service.version();
    match header("x-tc-version") {
        None | Some("") => {
            return Err(Refusal::new("MissingParameter", "X-TC-Version is missing"));
        }
        Some(sent) if sent == version => {}
        Some(other) => {
            return Err(Refusal::new(
                "NoSuchVersion",
                format!("version {other} does not exist; {service} speaks {version}"),
            ));
        }
    }
    let region = match header("x-tc-region") {
        Some(region) if !region.trim().is_empty() => region.trim().to_owned(),
        _ => return Err(Refusal::new("MissingParameter", "X-TC-Region is missing")),
    };
    Ok((action, region))
}

fn check_scope(
    authorization: &sign::Authorization,
    timestamp: i64,
    service: &str,
) -> Result<(), Refusal> {
    let failure = |message: String| Refusal::new("AuthFailure.SignatureFailure", message);
    let Some(date) = sign::utc_date(timestamp) else {
        return Err(failure("X-TC-Timestamp is not a time".to_owned()));
    };
    if authorization.date != date {
        return Err(failure(format!(
            "credential scope date {} is not the UTC date of X-TC-Timestamp ({date})",
            authorization.date
        )));
    }
    if authorization.service != service {
        return Err(failure(format!(
            "credential scope service {} is not {service}",
            authorization.service,
        )));
    }
    if authorization.signed_headers != sign::SIGNED_HEADERS {
        return Err(failure(format!(
            "SignedHeaders must be {}",
            sign::SIGNED_HEADERS
        )));
    }
    Ok(())
}
