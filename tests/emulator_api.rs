//! The emulator against the project's own client and hand-built requests: every check the cloud
//! makes, every documented error, the rate limit, faults and the control endpoints.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub_dynreg::cloud::retry::RetryPolicy;
use iothub_dynreg::cloud::sign::{self, Method};
use iothub_dynreg::cloud::{
    ClientConfig, CloudClient, CloudError, Credentials, Endpoint, ErrorClass, RegisterType,
    RegistrationRequest,
};
use iothub_dynreg::emulator::{EmulatorConfig, LimitPolicy, RunningEmulator, Seed};
use serde_json::{Value, json};

const SEED: &str = r#"
accounts:
  - {secretId: AKIDtest, secretKey: test-key}
  - {secretId: AKIDtemp, secretKey: temp-key, token: temp-token}
products:
  - {productId: PROD000001, region: ap-guangzhou, registerType: 0}
  - {productId: PROD000002, region: ap-guangzhou, registerType: 2, registerLimit: 50, productSecret: s2}
  - {productId: LORA000001, region: ap-guangzhou, productType: 3}
  - {productId: FORBID0001, region: ap-guangzhou, forbidden: true}
  - {productId: SHANGHAI01, region: ap-shanghai}
generate: {count: 600, region: ap-beijing, prefix: BJ}
"#;

fn config() -> EmulatorConfig {
    EmulatorConfig::new(Seed::from_yaml(SEED).unwrap())
}

fn creds() -> Credentials {
    Credentials::new("AKIDtest", "test-key")
}

fn client(emulator: &RunningEmulator, retry: RetryPolicy) -> CloudClient {
    CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&emulator.endpoint(), true).unwrap(),
        retry,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        throttled_base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

fn skewed_clock(seconds: i64) -> iothub_dynreg::cloud::client::Clock {
    Arc::new(move || {
        let now = SystemTime::now();
        if seconds >= 0 {
            now + Duration::from_secs(seconds as u64)
        } else {
            now - Duration::from_secs((-seconds) as u64)
        }
    })
}

async fn code_of(result: Result<impl std::fmt::Debug, CloudError>) -> String {
    result.unwrap_err().code().to_owned()
}

async fn stats(emulator: &RunningEmulator) -> Value {
    control(emulator, "GET", "stats", None).await
}

async fn control(
    emulator: &RunningEmulator,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let url = format!("{}/_emulator/{path}", emulator.endpoint());
    let http = reqwest::Client::new();
    let request = match method {
        "GET" => http.get(url),
        "PUT" => http.put(url),
        "DELETE" => http.delete(url),
        _ => http.post(url),
    };
    let request = request.header("content-type", "application/json");
    let request = match body {
        Some(body) => request.body(body.to_string()),
        None => request,
    };
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{method} {path}: {}",
        response.status()
    );
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// A request signed by hand, with the parts a test wants to get wrong.
struct Raw<'a> {
    secret_id: &'a str,
    secret_key: &'a str,
    action: &'a str,
    version: &'a str,
    region: Option<&'a str>,
    timestamp: i64,
    scope_date: Option<String>,
    body: &'a str,
}

impl Default for Raw<'_> {
    fn default() -> Self {
        Raw {
            secret_id: "AKIDtest",
            secret_key: "test-key",
            action: "DescribeProduct",
            version: "2021-04-08",
            region: Some("ap-guangzhou"),
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
            scope_date: None,
            body: r#"{"ProductId":"PROD000001"}"#,
        }
    }
}

async fn send_raw(emulator: &RunningEmulator, raw: Raw<'_>) -> Value {
    let host = emulator.addr.to_string();
    let date = raw
        .scope_date
        .clone()
        .unwrap_or_else(|| sign::utc_date(raw.timestamp).unwrap_or_default());
    let canonical = sign::canonical_request(
        Method::Post,
        "",
        "application/json",
        &host,
        raw.body.as_bytes(),
    );
    let scope = sign::credential_scope(&date, "iotcloud");
    let signature = sign::signature(
        raw.secret_key,
        &date,
        "iotcloud",
        &sign::string_to_sign(raw.timestamp, &scope, &canonical),
    );
    let mut request = reqwest::Client::new()
        .post(emulator.endpoint())
        .header(
            "Authorization",
            format!(
                "TC3-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=content-type;host, Signature={signature}",
                raw.secret_id
            ),
        )
        .header("Content-Type", "application/json")
        .header("X-TC-Action", raw.action)
        .header("X-TC-Version", raw.version)
        .header("X-TC-Timestamp", raw.timestamp.to_string())
        .body(raw.body.to_owned());
    if let Some(region) = raw.region {
        request = request.header("X-TC-Region", region);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn error_code(answer: &Value) -> &str {
    answer["Response"]["Error"]["Code"]
        .as_str()
        .unwrap_or("(no error)")
}

#[tokio::test]
async fn client_round_trip_through_all_three_actions() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    let client = client(&emulator, RetryPolicy::none());

    let before = client
        .describe_product(&creds(), "ap-guangzhou", "PROD000001")
        .await
        .unwrap();
    assert_eq!(before.registration.register_type, RegisterType::Disabled);
    assert_eq!(before.registration.product_secret, None);

    let outcome = client
        .update_product_dynamic_register(
            &creds(),
            "ap-guangzhou",
            "PROD000001",
            RegistrationRequest {
                register_type: RegisterType::AutoCreate,
                register_limit: 200,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.applied.register_type, RegisterType::AutoCreate);
    assert_eq!(outcome.applied.register_limit, 200);
    let secret = outcome
        .applied
        .product_secret
        .clone()
        .expect("secret generated on enable");
    assert!(!outcome.request_id.is_empty());

    let after = client
        .describe_product(&creds(), "ap-guangzhou", "PROD000001")
        .await
        .unwrap();
    assert_eq!(after.registration, outcome.applied);
    assert_eq!(after.registration.product_secret, Some(secret));

    // 600 generated products in ap-beijing: three pages of 250, nothing from other regions.
    let beijing = client
        .describe_products(&creds(), "ap-beijing")
        .await
        .unwrap();
    assert_eq!(beijing.len(), 600);
    assert!(beijing.iter().all(|p| p.product_id.starts_with("BJ")));
    let report = stats(&emulator).await;
    assert_eq!(report["calls"]["DescribeProducts"]["Success"], 3);

    let temporary = Credentials::new("AKIDtemp", "temp-key").with_token("temp-token");
    client
        .describe_product(&temporary, "ap-guangzhou", "PROD000002")
        .await
        .unwrap();
}

#[tokio::test]
async fn documented_errors_reach_the_client_classified() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    let client = client(&emulator, RetryPolicy::none());
    let update = |product: &'static str| {
        let client = client.clone();
        async move {
            client
                .update_product_dynamic_register(
                    &creds(),
                    "ap-guangzhou",
                    product,
                    RegistrationRequest {
                        register_type: RegisterType::PreCreate,
                        register_limit: 1,
                    },
                )
                .await
        }
    };
    let not_found = update("NOSUCHPROD").await.unwrap_err();
    assert_eq!(
        (not_found.code(), not_found.class()),
        ("ResourceNotFound.ProductNotExist", ErrorClass::NotFound)
    );
    let forbidden = update("FORBID0001").await.unwrap_err();
    assert_eq!(
        (forbidden.code(), forbidden.class()),
        (
            "UnauthorizedOperation.ProductIsForbidden",
            ErrorClass::Forbidden
        )
    );
    let lora = update("LORA000001").await.unwrap_err();
    assert_eq!(
        (lora.code(), lora.class()),
        (
            "InvalidParameterValue.ProductTypeNotSupport",
            ErrorClass::Unsupported
        )
    );
    let other_region = client
        .describe_product(&creds(), "ap-guangzhou", "SHANGHAI01")
        .await
        .unwrap_err();
    assert_eq!(other_region.class(), ErrorClass::NotFound);
}

#[tokio::test]
async fn authentication_failures() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    let endpoint = Endpoint::parse(&emulator.endpoint(), true).unwrap();
    let with = |clock| {
        CloudClient::with_clock(
            ClientConfig {
                endpoint: endpoint.clone(),
                retry: RetryPolicy::none(),
                ..ClientConfig::default()
            },
            clock,
        )
        .unwrap()
    };
    let on_time = with(skewed_clock(0));
    let describe = |client: CloudClient, creds: Credentials| async move {
        client
            .describe_product(&creds, "ap-guangzhou", "PROD000001")
            .await
    };

    let wrong_key = Credentials::new("AKIDtest", "wrong-key");
    assert_eq!(
        code_of(describe(on_time.clone(), wrong_key).await).await,
        "AuthFailure.SignatureFailure"
    );
    let unknown = Credentials::new("AKIDnobody", "test-key");
    assert_eq!(
        code_of(describe(on_time.clone(), unknown).await).await,
        "AuthFailure.SecretIdNotFound"
    );
    let no_token = Credentials::new("AKIDtemp", "temp-key");
    assert_eq!(
        code_of(describe(on_time.clone(), no_token).await).await,
        "AuthFailure.TokenFailure"
    );
    let bad_token = Credentials::new("AKIDtemp", "temp-key").with_token("other");
    assert_eq!(
        code_of(describe(on_time.clone(), bad_token).await).await,
        "AuthFailure.TokenFailure"
    );

    // The window is ±300 s around the server's clock.
    assert_eq!(
        code_of(describe(with(skewed_clock(-330)), creds()).await).await,
        "AuthFailure.SignatureExpire"
    );
    assert_eq!(
        code_of(describe(with(skewed_clock(330)), creds()).await).await,
        "AuthFailure.SignatureExpire"
    );
    describe(with(skewed_clock(-240)), creds()).await.unwrap();
    describe(with(skewed_clock(240)), creds()).await.unwrap();
    // An expired signature is this node's clock, not the key: the message says by how much
    // (from the answer's Date), and the key does not rest as a refused one would.
    let expired = describe(with(skewed_clock(600)), creds())
        .await
        .unwrap_err();
    assert_eq!(expired.class(), iothub_dynreg::cloud::ErrorClass::ClockSkew);
    let message = expired.to_string();
    let offset = message
        .split("the node's clock is off by ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|seconds| seconds.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no offset in {message}"));
    assert!((598..=602).contains(&offset), "{message}");
    assert!(message.contains("the credentials are fine"), "{message}");

    // The credential scope date must be the UTC date of X-TC-Timestamp.
    let answer = send_raw(
        &emulator,
        Raw {
            scope_date: Some("2001-01-01".into()),
            ..Raw::default()
        },
    )
    .await;
    assert_eq!(error_code(&answer), "AuthFailure.SignatureFailure");
    assert!(
        answer["Response"]["RequestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let answer = send_raw(&emulator, Raw::default()).await;
    assert_eq!(answer["Response"]["ProductId"], "PROD000001");
}

#[tokio::test]
async fn request_checks_after_authentication() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    let cases = [
        (
            Raw {
                action: "DeleteProduct",
                ..Raw::default()
            },
            "InvalidAction",
        ),
        (
            Raw {
                version: "2018-06-14",
                ..Raw::default()
            },
            "NoSuchVersion",
        ),
        (
            Raw {
                region: None,
                ..Raw::default()
            },
            "MissingParameter",
        ),
        (
            Raw {
                body: "{}",
                ..Raw::default()
            },
            "MissingParameter",
        ),
        (
            Raw {
                body: "[1,2]",
                ..Raw::default()
            },
            "InvalidParameter",
        ),
        (
            Raw {
                action: "DescribeProducts",
                body: r#"{"Offset":0,"Limit":500}"#,
                ..Raw::default()
            },
            "InvalidParameterValue",
        ),
        (
            Raw {
                action: "UpdateProductDynamicRegister",
                body: r#"{"ProductId":"PROD000001","RegisterType":9,"RegisterLimit":1}"#,
                ..Raw::default()
            },
            "InvalidParameterValue",
        ),
    ];
    for (raw, expected) in cases {
        let action = raw.action;
        let answer = send_raw(&emulator, raw).await;
        assert_eq!(error_code(&answer), expected, "{action}: {answer}");
    }
}

#[tokio::test]
async fn rate_limit_refuses_bursts_but_not_the_client() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    // 40 hand-made requests at once: the first 20 pass, the rest are throttled.
    let burst: Vec<_> = (0..40)
        .map(|_| send_raw(&emulator, Raw::default()))
        .collect();
    let answers = futures::future::join_all(burst).await;
    let throttled = answers
        .iter()
        .filter(|a| error_code(a) == "RequestLimitExceeded")
        .count();
    assert_eq!(throttled, 20, "40 calls within a second at 20/s");
    control(&emulator, "POST", "stats/reset", None).await;

    // The client's bucket keeps 60 concurrent calls under the limit: no throttling at all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = client(&emulator, RetryPolicy::none());
    let calls: Vec<_> = (0..60)
        .map(|_| {
            let client = client.clone();
            async move {
                client
                    .describe_product(&creds(), "ap-guangzhou", "PROD000001")
                    .await
            }
        })
        .collect();
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    let report = stats(&emulator).await;
    assert_eq!(report["requestLimitExceeded"], 0, "{report}");
    let peak = report["peakCallsPerSecondByAction"]["DescribeProduct"]
        .as_u64()
        .unwrap();
    assert!(peak <= 20, "{report}");
}

#[tokio::test]
async fn faults_are_injected_and_the_client_rides_them_out() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    let no_retry = client(&emulator, RetryPolicy::none());
    let describe = |client: &CloudClient| {
        let client = client.clone();
        async move {
            client
                .describe_product(&creds(), "ap-guangzhou", "PROD000001")
                .await
        }
    };

    control(
        &emulator,
        "PUT",
        "faults",
        Some(json!({"internalErrorRate": 1.0})),
    )
    .await;
    assert_eq!(code_of(describe(&no_retry).await).await, "InternalError");
    control(
        &emulator,
        "PUT",
        "faults",
        Some(json!({"http503Rate": 1.0})),
    )
    .await;
    assert!(matches!(
        describe(&no_retry).await,
        Err(CloudError::HttpStatus { status: 503, .. })
    ));
    control(
        &emulator,
        "PUT",
        "faults",
        Some(json!({"http502Rate": 1.0})),
    )
    .await;
    assert!(matches!(
        describe(&no_retry).await,
        Err(CloudError::HttpStatus { status: 502, .. })
    ));
    control(&emulator, "PUT", "faults", Some(json!({"dropRate": 1.0}))).await;
    assert_eq!(code_of(describe(&no_retry).await).await, "Transport");
    // The answer lost after the call was made: the update happened, the client cannot know.
    control(
        &emulator,
        "PUT",
        "faults",
        Some(json!({"lostAnswerRate": 1.0})),
    )
    .await;
    let lost = no_retry
        .update_product_dynamic_register(
            &creds(),
            "ap-guangzhou",
            "PROD000001",
            RegistrationRequest {
                register_type: RegisterType::PreCreate,
                register_limit: 77,
            },
        )
        .await;
    assert_eq!(code_of(lost).await, "Transport");
    control(&emulator, "PUT", "faults", Some(json!({}))).await;
    let product = describe(&no_retry).await.unwrap();
    assert_eq!(product.registration.register_limit, 77);
    control(&emulator, "PUT", "faults", Some(json!({"latencyMs": 150}))).await;
    let started = std::time::Instant::now();
    describe(&no_retry).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));

    // A scripted error for one product, twice: the retrying client gets through on the third try.
    control(&emulator, "PUT", "faults", Some(json!({}))).await;
    control(
        &emulator,
        "PUT",
        "products/PROD000001/errors",
        Some(json!({"code": "InternalError", "times": 2})),
    )
    .await;
    control(&emulator, "POST", "stats/reset", None).await;
    describe(&client(&emulator, quick_retry())).await.unwrap();
    let report = stats(&emulator).await;
    assert_eq!(
        report["calls"]["DescribeProduct"]["InternalError"], 2,
        "{report}"
    );
    assert_eq!(report["calls"]["DescribeProduct"]["Success"], 1, "{report}");

    // Scripted until cleared.
    control(
        &emulator,
        "PUT",
        "products/PROD000002/errors",
        Some(json!({"code": "UnauthorizedOperation.ProductIsForbidden"})),
    )
    .await;
    for _ in 0..3 {
        let err = no_retry
            .describe_product(&creds(), "ap-guangzhou", "PROD000002")
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Forbidden);
    }
    control(&emulator, "DELETE", "products/PROD000002/errors", None).await;
    no_retry
        .describe_product(&creds(), "ap-guangzhou", "PROD000002")
        .await
        .unwrap();

    let report = stats(&emulator).await;
    assert!(
        report["calls"]["DescribeProduct"]["Success"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

#[tokio::test]
async fn the_cloud_may_apply_another_limit_and_console_edits_show() {
    let mut config = config();
    config.limit_policy = LimitPolicy {
        max: None,
        override_to: Some(10_000),
        refuse_above: None,
    };
    let emulator = RunningEmulator::start(config).await.unwrap();
    let client = client(&emulator, RetryPolicy::none());
    let outcome = client
        .update_product_dynamic_register(
            &creds(),
            "ap-guangzhou",
            "PROD000001",
            RegistrationRequest {
                register_type: RegisterType::Disabled,
                register_limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.applied.register_limit, 10_000);

    let edited = control(
        &emulator,
        "POST",
        "products/PROD000002",
        Some(json!({"registerType": 1, "registerLimit": 7})),
    )
    .await;
    assert_eq!(edited["registerLimit"], 7);
    let seen = client
        .describe_product(&creds(), "ap-guangzhou", "PROD000002")
        .await
        .unwrap();
    assert_eq!(seen.registration.register_type, RegisterType::PreCreate);
    assert_eq!(seen.registration.register_limit, 7);

    control(&emulator, "DELETE", "products/PROD000002", None).await;
    let gone = client
        .describe_product(&creds(), "ap-guangzhou", "PROD000002")
        .await
        .unwrap_err();
    assert_eq!(gone.class(), ErrorClass::NotFound);
}

#[tokio::test]
async fn keys_see_their_own_accounts_products_and_what_their_policy_grants() {
    let seed = r#"
accounts:
  - {secretId: AKIDteamA, secretKey: a-key, account: team-a}
  - {secretId: AKIDteamB, secretKey: b-key, account: team-b}
  - secretId: AKIDnarrow
    secretKey: narrow-key
    account: team-a
    policy: {actions: [DescribeProduct, UpdateProductDynamicRegister], products: [TEAMA00001]}
products:
  - {productId: TEAMA00001, region: ap-guangzhou, account: team-a}
  - {productId: TEAMA00002, region: ap-guangzhou, account: team-a}
  - {productId: TEAMB00001, region: ap-guangzhou, account: team-b}
"#;
    let emulator = RunningEmulator::start(EmulatorConfig::new(Seed::from_yaml(seed).unwrap()))
        .await
        .unwrap();
    let client = client(&emulator, RetryPolicy::none());
    let team_a = Credentials::new("AKIDteamA", "a-key");
    let narrow = Credentials::new("AKIDnarrow", "narrow-key");
    let region = "ap-guangzhou";

    // An account's key lists and reads its own products only.
    let listed: Vec<String> = client
        .describe_products(&team_a, region)
        .await
        .unwrap()
        .into_iter()
        .map(|product| product.product_id)
        .collect();
    assert_eq!(listed, ["TEAMA00001", "TEAMA00002"]);
    assert_eq!(
        code_of(client.describe_product(&team_a, region, "TEAMB00001").await).await,
        "ResourceNotFound.ProductNotExist"
    );

    // A key restricted by policy: its product and actions only, refused like CAM refuses.
    client
        .describe_product(&narrow, region, "TEAMA00001")
        .await
        .unwrap();
    let wanted = RegistrationRequest {
        register_type: RegisterType::AutoCreate,
        register_limit: 5,
    };
    client
        .update_product_dynamic_register(&narrow, region, "TEAMA00001", wanted)
        .await
        .unwrap();
    for refused in [
        code_of(client.describe_products(&narrow, region).await).await,
        code_of(client.describe_product(&narrow, region, "TEAMA00002").await).await,
        code_of(
            client
                .update_product_dynamic_register(&narrow, region, "TEAMA00002", wanted)
                .await,
        )
        .await,
    ] {
        assert_eq!(refused, "AuthFailure.UnauthorizedOperation");
        assert_eq!(ErrorClass::of_code(&refused), ErrorClass::Forbidden);
    }
}

#[tokio::test]
async fn control_writes_take_json_only() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/_emulator/stats/reset", emulator.endpoint()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        415,
        "a form post reached a control endpoint"
    );
    control(&emulator, "POST", "stats/reset", Some(json!({}))).await;
}

#[tokio::test]
async fn hostile_timestamps_are_refused_without_overflow() {
    let emulator = RunningEmulator::start(config()).await.unwrap();
    let now = Raw::default().timestamp;
    let mut random = 0x9e37_79b9_7f4a_7c15_u64;
    let mut timestamps = vec![
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        -1,
        0,
        now - 301,
        now + 301,
    ];
    for _ in 0..50 {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        timestamps.push(random as i64);
    }
    for timestamp in timestamps {
        let answer = send_raw(
            &emulator,
            Raw {
                timestamp,
                scope_date: Some("2026-01-01".into()),
                ..Raw::default()
            },
        )
        .await;
        assert_eq!(
            error_code(&answer),
            "AuthFailure.SignatureExpire",
            "{timestamp}"
        );
    }
}

/// STS's `AssumeRoleWithWebIdentity` is unsigned on purpose, and says so with
/// `Authorization: SKIP` as the official SDKs do: a call without the header is a broken
/// signature to a server that verifies TC3, and is refused.
#[tokio::test]
async fn an_unsigned_sts_call_must_say_authorization_skip() {
    const ROLE: &str = "qcs::cam::uin/100000000001:roleName/skip-check";
    let seed = format!(
        "accounts: [{{secretId: AKIDtest, secretKey: test-key}}]\nroles:\n  - {{roleArn: '{ROLE}', providerId: oidc, tokens: [good-token]}}\n"
    );
    let emulator = RunningEmulator::start(EmulatorConfig::new(Seed::from_yaml(&seed).unwrap()))
        .await
        .unwrap();
    let call = |authorization: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .post(emulator.endpoint())
            .header("Content-Type", "application/json")
            .header("X-TC-Action", "AssumeRoleWithWebIdentity")
            .header("X-TC-Version", "2018-08-13")
            .header("X-TC-Region", "ap-guangzhou")
            .header("X-TC-Timestamp", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string())
            .body(format!(
                r#"{{"ProviderId":"oidc","WebIdentityToken":"good-token","RoleArn":"{ROLE}","RoleSessionName":"s","DurationSeconds":900}}"#
            ));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        async move {
            let answer: Value =
                serde_json::from_slice(&request.send().await.unwrap().bytes().await.unwrap())
                    .unwrap();
            answer
        }
    };
    let missing = call(None).await;
    assert_eq!(
        error_code(&missing),
        "AuthFailure.InvalidAuthorization",
        "{missing}"
    );
    let skipped = call(Some("SKIP")).await;
    assert!(
        skipped["Response"]["Credentials"]["TmpSecretId"].is_string(),
        "{skipped}"
    );
    // What the control endpoint shows of the last request: its headers and parameter names.
    let seen = control(&emulator, "GET", "last-requests", None).await;
    let last = &seen["AssumeRoleWithWebIdentity"];
    assert_eq!(last["headers"]["authorization"], "SKIP", "{seen}");
    assert_eq!(last["params"].as_array().unwrap().len(), 5, "{seen}");
}
