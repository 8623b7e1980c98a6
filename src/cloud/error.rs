//! Errors of cloud calls and how each one is handled.

use super::wire::Action;

/// How the caller should treat an error: retry it, wait for a person, or report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// `RequestLimitExceeded*`: slow down and retry.
    Throttled,
    /// Network, timeouts, HTTP 5xx, `InternalError`: retry with backoff.
    Transient,
    /// The key itself is refused (`AuthFailure.*` but `UnauthorizedOperation`, `IpNotInWhitelist`,
    /// `IpInBlacklist`): wrong, expired, disabled, or not usable from here. Every call with it
    /// fails alike, so it backs off.
    Auth,
    /// `AuthFailure.SignatureExpire`: the signature's time is more than 5 minutes from the
    /// cloud's. The key is fine: this node's clock is off (the answer's `Date` tells by how
    /// much), so the key must not back off, and a person sets the clock right.
    ClockSkew,
    /// The account behind the key may not use the service now: `FailedOperation.AccountIsolated`
    /// (in arrears) and `UnauthorizedOperation.UserNotAuthenticaed` (identity verification not
    /// done). The key is fine, yet every call with it fails alike until a person settles the
    /// account, so it backs off as for `Auth`.
    Account,
    /// `ResourceNotFound*`: the product does not exist in that region.
    NotFound,
    /// `UnauthorizedOperation*`, `AuthFailure.UnauthorizedOperation`: this action on this
    /// product is not allowed (a CAM policy, or the platform forbade the product), while the key
    /// itself is fine: the resource's problem, not the key's.
    Forbidden,
    /// `InvalidParameterValue.ProductTypeNotSupport`, `UnsupportedOperation.WrongProductAuthType`,
    /// `UnauthorizedOperation.ProductNotSupportPSK`: the product's type or authentication has no
    /// dynamic registration.
    Unsupported,
    /// Other `InvalidParameter*` / `MissingParameter*`: the request itself is wrong.
    Invalid,
    /// Anything else: unknown codes, malformed answers.
    Unknown,
}

impl ErrorClass {
    /// Whether another attempt may succeed without anyone changing anything.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Throttled | ErrorClass::Transient)
    }

    /// Short fixed name, for metrics labels and condition reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "Throttled",
            ErrorClass::Transient => "Transient",
            ErrorClass::Auth => "Auth",
            ErrorClass::ClockSkew => "ClockSkew",
            ErrorClass::Account => "Account",
            ErrorClass::NotFound => "NotFound",
            ErrorClass::Forbidden => "Forbidden",
            ErrorClass::Unsupported => "Unsupported",
            ErrorClass::Invalid => "Invalid",
            ErrorClass::Unknown => "Unknown",
        }
    }

    /// The class of an API error code: the Tencent Cloud API 3.0 common codes and those of the
    /// actions used here.
    pub fn of_code(code: &str) -> ErrorClass {
        // Exact codes first, where a family holds codes of different kinds.
        match code {
            // A CAM policy refused this action or resource; the signature and key were fine.
            "AuthFailure.UnauthorizedOperation" => return ErrorClass::Forbidden,
            "AuthFailure.SignatureExpire" => return ErrorClass::ClockSkew,
            "FailedOperation.AccountIsolated" | "UnauthorizedOperation.UserNotAuthenticaed" => {
                return ErrorClass::Account;
            }
            // The product's type or authentication has no dynamic registration.
            "InvalidParameterValue.ProductTypeNotSupport"
            | "UnsupportedOperation.WrongProductAuthType"
            | "UnauthorizedOperation.ProductNotSupportPSK" => return ErrorClass::Unsupported,
            "ResourceInUse"
            | "ResourceInsufficient"
            | "ResourceUnavailable"
            | "ServiceUnavailable" => return ErrorClass::Transient,
            // The key may not be used from this address: every call fails alike.
            "IpNotInWhitelist" | "IpInBlacklist" => return ErrorClass::Auth,
            _ => {}
        }
        let family = code.split('.').next().unwrap_or(code);
        match family {
            "RequestLimitExceeded" => ErrorClass::Throttled,
            "InternalError" => ErrorClass::Transient,
            // SecretIdNotFound, InvalidSecretId, SignatureFailure, TokenFailure,
            // InvalidAuthorization, MFAFailure: the key (or its token) is refused.
            "AuthFailure" => ErrorClass::Auth,
            "ResourceNotFound" => ErrorClass::NotFound,
            "UnauthorizedOperation" => ErrorClass::Forbidden,
            // The request cannot succeed as it is: a person must change something.
            "InvalidParameter"
            | "InvalidParameterValue"
            | "MissingParameter"
            | "UnknownParameter"
            | "InvalidAction"
            | "InvalidRequest"
            | "NoSuchVersion"
            | "NoSuchProduct"
            | "ActionOffline"
            | "UnsupportedOperation"
            | "UnsupportedProtocol"
            | "UnsupportedRegion"
            | "RequestSizeLimitExceeded"
            | "ResponseSizeLimitExceeded"
            | "LimitExceeded" => ErrorClass::Invalid,
            // FailedOperation, DryRunOperation and codes not documented: retried with backoff.
            _ => ErrorClass::Unknown,
        }
    }
}

/// A failed cloud call. No variant holds a secret: messages are safe to log and to put in status.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The cloud answered with an error envelope.
    #[error("{action} failed with {code}: {message} (RequestId {request_id})")]
    Api {
        /// The action called.
        action: Action,
        /// Dotted error code.
        code: String,
        /// The cloud's message.
        message: String,
        /// The cloud's id of the request.
        request_id: String,
    },
    /// The request did not get an HTTP answer (connect, TLS, timeout, reset).
    #[error("{action}: no answer from the endpoint: {source}")]
    Transport {
        /// The action called.
        action: Action,
        /// What reqwest saw.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not HTTP 200, so not an API answer at all (proxy, load balancer, outage).
    #[error("{action}: endpoint answered HTTP {status}")]
    HttpStatus {
        /// The action called.
        action: Action,
        /// The HTTP status.
        status: u16,
    },
    /// The body was not the API's JSON (truncated, HTML, empty, wrong shape).
    #[error("{action}: malformed answer: {detail}")]
    Malformed {
        /// The action called.
        action: Action,
        /// What was wrong, without the body.
        detail: String,
    },
    /// The JSON was well formed but held a value this crate does not know, e.g. RegisterType 7.
    #[error("{action}: unexpected {field} {value} in the answer")]
    UnexpectedValue {
        /// The action called.
        action: Action,
        /// The field.
        field: &'static str,
        /// The value seen.
        value: i64,
    },
}

impl CloudError {
    /// How to handle this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            CloudError::Api { code, .. } => ErrorClass::of_code(code),
            CloudError::Transport { .. } => ErrorClass::Transient,
            CloudError::HttpStatus { status, .. } if *status == 429 => ErrorClass::Throttled,
            CloudError::HttpStatus { status, .. } if *status >= 500 => ErrorClass::Transient,
            CloudError::HttpStatus { .. } => ErrorClass::Unknown,
            CloudError::Malformed { .. } | CloudError::UnexpectedValue { .. } => {
                ErrorClass::Unknown
            }
        }
    }

    /// The API error code, or a fixed name for errors that have none; bounded, for metrics.
    pub fn code(&self) -> &str {
        match self {
            CloudError::Api { code, .. } => code,
            CloudError::Transport { .. } => "Transport",
            CloudError::HttpStatus { .. } => "HttpStatus",
            CloudError::Malformed { .. } => "Malformed",
            CloudError::UnexpectedValue { .. } => "UnexpectedValue",
        }
    }

    /// The cloud's RequestId, when the cloud answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            CloudError::Api { request_id, .. } if !request_id.is_empty() => Some(request_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_documented_codes() {
        use ErrorClass::*;
        // The common error codes of Tencent Cloud API 3.0, then those of the actions used here.
        let table = [
            ("ActionOffline", Invalid),
            ("AuthFailure.InvalidAuthorization", Auth),
            ("AuthFailure.InvalidSecretId", Auth),
            ("AuthFailure.MFAFailure", Auth),
            ("AuthFailure.SecretIdNotFound", Auth),
            ("AuthFailure.SignatureExpire", ClockSkew),
            ("AuthFailure.SignatureFailure", Auth),
            ("AuthFailure.TokenFailure", Auth),
            ("AuthFailure.UnauthorizedOperation", Forbidden),
            ("DryRunOperation", Unknown),
            ("FailedOperation", Unknown),
            ("InternalError", Transient),
            ("InvalidAction", Invalid),
            ("InvalidParameter", Invalid),
            ("InvalidParameterValue", Invalid),
            ("InvalidRequest", Invalid),
            ("IpInBlacklist", Auth),
            ("IpNotInWhitelist", Auth),
            ("LimitExceeded", Invalid),
            ("MissingParameter", Invalid),
            ("NoSuchProduct", Invalid),
            ("NoSuchVersion", Invalid),
            ("RequestLimitExceeded", Throttled),
            (
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                Throttled,
            ),
            ("RequestLimitExceeded.IPLimitExceeded", Throttled),
            ("RequestLimitExceeded.UinLimitExceeded", Throttled),
            ("RequestSizeLimitExceeded", Invalid),
            ("ResourceInUse", Transient),
            ("ResourceInsufficient", Transient),
            ("ResourceNotFound", NotFound),
            ("ResourceUnavailable", Transient),
            ("ResponseSizeLimitExceeded", Invalid),
            ("ServiceUnavailable", Transient),
            ("UnauthorizedOperation", Forbidden),
            ("UnknownParameter", Invalid),
            ("UnsupportedOperation", Invalid),
            ("UnsupportedProtocol", Invalid),
            ("UnsupportedRegion", Invalid),
            // iotcloud 2021-04-08: UpdateProductDynamicRegister, DescribeProduct(s).
            ("InternalError.DBOperationError", Transient),
            ("InvalidParameterValue.ProductTypeNotSupport", Unsupported),
            ("ResourceNotFound.ProductNotExist", NotFound),
            ("UnauthorizedOperation.ProductIsForbidden", Forbidden),
            ("UnauthorizedOperation.PermissionDenied", Forbidden),
            ("FailedOperation.AccountIsolated", Account),
            ("UnauthorizedOperation.UserNotAuthenticaed", Account),
            ("UnsupportedOperation.WrongProductAuthType", Unsupported),
            ("UnauthorizedOperation.ProductNotSupportPSK", Unsupported),
            ("FailedOperation.ProductResourceDuplicate", Unknown),
            ("InvalidParameter.ActionNotFound", Invalid),
            ("", Unknown),
            ("SomethingNew", Unknown),
        ];
        for (code, class) in table {
            assert_eq!(ErrorClass::of_code(code), class, "{code}");
        }
    }

    #[test]
    fn only_throttled_and_transient_retry() {
        let retryable: Vec<_> = [
            ErrorClass::Throttled,
            ErrorClass::Transient,
            ErrorClass::Auth,
            ErrorClass::Account,
            ErrorClass::NotFound,
            ErrorClass::Forbidden,
            ErrorClass::Unsupported,
            ErrorClass::Invalid,
            ErrorClass::Unknown,
        ]
        .into_iter()
        .filter(|class| class.is_retryable())
        .collect();
        assert_eq!(retryable, [ErrorClass::Throttled, ErrorClass::Transient]);
    }

    #[test]
    fn http_status_classes() {
        let status = |status| CloudError::HttpStatus {
            action: Action::DescribeProduct,
            status,
        };
        assert_eq!(status(502).class(), ErrorClass::Transient);
        assert_eq!(status(503).class(), ErrorClass::Transient);
        assert_eq!(status(429).class(), ErrorClass::Throttled);
        assert_eq!(status(404).class(), ErrorClass::Unknown);
    }
}
