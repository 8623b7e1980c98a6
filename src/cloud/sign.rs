//! TC3-HMAC-SHA256 request signing, as small pure functions.
//!
//! The client signs with [`sign`]; the emulator verifies with the same building blocks
//! ([`canonical_request`], [`string_to_sign`], [`signature`]) applied to the bytes it received, so
//! that a mistake in the client's request building cannot hide behind a matching mistake in the
//! verifier.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::credentials::Credentials;

/// The algorithm name, first word of the `Authorization` header and of the string to sign.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// Tencent Cloud signs these two headers only (as its SDKs do).
pub const SIGNED_HEADERS: &str = "content-type;host";

/// HTTP method of a signed request. The API takes POST with a JSON body, or GET with the
/// parameters in the query string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Parameters in a JSON (or form) body.
    Post,
    /// Parameters in the query string; the signed payload is empty.
    Get,
}

impl Method {
    /// The method as it stands in the canonical request.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Get => "GET",
        }
    }
}

/// Everything the signature covers, plus the headers that travel with it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Service name, the first label of the host (`iotcloud`).
    pub service: &'a str,
    /// Host header value, with `:port` when the port is not the scheme's default.
    pub host: &'a str,
    /// API action (`X-TC-Action`).
    pub action: &'a str,
    /// API version (`X-TC-Version`).
    pub version: &'a str,
    /// Region (`X-TC-Region`); some APIs take none.
    pub region: Option<&'a str>,
    /// Unix seconds (`X-TC-Timestamp`); the signature is valid for 5 minutes around it.
    pub timestamp: i64,
    /// POST or GET.
    pub method: Method,
    /// `Content-Type` header value.
    pub content_type: &'a str,
    /// The query string, for GET (already encoded, without `?`).
    pub query: &'a str,
    /// The body, for POST.
    pub payload: &'a [u8],
    /// `X-TC-Language` (`zh-CN` or `en-US`), the language of error messages.
    pub language: Option<&'a str>,
}

/// Headers to add to the request: `Authorization`, `Content-Type`, `Host` and the `X-TC-*` set.
pub fn sign(credentials: &Credentials, request: &Request<'_>) -> Vec<(&'static str, String)> {
    // A clock beyond the year 9999 leaves the scope without a date, which the cloud refuses.
    let date = utc_date(request.timestamp).unwrap_or_default();
    let canonical = canonical_request(
        request.method,
        request.query,
        request.content_type,
        request.host,
        signed_payload(request.method, request.payload),
    );
    let scope = credential_scope(&date, request.service);
    let to_sign = string_to_sign(request.timestamp, &scope, &canonical);
    let signature = signature(
        credentials.secret_key.expose(),
        &date,
        request.service,
        &to_sign,
    );
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}",
        credentials.secret_id
    );

    let mut headers = vec![("Authorization", authorization)];
    headers.extend(common_headers(request));
    if let Some(token) = &credentials.token {
        headers.push(("X-TC-Token", token.expose().to_owned()));
    }
    headers
}

/// Headers of a call sent without a signature on purpose (STS's `AssumeRoleWithWebIdentity`):
/// `Authorization: SKIP` says so, as the official SDKs send it; without it, a server that
/// verifies TC3 refuses the call as a broken signature.
pub fn unsigned_headers(request: &Request<'_>) -> Vec<(&'static str, String)> {
    let mut headers = vec![("Authorization", "SKIP".to_owned())];
    headers.extend(common_headers(request));
    headers
}

/// The headers every call carries, signed or not.
fn common_headers(request: &Request<'_>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("Content-Type", request.content_type.to_owned()),
        ("Host", request.host.to_owned()),
        ("X-TC-Action", request.action.to_owned()),
        ("X-TC-Timestamp", request.timestamp.to_string()),
        ("X-TC-Version", request.version.to_owned()),
    ];
    if let Some(region) = request.region {
        headers.push(("X-TC-Region", region.to_owned()));
    }
    if let Some(language) = request.language {
        headers.push(("X-TC-Language", language.to_owned()));
    }
    headers
}

/// What the signature hashes as the payload: the body for POST, nothing for GET.
pub fn signed_payload(method: Method, body: &[u8]) -> &[u8] {
    match method {
        Method::Post => body,
        Method::Get => b"",
    }
}

/// The canonical request: method, URI `/`, query, the two signed headers, and the payload hash.
pub fn canonical_request(
    method: Method,
    query: &str,
    content_type: &str,
    host: &str,
    payload: &[u8],
) -> String {
    let query = match method {
        Method::Post => "",
        Method::Get => query,
    };
    format!(
        "{}\n/\n{query}\ncontent-type:{}\nhost:{}\n\n{SIGNED_HEADERS}\n{}",
        method.as_str(),
        content_type.trim(),
        host.trim(),
        hex::encode(Sha256::digest(payload)),
    )
}

/// `<date>/<service>/tc3_request`.
pub fn credential_scope(date: &str, service: &str) -> String {
    format!("{date}/{service}/tc3_request")
}

/// The string to sign: algorithm, timestamp, scope and the hash of the canonical request.
pub fn string_to_sign(timestamp: i64, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Hex signature: the key is derived from the SecretKey through the date and the service.
pub fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let date_key = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let service_key = hmac_sha256(&date_key, service.as_bytes());
    let signing_key = hmac_sha256(&service_key, b"tc3_request");
    hex::encode(hmac_sha256(&signing_key, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The UTC calendar date (`YYYY-MM-DD`) of a Unix timestamp, as the credential scope needs it;
/// `None` outside the years -9999 to 9999.
pub fn utc_date(timestamp: i64) -> Option<String> {
    let time = jiff::Timestamp::from_second(timestamp).ok()?;
    Some(time.strftime("%Y-%m-%d").to_string())
}

/// The parts of an `Authorization` header a verifier needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The SecretId that claims to have signed.
    pub secret_id: String,
    /// The date of the credential scope.
    pub date: String,
    /// The service of the credential scope.
    pub service: String,
    /// The signed headers list, as written.
    pub signed_headers: String,
    /// The hex signature.
    pub signature: String,
}

/// Parses `TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=…,
/// Signature=…`. `None` when the header is not of that form.
pub fn parse_authorization(header: &str) -> Option<Authorization> {
    let rest = header.strip_prefix(ALGORITHM)?.trim_start();
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (secret_id, date, service, terminator) =
        (scope.next()?, scope.next()?, scope.next()?, scope.next()?);
    if terminator != "tc3_request" || scope.next().is_some() || secret_id.is_empty() {
        return None;
    }
    Some(Authorization {
        secret_id: secret_id.to_owned(),
        date: date.to_owned(),
        service: service.to_owned(),
        signed_headers: signed_headers?.to_owned(),
        signature: signature?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_around_boundaries() {
        let date = |timestamp| utc_date(timestamp).unwrap();
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_551_113_065), "2019-02-25");
        assert_eq!(date(1_767_225_599), "2025-12-31");
        assert_eq!(date(1_767_225_600), "2026-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(utc_date(i64::MAX), None);
    }

    #[test]
    fn parses_its_own_authorization() {
        let creds = Credentials::new("AKIDabc", "key");
        let request = Request {
            service: "iotcloud",
            host: "iotcloud.tencentcloudapi.com",
            action: "DescribeProduct",
            version: "2021-04-08",
            region: Some("ap-guangzhou"),
            timestamp: 1_764_288_000,
            method: Method::Post,
            content_type: "application/json",
            query: "",
            payload: b"{}",
            language: None,
        };
        let headers = sign(&creds, &request);
        let auth = parse_authorization(&headers[0].1).unwrap();
        assert_eq!(auth.secret_id, "AKIDabc");
        assert_eq!(auth.date, "2025-11-28");
        assert_eq!(auth.service, "iotcloud");
        assert_eq!(auth.signed_headers, SIGNED_HEADERS);
        assert_eq!(auth.signature.len(), 64);
    }

    #[test]
    fn rejects_malformed_authorization() {
        for bad in [
            "",
            "TC3-HMAC-SHA256",
            "HMAC Credential=a/b/c/tc3_request, SignedHeaders=x, Signature=y",
            "TC3-HMAC-SHA256 Credential=a/b/c/other, SignedHeaders=x, Signature=y",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request/extra, SignedHeaders=x, Signature=y",
            "TC3-HMAC-SHA256 Credential=/b/c/tc3_request, SignedHeaders=x, Signature=y",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=x",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, Bogus=x, Signature=y",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad}");
        }
    }
}
