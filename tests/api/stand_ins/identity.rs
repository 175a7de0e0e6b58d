//! The App Service managed-identity endpoint, protocol 2019-08-01 (docs/azure-behaviour.md §6).
//!
//! `GET /msi/token?api-version=2019-08-01&resource=https://vault.azure.net[&client_id=…|&object_id=…]`
//! with header `X-IDENTITY-HEADER: <IDENTITY_HEADER>`. Checked in the order the platform checks
//! them: a missing or wrong header is `403`; another api-version, another resource, both ids at
//! once or an identity that isn't assigned is `400`. The answer is
//! `{"access_token","expires_on":"<Unix seconds as a string>","resource","token_type":"Bearer","client_id"}`.
//! Error bodies follow the platform's `{"statusCode","message","correlationId"}` shape; no client
//! reads more than the status.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::body::Body;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::json;
use tokio::runtime::Runtime;

use super::{Grant, Grants, bind_loopback, header, json, lock, query_pairs, random_guid, serve};
use crate::support::clock::unix_now;

/// The one API version the App Service endpoint speaks here.
pub(crate) const API_VERSION: &str = "2019-08-01";
/// The resource Key Vault tokens are asked for (the scope minus `/.default`).
pub(crate) const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Where the endpoint listens, as `IDENTITY_ENDPOINT` names it on Linux plans.
const PATH: &str = "/msi/token";
/// What App Service tokens last by default: a day.
const DEFAULT_LIFETIME_SECONDS: i64 = 86_400;

/// Handle on a running identity stand-in.
pub(crate) struct Identity {
    state: Arc<State>,
    endpoint: String,
}

/// One request to the endpoint, as received.
#[derive(Clone, Debug)]
pub(crate) struct TokenRequest {
    /// `X-IDENTITY-HEADER`.
    pub(crate) identity_header: Option<String>,
    /// `metadata` (the SDK sends `true`).
    pub(crate) metadata: Option<String>,
    pub(crate) api_version: Option<String>,
    pub(crate) resource: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) object_id: Option<String>,
    /// The status it was answered with.
    pub(crate) status: u16,
}

/// A user-assigned identity attached to the app.
#[derive(Clone, Debug)]
struct UserAssigned {
    client_id: String,
    object_id: String,
}

struct State {
    /// The value `X-IDENTITY-HEADER` must carry (`IDENTITY_HEADER`).
    header_secret: String,
    /// The system-assigned identity's client id, reported in its tokens.
    system_client_id: String,
    user_assigned: Mutex<Vec<UserAssigned>>,
    /// Answer every request with 500.
    failing: AtomicBool,
    /// `expires_on` of new tokens, relative to now.
    lifetime_seconds: AtomicI64,
    requests: Mutex<Vec<TokenRequest>>,
    /// Every access token issued, oldest first.
    issued: Mutex<Vec<String>>,
    grants: Grants,
}

impl Identity {
    pub(super) fn start(runtime: &Runtime, grants: Grants) -> Identity {
        let state = Arc::new(State {
            header_secret: format!("ih-{}", random_guid()),
            system_client_id: random_guid(),
            user_assigned: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            lifetime_seconds: AtomicI64::new(DEFAULT_LIFETIME_SECONDS),
            requests: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            grants,
        });
        let listener = bind_loopback(runtime);
        let endpoint = format!(
            "http://{}{PATH}",
            listener
                .local_addr()
                .expect("a bound listener has an address")
        );
        let _context = runtime.enter();
        let shared = Arc::clone(&state);
        serve(listener, None, move |parts| {
            let state = Arc::clone(&shared);
            async move { Some(state.answer(&parts)) }
        });
        Identity { state, endpoint }
    }

    /// `IDENTITY_ENDPOINT`: `http://127.0.0.1:PORT/msi/token`.
    pub(crate) fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The system-assigned identity's client id: what its tokens are issued to, and what the
    /// vault stand-in's access controls name it by.
    pub(crate) fn system_client_id(&self) -> &str {
        &self.state.system_client_id
    }

    /// `IDENTITY_HEADER`: what `X-IDENTITY-HEADER` must carry.
    pub(crate) fn header_secret(&self) -> &str {
        &self.state.header_secret
    }

    /// Attaches a user-assigned identity; returns its (client id, object id).
    pub(crate) fn add_user_assigned(&self) -> (String, String) {
        let identity = UserAssigned {
            client_id: random_guid(),
            object_id: random_guid(),
        };
        lock(&self.state.user_assigned).push(identity.clone());
        (identity.client_id, identity.object_id)
    }

    /// While `failing`, every request is answered 500.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Tokens issued from now on expire `seconds` after they are issued (may be negative).
    pub(crate) fn set_token_lifetime(&self, seconds: i64) {
        self.state.lifetime_seconds.store(seconds, Ordering::SeqCst);
    }

    /// Every request so far, in order.
    pub(crate) fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.requests).clone()
    }

    /// How many requests it has had.
    pub(crate) fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// How many tokens it has issued.
    pub(crate) fn tokens_issued(&self) -> usize {
        lock(&self.state.issued).len()
    }

    /// Every access token it has issued, oldest first.
    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }
}

impl State {
    fn answer(&self, parts: &Parts) -> Response<Body> {
        let query = query_pairs(parts);
        let mut request = TokenRequest {
            identity_header: header(parts, "x-identity-header"),
            metadata: header(parts, "metadata"),
            api_version: query.get("api-version").cloned(),
            resource: query.get("resource").cloned(),
            client_id: query.get("client_id").cloned(),
            object_id: query
                .get("object_id")
                .or_else(|| query.get("principal_id"))
                .cloned(),
            status: 0,
        };
        let response = self.decide(parts, &request);
        request.status = response.status().as_u16();
        lock(&self.requests).push(request);
        response
    }

    fn decide(&self, parts: &Parts, request: &TokenRequest) -> Response<Body> {
        if parts.uri.path() != PATH {
            return error(StatusCode::NOT_FOUND, "Not found.");
        }
        if parts.method != Method::GET {
            return error(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported.");
        }
        // The header guards against SSRF, so it is checked before anything else is looked at.
        if request.identity_header.as_deref() != Some(self.header_secret.as_str()) {
            return error(
                StatusCode::FORBIDDEN,
                "The X-IDENTITY-HEADER header is missing or invalid.",
            );
        }
        if self.failing.load(Ordering::SeqCst) {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred while fetching the AAD token.",
            );
        }
        if request.api_version.as_deref() != Some(API_VERSION) {
            return error(
                StatusCode::BAD_REQUEST,
                "The api-version is missing or not supported.",
            );
        }
        let resource_ok = request
            .resource
            .as_deref()
            .is_some_and(|r| r.trim_end_matches('/') == VAULT_RESOURCE);
        if !resource_ok {
            return error(
                StatusCode::BAD_REQUEST,
                "The resource is missing or this stand-in does not issue tokens for it.",
            );
        }
        let client_id = match (&request.client_id, &request.object_id) {
            (None, None) => self.system_client_id.clone(),
            (Some(_), Some(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Only one of client_id, object_id or mi_res_id may be given.",
                );
            }
            (client_id, object_id) => {
                let found = lock(&self.user_assigned).iter().find_map(|identity| {
                    let matches = client_id.as_deref() == Some(identity.client_id.as_str())
                        || object_id.as_deref() == Some(identity.object_id.as_str());
                    matches.then(|| identity.client_id.clone())
                });
                match found {
                    Some(client_id) => client_id,
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "No User Assigned or Delegated Managed Identity found for specified \
                             ClientId/ResourceId/PrincipalId.",
                        );
                    }
                }
            }
        };

        let now = i64::try_from(unix_now()).expect("the time fits in i64");
        let expires_on = now + self.lifetime_seconds.load(Ordering::SeqCst);
        // Opaque to its holder, as real access tokens are to everyone but the audience.
        let token = super::random_string(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            96,
        );
        lock(&self.issued).push(token.clone());
        self.grants.insert(
            token.clone(),
            Grant {
                client_id: client_id.clone(),
                expires_on,
            },
        );
        json(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "expires_on": expires_on.to_string(),
                "resource": VAULT_RESOURCE,
                "token_type": "Bearer",
                "client_id": client_id,
            }),
        )
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        &json!({
            "statusCode": status.as_u16(),
            "message": message,
            "correlationId": random_guid(),
        }),
    )
}
