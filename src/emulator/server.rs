//! The emulator's HTTP side: the API at `/`, the control endpoints under `/_emulator/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as IncomingBody;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::seed::DEFAULT_ACCOUNT;
use super::seed::Seed;
use super::stats::{self, Stats};
use super::store::Scope;
use super::store::{ConsoleEdit, LimitPolicy, Store};
use super::sts::Sts;
use super::verify::{Account, Caller, Incoming, Refusal, Verifier};
use crate::cloud::Service;
use crate::cloud::wire::{Action, ApiError, ErrorResponse};

/// Bodies larger than this are refused before parsing.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Faults injected into API calls that pass authentication and the rate limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API answer.
    pub latency_ms: u64,
    /// Probability of answering `InternalError`.
    pub internal_error_rate: f64,
    /// Probability of answering HTTP 502.
    pub http502_rate: f64,
    /// Probability of answering HTTP 503.
    pub http503_rate: f64,
    /// Probability of closing the connection without an answer.
    pub drop_rate: f64,
    /// Probability of doing what was asked, then closing the connection without an answer: the
    /// client cannot tell whether it happened, as after a timeout.
    pub lost_answer_rate: f64,
}

impl Faults {
    /// Refuses rates that are not probabilities.
    pub fn check(&self) -> Result<(), String> {
        let rates = [
            self.internal_error_rate,
            self.http502_rate,
            self.http503_rate,
            self.drop_rate,
            self.lost_answer_rate,
        ];
        if rates.iter().any(|rate| !(0.0..=1.0).contains(rate)) {
            return Err("fault rates are probabilities between 0 and 1".to_owned());
        }
        Ok(())
    }
}

/// `GetCallerIdentity`'s answer. The emulator's accounts have names, not UINs: the name stands
/// for the account's UIN and the SecretId for the user's.
fn caller_identity(caller: &Caller, request_id: &str) -> Value {
    json!({
        "Arn": format!("qcs::cam::uin/{}:uin/{}", caller.owner, caller.secret_id),
        "AccountId": caller.owner,
        "UserId": caller.secret_id,
        "PrincipalId": caller.owner,
        "Type": "CAMUser",
        "RequestId": request_id,
    })
}

/// Puts an account in arrears or takes it out (`PUT /_emulator/accounts/NAME/isolated`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Isolation {
    isolated: bool,
}

/// An error code the next calls about one product answer with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptedError {
    /// The error code, e.g. `InternalError` or `ResourceNotFound.ProductNotExist`.
    pub code: String,
    /// How many calls get it; every call until cleared when absent.
    #[serde(default)]
    pub times: Option<u32>,
}

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Accounts and products.
    pub seed: Seed,
    /// Calls per second allowed per (SecretId, action).
    pub rate_limit_per_second: u32,
    /// How far `X-TC-Timestamp` may be from now, in seconds.
    pub timestamp_window_seconds: i64,
    /// RegisterLimit rewriting.
    pub limit_policy: LimitPolicy,
    /// Faults from the start.
    pub faults: Faults,
    /// DescribeProducts answers leave ProductSecret out.
    pub list_omits_product_secret: bool,
    /// Lifetime of the temporary credentials STS issues, whatever was asked.
    pub temporary_credentials_lifetime_seconds: Option<i64>,
}

impl EmulatorConfig {
    /// The cloud's defaults: 20 calls/s, a 300 s signature window, limits applied as asked.
    pub fn new(seed: Seed) -> Self {
        Self {
            seed,
            rate_limit_per_second: 20,
            timestamp_window_seconds: 300,
            limit_policy: LimitPolicy::default(),
            faults: Faults::default(),
            list_omits_product_secret: false,
            temporary_credentials_lifetime_seconds: None,
        }
    }
}

/// The emulated cloud.
pub struct Emulator {
    /// Seeded keys, and the temporary credentials STS issued since.
    accounts: RwLock<HashMap<String, Account>>,
    sts: Sts,
    timestamp_window_seconds: i64,
    state: Mutex<State>,
}

struct State {
    store: Store,
    stats: Stats,
    faults: Faults,
    scripted: HashMap<String, ScriptedError>,
    rate_limit_per_second: u32,
    /// The last API request of each action, as `GET /_emulator/last-requests` shows it.
    last_requests: BTreeMap<String, Value>,
    /// Cloud accounts in arrears.
    isolated: HashSet<String>,
}

impl State {
    fn isolate(&mut self, account: &str, setting: Isolation) -> Value {
        match setting.isolated {
            true => self.isolated.insert(account.to_owned()),
            false => self.isolated.remove(account),
        };
        json!({"account": account, "isolated": setting.isolated})
    }

    fn set_rate_limit(&mut self, setting: RateLimitSetting) -> Result<Value, (StatusCode, String)> {
        if setting.per_second == 0 {
            return Err(bad_request("perSecond must be at least 1".to_owned()));
        }
        self.rate_limit_per_second = setting.per_second;
        Ok(json!({"perSecond": setting.per_second}))
    }
}

/// A call's parameters, or why they cannot be read.
type Params = Result<Map<String, Value>, Refusal>;

/// What to do with an API call after the checks.
enum Answer {
    Json(Value),
    Status(StatusCode),
    Drop,
}

impl Emulator {
    /// An emulator in its seeded state.
    pub fn new(config: EmulatorConfig) -> Self {
        let accounts = config
            .seed
            .accounts
            .iter()
            .map(|account| {
                (
                    account.secret_id.clone(),
                    Account {
                        secret_key: account.secret_key.clone(),
                        token: account.token.clone(),
                        expires_at: None,
                        owner: account
                            .account
                            .clone()
                            .unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned()),
                        policy: account.policy.clone(),
                    },
                )
            })
            .collect();
        let mut store = Store::new(config.seed.all_products(), unix_now());
        store.limit_policy = config.limit_policy;
        store.list_omits_product_secret = config.list_omits_product_secret;
        Self {
            accounts: RwLock::new(accounts),
            sts: Sts {
                roles: config.seed.roles.clone(),
                lifetime_seconds: config.temporary_credentials_lifetime_seconds,
            },
            timestamp_window_seconds: config.timestamp_window_seconds,
            state: Mutex::new(State {
                store,
                stats: Stats::default(),
                faults: config.faults,
                scripted: HashMap::new(),
                rate_limit_per_second: config.rate_limit_per_second.max(1),
                last_requests: BTreeMap::new(),
                isolated: config.seed.isolated_accounts.iter().cloned().collect(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves connections from `listener` until `shutdown` completes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "accept failed");
                        continue;
                    }
                },
            };
            let emulator = self.clone();
            let from_loopback = peer.ip().is_loopback();
            tokio::spawn(async move {
                let service =
                    service_fn(move |request| emulator.clone().route(request, from_loopback));
                // Errors here are clients going away, or a drop fault closing the connection.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn route(
        self: Arc<Self>,
        request: Request<IncomingBody>,
        from_loopback: bool,
    ) -> Result<Response<Full<Bytes>>, DroppedConnection> {
        let path = request.uri().path().to_owned();
        if path == "/" {
            return self.api(request).await;
        }
        // The control endpoints have no authentication: loopback callers only, and writes in
        // JSON only, so that a web page cannot reach them with a plain form post.
        if !from_loopback {
            return Ok(json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": "control endpoints answer loopback callers only"}),
            ));
        }
        let method = request.method().clone();
        let is_json = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.split(';').next() == Some("application/json"));
        if method != http::Method::GET && method != http::Method::DELETE && !is_json {
            return Ok(json_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &json!({"error": "control endpoints take Content-Type: application/json"}),
            ));
        }
        let body = match read_body(request.into_body()).await {
            Ok(body) => body,
            Err(status) => return Ok(status_response(status)),
        };
        Ok(self.control(&method, &path, &body))
    }

    async fn api(
        &self,
        request: Request<IncomingBody>,
    ) -> Result<Response<Full<Bytes>>, DroppedConnection> {
        let (parts, body) = request.into_parts();
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(status) => return Ok(status_response(status)),
        };
        let request_id = new_request_id();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(action) = header("x-tc-action") {
            let seen = as_seen(&parts.headers, &body);
            self.state().last_requests.insert(action.to_owned(), seen);
        }
        if header("x-tc-action") == Some(Action::AssumeRoleWithWebIdentity.as_str()) {
            return Ok(self.assume_role(
                (header("authorization"), header("x-tc-version")),
                &body,
                &request_id,
            ));
        }
        // Checked before any await: `Incoming` borrows the headers through a non-Send closure.
        let checked = self.authenticate(&parts, &body);
        let action_label = match &checked {
            Ok((caller, _)) => stats::label(caller.service, caller.action),
            Err(_) => header("x-tc-action")
                .and_then(Action::from_name)
                .map_or("Other", Action::as_str)
                .to_owned(),
        };
        let answer = match checked {
            Err(refusal) => Err(refusal),
            Ok((caller, params)) => self.serve_call(&caller, params, &request_id).await,
        };
        let (result, answer) = match answer {
            Ok(answer) => ("Success".to_owned(), answer),
            Err(refusal) => (
                refusal.code.clone(),
                Answer::Json(error_body(refusal, &request_id)),
            ),
        };
        let result = match &answer {
            Answer::Status(status) => format!("HTTP{}", status.as_u16()),
            Answer::Drop => "Dropped".to_owned(),
            Answer::Json(_) => result,
        };
        debug!(action = action_label, %result, request_id, "emulated call");
        self.state().stats.record(&action_label, &result);
        match answer {
            // Success and error answers alike travel as HTTP 200 inside {"Response": …}.
            Answer::Json(body) => Ok(json_response(StatusCode::OK, &json!({"Response": body}))),
            Answer::Status(status) => Ok(status_response(status)),
            Answer::Drop => Err(DroppedConnection),
        }
    }

    /// Who calls (signature, timestamp, key, action, region), and the call's parameters.
    fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<(Caller, Params), Refusal> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let incoming = Incoming {
            method: parts.method.as_str(),
            query: parts.uri.query().unwrap_or(""),
            header: &header,
            body,
        };
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        let verifier = Verifier {
            accounts: &accounts,
            now: unix_now(),
            window: self.timestamp_window_seconds,
        };
        verifier
            .authenticate(&incoming)
            .map(|caller| (caller, parse_params(&incoming)))
    }

    /// STS: unsigned (`Authorization: SKIP`, as the official SDK sends it), rate limited per
    /// role, then temporary credentials the verifier accepts until they expire.
    fn assume_role(
        &self,
        (authorization, version): (Option<&str>, Option<&str>),
        body: &[u8],
        request_id: &str,
    ) -> Response<Full<Bytes>> {
        let action = Action::AssumeRoleWithWebIdentity;
        let params: Map<String, Value> = serde_json::from_slice(body).unwrap_or_default();
        let role = params
            .get("RoleArn")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let answer = {
            let mut state = self.state();
            let per_second = state.rate_limit_per_second;
            if authorization != Some("SKIP") {
                // A server that verifies TC3 takes a call without Authorization as a broken
                // signature; only `SKIP` says the call is unsigned on purpose.
                Err(Refusal::new(
                    "AuthFailure.InvalidAuthorization",
                    "the Authorization header is missing or not TC3-HMAC-SHA256 (an unsigned call says Authorization: SKIP)",
                ))
            } else if state.stats.admit(
                &role,
                (Service::Sts, action),
                per_second,
                tokio::time::Instant::now(),
            ) {
                self.sts.assume(version, &params, unix_now(), request_id)
            } else {
                Err(Refusal::new(
                    "RequestLimitExceeded",
                    format!("{action} is limited to {per_second} requests per second"),
                ))
            }
        };
        let (result, body) = match answer {
            Ok(issued) => {
                let now = unix_now();
                let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
                // Expired temporary credentials are forgotten as new ones come.
                accounts.retain(|_, account| account.expires_at.is_none_or(|at| at > now - 3600));
                accounts.insert(issued.secret_id, issued.account);
                ("Success".to_owned(), issued.answer)
            }
            Err(refusal) => (refusal.code.clone(), error_body(refusal, request_id)),
        };
        debug!(action = action.as_str(), %result, request_id, "emulated call");
        self.state().stats.record(action.as_str(), &result);
        json_response(StatusCode::OK, &json!({"Response": body}))
    }

    /// Rate limit, faults, scripted errors, then the action itself.
    async fn serve_call(
        &self,
        caller: &Caller,
        params: Result<Map<String, Value>, Refusal>,
        request_id: &str,
    ) -> Result<Answer, Refusal> {
        let faults = {
            let mut state = self.state();
            let per_second = state.rate_limit_per_second;
            let now = tokio::time::Instant::now();
            if !state.stats.admit(
                &caller.secret_id,
                (caller.service, caller.action),
                per_second,
                now,
            ) {
                return Err(Refusal::new(
                    "RequestLimitExceeded",
                    format!(
                        "{} is limited to {per_second} requests per second",
                        caller.action
                    ),
                ));
            }
            state.faults.clone()
        };
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        if let Some(answer) = injected_fault(&faults)? {
            return Ok(answer);
        }
        let params = params?;
        if caller.action == Action::GetCallerIdentity {
            // STS answers whoever signed, whatever their policy or balance.
            return Ok(Answer::Json(caller_identity(caller, request_id)));
        }
        caller.check_policy(params.get("ProductId").and_then(Value::as_str))?;
        let mut state = self.state();
        // CAM judges the key first; the service then finds its account in arrears.
        if state.isolated.contains(&caller.owner) {
            return Err(Refusal::new(
                "FailedOperation.AccountIsolated",
                "the account is isolated for overdue payment",
            ));
        }
        if let Some(refusal) = state.scripted_error(&params) {
            return Err(refusal);
        }
        let scope = Scope {
            region: &caller.region,
            account: &caller.owner,
        };
        let done =
            state
                .store
                .handle((caller.service, caller.action), &scope, &params, request_id)?;
        if rand::rng().random_bool(faults.lost_answer_rate) {
            return Ok(Answer::Drop);
        }
        Ok(Answer::Json(done))
    }

    fn control(&self, method: &http::Method, path: &str, body: &[u8]) -> Response<Full<Bytes>> {
        let segments: Vec<&str> = path
            .trim_start_matches("/_emulator/")
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut state = self.state();
        let result: Result<Value, (StatusCode, String)> =
            match (method.as_str(), segments.as_slice()) {
                ("GET", ["stats"]) => Ok(to_json(state.stats.report(state.rate_limit_per_second))),
                ("POST", ["stats", "reset"]) => {
                    state.stats.reset();
                    Ok(json!({"reset": true}))
                }
                ("GET", ["products"]) => Ok(to_json(state.store.list())),
                ("GET", ["last-requests"]) => Ok(to_json(&state.last_requests)),
                ("PUT" | "POST", ["products", id, "errors"]) => {
                    parse::<ScriptedError>(body).map(|scripted| {
                        let answer = to_json(&scripted);
                        state.scripted.insert((*id).to_owned(), scripted);
                        answer
                    })
                }
                ("DELETE", ["products", id, "errors"]) => {
                    state.scripted.remove(*id);
                    Ok(json!({"cleared": id}))
                }
                // `products/ID`, or `products/SERVICE/ID` where one ID is in several services.
                ("POST" | "PATCH", ["products", named @ ..]) => product_named(named)
                    .and_then(|product| {
                        let edit = parse::<ConsoleEdit>(body)?;
                        state.store.edit(product, edit).map_err(not_found)
                    })
                    .map(to_json),
                ("DELETE", ["products", named @ ..]) => {
                    product_named(named).and_then(|product| match state.store.remove(product) {
                        true => Ok(json!({"deleted": product.1})),
                        false => Err(not_found(format!("no product {}", product.1))),
                    })
                }
                ("GET", ["faults"]) => Ok(to_json(&state.faults)),
                ("PUT" | "POST", ["faults"]) => parse::<Faults>(body).and_then(|faults| {
                    faults.check().map_err(bad_request)?;
                    state.faults = faults;
                    Ok(to_json(&state.faults))
                }),
                ("PUT" | "POST", ["accounts", account, "isolated"]) => {
                    parse::<Isolation>(body).map(|setting| state.isolate(account, setting))
                }
                ("PUT" | "POST", ["rate-limit"]) => parse::<RateLimitSetting>(body)
                    .and_then(|setting| state.set_rate_limit(setting)),
                _ => Err((
                    StatusCode::NOT_FOUND,
                    format!("no control endpoint {method} {path}"),
                )),
            };
        match result {
            Ok(value) => json_response(StatusCode::OK, &value),
            Err((status, message)) => json_response(status, &json!({"error": message})),
        }
    }
}

/// A request as the control endpoint shows it: its headers (the session token and a signature
/// left out) and the names of its parameters.
fn as_seen(headers: &http::HeaderMap, body: &[u8]) -> Value {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("(not text)");
            let shown = match name.as_str() {
                "x-tc-token" => "(token)".to_owned(),
                "authorization" => value
                    .split_once(' ')
                    .map_or(value, |(algorithm, _)| algorithm)
                    .to_owned(),
                _ => value.to_owned(),
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    let params: Vec<String> = serde_json::from_slice::<Map<String, Value>>(body)
        .map(|params| params.keys().cloned().collect())
        .unwrap_or_default();
    json!({"headers": headers, "params": params})
}

impl State {
    /// The scripted error for the product a call names, used up one call at a time.
    fn scripted_error(&mut self, params: &Map<String, Value>) -> Option<Refusal> {
        let product_id = params.get("ProductId")?.as_str()?;
        let scripted = self.scripted.get_mut(product_id)?;
        let code = scripted.code.clone();
        match &mut scripted.times {
            Some(0) => return None,
            Some(times) => *times -= 1,
            None => {}
        }
        Some(Refusal::new(
            code,
            format!("scripted fault for product {product_id}"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RateLimitSetting {
    per_second: u32,
}

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug)]
struct DroppedConnection;

impl std::fmt::Display for DroppedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DroppedConnection {}

fn injected_fault(faults: &Faults) -> Result<Option<Answer>, Refusal> {
    let mut rng = rand::rng();
    if rng.random_bool(faults.drop_rate) {
        return Ok(Some(Answer::Drop));
    }
    if rng.random_bool(faults.http502_rate) {
        return Ok(Some(Answer::Status(StatusCode::BAD_GATEWAY)));
    }
    if rng.random_bool(faults.http503_rate) {
        return Ok(Some(Answer::Status(StatusCode::SERVICE_UNAVAILABLE)));
    }
    if rng.random_bool(faults.internal_error_rate) {
        return Err(Refusal::new("InternalError", "injected internal error"));
    }
    Ok(None)
}

/// Parameters from a JSON body, or from the query string (GET) or a form body.
fn parse_params(incoming: &Incoming<'_>) -> Result<Map<String, Value>, Refusal> {
    let content_type = (incoming.header)("content-type").unwrap_or("");
    let form = |raw: &[u8]| {
        form_urlencoded::parse(raw)
            .map(|(key, value)| (key.into_owned(), Value::String(value.into_owned())))
            .collect()
    };
    if incoming.method == "GET" {
        return Ok(form(incoming.query.as_bytes()));
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        return Ok(form(incoming.body));
    }
    match serde_json::from_slice::<Value>(incoming.body) {
        Ok(Value::Object(params)) => Ok(params),
        _ => Err(Refusal::new(
            "InvalidParameter",
            "the request body must be a JSON object of parameters",
        )),
    }
}

async fn read_body(body: IncomingBody) -> Result<Bytes, StatusCode> {
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)
}

fn error_body(refusal: Refusal, request_id: &str) -> Value {
    to_json(ErrorResponse {
        error: ApiError {
            code: refusal.code,
            message: refusal.message,
        },
        request_id: request_id.to_owned(),
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn status_response(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "<html><body><h1>{status}</h1></body></html>"
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html"),
    );
    response
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| bad_request(e.to_string()))
}

fn bad_request(message: String) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message)
}

/// The product a control path names: `ID`, or `SERVICE/ID`.
fn product_named<'a>(
    named: &[&'a str],
) -> Result<(Option<Service>, &'a str), (StatusCode, String)> {
    match named {
        [id] => Ok((None, id)),
        [service, id] => Ok((Some(service.parse::<Service>().map_err(bad_request)?), id)),
        _ => Err(not_found("products/ID or products/SERVICE/ID".to_owned())),
    }
}

fn not_found(message: String) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, message)
}

fn to_json<T: Serialize>(value: T) -> Value {
    // Our own report types serialize to JSON without fail.
    serde_json::to_value(value).expect("emulator types serialize to JSON")
}

fn new_request_id() -> String {
    crate::cloud::client::trace_id()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An emulator serving on a loopback port in this process, for tests.
pub struct RunningEmulator {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The emulator itself.
    pub emulator: Arc<Emulator>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningEmulator {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let emulator = Arc::new(Emulator::new(config));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(emulator.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            emulator,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
