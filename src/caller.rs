//! Who is calling: the caller layers, in order, and the typed [`Caller`] they produce.
//!
//! **What it owns.** The IP layer's settings (`ALLOWED_IPS` — the seed's `allowedip` — and
//! `XFF_DEPTH`), [`CallerSettings`] (those and the certificate and bearer layers' own settings),
//! and [`Callers::identify`], which asks the layers in order:
//! 1. the caller's address ([`client_ip`], `XFF_DEPTH` from the right) against the allow list
//!    ([`allow_list`]) — 403;
//! 2. when `CLIENT_CERT_THUMBPRINTS` is set, the forwarded client certificate
//!    ([`client_cert`](crate::auth::client_cert)) — 403;
//! 3. when `AUTH_TENANT_ID` is set, the bearer token ([`bearer`](crate::auth::bearer)) — 401, 403
//!    or 503;
//! 4. the gateway layer ([`gateway`](crate::auth::gateway)): for a caller whose token names a
//!    gateway in `GATEWAY_CALLERS`, the one caller it forwards; from anyone else, `X-Caller-*`
//!    headers are refused — 403 (503 if a forwarded token's keys are unavailable).
//!
//! The answer is a [`Caller`] (its address, the certificate and principal the layers that are on
//! accepted, and for a gateway the caller it speaks for) or the error to answer with; either way,
//! [`CallerFacts`] say what each layer decided, for the request's log line. Every 403 is the same
//! answer, so a caller cannot tell which layer refused it.
//!
//! **What it trusts.** The TCP peer address (from the socket) and the settings; everything in the
//! request is the caller's and only reaches the layers' parsers.
//!
//! [`client_ip`]: crate::client_ip
//! [`allow_list`]: crate::allow_list

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;

use crate::allow_list::AllowList;
use crate::auth::bearer::{BearerAuth, BearerRejection, BearerSettings, Principal};
use crate::auth::client_cert::{CertificateThumbprints, Thumbprints};
use crate::auth::gateway::{Forwarded, GatewayRefusal, GatewaySettings, Gateways};
use crate::auth::jwks::Jwks;
use crate::client_ip::{CallerIpError, XffDepth, caller_ip};
use crate::error::ApiError;
use crate::request_record::CallerFacts;
use crate::settings::{Lookup, Name, SettingError};

/// `ALLOWED_IPS`, the seed's `allowedip`.
pub const ALLOWED_IPS: Name = Name::with_seed("ALLOWED_IPS", "allowedip");

/// The caller layers' settings.
#[derive(Debug)]
pub struct CallerSettings {
    /// `ALLOWED_IPS`: who may ask for tokens.
    pub allow_list: AllowList,
    /// `XFF_DEPTH`: which `X-Forwarded-For` entry from the right is the caller.
    pub xff_depth: XffDepth,
    /// `CLIENT_CERT_THUMBPRINTS`: the client-certificate layer, when set.
    pub client_cert: Option<Thumbprints>,
    /// `AUTH_*`: the bearer-token layer, when `AUTH_TENANT_ID` is set.
    pub bearer: Option<BearerSettings>,
    /// `GATEWAY_CALLERS` and `AUTH_CALLER_AUDIENCE`: the gateways, when set.
    pub gateways: Option<GatewaySettings>,
}

impl CallerSettings {
    /// The IP layer (always on), then the optional certificate and bearer layers.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Self, SettingError> {
        let (setting, text) = settings.required(&ALLOWED_IPS)?;
        let allow_list =
            AllowList::parse(&text).map_err(|e| SettingError::new(setting, e.to_string()))?;
        // On Azure every request reaches the handler with `X-Forwarded-For`, so the caller is never
        // loopback: a loopback entry there can only be the local example copied across.
        if settings.is_set("WEBSITE_SITE_NAME")
            && let Some(entry) = allow_list.loopback_entries().first()
        {
            return Err(SettingError::new(
                setting,
                format!(
                    "`{entry}` is a loopback address, but on Azure (WEBSITE_SITE_NAME is set) every caller arrives through X-Forwarded-For and is never loopback: remove it"
                ),
            ));
        }
        let xff_depth = match settings.get("XFF_DEPTH") {
            None => XffDepth::default(),
            Some(text) => text
                .parse::<u8>()
                .ok()
                .and_then(XffDepth::new)
                .ok_or_else(|| {
                    SettingError::new(
                        "XFF_DEPTH",
                        format!("must be a whole number from 1 to {}", XffDepth::MAX),
                    )
                })?,
        };
        let bearer = BearerSettings::from_lookup(settings)?;
        Ok(Self {
            allow_list,
            xff_depth,
            client_cert: Thumbprints::from_lookup(settings)?,
            gateways: GatewaySettings::from_lookup(settings, bearer.as_ref())?,
            bearer,
        })
    }

    /// Whether a layer that tells callers apart (certificate or bearer token) is on.
    pub fn identifies_callers(&self) -> bool {
        self.client_cert.is_some() || self.bearer.is_some()
    }
}

/// A caller every layer that is on let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The address the allow list admitted.
    pub ip: IpAddr,
    /// The client certificate the certificate layer accepted, when it is on.
    pub certificate: Option<CertificateThumbprints>,
    /// Who the bearer token says the caller is, when that layer is on. For a gateway: the
    /// gateway.
    pub principal: Option<Principal>,
    /// For a gateway (`GATEWAY_CALLERS`): the one caller it speaks for. Only this counts for
    /// scoping then; the gateway's own certificate and principal name no devices.
    pub forwarded: Option<Forwarded>,
}

/// What [`Callers::identify`] found.
#[derive(Debug)]
pub struct Identified {
    /// The caller, or the error to answer with.
    pub caller: Result<Caller, ApiError>,
    /// What each layer decided, for the log line.
    pub facts: CallerFacts,
}

/// The caller layers, prepared once.
#[derive(Debug)]
pub struct Callers {
    allow_list: AllowList,
    xff_depth: XffDepth,
    client_cert: Option<Thumbprints>,
    bearer: Option<BearerAuth>,
    gateways: Gateways,
}

impl Callers {
    /// Prepare the layers. Fails only if the bearer layer's https client cannot be built.
    pub fn new(settings: CallerSettings) -> Result<Self, reqwest::Error> {
        let bearer = settings.bearer.as_ref().map(BearerAuth::new).transpose()?;
        let gateways = Gateways::new(
            settings.gateways.as_ref(),
            bearer.as_ref().map(BearerAuth::validator),
        );
        Ok(Self {
            allow_list: settings.allow_list,
            xff_depth: settings.xff_depth,
            client_cert: settings.client_cert,
            bearer,
            gateways,
        })
    }

    /// The bearer layer's key cache, when the layer is on: someone must keep it fresh.
    pub fn token_signing_keys(&self) -> Option<&Jwks> {
        self.bearer.as_ref().map(BearerAuth::jwks)
    }

    /// Ask the layers in order who is calling.
    pub async fn identify(&self, request: &Parts) -> Identified {
        let mut facts = CallerFacts::default();
        let caller = self.check(request, &mut facts).await;
        Identified { caller, facts }
    }

    async fn check(&self, request: &Parts, facts: &mut CallerFacts) -> Result<Caller, ApiError> {
        let peer = request
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .ok_or(ApiError::CallerNotAllowed)?;
        let xff = request.headers.get_all("x-forwarded-for");
        let ip = caller_ip(&xff, self.xff_depth, peer).map_err(|e| {
            facts.denied = Some(match e {
                CallerIpError::TooFewEntries { .. } => "x-forwarded-for has too few entries",
                CallerIpError::Unparsable => "x-forwarded-for entry is not an address",
            });
            ApiError::CallerNotAllowed
        })?;
        facts.ip = Some(ip);
        if !self.allow_list.contains(ip) {
            facts.denied = Some("caller not in ALLOWED_IPS");
            return Err(ApiError::CallerNotAllowed);
        }

        let certificate = match &self.client_cert {
            None => None,
            Some(pins) => {
                let verdict = pins.check(
                    request.headers.get_all("x-arr-clientcert"),
                    SystemTime::now(),
                );
                facts.client_cert = Some(verdict.map_or_else(|r| r.as_str(), |_| "ok"));
                Some(verdict.map_err(|_| ApiError::CallerNotAllowed)?)
            }
        };

        let principal = match &self.bearer {
            None => None,
            Some(bearer) => match bearer.authenticate(&request.headers).await {
                Ok(principal) => {
                    facts.auth = Some("ok");
                    facts.caller_oid = principal.log_id().map(str::to_owned);
                    Some(principal)
                }
                Err(refusal) => {
                    facts.auth = Some(refusal.reason.as_str());
                    facts.caller_oid = refusal.caller;
                    return Err(match refusal.reason {
                        BearerRejection::Missing => ApiError::MissingToken,
                        BearerRejection::Invalid => ApiError::InvalidToken,
                        BearerRejection::CallerNotAllowed | BearerRejection::RoleMissing => {
                            ApiError::CallerNotAllowed
                        }
                        BearerRejection::KeysUnavailable => ApiError::AuthKeysUnavailable,
                    });
                }
            },
        };

        let forwarded = match self
            .gateways
            .speak_for(principal.as_ref(), &request.headers)
            .await
        {
            Ok(None) => None,
            Ok(Some(forwarded)) => {
                facts.forwarded = Some("ok");
                facts.forwarded_kind = Some(forwarded.caller.kind().as_str());
                facts.forwarded_caller = forwarded.caller.log_id();
                Some(forwarded)
            }
            Err(refusal) => {
                facts.forwarded = Some(refusal.reason.as_str());
                facts.forwarded_kind = refusal.forwarded.as_ref().map(|c| c.kind().as_str());
                facts.forwarded_caller = refusal.forwarded.as_ref().and_then(|c| c.log_id());
                return Err(match refusal.reason {
                    GatewayRefusal::KeysUnavailable => ApiError::AuthKeysUnavailable,
                    _ => ApiError::CallerNotAllowed,
                });
            }
        };

        Ok(Caller {
            ip,
            certificate,
            principal,
            forwarded,
        })
    }
}
