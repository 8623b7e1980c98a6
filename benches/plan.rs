//! `iothub-dynreg plan` over N manifests against the emulator at the cloud's 20 requests/s: how
//! many Describe calls it costs and how long it takes, against the bounds ceil(N/250) + 1 calls
//! and 1.2 × calls / 20 s. See docs/benchmarks.md.
//!
//! `cargo bench --bench plan` (N = 5000), or `cargo bench --bench plan -- 1000 20000`.

use std::process::{Command, Stdio};
use std::time::Instant;

use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use serde_json::Value;

const SECRET_ID: &str = "AKIDbenchPLAN0000001";
const SECRET_KEY: &str = "bench-plan-secret-key";
const LIMIT_PER_SECOND: f64 = 20.0;

/// N manifests in one multi-document file: half change their product, half already match.
fn write_manifests(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let mut text = String::new();
    for index in 0..n {
        let (kind, limit) = if index % 2 == 0 {
            ("AutoCreate", 1000)
        } else {
            ("Disabled", 0)
        };
        text.push_str(&format!(
            "---\napiVersion: iothub.dynreg.io/v1alpha1\nkind: DynamicRegistration\nmetadata: {{name: p{index}, namespace: bench}}\nspec: {{productId: B{index:09}, region: ap-guangzhou, registerType: {kind}, registerLimit: {limit}}}\n"
        ));
    }
    let path = dir.join("manifests.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    seconds: f64,
    describe_calls: u64,
    update_calls: u64,
    throttled: u64,
    peak: u64,
    planned_updates: u64,
    exit_code: Option<i32>,
}

async fn run(n: usize, dir: &std::path::Path) -> Run {
    let seed = format!(
        "accounts: [{{secretId: {SECRET_ID}, secretKey: {SECRET_KEY}}}]\ngenerate: {{count: {n}, region: ap-guangzhou, prefix: B}}"
    );
    let emulator = RunningEmulator::start(EmulatorConfig::new(Seed::from_yaml(&seed).unwrap()))
        .await
        .unwrap();
    let manifests = write_manifests(dir, n);
    let credentials = dir.join("credentials.yaml");
    std::fs::write(
        &credentials,
        format!("secretId: {SECRET_ID}\nsecretKey: {SECRET_KEY}\n"),
    )
    .unwrap();
    let endpoint = emulator.endpoint();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_iothub-dynreg"))
            .args(["plan", "-o", "json", "--insecure-loopback-endpoint"])
            .arg("-f")
            .arg(&manifests)
            .arg("--endpoint")
            .arg(&endpoint)
            .arg("--credentials-file")
            .arg(&credentials)
            .stderr(Stdio::inherit())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    let body = reqwest::get(format!("{}/_emulator/stats", emulator.endpoint()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&body).unwrap();
    let calls = |action: &str| -> u64 {
        stats["calls"][action].as_object().map_or(0, |results| {
            results.values().filter_map(Value::as_u64).sum()
        })
    };
    Run {
        seconds,
        describe_calls: calls("DescribeProducts") + calls("DescribeProduct"),
        update_calls: calls("UpdateProductDynamicRegister"),
        throttled: stats["requestLimitExceeded"].as_u64().unwrap_or(0),
        peak: stats["peakCallsPerSecondByAction"]
            .as_object()
            .map_or(0, |peaks| {
                peaks.values().filter_map(Value::as_u64).max().unwrap_or(0)
            }),
        planned_updates: plan["summary"]["actions"]["update"].as_u64().unwrap_or(0),
        exit_code: output.status.code(),
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![5000] } else { sizes };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| N | Describe calls | bound ceil(N/250)+1 | seconds | bound 1.2 × calls/20 s | time / (calls/20 s) | Update calls | RequestLimitExceeded | peak calls/s | planned updates | exit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let dir =
            std::env::temp_dir().join(format!("dynreg-plan-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = runtime.block_on(run(n, &dir));
        std::fs::remove_dir_all(&dir).unwrap();
        let call_bound = (n as u64).div_ceil(250) + 1;
        let at_limit = run.describe_calls as f64 / LIMIT_PER_SECOND;
        println!(
            "| {n} | {} | {call_bound} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:?} |",
            run.describe_calls,
            run.seconds,
            1.2 * at_limit,
            run.seconds / at_limit,
            run.update_calls,
            run.throttled,
            run.peak,
            run.planned_updates,
            run.exit_code,
        );
        assert!(run.describe_calls <= call_bound, "too many Describe calls");
        assert_eq!(run.update_calls, 0, "plan wrote to the cloud");
        assert_eq!(run.planned_updates, n.div_ceil(2) as u64);
    }
}
