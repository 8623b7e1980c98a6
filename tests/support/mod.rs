//! Loopback stand-ins shared by the integration tests. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod e2e;
pub mod emulator_process;
pub mod kube_api;
pub mod mock_kube;
pub mod scripted_cloud;
