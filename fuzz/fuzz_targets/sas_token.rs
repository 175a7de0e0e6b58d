//! Fuzz target `sas_token`: `sas::SigningKey::from_base64`, `Signer::new` and `Signer::sign`; the token is
//! verified with an independent HMAC.
//! Input layout and invariants: `check_sas_token` in `fuzz/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // every target shares checks.rs and uses one of its checks
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_sas_token(data));
