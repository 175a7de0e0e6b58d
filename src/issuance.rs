//! One token request, start to end: caller → input → key → sign.
//!
//! **What it owns.** The order of the steps and the 200 answer:
//! 1. **caller** — [`Callers::identify`]: allow list, client certificate, bearer token (403/401);
//! 2. **input** — the device id and `ttl` the route found, parsed into [`DeviceId`] and [`Ttl`]
//!    (400; a valid device id is logged even when `ttl` is refused);
//! 3. **key** — the current signer from memory ([`KeyHandle::current`]; 503 if none yet);
//! 4. **sign** — the token, answered as JSON with `Cache-Control: no-store`.
//!
//! Each step returns a typed value or the error to answer with, and the log record
//! ([`RequestOutcome`]) is assembled once, at the end, from what the steps returned.
//!
//! **What it trusts.** The routes to hand over the request's raw inputs untouched; everything
//! else it gets from the layers above.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::caller::{Callers, Identified};
use crate::error::ApiError;
use crate::params::{DeviceId, TokenLifetimes, Ttl};
use crate::request_log::RequestOutcome;
use crate::secrets::KeyHandle;

/// Everything a token request is checked against and signed with, shared by all requests.
#[derive(Debug)]
pub struct TokenService {
    callers: Callers,
    lifetimes: TokenLifetimes,
    keys: KeyHandle,
}

/// A request's inputs as its route found them, not yet validated: the device id and `ttl`.
#[derive(Debug)]
pub struct RawInputs<'r> {
    /// The device id, percent-decoded.
    pub device_id: Cow<'r, str>,
    /// `ttl`, if given.
    pub ttl: Option<Cow<'r, str>>,
}

/// The 200 body.
#[derive(Serialize)]
struct TokenResponse<'a> {
    sastoken: &'a str,
    #[serde(rename = "deviceId")]
    device_id: &'a str,
    #[serde(rename = "expiresOn")]
    expires_on: String,
}

impl TokenService {
    /// The service, from its prepared layers.
    pub fn new(callers: Callers, lifetimes: TokenLifetimes, keys: KeyHandle) -> Self {
        Self {
            callers,
            lifetimes,
            keys,
        }
    }

    /// Answer one token request. `inputs` runs only once the caller is known, so a caller who is
    /// refused learns nothing about its input. The response carries its [`RequestOutcome`] in
    /// its extensions, for the log line.
    pub async fn issue<'r>(
        &self,
        request: &'r Parts,
        inputs: impl FnOnce() -> Result<RawInputs<'r>, ApiError>,
    ) -> Response {
        let Identified { caller, facts } = self.callers.identify(request).await;
        let inputs = caller.and_then(|_caller| inputs());
        let device = match &inputs {
            Ok(raw) => DeviceId::parse(&raw.device_id).map_err(ApiError::from),
            Err(error) => Err(error.clone()),
        };
        let token = match (&device, inputs) {
            (Ok(device), Ok(raw)) => match self.lifetimes.choose(raw.ttl.as_deref()) {
                Ok(ttl) => self.sign(device, ttl).await,
                Err(error) => Err(error.into()),
            },
            (Err(error), _) => Err(error.clone()),
            // A device id was parsed, so the inputs were there: this arm is never taken.
            (Ok(_), Err(error)) => Err(error),
        };
        // The device id is logged whenever it was valid, even if a later step refused.
        let outcome = RequestOutcome {
            caller: facts,
            device_id: device.ok(),
        };
        let mut response = token.unwrap_or_else(IntoResponse::into_response);
        response.extensions_mut().insert(outcome);
        response
    }

    /// Steps 3 and 4: the current key, and the token signed with it.
    async fn sign(&self, device: &DeviceId, ttl: Ttl) -> Result<Response, ApiError> {
        let signer = self.keys.current().await.ok_or(ApiError::KeyUnavailable)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let token = signer.sign(device, now + u64::from(ttl.seconds()));
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
