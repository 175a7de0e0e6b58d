//! The bearer-token arrangement most tests of the token layer start from ([`Fixture`]): an
//! issuer stand-in for one Entra tenant, API Management's managed identity as the caller the
//! handler allows, and the handler's app registration (its App ID URI and client id, the two
//! audiences it accepts, and an app role it may require).

use serde_json::{Map, Value};

use super::issuer::{Caller, Issuer, Version, entra_claims};
use crate::support::settings::Settings;

/// The handler's App ID URI: what API Management asks Entra for as `resource` (v1 `aud`).
pub(crate) const AUDIENCE_URI: &str = "api://iothub-sas-handler";
/// The app role the handler may require.
pub(crate) const ROLE: &str = "SasToken.Issue";

/// One issuer, API Management's identity, and the handler app's client id.
pub(crate) struct Fixture {
    pub(crate) issuer: Issuer,
    /// The caller the handler allows (by `oid` unless a test says otherwise).
    pub(crate) apim: Caller,
    /// The handler app's client id: the `aud` of v2 tokens, the second accepted audience.
    pub(crate) audience_id: String,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture {
            issuer: Issuer::start(),
            apim: Caller::random(),
            audience_id: Caller::random().client_id,
        }
    }

    /// `AUTH_AUDIENCE`: the App ID URI and the client id.
    pub(crate) fn audiences(&self) -> String {
        format!("{AUDIENCE_URI},{}", self.audience_id)
    }

    /// The base settings with the issuer's, `AUTH_AUDIENCE` = both audiences and
    /// `AUTH_ALLOWED_CALLERS` = API Management's `oid`.
    pub(crate) fn settings(&self) -> Settings {
        Settings::base()
            .set_all(self.issuer.settings().iter())
            .set("AUTH_AUDIENCE", self.audiences())
            .set("AUTH_ALLOWED_CALLERS", &self.apim.oid)
    }

    /// Entra's claims for `caller`, audience as Entra sets it for `version` (v1: the App ID URI
    /// API Management asked for; v2: the client id).
    pub(crate) fn claims_for(&self, version: Version, caller: &Caller) -> Map<String, Value> {
        let audience = match version {
            Version::V1 => AUDIENCE_URI,
            Version::V2 => &self.audience_id,
        };
        entra_claims(version, self.issuer.tenant(), audience, caller)
    }

    /// API Management's claims for `version`.
    pub(crate) fn claims(&self, version: Version) -> Map<String, Value> {
        self.claims_for(version, &self.apim)
    }

    /// A valid token from API Management.
    pub(crate) fn token(&self, version: Version) -> String {
        self.issuer.sign(&self.claims(version))
    }
}

/// `claims` with `name` set to `value`. `Value::Null` stays in: the issuer then deletes the
/// claim, including a default of its own (`exp`, `iss`, `iat`, `nbf`).
pub(crate) fn with_claim(
    mut claims: Map<String, Value>,
    name: &str,
    value: Value,
) -> Map<String, Value> {
    claims.insert(name.to_owned(), value);
    claims
}
