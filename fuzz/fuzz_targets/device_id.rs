//! Fuzz target `device_id`: `params::DeviceId::parse` over arbitrary text.
//! Input layout and invariants: `check_device_id` in `fuzz/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // every target shares checks.rs and uses one of its checks
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_device_id(data));
