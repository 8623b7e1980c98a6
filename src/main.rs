//! `iothub-dynreg`: parses the command line and runs the subcommand. The wiring of each lives
//! in the library (`cli`), so that this file holds only what a binary must: the allocator.

use std::process::ExitCode;

use clap::Parser;
use iothub_dynreg::cli::{Cli, Command, run};
use iothub_dynreg::controller::resources;
use iothub_dynreg::ops::{allocator, logging};
use iothub_dynreg::preflight::command as check;
use iothub_dynreg::preview::command as plan;

/// mimalloc rather than glibc's malloc: a start on a large fleet allocates in a burst (every
/// resource listed, triggered and parked at once) and glibc keeps what the burst freed scattered
/// over its heap, so the process stays far above what it holds (docs/benchmarks.md, "Scale 2,
/// memory"). Its tuning is in `ops::allocator`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => crd(),
        Command::Plan(flags) => {
            let outcome = match flags.into_options() {
                Ok(options) => plan::run(options).await,
                Err(message) => Err(message),
            };
            exit_code("plan", outcome, ExitCode::FAILURE)
        }
        Command::Check(flags) => {
            let outcome = match flags.into_options() {
                Ok(options) => check::run(options).await,
                Err(message) => Err(message),
            };
            // 1 means "refused"; failing to check at all is 2, as an inconclusive check.
            exit_code("check", outcome, ExitCode::from(2))
        }
        Command::Run(flags) => {
            logging::init(flags.log_format);
            match run::run(*flags).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    tracing::error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The CustomResourceDefinitions, as YAML documents.
fn crd() -> ExitCode {
    let documents = resources::definitions()
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<Vec<_>, _>>();
    match documents {
        Ok(documents) => {
            print!("{}", documents.join("---\n"));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("iothub-dynreg: cannot render the CRDs: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A command's exit code, or its error on stderr and `failure`.
fn exit_code(command: &str, outcome: Result<u8, String>, failure: ExitCode) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("iothub-dynreg {command}: {message}");
            failure
        }
    }
}
