//! What the test binaries need beyond the Rust toolchain, and the one line that says so.
//!
//! Some tests check the handler against independent implementations that are installed, not
//! built: the official Azure IoT SDKs (`make oracles`), schemathesis (`.venv-infra`), Debian's
//! nginx (`.tools/debian`), and the package itself (`make package`). On a fresh clone these are
//! missing. Rather than let dozens of tests fail with the same message, the first test that
//! needs any of them checks them all — before anything has been started — and, if one is
//! missing, the test binary prints one line naming `make test-tools` and exits, so `cargo test`
//! stops there.
//!
//! The tests do not install the tools themselves: two of them need root the first time (Debian's
//! `musl-tools` for the package, and `apt-get update` on a machine whose package lists are
//! empty), and installing takes minutes, which inside `cargo test` would look like a hang.
//! README, "Developing", says what each needs and what runs without them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;

/// A file that shows one tool is installed, and what it is.
pub(crate) struct Needed {
    /// Relative to the repository root.
    pub(crate) path: &'static str,
    /// What it is, for the one line.
    pub(crate) what: &'static str,
}

/// The official SDK oracles and the token issuer stand-in (`make oracles`).
#[allow(dead_code, reason = "each test binary names only the tools it needs")]
pub(crate) const ORACLES: [Needed; 2] = [
    Needed {
        path: ".venv/.installed",
        what: "the Python SDK oracle",
    },
    Needed {
        path: "tests/oracles/node/node_modules/.installed",
        what: "the Node SDK oracle and token issuer",
    },
];

/// schemathesis, and Debian's nginx (`make infra-tools`).
#[allow(dead_code, reason = "each test binary names only the tools it needs")]
pub(crate) const INFRA_TOOLS: [Needed; 2] = [
    Needed {
        path: ".venv-infra/.installed",
        what: "schemathesis",
    },
    Needed {
        path: ".tools/debian/usr/sbin/nginx",
        what: "Debian's nginx",
    },
];

/// The package (`make package`).
#[allow(dead_code, reason = "each test binary names only the tools it needs")]
pub(crate) const PACKAGE: [Needed; 1] = [Needed {
    path: "dist/handler.zip",
    what: "the package",
}];

static CHECKED: Once = Once::new();

/// Checks once per test binary that everything in `needed` is installed; if not, prints one line
/// naming `make test-tools` and ends the process with exit code 2. Call it before starting any
/// child process, so that none is left behind.
pub(crate) fn ensure(needed: &[&[Needed]]) {
    CHECKED.call_once(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let missing: Vec<String> = needed
            .iter()
            .flat_map(|group| group.iter())
            .filter(|needed| !root.join(needed.path).exists())
            .map(|needed| format!("{} ({})", needed.what, needed.path))
            .collect();
        if missing.is_empty() {
            return;
        }
        // Straight to stderr: the test harness captures `eprintln!` and would drop it on exit.
        let _ = writeln!(
            std::io::stderr(),
            "\ncargo test needs tools this clone lacks — {}: run `make test-tools` once, then \
             cargo test again (README, \"Developing\")",
            missing.join(", ")
        );
        std::process::exit(2);
    });
}
