//! One token request, start to end: caller → input → scope → key → sign.
//!
//! **What it owns.** The order of the steps and the 200 answer:
//! 1. **caller** — [`Callers::identify`]: allow list, client certificate, bearer token (403/401);
//! 2. **input** — what the route found, parsed into a `Subject` (a device, a device's module, a
//!    DPS registration) and a [`Ttl`] (400). In enrollment-group mode a device id is its DPS
//!    registration id and must be a valid one (400), and module tokens do not exist (404);
//! 3. **scope** — with `DEVICE_SCOPES`, the caller must hold a rule that covers the subject's id
//!    (403, the same answer as every other 403);
//! 4. **key** — the current key from memory ([`KeyHandle::current`]; 503 if none has been read,
//!    Key Vault withdrew it, or it outlived `KEYVAULT_MAX_KEY_AGE_SECONDS` — the log says which);
//! 5. **sign** — the token, answered as JSON with `Cache-Control: no-store` and renewal hints:
//!    `expiresIn` (seconds until `se`, right even on a device whose clock is wrong) and
//!    `refreshIn` (drawn uniformly from 75–90 % of `expiresIn` for every answer, so a fleet that
//!    connected at once does not renew at once).
//!
//! Each step returns a typed value or the error to answer with, and the log record
//! ([`RequestOutcome`]) is assembled once, at the end, from what the steps returned; for an issued
//! token it is the audit record.
//!
//! **What it trusts.** The routes to hand over the request's raw inputs untouched; everything
//! else it gets from the layers above.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::caller::{Callers, Identified};
use crate::error::ApiError;
use crate::params::{DeviceId, ModuleId, RegistrationId, TokenLifetimes, Ttl};
use crate::request_log::{IssuedFacts, RequestOutcome};
use crate::sas::{SasToken, SigningMode, TokenSigner};
use crate::scope::{Denial, Scopes};
use crate::secrets::handle::Unavailable;
use crate::secrets::{IssuingKey, KeyHandle};

/// Everything a token request is checked against and signed with, shared by all requests.
#[derive(Debug)]
pub struct TokenService {
    callers: Callers,
    lifetimes: TokenLifetimes,
    mode: SigningMode,
    scopes: Option<Scopes>,
    keys: KeyHandle,
}

/// A request's inputs as its route found them, percent-decoded but not yet validated.
#[derive(Debug)]
pub struct RawInputs<'r> {
    /// What the token is for.
    pub subject: RawSubject<'r>,
    /// `ttl`, if given.
    pub ttl: Option<Cow<'r, str>>,
}

/// What a token is for, as the route found it.
#[derive(Debug)]
pub enum RawSubject<'r> {
    /// A device id.
    Device(Cow<'r, str>),
    /// A device id and a module id.
    Module(Cow<'r, str>, Cow<'r, str>),
    /// A DPS registration id.
    Registration(Cow<'r, str>),
}

/// What a token is for, validated for the signing mode.
#[derive(Debug, Clone)]
enum Subject {
    /// A device; in enrollment-group mode with its registration id (the same text).
    Device(DeviceId, Option<RegistrationId>),
    /// A module of a device.
    Module(DeviceId, ModuleId),
    /// A DPS registration.
    Registration(RegistrationId),
}

impl Subject {
    /// The id `DEVICE_SCOPES` is checked against: the device's, or the registration's.
    fn scope_id(&self) -> &str {
        match self {
            Self::Device(device, _) | Self::Module(device, _) => device.as_str(),
            Self::Registration(registration) => registration.as_str(),
        }
    }
}

/// The 200 body.
#[derive(Serialize)]
struct TokenResponse<'a> {
    sastoken: &'a str,
    #[serde(rename = "deviceId", skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    #[serde(rename = "moduleId", skip_serializing_if = "Option::is_none")]
    module_id: Option<&'a str>,
    #[serde(rename = "registrationId", skip_serializing_if = "Option::is_none")]
    registration_id: Option<&'a str>,
    #[serde(rename = "expiresOn")]
    expires_on: &'a str,
    #[serde(rename = "expiresIn")]
    expires_in: u64,
    #[serde(rename = "refreshIn")]
    refresh_in: u64,
}

/// A signed token and what the audit line records about it.
struct Issued {
    response: Response,
    facts: IssuedFacts,
}

impl TokenService {
    /// The service, from its prepared layers.
    pub fn new(
        callers: Callers,
        lifetimes: TokenLifetimes,
        mode: SigningMode,
        scopes: Option<Scopes>,
        keys: KeyHandle,
    ) -> Self {
        Self {
            callers,
            lifetimes,
            mode,
            scopes,
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
        // 1. Caller.
        let Identified { caller, facts } = self.callers.identify(request).await;
        // 2. Input: the subject first, so that a valid id is logged even if `ttl` is refused.
        let inputs = caller.as_ref().map_err(Clone::clone).and_then(|_| inputs());
        let subject = match &inputs {
            Ok(raw) => self.subject(&raw.subject),
            Err(error) => Err(error.clone()),
        };
        let ttl = match inputs {
            Ok(raw) => self
                .lifetimes
                .choose(raw.ttl.as_deref())
                .map_err(ApiError::from),
            Err(error) => Err(error),
        };
        // 3. Scope.
        let scope = match (&caller, &subject) {
            (Ok(caller), Ok(subject)) => self.scope(caller, subject),
            _ => Ok(None),
        };
        // 4. Key: only for a request that passed every check.
        let key = match (&subject, &ttl, &scope) {
            (Ok(_), Ok(_), Ok(_)) => Some(self.keys.current().await),
            _ => None,
        };
        // 5. Signature.
        let issued = match (&subject, ttl, &scope, &key) {
            (Err(error), _, _, _) => Err(error.clone()),
            (Ok(_), Err(error), _, _) => Err(error),
            (Ok(_), Ok(_), Err(_), _) => Err(ApiError::CallerNotAllowed),
            (Ok(_), Ok(_), Ok(_), None | Some(Err(_))) => Err(ApiError::KeyUnavailable),
            (Ok(subject), Ok(ttl), Ok(scope), Some(Ok(key))) => {
                sign(key, subject, ttl, scope.clone())
            }
        };

        let mut outcome = RequestOutcome {
            caller: facts,
            scope_denied: scope.err(),
            key_unavailable: key.and_then(Result::err).map(Unavailable::as_str),
            ..RequestOutcome::default()
        };
        match subject {
            Ok(Subject::Device(device, _)) => outcome.device_id = Some(device),
            Ok(Subject::Module(device, module)) => {
                outcome.device_id = Some(device);
                outcome.module_id = Some(module);
            }
            Ok(Subject::Registration(registration)) => {
                outcome.registration_id = Some(registration);
            }
            Err(_) => {}
        }
        let mut response = match issued {
            Ok(Issued { response, facts }) => {
                outcome.issued = Some(facts);
                response
            }
            Err(error) => error.into_response(),
        };
        response.extensions_mut().insert(outcome);
        response
    }

    /// Step 2: what the token is for, valid for the signing mode.
    fn subject(&self, raw: &RawSubject<'_>) -> Result<Subject, ApiError> {
        match raw {
            RawSubject::Device(device) => {
                let device = DeviceId::parse(device)?;
                let registration = match self.mode {
                    SigningMode::HubPolicy => None,
                    SigningMode::EnrollmentGroup => Some(
                        RegistrationId::parse(device.as_str())
                            .map_err(ApiError::DeviceIdNotRegistrationId)?,
                    ),
                };
                Ok(Subject::Device(device, registration))
            }
            RawSubject::Module(device, module) => {
                let device = DeviceId::parse(device)?;
                let module = ModuleId::parse(module)?;
                match self.mode {
                    SigningMode::HubPolicy => Ok(Subject::Module(device, module)),
                    SigningMode::EnrollmentGroup => Err(ApiError::ModuleTokensUnavailable),
                }
            }
            RawSubject::Registration(registration) => {
                Ok(Subject::Registration(RegistrationId::parse(registration)?))
            }
        }
    }

    /// Step 3: whether `DEVICE_SCOPES` lets the caller have the subject; the allowing key, or why
    /// not (for the log).
    fn scope(
        &self,
        caller: &crate::caller::Caller,
        subject: &Subject,
    ) -> Result<Option<Arc<str>>, &'static str> {
        let Some(scopes) = &self.scopes else {
            return Ok(None);
        };
        scopes
            .allows(caller, subject.scope_id())
            .map(|key| Some(Arc::clone(key)))
            .map_err(Denial::as_str)
    }
}

/// Step 5: the token for `subject`, signed with `key`, as the 200 answer.
fn sign(
    key: &IssuingKey,
    subject: &Subject,
    ttl: Ttl,
    scope: Option<Arc<str>>,
) -> Result<Issued, ApiError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let token = sign_with(key, subject, now + u64::from(ttl.seconds()))
        // The route table only serves what the mode can sign; a mismatch fails closed.
        .ok_or(ApiError::KeyUnavailable)?;
    let expires_on =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(token.expires_at))
            .to_string();
    let expires_in = token.expires_at.saturating_sub(now);
    let (device_id, module_id, registration_id) = match subject {
        Subject::Device(device, _) => (Some(device.as_str()), None, None),
        Subject::Module(device, module) => (Some(device.as_str()), Some(module.as_str()), None),
        Subject::Registration(registration) => (None, None, Some(registration.as_str())),
    };
    // Sized for the whole body up front: one allocation, no regrowth.
    let mut body = Vec::with_capacity(token.token.len() + 2 * 128 + 160);
    serde_json::to_writer(
        &mut body,
        &TokenResponse {
            sastoken: &token.token,
            device_id,
            module_id,
            registration_id,
            expires_on: &expires_on,
            expires_in,
            refresh_in: refresh_in(expires_in, fastrand::f64()),
        },
    )
    .expect("a struct of strings and numbers serialises");
    let response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response();
    Ok(Issued {
        response,
        facts: IssuedFacts {
            expires_on,
            signing_mode: key.signer.mode().as_str(),
            scope,
            key_version: key.version.clone(),
        },
    })
}

/// The token for `subject`, if `key`'s mode signs that kind of token.
fn sign_with(key: &IssuingKey, subject: &Subject, expires_at: u64) -> Option<SasToken> {
    match (&key.signer, subject) {
        (TokenSigner::HubPolicy(signer), Subject::Device(device, _)) => {
            Some(signer.sign(device, expires_at))
        }
        (TokenSigner::HubPolicy(signer), Subject::Module(device, module)) => {
            Some(signer.sign_module(device, module, expires_at))
        }
        (TokenSigner::EnrollmentGroup(group), Subject::Device(_, Some(registration))) => {
            Some(group.sign_device(registration, expires_at))
        }
        (TokenSigner::EnrollmentGroup(group), Subject::Registration(registration)) => {
            group.sign_registration(registration, expires_at)
        }
        _ => None,
    }
}

/// When the client should renew: a point drawn uniformly (`unit` in `[0, 1)`) between 75 % and
/// 90 % of `expires_in`, in whole seconds. Spreading renewals keeps a fleet that reconnected at
/// once from renewing — and reconnecting to IoT Hub, which throttles new connections — at once.
pub fn refresh_in(expires_in: u64, unit: f64) -> u64 {
    let earliest = expires_in.saturating_mul(3).div_ceil(4);
    let latest = expires_in.saturating_mul(9) / 10;
    let span = latest.saturating_sub(earliest);
    // Every whole second from `earliest` to `latest` equally likely; `as` saturates for any float,
    // and the `min` keeps a `unit` of 1.0 (outside the contract) at `latest`.
    (earliest + ((span + 1) as f64 * unit.clamp(0.0, 1.0)) as u64).min(latest.max(earliest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_falls_between_three_quarters_and_nine_tenths_of_the_lifetime() {
        for expires_in in [60, 61, 3_600, 86_400, 31_536_000] {
            let earliest = refresh_in(expires_in, 0.0);
            let latest = refresh_in(expires_in, 0.999_999_999);
            assert_eq!(earliest, (expires_in * 3).div_ceil(4), "{expires_in}");
            assert_eq!(latest, expires_in * 9 / 10, "{expires_in}");
            assert!(refresh_in(expires_in, 0.5) > earliest, "{expires_in}");
        }
        assert_eq!(refresh_in(3_600, 1.0), 3_240, "clamped at 90 %");
        assert_eq!(refresh_in(0, 0.7), 0);
    }
}
