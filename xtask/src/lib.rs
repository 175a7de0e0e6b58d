//! Build tasks of the IoT Hub SAS-token handler that are programs rather than shell, run as
//! `cargo xtask <task>` (the alias is in `.cargo/config.toml`):
//!
//! * `package` ([`package`], `make package`): the static x86-64 handler, checked, staged in
//!   `dist/app/` and zipped to `dist/handler.zip`.
//! * `run-local` ([`run_local`], `make run`): the app on `127.0.0.1` with `local.settings.json`,
//!   under `func start` when Core Tools is installed, else the handler alone.
//!
//! # Layout
//!
//! * [`app_root`]: which files the Functions host gets, and their modes.
//! * [`archive`]: the zip of an app root, the same bytes for the same inputs.
//! * [`elf`]: what the loader needs to run a binary, and the fully static x86-64 rule.
//! * [`local_settings`]: `local.settings.json`'s `Values`, as environment variables.
//! * [`cargo_build`]: `cargo build` for one binary, and the file cargo says it wrote.
//! * [`tools`]: finds the programs the tasks run. Installing them is `make tools`' job, never a
//!   task's: building and installing stay separate.
//! * [`error`]: the one error type; every message names the file, command or setting.
//!
//! The tasks use the parts; the parts use only [`error`] and each other's types, never a task.
//! `tests/function_app.rs` reads the packaged binary with [`elf`], so the packager and the tests
//! judge it with one reader.

use std::path::{Path, PathBuf};

pub mod app_root;
pub mod archive;
pub mod cargo_build;
pub mod elf;
pub mod error;
pub mod local_settings;
pub mod package;
pub mod run_local;
pub mod tools;

pub use error::{Error, Result};

/// The project's root directory: the one that holds `xtask/`, `Cargo.toml` and `host.json`.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is a directory inside the project root")
        .to_path_buf()
}
