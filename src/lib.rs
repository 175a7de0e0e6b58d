//! An Azure Functions custom handler that issues Azure IoT Hub device SAS tokens to allowed callers.
//!
//! # Layout
//! Start-up:
//! - [`config`]: reads the environment once and asks each layer to parse its own settings.
//! - [`startup`]: prepares the layers, owns their background tasks ([`tasks`]), binds
//!   `127.0.0.1:{port}`; [`startup::StartupError`] is every reason it can fail.
//! - [`server`]: the HTTP/1 connection loop, its limits and the bounded drain.
//!
//! One request:
//! - [`routes`]: the route table, 404/405, the limits middleware and the request log line.
//! - [`issuance`]: the pipeline every token route runs — caller → input → key → sign.
//! - [`caller`]: the caller layers in order, producing a typed [`caller::Caller`]:
//!   [`client_ip`] (`X-Forwarded-For`, `XFF_DEPTH` from the right) against [`allow_list`], then
//!   the optional [`auth`] layers (client certificate, Entra ID bearer token, and for a gateway
//!   the one caller it forwards).
//! - [`scope`]: `DEVICE_SCOPES`, which devices each caller (or, behind a gateway, the caller it
//!   forwards) may get tokens for.
//! - [`params`]: `DeviceId`, `Ttl` and the query string, parsed once.
//! - [`secrets`]: the current key, read from memory; [`secrets::key_vault`] keeps it fresh.
//! - [`sas`]: hub and policy names, the signing key, the prepared signer and the token format.
//! - [`error`]: every error as RFC 9457 problem+json.
//! - [`limits`]: URL, body and concurrency limits.
//! - [`request_log`] and [`telemetry`]: JSON log lines on stdout.
//! - [`settings`]: the lookup every layer reads its settings through; [`https_roots`]:
//!   `SSL_CERT_FILE`, checked at start-up.
//!
//! # Which way the imports go
//! Downwards only, and no module imports one above it:
//! `main` → [`startup`] → [`config`] → the layers' settings types; [`startup`] → [`routes`] →
//! [`issuance`] → [`caller`] → [`auth`], [`client_ip`], [`allow_list`]; [`issuance`] →
//! [`secrets`] → [`sas`], [`params`]. Every layer that has settings imports [`settings`], which
//! imports nothing from the crate; [`telemetry`] and [`error`] sit at the bottom beside it.
//! Nothing below [`config`] imports it: a layer owns its settings type and parser, and
//! [`config`] only assembles them.
//!
//! # One request
//! The Functions host forwards `GET /api/devices/dev-1/sas-token` to `127.0.0.1:{port}`.
//! [`routes`] admits it under the [`limits`] and hands its raw inputs to [`issuance`], which asks
//! [`caller`] who is calling — the address from `X-Forwarded-For` against the allow list, then the
//! client certificate and bearer token when those layers are on, and who a gateway speaks for
//! (403/401); parses the device id
//! and `ttl` ([`params`]; 400); reads the current signer ([`secrets`]; 503 if no key yet); signs
//! ([`sas`]) and answers 200 with the token. On the way out one log line records the route,
//! status, latency, caller and device — never the key, the token, `code` or `x-functions-key`.

pub mod allow_list;
pub mod auth;
pub mod caller;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod https_roots;
pub mod issuance;
pub mod limits;
pub mod params;
pub mod request_log;
pub mod routes;
pub mod sas;
pub mod scope;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod startup;
pub mod tasks;
pub mod telemetry;
