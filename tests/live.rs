//! The controller's cloud calls against a real Tencent Cloud account: opt-in, as Terraform
//! providers' acceptance tests are. Skipped (with a line saying so) unless these are set:
//!
//! - `IOTHUB_DYNREG_LIVE_SECRET_ID`, `IOTHUB_DYNREG_LIVE_SECRET_KEY` (and
//!   `IOTHUB_DYNREG_LIVE_TOKEN` for temporary credentials): a key of the account;
//! - `IOTHUB_DYNREG_LIVE_PRODUCT`, `IOTHUB_DYNREG_LIVE_REGION`: one of its products;
//! - optionally `IOTHUB_DYNREG_LIVE_ENDPOINT` (`iotcloud.intl.tencentcloudapi.com` for an
//!   international account; a loopback `http://` endpoint tries it against the emulator);
//! - `IOTHUB_DYNREG_LIVE_WRITE=1` to also write the product's current settings back with
//!   UpdateProductDynamicRegister (a write that changes nothing) and check the answer.
//!
//! `cargo test --test live -- --nocapture` shows what the account answered. It describes the
//! product and lists the region's products with the controller's own client, so every field
//! the controller reads is parsed from the real answers. CI never sets these variables; nothing
//! here prints a key or the ProductSecret.

use std::time::Duration;

use iothub_dynreg::cloud::{
    ClientConfig, CloudClient, Credentials, Endpoint, ErrorClass, RegistrationRequest,
};

struct Live {
    credentials: Credentials,
    product: String,
    region: String,
    endpoint: Endpoint,
    write: bool,
}

const REQUIRED: [&str; 4] = [
    "IOTHUB_DYNREG_LIVE_SECRET_ID",
    "IOTHUB_DYNREG_LIVE_SECRET_KEY",
    "IOTHUB_DYNREG_LIVE_PRODUCT",
    "IOTHUB_DYNREG_LIVE_REGION",
];

impl Live {
    /// The account from the environment; `None` when a required variable is unset.
    fn from_environment() -> Option<Self> {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let [secret_id, secret_key, product, region] = REQUIRED.map(read);
        let mut credentials = Credentials::new(secret_id?, secret_key?);
        if let Some(token) = read("IOTHUB_DYNREG_LIVE_TOKEN") {
            credentials = credentials.with_token(token);
        }
        let endpoint = read("IOTHUB_DYNREG_LIVE_ENDPOINT")
            .unwrap_or_else(|| iothub_dynreg::cloud::client::DEFAULT_ENDPOINT.to_owned());
        Some(Self {
            credentials,
            product: product?,
            region: region?,
            endpoint: Endpoint::parse(&endpoint, true).expect("IOTHUB_DYNREG_LIVE_ENDPOINT"),
            write: read("IOTHUB_DYNREG_LIVE_WRITE").as_deref() == Some("1"),
        })
    }
}

#[tokio::test]
async fn the_controllers_calls_against_a_real_account() {
    let Some(live) = Live::from_environment() else {
        println!(
            "skipped: the live acceptance test runs only with {} set (docs/guides/check.md and CONTRIBUTING.md)",
            REQUIRED.join(", ")
        );
        return;
    };
    let client = CloudClient::new(ClientConfig {
        sts_endpoint: live.endpoint.matching_sts(),
        endpoint: live.endpoint.clone(),
        request_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    })
    .unwrap();
    let (credentials, region) = (&live.credentials, live.region.as_str());
    match client.get_caller_identity(credentials, region).await {
        Ok(whose) => println!("key of account {} ({})", whose.account_id, whose.kind),
        Err(error) => println!("STS did not say whose key this is: {error}"),
    }
    let product = client
        .describe_product(credentials, region, &live.product)
        .await
        .unwrap_or_else(|error| panic!("DescribeProduct: {error}"));
    let settings = &product.registration;
    println!(
        "DescribeProduct {}: RegisterType {:?}, RegisterLimit {}, {}",
        product.product_id,
        settings.register_type,
        settings.register_limit,
        match settings.product_secret {
            Some(_) => "a ProductSecret",
            None => "no ProductSecret yet",
        }
    );
    assert_eq!(product.product_id, live.product);
    match client.describe_products(credentials, region).await {
        Ok(products) => {
            println!("DescribeProducts: {} products in {region}", products.len());
            let listed = products.iter().find(|p| p.product_id == live.product);
            let listed = listed.expect("the product is among those listed");
            assert_eq!(listed.registration.register_type, settings.register_type);
            assert_eq!(listed.registration.register_limit, settings.register_limit);
        }
        // The controller works without it (one call per product): say so, do not fail.
        Err(error) if error.class() == ErrorClass::Forbidden => {
            println!(
                "DescribeProducts refused by CAM, the controller reads products alone: {error}"
            )
        }
        Err(error) => panic!("DescribeProducts: {error}"),
    }
    if !live.write {
        println!(
            "UpdateProductDynamicRegister not called: IOTHUB_DYNREG_LIVE_WRITE=1 writes the current settings back"
        );
        return;
    }
    let current = RegistrationRequest {
        register_type: settings.register_type,
        register_limit: settings.register_limit,
    };
    let outcome = client
        .update_product_dynamic_register(credentials, region, &live.product, current)
        .await
        .unwrap_or_else(|error| panic!("UpdateProductDynamicRegister: {error}"));
    println!(
        "UpdateProductDynamicRegister: wrote the current settings back (RequestId {})",
        outcome.request_id
    );
    assert_eq!(outcome.applied.register_type, current.register_type);
    assert_eq!(outcome.applied.register_limit, current.register_limit);
}
