//! The flags of `plan` and `check` made into the options their commands take.

use crate::cloud::Endpoint;
use crate::cloud::limit::{ActionRateLimit, RateLimits};
use crate::preflight::command as check;
use crate::preview::command as plan;

use super::{CheckFlags, PlanFlags};

impl PlanFlags {
    /// The options of `plan`, or what is wrong with the flags.
    pub fn into_options(self) -> Result<plan::Options, String> {
        let cloud = match self.emulator {
            Some(seed) => plan::Cloud::Emulator { seed },
            None => plan::Cloud::Endpoint {
                endpoint: Endpoint::parse(
                    &self.cloud.endpoint,
                    self.cloud.insecure_loopback_endpoint,
                )
                .map_err(|e| e.to_string())?,
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
        let endpoint =
            Endpoint::parse(&self.cloud.endpoint, insecure).map_err(|e| e.to_string())?;
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
