//! The Tencent Cloud side, usable without Kubernetes: the IoT services with dynamic
//! registration (IoT Hub, IoT Explorer, IoT Video) and STS; signing, wire types, a typed client
//! with rate limiting and retries, shared product snapshots, and temporary credentials from a
//! web identity.

pub mod client;
pub mod credentials;
pub mod error;
pub mod limit;
pub mod observe;
pub mod redacted;
pub mod retry;
pub mod service;
pub mod sign;
pub mod types;
pub mod web_identity;
pub mod wire;

pub use client::{ClientConfig, CloudClient, Endpoint, RegistrationRequest};
pub use credentials::Credentials;
pub use error::{CloudError, ErrorClass};
pub use redacted::Redacted;
pub use service::Service;
pub use types::{Product, RegisterType, RegistrationSettings, UpdateOutcome};
pub use wire::Action;
