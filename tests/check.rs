//! `iothub-dynreg check`, run as a user runs it against the emulator with CAM-like policies: a
//! fully allowed key, a key without DescribeProducts, a key restricted to some products, a
//! read-only key asked to write back, a wrong key and an isolated account; each refusal named,
//! the policy it lacks printed, exit codes for CI, and no secret in any output.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use iothub_dynreg::controller::resources::ClusterCredentials;
use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::Value;
use support::e2e::{Harness, SECRET_KEY};

const SEED: &str = r#"
accounts:
  - {secretId: AKIDCHECKFULL, secretKey: full-key-never-printed}
  - secretId: AKIDCHECKNOLIST
    secretKey: nolist-key-never-printed
    policy: {actions: [DescribeProduct, UpdateProductDynamicRegister]}
  - secretId: AKIDCHECKSOME
    secretKey: some-key-never-printed
    policy: {products: [CHECK00001]}
  - secretId: AKIDCHECKREAD
    secretKey: read-key-never-printed
    policy: {actions: [DescribeProducts, DescribeProduct]}
  - {secretId: AKIDCHECKARREARS, secretKey: arrears-key-never-printed, account: arrears}
isolatedAccounts: [arrears]
products:
  - {productId: CHECK00001, region: ap-guangzhou, registerType: 2, registerLimit: 50, productSecret: product-secret-never-printed}
  - {productId: CHECK00002, region: ap-guangzhou}
  - {productId: ARREARS001, region: ap-guangzhou, account: arrears}
"#;

/// Every key and ProductSecret of the seed: in no output, ever.
const SECRETS: [&str; 6] = [
    "full-key-never-printed",
    "nolist-key-never-printed",
    "some-key-never-printed",
    "read-key-never-printed",
    "arrears-key-never-printed",
    "product-secret-never-printed",
];

struct Checked {
    code: Option<i32>,
    json: Value,
    text: String,
}

/// `iothub-dynreg check` against the emulator at `endpoint`.
fn check_at(endpoint: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg"));
    command.args([
        "check",
        "--endpoint",
        endpoint,
        "--insecure-loopback-endpoint",
    ]);
    command
}

/// `check` with `key` (SecretId, SecretKey) in a credentials file and `args` added, once
/// as JSON and once as text.
async fn check(emulator: &RunningEmulator, key: (&str, &str), args: &[&str]) -> Checked {
    let dir = std::env::temp_dir().join(format!("dynreg-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join(format!("{}.yaml", key.0));
    std::fs::write(
        &file,
        format!("secretId: {}\nsecretKey: {}\n", key.0, key.1),
    )
    .unwrap();
    let endpoint = emulator.endpoint();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let run = move |output: &str| -> Output {
        check_at(&endpoint)
            .args([
                "--credentials-file",
                &file.display().to_string(),
                "-o",
                output,
            ])
            .args(&args)
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY")
            .env_remove("IOTHUB_DYNREG_STS_ENDPOINT")
            .output()
            .unwrap()
    };
    let (json, text) = tokio::task::spawn_blocking(move || (run("json"), run("text")))
        .await
        .unwrap();
    for output in [&json, &text] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in SECRETS {
            assert!(!all.contains(secret), "a secret was printed: {all}");
        }
    }
    assert_eq!(json.status.code(), text.status.code());
    let text = String::from_utf8(text.stdout).unwrap();
    println!("{text}");
    Checked {
        code: json.status.code(),
        json: serde_json::from_slice(&json.stdout).unwrap(),
        text,
    }
}

/// The result of `action` (about `product`, if named) in the JSON report.
fn result<'a>(checked: &'a Checked, action: &str, product: Option<&str>) -> &'a Value {
    checked.json["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|call| call["action"] == action && call["productId"].as_str() == product)
        .unwrap_or_else(|| panic!("no {action} {product:?} in {}", checked.json))
}

fn lacking(checked: &Checked) -> Vec<&str> {
    checked.json["lacking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|action| action.as_str().unwrap())
        .collect()
}

async fn emulator() -> RunningEmulator {
    RunningEmulator::start(EmulatorConfig::new(Seed::from_yaml(SEED).unwrap()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_allowed_key_is_ready_and_says_whose_it_is() {
    let emulator = emulator().await;
    let key = ("AKIDCHECKFULL", "full-key-never-printed");
    let checked = check(&emulator, key, &["--product", "CHECK00001"]).await;
    assert_eq!(checked.code, Some(0));
    assert_eq!(checked.json["key"], "accepted");
    assert_eq!(checked.json["identity"]["accountId"], "default");
    assert_eq!(
        checked.json["productsReached"],
        serde_json::json!({"ap-guangzhou": ["CHECK00001", "CHECK00002"]})
    );
    assert_eq!(
        result(&checked, "DescribeProducts", None)["result"],
        "allowed"
    );
    let described = result(&checked, "DescribeProduct", Some("CHECK00001"));
    assert_eq!(described["result"], "allowed");
    assert!(
        described["detail"]
            .as_str()
            .unwrap()
            .contains("RegisterType AutoCreate, RegisterLimit 50, a ProductSecret")
    );
    assert_eq!(
        result(&checked, "UpdateProductDynamicRegister", None)["result"],
        "skipped"
    );
    assert!(checked.json["missingPolicy"].is_null());
    assert!(
        checked
            .text
            .contains("the key can do what the controller needs.")
    );

    // Writing back changes nothing in the cloud.
    let before = emulator_product(&emulator, "CHECK00001").await;
    let written = check(&emulator, key, &["--product", "CHECK00001", "--write-back"]).await;
    assert_eq!(written.code, Some(0));
    let update = result(&written, "UpdateProductDynamicRegister", Some("CHECK00001"));
    assert_eq!(update["result"], "allowed");
    assert_eq!(emulator_product(&emulator, "CHECK00001").await, before);
}

/// Defect: `--write-back` wrote every product back after all were read, so a change made to
/// the first while the others were read was reverted. Each is now written back right after its
/// own read: a change made while another product is read survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_never_reverts_a_change_made_while_other_products_are_read() {
    let emulator = emulator().await;
    let control = |path: &str| format!("{}/_emulator/{path}", emulator.endpoint());
    let http = reqwest::Client::new();
    // Every answer takes a while, so the change lands between two calls of the check.
    let faults = serde_json::json!({"latencyMs": 700});
    http.post(control("faults"))
        .header("content-type", "application/json")
        .body(faults.to_string())
        .send()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("dynreg-check-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("full.yaml");
    std::fs::write(
        &file,
        "secretId: AKIDCHECKFULL\nsecretKey: full-key-never-printed\n",
    )
    .unwrap();
    let mut command = check_at(&emulator.endpoint());
    command
        .args(["--credentials-file", &file.display().to_string()])
        .args([
            "--product",
            "CHECK00001",
            "--product",
            "CHECK00002",
            "--write-back",
        ])
        .args(["-o", "json"])
        .env_remove("TENCENTCLOUD_SECRET_ID")
        .env_remove("TENCENTCLOUD_SECRET_KEY")
        .env_remove("IOTHUB_DYNREG_STS_ENDPOINT");
    let checking = tokio::task::spawn_blocking(move || command.output().unwrap());
    // Once the second product has been read, someone changes the first in the console.
    let described = || async {
        let answer = http.get(control("stats")).send().await.unwrap();
        let stats: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        stats["calls"]["DescribeProduct"]["Success"]
            .as_u64()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while described().await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the check never read two products"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let edit = serde_json::json!({"registerType": 0, "registerLimit": 7});
    let edited = http
        .post(control("products/CHECK00001"))
        .header("content-type", "application/json")
        .body(edit.to_string())
        .send()
        .await
        .unwrap();
    assert!(edited.status().is_success());
    let output = checking.await.unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let product = emulator_product(&emulator, "CHECK00001").await;
    assert_eq!(
        (&product[0], &product[1]),
        (&serde_json::json!(0), &serde_json::json!(7)),
        "the console's change was reverted by the write-back"
    );
}

async fn emulator_product(emulator: &RunningEmulator, id: &str) -> Value {
    let answer = reqwest::get(format!("{}/_emulator/products", emulator.endpoint()))
        .await
        .unwrap();
    let products: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    let product = products
        .as_array()
        .unwrap()
        .iter()
        .find(|product| product["productId"] == id)
        .unwrap();
    serde_json::json!([
        product["registerType"],
        product["registerLimit"],
        product["productSecret"]
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_describe_products_works_and_is_told_what_to_grant() {
    let emulator = emulator().await;
    let key = ("AKIDCHECKNOLIST", "nolist-key-never-printed");
    let checked = check(&emulator, key, &["--product", "CHECK00001"]).await;
    assert_eq!(checked.code, Some(0), "the controller reads products alone");
    let listing = result(&checked, "DescribeProducts", None);
    assert_eq!(listing["code"], "AuthFailure.UnauthorizedOperation");
    assert_eq!(
        result(&checked, "DescribeProduct", Some("CHECK00001"))["result"],
        "allowed"
    );
    assert_eq!(lacking(&checked), ["DescribeProducts"]);
    assert_eq!(
        checked.json["missingPolicy"],
        serde_json::json!({
            "version": "2.0",
            "statement": [{"effect": "allow", "action": ["iotcloud:DescribeProducts"], "resource": ["*"]}],
        })
    );
    assert!(checked.text.contains("CAM refuses it DescribeProducts"));
    assert!(checked.text.contains("\"iotcloud:DescribeProducts\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_restricted_to_some_products_names_those_it_cannot_reach() {
    let emulator = emulator().await;
    let key = ("AKIDCHECKSOME", "some-key-never-printed");
    let args = ["--product", "CHECK00001", "--product", "CHECK00002"];
    let checked = check(&emulator, key, &args).await;
    assert_eq!(checked.code, Some(1));
    assert_eq!(checked.json["key"], "accepted");
    assert_eq!(
        result(&checked, "DescribeProduct", Some("CHECK00001"))["result"],
        "allowed"
    );
    let refused = result(&checked, "DescribeProduct", Some("CHECK00002"));
    assert_eq!(refused["code"], "AuthFailure.UnauthorizedOperation");
    assert_eq!(lacking(&checked), ["DescribeProduct", "DescribeProducts"]);
    assert!(checked.text.contains("cannot do what the controller needs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_fails_only_when_asked_to_write() {
    let emulator = emulator().await;
    let key = ("AKIDCHECKREAD", "read-key-never-printed");
    let read_only = check(&emulator, key, &["--product", "CHECK00001"]).await;
    assert_eq!(read_only.code, Some(0));
    let written = check(&emulator, key, &["--product", "CHECK00001", "--write-back"]).await;
    assert_eq!(written.code, Some(1));
    let update = result(&written, "UpdateProductDynamicRegister", Some("CHECK00001"));
    assert_eq!(update["code"], "AuthFailure.UnauthorizedOperation");
    assert_eq!(lacking(&written), ["UpdateProductDynamicRegister"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_and_an_isolated_account_are_named() {
    let emulator = emulator().await;
    let wrong = check(&emulator, ("AKIDCHECKFULL", "not-the-key"), &[]).await;
    assert_eq!(wrong.code, Some(1));
    assert_eq!(wrong.json["key"], "refused");
    assert_eq!(wrong.json["keyCode"], "AuthFailure.SignatureFailure");
    assert!(
        wrong.json["identityError"]
            .as_str()
            .unwrap()
            .contains("AuthFailure.SignatureFailure")
    );
    assert!(
        wrong
            .text
            .contains("no, the cloud refused the key (AuthFailure.SignatureFailure)")
    );

    let key = ("AKIDCHECKARREARS", "arrears-key-never-printed");
    let isolated = check(&emulator, key, &["--product", "ARREARS001"]).await;
    assert_eq!(isolated.code, Some(1));
    assert_eq!(isolated.json["key"], "accountSuspended");
    assert_eq!(isolated.json["keyCode"], "FailedOperation.AccountIsolated");
    assert_eq!(isolated.json["identity"]["accountId"], "arrears");
    assert!(isolated.text.contains("Billing Center"));
}

#[test]
fn the_built_in_emulator_and_manifests_need_no_account() {
    let output = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg"))
        .args(["check", "--emulator", "-f", "examples/", "--write-back"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{text}");
    // examples/ manage ABCDE12345 and FGHIJ67890 of IoT Hub and EXPLR00001 of IoT Explorer:
    // each is read and written back with its service's calls.
    for (update, product) in [
        ("UpdateProductDynamicRegister", "ABCDE12345"),
        ("UpdateProductDynamicRegister", "FGHIJ67890"),
        ("iotexplorer:ModifyProductDynamicRegister", "EXPLR00001"),
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(update)
                && line.contains(product)
                && line.contains("allowed: wrote")),
            "{text}"
        );
    }
    assert!(
        text.lines().any(
            |line| line.starts_with("iotexplorer:DescribeProductDynamicRegister")
                && line.contains("EXPLR00001")
                && line.contains("allowed")
        ),
        "{text}"
    );
    let nothing = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg"))
        .args(["check"])
        .env_remove("TENCENTCLOUD_SECRET_ID")
        .env_remove("TENCENTCLOUD_SECRET_KEY")
        .env_remove("TKE_ROLE_ARN")
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no credentials"));
}

/// `check` with the credentials of a Secret and of ClusterCredentials, read from the real API
/// server through the kubeconfig, as a platform team checks what it is about to grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_read_from_the_cluster() {
    let products = "products: [{productId: CLUSTER001, region: ap-guangzhou}]";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let name = format!("{}-check", harness.namespace);
    let declared = serde_json::json!({
        "apiVersion": "iothub.dynreg.io/v1alpha1",
        "kind": "ClusterCredentials",
        "metadata": {"name": name},
        "spec": {"secretRef": {"namespace": harness.namespace, "name": "tencent-credentials"}},
    });
    Api::<ClusterCredentials>::all(harness.client.clone())
        .patch(
            &name,
            &PatchParams::apply("platform-team"),
            &Patch::Apply(&declared),
        )
        .await
        .unwrap();
    let kubeconfig = harness.plane.admin_kubeconfig();
    let endpoint = harness.emulator.endpoint();
    let namespace = harness.namespace.clone();
    let run = move |source: &[&str]| {
        check_at(&endpoint)
            .args(["--product", "CLUSTER001"])
            .args(source)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap()
    };
    let outputs = tokio::task::spawn_blocking(move || {
        [
            run(&["--secret", "tencent-credentials", "-n", &namespace]),
            run(&["--cluster-credentials", &name]),
            run(&["--secret", "no-such-secret", "-n", &namespace]),
        ]
    })
    .await
    .unwrap();
    for output in &outputs {
        let all = format!("{output:?}");
        assert!(!all.contains(SECRET_KEY), "a secret was printed: {all}");
    }
    let [secret, cluster, missing] = outputs;
    let text = String::from_utf8_lossy(&secret.stdout);
    assert_eq!(secret.status.code(), Some(0), "{text}");
    assert!(
        text.contains("(Secret ") && text.contains("/tencent-credentials)"),
        "{text}"
    );
    let text = String::from_utf8_lossy(&cluster.stdout);
    assert_eq!(cluster.status.code(), Some(0), "{text}");
    assert!(text.contains("(ClusterCredentials "), "{text}");
    assert_eq!(missing.status.code(), Some(2));
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(
        error.contains("cannot read Secret") && error.contains("no-such-secret"),
        "{error}"
    );
}
