//! Running the controller in production: Prometheus metrics, the `/metrics`, `/healthz` and
//! `/readyz` endpoint, Lease leader election, logging, the shutdown signal and the allocator's
//! tuning. Nothing here knows the resource: the controller reports to it in plain terms.

pub mod allocator;
pub mod http;
pub mod kube_client;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod shutdown;
