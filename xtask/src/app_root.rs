//! The app root the Functions host runs, and nothing else: `host.json`, the `handler` executable
//! (mode 0755: the host starts it directly) and one `<Function>/function.json` per folder of
//! `function-apps/` (mode 0644). It owns which files are deployed, their names and modes, and
//! their order (`host.json`, `handler`, then the functions by name); [`crate::archive`] zips an
//! app root and [`AppRoot::stage`] copies it to a directory.
//!
//! It trusts the project's files to be what `tests/function_app.rs` checks (schemas, routes) and
//! copies them byte for byte. It never holds `local.settings.json` (local secrets), whatever a
//! function folder contains: only `function.json` is taken from each, and a file of that name is
//! refused outright.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Name of the custom-handler executable at the app root (`host.json`'s `defaultExecutablePath`),
/// and of the binary target that builds it.
pub const HANDLER: &str = "handler";

/// The Cargo package whose binary [`HANDLER`] is.
pub const HANDLER_PACKAGE: &str = "iothub-sas-handler";

/// The settings file of local runs: never deployed.
pub const LOCAL_SETTINGS: &str = "local.settings.json";

/// One file of the app root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFile {
    /// Its path inside the app root, `/`-separated (`GetSasToken/function.json`).
    pub name: String,
    /// Where its bytes come from.
    pub source: PathBuf,
    /// Its permission bits (0o755 or 0o644).
    pub mode: u32,
}

/// The files of a deployable app root, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRoot {
    files: Vec<AppFile>,
}

impl AppRoot {
    /// The app root of the project in `project`, with the executable at `handler`.
    pub fn collect(project: &Path, handler: &Path) -> Result<Self> {
        let mut files = vec![
            AppFile {
                name: "host.json".to_owned(),
                source: project.join("host.json"),
                mode: 0o644,
            },
            AppFile {
                name: HANDLER.to_owned(),
                source: handler.to_path_buf(),
                mode: 0o755,
            },
        ];
        for function in function_names(&project.join("function-apps"))? {
            files.push(AppFile {
                source: project
                    .join("function-apps")
                    .join(&function)
                    .join("function.json"),
                name: format!("{function}/function.json"),
                mode: 0o644,
            });
        }
        Self::new(files)
    }

    /// An app root of exactly `files`, refusing names that could escape the root or that name
    /// local settings.
    fn new(files: Vec<AppFile>) -> Result<Self> {
        for file in &files {
            let parts: Vec<&str> = file.name.split('/').collect();
            if parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
            {
                return Err(Error::Input {
                    what: file.name.clone(),
                    problem: "not a plain relative path inside the app root".to_owned(),
                });
            }
            if parts.last() == Some(&LOCAL_SETTINGS) {
                return Err(Error::Input {
                    what: file.name.clone(),
                    problem: "refusing to package local.settings.json (local settings and secrets)"
                        .to_owned(),
                });
            }
        }
        Ok(Self { files })
    }

    /// The files, in archive order.
    pub fn files(&self) -> &[AppFile] {
        &self.files
    }

    /// Writes the app root to `dir`, replacing whatever was there, with each file's mode and
    /// directories 0755 (so the result does not depend on the umask).
    pub fn stage(&self, dir: &Path) -> Result<()> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(Error::io(dir))?;
        }
        create_dir(dir)?;
        for file in &self.files {
            let target = dir.join(&file.name);
            if let Some(parent) = target.parent() {
                create_dir(parent)?;
            }
            fs::copy(&file.source, &target).map_err(Error::io(&file.source))?;
            set_mode(&target, file.mode)?;
        }
        Ok(())
    }
}

/// The folders of `function_apps` that hold a `function.json`, sorted by name.
fn function_names(function_apps: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(function_apps).map_err(Error::io(function_apps))? {
        let entry = entry.map_err(Error::io(function_apps))?;
        if !entry.path().join("function.json").is_file() {
            continue;
        }
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| Error::Input {
                what: function_apps.join(&name).display().to_string(),
                problem: "a function folder's name must be UTF-8".to_owned(),
            })?;
        names.push(name);
    }
    if names.is_empty() {
        return Err(Error::Input {
            what: function_apps.display().to_string(),
            problem: "no <Function>/function.json found".to_owned(),
        });
    }
    names.sort();
    Ok(names)
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io(dir))?;
    set_mode(dir, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io(path))
}

/// A scratch project for the tests of this crate: `host.json`, `handler` and the given functions,
/// in a fresh directory under the system's temporary directory, removed on drop.
#[cfg(test)]
pub(crate) struct ScratchProject {
    pub(crate) dir: PathBuf,
}

#[cfg(test)]
impl ScratchProject {
    pub(crate) fn new(test: &str, functions: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("function-apps")).expect("create the scratch project");
        fs::write(dir.join("host.json"), b"{\"version\": \"2.0\"}\n").expect("write host.json");
        fs::write(dir.join(HANDLER), b"\x7fELF not really").expect("write handler");
        for function in functions {
            let folder = dir.join("function-apps").join(function);
            fs::create_dir_all(&folder).expect("create a function folder");
            fs::write(
                folder.join("function.json"),
                format!("{{\"f\": \"{function}\"}}\n"),
            )
            .expect("write function.json");
        }
        Self { dir }
    }

    pub(crate) fn app_root(&self) -> Result<AppRoot> {
        AppRoot::collect(&self.dir, &self.dir.join(HANDLER))
    }
}

#[cfg(test)]
impl Drop for ScratchProject {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(root: &AppRoot) -> Vec<&str> {
        root.files().iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn host_json_and_handler_come_first_then_the_functions_by_name() {
        let project = ScratchProject::new("order", &["getB", "GetA"]);
        let root = project.app_root().expect("collect");
        assert_eq!(
            names(&root),
            [
                "host.json",
                HANDLER,
                "GetA/function.json",
                "getB/function.json"
            ]
        );
        let modes: Vec<u32> = root.files().iter().map(|f| f.mode).collect();
        assert_eq!(modes, [0o644, 0o755, 0o644, 0o644]);
    }

    #[test]
    fn only_function_json_is_taken_from_a_function_folder() {
        let project = ScratchProject::new("only-function-json", &["GetA"]);
        let folder = project.dir.join("function-apps/GetA");
        fs::write(folder.join(LOCAL_SETTINGS), b"{}").expect("write local settings");
        fs::write(folder.join("notes.md"), b"notes").expect("write notes");
        fs::create_dir_all(project.dir.join("function-apps/NotAFunction")).expect("mkdir");
        let root = project.app_root().expect("collect");
        assert_eq!(names(&root), ["host.json", HANDLER, "GetA/function.json"]);
    }

    #[test]
    fn local_settings_and_escaping_names_are_refused() {
        for name in [
            LOCAL_SETTINGS,
            "GetA/local.settings.json",
            "../handler",
            "/etc/passwd",
            "GetA//function.json",
        ] {
            let file = AppFile {
                name: name.to_owned(),
                source: PathBuf::from("x"),
                mode: 0o644,
            };
            assert!(
                matches!(AppRoot::new(vec![file]), Err(Error::Input { .. })),
                "{name} must be refused"
            );
        }
    }

    #[test]
    fn a_project_without_functions_is_refused() {
        let project = ScratchProject::new("no-functions", &[]);
        let error = project.app_root().expect_err("refused");
        assert!(error.to_string().contains("no <Function>/function.json"));
    }

    #[test]
    fn staging_writes_exactly_the_app_root_with_its_modes() {
        let project = ScratchProject::new("stage", &["GetA"]);
        let stage = project.dir.join("dist/app");
        fs::create_dir_all(&stage).expect("mkdir");
        fs::write(stage.join("stale.txt"), b"from an earlier run").expect("write a stale file");

        project
            .app_root()
            .expect("collect")
            .stage(&stage)
            .expect("stage");

        let mode = |path: &str| {
            fs::metadata(stage.join(path))
                .expect("staged file")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("host.json"), 0o644);
        assert_eq!(mode(HANDLER), 0o755);
        assert_eq!(mode("GetA"), 0o755);
        assert_eq!(mode("GetA/function.json"), 0o644);
        assert!(!stage.join("stale.txt").exists(), "stage starts empty");
        assert_eq!(
            fs::read(stage.join("GetA/function.json")).expect("read"),
            fs::read(project.dir.join("function-apps/GetA/function.json")).expect("read")
        );
    }
}
