//! What the handler's answers must look like: the RFC 9457 problem every error is, and a 200
//! with a token.

use reqwest::Response;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::clock::{rfc3339, unix_now};
use super::sas::SasToken;

/// The members of a 200 body, sorted: exactly these, no more.
const ISSUED_BODY_KEYS: [&str; 6] = [
    "deviceId",
    "expiresIn",
    "expiresOn",
    "hostName",
    "refreshIn",
    "sastoken",
];

/// A `200` answer from either token route.
pub(crate) struct Issued {
    pub(crate) token: SasToken,
    pub(crate) device_id: String,
    pub(crate) expires_on: String,
    /// `hostName`: always the host in the token's `sr`.
    pub(crate) host_name: String,
    pub(crate) headers: HeaderMap,
    /// Unix seconds just before the request was sent.
    pub(crate) before: u64,
    /// Unix seconds just after the answer arrived.
    pub(crate) after: u64,
}

impl Issued {
    /// Reads `response` to a `GET path_and_query` sent at Unix second `before`, asserting a 200
    /// and a body of exactly `deviceId`, `expiresOn` and a policy-signed `sastoken`.
    pub(crate) async fn read(response: Response, path_and_query: &str, before: u64) -> Issued {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body is readable");
        let after = unix_now();
        assert_eq!(
            status, 200,
            "GET {path_and_query} answered {status}: {text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: body is not JSON ({e}): {text}"));
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("GET {path_and_query}: body is not an object: {text}"));
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ISSUED_BODY_KEYS, "GET {path_and_query}: body keys");
        let string = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("GET {path_and_query}: `{name}` is not a string: {text}"))
                .to_owned()
        };
        let token = SasToken::parse(&string("sastoken"));
        let host_name = string("hostName");
        assert_eq!(
            Some(host_name.as_str()),
            sr_host(&token.raw).as_deref(),
            "GET {path_and_query}: hostName is the host in sr: {text}"
        );
        Issued {
            token,
            device_id: string("deviceId"),
            expires_on: string("expiresOn"),
            host_name,
            headers,
            before,
            after,
        }
    }

    /// Asserts `se` is "now + ttl" for some now inside the request's time window.
    pub(crate) fn assert_lifetime(&self, ttl: u64, context: &str) {
        let se = self.token.se;
        assert!(
            self.before + ttl <= se && se <= self.after + ttl,
            "{context}: se={se} is not now+{ttl} (now was {}..={})",
            self.before,
            self.after
        );
        assert_eq!(
            self.expires_on,
            rfc3339(se),
            "{context}: expiresOn must be se as RFC 3339 UTC"
        );
    }
}

/// The first segment of a token's percent-decoded `sr`: the hub host name (or, for a DPS
/// registration token, the ID scope).
pub(crate) fn sr_host(token: &str) -> Option<String> {
    let sr = token
        .strip_prefix("SharedAccessSignature ")?
        .split('&')
        .find_map(|field| field.strip_prefix("sr="))?;
    let decoded = percent_encoding::percent_decode_str(sr)
        .decode_utf8()
        .ok()?;
    decoded.split('/').next().map(str::to_owned)
}

/// Asserts `response` is an RFC 9457 problem with `status`; returns its headers and body.
pub(crate) async fn assert_problem(
    response: Response,
    status: u16,
    context: &str,
) -> (HeaderMap, Value) {
    let actual = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body is readable");
    assert_eq!(actual, status, "{context}: status (body: {text})");
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        media_type(content_type),
        "application/problem+json",
        "{context}: content type of {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{context}: problem body is not JSON ({e}): {text}"));
    for member in ["type", "title", "detail"] {
        assert!(
            body.get(member).is_some_and(Value::is_string),
            "{context}: problem member `{member}` must be a string: {text}"
        );
    }
    assert_eq!(
        body.get("status").and_then(Value::as_u64),
        Some(u64::from(status)),
        "{context}: problem `status` must be the number {status}: {text}"
    );
    (headers, body)
}

/// `application/json; charset=utf-8` → `application/json`.
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The problem `type` of every 403 for a caller (IP, certificate or token).
pub(crate) const CALLER_NOT_ALLOWED: &str = "urn:iothub-sas:problem:caller-not-allowed";

/// The problem `type` of the 503 for a token request when no key may sign (none read yet, the
/// key withdrawn in Key Vault, or its last read too old).
pub(crate) const KEY_UNAVAILABLE: &str = "urn:iothub-sas:problem:key-unavailable";

/// Asserts a 200 with a SAS token in the body (whatever else the body holds; see [`Issued`]
/// for the exact body).
pub(crate) async fn assert_issued(response: Response, context: &str) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body is readable");
    assert_eq!(status, 200, "{context}: status (body: {text})");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{context}: body is not JSON ({e}): {text}"));
    assert!(
        body["sastoken"]
            .as_str()
            .is_some_and(|t| t.starts_with("SharedAccessSignature ")),
        "{context}: body carries a SAS token: {text}"
    );
}

/// The `WWW-Authenticate` header of a response, or "" without one.
pub(crate) fn challenge(headers: &HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts the 401 for a request without a bearer token: `WWW-Authenticate: Bearer` without an
/// `error` (RFC 6750 §3.1: no error code when no credentials were sent). Returns the body.
pub(crate) async fn assert_no_token(response: Response, context: &str) -> Value {
    let (headers, body) = assert_problem(response, 401, context).await;
    let challenge = challenge(&headers);
    assert!(
        challenge == "Bearer" || challenge.starts_with("Bearer "),
        "{context}: WWW-Authenticate must be a Bearer challenge, got {challenge:?}"
    );
    assert!(
        !challenge.contains("error="),
        "{context}: no error code without a token, got {challenge:?}"
    );
    body
}

/// Asserts the 401 for an invalid token: `WWW-Authenticate: Bearer error="invalid_token"`.
/// Returns the body.
pub(crate) async fn assert_invalid_token(response: Response, context: &str) -> Value {
    let (headers, body) = assert_problem(response, 401, context).await;
    let challenge = challenge(&headers);
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
        "{context}: WWW-Authenticate must be `Bearer error=\"invalid_token\"`, got {challenge:?}"
    );
    body
}

/// Asserts the caller-not-allowed 403. Returns the body.
pub(crate) async fn assert_caller_not_allowed(response: Response, context: &str) -> Value {
    let (headers, body) = assert_problem(response, 403, context).await;
    assert_eq!(body["type"], CALLER_NOT_ALLOWED, "{context}: problem type");
    assert!(
        headers.get("www-authenticate").is_none(),
        "{context}: a 403 is no authentication challenge"
    );
    body
}

/// Asserts a 503 problem with a `Retry-After` of whole seconds, at least one. Returns its
/// headers and body.
pub(crate) async fn assert_unavailable(response: Response, context: &str) -> (HeaderMap, Value) {
    let (headers, body) = assert_problem(response, 503, context).await;
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{context}: a 503 carries Retry-After: {body}"));
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "{context}: Retry-After must be whole seconds, got {retry_after:?}"
    );
    (headers, body)
}

/// What a 200 is for, which decides the ids its body names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenFor {
    /// `deviceId`.
    Device,
    /// `deviceId` and `moduleId`.
    Module,
    /// `registrationId`.
    Registration,
}

/// A `200` from any token route, its body checked for the subject's ids and the renewal hints.
pub(crate) struct TokenAnswer {
    /// The whole body.
    pub(crate) body: Value,
    /// `sastoken`.
    pub(crate) token: String,
    /// `expiresIn`.
    pub(crate) expires_in: u64,
    /// `refreshIn`.
    pub(crate) refresh_in: u64,
}

impl TokenAnswer {
    /// Reads `response` to `what`, sent at Unix second `before`: a 200 whose body holds exactly
    /// `sastoken`, the ids of `subject`, `expiresOn`, `expiresIn` and `refreshIn`, where
    /// `expiresOn` is the token's `se` as RFC 3339, `expiresIn` is `se` minus the handler's now
    /// (within the request's window) and `refreshIn` lies between 75 % and 90 % of it.
    pub(crate) async fn read(
        response: Response,
        what: &str,
        subject: TokenFor,
        before: u64,
    ) -> TokenAnswer {
        let status = response.status().as_u16();
        let cache = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body is readable");
        let after = unix_now();
        assert_eq!(status, 200, "{what} answered {status}: {text}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{what}: Cache-Control");
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"));
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap_or_else(|| panic!("{what}: body is not an object: {text}"))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let expected: &[&str] = match subject {
            TokenFor::Device => &[
                "deviceId",
                "expiresIn",
                "expiresOn",
                "hostName",
                "refreshIn",
                "sastoken",
            ],
            TokenFor::Module => &[
                "deviceId",
                "expiresIn",
                "expiresOn",
                "hostName",
                "moduleId",
                "refreshIn",
                "sastoken",
            ],
            TokenFor::Registration => &[
                "expiresIn",
                "expiresOn",
                "idScope",
                "provisioningHost",
                "refreshIn",
                "registrationId",
                "sastoken",
            ],
        };
        assert_eq!(keys, expected, "{what}: body keys in {text}");
        let token = body["sastoken"]
            .as_str()
            .expect("sastoken is a string")
            .to_owned();
        match subject {
            TokenFor::Device | TokenFor::Module => assert_eq!(
                body["hostName"].as_str(),
                sr_host(&token).as_deref(),
                "{what}: hostName is the host in sr: {text}"
            ),
            TokenFor::Registration => {
                assert_eq!(
                    body["idScope"].as_str(),
                    sr_host(&token).as_deref(),
                    "{what}: idScope is the scope in sr: {text}"
                );
                assert!(
                    body["provisioningHost"]
                        .as_str()
                        .is_some_and(|host| !host.is_empty()),
                    "{what}: provisioningHost is a host name: {text}"
                );
            }
        }
        let se: u64 = token
            .split(['&', ' '])
            .find_map(|field| field.strip_prefix("se="))
            .and_then(|se| se.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no integer se in {token}"));
        let number = |name: &str| {
            body[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: `{name}` is not a whole number: {text}"))
        };
        let (expires_in, refresh_in) = (number("expiresIn"), number("refreshIn"));
        assert_eq!(body["expiresOn"], rfc3339(se), "{what}: expiresOn is se");
        assert!(
            se - after <= expires_in && expires_in <= se - before,
            "{what}: expiresIn {expires_in} is not se ({se}) minus a now in {before}..={after}"
        );
        assert!(
            (expires_in * 3).div_ceil(4) <= refresh_in && refresh_in <= expires_in * 9 / 10,
            "{what}: refreshIn {refresh_in} is not within 75-90 % of expiresIn {expires_in}"
        );
        TokenAnswer {
            body,
            token,
            expires_in,
            refresh_in,
        }
    }

    /// The token, taken apart, with exactly `fields` in that order.
    pub(crate) fn fields(&self, fields: &[&str]) -> SasToken {
        SasToken::parse_fields(&self.token, fields)
    }

    /// A string member of the body.
    pub(crate) fn text(&self, member: &str) -> &str {
        self.body[member]
            .as_str()
            .unwrap_or_else(|| panic!("`{member}` is not a string: {}", self.body))
    }
}
