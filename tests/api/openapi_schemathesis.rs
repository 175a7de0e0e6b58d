//! `openapi/sas-token.yaml` against the real handler: schemathesis (installed into
//! `.venv-infra/` by `make infra-check`, which `make test` runs first) generates positive and
//! negative requests from the description and checks every answer against it: status codes,
//! content types, headers and bodies the description declares. Every check runs except
//! `ignored_auth`: the subscription key the description declares is enforced by API Management,
//! not by the handler. The examples, coverage and fuzzing phases run; the stateful one does not
//! (see `check`).
//!
//! Two handlers, one per signing mode, tested at the same time:
//! - **hub-policy** (the default): every operation. The registration route is not served in this
//!   mode, so that operation is tested against its documented 404.
//! - **enrollment-group with `DPS_ID_SCOPE`**: the registration operation, now served (200 bodies
//!   with `registrationId` and `skn=registration`), and the module operation, which answers its
//!   documented 404 `module-tokens-unavailable`. The device operations are left out here: the
//!   description's device-id rule is IoT Hub's, and this mode additionally refuses device ids
//!   that are not registration ids (documented, but not expressible in one schema for both modes).
//!
//! Each handler runs as every other test runs it (`TestApp::spawn`: the real binary, port 0, a
//! clean environment) with demo settings; schemathesis addresses it at `/api`, the description's
//! `servers` entry, through `--url`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::process::{ensure_tools, output_within};
use crate::support::settings::{HOSTNAME, KEY, Settings};
use crate::support::side_by_side::problems_of_each;

/// Examples per operation and mode; `SCHEMATHESIS_EXAMPLES` overrides.
const EXAMPLES: &str = "100";
/// Each run's bound.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// The DPS ID scope of the enrollment-group handler.
const ID_SCOPE: &str = "0ne00000A0A";

/// One schemathesis run: which handler, which operations (operation ids; empty = all), and the
/// routes that must have issued a token at least once (so no operation passes only through its
/// documented 404).
/// The hub the description's `hub` example names.
const EXAMPLE_HUB: &str = "contoso.azure-devices.net";

struct Run<'a> {
    mode: &'a str,
    app: &'a TestApp,
    operations: &'a [&'a str],
    served: &'a [&'a str],
}

#[test]
fn the_handler_answers_as_its_openapi_description_says() {
    ensure_tools();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let schemathesis = repo.join(".venv-infra/bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run `make infra-check` (it installs the pinned tools; `make test` runs it first)",
        schemathesis.display()
    );
    // Two hubs: the tests' own and the one the description's examples name; `hub` is narrowed
    // to them (infra/schemathesis_hooks.py).
    let hubs = format!("{HOSTNAME},{EXAMPLE_HUB}");
    let common = Settings::base()
        .unset("IOTHUB_HOSTNAME")
        .unset("IOTHUB_POLICY_KEY")
        .set("IOTHUB_HOSTNAMES", &hubs)
        .set(
            "IOTHUB_POLICY_KEYS",
            serde_json::json!({ HOSTNAME: KEY, EXAMPLE_HUB: KEY }).to_string(),
        )
        .set("ALLOWED_IPS", "127.0.0.1,::1")
        .set("TOKEN_TTL_SECONDS", "3600")
        .set("TOKEN_MAX_TTL_SECONDS", "86400")
        .set("RUST_LOG", "info");
    let hub_policy = TestApp::spawn(&common);
    let enrollment_group = TestApp::spawn(
        &common
            .clone()
            .unset("IOTHUB_POLICY_NAME")
            .unset("IOTHUB_POLICY_KEYS")
            .set("IOTHUB_HOSTNAMES", &hubs)
            .set("SIGNING_MODE", "enrollment-group")
            .set("ENROLLMENT_GROUP_KEY", KEY)
            .set("DPS_ID_SCOPE", ID_SCOPE),
    );

    let runs = [
        Run {
            mode: "hub-policy",
            app: &hub_policy,
            operations: &[],
            served: &[
                "/api/devices/{deviceId}/sas-token",
                "/api/devices/{deviceId}/modules/{moduleId}/sas-token",
                "/api/getSASTokenByDeviceID",
            ],
        },
        Run {
            mode: "enrollment-group",
            app: &enrollment_group,
            operations: &["getRegistrationSasToken", "getModuleSasToken"],
            served: &["/api/registrations/{registrationId}/sas-token"],
        },
    ];
    let failures = problems_of_each(&runs, "a schemathesis run", |run| {
        check(&schemathesis, &repo, run)
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs schemathesis as `run` says; what is wrong with the result, if anything.
fn check(schemathesis: &Path, repo: &Path, run: &Run<'_>) -> Option<String> {
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES.to_owned());
    let work =
        std::env::temp_dir().join(format!("schemathesis-{}-{}", std::process::id(), run.mode));
    std::fs::create_dir_all(&work).expect("the temp directory is writable");

    let mut command = Command::new(schemathesis);
    command
        .arg("run")
        .arg(repo.join("openapi/sas-token.yaml"))
        .arg("--url")
        .arg(run.app.url("/api"))
        .args(["--checks", "all", "--exclude-checks", "ignored_auth"])
        .args(["--mode", "all", "--max-examples", &examples])
        // Not the stateful phase: its links are inferred by schemathesis, not declared, and one
        // carries the legacy route's `deviceId` (the query accepts `%`) into a path segment, where
        // the tool sends a `%` that starts an escape as that escape (infra/schemathesis_hooks.py).
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ]);
    for operation in run.operations {
        command.args(["--include-operation-id", *operation]);
    }
    // Path values with `%` would be sent as escapes (infra/schemathesis_hooks.py says why).
    command
        .env(
            "SCHEMATHESIS_HOOKS",
            repo.join("infra/schemathesis_hooks.py"),
        )
        // The hubs the handler serves, which `hub` is narrowed to (the hooks say why).
        .env("SCHEMATHESIS_HUBS", format!("{HOSTNAME},{EXAMPLE_HUB}"))
        .current_dir(&work);
    let Output {
        status,
        stdout,
        stderr,
    } = output_within(
        &mut command,
        RUN_TIMEOUT,
        &format!("schemathesis ({} mode)", run.mode),
    );
    let _ = std::fs::remove_dir_all(&work);
    let stdout = String::from_utf8_lossy(&stdout);
    if !status.success() {
        return Some(format!(
            "schemathesis ({} mode) found answers that break openapi/sas-token.yaml ({status}):\n{stdout}\n{}\n--- handler ---\n{}",
            run.mode,
            String::from_utf8_lossy(&stderr),
            run.app.output()
        ));
    }
    // Every operation asked for was selected and tested (a description schemathesis could not
    // read, or a filter that matched nothing, would "pass" with nothing tested).
    let (selected, tested) = operations_tested(&stdout);
    let wanted = if run.operations.is_empty() {
        4
    } else {
        run.operations.len()
    };
    if selected != Some(wanted) || tested != Some(wanted) {
        return Some(format!(
            "schemathesis ({} mode) selected {selected:?} and tested {tested:?} operations, expected {wanted}:\n{stdout}",
            run.mode
        ));
    }
    let log = run.app.output();
    let unserved: Vec<_> = run
        .served
        .iter()
        .filter(|route| !log.contains(&format!("\"route\":\"{route}\",\"status\":200")))
        .collect();
    (!unserved.is_empty()).then(|| {
        format!(
            "schemathesis ({} mode) never got a token from {unserved:?}: only error answers were checked\n--- handler ---\n{log}",
            run.mode
        )
    })
}

/// From the summary: `Selected: N/M` and `Tested: N`.
fn operations_tested(stdout: &str) -> (Option<usize>, Option<usize>) {
    let number_after = |label: &str| -> Option<usize> {
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(label))?;
        line.trim_start()[label.len()..]
            .split(|c: char| c == '/' || c.is_whitespace())
            .find(|part| !part.is_empty())?
            .parse()
            .ok()
    };
    (number_after("Selected:"), number_after("Tested:"))
}
