//! STS's `AssumeRoleWithWebIdentity`, as far as the controller uses it: a seeded role trusting a
//! provider exchanges the tokens it vouches for into temporary credentials of the role's
//! account, which expire. Unsigned, as the official SDK sends it.

use rand::Rng;
use serde_json::{Map, Value, json};

use super::seed::{DEFAULT_ACCOUNT, SeedRole};
use super::verify::{Account, Refusal};
use crate::cloud::Service;

/// Lifetime of issued credentials when the request names none (the SDK's default).
const DEFAULT_DURATION_SECONDS: i64 = 7200;

/// The roles, and how long issued credentials last.
#[derive(Clone, Debug, Default)]
pub struct Sts {
    /// Roles web identities may assume.
    pub roles: Vec<SeedRole>,
    /// Lifetime of every issued credential, whatever was asked (tests make it short).
    pub lifetime_seconds: Option<i64>,
}

/// Credentials issued: the answer to send, and the account to accept them as.
pub struct Issued {
    /// `Response` body.
    pub answer: Value,
    /// The temporary SecretId.
    pub secret_id: String,
    /// What the verifier accepts from then on.
    pub account: Account,
}

impl Sts {
    /// Checks the version, the role, the provider and the token, then issues credentials.
    pub fn assume(
        &self,
        version: Option<&str>,
        params: &Map<String, Value>,
        now: i64,
        request_id: &str,
    ) -> Result<Issued, Refusal> {
        if version != Some(Service::Sts.version()) {
            return Err(Refusal::new(
                "NoSuchVersion",
                format!("sts speaks {}", Service::Sts.version()),
            ));
        }
        let role = self.trusting(params)?;
        let asked = params
            .get("DurationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_DURATION_SECONDS);
        let lifetime = self.lifetime_seconds.unwrap_or(asked).max(1);
        Ok(issue(role, now.saturating_add(lifetime), request_id))
    }

    /// The role the request names, if it trusts the provider named and the token is one the
    /// provider vouches for.
    fn trusting(&self, params: &Map<String, Value>) -> Result<&SeedRole, Refusal> {
        let text = |name: &str| {
            params
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| {
                    Refusal::new("InvalidParameter.ParamError", format!("{name} is required"))
                })
        };
        let role_arn = text("RoleArn")?;
        let provider_id = text("ProviderId")?;
        let token = text("WebIdentityToken")?;
        text("RoleSessionName")?;
        let role = self
            .roles
            .iter()
            .find(|role| role.role_arn == role_arn)
            .ok_or_else(|| {
                Refusal::new(
                    "ResourceNotFound.RoleNotFound",
                    format!("role {role_arn} does not exist"),
                )
            })?;
        if role.provider_id != provider_id || !role.tokens.iter().any(|known| known == token) {
            return Err(Refusal::new(
                "InvalidParameter.WebIdentityTokenError",
                "the web identity token is not valid for this provider and role",
            ));
        }
        Ok(role)
    }
}

/// New temporary credentials of `role`'s account, valid until `expires_at`.
fn issue(role: &SeedRole, expires_at: i64, request_id: &str) -> Issued {
    let mut random = rand::rng();
    let secret_id = format!("AKIDtmp{:016x}", random.random::<u64>());
    let secret_key = format!("tmpkey{:032x}", random.random::<u128>());
    let session_token = format!("session{:032x}", random.random::<u128>());
    let answer = json!({
        "Credentials": {
            "Token": session_token,
            "TmpSecretId": secret_id,
            "TmpSecretKey": secret_key,
        },
        "ExpiredTime": expires_at,
        "Expiration": jiff::Timestamp::from_second(expires_at)
            .map(|at| at.to_string())
            .unwrap_or_default(),
        "RequestId": request_id,
    });
    Issued {
        answer,
        secret_id,
        account: Account {
            secret_key,
            token: Some(session_token),
            expires_at: Some(expires_at),
            owner: role
                .account
                .clone()
                .unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned()),
            policy: None,
        },
    }
}
