//! The controller's own credentials (`TENCENTCLOUD_*`, or TKE's web identity) and the
//! namespaces allowed to use them: none unless the administrator says so, so that a namespace
//! cannot spend credentials it was not given.

use std::collections::HashSet;
use std::sync::Arc;

use crate::cloud::Credentials;
use crate::cloud::redacted::Redacted;
use crate::cloud::web_identity::WebIdentityCredentials;
use crate::controller::decision::Problem;

/// Namespaces allowed to use the controller's own credentials (`--default-credentials-namespaces`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NamespaceAllowList {
    /// No namespace (the default: a namespace cannot spend credentials it was not given).
    #[default]
    None,
    /// Every namespace (`*`).
    All,
    /// These namespaces.
    Only(HashSet<String>),
}

impl NamespaceAllowList {
    /// Parses a comma-separated list; `*` allows every namespace, an empty list none.
    pub fn parse(text: &str) -> Self {
        let names: HashSet<String> = text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        if names.contains("*") {
            NamespaceAllowList::All
        } else if names.is_empty() {
            NamespaceAllowList::None
        } else {
            NamespaceAllowList::Only(names)
        }
    }

    /// Whether `namespace` may use the default credentials.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            NamespaceAllowList::None => false,
            NamespaceAllowList::All => true,
            NamespaceAllowList::Only(names) => names.contains(namespace),
        }
    }
}

/// The controller's own credentials: keys, or the temporary credentials of a web identity.
#[derive(Clone, Debug)]
pub enum DefaultCredentials {
    /// `TENCENTCLOUD_SECRET_ID`, `TENCENTCLOUD_SECRET_KEY` (and `TENCENTCLOUD_SESSION_TOKEN`).
    Keys(Credentials),
    /// TKE's workload identity, exchanged with STS and refreshed before expiry.
    WebIdentity(Arc<WebIdentityCredentials>),
}

impl DefaultCredentials {
    /// Credentials to call with now, or the problem to report.
    pub async fn current(&self) -> Result<Credentials, Problem> {
        match self {
            DefaultCredentials::Keys(credentials) => Ok(credentials.clone()),
            DefaultCredentials::WebIdentity(provider) => {
                provider
                    .credentials()
                    .await
                    .map_err(|failure| Problem::Cloud {
                        class: failure.class,
                        message: failure.message,
                    })
            }
        }
    }
}

/// Reads the controller's own credentials from `TENCENTCLOUD_SECRET_ID`,
/// `TENCENTCLOUD_SECRET_KEY` and `TENCENTCLOUD_SESSION_TOKEN`.
pub fn from_environment(lookup: impl Fn(&str) -> Option<String>) -> Option<Credentials> {
    let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    let credentials = Credentials::new(
        read("TENCENTCLOUD_SECRET_ID")?,
        Redacted::new(read("TENCENTCLOUD_SECRET_KEY")?),
    );
    Some(match read("TENCENTCLOUD_SESSION_TOKEN") {
        Some(token) => credentials.with_token(token),
        None => credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        assert!(!NamespaceAllowList::parse("").allows("a"));
        assert!(NamespaceAllowList::parse("*").allows("anything"));
        let some = NamespaceAllowList::parse("fleet, team-b");
        assert!(some.allows("fleet") && some.allows("team-b") && !some.allows("team-c"));
    }

    #[test]
    fn environment_credentials() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(from_environment(env(&[("TENCENTCLOUD_SECRET_ID", "AKID")])).is_none());
        let creds = from_environment(env(&[
            ("TENCENTCLOUD_SECRET_ID", "AKID"),
            ("TENCENTCLOUD_SECRET_KEY", "key"),
            ("TENCENTCLOUD_SESSION_TOKEN", "tok"),
        ]))
        .unwrap();
        assert_eq!(creds.token.unwrap().expose(), "tok");
    }
}
