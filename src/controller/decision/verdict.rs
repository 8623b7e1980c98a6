//! A reconcile's verdict: Ready or not, the condition's [`Reason`], its message, and what
//! happens next ([`Progress`]).

/// Condition reasons, the vocabulary of `status.conditions[].reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    InSync,
    Observed,
    Drifted,
    NotAccepted,
    Suspended,
    Conflict,
    SecretConflict,
    CredentialsMissing,
    CredentialsInvalid,
    CredentialsNotAllowed,
    CredentialsDeleting,
    AuthFailed,
    ClockSkew,
    AccountSuspended,
    ProductNotFound,
    ProductForbidden,
    ProductTypeNotSupported,
    InvalidRequest,
    CloudUnavailable,
    CloudError,
    InvalidSpec,
    SecretTemplateInvalid,
    Deleting,
}

impl Reason {
    /// The reason as written in conditions and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InSync => "InSync",
            Reason::Observed => "Observed",
            Reason::Drifted => "Drifted",
            Reason::NotAccepted => "NotAccepted",
            Reason::Suspended => "Suspended",
            Reason::Conflict => "Conflict",
            Reason::SecretConflict => "SecretConflict",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::CredentialsInvalid => "CredentialsInvalid",
            Reason::CredentialsNotAllowed => "CredentialsNotAllowed",
            Reason::CredentialsDeleting => "CredentialsDeleting",
            Reason::AuthFailed => "AuthFailed",
            Reason::ClockSkew => "ClockSkew",
            Reason::AccountSuspended => "AccountSuspended",
            Reason::ProductNotFound => "ProductNotFound",
            Reason::ProductForbidden => "ProductForbidden",
            Reason::ProductTypeNotSupported => "ProductTypeNotSupported",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::CloudUnavailable => "CloudUnavailable",
            Reason::CloudError => "CloudError",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::SecretTemplateInvalid => "SecretTemplateInvalid",
            Reason::Deleting => "Deleting",
        }
    }
}

/// Where the resource stands after this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing left to do until the next resync.
    Settled,
    /// A fault that may clear by itself: retry with backoff (Reconciling=True).
    Retrying,
    /// A person must act (Stalled=True): retry slowly, and on any change.
    Stalled,
}

impl Progress {
    /// The `result` label of the reconciles metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            Progress::Settled => "settled",
            Progress::Retrying => "retrying",
            Progress::Stalled => "stalled",
        }
    }
}

/// The outcome to record: Ready or not, why, and what happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Ready=True.
    pub ready: bool,
    /// Condition reason.
    pub reason: Reason,
    /// Condition message, for people.
    pub message: String,
    /// What happens next.
    pub progress: Progress,
    /// ObserveOnly: how the cloud differs from the spec, for a `Drifted` condition of its own.
    pub drift: Option<String>,
}

impl Verdict {
    pub(crate) fn new(
        ready: bool,
        reason: Reason,
        progress: Progress,
        message: impl Into<String>,
    ) -> Self {
        Self {
            ready,
            reason,
            message: message.into(),
            progress,
            drift: None,
        }
    }
}
