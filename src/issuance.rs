//! One token request, start to end: caller → input → hub → scope → key → sign.
//!
//! **What it owns.** The order of the steps and the 200 answer:
//! 1. **caller** — [`Callers::identify`]: allow list, client certificate, bearer token (403/401);
//! 2. **input** — what the route found, parsed into a `Subject` (a device, a device's module, a
//!    DPS registration) and a [`Ttl`] (400). In enrollment-group mode a device id is its DPS
//!    registration id and must be a valid one (400), and module tokens do not exist (404);
//! 3. **hub** — which hub, and which of its host names, a device or module token is for: the
//!    request's `hub`, or the default hub ([`Hubs::choose`]; 400 for a hub not served, or for `hub`
//!    on the registration route, whose hub DPS assigns later);
//! 4. **scope** — with `DEVICE_SCOPES`, the caller must hold a rule that covers the subject's id on
//!    that hub (on any hub, for a registration) (403, the same answer as every other 403);
//! 5. **key** — the current key of that hub (hub-policy mode) or the group key, from memory
//!    ([`KeyHandle::current`](crate::secrets::KeyHandle::current); 503 if none has been read, Key Vault withdrew it, or it outlived
//!    `KEYVAULT_MAX_KEY_AGE_SECONDS` — the log says which);
//! 6. **sign** — the token, answered as JSON with `Cache-Control: no-store`, the host name in its
//!    `sr` as `hostName` (a registration answer carries `idScope` and `provisioningHost` instead),
//!    and renewal hints: `expiresIn` (seconds until `se`, right even on a device whose clock is
//!    wrong) and `refreshIn` (drawn uniformly from 75–90 % of `expiresIn` for every answer, so a
//!    fleet that connected at once does not renew at once).
//!
//! Each step returns a typed value or the error to answer with, and writes what it established
//! into the one log record ([`RequestOutcome`]) as it goes — a new fact is recorded by the step
//! that finds it, in one place. For an issued token the record is the audit record.
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

use crate::caller::{Caller, Callers, Identified};
use crate::error::ApiError;
use crate::hubs::{ChosenHub, Hubs};
use crate::params::{DeviceId, ModuleId, RegistrationId, TokenLifetimes, Ttl};
use crate::request_record::{IssuedFacts, RequestOutcome};
use crate::sas::{SasToken, SigningMode, TokenSigner};
use crate::scope::{Denial, Scopes};
use crate::secrets::{IssuingKey, Keys, Registrations};

/// Everything a token request is checked against and signed with, shared by all requests.
#[derive(Debug)]
pub struct TokenService {
    callers: Callers,
    lifetimes: TokenLifetimes,
    mode: SigningMode,
    scopes: Option<Scopes>,
    /// The hubs tokens are for; `None` when the one hub is named by the key's own connection
    /// string (then chosen after the key is read).
    hubs: Option<Hubs>,
    keys: Keys,
    registrations: Option<Registrations>,
}

/// A request's inputs as its route found them, percent-decoded but not yet validated.
#[derive(Debug)]
pub struct RawInputs<'r> {
    /// What the token is for.
    pub subject: RawSubject<'r>,
    /// `ttl`, if given.
    pub ttl: Option<Cow<'r, str>>,
    /// `hub`, if given.
    pub hub: Option<Cow<'r, str>>,
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

    /// Whether the token names a hub (device and module tokens; a registration's hub is DPS's
    /// choice, made later).
    fn names_a_hub(&self) -> bool {
        !matches!(self, Self::Registration(_))
    }

    /// Write the ids into the log record.
    fn record(&self, outcome: &mut RequestOutcome) {
        match self {
            Self::Device(device, _) => outcome.device_id = Some(device.clone()),
            Self::Module(device, module) => {
                outcome.device_id = Some(device.clone());
                outcome.module_id = Some(module.clone());
            }
            Self::Registration(registration) => {
                outcome.registration_id = Some(registration.clone());
            }
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
    #[serde(rename = "hostName", skip_serializing_if = "Option::is_none")]
    host_name: Option<&'a str>,
    #[serde(rename = "idScope", skip_serializing_if = "Option::is_none")]
    id_scope: Option<&'a str>,
    #[serde(rename = "provisioningHost", skip_serializing_if = "Option::is_none")]
    provisioning_host: Option<&'a str>,
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
        hubs: Option<Hubs>,
        keys: Keys,
        registrations: Option<Registrations>,
    ) -> Self {
        Self {
            callers,
            lifetimes,
            mode,
            scopes,
            hubs,
            keys,
            registrations,
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
        let mut outcome = RequestOutcome::default();
        let mut response = match self.run(request, inputs, &mut outcome).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        response.extensions_mut().insert(outcome);
        response
    }

    /// The steps in order; each writes what it established into `outcome`.
    async fn run<'r>(
        &self,
        request: &'r Parts,
        inputs: impl FnOnce() -> Result<RawInputs<'r>, ApiError>,
        outcome: &mut RequestOutcome,
    ) -> Result<Response, ApiError> {
        // 1. Caller.
        let Identified { caller, facts } = self.callers.identify(request).await;
        outcome.caller = facts;
        let caller = caller?;
        // 2. Input: the subject first, so that a valid id is logged even if `ttl` is refused.
        let raw = inputs()?;
        let subject = self.subject(&raw.subject)?;
        subject.record(outcome);
        let ttl = self.lifetimes.choose(raw.ttl.as_deref())?;
        // 3. Hub (unless the key names it: then after step 5).
        let requested_hub = raw.hub.as_deref();
        let mut hub = self.hub(&subject, requested_hub)?;
        record_hub(hub.as_ref(), outcome);
        // 4. Scope.
        let scope = self
            .scope(&caller, hub.as_ref(), &subject)
            .inspect_err(|denied| outcome.scope_denied = Some(denied))
            .map_err(|_| ApiError::CallerNotAllowed)?;
        // 5. Key: only for a request that passed every check.
        let key = self
            .keys
            .for_hub(hub.as_ref().and_then(|hub| hub.position))
            // Every listed hub has its key, and in hub-policy mode no unlisted hub is ever
            // chosen (start-up refuses suffix entries there): fail closed all the same.
            .ok_or(ApiError::KeyUnavailable)?
            .current()
            .await
            .inspect_err(|unavailable| outcome.key_unavailable = Some(unavailable.as_str()))
            .map_err(|_| ApiError::KeyUnavailable)?;
        if hub.is_none() && subject.names_a_hub() {
            hub = Some(key_named_hub(&key, requested_hub)?);
            record_hub(hub.as_ref(), outcome);
        }
        // 6. Sign.
        let Issued { response, facts } = sign(
            &key,
            &subject,
            hub.as_ref(),
            self.registrations.as_ref(),
            ttl,
            scope,
        )?;
        outcome.issued = Some(facts);
        Ok(response)
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

    /// Step 3: the hub a device or module token is for; `None` for a registration, or when the
    /// key names its own hub (chosen once the key is read).
    fn hub(
        &self,
        subject: &Subject,
        requested: Option<&str>,
    ) -> Result<Option<ChosenHub>, ApiError> {
        if !subject.names_a_hub() {
            return match requested {
                Some(_) => Err(ApiError::HubNotForRegistration),
                None => Ok(None),
            };
        }
        match &self.hubs {
            Some(hubs) => Ok(Some(hubs.choose(requested)?)),
            None => Ok(None),
        }
    }

    /// Step 4: whether `DEVICE_SCOPES` lets the caller have the subject on `hub` (any hub, when
    /// the token names none yet); the allowing key, or why not (for the log).
    fn scope(
        &self,
        caller: &Caller,
        hub: Option<&ChosenHub>,
        subject: &Subject,
    ) -> Result<Option<Arc<str>>, &'static str> {
        let Some(scopes) = &self.scopes else {
            return Ok(None);
        };
        scopes
            .allows(caller, hub.map(|hub| &*hub.canonical), subject.scope_id())
            .map(|key| Some(Arc::clone(key)))
            .map_err(Denial::as_str)
    }
}

/// Write the chosen hub into the log record.
fn record_hub(hub: Option<&ChosenHub>, outcome: &mut RequestOutcome) {
    if let Some(hub) = hub {
        outcome.hub = Some(Arc::clone(&hub.canonical));
        outcome.hub_form = Some(hub.form);
    }
}

/// The hub of a key whose connection string names it (no hub setting): the request's `hub` must
/// be that hub, in either form.
fn key_named_hub(key: &IssuingKey, requested: Option<&str>) -> Result<ChosenHub, ApiError> {
    let hubs = key.own_hub.as_ref().ok_or(ApiError::KeyUnavailable)?;
    Ok(hubs.choose(requested)?)
}

/// Step 6: the token for `subject`, signed with `key` for `hub`, as the 200 answer.
fn sign(
    key: &IssuingKey,
    subject: &Subject,
    hub: Option<&ChosenHub>,
    registrations: Option<&Registrations>,
    ttl: Ttl,
    scope: Option<Arc<str>>,
) -> Result<Issued, ApiError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let host = hub.map(|hub| &*hub.host);
    let token = sign_with(key, subject, host, now + u64::from(ttl.seconds()))
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
    let registration = registrations.filter(|_| !subject.names_a_hub());
    // Sized for the whole body up front: one allocation, no regrowth.
    let mut body = Vec::with_capacity(token.token.len() + 2 * 128 + 2 * 256 + 200);
    serde_json::to_writer(
        &mut body,
        &TokenResponse {
            sastoken: &token.token,
            device_id,
            module_id,
            registration_id,
            host_name: host,
            id_scope: registration.map(|r| r.id_scope.as_str()),
            provisioning_host: registration.map(|r| &*r.provisioning_host),
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

/// The token for `subject` on the hub host name `host`, if `key`'s mode signs that kind of token.
fn sign_with(
    key: &IssuingKey,
    subject: &Subject,
    host: Option<&str>,
    expires_at: u64,
) -> Option<SasToken> {
    match (&key.signer, subject) {
        (TokenSigner::HubPolicy(signer), Subject::Device(device, _)) => {
            Some(signer.sign(host?, device, expires_at))
        }
        (TokenSigner::HubPolicy(signer), Subject::Module(device, module)) => {
            Some(signer.sign_module(host?, device, module, expires_at))
        }
        (TokenSigner::EnrollmentGroup(group), Subject::Device(_, Some(registration))) => {
            Some(group.sign_device(host?, registration, expires_at))
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
