//! Shared by the integration tests. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod control_plane;
pub mod e2e;
pub mod emulator_process;
pub mod mock_kube;
pub mod ports;
pub mod scripted_cloud;
pub mod skip;
pub mod specs;
