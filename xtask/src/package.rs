//! `cargo xtask package` (`make package`): the release `handler` built for
//! x86_64-unknown-linux-musl (fully static, as Microsoft's Rust custom-handler quickstart builds
//! it), refused unless it is a static x86-64 ELF ([`elf::require_static_x86_64`]), staged as
//! `dist/app/` and zipped to `dist/handler.zip` ([`archive`]), whose entries it prints.
//!
//! It installs nothing: `make tools` provides the musl target and C compiler, and this task stops
//! with a message naming `make tools` when either is missing. It rebuilds incrementally and
//! rewrites `dist/app/` and `dist/handler.zip` from scratch, so it is safe to run again.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::app_root::{AppRoot, HANDLER, HANDLER_PACKAGE};
use crate::{Error, Result, archive, cargo_build, elf, tools};

/// The target of the shipped binary.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds, checks, stages and zips the handler of the project in `project`.
pub fn run(project: &Path) -> Result<()> {
    // Everything that can be refused without building is checked first: the build takes minutes.
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let timestamp = archive::timestamp(epoch.as_deref())?;
    tools::require_rust_target(TARGET)?;
    let cc_env = tools::musl_cc_env()?;

    log(&format!("building {HANDLER} (release, {TARGET})"));
    let built = cargo_build::build_binary(
        project,
        HANDLER_PACKAGE,
        HANDLER,
        &["--release", "--target", TARGET],
        &cc_env,
    )?;
    let binary = fs::read(&built).map_err(Error::io(&built))?;
    elf::require_static_x86_64(&binary).map_err(|refusal| Error::Binary {
        path: built.clone(),
        refusal,
    })?;

    let root = AppRoot::collect(project, &built)?;
    log("staging dist/app");
    root.stage(&project.join("dist/app"))?;

    log("writing dist/handler.zip");
    let zip_path = project.join("dist/handler.zip");
    archive::write(&root, &zip_path, timestamp)?;

    let size = fs::metadata(&zip_path).map_err(Error::io(&zip_path))?.len();
    let listing = listing(&archive::entries(&zip_path)?, size);
    io::stdout()
        .write_all(listing.as_bytes())
        .map_err(Error::io(Path::new("stdout")))
}

/// What `make package` prints: the archive, one line per entry (mode, size, size in the archive,
/// name) and the archive's size.
fn listing(entries: &[archive::Entry], size: u64) -> String {
    let mut out = String::from("dist/handler.zip\n");
    for entry in entries {
        out.push_str(&format!(
            "  {:o} {:>10} {:>10}  {}\n",
            entry.unix_mode.unwrap_or(0),
            entry.size,
            entry.compressed_size,
            entry.name
        ));
    }
    out.push_str(&format!("size: {size} bytes ({} KiB)\n", size / 1024));
    out
}

fn log(message: &str) {
    eprintln!("package: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_shows_mode_sizes_and_name_per_entry() {
        let entry = |name: &str, mode, size, compressed_size| archive::Entry {
            name: name.to_owned(),
            unix_mode: Some(mode),
            size,
            compressed_size,
            modified: None,
        };
        let entries = [
            entry("host.json", 0o100_644, 399, 237),
            entry("handler", 0o100_755, 7_812_616, 3_387_804),
        ];
        assert_eq!(
            listing(&entries, 3_388_822),
            "dist/handler.zip\n\
             \x20 100644        399        237  host.json\n\
             \x20 100755    7812616    3387804  handler\n\
             size: 3388822 bytes (3309 KiB)\n"
        );
    }
}
