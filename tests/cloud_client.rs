//! The typed client against a scripted loopback server: signing, retries, paging, errors and
//! redaction.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub_dynreg::cloud::retry::RetryPolicy;
use iothub_dynreg::cloud::sign::{self, Method};
use iothub_dynreg::cloud::{
    Action, ClientConfig, CloudClient, CloudError, Credentials, Endpoint, ErrorClass, RegisterType,
    RegistrationRequest, Service,
};
use support::scripted_cloud::{Received, Reply, ScriptedCloud};

const SECRET_KEY: &str = "KEY-must-never-be-printed-7f3a";
const TOKEN: &str = "TOKEN-must-never-be-printed-91bc";
const PRODUCT_SECRET: &str = "PRODUCTSECRET-never-printed-55d1";

fn credentials() -> Credentials {
    Credentials::new("AKIDclienttest", SECRET_KEY).with_token(TOKEN)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        throttled_base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    }
}

fn client_for(cloud: &ScriptedCloud) -> CloudClient {
    CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&cloud.endpoint(), true).unwrap(),
        retry: fast_retry(),
        ..ClientConfig::default()
    })
    .unwrap()
}

/// A product object; `extra` adds fields after the properties (e.g. a RequestId).
fn product_json(id: &str, register_type: i64, limit: i64, extra: &str) -> String {
    format!(
        r#"{{"ProductId":"{id}","ProductName":"n-{id}","ProductProperties":{{"ProductType":0,"RegisterType":{register_type},"RegisterLimit":{limit},"ProductSecret":"{PRODUCT_SECRET}","ForbiddenStatus":0}}{extra}}}"#
    )
}

fn describe_answer(id: &str) -> Reply {
    let product = product_json(id, 2, 10_000, r#","RequestId":"req-describe""#);
    Reply::Json(format!(r#"{{"Response":{product}}}"#))
}

fn error_answer(code: &str) -> Reply {
    Reply::Json(format!(
        r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"scripted {code}"}},"RequestId":"req-err"}}}}"#
    ))
}

/// Recomputes the signature of a received request with the known key.
fn assert_signed(request: &Received, key: &str) {
    let auth = sign::parse_authorization(&request.headers["authorization"]).unwrap();
    let timestamp: i64 = request.headers["x-tc-timestamp"].parse().unwrap();
    assert_eq!(auth.date, sign::utc_date(timestamp).unwrap());
    let canonical = sign::canonical_request(
        Method::Post,
        "",
        &request.headers["content-type"],
        &request.headers["host"],
        &request.body,
    );
    let to_sign = sign::string_to_sign(
        timestamp,
        &sign::credential_scope(&auth.date, &auth.service),
        &canonical,
    );
    assert_eq!(
        auth.signature,
        sign::signature(key, &auth.date, &auth.service, &to_sign)
    );
}

#[tokio::test]
async fn describe_product_sends_a_signed_json_post() {
    let cloud = ScriptedCloud::start([describe_answer("ABCDE12345")]).await;
    let product = client_for(&cloud)
        .describe_product(&credentials(), "ap-guangzhou", "ABCDE12345")
        .await
        .unwrap();
    assert_eq!(product.product_id, "ABCDE12345");
    assert_eq!(product.registration.register_type, RegisterType::AutoCreate);
    assert_eq!(product.registration.register_limit, 10_000);
    assert_eq!(
        product
            .registration
            .product_secret
            .as_ref()
            .map(|s| s.expose()),
        Some(PRODUCT_SECRET)
    );

    let received = cloud.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["host"], cloud.addr.to_string());
    assert_eq!(request.headers["x-tc-action"], "DescribeProduct");
    assert_eq!(request.headers["x-tc-version"], "2021-04-08");
    assert_eq!(request.headers["x-tc-region"], "ap-guangzhou");
    assert_eq!(request.headers["x-tc-token"], TOKEN);
    assert_eq!(request.headers["x-tc-language"], "en-US");
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, serde_json::json!({"ProductId": "ABCDE12345"}));
    assert_signed(request, SECRET_KEY);
}

#[tokio::test]
async fn update_returns_what_the_cloud_applied() {
    let cloud = ScriptedCloud::start([Reply::Json(format!(
        r#"{{"Response":{{"RegisterType":1,"ProductSecret":"{PRODUCT_SECRET}","RegisterLimit":10000,"RequestId":"req-upd"}}}}"#
    ))])
    .await;
    let outcome = client_for(&cloud)
        .update_product_dynamic_register(
            &credentials(),
            "ap-guangzhou",
            "ABCDE12345",
            RegistrationRequest {
                register_type: RegisterType::PreCreate,
                register_limit: 10,
            },
        )
        .await
        .unwrap();
    // The cloud may apply another limit than the one asked; the client reports what it applied.
    assert_eq!(outcome.applied.register_limit, 10_000);
    assert_eq!(outcome.applied.register_type, RegisterType::PreCreate);
    assert_eq!(outcome.request_id, "req-upd");
    let body: serde_json::Value = serde_json::from_slice(&cloud.received()[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ProductId": "ABCDE12345", "RegisterType": 1, "RegisterLimit": 10})
    );
}

#[tokio::test]
async fn retries_transient_and_throttled_errors_signing_each_attempt_afresh() {
    let cloud = ScriptedCloud::start([
        error_answer("InternalError"),
        Reply::Status(503, "<html>Service Unavailable</html>".into()),
        Reply::Drop,
        describe_answer("ABCDE12345"),
    ])
    .await;
    // A clock that moves 7 s per reading, as a slow retry sequence would.
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ticks = Arc::new(AtomicU64::new(0));
    let clock = {
        let ticks = ticks.clone();
        Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(start + 7 * ticks.fetch_add(1, Ordering::SeqCst))
        })
    };
    let client = CloudClient::with_clock(
        ClientConfig {
            endpoint: Endpoint::parse(&cloud.endpoint(), true).unwrap(),
            retry: fast_retry(),
            ..ClientConfig::default()
        },
        clock,
    )
    .unwrap();
    let product = client
        .describe_product(&credentials(), "ap-guangzhou", "ABCDE12345")
        .await
        .unwrap();
    assert_eq!(product.product_id, "ABCDE12345");

    let received = cloud.received();
    assert_eq!(received.len(), 4);
    let timestamps: Vec<&str> = received
        .iter()
        .map(|r| r.headers["x-tc-timestamp"].as_str())
        .collect();
    let mut distinct = timestamps.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        4,
        "every attempt is signed anew: {timestamps:?}"
    );
    for request in &received {
        assert_signed(request, SECRET_KEY);
    }

    let throttled = ScriptedCloud::start([
        error_answer("RequestLimitExceeded"),
        describe_answer("ABCDE12345"),
    ])
    .await;
    client_for(&throttled)
        .describe_product(&credentials(), "ap-guangzhou", "ABCDE12345")
        .await
        .unwrap();
    assert_eq!(throttled.received().len(), 2);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let cloud = ScriptedCloud::start((0..10).map(|_| error_answer("InternalError"))).await;
    let err = client_for(&cloud)
        .describe_product(&credentials(), "ap-guangzhou", "ABCDE12345")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InternalError");
    assert_eq!(cloud.received().len(), 4);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let table = [
        ("AuthFailure.SignatureFailure", ErrorClass::Auth),
        ("AuthFailure.SecretIdNotFound", ErrorClass::Auth),
        ("ResourceNotFound.ProductNotExist", ErrorClass::NotFound),
        (
            "UnauthorizedOperation.ProductIsForbidden",
            ErrorClass::Forbidden,
        ),
        (
            "InvalidParameterValue.ProductTypeNotSupport",
            ErrorClass::Unsupported,
        ),
        ("InvalidParameterValue", ErrorClass::Invalid),
        ("MissingParameter", ErrorClass::Invalid),
    ];
    for (code, class) in table {
        let cloud = ScriptedCloud::start([error_answer(code), describe_answer("X")]).await;
        let err = client_for(&cloud)
            .describe_product(&credentials(), "ap-guangzhou", "X")
            .await
            .unwrap_err();
        assert_eq!(err.class(), class, "{code}");
        assert_eq!(err.code(), code);
        assert_eq!(err.request_id(), Some("req-err"));
        assert_eq!(cloud.received().len(), 1, "{code} was retried");
    }
}

#[tokio::test]
async fn unknown_register_type_is_an_error_not_a_panic() {
    let body = format!(
        r#"{{"Response":{}}}"#,
        product_json("P1", 7, 10, r#","RequestId":"r""#)
    );
    let cloud = ScriptedCloud::start([Reply::Json(body)]).await;
    let err = client_for(&cloud)
        .describe_product(&credentials(), "ap-guangzhou", "P1")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CloudError::UnexpectedValue {
            field: "RegisterType",
            value: 7,
            ..
        }
    ));
    assert_eq!(cloud.received().len(), 1);
}

#[tokio::test]
async fn describe_products_reads_every_page_at_the_largest_size() {
    let page = |from: usize, to: usize, total: usize| {
        let products: Vec<String> = (from..to)
            .map(|i| product_json(&format!("P{i:05}"), 1, i as i64, ""))
            .collect();
        Reply::Json(format!(
            r#"{{"Response":{{"TotalCount":{total},"Products":[{}],"RequestId":"r"}}}}"#,
            products.join(",")
        ))
    };
    let cloud =
        ScriptedCloud::start([page(0, 250, 600), page(250, 500, 600), page(500, 600, 600)]).await;
    let products = client_for(&cloud)
        .describe_products(&credentials(), "ap-guangzhou")
        .await
        .unwrap();
    assert_eq!(products.len(), 600);
    assert_eq!(products[599].product_id, "P00599");
    let pages: Vec<serde_json::Value> = cloud
        .received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        pages,
        [
            serde_json::json!({"Offset": 0, "Limit": 250}),
            serde_json::json!({"Offset": 250, "Limit": 250}),
            serde_json::json!({"Offset": 500, "Limit": 250}),
        ]
    );

    // An exact multiple of the page size stops on TotalCount, without an empty extra page.
    let cloud = ScriptedCloud::start([page(0, 250, 250)]).await;
    let products = client_for(&cloud)
        .describe_products(&credentials(), "ap-guangzhou")
        .await
        .unwrap();
    assert_eq!((products.len(), cloud.received().len()), (250, 1));

    // A TotalCount that never ends, with the same page over and over: paging stops at a cap.
    let endless = std::iter::repeat_with(|| page(0, 250, 1_000_000_000)).take(410);
    let cloud = ScriptedCloud::start(endless).await;
    let client = CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&cloud.endpoint(), true).unwrap(),
        rate_limits: iothub_dynreg::cloud::limit::RateLimits::uniform(100_000),
        retry: fast_retry(),
        ..ClientConfig::default()
    })
    .unwrap();
    let error = client
        .describe_products(&credentials(), "ap-guangzhou")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("stopped paging"), "{error}");
    assert_eq!(
        cloud.received().len() as u64,
        iothub_dynreg::cloud::client::MAX_PRODUCTS / 250
    );
}

/// Counts the entries the client left out.
#[derive(Default)]
struct Skipped(AtomicU64);

impl iothub_dynreg::cloud::client::CallObserver for Skipped {
    fn call_finished(&self, _: (Service, Action), _: &str, _: Duration, _: Duration) {}

    fn entry_skipped(&self, api: (Service, Action)) {
        assert_eq!(api, (Service::IotHub, Action::DescribeProducts));
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_unreadable_product_is_left_out_of_the_list_and_the_rest_kept() {
    let odd = [
        product_json("ODDTYPE", 3, 10, ""),
        product_json("ODDLIMIT", 1, -5, ""),
        r#"{"ProductId":"NULLPROPS","ProductProperties":null}"#.to_owned(),
        r#"{"ProductId":"WRONGTYPE","ProductProperties":{"RegisterType":"two"}}"#.to_owned(),
        r#"{"ProductName":"no id"}"#.to_owned(),
    ];
    let good = [
        product_json("GOOD001", 2, 10, ""),
        product_json("GOOD002", 0, 0, ""),
    ];
    let entries: Vec<String> = [good[0].clone()]
        .into_iter()
        .chain(odd)
        .chain([good[1].clone()])
        .collect();
    let page = format!(
        r#"{{"Response":{{"TotalCount":7,"Products":[{}],"RequestId":"r"}}}}"#,
        entries.join(",")
    );
    let cloud = ScriptedCloud::start([Reply::Json(page)]).await;
    let skipped = Arc::new(Skipped::default());
    let products = client_for(&cloud)
        .observed_by(skipped.clone())
        .describe_products(&credentials(), "ap-guangzhou")
        .await
        .unwrap();
    let ids: Vec<&str> = products.iter().map(|p| p.product_id.as_str()).collect();
    assert_eq!(ids, ["GOOD001", "GOOD002"]);
    assert_eq!(skipped.0.load(Ordering::SeqCst), 5);
    assert_eq!(
        cloud.received().len(),
        1,
        "seven entries read: no second page"
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_debug_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cloud = ScriptedCloud::start([
        describe_answer("ABCDE12345"),
        error_answer("InternalError"),
        Reply::Json(format!(
            r#"{{"Response":{{"RegisterType":2,"ProductSecret":"{PRODUCT_SECRET}","RegisterLimit":5,"RequestId":"u"}}}}"#
        )),
        error_answer("AuthFailure.SignatureFailure"),
        Reply::Json(format!(r#"{{"Response":{{"RegisterType":"{PRODUCT_SECRET}"}}}}"#)),
    ])
    .await;
    let client = client_for(&cloud);
    let creds = credentials();
    let mut printed = format!("{client:?} {creds:?}");
    let product = client
        .describe_product(&creds, "ap-guangzhou", "ABCDE12345")
        .await
        .unwrap();
    printed += &format!("{product:?}");
    let outcome = client
        .update_product_dynamic_register(
            &creds,
            "ap-guangzhou",
            "ABCDE12345",
            RegistrationRequest {
                register_type: RegisterType::AutoCreate,
                register_limit: 5,
            },
        )
        .await
        .unwrap();
    printed += &format!("{outcome:?}");
    let auth_error = client
        .describe_product(&creds, "ap-guangzhou", "ABCDE12345")
        .await
        .unwrap_err();
    printed += &format!("{auth_error:?} {auth_error}");
    let malformed = client
        .update_product_dynamic_register(
            &creds,
            "ap-guangzhou",
            "ABCDE12345",
            RegistrationRequest {
                register_type: RegisterType::AutoCreate,
                register_limit: 5,
            },
        )
        .await
        .unwrap_err();
    printed += &format!("{malformed:?} {malformed}");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("cloud call"),
        "the test captured no logs: {logs}"
    );
    for secret in [SECRET_KEY, TOKEN, PRODUCT_SECRET] {
        assert!(!logs.contains(secret), "secret in logs:\n{logs}");
        assert!(
            !printed.contains(secret),
            "secret in Debug/Display:\n{printed}"
        );
    }
    assert!(printed.contains("<redacted>"));
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transient_error() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}"), true).unwrap(),
        retry: RetryPolicy::none(),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = client
        .describe_product(&credentials(), "ap-guangzhou", "P")
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.code(), "Transport");
    assert!(
        err.to_string()
            .starts_with("DescribeProduct: no answer from the endpoint"),
        "{err}"
    );
    let _ = Action::ALL;
}

/// The API documentation's own example answer to DescribeProduct holds `"ProductSecret": ""`
/// for a product whose registration was never enabled: no secret yet, never an empty key.
#[tokio::test]
async fn an_empty_product_secret_is_no_secret() {
    let documented = r#"{"Response":{"ProductId":"ABCDEFGHIJ","ProductName":"lamp","ProductMetadata":{"CreationDate":1571020500},"ProductProperties":{"ProductDescription":"","EncryptionType":"2","Region":"gz","ProductType":0,"Format":"json","Platform":"","Appeui":"","ModelId":"","ModelName":"","ProductKey":"","RegisterType":0,"ProductSecret":"","RegisterLimit":0,"OriginProductId":"","PrivateCAName":"","OriginUserId":0,"DeviceLimit":0,"ForbiddenStatus":0,"AppEUI":""},"RequestId":"doc-example"}}"#;
    let on_without_secret = r#"{"Response":{"ProductId":"ABCDEFGHIJ","ProductProperties":{"RegisterType":2,"ProductSecret":"","RegisterLimit":5},"RequestId":"r"}}"#;
    let cloud = ScriptedCloud::start([
        Reply::Json(documented.to_owned()),
        Reply::Json(on_without_secret.to_owned()),
    ])
    .await;
    let client = client_for(&cloud);
    for register_type in [RegisterType::Disabled, RegisterType::AutoCreate] {
        let product = client
            .describe_product(&credentials(), "ap-guangzhou", "ABCDEFGHIJ")
            .await
            .unwrap();
        assert_eq!(product.registration.register_type, register_type);
        assert!(product.registration.product_secret.is_none());
    }
}
