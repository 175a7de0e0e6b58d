//! Fuzz target `device_scopes`: `scope::Scopes::parse` of generated `DEVICE_SCOPES` documents with
//! several hubs, and every decision, against a plain scan.
//! Input layout and invariants: `check_device_scopes` in `fuzz/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // every target shares checks.rs and uses one of its checks
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_device_scopes(data));
