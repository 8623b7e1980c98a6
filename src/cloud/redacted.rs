//! A string that must never be printed: SecretKey, session token, ProductSecret.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Holds a secret value. `Debug` prints `<redacted>` and there is no `Display`, so the value can
/// only leave through [`Redacted::expose`], where the call site says why it needs it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Redacted(String);

impl Redacted {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for signing requests or writing the published Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret is held (the cloud answers `""` while registration is disabled).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Redacted {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Redacted {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Wire format is the plain string: the emulator must send what the cloud sends.
impl Serialize for Redacted {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A wrong type must not echo the offending value into the error message, as serde's default
/// message would ("invalid type: integer `123`").
impl<'de> Deserialize<'de> for Redacted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Redacted;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Redacted, E> {
                Ok(Redacted::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Redacted, E> {
                Ok(Redacted(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Redacted, E> {
                Ok(Redacted::default())
            }
        }
        deserializer
            .deserialize_any(Visitor)
            .map_err(|_| serde::de::Error::custom("a secret field is not a string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Redacted::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(<redacted>)");
    }

    #[test]
    fn wrong_type_error_does_not_echo_the_value() {
        let err = serde_json::from_str::<Redacted>("987654321").unwrap_err();
        assert!(!err.to_string().contains("987654321"), "{err}");
        let ok: Redacted = serde_json::from_str("\"s3cret\"").unwrap();
        assert_eq!(ok.expose(), "s3cret");
        let null: Redacted = serde_json::from_str("null").unwrap();
        assert!(null.is_empty());
    }
}
