//! The one error type of the build tasks. A task's error message is all a developer or a CI log
//! gets, so every variant names what failed: the file, the command, the setting or the missing
//! tool, and for a missing tool how to get it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::elf::Refusal;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a task stopped.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing `path` failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// An input the task reads is not what it needs: a project file, a setting, a variable.
    Input {
        /// The input, as a developer would look for it (`local.settings.json`, `SOURCE_DATE_EPOCH`).
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A program the task runs is not installed.
    MissingTool {
        /// The program or component.
        tool: String,
        /// How to get it (usually `run \`make tools\``).
        remedy: &'static str,
    },
    /// A command could not start, or failed.
    Command {
        /// The command line, shortened to what identifies it.
        command: String,
        /// How it failed.
        problem: String,
    },
    /// The built handler cannot be the packaged one.
    Binary {
        /// The binary that was refused.
        path: PathBuf,
        /// Why.
        refusal: Refusal,
    },
    /// Writing or reading a zip archive failed.
    Zip {
        /// The archive.
        path: PathBuf,
        /// What the zip crate said.
        source: zip::result::ZipError,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`, for `map_err`.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An [`Error::Zip`] for `path`, for `map_err`.
    pub fn zip(path: &Path) -> impl FnOnce(zip::result::ZipError) -> Error + '_ {
        move |source| Error::Zip {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Input { what, problem } => write!(f, "{what}: {problem}"),
            Error::MissingTool { tool, remedy } => write!(f, "{tool} is missing: {remedy}"),
            Error::Command { command, problem } => write!(f, "`{command}`: {problem}"),
            Error::Binary { path, refusal } => write!(f, "{}: {refusal}", path.display()),
            Error::Zip { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Zip { source, .. } => Some(source),
            Error::Input { .. }
            | Error::MissingTool { .. }
            | Error::Command { .. }
            | Error::Binary { .. } => None,
        }
    }
}
