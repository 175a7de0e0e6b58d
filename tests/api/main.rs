//! Black-box tests of the `handler` binary: each test spawns it on port 0 and talks HTTP.
//!
//! Each test file covers one part of the contract; what they share is in `support` (its `//!`
//! lists what each module owns) and the Azure services that cannot run here are local
//! stand-ins in `stand_ins`. Test files import from those two only, never from each other.
mod auth;
mod bad_settings;
mod caller_ip;
mod client_cert;
mod deployment_verify;
mod errors;
mod gateway;
mod key_vault;
mod lifecycle;
mod limits;
mod local_run;
mod logs;
mod openapi_schemathesis;
mod scoping;
mod signing_modes;
mod soak;
mod stand_ins;
mod stand_ins_sdk;
mod startup_errors;
mod support;
mod tokens;
