//! IoT Explorer and IoT Video beside IoT Hub, in the emulator and through the client: each
//! service sees its own products, `Describe`/`ModifyProductDynamicRegister` read and set them,
//! a certificate-only product is refused, a Hub product asked of Explorer is not found, CAM
//! policies name `service:Action`, and each service's action is a quota of its own.

use std::time::Duration;

use iothub_dynreg::cloud::retry::RetryPolicy;
use iothub_dynreg::cloud::{
    ClientConfig, CloudClient, CloudError, Credentials, Endpoint, ErrorClass, RegisterType,
    RegistrationRequest, Service,
};
use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use serde_json::Value;

const SEED: &str = r#"
accounts:
  - {secretId: AKIDtest, secretKey: test-key}
  - secretId: AKIDexplorer
    secretKey: explorer-key
    policy: {actions: ["iotexplorer:DescribeProductDynamicRegister", "iotexplorer:ModifyProductDynamicRegister"]}
products:
  - {productId: SAMEID0001, region: ap-guangzhou, registerType: 2, registerLimit: 50, productSecret: hub-secret}
  - {productId: SAMEID0001, region: ap-guangzhou, service: iotexplorer, registerType: 1, registerLimit: 7, productSecret: explorer-secret}
  - {productId: EXPLORER02, region: ap-guangzhou, service: iotexplorer}
  - {productId: CERTONLY01, region: ap-guangzhou, service: iotexplorer, certificateOnly: true}
  - {productId: VIDEO00001, region: ap-guangzhou, service: iotvideo, registerType: 0}
  - {productId: HUBONLY001, region: ap-guangzhou}
generate: {count: 50, region: ap-beijing, prefix: EXB, service: iotexplorer}
"#;

const REGION: &str = "ap-guangzhou";

async fn emulator() -> RunningEmulator {
    RunningEmulator::start(EmulatorConfig::new(Seed::from_yaml(SEED).unwrap()))
        .await
        .unwrap()
}

fn client(emulator: &RunningEmulator) -> CloudClient {
    CloudClient::new(ClientConfig {
        endpoint: Endpoint::parse(&emulator.endpoint(), true).unwrap(),
        retry: RetryPolicy::none(),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn creds() -> Credentials {
    Credentials::new("AKIDtest", "test-key")
}

fn code(result: Result<impl std::fmt::Debug, CloudError>) -> String {
    result.unwrap_err().code().to_owned()
}

async fn stats(emulator: &RunningEmulator) -> Value {
    let body = reqwest::get(format!("{}/_emulator/stats", emulator.endpoint()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn each_service_reads_and_sets_its_own_products() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let secret = |product: &iothub_dynreg::cloud::Product| {
        product
            .registration
            .product_secret
            .as_ref()
            .map(|secret| secret.expose().to_owned())
    };

    // One ID in two services: two products.
    let hub = client
        .read_product(Service::IotHub, &creds(), REGION, "SAMEID0001")
        .await
        .unwrap();
    let explorer = client
        .read_product(Service::IotExplorer, &creds(), REGION, "SAMEID0001")
        .await
        .unwrap();
    assert_eq!(
        (hub.registration.register_limit, secret(&hub).as_deref()),
        (50, Some("hub-secret"))
    );
    assert_eq!(
        (
            explorer.registration.register_type,
            explorer.registration.register_limit,
            secret(&explorer).as_deref()
        ),
        (RegisterType::PreCreate, 7, Some("explorer-secret"))
    );

    // Modify sets Explorer's, answers what it applied, and a secret appears with registration.
    let wanted = RegistrationRequest {
        register_type: RegisterType::AutoCreate,
        register_limit: 300,
    };
    let outcome = client
        .update_registration(Service::IotExplorer, &creds(), REGION, "EXPLORER02", wanted)
        .await
        .unwrap();
    assert_eq!(outcome.applied.register_type, RegisterType::AutoCreate);
    assert_eq!(outcome.applied.register_limit, 300);
    assert!(outcome.applied.product_secret.is_some());
    assert!(!outcome.request_id.is_empty());
    let read = client
        .describe_product_dynamic_register(Service::IotExplorer, &creds(), REGION, "EXPLORER02")
        .await
        .unwrap();
    assert_eq!(read.registration, outcome.applied);

    // Video the same way; IoT Hub's product of the same ID is untouched by Explorer's change.
    let video = client
        .update_registration(Service::IotVideo, &creds(), REGION, "VIDEO00001", wanted)
        .await
        .unwrap();
    assert_eq!(video.applied.register_limit, 300);
    let hub_again = client
        .describe_product(&creds(), REGION, "SAMEID0001")
        .await
        .unwrap();
    assert_eq!(hub_again, hub);

    let calls = &stats(&emulator).await["calls"];
    assert_eq!(
        calls["iotexplorer:ModifyProductDynamicRegister"]["Success"],
        1
    );
    assert_eq!(calls["iotvideo:ModifyProductDynamicRegister"]["Success"], 1);
    assert_eq!(calls["DescribeProduct"]["Success"], 2);
}

/// A console edit names the service where one ID is in several.
#[tokio::test]
async fn console_edits_name_the_service_of_an_id_in_two() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let http = reqwest::Client::new();
    let edit = |path: &str| {
        http.patch(format!("{}/_emulator/products/{path}", emulator.endpoint()))
            .header("content-type", "application/json")
            .body(r#"{"registerLimit": 99}"#)
            .send()
    };
    assert_eq!(edit("SAMEID0001").await.unwrap().status(), 404);
    assert_eq!(edit("iotnope/SAMEID0001").await.unwrap().status(), 400);
    assert_eq!(edit("iotexplorer/SAMEID0001").await.unwrap().status(), 200);
    let limit = |service| {
        let client = client.clone();
        async move {
            client
                .read_product(service, &creds(), REGION, "SAMEID0001")
                .await
                .unwrap()
                .registration
                .register_limit
        }
    };
    assert_eq!(
        (
            limit(Service::IotHub).await,
            limit(Service::IotExplorer).await
        ),
        (50, 99)
    );
    // An ID in one service only needs none.
    assert_eq!(edit("VIDEO00001").await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_wrong_service_or_a_certificate_product_is_a_clear_refusal() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let wanted = RegistrationRequest {
        register_type: RegisterType::AutoCreate,
        register_limit: 10,
    };
    // A Hub product asked of Explorer or Video does not exist there.
    let explorer_miss = code(
        client
            .read_product(Service::IotExplorer, &creds(), REGION, "HUBONLY001")
            .await,
    );
    assert_eq!(explorer_miss, "ResourceNotFound.StudioProductNotExist");
    let video_miss = code(
        client
            .read_product(Service::IotVideo, &creds(), REGION, "HUBONLY001")
            .await,
    );
    assert_eq!(video_miss, "ResourceNotFound.ProductNotExist");
    // And an Explorer product asked of IoT Hub neither.
    let hub_miss = code(
        client
            .read_product(Service::IotHub, &creds(), REGION, "EXPLORER02")
            .await,
    );
    assert_eq!(hub_miss, "ResourceNotFound.ProductNotExist");
    for miss in [&explorer_miss, &video_miss, &hub_miss] {
        assert_eq!(ErrorClass::of_code(miss), ErrorClass::NotFound);
    }

    // A product that authenticates by certificate has no dynamic registration: a person's
    // problem, never retried.
    let refused = client
        .update_registration(Service::IotExplorer, &creds(), REGION, "CERTONLY01", wanted)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "UnauthorizedOperation.ProductNotSupportPSK");
    assert_eq!(refused.class(), ErrorClass::Unsupported);
    assert!(!refused.class().is_retryable());
    let calls = &stats(&emulator).await["calls"];
    assert_eq!(
        calls["iotexplorer:ModifyProductDynamicRegister"]["UnauthorizedOperation.ProductNotSupportPSK"],
        1,
        "{calls}"
    );
}

#[tokio::test]
async fn policies_name_the_service_of_each_action() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let explorer_only = Credentials::new("AKIDexplorer", "explorer-key");
    client
        .read_product(Service::IotExplorer, &explorer_only, REGION, "EXPLORER02")
        .await
        .unwrap();
    for refused in [
        code(
            client
                .read_product(Service::IotVideo, &explorer_only, REGION, "VIDEO00001")
                .await,
        ),
        code(
            client
                .read_product(Service::IotHub, &explorer_only, REGION, "HUBONLY001")
                .await,
        ),
    ] {
        assert_eq!(refused, "AuthFailure.UnauthorizedOperation");
    }
}

/// 120 calls of the same action in Explorer and Video at once, through one key: two quotas of
/// 20/s side by side, so about 3 s and never a refusal; the limiter of one alone would take 6.
#[tokio::test]
async fn the_same_action_of_two_services_is_two_quotas() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let started = tokio::time::Instant::now();
    let calls = (0..120).map(|index| {
        let client = client.clone();
        let service = if index % 2 == 0 {
            Service::IotExplorer
        } else {
            Service::IotVideo
        };
        let product = if index % 2 == 0 {
            "EXPLORER02"
        } else {
            "VIDEO00001"
        };
        async move {
            client
                .describe_product_dynamic_register(service, &creds(), REGION, product)
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    let report = stats(&emulator).await;
    assert_eq!(report["requestLimitExceeded"], 0, "{report}");
    let peaks = &report["peakCallsPerSecondByAction"];
    for action in [
        "iotexplorer:DescribeProductDynamicRegister",
        "iotvideo:DescribeProductDynamicRegister",
    ] {
        let peak = peaks[action].as_u64().unwrap();
        assert!((15..=20).contains(&peak), "{action}: {peak} in {report}");
    }
    println!("120 calls over two services' quotas in {elapsed:?}");
    assert!(elapsed < Duration::from_millis(4500), "{elapsed:?}");
}
