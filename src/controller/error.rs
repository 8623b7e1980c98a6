//! Errors of a reconcile that are not verdicts about the cloud: the Kubernetes API failing, or an
//! object missing what every object has.

/// A reconcile that could not finish; retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// The object lacks a field the API server always sets.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
