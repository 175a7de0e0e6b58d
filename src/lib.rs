//! An Azure Functions custom handler that issues Azure IoT Hub device SAS tokens to allowed callers.
//!
//! # Layout
//! - [`config`]: the only reader of the environment; every setting, its default and its rule.
//! - [`startup`]: binds `127.0.0.1:{port}`, builds the state, serves.
//! - [`routes`]: the two token routes, 404/405, the order of checks, the request log line.
//! - [`client_ip`]: the caller's address from `X-Forwarded-For` (`XFF_DEPTH` from the right).
//! - [`allow_list`]: `ALLOWED_IPS` as sorted ranges; `contains(ip)`.
//! - [`auth`]: optional client-certificate and Entra ID bearer-token layers.
//! - [`params`]: `DeviceId`, `Ttl` and the query string, parsed once.
//! - [`sas`]: the signing key, the prepared signer and the token format.
//! - [`secrets`]: the current key, read from memory on the request path.
//! - [`error`]: every error as RFC 9457 problem+json.
//! - [`limits`]: URL, body, header and concurrency limits; the shutdown grace period.
//! - [`telemetry`]: JSON log lines on stdout.
//! - [`request_log`]: the per-request line, in the same format, written without `tracing`.
//!
//! # One request
//! The Functions host forwards `GET /api/devices/dev-1/sas-token` to `127.0.0.1:{port}`.
//! [`routes`] takes the caller's address from `X-Forwarded-For` ([`client_ip`]) and checks it
//! against the allow list ([`allow_list`]) — 403 if not allowed; then parses the device id and
//! `ttl` ([`params`]) — 400 if invalid; reads the current signer ([`secrets`]) — 503 if no key yet;
//! signs ([`sas`]) and answers 200 with the token. On the way out one log line records the route
//! template, status, latency, caller and device — never the key, the token, `code` or
//! `x-functions-key`.

pub mod allow_list;
pub mod auth;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod limits;
pub mod params;
pub mod request_log;
pub mod routes;
pub mod sas;
pub mod secrets;
pub mod startup;
pub mod telemetry;
