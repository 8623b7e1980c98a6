//! Errors of cloud calls and how each one is handled.

use super::wire::Action;

/// How the caller should treat an error: retry it, wait for a person, or report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// `RequestLimitExceeded*`: slow down and retry.
    Throttled,
    /// Network, timeouts, HTTP 5xx, `InternalError`: retry with backoff.
    Transient,
    /// `AuthFailure.*`: the credentials are wrong, expired or the clock is off.
    Auth,
    /// `ResourceNotFound.ProductNotExist`: the product does not exist in that region.
    NotFound,
    /// `UnauthorizedOperation.*`: the product is forbidden or the key lacks permission.
    Forbidden,
    /// `InvalidParameterValue.ProductTypeNotSupport`: the product type has no dynamic registration.
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
            ErrorClass::NotFound => "NotFound",
            ErrorClass::Forbidden => "Forbidden",
            ErrorClass::Unsupported => "Unsupported",
            ErrorClass::Invalid => "Invalid",
            ErrorClass::Unknown => "Unknown",
        }
    }

    /// The class of an API error code.
    pub fn of_code(code: &str) -> ErrorClass {
        let family = code.split('.').next().unwrap_or(code);
        match (family, code) {
            ("RequestLimitExceeded", _) => ErrorClass::Throttled,
            ("InternalError", _) => ErrorClass::Transient,
            ("AuthFailure", _) => ErrorClass::Auth,
            (_, "ResourceNotFound.ProductNotExist") => ErrorClass::NotFound,
            ("UnauthorizedOperation", _) => ErrorClass::Forbidden,
            (_, "InvalidParameterValue.ProductTypeNotSupport") => ErrorClass::Unsupported,
            ("InvalidParameter" | "InvalidParameterValue" | "MissingParameter", _) => {
                ErrorClass::Invalid
            }
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
        let table = [
            ("RequestLimitExceeded", ErrorClass::Throttled),
            (
                "RequestLimitExceeded.UinLimitExceeded",
                ErrorClass::Throttled,
            ),
            (
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                ErrorClass::Throttled,
            ),
            ("InternalError", ErrorClass::Transient),
            ("InternalError.DBOperationError", ErrorClass::Transient),
            ("AuthFailure.SignatureFailure", ErrorClass::Auth),
            ("AuthFailure.SignatureExpire", ErrorClass::Auth),
            ("AuthFailure.SecretIdNotFound", ErrorClass::Auth),
            ("AuthFailure.TokenFailure", ErrorClass::Auth),
            ("ResourceNotFound.ProductNotExist", ErrorClass::NotFound),
            (
                "UnauthorizedOperation.ProductIsForbidden",
                ErrorClass::Forbidden,
            ),
            ("UnauthorizedOperation", ErrorClass::Forbidden),
            (
                "InvalidParameterValue.ProductTypeNotSupport",
                ErrorClass::Unsupported,
            ),
            ("InvalidParameterValue", ErrorClass::Invalid),
            ("InvalidParameter", ErrorClass::Invalid),
            ("InvalidParameter.ActionNotFound", ErrorClass::Invalid),
            ("MissingParameter", ErrorClass::Invalid),
            ("ResourceNotFound.DeviceNotExist", ErrorClass::Unknown),
            ("UnsupportedOperation", ErrorClass::Unknown),
            ("", ErrorClass::Unknown),
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
