//! Every error a caller can see, as RFC 9457 `application/problem+json`.
//!
//! **What it owns.** The mapping from [`ApiError`] to status, fixed title and body, in one place.
//! Titles are fixed strings; `detail` explains the problem without revealing configuration (a
//! denied caller is not told the allow list, or even its own address as we saw it).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::hubs::HubChoiceError;
use crate::params::{DeviceIdError, ModuleIdError, QueryError, RegistrationIdError, TtlError};

/// What went wrong with a request, from the caller's point of view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Return `403 Forbidden`: the caller's address is not allowed, or could not be established.
    #[error("caller not allowed")]
    CallerNotAllowed,
    /// Return `400 Bad Request`: the device id breaks IoT Hub's rules.
    #[error(transparent)]
    InvalidDeviceId(#[from] DeviceIdError),
    /// Return `400 Bad Request`: the module id breaks IoT Hub's rules.
    #[error(transparent)]
    InvalidModuleId(#[from] ModuleIdError),
    /// Return `400 Bad Request`: the registration id breaks DPS's rules.
    #[error(transparent)]
    InvalidRegistrationId(#[from] RegistrationIdError),
    /// Return `400 Bad Request`: in enrollment-group mode a device id is its DPS registration id,
    /// and this one is not a valid registration id.
    #[error("in enrollment-group mode the device id is its DPS registration id: {0}")]
    DeviceIdNotRegistrationId(RegistrationIdError),
    /// Return `404 Not Found`: module tokens are not available in enrollment-group mode (DPS
    /// provisions device keys, not module keys).
    #[error("module tokens unavailable")]
    ModuleTokensUnavailable,
    /// Return `400 Bad Request`: `ttl` is not an integer within bounds.
    #[error(transparent)]
    InvalidTtl(#[from] TtlError),
    /// Return `400 Bad Request`: the query string is ambiguous or undecodable.
    #[error(transparent)]
    InvalidQuery(#[from] QueryError),
    /// Return `400 Bad Request`: `hub` names no hub this function signs for, or none was named
    /// where there is no default hub.
    #[error(transparent)]
    Hub(#[from] HubChoiceError),
    /// Return `400 Bad Request`: `hub` on the registration route (DPS assigns the hub later).
    #[error("the registration route takes no hub")]
    HubNotForRegistration,
    /// Return `404 Not Found`: no such route.
    #[error("no such route")]
    NotFound,
    /// Return `405 Method Not Allowed` with `Allow: GET, HEAD`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Return `503 Service Unavailable` with `Retry-After`: no signing key is available yet.
    #[error("signing key unavailable")]
    KeyUnavailable,
    /// Return `401 Unauthorized` with `WWW-Authenticate: Bearer`: no bearer token.
    #[error("bearer token missing")]
    MissingToken,
    /// Return `401 Unauthorized` with `WWW-Authenticate: Bearer error="invalid_token"`: the token
    /// failed a check (which one is not said).
    #[error("bearer token invalid")]
    InvalidToken,
    /// Return `503 Service Unavailable` with `Retry-After`: the token issuer's keys are unavailable.
    #[error("token signing keys unavailable")]
    AuthKeysUnavailable,
    /// Return `414 URI Too Long`: the URL exceeds `MAX_URL_BYTES`.
    #[error("URI too long")]
    UriTooLong,
    /// Return `413 Content Too Large`: a body larger than `MAX_BODY_BYTES` was declared.
    #[error("body too large")]
    PayloadTooLarge,
    /// Return `503 Service Unavailable` with `Retry-After: 1`: `MAX_CONCURRENT_REQUESTS` reached.
    #[error("too many requests in flight")]
    Overloaded,
}

/// Seconds a caller should wait before retrying after a 503 for a missing key.
pub const RETRY_AFTER_SECONDS: u32 = 5;
/// Seconds a caller should wait before retrying after a 503 for overload.
pub const OVERLOADED_RETRY_AFTER_SECONDS: u32 = 1;

/// The RFC 9457 body.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::CallerNotAllowed => StatusCode::FORBIDDEN,
            Self::InvalidDeviceId(_)
            | Self::InvalidModuleId(_)
            | Self::InvalidRegistrationId(_)
            | Self::DeviceIdNotRegistrationId(_)
            | Self::InvalidTtl(_)
            | Self::InvalidQuery(_)
            | Self::Hub(_)
            | Self::HubNotForRegistration => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::ModuleTokensUnavailable => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::KeyUnavailable | Self::Overloaded | Self::AuthKeysUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// A stable problem type URI and a fixed title.
    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::CallerNotAllowed => (
                "urn:iothub-sas:problem:caller-not-allowed",
                "Caller not allowed",
            ),
            Self::InvalidDeviceId(_) => (
                "urn:iothub-sas:problem:invalid-device-id",
                "Invalid device id",
            ),
            Self::InvalidModuleId(_) => (
                "urn:iothub-sas:problem:invalid-module-id",
                "Invalid module id",
            ),
            Self::InvalidRegistrationId(_) => (
                "urn:iothub-sas:problem:invalid-registration-id",
                "Invalid registration id",
            ),
            Self::DeviceIdNotRegistrationId(_) => (
                "urn:iothub-sas:problem:invalid-device-id",
                "Invalid device id",
            ),
            Self::ModuleTokensUnavailable => (
                "urn:iothub-sas:problem:module-tokens-unavailable",
                "Module tokens unavailable",
            ),
            Self::InvalidTtl(_) => ("urn:iothub-sas:problem:invalid-ttl", "Invalid ttl"),
            Self::InvalidQuery(_) | Self::HubNotForRegistration => {
                ("urn:iothub-sas:problem:invalid-query", "Invalid query")
            }
            Self::Hub(HubChoiceError::Unknown) => {
                ("urn:iothub-sas:problem:unknown-hub", "Unknown hub")
            }
            Self::Hub(HubChoiceError::Required) => {
                ("urn:iothub-sas:problem:hub-required", "Hub required")
            }
            Self::NotFound => ("about:blank", "Not Found"),
            Self::MethodNotAllowed => ("about:blank", "Method Not Allowed"),
            Self::KeyUnavailable => (
                "urn:iothub-sas:problem:key-unavailable",
                "Signing key unavailable",
            ),
            Self::MissingToken => (
                "urn:iothub-sas:problem:token-missing",
                "Bearer token required",
            ),
            Self::InvalidToken => (
                "urn:iothub-sas:problem:token-invalid",
                "Bearer token invalid",
            ),
            Self::AuthKeysUnavailable => (
                "urn:iothub-sas:problem:auth-keys-unavailable",
                "Token signing keys unavailable",
            ),
            Self::Overloaded => (
                "urn:iothub-sas:problem:overloaded",
                "Too many requests in flight",
            ),
            Self::UriTooLong => ("about:blank", "URI Too Long"),
            Self::PayloadTooLarge => ("about:blank", "Content Too Large"),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::CallerNotAllowed => "This caller may not request device tokens.".to_owned(),
            Self::NotFound => "No function answers at this path.".to_owned(),
            Self::MethodNotAllowed => "Only GET is supported.".to_owned(),
            Self::KeyUnavailable => {
                "The signing key is not available yet; retry shortly.".to_owned()
            }
            Self::MissingToken => "An Authorization: Bearer token is required.".to_owned(),
            Self::InvalidToken => "The bearer token is not valid.".to_owned(),
            Self::AuthKeysUnavailable => {
                "The token issuer's signing keys are not available yet; retry shortly.".to_owned()
            }
            Self::Overloaded => {
                "The handler is at its concurrency limit; retry shortly.".to_owned()
            }
            Self::UriTooLong => "The URL is longer than this service accepts.".to_owned(),
            Self::PayloadTooLarge => "These routes take no request body.".to_owned(),
            Self::ModuleTokensUnavailable => {
                "This function signs with a DPS enrollment group key: \
                 DPS provisions device keys, not module keys, so it issues no module tokens."
                    .to_owned()
            }
            Self::InvalidDeviceId(e) => e.to_string(),
            Self::InvalidModuleId(e) => e.to_string(),
            Self::InvalidRegistrationId(e) => e.to_string(),
            Self::DeviceIdNotRegistrationId(_) => self.to_string(),
            Self::InvalidTtl(e) => e.to_string(),
            Self::InvalidQuery(e) => e.to_string(),
            Self::Hub(e) => e.to_string(),
            Self::HubNotForRegistration => {
                "The registration route takes no `hub`: DPS assigns the device's hub when it registers."
                    .to_owned()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, title) = self.kind_and_title();
        let body = serde_json::to_vec(&Problem {
            kind,
            title,
            status: status.as_u16(),
            detail: self.detail(),
        })
        .expect("a struct of strings and a number serialises");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            Self::KeyUnavailable | Self::AuthKeysUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            Self::MissingToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            Self::Overloaded => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(OVERLOADED_RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_and_a_problem_body() {
        let cases = [
            (ApiError::CallerNotAllowed, 403),
            (ApiError::InvalidDeviceId(DeviceIdError::TooLong), 400),
            (ApiError::InvalidTtl(TtlError::TooShort), 400),
            (ApiError::InvalidModuleId(ModuleIdError::Missing), 400),
            (
                ApiError::InvalidRegistrationId(RegistrationIdError::BadCharacter),
                400,
            ),
            (
                ApiError::DeviceIdNotRegistrationId(RegistrationIdError::BadCharacter),
                400,
            ),
            (ApiError::ModuleTokensUnavailable, 404),
            (ApiError::InvalidQuery(QueryError::Repeated("ttl")), 400),
            (ApiError::Hub(HubChoiceError::Unknown), 400),
            (ApiError::Hub(HubChoiceError::Required), 400),
            (ApiError::HubNotForRegistration, 400),
            (ApiError::NotFound, 404),
            (ApiError::MethodNotAllowed, 405),
            (ApiError::KeyUnavailable, 503),
            (ApiError::Overloaded, 503),
            (ApiError::MissingToken, 401),
            (ApiError::InvalidToken, 401),
            (ApiError::AuthKeysUnavailable, 503),
            (ApiError::UriTooLong, 414),
            (ApiError::PayloadTooLarge, 413),
        ];
        for (error, status) in cases {
            let response = error.clone().into_response();
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/problem+json",
                "{error:?}"
            );
        }
        let unavailable = ApiError::KeyUnavailable.into_response();
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "5");
        let not_allowed = ApiError::MethodNotAllowed.into_response();
        assert_eq!(not_allowed.headers()[header::ALLOW], "GET, HEAD");
    }
}
