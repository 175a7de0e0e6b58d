//! Black-box tests of the `handler` binary: each test spawns it on port 0 and talks HTTP.
mod auth;
mod bad_settings;
mod caller_ip;
mod client_cert;
mod deployment_verify;
mod errors;
mod helpers;
mod key_vault;
mod lifecycle;
mod limits;
mod logs;
mod openapi_schemathesis;
mod soak;
mod stand_ins;
mod stand_ins_sdk;
mod startup_errors;
mod tokens;
