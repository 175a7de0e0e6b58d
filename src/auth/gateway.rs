//! The gateway layer: callers behind API Management, as the gateway says who they are.
//!
//! Behind API Management the handler sees one caller, the gateway: its managed identity's token
//! replaces the caller's `Authorization`, and its TLS connection the caller's certificate
//! (docs/azure-behaviour.md §4, §15). A gateway listed in `GATEWAY_CALLERS` therefore forwards
//! **one** fact about the caller it speaks for, of the one kind the setting names for it:
//! - `subscription`: `X-Caller-Subscription`, the API Management subscription's id, escaped
//!   with `Uri.EscapeDataString` (only unreserved characters and `%XX` on the wire:
//!   [`SubscriptionId::from_escaped`]);
//! - `certificate`: `X-Caller-Certificate-Thumbprint`, the SHA-256 thumbprint (64 hex digits)
//!   of the client certificate the gateway validated;
//! - `entra`: `X-Caller-Authorization: Bearer <the caller's own Entra ID token>`, which the
//!   handler validates again with the bearer layer's checks and keys, for the audience
//!   `AUTH_CALLER_AUDIENCE` ([`TokenValidator::for_audiences`]).
//!
//! One fact, never a union: a subscription key is a static shared secret, so "key A and token B"
//! must not get A's devices and B's. On a gateway request the forwarded caller is the caller
//! `scope` decides for; the gateway's own identity names no devices.
//!
//! **What it owns.** `GATEWAY_CALLERS` and `AUTH_CALLER_AUDIENCE` ([`GatewaySettings`]), the
//! `X-Caller-*` headers, and [`Gateways::speak_for`], which turns them into the [`Forwarded`]
//! caller a [`Caller`](crate::caller::Caller) carries.
//!
//! **What it trusts.** The bearer layer's verdict on the gateway's own token: a gateway is a
//! caller whose valid, allowed token has an `oid` (never `appid` or `azp`, which any app's
//! token may carry for a client id) in `GATEWAY_CALLERS`, and its token must be app-only
//! whatever `AUTH_ALLOW_DELEGATED` says. It trusts the gateway to have deleted every `X-Caller-*`
//! header the client sent before setting its own; nothing else. What keeps a client from reaching
//! the handler without passing the gateway is in docs/security.md ("Callers behind a gateway").
//!
//! **How it fails.** Closed, with the one 403 every refused caller gets and its own reason in the
//! log ([`GatewayRefusal`]): an `X-Caller-*` header from a caller that is not a gateway, a header
//! of another kind than the gateway's, a value given twice (two lines; behind the Functions host
//! two lines arrive as one joined with a comma, and no escaped id, hex thumbprint or JWT holds a
//! comma — docs/azure-behaviour.md §15), a malformed value, a forwarded token that fails
//! validation or is a gateway's own, a gateway request with no fact of its kind. The forwarded
//! token is never logged; its caller's object id is.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use serde::de::{Deserializer, MapAccess, Visitor};

use crate::auth::bearer::{
    BearerRejection, BearerSettings, Principal, TokenValidator, bearer_token, is_guid,
};
use crate::settings::{Lookup, SettingError};

/// The setting naming the gateways.
pub const GATEWAY_CALLERS: &str = "GATEWAY_CALLERS";
/// The audience forwarded caller tokens must carry.
pub const AUTH_CALLER_AUDIENCE: &str = "AUTH_CALLER_AUDIENCE";

/// Every header of this layer starts with this (header names are lower case in `http`).
const HEADER_PREFIX: &str = "x-caller-";
/// A `subscription` gateway's header.
pub const SUBSCRIPTION_HEADER: &str = "x-caller-subscription";
/// A `certificate` gateway's header.
pub const CERTIFICATE_HEADER: &str = "x-caller-certificate-thumbprint";
/// An `entra` gateway's header.
pub const AUTHORIZATION_HEADER: &str = "x-caller-authorization";

/// The longest subscription id API Management accepts, in characters
/// (docs/azure-behaviour.md §15).
pub const MAX_SUBSCRIPTION_ID_CHARS: usize = 256;

/// The one kind of caller fact a gateway forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GatewayKind {
    /// The API Management subscription's id.
    Subscription,
    /// The SHA-256 thumbprint of the client certificate the gateway validated.
    Certificate,
    /// The caller's own Entra ID token.
    Entra,
}

impl GatewayKind {
    /// The setting's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Certificate => "certificate",
            Self::Entra => "entra",
        }
    }

    /// The header this kind of gateway sets (lower case).
    pub fn header(self) -> &'static str {
        match self {
            Self::Subscription => SUBSCRIPTION_HEADER,
            Self::Certificate => CERTIFICATE_HEADER,
            Self::Entra => AUTHORIZATION_HEADER,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Subscription, Self::Certificate, Self::Entra]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// `GATEWAY_CALLERS` and `AUTH_CALLER_AUDIENCE`, checked against the bearer layer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Each gateway's object id (lower case) and the kind it forwards, sorted.
    pub gateways: BTreeMap<String, GatewayKind>,
    /// `AUTH_CALLER_AUDIENCE`: the `aud` values a forwarded caller token may carry; empty
    /// unless a gateway forwards Entra ID tokens.
    pub caller_audiences: Vec<String>,
}

/// Why `GATEWAY_CALLERS` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Not a JSON object of strings, or a key given twice.
    #[error(
        "must be a JSON object from gateway object ids to \"subscription\", \"certificate\" or \"entra\": {0}"
    )]
    NotJson(String),
    /// `{}`.
    #[error("names no gateway (leave it unset for none)")]
    Empty,
    /// A key that is not a GUID.
    #[error(
        "key `{0}` is not a GUID (the gateway identity's object id, as its token's `oid` carries it)"
    )]
    NotGuid(String),
    /// A value that is none of the three kinds.
    #[error("`{key}`: `{kind}` is not \"subscription\", \"certificate\" or \"entra\"")]
    UnknownKind {
        /// The key.
        key: String,
        /// The value.
        kind: String,
    },
}

impl GatewaySettings {
    /// The layer is on when `GATEWAY_CALLERS` is set. It needs the bearer layer (a gateway is
    /// known by its token) with every gateway in `AUTH_ALLOWED_CALLERS`, and `DEVICE_SCOPES`
    /// (without scoping, who is behind the gateway changes nothing). `AUTH_CALLER_AUDIENCE` is
    /// required exactly when a gateway forwards Entra ID tokens, and must share no value with
    /// `AUTH_AUDIENCE`: otherwise a token issued for the handler itself would pass as a caller's,
    /// and a caller's as one for the handler.
    pub fn from_lookup(
        settings: &Lookup<'_>,
        bearer: Option<&BearerSettings>,
    ) -> Result<Option<Self>, SettingError> {
        let caller_audiences = settings.list(AUTH_CALLER_AUDIENCE).unwrap_or_default();
        let Some(text) = settings.get(GATEWAY_CALLERS) else {
            if !caller_audiences.is_empty() {
                return Err(SettingError::new(
                    AUTH_CALLER_AUDIENCE,
                    "is set, but no gateway forwards Entra ID tokens (GATEWAY_CALLERS is unset)",
                ));
            }
            return Ok(None);
        };
        let refuse = |problem: String| SettingError::new(GATEWAY_CALLERS, problem);
        let gateways = Self::parse(&text).map_err(|e| refuse(e.to_string()))?;
        let Some(bearer) = bearer else {
            return Err(refuse(
                "needs the bearer-token layer (AUTH_TENANT_ID): a gateway is known by its token's `oid`".to_owned(),
            ));
        };
        if !settings.is_set("DEVICE_SCOPES") {
            return Err(refuse(
                "needs DEVICE_SCOPES: without per-caller scoping, who is behind a gateway changes nothing".to_owned(),
            ));
        }
        if let Some(oid) = gateways.keys().find(|oid| {
            !bearer
                .allowed_callers
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(oid))
        }) {
            return Err(refuse(format!(
                "gateway `{oid}` is not in AUTH_ALLOWED_CALLERS, so the bearer layer would refuse its token"
            )));
        }
        let forwards_entra = gateways.values().any(|kind| *kind == GatewayKind::Entra);
        let refuse_audience = |problem: String| SettingError::new(AUTH_CALLER_AUDIENCE, problem);
        if forwards_entra && caller_audiences.is_empty() {
            return Err(refuse_audience(
                "is required when a gateway in GATEWAY_CALLERS forwards Entra ID tokens (\"entra\"): the audience of the callers' own tokens".to_owned(),
            ));
        }
        if !forwards_entra && !caller_audiences.is_empty() {
            return Err(refuse_audience(
                "is set, but no gateway in GATEWAY_CALLERS forwards Entra ID tokens (\"entra\")"
                    .to_owned(),
            ));
        }
        if let Some(shared) = caller_audiences.iter().find(|audience| {
            bearer
                .audiences
                .iter()
                .any(|own| own.eq_ignore_ascii_case(audience))
        }) {
            return Err(refuse_audience(format!(
                "`{shared}` is also in AUTH_AUDIENCE: forwarded callers' tokens must be for another app registration than the handler's own, or a token for the handler would pass as a caller's"
            )));
        }
        Ok(Some(Self {
            gateways,
            caller_audiences,
        }))
    }

    /// Parse the JSON text: object ids in any letter case (kept in lower case), each once.
    pub fn parse(text: &str) -> Result<BTreeMap<String, GatewayKind>, GatewayError> {
        let entries = serde_json::Deserializer::from_str(text)
            .deserialize_map(EntriesVisitor)
            .and_then(|entries| {
                serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| entries)
            })
            .map_err(|e| GatewayError::NotJson(e.to_string()))?;
        let mut gateways = BTreeMap::new();
        for (key, kind) in entries {
            let oid = key.trim().to_ascii_lowercase();
            if !is_guid(&oid) {
                return Err(GatewayError::NotGuid(key));
            }
            let Some(kind) = GatewayKind::parse(kind.trim()) else {
                return Err(GatewayError::UnknownKind { key, kind });
            };
            if gateways.insert(oid, kind).is_some() {
                return Err(GatewayError::NotJson(format!(
                    "key `{key}` names a gateway that another key already names"
                )));
            }
        }
        if gateways.is_empty() {
            return Err(GatewayError::Empty);
        }
        Ok(gateways)
    }

    /// The gateways (object ids, lower case) forwarding `kind`, sorted.
    pub fn forwarding(&self, kind: GatewayKind) -> impl Iterator<Item = &str> {
        self.gateways
            .iter()
            .filter(move |(_, k)| **k == kind)
            .map(|(oid, _)| oid.as_str())
    }
}

/// The object's entries in order; a key given twice is an error (`serde_json` would keep the
/// last one silently).
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object whose values are strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, String)> = Vec::new();
        while let Some((key, kind)) = map.next_entry::<String, String>()? {
            if entries.iter().any(|(seen, _)| *seen == key) {
                return Err(serde::de::Error::custom(format!(
                    "key `{key}` appears twice"
                )));
            }
            entries.push((key, kind));
        }
        Ok(entries)
    }
}

/// An API Management subscription id: 1 to 256 characters, none of them a control character or
/// one of `* # & + : < > ?` (docs/azure-behaviour.md §15). Compared without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionId {
    /// As the gateway sent it (unescaped), for the log.
    id: String,
    /// Lower case (Unicode), for matching.
    folded: String,
}

impl SubscriptionId {
    /// An id as written (a `DEVICE_SCOPES` key's, unescaped).
    pub fn parse(id: &str) -> Option<Self> {
        let valid = !id.is_empty()
            && id.chars().count() <= MAX_SUBSCRIPTION_ID_CHARS
            && !id.chars().any(|c| c.is_control() || "*#&+:<>?".contains(c));
        valid.then(|| Self {
            id: id.to_owned(),
            folded: id.to_lowercase(),
        })
    }

    /// An id as `Uri.EscapeDataString` writes it: unreserved characters (`A-Z a-z 0-9 - . _ ~`)
    /// as they are, every other byte of its UTF-8 as `%XX`. Depending on the .NET runtime it
    /// keeps RFC 2396's unreserved "marks" `! * ' ( )` as they are too (RFC 3986 escapes them), so
    /// those are read either way; anything else on the wire — a space, a comma, `/`, a `%`
    /// without two hex digits — was not written by that function, and is refused.
    pub fn from_escaped(escaped: &[u8]) -> Option<Self> {
        let mut bytes = Vec::with_capacity(escaped.len());
        let mut rest = escaped;
        while let Some((&first, tail)) = rest.split_first() {
            match first {
                b'%' => {
                    let [high, low, tail @ ..] = tail else {
                        return None;
                    };
                    bytes.push(hex_value(*high)? << 4 | hex_value(*low)?);
                    rest = tail;
                }
                b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'*'
                | b'\''
                | b'('
                | b')' => {
                    bytes.push(first);
                    rest = tail;
                }
                _ => return None,
            }
        }
        Self::parse(std::str::from_utf8(&bytes).ok()?)
    }

    /// The id as the gateway sent it.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The id in lower case: what rules are matched by.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A SHA-256 thumbprint as 64 hex digits, any case, nothing else.
pub fn parse_sha256(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

/// The caller a gateway speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedCaller {
    /// An API Management subscription.
    Subscription(SubscriptionId),
    /// A client certificate, by its SHA-256 thumbprint.
    Certificate([u8; 32]),
    /// The caller's own Entra ID token, validated: who it says the caller is.
    Entra(Principal),
}

impl ForwardedCaller {
    /// The kind of fact this is.
    pub fn kind(&self) -> GatewayKind {
        match self {
            Self::Subscription(_) => GatewayKind::Subscription,
            Self::Certificate(_) => GatewayKind::Certificate,
            Self::Entra(_) => GatewayKind::Entra,
        }
    }

    /// What the log line records: the subscription id, the thumbprint (lower-case hex), or the
    /// token's object id (else its client id). Never the token.
    pub fn log_id(&self) -> Option<String> {
        match self {
            Self::Subscription(id) => Some(id.as_str().to_owned()),
            Self::Certificate(sha256) => Some(sha256.iter().map(|b| format!("{b:02x}")).collect()),
            Self::Entra(principal) => principal.log_id().map(str::to_owned),
        }
    }
}

/// A gateway's request: which gateway, and the one caller it speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The gateway's object id, lower case (as in `GATEWAY_CALLERS`).
    pub gateway: Arc<str>,
    /// The caller behind it.
    pub caller: ForwardedCaller,
}

/// Why a request was refused by this layer; the log says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayRefusal {
    /// `X-Caller-*` from a caller that is not a gateway.
    NotAGateway,
    /// A gateway's token that is not app-only (`scp`, or `idtyp` other than `app`).
    NotAppOnly,
    /// An `X-Caller-*` header of another kind than the gateway's.
    OtherKind,
    /// A gateway request without the fact of its kind.
    Missing,
    /// The fact given twice: two header lines, or one with a comma (two lines joined).
    Repeated,
    /// A value the gateway cannot have written.
    Malformed,
    /// A forwarded token that fails validation.
    InvalidToken,
    /// A forwarded token of a gateway identity itself.
    GatewayToken,
    /// No token signing keys at all (503, as for the bearer layer).
    KeysUnavailable,
}

impl GatewayRefusal {
    /// The value of the log line's `forwarded` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAGateway => "not_a_gateway",
            Self::NotAppOnly => "gateway_token_not_app_only",
            Self::OtherKind => "other_kind",
            Self::Missing => "missing",
            Self::Repeated => "repeated",
            Self::Malformed => "malformed",
            Self::InvalidToken => "invalid_token",
            Self::GatewayToken => "gateway_token",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// A request this layer refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: GatewayRefusal,
    /// The forwarded caller when it was established (a gateway's own token forwarded), for
    /// the log.
    pub forwarded: Option<ForwardedCaller>,
}

impl From<GatewayRefusal> for Refusal {
    fn from(reason: GatewayRefusal) -> Self {
        Self {
            reason,
            forwarded: None,
        }
    }
}

/// The prepared layer; with no gateways it only refuses `X-Caller-*` headers.
#[derive(Debug, Default)]
pub struct Gateways {
    /// Object id (lower case) → kind.
    by_oid: HashMap<Arc<str>, GatewayKind>,
    /// The checks of a forwarded caller token, when a gateway forwards them.
    caller_tokens: Option<TokenValidator>,
}

impl Gateways {
    /// The layer for `settings` (none: no gateways). `bearer` is the bearer layer's token
    /// validator, which `GatewaySettings::from_lookup` made sure is there when gateways are.
    pub fn new(settings: Option<&GatewaySettings>, bearer: Option<&TokenValidator>) -> Self {
        let Some(settings) = settings else {
            return Self::default();
        };
        let forwards_entra = settings.forwarding(GatewayKind::Entra).next().is_some();
        Self {
            by_oid: settings
                .gateways
                .iter()
                .map(|(oid, kind)| (Arc::from(oid.as_str()), *kind))
                .collect(),
            caller_tokens: bearer
                .filter(|_| forwards_entra)
                .map(|validator| validator.for_audiences(&settings.caller_audiences)),
        }
    }

    /// Who the request speaks for: `Ok(None)` for a caller that is not a gateway and sent no
    /// `X-Caller-*` header; `Ok(Some(_))` for a gateway and the one caller of its kind it
    /// forwards; else why not. `principal` is what the bearer layer accepted, if it is on.
    pub async fn speak_for(
        &self,
        principal: Option<&Principal>,
        headers: &HeaderMap,
    ) -> Result<Option<Forwarded>, Refusal> {
        let gateway = principal.and_then(|principal| {
            let oid = principal.object_id.as_deref()?;
            self.gateway(oid)
                .map(|gateway| (gateway, principal.app_only))
        });
        let Some(((gateway, kind), app_only)) = gateway else {
            return match headers
                .keys()
                .any(|name| name.as_str().starts_with(HEADER_PREFIX))
            {
                true => Err(GatewayRefusal::NotAGateway.into()),
                false => Ok(None),
            };
        };
        if !app_only {
            return Err(GatewayRefusal::NotAppOnly.into());
        }
        if headers
            .keys()
            .any(|name| name.as_str().starts_with(HEADER_PREFIX) && name.as_str() != kind.header())
        {
            return Err(GatewayRefusal::OtherKind.into());
        }
        let mut lines = headers.get_all(kind.header()).iter();
        let line = lines.next().ok_or(GatewayRefusal::Missing)?;
        // Two lines here, or — behind the Functions host — two lines joined into one with a
        // comma: none of the three values can hold a comma of its own.
        if lines.next().is_some() || line.as_bytes().contains(&b',') {
            return Err(GatewayRefusal::Repeated.into());
        }
        let caller = match kind {
            GatewayKind::Subscription => ForwardedCaller::Subscription(
                SubscriptionId::from_escaped(line.as_bytes()).ok_or(GatewayRefusal::Malformed)?,
            ),
            GatewayKind::Certificate => ForwardedCaller::Certificate(
                parse_sha256(line.as_bytes()).ok_or(GatewayRefusal::Malformed)?,
            ),
            GatewayKind::Entra => ForwardedCaller::Entra(self.caller_token(line).await?),
        };
        Ok(Some(Forwarded {
            gateway: Arc::clone(gateway),
            caller,
        }))
    }

    /// The gateway whose object id is `oid` (any letter case), without allocating.
    fn gateway(&self, oid: &str) -> Option<(&Arc<str>, GatewayKind)> {
        let mut lower = [0u8; 36];
        if oid.len() != lower.len() {
            return None;
        }
        lower.copy_from_slice(oid.as_bytes());
        lower.make_ascii_lowercase();
        let oid = std::str::from_utf8(&lower).ok()?;
        self.by_oid
            .get_key_value(oid)
            .map(|(gateway, kind)| (gateway, *kind))
    }

    /// The forwarded token's caller: valid for `AUTH_CALLER_AUDIENCE`, and not a gateway.
    async fn caller_token(&self, line: &HeaderValue) -> Result<Principal, Refusal> {
        let validator = self
            .caller_tokens
            .as_ref()
            .ok_or(GatewayRefusal::Malformed)?;
        let token = bearer_token([line]).map_err(|_| GatewayRefusal::Malformed)?;
        let principal = validator
            .validate(token)
            .await
            .map_err(|rejection| match rejection {
                BearerRejection::KeysUnavailable => GatewayRefusal::KeysUnavailable,
                _ => GatewayRefusal::InvalidToken,
            })?;
        if principal.ids().any(|id| self.gateway(id).is_some()) {
            return Err(Refusal {
                reason: GatewayRefusal::GatewayToken,
                forwarded: Some(ForwardedCaller::Entra(principal)),
            });
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    const OTHER: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn gateways(kind: GatewayKind) -> Gateways {
        let settings = GatewaySettings {
            gateways: BTreeMap::from([(GATEWAY.to_owned(), kind)]),
            caller_audiences: Vec::new(),
        };
        Gateways::new(Some(&settings), None)
    }

    fn principal(oid: &str, app_only: bool) -> Principal {
        Principal {
            app_only,
            object_id: Some(oid.to_owned()),
            ..Principal::default()
        }
    }

    fn speak(
        gateways: &Gateways,
        principal: Option<&Principal>,
        pairs: &[(&'static str, &'static str)],
    ) -> Result<Option<Forwarded>, GatewayRefusal> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime
            .block_on(gateways.speak_for(principal, &headers(pairs)))
            .map_err(|refusal| refusal.reason)
    }

    #[test]
    fn escaped_subscription_ids_are_unescaped_and_folded() {
        let id = SubscriptionId::from_escaped(b"Fleet%20A%2C%C3%A9-1.x_~").expect("valid");
        assert_eq!(id.as_str(), "Fleet A,é-1.x_~");
        assert_eq!(id.folded(), "fleet a,é-1.x_~");
        assert_eq!(
            SubscriptionId::from_escaped(b"a!'(b)").map(|id| id.id),
            Some("a!'(b)".to_owned()),
            "RFC 2396's marks, as older .NET runtimes leave them"
        );
        assert_eq!(
            SubscriptionId::from_escaped(b"a%21%27%28b%29").map(|id| id.id),
            Some("a!'(b)".to_owned()),
            "the same marks as RFC 3986 escapes them"
        );
        for bad in [
            &b""[..],
            b"a b",
            b"a,b",
            b"a/b",
            b"%zz",
            b"%4",
            b"%FF",
            b"a%3Ab",
            b"a%2Ab",
            b"a*b",
            b"%0A",
        ] {
            assert_eq!(
                SubscriptionId::from_escaped(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(SubscriptionId::parse(&"x".repeat(256)).is_some());
        assert!(SubscriptionId::parse(&"x".repeat(257)).is_none());
    }

    #[test]
    fn thumbprints_are_exactly_64_hex_digits() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        assert_eq!(parse_sha256(hex.as_bytes()).map(|t| t[31]), Some(0xff));
        for bad in [
            &hex[..62],
            "zz",
            &format!("{hex}00"),
            &format!(" {}", &hex[1..]),
        ] {
            assert_eq!(parse_sha256(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn only_a_gateway_speaks_and_only_in_its_own_kind_once() {
        use GatewayRefusal::*;
        let by_subscription = gateways(GatewayKind::Subscription);
        let gateway = principal(&GATEWAY.to_ascii_uppercase(), true);
        let stranger = principal(OTHER, true);
        let ok = speak(
            &by_subscription,
            Some(&gateway),
            &[("x-caller-subscription", "Fleet%2DA")],
        )
        .expect("a gateway's fact")
        .expect("forwarded");
        assert_eq!(&*ok.gateway, GATEWAY);
        assert_eq!(
            ok.caller,
            ForwardedCaller::Subscription(SubscriptionId::parse("Fleet-A").expect("valid"))
        );
        type Headers = &'static [(&'static str, &'static str)];
        let cases: [(Option<&Principal>, Headers, _); 9] = [
            (Some(&stranger), &[], Ok(())),
            (None, &[], Ok(())),
            (
                Some(&stranger),
                &[("x-caller-subscription", "a")],
                Err(NotAGateway),
            ),
            (None, &[("x-caller-anything", "a")], Err(NotAGateway)),
            (
                Some(&principal(GATEWAY, false)),
                &[("x-caller-subscription", "a")],
                Err(NotAppOnly),
            ),
            (
                Some(&gateway),
                &[
                    ("x-caller-subscription", "a"),
                    ("x-caller-authorization", "Bearer x"),
                ],
                Err(OtherKind),
            ),
            (Some(&gateway), &[], Err(Missing)),
            (
                Some(&gateway),
                &[
                    ("x-caller-subscription", "a"),
                    ("x-caller-subscription", "b"),
                ],
                Err(Repeated),
            ),
            (
                Some(&gateway),
                &[("x-caller-subscription", "a, b")],
                Err(Repeated),
            ),
        ];
        for (who, pairs, want) in cases {
            let got = speak(&by_subscription, who, pairs).map(|forwarded| {
                assert!(forwarded.is_none(), "{pairs:?}");
            });
            assert_eq!(got, want, "{who:?} {pairs:?}");
        }
        assert_eq!(
            speak(
                &by_subscription,
                Some(&gateway),
                &[("x-caller-subscription", "a b")]
            ),
            Err(Malformed)
        );
        let by_certificate = gateways(GatewayKind::Certificate);
        assert_eq!(
            speak(
                &by_certificate,
                Some(&gateway),
                &[("x-caller-certificate-thumbprint", "ab12")]
            ),
            Err(Malformed)
        );
    }

    #[test]
    fn the_setting_names_gateways_by_guid_once_with_a_known_kind() {
        let parsed = GatewaySettings::parse(&format!(
            r#"{{"{}": "entra", "{OTHER}": "subscription"}}"#,
            GATEWAY.to_ascii_uppercase()
        ))
        .expect("valid");
        assert_eq!(parsed.get(GATEWAY), Some(&GatewayKind::Entra));
        for (text, want) in [
            ("[]", "must be a JSON object"),
            (r#"{"a": 1}"#, "must be a JSON object"),
            ("{}", "names no gateway"),
            (r#"{"apim": "entra"}"#, "is not a GUID"),
            (
                &format!(r#"{{"{GATEWAY}": "key"}}"#),
                "is not \"subscription\"",
            ),
            (
                &format!(r#"{{"{GATEWAY}": "entra", "{GATEWAY}": "entra"}}"#),
                "appears twice",
            ),
            (
                &format!(
                    r#"{{"{GATEWAY}": "entra", "{}": "entra"}}"#,
                    GATEWAY.to_ascii_uppercase()
                ),
                "already names",
            ),
        ] {
            let error = GatewaySettings::parse(text).expect_err(text).to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
