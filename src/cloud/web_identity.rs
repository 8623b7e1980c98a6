//! Temporary credentials from a web identity (TKE workload identity): the projected
//! service-account token, exchanged with STS `AssumeRoleWithWebIdentity` as the official SDK's
//! OIDC provider does, kept while fresh and exchanged again before they expire. The token file
//! is read at every exchange: the kubelet rotates it.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::cloud::wire::AssumeRoleWithWebIdentityRequest;
use crate::cloud::{CloudClient, CloudError, Credentials, ErrorClass};

/// TKE's default path of the projected token.
pub const TKE_TOKEN_FILE: &str = "/var/run/secrets/tke.cloud.tencent.com/identity/token";
/// The lifetime asked for by default (the SDK's).
pub const DEFAULT_DURATION_SECONDS: u64 = 7200;
/// How long a refused token rests before it is offered again unchanged.
pub const REFUSAL_REST: Duration = Duration::from_secs(900);
/// How long a failed exchange answers for itself before the next caller tries again.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// A role to assume with a web identity token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebIdentity {
    /// The role, `qcs::cam::uin/<uin>:roleName/<name>`.
    pub role_arn: String,
    /// The OIDC identity provider the role trusts.
    pub provider_id: String,
    /// Region of the STS call.
    pub region: String,
    /// The projected token.
    pub token_file: PathBuf,
    /// Names the session in the audit log.
    pub session_name: String,
    /// Lifetime asked for.
    pub duration_seconds: u64,
}

impl WebIdentity {
    /// The identity TKE injects into a pod (`TKE_ROLE_ARN`, `TKE_PROVIDER_ID`, `TKE_REGION`,
    /// `TKE_WEB_IDENTITY_TOKEN_FILE`); `None` without `TKE_ROLE_ARN`, an error naming what is
    /// missing when only some are set.
    pub fn from_tke_environment(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let Some(role_arn) = read("TKE_ROLE_ARN") else {
            return Ok(None);
        };
        let required = |name: &str| {
            read(name).ok_or_else(|| {
                format!("TKE_ROLE_ARN is set but {name} is not: web identity needs both")
            })
        };
        Ok(Some(Self {
            role_arn: role_arn.trim().to_owned(),
            provider_id: required("TKE_PROVIDER_ID")?.trim().to_owned(),
            region: required("TKE_REGION")?.trim().to_owned(),
            token_file: read("TKE_WEB_IDENTITY_TOKEN_FILE")
                .map_or_else(|| PathBuf::from(TKE_TOKEN_FILE), PathBuf::from),
            session_name: "iothub-dynreg".to_owned(),
            duration_seconds: DEFAULT_DURATION_SECONDS,
        }))
    }
}

/// Why no temporary credentials are available. Never holds the token or a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebIdentityFailure {
    /// How to handle it: `Auth` when STS refused the token or role (it rests).
    pub class: ErrorClass,
    /// The cloud's code, or `TokenFileUnreadable`.
    pub code: String,
    /// Safe text for status and logs.
    pub message: String,
}

/// The credentials of one web identity, shared by every caller.
pub struct WebIdentityCredentials {
    identity: WebIdentity,
    cloud: CloudClient,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The credentials, and when to exchange again (half their lifetime: a caller may wait in
    /// the rate limiter before its call is signed, so what it gets must last).
    current: Option<(Credentials, Instant)>,
    /// The last failure: with the token refused, a hash of that token.
    failed: Option<Failed>,
}

struct Failed {
    at: Instant,
    token: Option<[u8; 32]>,
    failure: WebIdentityFailure,
}

impl std::fmt::Debug for WebIdentityCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentityCredentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl WebIdentityCredentials {
    /// Nothing is exchanged until credentials are first asked for.
    pub fn new(identity: WebIdentity, cloud: CloudClient) -> Self {
        Self {
            identity,
            cloud,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The role assumed.
    pub fn identity(&self) -> &WebIdentity {
        &self.identity
    }

    /// Fresh temporary credentials: those held while they have half their lifetime left,
    /// else a new exchange (one at a time; the others wait for it). A token STS refused is not
    /// offered again until the token file changes or [`REFUSAL_REST`] has passed, so a bad
    /// token burns no quota.
    pub async fn credentials(&self) -> Result<Credentials, WebIdentityFailure> {
        let mut state = self.state.lock().await;
        if let Some((credentials, refresh_at)) = &state.current
            && Instant::now() < *refresh_at
        {
            return Ok(credentials.clone());
        }
        let token = self.read_token();
        let fingerprint = token.as_ref().ok().map(|token| hash(token));
        if let Some(failed) = &state.failed {
            let memory = if failed.token.is_some() {
                REFUSAL_REST
            } else {
                FAILURE_MEMORY
            };
            let same_token = failed.token.is_none() || failed.token == fingerprint;
            if failed.at.elapsed() < memory && same_token {
                return Err(failed.failure.clone());
            }
        }
        let result = match token {
            Ok(token) => self.exchange(token).await,
            Err(failure) => Err(failure),
        };
        match result {
            Ok((credentials, lifetime)) => {
                state.current = Some((credentials.clone(), Instant::now() + lifetime / 2));
                state.failed = None;
                Ok(credentials)
            }
            Err(failure) => {
                let refused = failure.class == ErrorClass::Auth;
                state.failed = Some(Failed {
                    at: Instant::now(),
                    token: fingerprint.filter(|_| refused),
                    failure: failure.clone(),
                });
                Err(failure)
            }
        }
    }

    fn read_token(&self) -> Result<String, WebIdentityFailure> {
        let path = &self.identity.token_file;
        match std::fs::read_to_string(path) {
            Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
            Ok(_) => Err(unreadable(format!(
                "the web identity token file {} is empty",
                path.display()
            ))),
            Err(error) => Err(unreadable(format!(
                "cannot read the web identity token file {}: {error}",
                path.display()
            ))),
        }
    }

    async fn exchange(&self, token: String) -> Result<(Credentials, Duration), WebIdentityFailure> {
        let identity = &self.identity;
        let request = AssumeRoleWithWebIdentityRequest {
            provider_id: identity.provider_id.clone(),
            web_identity_token: token,
            role_arn: identity.role_arn.clone(),
            role_session_name: identity.session_name.clone(),
            duration_seconds: identity.duration_seconds,
        };
        let (credentials, expired_time) = self
            .cloud
            .assume_role_with_web_identity(&identity.region, &request)
            .await
            .map_err(|error| sts_failure(&identity.role_arn, &error))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        let lifetime = Duration::from_secs(expired_time.saturating_sub(now).max(0) as u64);
        Ok((credentials, lifetime))
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unreadable(message: String) -> WebIdentityFailure {
    WebIdentityFailure {
        class: ErrorClass::Invalid,
        code: "TokenFileUnreadable".to_owned(),
        message,
    }
}

/// STS refusing the token, the role or the provider is the identity's problem: it rests (Auth).
/// Throttling and outages stay transient.
fn sts_failure(role_arn: &str, error: &CloudError) -> WebIdentityFailure {
    let code = error.code().to_owned();
    let class = match error.class() {
        ErrorClass::Throttled | ErrorClass::Transient => error.class(),
        _ if code.starts_with("InternalError") => ErrorClass::Transient,
        _ => ErrorClass::Auth,
    };
    WebIdentityFailure {
        class,
        message: format!("STS refused the web identity of role {role_arn}: {error}"),
        code,
    }
}
