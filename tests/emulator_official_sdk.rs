//! The emulator binary as users start it, called by the official Tencent Cloud Python SDK.
//!
//! The SDK lives in a virtualenv that `.ci/run` creates (`scripts/sdk-venv.sh`); its python is
//! found through `IOTHUB_DYNREG_SDK_PYTHON` or at `target/sdk-venv/bin/python`. Without it the
//! SDK test says so and passes locally, but fails under CI, where the venv must exist.

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
fn official_python_sdk_calls_all_three_actions() {
    let Some(python) = sdk_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide the official SDK: run scripts/sdk-venv.sh"
        );
        eprintln!("official SDK not installed (scripts/sdk-venv.sh); interop check not run");
        return;
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

    let stats = get_json(&format!("{}/_emulator/stats", emulator.url));
    println!("emulator stats after the SDK run: {}", stats["calls"]);
    assert_eq!(
        stats["calls"]["DescribeProduct"]["AuthFailure.SignatureFailure"],
        1
    );
    assert_eq!(stats["calls"]["UpdateProductDynamicRegister"]["Success"], 1);
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
