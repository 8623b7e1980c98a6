//! The emulator binary as users start it, called by the official Tencent Cloud Python SDK.
//!
//! The SDK lives in a virtualenv that `.ci/run` creates (`scripts/sdk-venv.sh`); its python is
//! found through `IOTHUB_DYNREG_SDK_PYTHON` or at `target/sdk-venv/bin/python`. Without python3
//! the test is skipped (listed, see `support::skip`; a failure under CI); without the venv it
//! fails: `scripts/test.sh` creates it first.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::emulator_process::EmulatorProcess;

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/emulator/example-seed.yaml"
);

fn sdk_python() -> Option<PathBuf> {
    let candidate = std::env::var_os("IOTHUB_DYNREG_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python")
        });
    candidate.exists().then_some(candidate)
}

#[test]
fn official_python_sdk_calls_every_service() {
    let Some(python) = sdk_python() else {
        let python3 = Command::new("python3").arg("--version").output();
        if python3.is_err() {
            support::skip::missing_program(&support::skip::current_test(), "python3");
            return;
        }
        panic!("the official SDK is not installed: run scripts/sdk-venv.sh (scripts/test.sh does)");
    };
    let emulator = EmulatorProcess::start(&["--seed", SEED]);
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk/official_sdk_check.py"
        ))
        .arg(&emulator.url)
        .output()
        .expect("run the SDK check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("official SDK: all checks passed"));
    assert!(stdout.contains("wrong SecretKey: AuthFailure.SignatureFailure"));
    assert!(stdout.contains("OIDC role credentials (AssumeRoleWithWebIdentity): ok"));
    assert!(stdout.contains("IoT Explorer Describe/ModifyProductDynamicRegister: ok"));
    assert!(stdout.contains("IoT Video Describe/ModifyProductDynamicRegister: ok"));
    assert!(stdout.contains("UnauthorizedOperation.ProductNotSupportPSK"));

    let sdk_exchange =
        get_json(&format!("{}/_emulator/last-requests", emulator.url))["AssumeRoleWithWebIdentity"]
            .clone();
    compare_with_our_exchange(&emulator.url, &sdk_exchange);

    let stats = get_json(&format!("{}/_emulator/stats", emulator.url));
    println!("emulator stats after the SDK run: {}", stats["calls"]);
    assert_eq!(
        stats["calls"]["DescribeProduct"]["AuthFailure.SignatureFailure"],
        1
    );
    assert_eq!(stats["calls"]["UpdateProductDynamicRegister"]["Success"], 1);
    for service in ["iotexplorer", "iotvideo"] {
        let calls = &stats["calls"];
        assert_eq!(
            calls[format!("{service}:ModifyProductDynamicRegister")]["Success"],
            1
        );
        assert_eq!(
            calls[format!("{service}:DescribeProductDynamicRegister")]["Success"],
            2
        );
    }
}

/// The controller's web identity exchange, header by header against the SDK's OIDC provider's
/// (`sdk`, as the emulator saw it): the same API headers with the same values, but for the time,
/// the trace id (random, new for every request), the client's name (`X-TC-RequestClient`: each
/// names itself) and the language of error messages (the controller asks every call for
/// English; the SDK's provider leaves its default, zh-CN). Headers of the HTTP library
/// (User-Agent, Accept…) are not the API's.
fn compare_with_our_exchange(url: &str, sdk: &serde_json::Value) {
    use iothub_dynreg::cloud::wire::AssumeRoleWithWebIdentityRequest;
    use iothub_dynreg::cloud::{ClientConfig, CloudClient, Endpoint};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = CloudClient::new(ClientConfig {
            sts_endpoint: Endpoint::parse(url, true).unwrap(),
            ..ClientConfig::default()
        })
        .unwrap();
        let request = AssumeRoleWithWebIdentityRequest {
            provider_id: "tke-oidc-example".to_owned(),
            web_identity_token: "emulator-example-web-identity-token".to_owned(),
            role_arn: "qcs::cam::uin/100000000001:roleName/iothub-dynreg".to_owned(),
            role_session_name: "sdk-check".to_owned(),
            duration_seconds: 600,
        };
        client
            .assume_role_with_web_identity("ap-guangzhou", &request)
            .await
            .expect("the controller's exchange");
    });
    let ours =
        get_json(&format!("{url}/_emulator/last-requests"))["AssumeRoleWithWebIdentity"].clone();
    let api_headers = |seen: &serde_json::Value| -> std::collections::BTreeMap<String, String> {
        seen["headers"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| {
                matches!(name.as_str(), "authorization" | "content-type" | "host")
                    || name.starts_with("x-tc-")
            })
            .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
            .collect()
    };
    let (sdk_headers, our_headers) = (api_headers(sdk), api_headers(&ours));
    println!("SDK's exchange: {sdk_headers:?}\nours: {our_headers:?}");
    assert_eq!(
        sdk_headers.keys().collect::<Vec<_>>(),
        our_headers.keys().collect::<Vec<_>>(),
        "header names"
    );
    for (name, value) in &sdk_headers {
        if matches!(
            name.as_str(),
            "x-tc-timestamp" | "x-tc-traceid" | "x-tc-requestclient" | "x-tc-language"
        ) {
            continue;
        }
        assert_eq!(Some(value), our_headers.get(name), "header {name}");
    }
    assert_eq!(our_headers["authorization"], "SKIP");
    let names = |seen: &serde_json::Value| {
        let mut names: Vec<String> = serde_json::from_value(seen["params"].clone()).unwrap();
        names.sort();
        names
    };
    assert_eq!(names(sdk), names(&ours), "parameter names");
}

fn get_json(url: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let body = runtime.block_on(async { reqwest::get(url).await.unwrap().bytes().await.unwrap() });
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn binary_reports_bad_seeds_clearly() {
    let output = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg-emulator"))
        .args(["--seed", "/nonexistent/seed.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read seed /nonexistent/seed.yaml"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_iothub-dynreg-emulator"))
        .args(["--seed", SEED, "--drop-rate", "1.5"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("probabilities"));
}

#[test]
fn binary_serves_stats_on_the_printed_address() {
    let emulator = EmulatorProcess::start(&["--seed", SEED, "--rate-limit", "200"]);
    let stats = get_json(&format!("{}/_emulator/stats", emulator.url));
    assert_eq!(stats["rateLimitPerSecond"], 200);
    assert_eq!(stats["totalCalls"], 0);
}
