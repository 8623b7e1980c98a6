//! The `plan` command's wiring: where the credentials and the cloud come from, and how the plan
//! is printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{manifests, report};
use crate::cloud::limit::RateLimits;
use crate::cloud::observe::Observer;
use crate::cloud::{ClientConfig, CloudClient, Credentials, Endpoint};
use crate::controller::credentials;
use crate::controller::decision::{Problem, problem_verdict};

/// How the plan is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, for a terminal.
    Table,
    /// Stable JSON, for bots.
    Json,
    /// A pull-request comment.
    Markdown,
}

/// Which cloud to read, with which credentials.
#[derive(Clone, Debug)]
pub enum Cloud {
    /// An IoT Hub endpoint, with the environment's credentials or those of a file.
    Endpoint {
        endpoint: Endpoint,
        credentials_file: Option<PathBuf>,
    },
    /// The built-in emulator, started for the plan from this seed (the example seed when
    /// `None`), read with the seed's first account.
    Emulator { seed: Option<PathBuf> },
}

/// Everything the command needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Files, directories, or `-`.
    pub paths: Vec<PathBuf>,
    /// How to print.
    pub output: Output,
    /// Where to read.
    pub cloud: Cloud,
    /// The client's limits (the cloud's 20/s per action by default).
    pub rate_limits: RateLimits,
}

/// Runs the plan and prints it; the exit status, or why there is no plan.
pub async fn run(options: Options) -> Result<u8, String> {
    let inputs = manifests::read(&options.paths, &mut std::io::stdin().lock())
        .map_err(|error| error.to_string())?;
    // Kept alive until the plan is made.
    let (endpoint, credentials, _emulator) = match &options.cloud {
        Cloud::Endpoint {
            endpoint,
            credentials_file,
        } => {
            let credentials = match credentials_file {
                Some(path) => from_file(path)?,
                None => credentials::default::from_environment(|name| std::env::var(name).ok())
                    .ok_or_else(|| {
                        "no credentials: set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY (and TENCENTCLOUD_SESSION_TOKEN for temporary ones), pass --credentials-file, or plan against the built-in emulator with --emulator".to_owned()
                    })?,
            };
            (endpoint.clone(), credentials, None)
        }
        Cloud::Emulator { seed } => {
            let (endpoint, credentials, emulator) = emulator::start(seed.as_deref()).await?;
            (endpoint, credentials, Some(emulator))
        }
    };
    let client = CloudClient::new(ClientConfig {
        endpoint,
        rate_limits: options.rate_limits,
        ..ClientConfig::default()
    })
    .map_err(|error| error.to_string())?;
    // One snapshot per region for the whole plan.
    let observer = Observer::new(client, Duration::from_secs(3600));
    let plan = super::plan(inputs, &observer, &credentials).await;
    let text = match options.output {
        Output::Table => report::table(&plan),
        Output::Markdown => report::markdown(&plan),
        Output::Json => format!("{:#}\n", report::json(&plan)),
    };
    print!("{text}");
    Ok(plan.exit_code())
}

/// Credentials from a file holding what the credentials Secret's data holds (`secretId`,
/// `secretKey`, `token`), as a YAML or JSON mapping, or a whole Secret manifest.
pub fn from_file(path: &Path) -> Result<Credentials, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read credentials file {name}: {error}"))?;
    let unusable = |detail: String| {
        problem_verdict(&Problem::CredentialsInvalid {
            secret: name.clone(),
            detail,
        })
        .message
        .replacen("credentials Secret", "credentials file", 1)
    };
    let value: serde_json::Value = serde_yaml::from_str(&text)
        // The parser's message may quote the file, which holds a key: never repeated.
        .map_err(|_| unusable("not a YAML or JSON mapping".to_owned()))?;
    let data = if value.get("kind").and_then(|kind| kind.as_str()) == Some("Secret") {
        let secret: Secret = serde_json::from_value(value)
            .map_err(|_| unusable("not a readable Secret manifest".to_owned()))?;
        let mut data = secret.data.unwrap_or_default();
        for (key, text) in secret.string_data.unwrap_or_default() {
            data.insert(key, ByteString(text.into_bytes()));
        }
        data
    } else {
        let pairs: BTreeMap<String, String> = serde_json::from_value(value)
            .map_err(|_| unusable("not a mapping of text values".to_owned()))?;
        pairs
            .into_iter()
            .map(|(key, text)| (key, ByteString(text.into_bytes())))
            .collect()
    };
    credentials::secret::from_secret_data(&name, Some(&data)).map_err(|problem| {
        problem_verdict(&problem)
            .message
            .replacen("credentials Secret", "credentials file", 1)
    })
}

#[cfg(feature = "emulator")]
pub mod emulator {
    use std::path::Path;

    use crate::cloud::{Credentials, Endpoint};
    use crate::emulator::{EmulatorConfig, RunningEmulator, Seed};

    const EXAMPLE_SEED: &str = include_str!("../emulator/example-seed.yaml");

    /// Starts the emulator on a loopback port; its endpoint and first account.
    pub async fn start(
        seed: Option<&Path>,
    ) -> Result<(Endpoint, Credentials, RunningEmulator), String> {
        let seed = match seed {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read seed {}: {error}", path.display()))?;
                Seed::from_yaml(&text)
                    .map_err(|error| format!("seed {}: {error}", path.display()))?
            }
            None => Seed::from_yaml(EXAMPLE_SEED).expect("the example seed is valid"),
        };
        let account = seed
            .accounts
            .first()
            .ok_or("the seed has no account to read with")?;
        let mut credentials =
            Credentials::new(account.secret_id.clone(), account.secret_key.clone());
        if let Some(token) = &account.token {
            credentials = credentials.with_token(token.clone());
        }
        let running = RunningEmulator::start(EmulatorConfig::new(seed))
            .await
            .map_err(|error| format!("cannot start the emulator: {error}"))?;
        let endpoint =
            Endpoint::parse(&running.endpoint(), true).map_err(|error| error.to_string())?;
        Ok((endpoint, credentials, running))
    }
}

#[cfg(not(feature = "emulator"))]
pub mod emulator {
    use std::path::Path;

    use crate::cloud::{Credentials, Endpoint};

    pub struct NoEmulator;

    pub async fn start(_: Option<&Path>) -> Result<(Endpoint, Credentials, NoEmulator), String> {
        Err(
            "--emulator: this build has no emulator (built without the emulator feature)"
                .to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("dynreg-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn credentials_files_hold_the_secret_data_or_a_secret() {
        let mapping = file("map.yaml", "secretId: AKIDx\nsecretKey: key-1\ntoken: t\n");
        let json = file("map.json", r#"{"secretId": "AKIDx", "secretKey": "key-1"}"#);
        // data is base64: "key-1" → a2V5LTE=; stringData wins for secretId.
        let secret = file(
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: c}\ndata: {secretKey: a2V5LTE=}\nstringData: {secretId: AKIDx}\n",
        );
        for path in [&mapping, &json, &secret] {
            let credentials = from_file(path).unwrap();
            assert_eq!(credentials.secret_id, "AKIDx");
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn a_bad_credentials_file_is_named_and_never_quoted() {
        let broken = file(
            "broken.yaml",
            "secretId: AKIDx\nsecretKey: [very-secret-key\n",
        );
        let error = from_file(&broken).unwrap_err();
        assert!(error.starts_with("credentials file "), "{error}");
        assert!(!error.contains("very-secret-key"), "{error}");
        std::fs::remove_file(&broken).unwrap();
        let incomplete = file("incomplete.yaml", "secretId: AKIDx\n");
        let error = from_file(&incomplete).unwrap_err();
        assert!(
            error.ends_with("key secretKey is missing or empty"),
            "{error}"
        );
        std::fs::remove_file(&incomplete).unwrap();
    }
}
