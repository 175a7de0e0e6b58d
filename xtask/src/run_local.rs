//! `cargo xtask run-local` (`make run`): serves the function app on `127.0.0.1:<port>` with the
//! settings in `local.settings.json`, which it creates from `local.settings.json.example` (a
//! clearly-marked demo key, loopback-only allow list) on first run.
//!
//! * With Azure Functions Core Tools (`func`) on `PATH`, it stages the app root in
//!   `target/func-app/` (the same files as the package, plus `local.settings.json`) and runs
//!   `func start`, so requests go through the real Functions host.
//! * Without it, it runs the release handler directly on the same port, with
//!   `local.settings.json`'s `Values` as its environment. The URLs are the same; the host's
//!   function-key check and `X-Forwarded-For` are absent, as they are under `func start` too,
//!   which does not enforce keys locally.
//!
//! Either way the process becomes `func` or the handler (`exec`), so Ctrl+C reaches it directly.
//! The settings are read before the build, so a broken file is reported at once.

use std::convert::Infallible;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::app_root::{AppRoot, HANDLER, HANDLER_PACKAGE, LOCAL_SETTINGS};
use crate::local_settings::LocalSettings;
use crate::{Error, Result, cargo_build, tools};

/// The port `func start` and `make run` use unless told otherwise.
pub const DEFAULT_PORT: u16 = 7071;

/// Where the app root is staged for `func start`, relative to the project.
const FUNC_STAGE: &str = "target/func-app";

/// Serves the app of the project in `project` on `port`; returns only if it cannot start.
pub fn run(project: &Path, port: u16) -> Result<Infallible> {
    let settings_path = project.join(LOCAL_SETTINGS);
    if !settings_path.exists() {
        let example = project.join("local.settings.json.example");
        fs::copy(&example, &settings_path).map_err(Error::io(&example))?;
        println!(
            "Created {LOCAL_SETTINGS} from local.settings.json.example (demo key, loopback only)."
        );
    }
    let settings = LocalSettings::read(&settings_path)?;

    let handler =
        cargo_build::build_binary(project, HANDLER_PACKAGE, HANDLER, &["--release"], &[])?;
    let url = format!("http://127.0.0.1:{port}/api/devices/my-device/sas-token");

    if let Some(func) = tools::find_program("func") {
        let stage = project.join(FUNC_STAGE);
        AppRoot::collect(project, &handler)?.stage(&stage)?;
        // Beside the app root, never in it; readable by this user only (it may hold a key).
        let staged_settings = stage.join(LOCAL_SETTINGS);
        fs::copy(&settings_path, &staged_settings).map_err(Error::io(&staged_settings))?;
        fs::set_permissions(&staged_settings, fs::Permissions::from_mode(0o600))
            .map_err(Error::io(&staged_settings))?;
        println!("Azure Functions Core Tools found: running 'func start' in {FUNC_STAGE}");
        println!("Try:  curl -s '{url}'");
        let error = Command::new(func)
            .current_dir(&stage)
            .args(["start", "--port", &port.to_string()])
            .exec();
        return Err(Error::Command {
            command: "func start".to_owned(),
            problem: error.to_string(),
        });
    }

    println!(
        "Azure Functions Core Tools (func) not found: running the handler directly on port {port}."
    );
    println!("Try:  curl -s '{url}'");
    let error = Command::new(&handler)
        .current_dir(project)
        .envs(settings.values().iter().map(|(name, value)| (name, value)))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .exec();
    Err(Error::Command {
        command: handler.display().to_string(),
        problem: error.to_string(),
    })
}
