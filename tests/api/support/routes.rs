//! The handler's routes as a caller writes them, and the names the request log gives them.
//! A new route gets its path builder and its log name here.

/// Route templates as the request log must name them.
pub(crate) const TOKEN_ROUTE: &str = "/api/devices/{deviceId}/sas-token";
pub(crate) const MODULE_ROUTE: &str = "/api/devices/{deviceId}/modules/{moduleId}/sas-token";
pub(crate) const REGISTRATION_ROUTE: &str = "/api/registrations/{registrationId}/sas-token";
pub(crate) const LEGACY_ROUTE: &str = "/api/getSASTokenByDeviceID";

/// `(description, path)` of both token routes for device `dev-1`.
pub(crate) fn both_routes() -> [(&'static str, String); 2] {
    [
        ("REST route", token_path("dev-1", None)),
        ("legacy route", format!("{LEGACY_ROUTE}?deviceid=dev-1")),
    ]
}

/// `/api/devices/{segment}/sas-token[?query]`; `segment` and `query` are already
/// percent-encoded.
pub(crate) fn token_path(segment: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("/api/devices/{segment}/sas-token?{query}"),
        None => format!("/api/devices/{segment}/sas-token"),
    }
}

/// `/api/devices/{device}/modules/{module}/sas-token[?query]`, already percent-encoded.
pub(crate) fn module_path(device: &str, module: &str, query: Option<&str>) -> String {
    let path = format!("/api/devices/{device}/modules/{module}/sas-token");
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// `/api/registrations/{registration}/sas-token[?query]`, already percent-encoded.
pub(crate) fn registration_path(registration: &str, query: Option<&str>) -> String {
    let path = format!("/api/registrations/{registration}/sas-token");
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}
