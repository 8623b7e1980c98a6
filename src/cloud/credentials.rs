//! Tencent Cloud API credentials.

use sha2::{Digest, Sha256};

use crate::cloud::redacted::Redacted;

/// A SecretId/SecretKey pair, with the session token of temporary (STS) credentials.
///
/// `Debug` shows the SecretId (it names the key, like an AWS access key id) and hides the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Public identifier of the key, sent in every request.
    pub secret_id: String,
    /// Signs requests; never sent, never printed.
    pub secret_key: Redacted,
    /// Session token of temporary credentials, sent as `X-TC-Token`.
    pub token: Option<Redacted>,
    /// Whose rate limit the calls count against, when not the SecretId's own: temporary
    /// credentials of one role share one limit across refreshes (the limit follows the
    /// account, not the momentary key).
    pub limited_as: Option<String>,
}

impl Credentials {
    /// Long-lived credentials.
    pub fn new(secret_id: impl Into<String>, secret_key: impl Into<Redacted>) -> Self {
        Self {
            secret_id: secret_id.into(),
            secret_key: secret_key.into(),
            token: None,
            limited_as: None,
        }
    }

    /// Counts these credentials' calls against the limit of `identity` (e.g. a role).
    pub fn limited_as(mut self, identity: impl Into<String>) -> Self {
        self.limited_as = Some(identity.into());
        self
    }

    /// The identity whose rate limit applies.
    pub fn limit_identity(&self) -> &str {
        self.limited_as.as_deref().unwrap_or(&self.secret_id)
    }

    /// Adds the session token of temporary credentials.
    pub fn with_token(mut self, token: impl Into<Redacted>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Identifies this exact set of credentials without keeping or showing the key: a changed
    /// key or token is a different fingerprint, so rotated credentials are told apart at once.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.secret_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.secret_key.expose().as_bytes());
        hasher.update([0]);
        if let Some(token) = &self.token {
            hasher.update(token.expose().as_bytes());
        }
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_id_only() {
        let creds = Credentials::new("AKIDvisible", "key-value-XYZ").with_token("token-value-ABC");
        let printed = format!("{creds:?}");
        assert!(printed.contains("AKIDvisible"));
        assert!(!printed.contains("key-value-XYZ"));
        assert!(!printed.contains("token-value-ABC"));
    }
}
