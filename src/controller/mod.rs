//! The controller, in modules around the reconcile pipeline. Arrows point one way, down this list:
//!
//! - [`resources`]: the custom resources (`DynamicRegistration`, `ClusterCredentials`).
//! - [`decision`]: pure verdicts: spec and facts in, actions and status out (no I/O, no clock).
//! - [`cache`]: what the watches know (resources and indexes, Secret metadata, ClusterCredentials,
//!   namespaces) and the Secret versions we wrote or read.
//! - [`credentials`]: resource → usable credentials or the problem, in one entry point; in-use
//!   protection of credentials Secrets.
//! - [`reconcile`]: one reconcile, a step a file (gather → decide → act → record, finalize).
//! - [`runtime`]: wiring: watches, triggers, admission queues, requeue, shards, leadership.

pub mod cache;
pub mod credentials;
pub mod decision;
pub mod reconcile;
pub mod resources;
pub mod runtime;
