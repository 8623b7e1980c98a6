//! iothub-dynreg: keeps the dynamic-registration settings of Tencent Cloud IoT Hub products equal
//! to what `DynamicRegistration` resources declare, and publishes each product's ProductSecret.

pub mod cloud;
pub mod crd;
pub mod emulator;
pub mod plan;
pub mod secret;
