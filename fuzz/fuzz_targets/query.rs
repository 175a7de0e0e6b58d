//! Fuzz target `query`: `params::RawQuery::parse`, then `Ttl::parse` and `DeviceId::parse` on its values.
//! Input layout and invariants: `check_query` in `fuzz/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // every target shares checks.rs and uses one of its checks
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_query(data));
