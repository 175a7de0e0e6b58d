//! The bearer-token layer: an Entra ID access token from an allowed caller (API Management's
//! managed identity), checked in the handler even when App Service Authentication is off.
//!
//! **What it owns.** The validation policy: RS256 only; signature against the issuer's key named
//! by `kid` ([`Jwks`]); `iss` exactly the tenant's v1 (`https://sts.windows.net/<tenant>/`) or v2
//! (`https://login.microsoftonline.com/<tenant>/v2.0`) issuer; `aud` one of `AUTH_AUDIENCE`;
//! `exp` required, `exp`/`nbf` with 5 minutes of leeway; then the caller (`oid`, or `appid`/`azp`)
//! in `AUTH_ALLOWED_CALLERS` and, if configured, the role in `roles`.
//!
//! **How it fails.** No token → [`BearerRejection::Missing`] (401 `Bearer`); any invalid token →
//! [`BearerRejection::Invalid`] (401 `invalid_token`), one answer whichever check failed; a valid
//! token from the wrong caller or without the role → 403. No key set at all → 503. The token itself
//! is never logged; the caller's object id is.

use std::collections::HashSet;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::auth::jwks::{Jwks, KeysUnavailable};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(300);

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
}

/// The prepared layer.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    jwks: Jwks,
    validation: Validation,
    allowed_callers: HashSet<String>,
    required_role: Option<String>,
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

/// The outcome of [`BearerAuth::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed, or why not.
    pub result: Result<(), BearerRejection>,
    /// The caller's object id (or client id), when the token was valid.
    pub caller: Option<String>,
}

/// The claims we read; everything else in the token is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    oid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

impl BearerAuth {
    /// Prepare the layer; the key set is fetched by [`Jwks::keep_fresh`], started by the caller.
    pub fn new(settings: &BearerSettings) -> Result<Self, String> {
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
            jwks,
            validation,
            allowed_callers: settings.allowed_callers.iter().cloned().collect(),
            required_role: settings.required_role.clone(),
        })
    }

    /// The key cache, for the task that keeps it fresh.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Check the request's bearer token. The verdict carries the caller's object id (or client id
    /// when the token has no `oid`) whenever the token itself was valid — also when that caller is
    /// then refused, so the log can say who was refused.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Verdict {
        match self.validate(headers).await {
            Ok(claims) => {
                let caller = claims
                    .oid
                    .clone()
                    .or_else(|| claims.appid.clone())
                    .or_else(|| claims.azp.clone());
                Verdict {
                    result: self.authorize(&claims),
                    caller,
                }
            }
            Err(rejection) => Verdict {
                result: Err(rejection),
                caller: None,
            },
        }
    }

    /// The token's claims, if it passes every check of the token itself.
    async fn validate(&self, headers: &HeaderMap) -> Result<Claims, BearerRejection> {
        let token = bearer_token(headers)?;
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
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| BearerRejection::Invalid)
    }

    /// Whether a valid token's caller may ask for tokens.
    fn authorize(&self, claims: &Claims) -> Result<(), BearerRejection> {
        let allowed = [&claims.oid, &claims.appid, &claims.azp]
            .into_iter()
            .flatten()
            .any(|id| self.allowed_callers.contains(id.as_str()));
        if !allowed {
            return Err(BearerRejection::CallerNotAllowed);
        }
        if let Some(role) = &self.required_role
            && !claims.roles.iter().any(|r| r == role)
        {
            return Err(BearerRejection::RoleMissing);
        }
        Ok(())
    }
}

/// The token of the one `Authorization: Bearer <token>` header (scheme case-insensitive).
/// No header, or another scheme, is `Missing` (RFC 6750 §3.1: no error code); two headers or an
/// empty token is `Invalid`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, BearerRejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
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
    use axum::http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_static(value));
        }
        map
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
