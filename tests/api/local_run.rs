//! What `make run` serves on a fresh clone: the handler started with the `Values` of
//! `local.settings.json.example`, read by the same reader `cargo xtask run-local` uses and passed
//! as the environment the way it passes them, answers the README's `curl` with a token.
//!
//! `make run` copies the example to `local.settings.json` when there is none, so a setting in the
//! example that the handler refuses breaks the first command a new user types.

use std::path::PathBuf;

use xtask::local_settings::LocalSettings;

use crate::support::{app::TestApp, logs::problem_lines, settings::Settings};

/// The request the README's first `curl` sends.
const README_PATH: &str = "/api/devices/my-device/sas-token";

fn example_settings() -> Settings {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("local.settings.json.example");
    let example = LocalSettings::read(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    Settings::none().set_all(example.values().iter().cloned())
}

fn example_value(settings: &Settings, name: &str) -> String {
    settings
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
        .unwrap_or_else(|| panic!("local.settings.json.example has no {name}"))
}

#[tokio::test]
async fn the_example_settings_serve_the_readme_request_without_a_warning() {
    let settings = example_settings();
    let app = TestApp::spawn(&settings);

    let issued = app.issue(README_PATH).await;

    let hub = example_value(&settings, "IOTHUB_HOSTNAME");
    assert_eq!(issued.token.sr, format!("{hub}%2Fdevices%2Fmy-device"));
    assert_eq!(
        issued.token.skn.as_deref(),
        Some(example_value(&settings, "IOTHUB_POLICY_NAME").as_str())
    );
    assert!(
        issued
            .token
            .is_signed_with(&example_value(&settings, "IOTHUB_POLICY_KEY")),
        "signed with the example's demo key: {}",
        issued.token.raw
    );
    let ttl = example_value(&settings, "TOKEN_TTL_SECONDS")
        .parse()
        .expect("TOKEN_TTL_SECONDS is a number");
    issued.assert_lifetime(ttl, "the example's TOKEN_TTL_SECONDS");

    assert_eq!(
        problem_lines(&app.stdout()),
        Vec::<serde_json::Value>::new(),
        "a new user's first run logs no warning or error"
    );
    assert_eq!(app.stderr(), "", "and prints nothing on stderr");
}
