//! The decisions, as pure functions: from the spec, what the cloud holds (or why it could not
//! be seen) and the published Secret, to the actions to take and the status to record. Nothing
//! here does I/O or reads a clock (the time to record is a parameter); every verdict and every
//! status the controller records comes from here.
//!
//! - [`plan()`]: what a reconcile does (update the cloud? write the Secret?) and its verdict;
//!   [`after_failed_update`] when the update then fails.
//! - [`Verdict`]: Ready or not, the condition's [`Reason`], and what happens next
//!   ([`Progress`]); [`Problem`]: why the cloud state cannot be decided on, with the verdict a
//!   person reads for each ([`problem_verdict`]).
//! - [`next_status`]: the status to record, and its kstatus [`conditions`].
//! - [`deletion`]: the steps of deleting a resource that holds our finalizer.
//! - [`claims`]: which claim on a product counts, and which claimant manages it.
//! - [`delays`]: when a resource is reconciled again.
//! - [`published`]: the Secret found under the published name ([`SecretState`]), and the one
//!   we write ([`SecretContent`]).
//! - [`secrets`]: which Secrets we protect (credentials a deletion needs) or delete (Secrets we
//!   published under a former name).
//! - [`cluster_credentials`]: what a reconcile tells of the ClusterCredentials it used.
//! - [`finalizers`]: finalizer patches that leave others' finalizers alone.
//! - [`template`]: the published Secret's data rendered from `spec.secretTemplate`.

pub mod claims;
pub mod cluster_credentials;
pub mod delays;
pub mod deletion;
mod digest;
pub mod finalizers;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod kstatus;
mod plan;
mod problem;
pub mod published;
pub mod secrets;
mod status;
pub mod template;
mod verdict;

pub use deletion::{DeletionStep, Note};
pub use digest::DataDigest;
pub use plan::{
    Difference, Plan, PlanInput, after_failed_update, after_secret_taken, differences,
    field_differences, plan,
};
pub use problem::{Problem, cloud_verdict, problem_verdict};
pub use published::{SecretContent, SecretShape, SecretState};
pub use secrets::CREDENTIALS_IN_USE;
pub use status::{StatusInput, conditions, next_status, while_deleting, while_suspended};
pub use verdict::{Progress, Reason, Verdict};
