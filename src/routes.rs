//! The HTTP surface: the route table, the 404 and 405 answers, and the one middleware (limits and
//! the request log line).
//!
//! **What it owns.** [`Route`]: every route's template (which is also its name in the log line)
//! and the Functions function that serves it; which routes are served (the DPS registration
//! route only when registration tokens can be signed); which raw inputs each route hands to
//! [`issuance`](crate::issuance); 405 with `Allow` for other methods on a route, 404 elsewhere.
//! Paths are as the Functions host forwards them with `enableForwardingHttpRequest`: the full
//! original path including the `api` route prefix.
//!
//! **What it trusts.** Nothing in the request: handlers only pick the device id and query out of
//! it for the parsers. Nothing from the request is logged here except the matched route's name
//! and the join keys [`correlation`](crate::correlation) parsed out of two headers — never the URI
//! (it carries `code`) or a header's text.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::correlation::Correlation;
use crate::error::ApiError;
use crate::issuance::{RawInputs, RawSubject, TokenService};
use crate::limits::RequestLimits;
use crate::params::{DeviceIdError, RawQuery};
use crate::request_log;
use crate::request_record::RequestOutcome;

/// Every route the handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/devices/{deviceId}/sas-token[?ttl=SECONDS][&hub=HOST]`.
    DeviceToken,
    /// `GET /api/devices/{deviceId}/modules/{moduleId}/sas-token[?ttl=SECONDS][&hub=HOST]`.
    ModuleToken,
    /// `GET /api/registrations/{registrationId}/sas-token[?ttl=SECONDS]`: a DPS registration token.
    RegistrationToken,
    /// `GET /api/getSASTokenByDeviceID?deviceid=ID[&ttl=SECONDS][&hub=HOST]`: the seed function's
    /// interface.
    LegacyDeviceToken,
}

impl Route {
    /// Every route, in the order the README lists them.
    pub const ALL: [Route; 4] = [
        Route::DeviceToken,
        Route::ModuleToken,
        Route::RegistrationToken,
        Route::LegacyDeviceToken,
    ];

    /// The path template as the Functions host forwards it (route prefix `api` included), in
    /// axum's syntax, which is also the documented one.
    pub const fn template(self) -> &'static str {
        match self {
            Self::DeviceToken => "/api/devices/{deviceId}/sas-token",
            Self::ModuleToken => "/api/devices/{deviceId}/modules/{moduleId}/sas-token",
            Self::RegistrationToken => "/api/registrations/{registrationId}/sas-token",
            Self::LegacyDeviceToken => "/api/getSASTokenByDeviceID",
        }
    }

    /// The name the request log line gives the route: its template.
    pub const fn log_name(self) -> &'static str {
        self.template()
    }

    /// The Functions function (folder under `function-apps/`) whose `function.json` declares it.
    pub const fn function_name(self) -> &'static str {
        match self {
            Self::DeviceToken => "GetSasToken",
            Self::ModuleToken => "GetModuleSasToken",
            Self::RegistrationToken => "GetRegistrationSasToken",
            Self::LegacyDeviceToken => "getSASTokenByDeviceID",
        }
    }

    /// The route whose template axum matched.
    fn of_template(template: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|route| route.template() == template)
    }
}

/// Everything a request needs, shared by all requests; cloning is one `Arc` increment.
#[derive(Debug, Clone)]
pub struct AppState(Arc<TokenService>);

impl AppState {
    /// Share `service` between all requests.
    pub fn new(service: TokenService) -> Self {
        Self(Arc::new(service))
    }
}

/// The router: the `served` routes, 405 for other methods on them, 404 elsewhere, the request
/// limits in front of them, and the request log line around all of it.
pub fn router(state: AppState, limits: RequestLimits, served: &[Route]) -> Router {
    let router = served.iter().fold(Router::new(), |router, &route| {
        let handler = match route {
            Route::DeviceToken => get(device_token),
            Route::ModuleToken => get(module_token),
            Route::RegistrationToken => get(registration_token),
            Route::LegacyDeviceToken => get(legacy_device_token),
        };
        router.route(route.template(), handler.fallback(method_not_allowed))
    });
    router
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn_with_state(limits, limit_and_log))
}

/// A path segment that does not percent-decode to UTF-8 cannot be an id.
fn segments<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(segments)| segments)
        .map_err(|_| DeviceIdError::BadCharacter.into())
}

/// A route whose ids are path segments: the ids from the path (`subject` says what they name),
/// `ttl` and `hub` from the query.
async fn from_path<T: Send>(
    app: AppState,
    ids: Result<Path<T>, PathRejection>,
    request: Request,
    subject: fn(T) -> RawSubject<'static>,
) -> Response {
    // The body is not `Sync`; keep only the head, which the checks read across an await.
    let (request, _body) = request.into_parts();
    app.0
        .issue(&request, || {
            let subject = subject(segments(ids)?);
            let query = RawQuery::parse(request.uri.query().unwrap_or_default())?;
            Ok(RawInputs {
                subject,
                ttl: query.ttl,
                hub: query.hub,
            })
        })
        .await
}

/// [`Route::DeviceToken`].
async fn device_token(
    State(app): State<AppState>,
    device_id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    from_path(app, device_id, request, |device| {
        RawSubject::Device(Cow::Owned(device))
    })
    .await
}

/// [`Route::ModuleToken`].
async fn module_token(
    State(app): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    from_path(app, ids, request, |(device, module)| {
        RawSubject::Module(Cow::Owned(device), Cow::Owned(module))
    })
    .await
}

/// [`Route::RegistrationToken`].
async fn registration_token(
    State(app): State<AppState>,
    registration_id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    from_path(app, registration_id, request, |registration| {
        RawSubject::Registration(Cow::Owned(registration))
    })
    .await
}

/// [`Route::LegacyDeviceToken`]: `deviceid` and `ttl` from the query.
async fn legacy_device_token(State(app): State<AppState>, request: Request) -> Response {
    let (request, _body) = request.into_parts();
    app.0
        .issue(&request, || {
            let query = RawQuery::parse(request.uri.query().unwrap_or_default())?;
            let device_id = query.device_id.ok_or(DeviceIdError::Missing)?;
            Ok(RawInputs {
                subject: RawSubject::Device(device_id),
                ttl: query.ttl,
                hub: query.hub,
            })
        })
        .await
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The one middleware, around every route and fallback: admit the request under the limits
/// ([`RequestLimits::admit`]) or answer why not, then write its log line (route name, status,
/// latency, and the [`RequestOutcome`] the pipeline left, with the join keys read here beside
/// the route: [`Correlation`]). One layer rather than two: each `from_fn` layer costs an
/// allocation and a service clone on every request.
async fn limit_and_log(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| Route::of_template(path.as_str()))
        .map_or("unmatched", Route::log_name);
    let correlation = Correlation::from_headers(request.headers());
    let mut response = match limits.admit(&request) {
        // The permit is held until the response is ready.
        Ok(_permit) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    };
    let mut outcome: RequestOutcome = response.extensions_mut().remove().unwrap_or_default();
    outcome.correlation = correlation;
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    request_log::write(route, response.status().as_u16(), latency_us, &outcome);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_found_by_its_own_template_only() {
        for route in Route::ALL {
            assert_eq!(Route::of_template(route.template()), Some(route));
        }
        assert_eq!(Route::of_template("/api/devices/{id}/sas-token"), None);
    }

    /// The function folders are the host's side of the route table: each `function.json` must
    /// declare the route's template (without the `/api` prefix) for GET.
    #[test]
    fn each_route_has_its_function_folder_with_the_same_route() {
        for route in Route::ALL {
            let path = format!(
                "{}/function-apps/{}/function.json",
                env!("CARGO_MANIFEST_DIR"),
                route.function_name()
            );
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let json: serde_json::Value =
                serde_json::from_str(&text).expect("function.json is JSON");
            let trigger = &json["bindings"][0];
            assert_eq!(trigger["type"], "httpTrigger", "{path}");
            assert_eq!(
                format!("/api/{}", trigger["route"].as_str().unwrap_or_default()),
                route.template(),
                "{path}"
            );
            assert_eq!(trigger["methods"], serde_json::json!(["get"]), "{path}");
        }
    }
}
