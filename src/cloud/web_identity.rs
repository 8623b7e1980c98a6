//! Temporary credentials from a web identity (TKE workload identity): the projected
//! service-account token, exchanged with STS `AssumeRoleWithWebIdentity` as the official SDK's
//! OIDC provider does, kept while fresh and exchanged again before they expire. The token file
//! is read at every exchange: the kubelet rotates it.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::warn;

use crate::cloud::wire::AssumeRoleWithWebIdentityRequest;
use crate::cloud::{CloudClient, CloudError, Credentials, ErrorClass};

/// TKE's default path of the projected token.
pub const TKE_TOKEN_FILE: &str = "/var/run/secrets/tke.cloud.tencent.com/identity/token";
/// The lifetime asked for by default (the SDK's).
pub const DEFAULT_DURATION_SECONDS: u64 = 7200;
/// How long a refused token waits (backs off) before it is offered again unchanged.
pub const REFUSAL_BACKOFF: Duration = Duration::from_secs(900);
/// How long a failed exchange answers for itself before the next caller tries again; it
/// doubles with every failure in a row, up to [`RETRY_MAX`].
const FAILURE_MEMORY: Duration = Duration::from_secs(2);
/// The longest wait between two exchanges after failures.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// The longest lifetime STS issues (`DurationSeconds` at most 43200): credentials said to last
/// longer are held as if they lasted this long.
const LONGEST_LIFETIME: Duration = Duration::from_secs(43_200);
/// Credentials are not handed out in the last tenth of their lifetime (at most this long): a
/// call may wait in the rate limiter before it is signed, and must arrive before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// A token file is read up to this size: projected tokens are a few KiB.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

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
    /// How to handle it: `Auth` when STS refused the token or role (it backs off).
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
    /// The credentials, while they may be handed out.
    current: Option<Held>,
    /// The last failure: with the token refused, a hash of that token.
    failed: Option<Failed>,
}

/// Credentials and when to exchange them again: at half their lifetime (a caller may wait in
/// the rate limiter before its call is signed, so what it gets must last), and, should that
/// exchange fail, they are handed out until shortly before they expire.
struct Held {
    credentials: Credentials,
    refresh_at: Instant,
    usable_until: Instant,
}

/// What became of trying to exchange the token.
enum Attempt {
    /// Not tried: the last failure says to wait.
    NotYet(WebIdentityFailure),
    /// Tried: the credentials and their expiry, or the failure with the hash of the token sent.
    Made(Result<(Credentials, i64), (WebIdentityFailure, Option<TokenHash>)>),
}

/// A token's SHA-256: what is remembered of a token STS refused.
type TokenHash = [u8; 32];

struct Failed {
    at: Instant,
    /// Failures in a row: how long until the next try.
    in_a_row: u32,
    token: Option<[u8; 32]>,
    failure: WebIdentityFailure,
}

impl Failed {
    /// Whether an exchange may be tried again now with the token whose hash is `token`: a
    /// refused token backs off for [`REFUSAL_BACKOFF`] unless it changed; other failures back off.
    fn allows_retry(&self, token: Option<[u8; 32]>) -> bool {
        let wait = match self.token {
            Some(refused) if Some(refused) == token => REFUSAL_BACKOFF,
            Some(_) => Duration::ZERO,
            None => FAILURE_MEMORY
                .saturating_mul(1 << self.in_a_row.saturating_sub(1).min(6))
                .min(RETRY_MAX),
        };
        self.at.elapsed() >= wait
    }
}

/// When credentials said to expire at `expired_time` (Unix seconds) are exchanged again and
/// until when they are handed out, from `now` (Unix seconds) and `at` (the monotonic now): the
/// lifetime is held within what STS issues, whatever the answer says.
fn schedule(expired_time: i64, now: i64, at: Instant) -> (Instant, Instant) {
    let seconds = u64::try_from(expired_time.saturating_sub(now)).unwrap_or(0);
    let lifetime = Duration::from_secs(seconds).min(LONGEST_LIFETIME);
    let margin = (lifetime / 10).min(EXPIRY_MARGIN);
    (at + lifetime / 2, at + (lifetime - margin))
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
    /// else a new exchange (one at a time; the others wait for it). Should the exchange fail,
    /// the held ones serve until shortly before they expire, and the exchange is retried with
    /// backoff. A token STS refused is not offered again until the token file changes or
    /// [`REFUSAL_BACKOFF`] has passed, so a bad token burns no quota.
    pub async fn credentials(&self) -> Result<Credentials, WebIdentityFailure> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let usable = state
            .current
            .as_ref()
            .filter(|held| now < held.usable_until);
        if let Some(held) = usable
            && now < held.refresh_at
        {
            return Ok(held.credentials.clone());
        }
        let usable = usable.map(|held| held.credentials.clone());
        match self.try_exchange(&state).await {
            Attempt::NotYet(failure) => usable.ok_or(failure),
            Attempt::Made(Ok((credentials, expired_time))) => {
                let (refresh_at, usable_until) = schedule(expired_time, unix_now(), now);
                state.current = Some(Held {
                    credentials: credentials.clone(),
                    refresh_at,
                    usable_until,
                });
                state.failed = None;
                Ok(credentials)
            }
            Attempt::Made(Err((failure, token))) => {
                let in_a_row = state.failed.as_ref().map_or(0, |f| f.in_a_row) + 1;
                let refused = failure.class == ErrorClass::Auth;
                state.failed = Some(Failed {
                    at: Instant::now(),
                    in_a_row,
                    token: token.filter(|_| refused),
                    failure: failure.clone(),
                });
                if usable.is_some() {
                    warn!(role = %self.identity.role_arn, code = %failure.code, "refreshing the web identity's credentials failed; the current ones serve until shortly before they expire");
                }
                usable.ok_or(failure)
            }
        }
    }

    /// An exchange with the token in the file, unless the last failure says to wait: a
    /// refused token until it changes (or its backoff is over), any other failure its backoff
    /// (without reading the file).
    async fn try_exchange(&self, state: &State) -> Attempt {
        let wait = |token| {
            let failed = state.failed.as_ref()?;
            (!failed.allows_retry(token)).then(|| failed.failure.clone())
        };
        if state.failed.as_ref().is_some_and(|f| f.token.is_none())
            && let Some(failure) = wait(None)
        {
            return Attempt::NotYet(failure);
        }
        let token = self.read_token().await;
        let fingerprint = token.as_ref().ok().map(|token| hash(token));
        if let Some(failure) = wait(fingerprint) {
            return Attempt::NotYet(failure);
        }
        let result = match token {
            Ok(token) => self.exchange(token).await,
            Err(failure) => Err(failure),
        };
        Attempt::Made(result.map_err(|failure| (failure, fingerprint)))
    }

    /// The token, read off the runtime's workers and never beyond [`MAX_TOKEN_BYTES`].
    async fn read_token(&self) -> Result<String, WebIdentityFailure> {
        let path = self.identity.token_file.clone();
        let read = tokio::task::spawn_blocking(move || read_bounded(&path)).await;
        let path = self.identity.token_file.display();
        match read {
            Ok(Ok(token)) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
            Ok(Ok(_)) => Err(unreadable(format!(
                "the web identity token file {path} is empty"
            ))),
            Ok(Err(error)) => Err(unreadable(format!(
                "cannot read the web identity token file {path}: {error}"
            ))),
            Err(error) => Err(unreadable(format!(
                "cannot read the web identity token file {path}: {error}"
            ))),
        }
    }

    async fn exchange(&self, token: String) -> Result<(Credentials, i64), WebIdentityFailure> {
        let identity = &self.identity;
        let request = AssumeRoleWithWebIdentityRequest {
            provider_id: identity.provider_id.clone(),
            web_identity_token: token,
            role_arn: identity.role_arn.clone(),
            role_session_name: identity.session_name.clone(),
            duration_seconds: identity.duration_seconds,
        };
        self.cloud
            .assume_role_with_web_identity(&identity.region, &request)
            .await
            .map_err(|error| sts_failure(&identity.role_arn, &error))
    }
}

/// The file's text, or an error once it is larger than [`MAX_TOKEN_BYTES`] (read no further).
fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TOKEN_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_TOKEN_BYTES} bytes, which no token is"
        )));
    }
    Ok(text)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
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

/// STS refusing the token, the role or the provider is the identity's problem: it backs off (Auth).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_expiry_sts_may_send_gives_a_schedule_within_what_sts_issues() {
        let at = Instant::now();
        let now = 1_800_000_000;
        for hostile in [i64::MAX, i64::MIN, now - 1, now, 0] {
            let (refresh_at, usable_until) = schedule(hostile, now, at);
            assert!(
                refresh_at <= usable_until || usable_until == at,
                "{hostile}"
            );
            assert!(usable_until <= at + LONGEST_LIFETIME, "{hostile}");
        }
        // Two hours: refreshed after one, handed out until five minutes before the end.
        let (refresh_at, usable_until) = schedule(now + 7200, now, at);
        assert_eq!(refresh_at - at, Duration::from_secs(3600));
        assert_eq!(usable_until - at, Duration::from_secs(6900));
        // Six seconds: the last tenth is kept back.
        let (_, usable_until) = schedule(now + 6, now, at);
        assert_eq!(usable_until - at, Duration::from_millis(5400));
    }
}
