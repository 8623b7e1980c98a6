//! The controller: the `DynamicRegistration` resource ([`crd`]), the pure decision
//! ([`decision`]), and one reconcile ([`reconcile`]) that gathers the facts ([`credentials`],
//! [`observe`], [`kube_io`]), decides, acts and records; [`run`] wires the watches to it and
//! [`leading`] runs it under leader election.

pub mod admission;
pub mod cluster_access;
pub mod cluster_credentials;
pub mod context;
pub mod crd;
pub mod credentials;
pub mod decision;
pub mod error;
pub mod events;
pub mod index;
pub mod kube_io;
pub mod leading;
pub mod observe;
pub mod protection;
pub mod read_cache;
pub mod reconcile;
pub mod run;
pub mod secret_cache;
pub mod shard;
pub mod watch;
