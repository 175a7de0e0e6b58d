//! Replays the committed fuzz corpus through the checks the fuzz targets run.
//!
//! Every file under `fuzz/corpus/<target>/` (hand-written inputs and ones the fuzzer kept because
//! they reached new code) goes through the same `check_<target>` function from `fuzz/checks.rs`,
//! on stable and without libFuzzer, so `cargo test` keeps each of them passing. A crash the fuzzer
//! finds becomes a corpus file once fixed, and from then on a regression test.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

#[allow(dead_code)] // tests/properties.rs uses the token helper; this file the per-target checks
#[path = "../fuzz/checks.rs"]
mod checks;

/// Runs `check` on every file of `fuzz/corpus/<target>/`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is readable: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry is readable").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    for file in files {
        let data = fs::read(&file).expect("a corpus file is readable");
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("{}: {message}", file.display());
        }
    }
}

#[test]
fn xff_and_allow_list_corpus_keeps_its_invariants() {
    replay("xff_allow_list", checks::check_xff_allow_list);
}

#[test]
fn device_id_corpus_keeps_its_invariants() {
    replay("device_id", checks::check_device_id);
}

#[test]
fn query_corpus_keeps_its_invariants() {
    replay("query", checks::check_query);
}

#[test]
fn sas_token_corpus_keeps_its_invariants() {
    replay("sas_token", checks::check_sas_token);
}

#[test]
fn device_scopes_corpus_keeps_its_invariants() {
    replay("device_scopes", checks::check_device_scopes);
}
