//! Why a reconcile could not finish: the Kubernetes API failed in one of its steps (verdicts
//! about the cloud are not errors: they are recorded in the status). Retried with backoff.

use crate::controller::credentials;

/// A reconcile that could not finish, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Looking up the resource's credentials failed.
    #[error(transparent)]
    Credentials(#[from] credentials::Error),
    /// Reading the Secret under the published name failed.
    #[error("cannot read the published Secret {secret}: {source}")]
    ReadPublishedSecret {
        /// Its name.
        secret: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// Creating, rewriting or re-creating the published Secret failed.
    #[error("cannot write the published Secret {secret}: {source}")]
    WriteSecret {
        /// Its name.
        secret: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a Secret published under a former name failed.
    #[error("cannot delete the Secret {secret} published under the former secretName: {source}")]
    DeleteLeftBehind {
        /// Its name.
        secret: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// Removing our ownerReference from a retained Secret failed.
    #[error("cannot release the retained Secret {secret}: {source}")]
    RetainSecret {
        /// Its name.
        secret: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("cannot write the status: {0}")]
    WriteStatus(#[source] kube::Error),
    /// Adding or removing our finalizer on the resource failed.
    #[error("cannot update the resource's finalizers: {0}")]
    SetFinalizer(#[source] kube::Error),
    /// The resource lacks a field the API server always sets.
    #[error("the resource has no {0}")]
    MissingObjectKey(&'static str),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
