//! Builders shared by the decision tests: one per concept.

use super::*;
use crate::cloud::redacted::Redacted;
use crate::cloud::{Product, RegisterType, RegistrationRequest, RegistrationSettings};
use crate::controller::resources::{DynamicRegistrationSpec, RegistrationMode};

/// Product ABCDE12345 in ap-guangzhou with these settings, Full, Orphan.
pub fn spec(kind: RegistrationMode, limit: i64) -> DynamicRegistrationSpec {
    DynamicRegistrationSpec::new("ABCDE12345", "ap-guangzhou", kind, limit)
}

/// The product as the cloud holds it.
pub fn product(kind: RegisterType, limit: u64, secret: Option<&str>) -> Product {
    Product {
        product_id: "ABCDE12345".into(),
        registration: RegistrationSettings {
            register_type: kind,
            register_limit: limit,
            product_secret: secret.map(Redacted::from),
        },
    }
}

/// Our published Secret holding `secret`.
pub fn published(secret: &str) -> SecretState {
    SecretState::Owned {
        data: DataDigest::of([("productId", "ABCDE12345"), ("productSecret", secret)]),
        labelled: true,
        shape: SecretShape::default(),
    }
}

/// An AutoCreate request with `limit`.
pub fn auto(limit: u64) -> RegistrationRequest {
    RegistrationRequest {
        register_type: RegisterType::AutoCreate,
        register_limit: limit,
    }
}
