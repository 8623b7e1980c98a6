//! A Secret's data as the decision compares it: each key with a SHA-256 digest of its value.
//! Published Secrets are remembered between reconciles by resourceVersion; remembering digests
//! keeps their values out of the controller's memory, in a fraction of the bytes.

use sha2::{Digest, Sha256};

/// Keys, sorted, each with the digest of its value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DataDigest(Box<[(Box<str>, [u8; 32])]>);

impl DataDigest {
    /// The digest of `data` (a key given twice keeps its first value).
    pub fn of<K: AsRef<str>, V: AsRef<[u8]>>(data: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut entries: Vec<(Box<str>, [u8; 32])> = data
            .into_iter()
            .map(|(key, value)| (Box::from(key.as_ref()), digest(value.as_ref())))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, first| later.0 == first.0);
        Self(entries.into_boxed_slice())
    }

    /// Whether `key` is there.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Whether `key` is there and holds `value`.
    pub fn holds(&self, key: &str, value: &[u8]) -> bool {
        self.find(key).is_some_and(|held| *held == digest(value))
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _)| &**key)
    }

    fn find(&self, key: &str) -> Option<&[u8; 32]> {
        self.0
            .binary_search_by(|(held, _)| (**held).cmp(key))
            .ok()
            .map(|at| &self.0[at].1)
    }
}

/// Keys only: a digest of a short secret is as good as the secret to whoever tries them all.
impl std::fmt::Debug for DataDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys()).finish()
    }
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_values_by_digest_and_shows_keys_only() {
        let data = DataDigest::of([("productSecret", "s3cret"), ("productId", "ABCDE12345")]);
        assert!(data.holds("productSecret", b"s3cret"));
        assert!(!data.holds("productSecret", b"other"));
        assert!(!data.holds("missing", b"s3cret"));
        assert!(data.contains_key("productId") && !data.contains_key("product"));
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["productId", "productSecret"]
        );
        assert_eq!(
            data,
            DataDigest::of([("productId", "ABCDE12345"), ("productSecret", "s3cret")])
        );
        let shown = format!("{data:?}");
        assert_eq!(shown, r#"{"productId", "productSecret"}"#);
        assert!(!shown.contains("s3cret"));
    }
}
