//! Which cloud credentials a resource may use, and resting credentials the cloud refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use tokio::time::Instant;

use crate::cloud::Credentials;
use crate::cloud::redacted::Redacted;
use crate::cloud::web_identity::WebIdentityCredentials;
use crate::controller::decision::Problem;

/// Key names in a credentials Secret.
pub const SECRET_ID_KEY: &str = "secretId";
/// See [`SECRET_ID_KEY`].
pub const SECRET_KEY_KEY: &str = "secretKey";
/// See [`SECRET_ID_KEY`].
pub const TOKEN_KEY: &str = "token";

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

/// Reads credentials from a Secret's data; a problem names what is wrong without values.
pub fn from_secret_data(
    secret_name: &str,
    data: Option<&BTreeMap<String, ByteString>>,
) -> Result<Credentials, Problem> {
    let invalid = |detail: String| Problem::CredentialsInvalid {
        secret: secret_name.to_owned(),
        detail,
    };
    let read = |key: &str| -> Result<Option<String>, Problem> {
        let Some(value) = data.and_then(|data| data.get(key)) else {
            return Ok(None);
        };
        let text = String::from_utf8(value.0.clone())
            .map_err(|_| invalid(format!("key {key} is not UTF-8 text")))?;
        let text = text.trim().to_owned();
        // Keys and tokens are printable ASCII; anything else could only fail every call (or
        // break the request headers), so say so now instead of retrying a transport error.
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!(
                "key {key} holds characters other than printable ASCII (a line break or a stray character pasted in?)"
            )));
        }
        Ok((!text.is_empty()).then_some(text))
    };
    let secret_id = read(SECRET_ID_KEY)?
        .ok_or_else(|| invalid(format!("key {SECRET_ID_KEY} is missing or empty")))?;
    let secret_key = read(SECRET_KEY_KEY)?
        .ok_or_else(|| invalid(format!("key {SECRET_KEY_KEY} is missing or empty")))?;
    let mut credentials = Credentials::new(secret_id, secret_key);
    if let Some(token) = read(TOKEN_KEY)? {
        credentials = credentials.with_token(token);
    }
    Ok(credentials)
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

/// What the cloud said of a set of credentials.
#[derive(Debug, Default)]
enum Verdict {
    /// Not used yet, or the last use failed for another reason: one caller at a time probes.
    #[default]
    Unverified,
    /// A call succeeded: use freely.
    Verified,
    /// Refused (`AuthFailure.*`): not used until `until`.
    Resting { until: Instant, code: String },
}

#[derive(Debug)]
struct Entry {
    verdict: Verdict,
    probe: Arc<tokio::sync::Mutex<()>>,
    last_used: Instant,
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            verdict: Verdict::default(),
            probe: Arc::default(),
            last_used: Instant::now(),
        }
    }
}

/// Guards the account's quota against bad credentials shared by many resources: until the
/// cloud has accepted a set of credentials, only one call at a time uses them; once it refused
/// them (`AuthFailure.*`) they rest until they change or a slow retry comes due.
#[derive(Debug)]
pub struct CredentialGate {
    rest: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// Held by the one caller probing unverified credentials; dropping it lets the next one in.
pub struct Probe(#[allow(dead_code)] Option<tokio::sync::OwnedMutexGuard<()>>);

impl CredentialGate {
    /// Refused credentials rest for `rest`.
    pub fn new(rest: Duration) -> Self {
        Self {
            rest,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `credentials` may be used and returns the probe to hold during the call, or
    /// the problem to report while they rest.
    pub async fn admit(&self, credentials: &Credentials) -> Result<Probe, Problem> {
        let key = credentials.fingerprint();
        loop {
            let probe = {
                let mut entries = self.entries();
                let entry = entries.entry(key).or_default();
                entry.last_used = Instant::now();
                match &entry.verdict {
                    Verdict::Verified => return Ok(Probe(None)),
                    Verdict::Resting { until, code } if Instant::now() < *until => {
                        return Err(Problem::CredentialsResting {
                            secret_id: credentials.secret_id.clone(),
                            code: code.clone(),
                        });
                    }
                    Verdict::Resting { .. } => entry.verdict = Verdict::Unverified,
                    Verdict::Unverified => {}
                }
                entry.probe.clone()
            };
            let guard = probe.lock_owned().await;
            // Whoever probed before us may have settled it either way.
            let settled = matches!(
                self.entries().get(&key).map(|entry| &entry.verdict),
                Some(Verdict::Verified | Verdict::Resting { .. })
            );
            if !settled {
                return Ok(Probe(Some(guard)));
            }
        }
    }

    /// Records a refusal with the cloud's error code.
    pub fn refused(&self, credentials: &Credentials, code: &str) {
        self.set(
            credentials,
            Verdict::Resting {
                until: Instant::now() + self.rest,
                code: code.to_owned(),
            },
        );
    }

    /// Records that the cloud accepted the credentials.
    pub fn accepted(&self, credentials: &Credentials) {
        self.set(credentials, Verdict::Verified);
    }

    fn set(&self, credentials: &Credentials, verdict: Verdict) {
        let mut entries = self.entries();
        let now = Instant::now();
        // Forget credentials nobody used for two rest periods (a resting one only once its rest
        // is over): temporary credentials bring a new key at every rotation.
        let forget_after = self.rest * 2;
        entries.retain(|_, entry| {
            let resting = matches!(&entry.verdict, Verdict::Resting { until, .. } if now < *until);
            resting || now.duration_since(entry.last_used) < forget_after
        });
        let entry = entries.entry(credentials.fingerprint()).or_default();
        entry.verdict = verdict;
        entry.last_used = now;
    }

    /// How many sets of credentials are remembered.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn credential_text_must_be_printable_ascii() {
        for bad in ["AKID\nEXTRA", "AKID\u{7f}", "AKIDé", "AK ID"] {
            let problem =
                from_secret_data("c", Some(&data(&[("secretId", bad), ("secretKey", "k")])))
                    .unwrap_err();
            let Problem::CredentialsInvalid { detail, .. } = problem else {
                panic!("{bad:?}: {problem:?}")
            };
            assert!(detail.contains("printable ASCII"), "{detail}");
            assert!(!detail.contains(bad), "the value is never echoed");
        }
        // Surrounding whitespace (a trailing newline from `echo`) is trimmed, not refused.
        assert!(
            from_secret_data(
                "c",
                Some(&data(&[("secretId", "AKID\n"), ("secretKey", "k")]))
            )
            .is_ok()
        );
    }

    #[test]
    fn reads_credentials_secrets() {
        let ok = from_secret_data(
            "c",
            Some(&data(&[("secretId", "AKID"), ("secretKey", "k")])),
        )
        .unwrap();
        assert_eq!(ok.secret_id, "AKID");
        assert_eq!(ok.token, None);
        let with_token = from_secret_data(
            "c",
            Some(&data(&[
                ("secretId", "AKID"),
                ("secretKey", "k"),
                ("token", "t"),
            ])),
        )
        .unwrap();
        assert_eq!(with_token.token.unwrap().expose(), "t");

        for (pairs, expected) in [
            (vec![("secretKey", "k")], "key secretId is missing"),
            (vec![("secretId", "AKID")], "key secretKey is missing"),
            (
                vec![("secretId", "AKID"), ("secretKey", "  ")],
                "key secretKey is missing or empty",
            ),
        ] {
            match from_secret_data("creds", Some(&data(&pairs))) {
                Err(Problem::CredentialsInvalid { secret, detail }) => {
                    assert_eq!(secret, "creds");
                    assert!(detail.contains(expected), "{detail}");
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        assert!(from_secret_data("creds", None).is_err());
    }

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

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_rest_until_changed_or_due() {
        let gate = CredentialGate::new(Duration::from_secs(900));
        let bad = Credentials::new("AKID", "wrong");
        let probe = gate.admit(&bad).await.unwrap();
        gate.refused(&bad, "AuthFailure.SignatureFailure");
        drop(probe);
        for _ in 0..100 {
            assert!(matches!(
                gate.admit(&bad).await,
                Err(Problem::CredentialsResting { .. })
            ));
        }
        // Rotated key: a different fingerprint, usable at once.
        assert!(gate.admit(&Credentials::new("AKID", "right")).await.is_ok());
        // After the rest, one caller may retry.
        tokio::time::advance(Duration::from_secs(901)).await;
        let retry = gate.admit(&bad).await.unwrap();
        gate.accepted(&bad);
        drop(retry);
        assert!(gate.admit(&bad).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn unverified_credentials_are_probed_one_caller_at_a_time() {
        let gate = Arc::new(CredentialGate::new(Duration::from_secs(900)));
        let creds = Credentials::new("AKID", "key");
        let first = gate.admit(&creds).await.unwrap();
        // A second caller waits while the first one probes...
        let waiter = {
            let (gate, creds) = (gate.clone(), creds.clone());
            tokio::spawn(async move { gate.admit(&creds).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        // ...and learns the outcome: refused means it does not call at all.
        gate.refused(&creds, "AuthFailure.SecretIdNotFound");
        drop(first);
        assert!(matches!(
            waiter.await.unwrap(),
            Err(Problem::CredentialsResting { .. })
        ));
    }
}
