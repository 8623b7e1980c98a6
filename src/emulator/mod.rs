//! `iothub-dynreg-emulator`: a loopback stand-in for the IoT Hub API, for tests, benchmarks and
//! trying the controller without an account. It shares the signer's building blocks and the wire
//! types with the client, but verifies each request from the bytes it received.

pub mod seed;
pub mod server;
pub mod stats;
pub mod store;
pub mod sts;
pub mod verify;

pub use seed::Seed;
pub use server::{Emulator, EmulatorConfig, Faults, RunningEmulator, ScriptedError};
pub use store::LimitPolicy;
