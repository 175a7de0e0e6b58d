//! Fuzz target `xff_allow_list`: `client_ip::caller_ip` over arbitrary `X-Forwarded-For` lines
//! and depths, and `AllowList::parse` / `contains`.
//! Input layout and invariants: `check_xff_allow_list` in `fuzz/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // every target shares checks.rs and uses one of its checks
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_xff_allow_list(data));
