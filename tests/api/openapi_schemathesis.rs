//! `openapi/sas-token.yaml` against the real handler: schemathesis (installed into
//! `.venv-infra/` by `make infra-check`, which `make test` runs first) generates positive and
//! negative requests for both routes from the description and checks every answer against it:
//! status codes, content types, headers and bodies the description declares. Every check runs
//! except `ignored_auth`: the subscription key the description declares is enforced by API
//! Management, not by the handler.
//!
//! The handler runs as every other test runs it (`TestApp::spawn`: the real binary, port 0, a
//! clean environment) with demo settings; schemathesis addresses it at `/api`, the description's
//! `servers` entry, through `--url`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::app::TestApp;
use crate::support::settings::Settings;

/// Examples per operation and mode; `SCHEMATHESIS_EXAMPLES` overrides.
const EXAMPLES: &str = "100";
/// The whole run's bound.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

#[test]
fn the_handler_answers_as_its_openapi_description_says() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let schemathesis = repo.join(".venv-infra/bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run `make infra-check` (it installs the pinned tools; `make test` runs it first)",
        schemathesis.display()
    );
    let app = TestApp::spawn(
        &Settings::base()
            .set("ALLOWED_IPS", "127.0.0.1,::1")
            .set("TOKEN_TTL_SECONDS", "3600")
            .set("TOKEN_MAX_TTL_SECONDS", "86400")
            .set("RUST_LOG", "info"),
    );
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES.to_owned());
    let work = std::env::temp_dir().join(format!("schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("the temp directory is writable");

    let mut child = Command::new(&schemathesis)
        .arg("run")
        .arg(repo.join("openapi/sas-token.yaml"))
        .arg("--url")
        .arg(app.url("/api"))
        .args(["--checks", "all", "--exclude-checks", "ignored_auth"])
        .args(["--mode", "all", "--max-examples", &examples])
        .args([
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", schemathesis.display()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    while child.try_wait().expect("poll schemathesis").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("schemathesis ran longer than {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child
        .wait_with_output()
        .expect("collect schemathesis output");
    let _ = std::fs::remove_dir_all(&work);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found answers that break openapi/sas-token.yaml ({}):\n{stdout}\n{}\n--- handler ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        app.output()
    );
    // Every operation in the description was selected and tested (a description schemathesis
    // could not read would "pass" with nothing tested).
    let number_after = |label: &str| -> Option<usize> {
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(label))?;
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let selected = number_after("Operations:");
    let tested = number_after("Tested:");
    assert!(
        selected.is_some_and(|n| n >= 2) && selected == tested,
        "schemathesis tested {tested:?} of {selected:?} operations:\n{stdout}"
    );
}
