//! Backoff for credentials the cloud refused: bad credentials shared by many resources cost one
//! call per retry period, not one per resource.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::Credentials;
use crate::controller::decision::Problem;

/// What the cloud said of a set of credentials.
#[derive(Debug, Default)]
enum KeyState {
    /// Not used yet, or the last use failed for another reason: one caller at a time probes.
    #[default]
    Unverified,
    /// A call succeeded: use freely.
    Verified,
    /// Refused (`AuthFailure.*`): not used until `until`.
    BackingOff { until: Instant, code: String },
}

#[derive(Debug)]
struct Entry {
    state: KeyState,
    probe: Arc<tokio::sync::Mutex<()>>,
    last_used: Instant,
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            state: KeyState::default(),
            probe: Arc::default(),
            last_used: Instant::now(),
        }
    }
}

/// Guards the account's quota against bad credentials shared by many resources: until the
/// cloud has accepted a set of credentials, only one call at a time uses them; once it refused
/// them (`AuthFailure.*`) they back off until they change or a slow retry comes due.
#[derive(Debug)]
pub struct CredentialGate {
    backoff: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// Held by the one caller probing unverified credentials; dropping it lets the next one in.
pub struct Probe(#[allow(dead_code)] Option<tokio::sync::OwnedMutexGuard<()>>);

impl CredentialGate {
    /// Refused credentials back off for `backoff`.
    pub fn new(backoff: Duration) -> Self {
        Self {
            backoff,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `credentials` may be used and returns the probe to hold during the call, or
    /// the problem to report while they back off.
    pub async fn admit(&self, credentials: &Credentials) -> Result<Probe, Problem> {
        let key = credentials.fingerprint();
        loop {
            let probe = {
                let mut entries = self.entries();
                let entry = entries.entry(key).or_default();
                entry.last_used = Instant::now();
                match &entry.state {
                    KeyState::Verified => return Ok(Probe(None)),
                    KeyState::BackingOff { until, code } if Instant::now() < *until => {
                        return Err(Problem::CredentialsBackingOff {
                            secret_id: credentials.secret_id.clone(),
                            code: code.clone(),
                        });
                    }
                    KeyState::BackingOff { .. } => entry.state = KeyState::Unverified,
                    KeyState::Unverified => {}
                }
                entry.probe.clone()
            };
            let guard = probe.lock_owned().await;
            // Whoever probed before us may have settled it either way.
            let settled = matches!(
                self.entries().get(&key).map(|entry| &entry.state),
                Some(KeyState::Verified | KeyState::BackingOff { .. })
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
            KeyState::BackingOff {
                until: Instant::now() + self.backoff,
                code: code.to_owned(),
            },
        );
    }

    /// Records that the cloud accepted the credentials.
    pub fn accepted(&self, credentials: &Credentials) {
        self.set(credentials, KeyState::Verified);
    }

    fn set(&self, credentials: &Credentials, state: KeyState) {
        let mut entries = self.entries();
        let now = Instant::now();
        // Forget credentials nobody used for two backoff periods (one in backoff only once its
        // backoff is over): temporary credentials bring a new key at every rotation.
        let forget_after = self.backoff * 2;
        entries.retain(|_, entry| {
            let backing_off =
                matches!(&entry.state, KeyState::BackingOff { until, .. } if now < *until);
            backing_off || now.duration_since(entry.last_used) < forget_after
        });
        let entry = entries.entry(credentials.fingerprint()).or_default();
        entry.state = state;
        entry.last_used = now;
    }

    /// How many sets of credentials are in backoff now (refused, their backoff not over).
    pub fn backing_off(&self) -> usize {
        let now = Instant::now();
        let entries = self.entries();
        let backing_off = |entry: &&Entry| matches!(&entry.state, KeyState::BackingOff { until, .. } if now < *until);
        entries.values().filter(backing_off).count()
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

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_back_off_until_changed_or_due() {
        let gate = CredentialGate::new(Duration::from_secs(900));
        let bad = Credentials::new("AKID", "wrong");
        let probe = gate.admit(&bad).await.unwrap();
        gate.refused(&bad, "AuthFailure.SignatureFailure");
        drop(probe);
        for _ in 0..100 {
            assert!(matches!(
                gate.admit(&bad).await,
                Err(Problem::CredentialsBackingOff { .. })
            ));
        }
        // Rotated key: a different fingerprint, usable at once.
        assert!(gate.admit(&Credentials::new("AKID", "right")).await.is_ok());
        // After the backoff, one caller may retry.
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
            Err(Problem::CredentialsBackingOff { .. })
        ));
    }
}
