//! The bearer-token layer: an Entra ID access token from an allowed caller (API Management's
//! managed identity), checked in the handler even when App Service Authentication is off.
//!
//! **What it owns.** Its settings ([`BearerSettings`], the `AUTH_*` app settings) and the
//! validation policy: RS256 only; signature against the issuer's key named
//! by `kid` ([`Jwks`]); `iss` exactly the tenant's v1 (`https://sts.windows.net/<tenant>/`) or v2
//! (`https://login.microsoftonline.com/<tenant>/v2.0`) issuer; `aud` one of `AUTH_AUDIENCE`;
//! `exp` required, `exp`/`nbf` with 5 minutes of leeway; `aud` and `iss` each a single string (an
//! array is refused even when one element would match); an app-only token — one with a `scp`
//! claim is a user's delegated token and is refused unless `AUTH_ALLOW_DELEGATED=true`, since
//! listing an app in `AUTH_ALLOWED_CALLERS` must not let each of its signed-in users through;
//! then the caller (`oid`, or `appid`/`azp`)
//! in `AUTH_ALLOWED_CALLERS` and, if configured, the role in `roles`. A token that passes is the
//! caller's [`Principal`]: its ids and roles, for the layers after this one. The checks of the
//! token itself are a [`TokenValidator`], which the gateway layer reuses for forwarded caller
//! tokens, and which remembers the tokens that passed (by digest, while their time window holds
//! and their key is still published) so that a caller's token is not verified again on every
//! request.
//!
//! **How it fails.** No token → [`BearerRejection::Missing`] (401 `Bearer`); any invalid token →
//! [`BearerRejection::Invalid`] (401 `invalid_token`), one answer whichever check failed; a valid
//! token from the wrong caller or without the role → 403. No key set at all → 503. The token itself
//! is never logged; the caller's object id is.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::jwks::{Jwks, KeysUnavailable};
use crate::settings::{Lookup, SettingError};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(300);
/// How many verified tokens a [`TokenValidator`] remembers; when full, it forgets them all.
pub const VERIFIED_TOKENS: usize = 1024;

/// How the bearer layer is configured (`AUTH_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerSettings {
    /// `AUTH_TENANT_ID`: the Entra ID tenant (GUID).
    pub tenant_id: String,
    /// `AUTH_AUDIENCE`: accepted `aud` values.
    pub audiences: Vec<String>,
    /// `AUTH_ALLOWED_CALLERS`: accepted `oid` / `appid` / `azp` values.
    pub allowed_callers: Vec<String>,
    /// `AUTH_REQUIRED_ROLE`: a role that must be in `roles`.
    pub required_role: Option<String>,
    /// `AUTH_OPENID_CONFIG_URL`: the issuer's OpenID metadata (https).
    pub openid_config_url: String,
    /// `AUTH_JWKS_REFETCH_SECONDS`: the least time between key-set fetches for unknown `kid`s.
    pub jwks_refetch: Duration,
    /// `AUTH_ALLOW_DELEGATED`: accept a user's delegated token (one with `scp`) too.
    pub allow_delegated: bool,
}

impl BearerSettings {
    /// The layer is on when `AUTH_TENANT_ID` is set, and then it must be complete
    /// (`AUTH_AUDIENCE`, `AUTH_ALLOWED_CALLERS`); its other settings without it are refused.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Option<Self>, SettingError> {
        let Some(tenant_id) = settings.get("AUTH_TENANT_ID") else {
            for dependent in [
                "AUTH_AUDIENCE",
                "AUTH_ALLOWED_CALLERS",
                "AUTH_REQUIRED_ROLE",
                "AUTH_ALLOW_DELEGATED",
                "AUTH_OPENID_CONFIG_URL",
                "AUTH_JWKS_REFETCH_SECONDS",
            ] {
                if settings.is_set(dependent) {
                    return Err(SettingError::new(
                        "AUTH_TENANT_ID",
                        format!("is required when {dependent} is set"),
                    ));
                }
            }
            return Ok(None);
        };
        let tenant_id = tenant_id.trim().to_ascii_lowercase();
        if !is_guid(&tenant_id) {
            return Err(SettingError::new(
                "AUTH_TENANT_ID",
                "must be the tenant's id (a GUID), as it appears in the token's issuer",
            ));
        }
        let list = |setting: &'static str| -> Result<Vec<String>, SettingError> {
            match settings.list(setting) {
                Some(items) if !items.is_empty() => Ok(items),
                _ => Err(SettingError::new(
                    setting,
                    "is required when AUTH_TENANT_ID is set (a comma-separated list)",
                )),
            }
        };
        let audiences = list("AUTH_AUDIENCE")?;
        let allowed_callers = list("AUTH_ALLOWED_CALLERS")?;
        let openid_config_url = settings.get("AUTH_OPENID_CONFIG_URL").unwrap_or_else(|| {
            format!(
                "https://login.microsoftonline.com/{tenant_id}/v2.0/.well-known/openid-configuration"
            )
        });
        if !openid_config_url.starts_with("https://") || openid_config_url.len() <= "https://".len()
        {
            return Err(SettingError::new(
                "AUTH_OPENID_CONFIG_URL",
                "must be an https URL",
            ));
        }
        let jwks_refetch =
            Duration::from_secs(settings.number("AUTH_JWKS_REFETCH_SECONDS", 60, 1, 3_600)?);
        let allow_delegated = match settings
            .get("AUTH_ALLOW_DELEGATED")
            .as_deref()
            .map(str::trim)
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(SettingError::new(
                    "AUTH_ALLOW_DELEGATED",
                    "must be `true` or `false`",
                ));
            }
        };
        Ok(Some(Self {
            tenant_id,
            audiences,
            allowed_callers,
            required_role: settings
                .get("AUTH_REQUIRED_ROLE")
                .map(|r| r.trim().to_owned()),
            openid_config_url,
            jwks_refetch,
            allow_delegated,
        }))
    }
}

/// `8-4-4-4-12` hex digits.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The prepared layer: the token checks ([`TokenValidator`]) and who may call.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    validator: TokenValidator,
    allowed_callers: HashSet<String>,
    required_role: Option<String>,
}

/// The checks of a token itself, for one set of audiences: RS256 signature by the issuer's key
/// named by `kid`, `iss` the tenant's v1 or v2 issuer, `aud` one of the audiences, `exp`/`nbf`
/// with [`LEEWAY`], `aud` and `iss` each a single string, and no `scp` unless
/// `AUTH_ALLOW_DELEGATED`. The bearer layer has one for `AUTH_AUDIENCE`; the gateway layer
/// ([`gateway`](crate::auth::gateway)) gets one for `AUTH_CALLER_AUDIENCE` from it
/// ([`TokenValidator::for_audiences`]): the same tenant, keys and checks, another audience.
///
/// **Remembered verifications.** A caller sends the same token for as long as it lives (Entra ID
/// access tokens last 60–90 minutes, and API Management reuses its own until it expires), and
/// the RS256 signature check is most of what a request costs. So a token that passed every check
/// is remembered by the SHA-256 of its text, with the key that verified it, its `nbf`/`exp` and
/// its caller ([`VerifiedTokens`]); the same text again is the same token, and passes while its
/// time window (with [`LEEWAY`]) holds *and* its `kid` still names that very key in the key set
/// held now — a refresh that drops or replaces the key ends it. Only tokens that passed are ever
/// stored, at most [`VERIFIED_TOKENS`] of them.
#[derive(Debug, Clone)]
pub struct TokenValidator {
    jwks: Jwks,
    validation: Validation,
    allow_delegated: bool,
    verified: VerifiedTokens,
}

/// Tokens that passed every check, by the SHA-256 of their text; shared by a validator's clones.
#[derive(Clone, Default)]
pub struct VerifiedTokens(Arc<Mutex<HashMap<[u8; 32], Verified>>>);

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").finish_non_exhaustive()
    }
}

/// One remembered verification.
struct Verified {
    kid: String,
    key: Arc<DecodingKey>,
    not_before: Option<u64>,
    expires: u64,
    principal: Principal,
}

impl VerifiedTokens {
    /// The caller of the token whose digest is `digest`, if it was verified, its window holds
    /// at `now` and its key is still the one its `kid` names.
    fn get(&self, digest: &[u8; 32], now: u64, jwks: &Jwks) -> Option<Principal> {
        let leeway = LEEWAY.as_secs();
        // A poisoned lock only means a panic elsewhere during an insert or a clear: the map is whole.
        let entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(digest)?;
        let in_window = entry.expires >= now.saturating_sub(leeway)
            && entry
                .not_before
                .is_none_or(|nbf| nbf <= now.saturating_add(leeway));
        let same_key = jwks
            .current(&entry.kid)
            .is_some_and(|key| Arc::ptr_eq(&key, &entry.key));
        (in_window && same_key).then(|| entry.principal.clone())
    }

    fn insert(&self, digest: [u8; 32], verified: Verified) {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= VERIFIED_TOKENS {
            entries.clear();
        }
        entries.insert(digest, verified);
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerRejection {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that fails any check.
    Invalid,
    /// A valid token from a caller not in `AUTH_ALLOWED_CALLERS`.
    CallerNotAllowed,
    /// A valid token without `AUTH_REQUIRED_ROLE`.
    RoleMissing,
    /// The issuer's keys could not be loaded.
    KeysUnavailable,
}

impl BearerRejection {
    /// The value of the log line's `auth` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::CallerNotAllowed => "caller_not_allowed",
            Self::RoleMissing => "role_missing",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Who a valid token says the caller is: the identity of an allowed caller, as Entra ID wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// An application's own token: no `scp`, and `idtyp` (an optional claim) absent or `app`.
    /// Only such a token may be a gateway's (`GATEWAY_CALLERS`), whatever `AUTH_ALLOW_DELEGATED`
    /// says.
    pub app_only: bool,
    /// `oid`: the caller's object (principal) id.
    pub object_id: Option<String>,
    /// `appid` (v1 tokens): the caller's client (application) id.
    pub app_id: Option<String>,
    /// `azp` (v2 tokens): the caller's client (application) id.
    pub authorized_party: Option<String>,
    /// `roles`: the app roles assigned to the caller.
    pub roles: Vec<String>,
}

impl Principal {
    /// Every id the caller may be known by: `oid`, `appid`, `azp` (those present).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        [&self.object_id, &self.app_id, &self.authorized_party]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The id the log line records: the object id, else the client id.
    pub fn log_id(&self) -> Option<&str> {
        self.ids().next()
    }

    /// Whether `roles` holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A request the layer did not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: BearerRejection,
    /// The caller's id when the token itself was valid (the caller was then not allowed), so the
    /// log can say who was refused.
    pub caller: Option<String>,
}

/// The claims we read; everything else in the token is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    /// Read as any JSON value so that an array can be refused; `jsonwebtoken` accepts one.
    aud: serde_json::Value,
    /// As `aud`.
    iss: serde_json::Value,
    /// Present only in a user's delegated token.
    scp: Option<serde_json::Value>,
    /// `app` or `user`, when the optional claim is configured (managed identities' tokens carry it).
    idtyp: Option<serde_json::Value>,
    /// Checked by `jsonwebtoken` (required, a whole number); read to remember the verification.
    exp: u64,
    nbf: Option<u64>,
    oid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

impl From<Claims> for Principal {
    fn from(claims: Claims) -> Self {
        let app_only = claims.scp.is_none()
            && claims
                .idtyp
                .as_ref()
                .is_none_or(|idtyp| idtyp.as_str() == Some("app"));
        Self {
            app_only,
            object_id: claims.oid,
            app_id: claims.appid,
            authorized_party: claims.azp,
            roles: claims.roles,
        }
    }
}

impl BearerAuth {
    /// Prepare the layer; the key set is fetched by [`Jwks::keep_fresh`], started by the caller.
    /// Fails only if the https client cannot be built (e.g. no usable root certificates).
    pub fn new(settings: &BearerSettings) -> Result<Self, reqwest::Error> {
        let jwks = Jwks::new(settings.openid_config_url.clone(), settings.jwks_refetch)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&settings.audiences);
        validation.set_issuer(&[
            format!("https://sts.windows.net/{}/", settings.tenant_id),
            format!(
                "https://login.microsoftonline.com/{}/v2.0",
                settings.tenant_id
            ),
        ]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(Self {
            validator: TokenValidator {
                jwks,
                validation,
                allow_delegated: settings.allow_delegated,
                verified: VerifiedTokens::default(),
            },
            allowed_callers: settings.allowed_callers.iter().cloned().collect(),
            required_role: settings.required_role.clone(),
        })
    }

    /// The key cache, for the task that keeps it fresh.
    pub fn jwks(&self) -> &Jwks {
        &self.validator.jwks
    }

    /// The checks this layer makes of a token itself.
    pub fn validator(&self) -> &TokenValidator {
        &self.validator
    }

    /// Check the request's bearer token: the caller's [`Principal`] if the token is valid and the
    /// caller allowed. A refusal of a valid token still names the caller, so the log can say who
    /// was refused.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        let refused = |reason| Refusal {
            reason,
            caller: None,
        };
        let token = bearer_token(headers.get_all(header::AUTHORIZATION)).map_err(refused)?;
        let principal = self.validator.validate(token).await.map_err(refused)?;
        match self.authorize(&principal) {
            Ok(()) => Ok(principal),
            Err(reason) => Err(Refusal {
                reason,
                caller: principal.log_id().map(str::to_owned),
            }),
        }
    }

    /// Whether a valid token's caller may ask for tokens.
    fn authorize(&self, principal: &Principal) -> Result<(), BearerRejection> {
        if !principal.ids().any(|id| self.allowed_callers.contains(id)) {
            return Err(BearerRejection::CallerNotAllowed);
        }
        if let Some(role) = &self.required_role
            && !principal.has_role(role)
        {
            return Err(BearerRejection::RoleMissing);
        }
        Ok(())
    }
}

impl TokenValidator {
    /// The same checks, with the same keys, for tokens issued for `audiences` instead.
    pub fn for_audiences(&self, audiences: &[String]) -> Self {
        let mut validation = self.validation.clone();
        validation.set_audience(audiences);
        Self {
            jwks: self.jwks.clone(),
            validation,
            allow_delegated: self.allow_delegated,
            verified: VerifiedTokens::default(),
        }
    }

    /// Who `token` says its caller is, if it passes every check of the token itself.
    /// [`BearerRejection::Invalid`] whichever check failed; [`BearerRejection::KeysUnavailable`]
    /// when there are no keys at all.
    pub async fn validate(&self, token: &str) -> Result<Principal, BearerRejection> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) =
            self.verified
                .get(&digest, jsonwebtoken::get_current_timestamp(), &self.jwks)
        {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| BearerRejection::Invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(BearerRejection::Invalid);
        }
        let kid = header.kid.ok_or(BearerRejection::Invalid)?;
        let key = self
            .jwks
            .key(&kid)
            .await
            .map_err(|KeysUnavailable| BearerRejection::KeysUnavailable)?
            .ok_or(BearerRejection::Invalid)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| BearerRejection::Invalid)?;
        // `jsonwebtoken` has checked that the values are accepted ones; they must also be one.
        if !claims.aud.is_string() || !claims.iss.is_string() {
            return Err(BearerRejection::Invalid);
        }
        if claims.scp.is_some() && !self.allow_delegated {
            return Err(BearerRejection::Invalid);
        }
        let (not_before, expires) = (claims.nbf, claims.exp);
        let principal = Principal::from(claims);
        self.verified.insert(
            digest,
            Verified {
                kid,
                key,
                not_before,
                expires,
                principal: principal.clone(),
            },
        );
        Ok(principal)
    }
}

/// The token of the one `Bearer <token>` header line among `lines` (scheme case-insensitive):
/// `Authorization`, or the gateway layer's `X-Caller-Authorization`. No line, or another scheme,
/// is `Missing` (RFC 6750 §3.1: no error code); two lines or an empty token is `Invalid`.
pub fn bearer_token<'h>(
    lines: impl IntoIterator<Item = &'h HeaderValue>,
) -> Result<&'h str, BearerRejection> {
    let mut values = lines.into_iter();
    let value = values.next().ok_or(BearerRejection::Missing)?;
    if values.next().is_some() {
        return Err(BearerRejection::Invalid);
    }
    let value = value.to_str().map_err(|_| BearerRejection::Invalid)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerRejection::Missing);
    }
    match token.trim() {
        "" => Err(BearerRejection::Invalid),
        token => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> Vec<HeaderValue> {
        values
            .iter()
            .map(|value| HeaderValue::from_static(value))
            .collect()
    }

    #[test]
    fn only_one_bearer_header_carries_a_token() {
        use BearerRejection::{Invalid, Missing};
        assert_eq!(
            bearer_token(&headers(&["Bearer abc.def.ghi"])),
            Ok("abc.def.ghi")
        );
        assert_eq!(bearer_token(&headers(&["bearer  abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&[])), Err(Missing));
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwYXNz"])),
            Err(Missing)
        );
        assert_eq!(bearer_token(&headers(&["Bearer "])), Err(Invalid));
        assert_eq!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(Invalid)
        );
    }
}
