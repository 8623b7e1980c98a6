//! `iothub-dynreg-emulator`: the loopback stand-in for the Tencent Cloud IoT Hub API.
//!
//! Prints the URL it serves on as the first line of stdout, then logs to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use iothub_dynreg::emulator::{Emulator, EmulatorConfig, Faults, LimitPolicy, Seed};
use iothub_dynreg::ops::shutdown;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// A loopback stand-in for the Tencent Cloud IoT Hub API (iotcloud 2021-04-08): verifies TC3
/// signatures, serves DescribeProduct, DescribeProducts and UpdateProductDynamicRegister from
/// products held in memory (and STS: AssumeRoleWithWebIdentity for seeded roles, GetCallerIdentity), enforces a rate limit and injects faults on demand.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// YAML file with the accounts and products (see src/emulator/example-seed.yaml).
    #[arg(long)]
    seed: PathBuf,
    /// Calls per second allowed per (SecretId, action); the cloud allows 20.
    #[arg(long, default_value_t = 20)]
    rate_limit: u32,
    /// How far X-TC-Timestamp may be from the emulator's clock, in seconds.
    #[arg(long, default_value_t = 300)]
    timestamp_window: i64,
    /// Lower every RegisterLimit asked for above this value to it.
    #[arg(long)]
    register_limit_max: Option<i64>,
    /// Apply this RegisterLimit whatever was asked (the public example asks 10 and gets 10000).
    #[arg(long)]
    register_limit_override: Option<i64>,
    /// Refuse updates asking for a RegisterLimit above this value (InvalidParameterValue).
    #[arg(long)]
    register_limit_refuse_above: Option<i64>,
    /// Milliseconds added to every API answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Leave ProductSecret out of DescribeProducts answers (DescribeProduct still has it).
    #[arg(long)]
    list_omits_product_secret: bool,
    /// Lifetime in seconds of the temporary credentials STS issues (default: as asked).
    #[arg(long)]
    sts_credential_lifetime: Option<i64>,
    /// Probability (0 to 1) of answering InternalError.
    #[arg(long, default_value_t = 0.0)]
    internal_error_rate: f64,
    /// Probability of answering HTTP 502.
    #[arg(long, default_value_t = 0.0)]
    http_502_rate: f64,
    /// Probability of answering HTTP 503.
    #[arg(long, default_value_t = 0.0)]
    http_503_rate: f64,
    /// Probability of closing the connection without an answer.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Probability of doing what was asked, then closing the connection without an answer (as
    /// when a client times out).
    #[arg(long, default_value_t = 0.0)]
    lost_answer_rate: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Flags::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("iothub-dynreg-emulator: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> Result<(), String> {
    let text = std::fs::read_to_string(&flags.seed)
        .map_err(|e| format!("cannot read seed {}: {e}", flags.seed.display()))?;
    let seed = Seed::from_yaml(&text).map_err(|e| format!("seed {}: {e}", flags.seed.display()))?;
    let faults = Faults {
        latency_ms: flags.latency_ms,
        internal_error_rate: flags.internal_error_rate,
        http502_rate: flags.http_502_rate,
        http503_rate: flags.http_503_rate,
        drop_rate: flags.drop_rate,
        lost_answer_rate: flags.lost_answer_rate,
    };
    faults.check()?;
    if flags.rate_limit == 0 {
        return Err("--rate-limit must be at least 1".to_owned());
    }
    let products = seed.all_products().len();
    let accounts = seed.accounts.len();
    let config = EmulatorConfig {
        seed,
        rate_limit_per_second: flags.rate_limit,
        timestamp_window_seconds: flags.timestamp_window,
        limit_policy: LimitPolicy {
            max: flags.register_limit_max,
            override_to: flags.register_limit_override,
            refuse_above: flags.register_limit_refuse_above,
        },
        faults,
        list_omits_product_secret: flags.list_omits_product_secret,
        temporary_credentials_lifetime_seconds: flags.sts_credential_lifetime,
    };
    let listener = TcpListener::bind(flags.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", flags.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    if !addr.ip().is_loopback() {
        warn!(%addr, "listening beyond loopback: the control endpoints have no authentication");
    }
    // The first line of stdout is the contract with tests and scripts: the URL to use.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "http://{addr}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write the address to stdout: {e}"))?;
    info!(%addr, accounts, products, rate_limit = flags.rate_limit, "emulator serving");
    Arc::new(Emulator::new(config))
        .serve(listener, shutdown::shutdown_signal())
        .await;
    info!("emulator stopped");
    Ok(())
}
