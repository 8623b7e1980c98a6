//! The flags of `plan` and `check` made into the options their commands take.

use crate::cloud::client::DEFAULT_ENDPOINT;
use crate::cloud::limit::{ActionRateLimit, RateLimits};
use crate::cloud::{Endpoint, Service};
use crate::preflight::command as check;
use crate::preview::command as plan;

use super::{CheckFlags, CloudFlags, PlanFlags};

impl PlanFlags {
    /// The options of `plan`, or what is wrong with the flags.
    pub fn into_options(self) -> Result<plan::Options, String> {
        let cloud = match self.emulator {
            Some(seed) => plan::Cloud::Emulator { seed },
            None => plan::Cloud::Endpoint {
                endpoint: self.cloud.endpoints()?.0,
                credentials_file: self.credentials_file,
            },
        };
        Ok(plan::Options {
            paths: self.paths,
            output: self.output,
            cloud,
            rate_limits: rate_limits(&self.cloud.rate_limits),
        })
    }
}

impl CheckFlags {
    /// The options of `check`, or what is wrong with the flags.
    pub fn into_options(self) -> Result<check::Options, String> {
        let insecure = self.cloud.insecure_loopback_endpoint;
        let endpoint = self.cloud.endpoints()?.0;
        let sts_endpoint = self
            .sts_endpoint
            .as_deref()
            .map(|text| sts_endpoint(&endpoint, Some(text), insecure))
            .transpose()?;
        let source = match (self.credentials_file, self.secret, self.cluster_credentials) {
            (Some(path), ..) => check::Source::File(path),
            (_, Some(name), _) => check::Source::Secret {
                namespace: self.namespace,
                name,
            },
            (.., Some(name)) => check::Source::ClusterCredentials(name),
            _ => check::Source::Environment,
        };
        let target = match self.emulator {
            Some(seed) => check::Target::Emulator(seed),
            None => check::Target::Cloud {
                source,
                endpoint,
                sts_endpoint,
            },
        };
        Ok(check::Options {
            target,
            rate_limits: rate_limits(&self.cloud.rate_limits),
            regions: self.regions,
            products: self.products,
            manifests: self.paths,
            write_back: self.write_back,
            output: self.output,
        })
    }
}

impl CloudFlags {
    /// IoT Hub's endpoint (`--endpoint URL`, the last one given, else the public one), and
    /// those `--endpoint SERVICE=URL` sets for the other services.
    pub fn endpoints(&self) -> Result<(Endpoint, Vec<(Service, Endpoint)>), String> {
        let insecure = self.insecure_loopback_endpoint;
        let mut hub = None;
        let mut others = Vec::new();
        for text in &self.endpoints {
            // A URL has no `=` before its scheme; `SERVICE=` names a service.
            let (service, url) = match text.split_once('=') {
                Some((name, url)) if !name.contains('/') => (name.parse::<Service>()?, url),
                _ => (Service::IotHub, text.as_str()),
            };
            if service == Service::Sts {
                return Err("--endpoint sts=…: STS has its own flag, --sts-endpoint".to_owned());
            }
            let endpoint = Endpoint::parse(url, insecure)
                .map_err(|e| format!("--endpoint {}: {e}", service.name()))?;
            match service {
                Service::IotHub => hub = Some(endpoint),
                _ => others.push((service, endpoint)),
            }
        }
        let hub = match hub {
            Some(endpoint) => endpoint,
            None => Endpoint::parse(DEFAULT_ENDPOINT, false).map_err(|e| e.to_string())?,
        };
        Ok((hub, others))
    }
}

/// `--sts-endpoint`, else the STS of `endpoint`'s site.
pub(super) fn sts_endpoint(
    endpoint: &Endpoint,
    flag: Option<&str>,
    insecure_loopback: bool,
) -> Result<Endpoint, String> {
    match flag {
        Some(text) => {
            Endpoint::parse(text, insecure_loopback).map_err(|e| format!("--sts-endpoint: {e}"))
        }
        None => Ok(endpoint.matching_sts()),
    }
}

/// The defaults with every `--rate-limit ACTION=N` applied, the last of an action winning.
pub(super) fn rate_limits(flags: &[ActionRateLimit]) -> RateLimits {
    let mut rate_limits = RateLimits::default();
    for limit in flags {
        rate_limits.set(*limit);
    }
    rate_limits
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn endpoints(args: &[&str]) -> Result<(String, Vec<(Service, String)>), String> {
        let mut argv = vec![
            "iothub-dynreg",
            "plan",
            "-f",
            "x.yaml",
            "--insecure-loopback-endpoint",
        ];
        argv.extend_from_slice(args);
        let Command::Plan(flags) = Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        else {
            unreachable!("parsed plan")
        };
        let (hub, others) = flags.cloud.endpoints()?;
        let others = others
            .into_iter()
            .map(|(service, endpoint)| (service, endpoint.host().to_owned()))
            .collect();
        Ok((hub.host().to_owned(), others))
    }

    #[test]
    fn endpoint_flags_set_iot_hubs_and_name_the_others_by_service() {
        assert_eq!(
            endpoints(&[]).unwrap(),
            ("iotcloud.tencentcloudapi.com".to_owned(), vec![])
        );
        assert_eq!(
            endpoints(&[
                "--endpoint",
                "http://127.0.0.1:9000",
                "--endpoint",
                "iotexplorer=https://explorer.example:8443",
                "--endpoint",
                "iotvideo=iotvideo.intl.tencentcloudapi.com",
            ])
            .unwrap(),
            (
                "127.0.0.1:9000".to_owned(),
                vec![
                    (Service::IotExplorer, "explorer.example:8443".to_owned()),
                    (
                        Service::IotVideo,
                        "iotvideo.intl.tencentcloudapi.com".to_owned()
                    ),
                ]
            )
        );
        for (bad, expected) in [
            ("iotnope=https://x.example", "unknown service"),
            ("sts=https://x.example", "--sts-endpoint"),
            ("iotexplorer=http://example.com", "--endpoint iotexplorer"),
        ] {
            let error = endpoints(&["--endpoint", bad]).unwrap_err();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }
}
