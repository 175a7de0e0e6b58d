//! `cargo build` of one binary, returning the executable cargo says it wrote, so no task guesses
//! the target directory (`CARGO_TARGET_DIR`, `build.target-dir`) or the file's name. It trusts
//! cargo's JSON messages (`--message-format=json-render-diagnostics`: compiler diagnostics and
//! progress still reach the terminal as usual) and always builds `--locked`, as CI does.
//!
//! It names the package as well as the binary: cargo unifies the features of every package a
//! command selects, and only the handler's own must decide what the handler is built with.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{Error, Result, tools};

/// Builds the binary `bin` of `package` in the workspace in `project` with the extra cargo
/// arguments `args` (`--release`, `--target …`) and environment `envs`, and returns the path of
/// the executable.
pub fn build_binary(
    project: &Path,
    package: &str,
    bin: &str,
    args: &[&str],
    envs: &[(&str, OsString)],
) -> Result<PathBuf> {
    let command = format!(
        "cargo build --package {package} --bin {bin} {}",
        args.join(" ")
    );
    let failed = |problem: String| Error::Command {
        command: command.trim_end().to_owned(),
        problem,
    };
    let mut child = Command::new(tools::cargo())
        .current_dir(project)
        .args([
            "build",
            "--locked",
            "--message-format=json-render-diagnostics",
            "--package",
            package,
            "--bin",
            bin,
        ])
        .args(args)
        .envs(envs.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let stdout = child.stdout.take().expect("cargo's stdout is piped");
    let executable = executable_from_messages(BufReader::new(stdout), bin);
    let status = child.wait().map_err(|e| failed(e.to_string()))?;
    if !status.success() {
        return Err(failed(status.to_string()));
    }
    executable
        .map_err(|e| failed(format!("reading its messages: {e}")))?
        .ok_or_else(|| failed(format!("cargo reported no executable for `{bin}`")))
}

/// The executable of the binary target `bin` in cargo's JSON messages, read to the end (so cargo
/// never blocks on a full pipe). Lines that are not JSON are passed on to stderr.
fn executable_from_messages(messages: impl BufRead, bin: &str) -> std::io::Result<Option<PathBuf>> {
    let mut executable = None;
    for line in messages.lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            eprintln!("{line}");
            continue;
        };
        let is_bin = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == bin
            && is_bin
            && let Some(path) = message["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    Ok(executable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_binary_is_found_among_other_artifacts() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"handler","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"other","kind":["bin"]},"executable":"/t/release/other"}
{"reason":"build-script-executed","package_id":"x"}
{"reason":"compiler-artifact","target":{"name":"handler","kind":["bin"]},"executable":"/t/x86_64-unknown-linux-musl/release/handler"}
{"reason":"build-finished","success":true}
"#;
        assert_eq!(
            executable_from_messages(messages.as_bytes(), "handler").expect("read"),
            Some(PathBuf::from(
                "/t/x86_64-unknown-linux-musl/release/handler"
            ))
        );
    }

    #[test]
    fn no_matching_artifact_gives_none() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"handler","kind":["lib"]},"executable":null}
not json
"#;
        assert_eq!(
            executable_from_messages(messages.as_bytes(), "handler").expect("read"),
            None
        );
    }
}
