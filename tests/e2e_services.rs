//! IoT Explorer and IoT Video products on the real API server, through the real controller and
//! the emulator: `spec.service` picks the service; each reaches InSync with its ProductSecret
//! published, a console edit is put back with `ModifyProductDynamicRegister`, Disable on delete
//! goes through Modify, the wrong service and a certificate product stall clearly without a
//! hot retry, and the same ID in two services is two products, not a conflict.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::{
    DeletionPolicy, DynamicRegistration, DynamicRegistrationSpec, ProductService, RegistrationMode,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::e2e::{Harness, secret_data};

const PRODUCTS: &str = r#"
products:
  - {productId: SHARED0001, region: ap-guangzhou, registerType: 0}
  - {productId: SHARED0001, region: ap-guangzhou, service: iotexplorer, registerType: 0}
  - {productId: VIDEO00001, region: ap-guangzhou, service: iotvideo, registerType: 0}
  - {productId: CERTONLY01, region: ap-guangzhou, service: iotexplorer, certificateOnly: true}
  - {productId: HUBONLY001, region: ap-guangzhou, registerType: 0}
"#;

fn resource(
    name: &str,
    (service, product_id): (ProductService, &str),
    kind: RegistrationMode,
    limit: i64,
) -> DynamicRegistration {
    let spec = DynamicRegistrationSpec::new(product_id, "ap-guangzhou", kind, limit)
        .in_service(service)
        .with_credentials("tencent-credentials");
    DynamicRegistration::new(name, spec)
}

/// The emulator's product of that service.
async fn product(harness: &Harness, service: &str, product_id: &str) -> Value {
    let products = harness.emulator_get("products").await;
    products
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["productId"] == product_id && p["service"] == service)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_and_video_products_converge_drift_back_and_disable_on_delete() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller =
        harness.spawn_controller(&["--resync-interval", "2s", "--observe-interval", "1s"]);
    let mut explorer = resource(
        "explorer",
        (ProductService::IoTExplorer, "SHARED0001"),
        RegistrationMode::AutoCreate,
        100,
    );
    explorer.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(explorer).await;
    // The IoT Hub product of the same ID, managed beside it: another product, no conflict.
    harness
        .create(resource(
            "hub",
            (ProductService::IoTHub, "SHARED0001"),
            RegistrationMode::PreCreate,
            7,
        ))
        .await;
    harness
        .create(resource(
            "video",
            (ProductService::IoTVideo, "VIDEO00001"),
            RegistrationMode::PreCreate,
            20,
        ))
        .await;
    let timeout = Duration::from_secs(30);
    for name in ["explorer", "hub", "video"] {
        harness
            .wait_reason(name, "InSync", timeout, &controller)
            .await;
    }

    // Each service's product holds its own settings, and its Secret its own ProductSecret.
    let cloud_explorer = product(&harness, "iotexplorer", "SHARED0001").await;
    let cloud_hub = product(&harness, "iotcloud", "SHARED0001").await;
    let cloud_video = product(&harness, "iotvideo", "VIDEO00001").await;
    assert_eq!(
        (
            &cloud_explorer["registerType"],
            &cloud_explorer["registerLimit"]
        ),
        (&json!(2), &json!(100))
    );
    assert_eq!(
        (&cloud_hub["registerType"], &cloud_hub["registerLimit"]),
        (&json!(1), &json!(7))
    );
    assert_eq!(
        (&cloud_video["registerType"], &cloud_video["registerLimit"]),
        (&json!(1), &json!(20))
    );
    for (name, cloud) in [
        ("explorer", &cloud_explorer),
        ("hub", &cloud_hub),
        ("video", &cloud_video),
    ] {
        let secret = harness
            .secrets()
            .get(&format!("{name}-product-secret"))
            .await
            .unwrap();
        assert_eq!(
            secret_data(&secret)["productSecret"],
            cloud["productSecret"].as_str().unwrap(),
            "{name}"
        );
    }
    let stats = harness.emulator_get("stats").await;
    let calls = &stats["calls"];
    assert_eq!(
        calls["iotexplorer:ModifyProductDynamicRegister"]["Success"], 1,
        "{calls}"
    );
    assert_eq!(
        calls["iotvideo:ModifyProductDynamicRegister"]["Success"], 1,
        "{calls}"
    );
    assert_eq!(
        calls["UpdateProductDynamicRegister"]["Success"], 1,
        "{calls}"
    );

    // Quiet while nothing changes: resyncs read each product, write nothing.
    let modifies = |stats: &Value| {
        stats["calls"]["iotexplorer:ModifyProductDynamicRegister"]["Success"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = modifies(&harness.emulator_get("stats").await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = harness.emulator_get("stats").await;
    assert_eq!(modifies(&quiet), before, "a write while nothing changed");
    let reads = quiet["calls"]["iotexplorer:DescribeProductDynamicRegister"]["Success"]
        .as_u64()
        .unwrap();
    println!("Explorer reads after 5 s of resyncs every 2 s: {reads}");

    // A console edit of the Explorer product is put back with Modify.
    harness
        .emulator_send(
            reqwest::Method::PATCH,
            "products/iotexplorer/SHARED0001",
            json!({"registerLimit": 3}),
        )
        .await;
    harness
        .wait_for(
            "the console edit put back",
            timeout,
            Some(&controller),
            || async {
                let cloud = product(&harness, "iotexplorer", "SHARED0001").await;
                (cloud["registerLimit"] == 100).then_some(())
            },
        )
        .await;
    assert_eq!(
        product(&harness, "iotcloud", "SHARED0001").await["registerLimit"],
        7
    );

    // Deleting the Disable resource disables the Explorer product through Modify.
    harness
        .registrations()
        .delete("explorer", &DeleteParams::default())
        .await
        .unwrap();
    harness
        .wait_for(
            "the explorer resource gone",
            timeout,
            Some(&controller),
            || async {
                harness
                    .registrations()
                    .get_opt("explorer")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    assert_eq!(
        product(&harness, "iotexplorer", "SHARED0001").await["registerType"],
        0
    );
    assert_eq!(
        product(&harness, "iotcloud", "SHARED0001").await["registerType"],
        1
    );
    harness.assert_no_secrets_logged(&controller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_service_and_a_certificate_product_stall_without_a_hot_retry() {
    let Some(harness) = Harness::with_credentials(PRODUCTS, |_| {}).await else {
        return;
    };
    let controller =
        harness.spawn_controller(&["--resync-interval", "2s", "--stalled-retry-interval", "60s"]);
    // An IoT Hub product named as an Explorer one, and an Explorer product without PSK.
    harness
        .create(resource(
            "misnamed",
            (ProductService::IoTExplorer, "HUBONLY001"),
            RegistrationMode::AutoCreate,
            10,
        ))
        .await;
    harness
        .create(resource(
            "certificates",
            (ProductService::IoTExplorer, "CERTONLY01"),
            RegistrationMode::AutoCreate,
            10,
        ))
        .await;
    let timeout = Duration::from_secs(30);
    let misnamed = harness
        .wait_reason("misnamed", "ProductNotFound", timeout, &controller)
        .await;
    let certificates = harness
        .wait_reason(
            "certificates",
            "ProductTypeNotSupported",
            timeout,
            &controller,
        )
        .await;
    let message = |resource: &DynamicRegistration| {
        let status = resource.status.as_ref().unwrap();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        ready.message.clone()
    };
    println!(
        "misnamed: {}\ncertificates: {}",
        message(&misnamed),
        message(&certificates)
    );
    assert!(
        message(&misnamed).contains("StudioProductNotExist"),
        "{}",
        message(&misnamed)
    );
    assert!(
        message(&misnamed).contains("spec.service is IoTExplorer"),
        "{}",
        message(&misnamed)
    );
    assert!(
        message(&certificates).contains("ProductNotSupportPSK"),
        "{}",
        message(&certificates)
    );
    for resource in [&misnamed, &certificates] {
        let status = resource.status.as_ref().unwrap();
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(stalled.status, "True");
    }

    // No hot retry: over 8 s, no further Modify of the certificate product, and the
    // misnamed product read no more than once per resync.
    let count = |stats: &Value, action: &str, code: &str| {
        stats["calls"][action][code].as_u64().unwrap_or(0)
    };
    let before = harness.emulator_get("stats").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = harness.emulator_get("stats").await;
    let modify = "iotexplorer:ModifyProductDynamicRegister";
    let refused_psk = "UnauthorizedOperation.ProductNotSupportPSK";
    assert_eq!(
        count(&after, modify, refused_psk),
        count(&before, modify, refused_psk),
        "the certificate product was asked again"
    );
    let describe = "iotexplorer:DescribeProductDynamicRegister";
    let missing = "ResourceNotFound.StudioProductNotExist";
    let reads = count(&after, describe, missing) - count(&before, describe, missing);
    println!("reads of the misnamed product in 8 s: {reads}");
    assert!(
        reads <= 1,
        "{reads} reads of a product that does not exist in 8 s"
    );

    // The service cannot be changed; the server says why.
    let patch = json!({"spec": {"service": "IoTHub"}});
    let refused = harness
        .registrations()
        .patch("misnamed", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("service is immutable"),
        "{refused}"
    );
}

/// 100 IoT Hub and 100 IoT Explorer products of one account, declared before the controller
/// starts: their quotas are apart, so both converge side by side in about 100 / 20 = 5 s, and
/// the cloud refuses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_explorer_fleets_of_one_account_converge_side_by_side() {
    const EACH: usize = 100;
    let mut products = String::from("products:\n");
    for index in 0..EACH {
        products.push_str(&format!(
            "  - {{productId: HUB{index:07}, region: ap-guangzhou}}\n  - {{productId: EXP{index:07}, region: ap-guangzhou, service: iotexplorer}}\n"
        ));
    }
    let Some(harness) = Harness::with_credentials(&products, |_| {}).await else {
        return;
    };
    for index in 0..EACH {
        for (service, prefix) in [
            (ProductService::IoTHub, "hub"),
            (ProductService::IoTExplorer, "exp"),
        ] {
            let product = format!("{}{index:07}", prefix.to_uppercase());
            harness
                .create(resource(
                    &format!("{prefix}-{index}"),
                    (service, &product),
                    RegistrationMode::AutoCreate,
                    10,
                ))
                .await;
        }
    }
    let started = std::time::Instant::now();
    let controller = harness.spawn_controller(&[]);
    harness
        .wait_all_ready(2 * EACH, Duration::from_secs(60), &controller)
        .await;
    let elapsed = started.elapsed();
    let stats = harness.emulator_get("stats").await;
    let calls = &stats["calls"];
    let ok = |action: &str| calls[action]["Success"].as_u64().unwrap_or(0);
    println!(
        "{EACH} Hub + {EACH} Explorer products Ready in {elapsed:.1?} (ideal {:.1} s each, in parallel); \
         UpdateProductDynamicRegister {}, iotexplorer Modify {}, Describe {}; refused {}; peaks {}",
        EACH as f64 / 20.0,
        ok("UpdateProductDynamicRegister"),
        ok("iotexplorer:ModifyProductDynamicRegister"),
        ok("iotexplorer:DescribeProductDynamicRegister"),
        stats["requestLimitExceeded"],
        stats["peakCallsPerSecondByAction"],
    );
    assert_eq!(stats["requestLimitExceeded"], 0, "{stats}");
    assert_eq!(ok("UpdateProductDynamicRegister"), EACH as u64);
    assert_eq!(ok("iotexplorer:ModifyProductDynamicRegister"), EACH as u64);
    // One after the other would take 10 s of quota; side by side about 5, plus start-up.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}
