//! The HTTP surface: two token routes, the 404 and 405 answers, the limits middleware, and what
//! the per-request log line records (the line itself is [`request_log`]'s).
//!
//! **What it owns.** Routing and the order of checks on every token request:
//! 1. caller IP against the allow list (403), then — when configured — the client certificate
//!    (403) and the bearer token (401/403),
//! 2. input: device id, `ttl`, query shape (400),
//! 3. the current key (503 if none yet),
//! 4. sign and answer 200 with `Cache-Control: no-store`.
//!
//! Paths are as the Functions host forwards them with `enableForwardingHttpRequest`: the full
//! original path including the `api` route prefix.
//!
//! **What it trusts.** The TCP peer address (from the socket) and the configuration. Everything in
//! the request is the caller's; the handlers only hand it to the parsers in `client_ip` and
//! `params`. Nothing from the request is logged except the matched route template, the caller's
//! address and the validated device id — never the URI (it carries `code`) or any header.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::allow_list::AllowList;
use crate::auth::bearer::{BearerAuth, BearerRejection};
use crate::auth::client_cert::Thumbprints;
use crate::client_ip::{CallerIpError, XffDepth, caller_ip};
use crate::error::ApiError;
use crate::limits::RequestLimits;
use crate::params::{DeviceId, DeviceIdError, RawQuery, Ttl};
use crate::request_log::{self, RequestOutcome};
use crate::secrets::KeyHandle;

/// The route template of the REST-style function `GetSasToken`.
pub const SAS_TOKEN_ROUTE: &str = "/api/devices/{deviceId}/sas-token";
/// The route of the seed-compatible function `getSASTokenByDeviceID`.
pub const LEGACY_ROUTE: &str = "/api/getSASTokenByDeviceID";

/// Everything a request needs, shared by all requests; cloning is one `Arc` increment.
#[derive(Debug, Clone)]
pub struct AppState(Arc<RequestPolicy>);

/// What every token request is checked against, and the key it is signed with.
#[derive(Debug)]
pub struct RequestPolicy {
    /// `ALLOWED_IPS`.
    pub allow_list: AllowList,
    /// `XFF_DEPTH`.
    pub xff_depth: XffDepth,
    /// `TOKEN_TTL_SECONDS`.
    pub default_ttl: Ttl,
    /// `TOKEN_MAX_TTL_SECONDS`.
    pub max_ttl: Ttl,
    /// The current signing key.
    pub keys: KeyHandle,
    /// `CLIENT_CERT_THUMBPRINTS`, when the client-certificate layer is on.
    pub client_cert: Option<Thumbprints>,
    /// The bearer-token layer, when `AUTH_TENANT_ID` is set.
    pub bearer: Option<BearerAuth>,
}

impl AppState {
    /// Share `policy` between all requests.
    pub fn new(policy: RequestPolicy) -> Self {
        Self(Arc::new(policy))
    }
}

/// The router: both token routes, 405 for other methods on them, 404 elsewhere, the request
/// limits in front of them, and the request log line around all of it.
pub fn router(state: AppState, limits: RequestLimits) -> Router {
    Router::new()
        .route(
            SAS_TOKEN_ROUTE,
            get(token_by_path).fallback(method_not_allowed),
        )
        .route(
            LEGACY_ROUTE,
            get(token_by_query).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn_with_state(limits, limit_and_log))
}

/// `GET /api/devices/{deviceId}/sas-token[?ttl=SECONDS]`.
async fn token_by_path(
    State(app): State<AppState>,
    device_id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    // The body is not `Sync`; keep only the head, which the checks read across an await.
    let (request, _body) = request.into_parts();
    app.issue(&request, || {
        // A path segment that does not percent-decode to UTF-8 cannot be a device id.
        let Path(device_id) = device_id.map_err(|_| DeviceIdError::BadCharacter)?;
        let query = RawQuery::parse(request.uri.query().unwrap_or_default())?;
        Ok((Cow::Owned(device_id), query.ttl))
    })
    .await
}

/// `GET /api/getSASTokenByDeviceID?deviceid=ID[&ttl=SECONDS]` — the seed function's interface.
async fn token_by_query(State(app): State<AppState>, request: Request) -> Response {
    let (request, _body) = request.into_parts();
    app.issue(&request, || {
        let query = RawQuery::parse(request.uri.query().unwrap_or_default())?;
        let device_id = query.device_id.ok_or(DeviceIdError::Missing)?;
        Ok((device_id, query.ttl))
    })
    .await
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The unvalidated device id and `ttl`, as the route found them.
type Inputs<'r> = (Cow<'r, str>, Option<Cow<'r, str>>);

/// The 200 body.
#[derive(Serialize)]
struct TokenResponse<'a> {
    sastoken: &'a str,
    #[serde(rename = "deviceId")]
    device_id: &'a str,
    #[serde(rename = "expiresOn")]
    expires_on: String,
}

impl AppState {
    /// Run the checks in order and answer.
    async fn issue<'r>(
        &self,
        request: &'r Parts,
        inputs: impl FnOnce() -> Result<Inputs<'r>, ApiError>,
    ) -> Response {
        let mut outcome = RequestOutcome::default();
        let mut response = match self.try_issue(request, inputs, &mut outcome).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        response.extensions_mut().insert(outcome);
        response
    }

    async fn try_issue<'r>(
        &self,
        request: &'r Parts,
        inputs: impl FnOnce() -> Result<Inputs<'r>, ApiError>,
        outcome: &mut RequestOutcome,
    ) -> Result<Response, ApiError> {
        let app = &self.0;

        // 1. Caller: address, then certificate and token when those layers are on.
        let peer = request
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .ok_or(ApiError::CallerNotAllowed)?;
        let xff = request.headers.get_all("x-forwarded-for");
        let caller = caller_ip(&xff, app.xff_depth, peer).map_err(|e| {
            outcome.denied = Some(match e {
                CallerIpError::TooFewEntries { .. } => "x-forwarded-for has too few entries",
                CallerIpError::Unparsable => "x-forwarded-for entry is not an address",
            });
            ApiError::CallerNotAllowed
        })?;
        outcome.caller_ip = Some(caller);
        if !app.allow_list.contains(caller) {
            outcome.denied = Some("caller not in ALLOWED_IPS");
            return Err(ApiError::CallerNotAllowed);
        }
        if let Some(pins) = &app.client_cert {
            let verdict = pins.check(request.headers.get("x-arr-clientcert"), SystemTime::now());
            outcome.client_cert = Some(verdict.map_or_else(|r| r.as_str(), |()| "ok"));
            verdict.map_err(|_| ApiError::CallerNotAllowed)?;
        }
        if let Some(bearer) = &app.bearer {
            let verdict = bearer.authenticate(&request.headers).await;
            outcome.caller_oid = verdict.caller;
            outcome.auth = Some(verdict.result.map_or_else(|r| r.as_str(), |()| "ok"));
            verdict.result.map_err(|rejection| match rejection {
                BearerRejection::Missing => ApiError::MissingToken,
                BearerRejection::Invalid => ApiError::InvalidToken,
                BearerRejection::CallerNotAllowed | BearerRejection::RoleMissing => {
                    ApiError::CallerNotAllowed
                }
                BearerRejection::KeysUnavailable => ApiError::AuthKeysUnavailable,
            })?;
        }

        // 2. Input.
        let (device_id, ttl) = inputs()?;
        let device = DeviceId::parse(&device_id)?;
        outcome.device_id = Some(device.clone());
        let ttl = match ttl {
            Some(text) => Ttl::parse(&text, app.max_ttl)?,
            None => app.default_ttl,
        };

        // 3. Key.
        let signer = app.keys.current().await.ok_or(ApiError::KeyUnavailable)?;

        // 4. Token.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let token = signer.sign(&device, now + u64::from(ttl.seconds()));
        let expires_on =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(token.expires_at))
                .to_string();
        // Sized for the whole body up front: one allocation, no regrowth.
        let mut body = Vec::with_capacity(token.token.len() + device.as_str().len() + 80);
        serde_json::to_writer(
            &mut body,
            &TokenResponse {
                sastoken: &token.token,
                device_id: device.as_str(),
                expires_on,
            },
        )
        .expect("a struct of strings serialises");
        Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response())
    }
}

/// The one middleware, around every route and fallback: admit the request under the limits
/// ([`RequestLimits::admit`]) or answer why not, then write its log line (route template, status,
/// latency, caller, device, verdicts). One layer rather than two: each `from_fn` layer costs an
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
        .map(|path| route_name(path.as_str()))
        .unwrap_or("unmatched");
    let response = match limits.admit(&request) {
        // The permit is held until the response is ready.
        Ok(_permit) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    };
    let no_outcome = RequestOutcome::default();
    let outcome = response.extensions().get().unwrap_or(&no_outcome);
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    request_log::write(route, response.status().as_u16(), latency_us, outcome);
    response
}

/// Map axum's matched path to our documented template (`{deviceId}` rather than axum's
/// parameter name), as a `'static` string so logging allocates nothing.
fn route_name(matched: &str) -> &'static str {
    match matched {
        LEGACY_ROUTE => LEGACY_ROUTE,
        _ => SAS_TOKEN_ROUTE,
    }
}
