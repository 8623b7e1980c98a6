//! Sharding by label, the Flux way: `--watch-label-selector` restricts a controller to the
//! resources whose labels match, so that several Deployments split a very large fleet. Secrets
//! are watched with the same selector, so a published Secret carries the labels of its resource
//! that the selector names; each shard has its own Lease.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// A label selector as the API server takes it, with the label keys it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSelector {
    text: String,
    keys: Vec<String>,
    /// Every term is `!key`: the shard of the resources without the labels other shards select.
    only_absence: bool,
}

impl ShardSelector {
    /// Parses `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`
    /// and `!key` terms joined by commas; the message says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for term in terms(text)? {
            let key = term_key(&term).ok_or_else(|| {
                format!("cannot read the term {term:?} of label selector {text:?}")
            })?;
            if !is_label_key(key) {
                return Err(format!(
                    "{key:?} in label selector {text:?} is not a valid label key"
                ));
            }
            if !keys.iter().any(|known| known == key) {
                keys.push(key.to_owned());
            }
        }
        if keys.is_empty() {
            return Err("the label selector is empty".to_owned());
        }
        let only_absence = terms(text)?.iter().all(|term| term.starts_with('!'));
        Ok(Self {
            text: text.trim().to_owned(),
            keys,
            only_absence,
        })
    }

    /// The selector as given to the API server.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The label keys the selector names: on a published Secret, each must be present or absent
    /// as on its resource, or the shard's Secret watch shows it wrongly.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The labels of `labels` the selector names: what a published Secret carries so that the
    /// shard's Secret watch sees it.
    pub fn labels_of(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.keys
            .iter()
            .filter_map(|key| labels.get_key_value(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// The Lease name of this shard: `base` and a short digest of the selector, the same in
    /// every replica of the shard and different between shards.
    pub fn lease_name(&self, base: &str) -> String {
        format!("{base}-shard-{}", self.digest())
    }

    /// The in-use finalizer this shard puts on credentials Secrets: `base` for the shard of
    /// unlabelled resources (its selector only says `!key`, so it protects as an unsharded
    /// controller did), `base` and the shard's digest for any other. Each shard takes off only
    /// its own: a Secret one shard protects is in the view of another (unlabelled credentials
    /// are in the view of the shard of unlabelled resources), which must not take the first's
    /// protection off because none of its own resources needs it.
    pub fn protection_finalizer(&self, base: &str) -> String {
        if self.only_absence {
            base.to_owned()
        } else {
            format!("{base}-{}", self.digest())
        }
    }

    /// A short digest of the selector.
    fn digest(&self) -> String {
        let digest = Sha256::digest(self.text.as_bytes());
        digest[..4]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// The comma-separated terms, commas inside `( )` kept.
fn terms(text: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in label selector {text:?}"))?
            }
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in label selector {text:?}"));
    }
    terms.push(current);
    Ok(terms
        .into_iter()
        .map(|term| term.trim().to_owned())
        .filter(|term| !term.is_empty())
        .collect())
}

/// The key of one term, if the term is well formed.
fn term_key(term: &str) -> Option<&str> {
    if let Some(key) = term.strip_prefix('!') {
        return Some(key.trim());
    }
    for operator in ["!=", "==", "="] {
        if let Some((key, value)) = term.split_once(operator) {
            return is_label_value(value.trim()).then_some(key.trim());
        }
    }
    for operator in [" notin ", " in "] {
        if let Some((key, set)) = term.split_once(operator) {
            let values = set.trim().strip_prefix('(')?.strip_suffix(')')?;
            return values
                .split(',')
                .all(|value| is_label_value(value.trim()))
                .then_some(key.trim());
        }
    }
    Some(term)
}

/// `[prefix/]name`: a DNS subdomain prefix, and a name of at most 63 alphanumerics, '-', '_'
/// or '.', beginning and ending with an alphanumeric.
fn is_label_key(key: &str) -> bool {
    let (prefix_ok, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (is_dns_subdomain(prefix), name),
        None => (true, key),
    };
    prefix_ok && !name.is_empty() && is_label_value(name)
}

fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// At most 63 alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric (or
/// empty).
fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sharding.iothub.dynreg.io/key";

    #[test]
    fn reads_every_form_and_names_its_keys() {
        let rows = [
            ("sharding.iothub.dynreg.io/key=shard-2", vec![KEY]),
            ("sharding.iothub.dynreg.io/key==shard-2", vec![KEY]),
            ("!sharding.iothub.dynreg.io/key", vec![KEY]),
            (
                "sharding.iothub.dynreg.io/key in (a, b),team!=x",
                vec![KEY, "team"],
            ),
            (
                "sharding.iothub.dynreg.io/key notin (a),team",
                vec![KEY, "team"],
            ),
        ];
        for (text, keys) in rows {
            let selector = ShardSelector::parse(text).unwrap();
            assert_eq!(selector.keys, keys, "{text}");
            assert_eq!(selector.as_str(), text);
        }
    }

    #[test]
    fn refuses_what_the_api_server_would() {
        for text in [
            "",
            " , ",
            "key in (a",
            "key)",
            "Bad_Prefix.io/key=a",
            "key=-a",
            "key in (a,-b)",
            "/key",
        ] {
            assert!(ShardSelector::parse(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn published_secrets_carry_the_labels_the_selector_names() {
        let selector = ShardSelector::parse("sharding.iothub.dynreg.io/key=shard-2").unwrap();
        let labels = BTreeMap::from([
            (KEY.to_owned(), "shard-2".to_owned()),
            ("team".to_owned(), "fleet".to_owned()),
        ]);
        assert_eq!(
            selector.labels_of(&labels),
            BTreeMap::from([(KEY.to_owned(), "shard-2".to_owned())])
        );
    }

    #[test]
    fn each_labelled_shard_protects_with_a_finalizer_of_its_own() {
        let base = "iothub.dynreg.io/credentials-in-use";
        let rest = ShardSelector::parse("!sharding.iothub.dynreg.io/key").unwrap();
        assert_eq!(rest.protection_finalizer(base), base);
        let two = ShardSelector::parse("sharding.iothub.dynreg.io/key=shard-2").unwrap();
        let three = ShardSelector::parse("sharding.iothub.dynreg.io/key=shard-3").unwrap();
        let (two, three) = (
            two.protection_finalizer(base),
            three.protection_finalizer(base),
        );
        assert!(two.starts_with(base) && two != base);
        assert_ne!(two, three);
        // A qualified name: prefix / at most 63 characters.
        let name = two.split_once('/').unwrap().1;
        assert!(name.len() <= 63, "{name}");
    }

    #[test]
    fn each_shard_has_its_own_lease() {
        let one = ShardSelector::parse("!sharding.iothub.dynreg.io/key").unwrap();
        let two = ShardSelector::parse("sharding.iothub.dynreg.io/key=shard-2").unwrap();
        assert_ne!(
            one.lease_name("iothub-dynreg"),
            two.lease_name("iothub-dynreg")
        );
        assert_eq!(
            two.lease_name("iothub-dynreg"),
            ShardSelector::parse("sharding.iothub.dynreg.io/key=shard-2")
                .unwrap()
                .lease_name("iothub-dynreg")
        );
        assert!(
            two.lease_name("iothub-dynreg")
                .starts_with("iothub-dynreg-shard-")
        );
    }
}
