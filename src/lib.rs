//! iothub-dynreg: keeps the dynamic-registration settings of Tencent Cloud IoT Hub products equal
//! to what `DynamicRegistration` resources declare, and publishes each product's ProductSecret.
//!
//! - [`cloud`]: the IoT Hub API, usable without Kubernetes (signing, rate limiting, retries).
//! - [`controller`]: the resource, the pure decision, and the reconcile around it.
//! - [`ops`]: what running it needs (metrics, health endpoints, leader election, logging).
//! - [`preview`]: the `plan` command, what applying manifests would change, with no cluster.
//! - [`preflight`]: the `check` command, whether a key can do what the controller needs.
//! - [`cli`]: the command line (subcommands and flags) and what each subcommand is made of.
//! - `emulator` (feature `emulator`): a loopback stand-in for the IoT Hub API.
//!
//! Arrows point one way: `preflight` uses `preview`, `preview` uses `controller` and `cloud`, `controller` uses `ops` and
//! `cloud`, `ops` uses `cloud`, and `cloud` knows no Kubernetes.

// A function of the library longer than clippy.toml's 60 lines needs its reason, in an
// `#[expect(clippy::too_many_lines, reason = "…")]` above it. Tests are spared (not(test)): a
// test's scenario reads best in one piece.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod cli;
pub mod cloud;
pub mod controller;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod ops;
pub mod preflight;
pub mod preview;
