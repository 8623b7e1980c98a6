//! Credentials from a Secret (keys `secretId`, `secretKey`, [`token`]): its data read into
//! credentials, and what each Secret held at the resourceVersion last read, so that a Secret is
//! read again only when the watch shows a new version (and by one reconcile at a time).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::{Client, ResourceExt};

use super::Error;
use crate::cloud::Credentials;
use crate::controller::cache::secrets::{SecretCache, secret_key as key};
use crate::controller::cache::versions::Versioned;
use crate::controller::decision::Problem;

/// Key names in a credentials Secret.
pub const SECRET_ID_KEY: &str = "secretId";
/// See [`SECRET_ID_KEY`].
pub const SECRET_KEY_KEY: &str = "secretKey";
/// See [`SECRET_ID_KEY`].
pub const TOKEN_KEY: &str = "token";

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

/// Credentials as read from the Secrets resources name (or why they are unusable).
#[derive(Default)]
pub struct KnownCredentials {
    read: Versioned<Result<Credentials, Problem>>,
    /// One lock per Secret being read, so that concurrent reconciles read it once.
    reading: Mutex<HashMap<Box<str>, ReadLock>>,
}

/// Held while one Secret is read.
type ReadLock = Arc<tokio::sync::Mutex<()>>;

impl KnownCredentials {
    /// Waits until no other reconcile reads `namespace/name`; hold the guard while reading it.
    pub async fn reading(&self, namespace: &str, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for are dropped as others come.
            reading.retain(|_, lock| Arc::strong_count(lock) > 1);
            reading.entry(key(namespace, name)).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The credentials `namespace/name` held at `version`, if that is the version last read.
    pub fn at(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Option<Result<Credentials, Problem>> {
        self.read.get(namespace, name, version)
    }

    /// Remembers what `namespace/name` held at `version`.
    pub fn remember(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        read: Result<Credentials, Problem>,
    ) {
        self.read.put(namespace, name, version, read);
    }
}

/// A credentials Secret's metadata and the credentials its data gives (or why not), read only
/// when the watch cache shows a version not read before; `None` when there is no such Secret.
pub async fn read(
    client: &Client,
    (cache, known): (&SecretCache, &KnownCredentials),
    namespace: &str,
    name: &str,
) -> Result<Option<(ObjectMeta, Result<Credentials, Problem>)>, Error> {
    let known_now = || {
        let cached = cache.metadata(namespace, name)?;
        let read = known.at(namespace, name, cached.resource_version.as_deref()?)?;
        Some((cached, read))
    };
    if let Some(found) = known_now() {
        return Ok(Some(found));
    }
    // Hundreds of reconciles may start together on a Secret not read yet: one reads it, the
    // others find what it read. (A Secret the watch does not show is read by each: nothing
    // read could be known by its version.)
    let in_cache = cache.version(namespace, name).is_some();
    let _reading = match in_cache {
        true => Some(known.reading(namespace, name).await),
        false => None,
    };
    if let Some(found) = known_now() {
        return Ok(Some(found));
    }
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadSecret {
            secret: format!("{namespace}/{name}"),
            source,
        })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let read = from_secret_data(name, secret.data.as_ref());
    if let Some(version) = secret.resource_version() {
        known.remember(namespace, name, &version, read.clone());
    }
    Ok(Some((secret.metadata, read)))
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
}
