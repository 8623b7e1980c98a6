//! Checked values of the cloud's answers.

use super::error::CloudError;
use super::wire::{self, Action};
use crate::cloud::redacted::Redacted;

/// How devices of a product may register themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterType {
    /// 0: dynamic registration is off.
    Disabled,
    /// 1: only devices created beforehand may register.
    PreCreate,
    /// 2: registering creates the device.
    AutoCreate,
}

impl RegisterType {
    /// The number on the wire.
    pub fn to_wire(self) -> i64 {
        match self {
            RegisterType::Disabled => 0,
            RegisterType::PreCreate => 1,
            RegisterType::AutoCreate => 2,
        }
    }

    /// The type of a wire number; `None` for numbers the API does not document.
    pub fn from_wire(value: i64) -> Option<Self> {
        match value {
            0 => Some(RegisterType::Disabled),
            1 => Some(RegisterType::PreCreate),
            2 => Some(RegisterType::AutoCreate),
            _ => None,
        }
    }
}

/// A product's dynamic-registration settings as the cloud holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationSettings {
    /// The registration type in force.
    pub register_type: RegisterType,
    /// The most devices that may register themselves.
    pub register_limit: u64,
    /// The key devices register with; `None` while the cloud has none.
    pub product_secret: Option<Redacted>,
}

/// A product as `DescribeProduct(s)` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// The product's id.
    pub product_id: String,
    /// Its dynamic-registration settings.
    pub registration: RegistrationSettings,
}

impl Product {
    /// Registration is on, yet this observation carries no ProductSecret (a list answer may
    /// leave it out).
    pub fn lacks_secret(&self) -> bool {
        self.registration.register_type != RegisterType::Disabled
            && self.registration.product_secret.is_none()
    }
}

/// What `UpdateProductDynamicRegister` applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The settings now in force, which may differ from those asked for.
    pub applied: RegistrationSettings,
    /// The cloud's id of the request.
    pub request_id: String,
}

pub(crate) fn register_type(action: Action, value: i64) -> Result<RegisterType, CloudError> {
    RegisterType::from_wire(value).ok_or(CloudError::UnexpectedValue {
        action,
        field: "RegisterType",
        value,
    })
}

pub(crate) fn register_limit(action: Action, value: i64) -> Result<u64, CloudError> {
    u64::try_from(value).map_err(|_| CloudError::UnexpectedValue {
        action,
        field: "RegisterLimit",
        value,
    })
}

fn non_empty(secret: Option<Redacted>) -> Option<Redacted> {
    secret.filter(|secret| !secret.is_empty())
}

impl Product {
    pub(crate) fn from_wire(
        action: Action,
        product_id: String,
        properties: wire::ProductProperties,
    ) -> Result<Self, CloudError> {
        Ok(Product {
            product_id,
            registration: RegistrationSettings {
                // `null` means registration was never configured, which behaves as disabled.
                register_type: register_type(action, properties.register_type.unwrap_or(0))?,
                register_limit: register_limit(action, properties.register_limit.unwrap_or(0))?,
                product_secret: non_empty(properties.product_secret),
            },
        })
    }
}

impl RegistrationSettings {
    /// The settings of a `Describe`/`ModifyProductDynamicRegister` answer; a field left out
    /// reads as registration never configured (type 0, limit 0), as `DescribeProduct`'s `null`.
    pub(crate) fn from_wire(
        action: Action,
        answer: wire::ProductDynamicRegisterResponse,
    ) -> Result<Self, CloudError> {
        Ok(RegistrationSettings {
            register_type: register_type(action, answer.register_type.unwrap_or(0))?,
            register_limit: register_limit(action, answer.register_limit.unwrap_or(0))?,
            product_secret: non_empty(answer.product_secret),
        })
    }
}

impl UpdateOutcome {
    pub(crate) fn from_wire(
        answer: wire::UpdateProductDynamicRegisterResponse,
    ) -> Result<Self, CloudError> {
        let action = Action::UpdateProductDynamicRegister;
        Ok(UpdateOutcome {
            applied: RegistrationSettings {
                register_type: register_type(action, answer.register_type)?,
                register_limit: register_limit(action, answer.register_limit)?,
                product_secret: non_empty(answer.product_secret),
            },
            request_id: answer.request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_type_round_trips_and_rejects_unknown_numbers() {
        for kind in [
            RegisterType::Disabled,
            RegisterType::PreCreate,
            RegisterType::AutoCreate,
        ] {
            assert_eq!(RegisterType::from_wire(kind.to_wire()), Some(kind));
        }
        for bad in [-1, 3, 7, i64::MAX] {
            assert_eq!(RegisterType::from_wire(bad), None);
        }
        let err = register_type(Action::DescribeProduct, 7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DescribeProduct: unexpected RegisterType 7 in the answer"
        );
    }

    #[test]
    fn negative_limit_is_an_error() {
        assert!(register_limit(Action::DescribeProduct, -5).is_err());
        assert_eq!(
            register_limit(Action::DescribeProduct, 10_000).unwrap(),
            10_000
        );
    }
}
