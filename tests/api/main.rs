//! Black-box tests of the `handler` binary: each test spawns it on port 0 and talks HTTP.
mod auth;
mod bad_settings;
mod caller_ip;
mod client_cert;
mod errors;
mod key_vault;
mod lifecycle;
mod limits;
mod logs;
mod soak;
mod stand_ins;
mod stand_ins_sdk;
mod support;
mod tokens;
