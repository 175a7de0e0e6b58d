//! The request record: what one request established, as plain data, for whatever writes it down.
//!
//! **What it owns.** The record's shape — [`RequestOutcome`], with the caller layers' verdicts
//! ([`CallerFacts`]), the audit facts of an issued token ([`IssuedFacts`]) and the join keys
//! ([`Correlation`]). It is built once per request: the caller layers and each step of the token
//! pipeline write into it what they established ([`issuance`](crate::issuance)), the middleware
//! adds the join keys it reads beside the route ([`routes`](crate::routes)). Today the one reader
//! is the log line ([`request_log`](crate::request_log)); the record lives here, apart from it, so
//! that another writer (an exporter) would read the same record rather than a second one.
//!
//! **What it trusts.** Its writers to put in only what is safe to write down: validated ids, fixed
//! verdict strings, an object id, a scope key, a secret version — never a key, a token, the URI or
//! a header's raw text.

use std::net::IpAddr;
use std::sync::Arc;

use crate::correlation::Correlation;
use crate::hubs::HostForm;
use crate::params::{DeviceId, ModuleId, RegistrationId};

/// What one request's line records besides its route, status and latency. The token pipeline
/// writes what each step established and leaves it in the response's extensions; the middleware
/// adds the [`Correlation`] it read with the route and hands the record to the log line. Only the
/// join keys for requests that reached no handler (404, 405, refused by a limit).
#[derive(Debug, Clone, Default)]
pub struct RequestOutcome {
    /// The keys that join the line to the host's and the gateway's records of the request.
    pub correlation: Correlation,
    /// What the caller layers decided.
    pub caller: CallerFacts,
    /// The validated device id.
    pub device_id: Option<DeviceId>,
    /// The validated module id.
    pub module_id: Option<ModuleId>,
    /// The validated registration id.
    pub registration_id: Option<RegistrationId>,
    /// The hub the token is for: its canonical name (the classic host name).
    pub hub: Option<Arc<str>>,
    /// Which of the hub's host names the token names.
    pub hub_form: Option<HostForm>,
    /// Why a caller the layers let through was refused this device (`DEVICE_SCOPES`).
    pub scope_denied: Option<&'static str>,
    /// Why no key could sign (a 503): not loaded, withdrawn by Key Vault, too old.
    pub key_unavailable: Option<&'static str>,
    /// The audit record of an issued token.
    pub issued: Option<IssuedFacts>,
}

/// What was issued: never the token or a key, only what an auditor needs to find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFacts {
    /// The token's expiry (`se`), RFC 3339.
    pub expires_on: String,
    /// `hub-policy` or `enrollment-group`.
    pub signing_mode: &'static str,
    /// The `DEVICE_SCOPES` key whose rule allowed the device, when scoping is on.
    pub scope: Option<Arc<str>>,
    /// The Key Vault secret version the key came from, for a Key Vault key.
    pub key_version: Option<Arc<str>>,
}

/// What the caller layers decided about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerFacts {
    /// The caller's address as the allow list saw it.
    pub ip: Option<IpAddr>,
    /// Why the IP layer denied the caller, when it did.
    pub denied: Option<&'static str>,
    /// The client-certificate layer's verdict, when the layer is on.
    pub client_cert: Option<&'static str>,
    /// The bearer-token layer's verdict, when the layer is on.
    pub auth: Option<&'static str>,
    /// The token's caller (object id, else client id), when the token was valid; for a
    /// gateway, the gateway.
    pub caller_oid: Option<String>,
    /// The gateway layer's verdict, for a gateway or a caller that sent `X-Caller-*` headers.
    pub forwarded: Option<&'static str>,
    /// The kind of caller the gateway forwarded: `subscription`, `certificate` or `entra`.
    pub forwarded_kind: Option<&'static str>,
    /// The forwarded caller: subscription id, certificate SHA-256 thumbprint, or the forwarded
    /// token's object id (else client id) — never the token.
    pub forwarded_caller: Option<String>,
}
