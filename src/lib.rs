//! iothub-dynreg: keeps the dynamic-registration settings of Tencent Cloud IoT Hub products equal
//! to what `DynamicRegistration` resources declare, and publishes each product's ProductSecret.

pub mod cloud;
pub mod context;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod emulator;
pub mod error;
pub mod http;
pub mod kube_io;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod secret;
pub mod telemetry;
