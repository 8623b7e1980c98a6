//! Typed, rate-limited, retrying client of the IoT services (IoT Hub, IoT Explorer, IoT Video)
//! and STS.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::credentials::Credentials;
use super::error::{CloudError, ErrorClass};
use super::limit::{BucketKey, Lane, RateLimiter, RateLimits};
use super::retry::RetryPolicy;
use super::service::Service;
use super::sign::{self, Method};
use super::types::{Product, RegisterType, RegistrationSettings, UpdateOutcome};
use super::wire::{self, Action};

/// IoT Hub's public endpoint (mainland China); `iotcloud.intl.tencentcloudapi.com` is the other
/// one. The other services' endpoints follow it ([`Endpoint::matching`]) unless set.
pub const DEFAULT_ENDPOINT: &str = "iotcloud.tencentcloudapi.com";
/// The STS endpoint, for web identity credentials.
pub const DEFAULT_STS_ENDPOINT: &str = "sts.tencentcloudapi.com";
/// The STS endpoint of the international site, whose accounts the mainland's does not know.
pub const INTL_STS_ENDPOINT: &str = "sts.intl.tencentcloudapi.com";

/// Most products paged through in one listing (400 pages of 250): a TotalCount that never
/// ends must not page forever.
pub const MAX_PRODUCTS: u64 = 100_000;

/// Answers larger than this are refused; a full `DescribeProducts` page is about 250 KiB.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Where requests go. `https` always, except plain `http` to a loopback address when explicitly
/// allowed (tests and the emulator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    url: reqwest::Url,
    host_header: String,
}

/// A configuration the client cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The endpoint is not a bare `https://host[:port]`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

impl Endpoint {
    /// Parses `host`, `https://host[:port]`, or with `allow_insecure_loopback`,
    /// `http://127.0.0.1:port` (or `localhost`, `[::1]`).
    pub fn parse(text: &str, allow_insecure_loopback: bool) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidEndpoint {
            endpoint: text.to_owned(),
            reason,
        };
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("https://{text}")
        };
        let url = reqwest::Url::parse(&with_scheme).map_err(|_| invalid("not a URL"))?;
        let host = url.host_str().ok_or_else(|| invalid("no host"))?.to_owned();
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "the API lives at the root path; give only scheme, host and port",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials do not belong in the endpoint"));
        }
        match url.scheme() {
            "https" => {}
            "http" if !allow_insecure_loopback => {
                return Err(invalid(
                    "plain http is refused; it is allowed for loopback test endpoints only, with the insecure option",
                ));
            }
            "http" if !is_loopback(&host) => {
                return Err(invalid("plain http is allowed for loopback addresses only"));
            }
            "http" => {}
            _ => return Err(invalid("scheme must be https")),
        }
        // `port()` is None when the URL gives the scheme's default port, matching what the Host
        // header must say.
        let host_header = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Ok(Self { url, host_header })
    }

    /// The Host header value, which the signature covers.
    pub fn host(&self) -> &str {
        &self.host_header
    }

    /// The URL requests are posted to.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The STS endpoint of this endpoint's site ([`Endpoint::matching`]).
    pub fn matching_sts(&self) -> Endpoint {
        self.matching(Service::Sts)
    }

    /// `service`'s endpoint on this endpoint's site: the international site's host for a host
    /// under `intl.tencentcloudapi.com` (`iotcloud.intl.tencentcloudapi.com`), the mainland's
    /// otherwise; a loopback endpoint (the emulator, which serves every service) is its own.
    pub fn matching(&self, service: Service) -> Endpoint {
        let host = self.url.host_str().unwrap_or_default();
        if is_loopback(host) {
            return self.clone();
        }
        let intl = host.ends_with(".intl.tencentcloudapi.com");
        Endpoint::parse(&service.host(intl), false)
            .expect("the services' hosts are valid https hosts")
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Source of the current time, so tests can sign as if at another moment.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How to build a [`CloudClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where IoT Hub's requests go; the other services' go to the matching host of its site
    /// unless `service_endpoints` names theirs.
    pub endpoint: Endpoint,
    /// The endpoints of other services, where they are set (`--endpoint SERVICE=URL`).
    pub service_endpoints: Vec<(Service, Endpoint)>,
    /// `X-TC-Language`: the language of the cloud's error messages. English by default, since
    /// they end up in status conditions read by platform teams everywhere.
    pub language: Option<String>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt, from sending to the end of the answer.
    pub request_timeout: Duration,
    /// Where `AssumeRoleWithWebIdentity` goes (web identity credentials).
    pub sts_endpoint: Endpoint,
    /// Requests per second per action.
    pub rate_limits: RateLimits,
    /// Retries of throttled and transient failures.
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoint: Endpoint::parse(DEFAULT_ENDPOINT, false)
                .expect("the default endpoint is a valid https host"),
            service_endpoints: Vec::new(),
            sts_endpoint: Endpoint::parse(DEFAULT_STS_ENDPOINT, false)
                .expect("the default STS endpoint is a valid https host"),
            language: Some("en-US".to_owned()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            rate_limits: RateLimits::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// The settings to ask `UpdateProductDynamicRegister` (or `ModifyProductDynamicRegister`) for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationRequest {
    /// The registration type wanted.
    pub register_type: RegisterType,
    /// The device limit wanted.
    pub register_limit: u64,
}

/// Told of every attempt, for metrics.
pub trait CallObserver: Send + Sync {
    /// An attempt of an action (`api`: of its service) ended with `code` (`Success` or the
    /// error code) after `latency`, having waited `waited` for the rate limiter.
    fn call_finished(
        &self,
        api: (Service, Action),
        code: &str,
        latency: Duration,
        waited: Duration,
    );

    /// An entry of the answer of `api`'s action could not be read and was left out (the rest
    /// was kept).
    fn entry_skipped(&self, api: (Service, Action)) {
        let _ = api;
    }
}

/// Client of the IoT services and STS; cheap to clone, one per process.
#[derive(Clone)]
pub struct CloudClient {
    inner: Arc<Inner>,
    observer: Option<Arc<dyn CallObserver>>,
    lane: Lane,
}

struct Inner {
    http: reqwest::Client,
    /// One per service.
    endpoints: std::collections::HashMap<Service, Endpoint>,
    language: Option<String>,
    limiter: RateLimiter,
    retry: RetryPolicy,
    clock: Clock,
}

impl std::fmt::Debug for CloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudClient")
            .field("endpoint", &self.endpoint().host())
            .finish_non_exhaustive()
    }
}

impl CloudClient {
    /// Builds the client: one connection pool, rate limits and retry policy for all calls.
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(SystemTime::now))
    }

    /// Like [`CloudClient::new`], signing with `clock` instead of the system time.
    pub fn with_clock(config: ClientConfig, clock: Clock) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("iothub-dynreg/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ConfigError::HttpClient)?;
        let mut endpoints: std::collections::HashMap<_, _> = Service::PRODUCTS
            .into_iter()
            .map(|service| (service, config.endpoint.matching(service)))
            .collect();
        endpoints.insert(Service::IotHub, config.endpoint);
        endpoints.insert(Service::Sts, config.sts_endpoint);
        endpoints.extend(config.service_endpoints);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints,
                language: config.language,
                limiter: RateLimiter::new(config.rate_limits),
                retry: config.retry,
                clock,
            }),
            observer: None,
            lane: Lane::Bulk,
        })
    }

    /// How many rate-limiter buckets the client holds (one per endpoint, SecretId, service and
    /// action in recent use).
    pub fn limiter_buckets(&self) -> usize {
        self.inner.limiter.bucket_count()
    }

    /// The same client, its calls served before bulk calls in the rate limiter: for the
    /// changes people are waiting for.
    pub fn prioritized(&self) -> Self {
        Self {
            lane: Lane::Priority,
            ..self.clone()
        }
    }

    /// The same client, reporting every attempt to `observer`.
    pub fn observed_by(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// IoT Hub's endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        self.endpoint_of(Service::IotHub)
    }

    /// `service`'s endpoint.
    pub fn endpoint_of(&self, service: Service) -> &Endpoint {
        // Every service has one from `new`.
        &self.inner.endpoints[&service]
    }

    /// Reads one product.
    pub async fn describe_product(
        &self,
        credentials: &Credentials,
        region: &str,
        product_id: &str,
    ) -> Result<Product, CloudError> {
        let action = Action::DescribeProduct;
        let params = wire::DescribeProductRequest {
            product_id: product_id.to_owned(),
        };
        let answer: wire::DescribeProductResponse = self
            .call(credentials, region, (Service::IotHub, action), &params)
            .await?;
        Product::from_wire(action, answer.product_id, answer.product_properties)
    }

    /// Reads every product of the account in `region`, a page of 250 at a time. A product
    /// whose entry cannot be read (an unknown RegisterType, a negative limit, `null`
    /// properties) is left out, logged by its ID and counted: the list holds the others, and
    /// whoever needs that product reads it with `DescribeProduct`.
    pub async fn describe_products(
        &self,
        credentials: &Credentials,
        region: &str,
    ) -> Result<Vec<Product>, CloudError> {
        let action = Action::DescribeProducts;
        let mut products: Vec<Product> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0;
        loop {
            let params =
                wire::DescribeProductsRequest::page(offset, wire::DESCRIBE_PRODUCTS_MAX_LIMIT);
            let limit = params.limit;
            let page: wire::DescribeProductsPage = self
                .call(credentials, region, (Service::IotHub, action), &params)
                .await?;
            let received = page.products.len() as u64;
            for entry in page.products {
                match listed_product(entry) {
                    // Products created while paging shift the pages; keep the first sighting.
                    Ok(product) if !seen.insert(product.product_id.clone()) => {}
                    Ok(product) => products.push(product),
                    Err((product_id, error)) => {
                        debug!(%action, region, product_id, %error, "left an unreadable product out of the list");
                        if let Some(observer) = &self.observer {
                            observer.entry_skipped((Service::IotHub, action));
                        }
                    }
                }
            }
            offset += received;
            if received < limit || offset >= page.total_count {
                return Ok(products);
            }
            // A TotalCount that never ends (a broken or hostile answer) must not page forever.
            if offset >= MAX_PRODUCTS {
                return Err(CloudError::Malformed {
                    action,
                    detail: format!("more than {MAX_PRODUCTS} products listed; stopped paging"),
                });
            }
        }
    }

    /// Sets a product's dynamic-registration settings; returns what the cloud applied.
    pub async fn update_product_dynamic_register(
        &self,
        credentials: &Credentials,
        region: &str,
        product_id: &str,
        wanted: RegistrationRequest,
    ) -> Result<UpdateOutcome, CloudError> {
        let action = Action::UpdateProductDynamicRegister;
        let params = wire::UpdateProductDynamicRegisterRequest {
            product_id: product_id.to_owned(),
            register_type: wanted.register_type.to_wire(),
            register_limit: i64::try_from(wanted.register_limit).unwrap_or(i64::MAX),
        };
        let answer = self
            .call(credentials, region, (Service::IotHub, action), &params)
            .await?;
        UpdateOutcome::from_wire(answer)
    }

    /// Reads a product's dynamic-registration settings in IoT Explorer or IoT Video
    /// (`DescribeProductDynamicRegister`; these services have no bulk read with them).
    pub async fn describe_product_dynamic_register(
        &self,
        service: Service,
        credentials: &Credentials,
        region: &str,
        product_id: &str,
    ) -> Result<Product, CloudError> {
        let action = Action::DescribeProductDynamicRegister;
        let params = wire::DescribeProductDynamicRegisterRequest {
            product_id: product_id.to_owned(),
        };
        let answer: wire::ProductDynamicRegisterResponse = self
            .call(credentials, region, (service, action), &params)
            .await?;
        Ok(Product {
            product_id: product_id.to_owned(),
            registration: RegistrationSettings::from_wire(action, answer)?,
        })
    }

    /// Sets a product's dynamic-registration settings in IoT Explorer or IoT Video
    /// (`ModifyProductDynamicRegister`); returns what the cloud applied.
    pub async fn modify_product_dynamic_register(
        &self,
        service: Service,
        credentials: &Credentials,
        region: &str,
        product_id: &str,
        wanted: RegistrationRequest,
    ) -> Result<UpdateOutcome, CloudError> {
        let action = Action::ModifyProductDynamicRegister;
        let params = wire::ModifyProductDynamicRegisterRequest {
            product_id: product_id.to_owned(),
            register_type: wanted.register_type.to_wire(),
            register_limit: i64::try_from(wanted.register_limit).unwrap_or(i64::MAX),
        };
        let answer: wire::ProductDynamicRegisterResponse = self
            .call(credentials, region, (service, action), &params)
            .await?;
        let request_id = answer.request_id.clone();
        Ok(UpdateOutcome {
            applied: RegistrationSettings::from_wire(action, answer)?,
            request_id,
        })
    }

    /// Reads one product of `service`, with the call that service offers.
    pub async fn read_product(
        &self,
        service: Service,
        credentials: &Credentials,
        region: &str,
        product_id: &str,
    ) -> Result<Product, CloudError> {
        match service {
            Service::IotHub => self.describe_product(credentials, region, product_id).await,
            _ => {
                self.describe_product_dynamic_register(service, credentials, region, product_id)
                    .await
            }
        }
    }

    /// Sets a product's dynamic-registration settings in `service`, with the call that service
    /// offers.
    pub async fn update_registration(
        &self,
        service: Service,
        credentials: &Credentials,
        region: &str,
        product_id: &str,
        wanted: RegistrationRequest,
    ) -> Result<UpdateOutcome, CloudError> {
        match service {
            Service::IotHub => {
                self.update_product_dynamic_register(credentials, region, product_id, wanted)
                    .await
            }
            _ => {
                self.modify_product_dynamic_register(
                    service,
                    credentials,
                    region,
                    product_id,
                    wanted,
                )
                .await
            }
        }
    }

    /// Exchanges a web identity (OIDC) token for temporary credentials of a role, as the
    /// official SDK's OIDC provider does: STS, unsigned, rate limited per role. The credentials
    /// count against the role's rate limit, whatever key a refresh brings; with them, when
    /// they expire (Unix seconds).
    pub async fn assume_role_with_web_identity(
        &self,
        region: &str,
        request: &wire::AssumeRoleWithWebIdentityRequest,
    ) -> Result<(Credentials, i64), CloudError> {
        let route = Route {
            service: Service::Sts,
            signing: Signing::Unsigned {
                limit_identity: &request.role_arn,
            },
        };
        let answer: wire::AssumeRoleWithWebIdentityResponse = self
            .call_to(&route, region, Action::AssumeRoleWithWebIdentity, request)
            .await?;
        let issued = answer.credentials;
        let credentials = Credentials::new(issued.tmp_secret_id, issued.tmp_secret_key)
            .with_token(issued.token)
            .limited_as(request.role_arn.clone());
        Ok((credentials, answer.expired_time))
    }

    /// Whose key `credentials` are, as STS says (`GetCallerIdentity`, signed; CAM needs no
    /// policy for it). `region` is the call's, which STS requires but does not use.
    pub async fn get_caller_identity(
        &self,
        credentials: &Credentials,
        region: &str,
    ) -> Result<wire::GetCallerIdentityResponse, CloudError> {
        let route = Route {
            service: Service::Sts,
            signing: Signing::Signed(credentials),
        };
        let no_parameters = serde_json::Map::new();
        self.call_to(&route, region, Action::GetCallerIdentity, &no_parameters)
            .await
    }

    /// One signed call of an IoT service.
    async fn call<P: Serialize, T: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        region: &str,
        (service, action): (Service, Action),
        params: &P,
    ) -> Result<T, CloudError> {
        let route = Route {
            service,
            signing: Signing::Signed(credentials),
        };
        self.call_to(&route, region, action, params).await
    }

    /// One API call: through the rate limiter, signed afresh, retried on throttling and
    /// transient failures.
    async fn call_to<P: Serialize, T: DeserializeOwned>(
        &self,
        route: &Route<'_>,
        region: &str,
        action: Action,
        params: &P,
    ) -> Result<T, CloudError> {
        let payload = serde_json::to_vec(params).map_err(|e| CloudError::Malformed {
            action,
            detail: format!("cannot encode the request: {e}"),
        })?;
        let endpoint = self.endpoint_of(route.service);
        let bucket = BucketKey {
            endpoint: endpoint.host().to_owned(),
            secret_id: route.signing.limit_identity().to_owned(),
            service: route.service,
            action,
        };
        let mut attempt = 1;
        loop {
            let permit = self.inner.limiter.acquire(&bucket, self.lane).await;
            let waited = permit.waited();
            let started = tokio::time::Instant::now();
            let result = self.attempt(route, region, action, &payload).await;
            if let Err(error) = &result
                && error.class() == ErrorClass::Throttled
            {
                permit.throttled();
            }
            // The answer is read: this call has reached the cloud, and its slot is over.
            drop(permit);
            if let Some(observer) = &self.observer {
                let code = result.as_ref().err().map_or("Success", CloudError::code);
                observer.call_finished((route.service, action), code, started.elapsed(), waited);
            }
            let error = match result {
                Ok(answer) => {
                    debug!(%action, region, attempt, waited_ms = waited.as_millis() as u64, "cloud call succeeded");
                    return Ok(answer);
                }
                Err(error) => error,
            };
            let Some(backoff) = self.inner.retry.backoff(attempt, error.class()) else {
                debug!(%action, region, attempt, code = error.code(), request_id = error.request_id(), "cloud call failed");
                return Err(error);
            };
            debug!(%action, region, attempt, code = error.code(), backoff_ms = backoff.as_millis() as u64, "cloud call failed, retrying");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// One HTTP exchange, signed when the route says so.
    async fn attempt<T: DeserializeOwned>(
        &self,
        route: &Route<'_>,
        region: &str,
        action: Action,
        payload: &[u8],
    ) -> Result<T, CloudError> {
        let inner = &self.inner;
        let endpoint = self.endpoint_of(route.service);
        let signed_at = unix_seconds((inner.clock)());
        let described = sign::Request {
            service: route.service.name(),
            host: endpoint.host(),
            action: action.as_str(),
            version: route.service.version(),
            region: Some(region),
            timestamp: signed_at,
            method: Method::Post,
            content_type: "application/json",
            query: "",
            payload,
            language: inner.language.as_deref(),
        };
        let headers = match route.signing {
            Signing::Signed(credentials) => sign::sign(credentials, &described),
            Signing::Unsigned { .. } => sign::unsigned_headers(&described),
        };
        let mut request = inner
            .http
            .post(endpoint.url().clone())
            .header("X-TC-RequestClient", REQUEST_CLIENT)
            .header("X-TC-TraceId", trace_id())
            .body(payload.to_vec());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let transport = |source| CloudError::Transport { action, source };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let answered_at = response
            .headers()
            .get(http::header::DATE)
            .and_then(|date| date.to_str().ok())
            .and_then(http_date_seconds);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CloudError::Malformed {
                    action,
                    detail: format!("answer larger than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(action, status, &body)
            .map_err(|error| with_clock_skew(error, signed_at, answered_at))
    }
}

/// An expired signature, said as what it is: how far this node's clock is from the cloud's,
/// from the answer's `Date` (whole seconds; an answer arrives within moments).
fn with_clock_skew(error: CloudError, signed_at: i64, answered_at: Option<i64>) -> CloudError {
    let CloudError::Api {
        action,
        code,
        message,
        request_id,
    } = error
    else {
        return error;
    };
    if code != "AuthFailure.SignatureExpire" {
        return CloudError::Api {
            action,
            code,
            message,
            request_id,
        };
    }
    let skew = match answered_at {
        Some(cloud_time) => format!(
            "the node's clock is off by {} s from the cloud's (its answer's Date)",
            signed_at - cloud_time
        ),
        None => "the node's clock is likely off by more than 5 minutes".to_owned(),
    };
    CloudError::Api {
        action,
        message: format!(
            "{message}; {skew}: set the node's time right (NTP); the credentials are fine"
        ),
        code,
        request_id,
    }
}

/// Unix seconds of an HTTP `Date` header (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date_seconds(date: &str) -> Option<i64> {
    let parser = jiff::fmt::rfc2822::DateTimeParser::new();
    let timestamp = parser.parse_timestamp(date).ok()?;
    Some(timestamp.as_second())
}

/// Where a call goes and how it proves who sends it.
struct Route<'a> {
    service: Service,
    signing: Signing<'a>,
}

enum Signing<'a> {
    /// TC3-HMAC-SHA256 with these credentials; their limit applies.
    Signed(&'a Credentials),
    /// No signature (STS's web identity exchange); the limit of this identity applies.
    Unsigned { limit_identity: &'a str },
}

impl Signing<'_> {
    fn limit_identity(&self) -> &str {
        match self {
            Signing::Signed(credentials) => credentials.limit_identity(),
            Signing::Unsigned { limit_identity } => limit_identity,
        }
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// Turns an HTTP answer into the typed answer or the error it carries.
///
/// Total over its input: any status and any bytes give a value or an error, never a panic.
pub fn parse_answer<T: DeserializeOwned>(
    action: Action,
    status: u16,
    body: &[u8],
) -> Result<T, CloudError> {
    if status != 200 {
        return Err(CloudError::HttpStatus { action, status });
    }
    let malformed = |detail: String| CloudError::Malformed { action, detail };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("empty body".to_owned()));
    }
    let mut document: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| malformed(not_json(&e, body)))?;
    let Some(response) = document.get_mut("Response").map(serde_json::Value::take) else {
        return Err(malformed("no \"Response\" object".to_owned()));
    };
    if response.get("Error").is_some() {
        let error: wire::ErrorResponse = serde_json::from_value(response)
            .map_err(|e| malformed(format!("unreadable error answer: {e}")))?;
        return Err(CloudError::Api {
            action,
            code: error.error.code,
            message: error.error.message,
            request_id: error.request_id,
        });
    }
    serde_json::from_value(response).map_err(|e| malformed(hide_quoted_values(&e.to_string())))
}

/// One entry of a `DescribeProducts` page, or its ProductId (when it has a readable one) and why
/// it cannot be read. The error never quotes a value: the entry holds the ProductSecret.
fn listed_product(entry: serde_json::Value) -> Result<Product, (String, CloudError)> {
    let action = Action::DescribeProducts;
    let product_id = entry
        .get("ProductId")
        .and_then(serde_json::Value::as_str)
        .filter(|id| id.len() <= 64)
        .unwrap_or("")
        .to_owned();
    let info: wire::ProductInfo = serde_json::from_value(entry).map_err(|error| {
        let detail = hide_quoted_values(&error.to_string());
        (product_id.clone(), CloudError::Malformed { action, detail })
    })?;
    Product::from_wire(action, info.product_id, info.product_properties)
        .map_err(|error| (product_id, error))
}

/// serde quotes offending string values (`invalid type: string "…", expected i64`); a misplaced
/// ProductSecret must not travel on in an error message, so every double-quoted part goes. Field
/// names, which serde writes in backticks, stay.
fn hide_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        let mut escaped = false;
        for inner in chars.by_ref() {
            match (escaped, inner) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
    }
    out
}

/// Describes a body that is not JSON. A body that does not even start like JSON (an HTML page
/// from a proxy, say) is quoted briefly to tell whose answer it was; a truncated JSON body is not
/// quoted, since it may be the API's answer with a ProductSecret in it.
fn not_json(error: &serde_json::Error, body: &[u8]) -> String {
    let starts_like_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    if starts_like_json {
        return format!("invalid or truncated JSON ({error})");
    }
    // Stop at the first quote: whatever JSON string follows could be a secret.
    let start: String = String::from_utf8_lossy(&body[..body.len().min(40)])
        .chars()
        .take_while(|&c| c != '"')
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("not JSON, starts with {start:?}")
}

/// Names this client in `X-TC-RequestClient`, where the official SDKs name themselves
/// (`SDK_PYTHON_3.1.195`): what Tencent Cloud support sees of who called.
pub const REQUEST_CLIENT: &str = concat!("iothub-dynreg/", env!("CARGO_PKG_VERSION"));

/// A random UUID (version 4): `X-TC-TraceId`, new for every attempt as the official SDKs send
/// it, so that one attempt can be followed through the cloud's logs (the emulator's RequestIds
/// too).
pub fn trace_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_random_version_4_uuids() {
        let (one, two) = (trace_id(), trace_id());
        assert_ne!(one, two);
        let groups: Vec<&str> = one.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{one}");
        assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{one}");
    }

    #[test]
    fn an_international_endpoint_goes_with_the_international_sts() {
        let sts_of = |endpoint: &str| {
            let sts = Endpoint::parse(endpoint, true).unwrap().matching_sts();
            sts.host().to_owned()
        };
        for (endpoint, sts) in [
            ("iotcloud.intl.tencentcloudapi.com", INTL_STS_ENDPOINT),
            (
                "https://iotcloud.intl.tencentcloudapi.com:443",
                INTL_STS_ENDPOINT,
            ),
            ("iotcloud.tencentcloudapi.com", DEFAULT_STS_ENDPOINT),
            (
                "iotcloud.ap-guangzhou.tencentcloudapi.com",
                DEFAULT_STS_ENDPOINT,
            ),
            // Only a host under the site's domain, not one that merely ends alike.
            (
                "iotcloud.intl.tencentcloudapi.com.example",
                DEFAULT_STS_ENDPOINT,
            ),
            ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ] {
            assert_eq!(sts_of(endpoint), sts, "{endpoint}");
        }
    }

    #[test]
    fn the_other_services_follow_iot_hubs_site_unless_set() {
        let client = |endpoint: &str, set: Vec<(Service, Endpoint)>| {
            CloudClient::new(ClientConfig {
                endpoint: Endpoint::parse(endpoint, true).unwrap(),
                service_endpoints: set,
                ..ClientConfig::default()
            })
            .unwrap()
        };
        let hosts = |client: &CloudClient| {
            Service::PRODUCTS.map(|service| client.endpoint_of(service).host().to_owned())
        };
        assert_eq!(
            hosts(&client("iotcloud.tencentcloudapi.com", vec![])),
            [
                "iotcloud.tencentcloudapi.com",
                "iotexplorer.tencentcloudapi.com",
                "iotvideo.tencentcloudapi.com"
            ]
        );
        assert_eq!(
            hosts(&client("iotcloud.intl.tencentcloudapi.com", vec![])),
            [
                "iotcloud.intl.tencentcloudapi.com",
                "iotexplorer.intl.tencentcloudapi.com",
                "iotvideo.intl.tencentcloudapi.com"
            ]
        );
        // The emulator serves every service at its one address.
        assert_eq!(
            hosts(&client("http://127.0.0.1:9000", vec![])),
            ["127.0.0.1:9000"; 3]
        );
        let set = vec![(
            Service::IotVideo,
            Endpoint::parse("iotvideo.ap-guangzhou.tencentcloudapi.com", false).unwrap(),
        )];
        assert_eq!(
            hosts(&client("iotcloud.intl.tencentcloudapi.com", set))[2],
            "iotvideo.ap-guangzhou.tencentcloudapi.com"
        );
    }

    #[test]
    fn endpoints() {
        let default = Endpoint::parse(DEFAULT_ENDPOINT, false).unwrap();
        assert_eq!(default.host(), "iotcloud.tencentcloudapi.com");
        assert_eq!(
            default.url().as_str(),
            "https://iotcloud.tencentcloudapi.com/"
        );
        let with_port = Endpoint::parse("https://example.test:8443", false).unwrap();
        assert_eq!(with_port.host(), "example.test:8443");
        let default_port = Endpoint::parse("https://example.test:443/", false).unwrap();
        assert_eq!(default_port.host(), "example.test");
        let loopback = Endpoint::parse("http://127.0.0.1:9000", true).unwrap();
        assert_eq!(loopback.host(), "127.0.0.1:9000");
        assert!(Endpoint::parse("http://[::1]:9000", true).is_ok());
        assert!(Endpoint::parse("http://localhost:9000", true).is_ok());

        for (bad, insecure) in [
            ("http://127.0.0.1:9000", false),
            ("http://example.test", true),
            ("ftp://example.test", true),
            ("https://example.test/path", false),
            ("https://example.test/?q=1", false),
            ("https://user:pw@example.test", false),
            ("https://", false),
        ] {
            assert!(Endpoint::parse(bad, insecure).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_success_and_error_envelopes() {
        let ok: wire::UpdateProductDynamicRegisterResponse = parse_answer(
            Action::UpdateProductDynamicRegister,
            200,
            br#"{"Response":{"RegisterType":0,"ProductSecret":"adferdfwe","RegisterLimit":10000,"RequestId":"r-1"}}"#,
        )
        .unwrap();
        assert_eq!(ok.register_limit, 10_000);

        let err = parse_answer::<wire::DescribeProductResponse>(
            Action::DescribeProduct,
            200,
            br#"{"Response":{"Error":{"Code":"ResourceNotFound.ProductNotExist","Message":"no such product"},"RequestId":"r-2"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.class(), ErrorClass::NotFound);
        assert_eq!(err.request_id(), Some("r-2"));
        assert_eq!(
            err.to_string(),
            "DescribeProduct failed with ResourceNotFound.ProductNotExist: no such product (RequestId r-2)"
        );
    }

    #[test]
    fn quoted_values_are_hidden() {
        assert_eq!(
            hide_quoted_values(r#"invalid type: string "s3cr\"et", expected i64"#),
            r#"invalid type: string "…", expected i64"#
        );
        assert_eq!(
            hide_quoted_values("missing field `RegisterLimit`"),
            "missing field `RegisterLimit`"
        );
        assert_eq!(
            hide_quoted_values(r#"unterminated "abc"#),
            r#"unterminated "…""#
        );
    }

    #[test]
    fn bad_bodies_are_clear_errors() {
        let cases: [(u16, &[u8], &str); 6] = [
            (200, b"", "empty body"),
            (
                200,
                b"<html><body>502 Bad Gateway</body></html>",
                "not JSON",
            ),
            (200, br#"{"Response":{"RegisterType":2"#, "truncated JSON"),
            (200, br#"{"Answer":{}}"#, "no \"Response\""),
            (
                200,
                br#"{"Response":{"RegisterType":"two","RegisterLimit":1}}"#,
                "invalid type",
            ),
            (502, b"Bad Gateway", "HTTP 502"),
        ];
        for (status, body, expected) in cases {
            let err = parse_answer::<wire::UpdateProductDynamicRegisterResponse>(
                Action::UpdateProductDynamicRegister,
                status,
                body,
            )
            .unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
