//! The programs the tasks run, and where they come from: cargo (the one running this task), the
//! Rust standard library for a target, the musl C compiler the musl build needs, and Azure
//! Functions Core Tools' `func`. It only finds them and says what is missing; installing is
//! `make tools`' job (`scripts/tools.sh`), never a task's, so a build never runs apt-get.

use std::env;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// What to do about a missing packaging tool.
const MAKE_TOOLS: &str = "run `make tools` (it installs the musl target and Debian's musl-tools)";

/// The cargo to run: the one that started this task (`cargo xtask` sets `CARGO`), so the same
/// toolchain builds everything.
pub fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `program` as found on `PATH`: the first executable file of that name.
pub fn find_program(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fails unless rustc has the standard library for `target` (`rustup target add` installs it).
pub fn require_rust_target(target: &str) -> Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| Error::Command {
            command: "rustc --print sysroot".to_owned(),
            problem: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: "rustc --print sysroot".to_owned(),
            problem: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(target).is_dir() {
        Ok(())
    } else {
        Err(Error::MissingTool {
            tool: format!("the Rust target {target}"),
            remedy: MAKE_TOOLS,
        })
    }
}

/// The environment the musl build needs for the C code in its dependencies (aws-lc-sys):
/// cc-rs finds `x86_64-linux-musl-gcc` (Debian's musl-tools) by itself; where only `musl-gcc`
/// exists, it is named in `CC_x86_64_unknown_linux_musl`. A compiler already named there is
/// used as it is.
pub fn musl_cc_env() -> Result<Vec<(&'static str, OsString)>> {
    const CC_VAR: &str = "CC_x86_64_unknown_linux_musl";
    if env::var_os(CC_VAR).is_some() || find_program("x86_64-linux-musl-gcc").is_some() {
        return Ok(Vec::new());
    }
    if find_program("musl-gcc").is_some() {
        return Ok(vec![(CC_VAR, "musl-gcc".into())]);
    }
    Err(Error::MissingTool {
        tool: "a musl C compiler (x86_64-linux-musl-gcc or musl-gcc)".to_owned(),
        remedy: MAKE_TOOLS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_on_path_are_found_and_others_are_not() {
        assert!(find_program("sh").is_some(), "sh is on every PATH");
        assert_eq!(find_program("no-such-program-xtask-test"), None);
    }

    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn the_host_target_is_installed_and_a_made_up_one_is_not() {
        require_rust_target("x86_64-unknown-linux-gnu").expect("the host target");
        let error = require_rust_target("x86_64-unknown-made-up").expect_err("not installed");
        assert!(error.to_string().contains("make tools"), "{error}");
    }
}
