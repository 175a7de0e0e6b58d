//! Start-ups that must be refused: the binary started with bad settings must exit non-zero
//! before it listens, with exactly one stderr line `configuration error: <SETTING>: <problem>`.
//! Many such start-ups run side by side, since each only parses its settings and exits.

use std::process::ExitStatus;
use std::time::Duration;

use super::process;
use super::settings::Settings;
use super::side_by_side::problems_of_each;
use super::waiting::poll_blocking;

/// How long a misconfigured binary may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A binary that refused to start.
pub(crate) struct StartupFailure {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the binary with `settings` and expects it to exit by itself within a few seconds.
pub(crate) fn spawn_expecting_failure(settings: &Settings) -> StartupFailure {
    let process::Started {
        mut child,
        stdout,
        stderr,
        readers,
        ..
    } = process::start(settings);
    let exited = poll_blocking(EXIT_TIMEOUT, || {
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for the handler failed: {e}"))
    });
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the handler was still running after {EXIT_TIMEOUT:?} with settings \
             {settings:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            stdout.text(),
            stderr.text()
        );
    };
    for reader in readers {
        let _ = reader.join();
    }
    StartupFailure {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

impl StartupFailure {
    /// Everything wrong with this failure for a bad `setting`: it must exit non-zero before
    /// `listening`, with exactly one stderr line `configuration error: <setting>: <problem>`.
    /// Empty when it is right.
    pub(crate) fn problems_naming(&self, setting: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.status.success() {
            problems.push(format!("exited successfully ({})", self.status));
        }
        if self.stdout.contains("listening") {
            problems.push("printed a `listening` line".to_owned());
        }
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        if lines.len() != 1 {
            problems.push(format!("wrote {} stderr lines, not one", lines.len()));
        }
        let prefix = format!("configuration error: {setting}: ");
        match lines.first() {
            Some(line) if line.starts_with(&prefix) && line.len() > prefix.len() => {}
            Some(line) => {
                problems.push(format!("stderr line is not `{prefix}<problem>`: {line:?}"))
            }
            None => problems.push("wrote nothing to stderr".to_owned()),
        }
        problems
    }
}

/// One start-up that must be refused: what is wrong, the full settings, and the setting the one
/// stderr line must name.
pub(crate) struct Refusal<'a> {
    pub(crate) description: String,
    pub(crate) settings: Settings,
    pub(crate) setting: &'a str,
}

/// A case written as `(description, settings, setting)`.
impl<'a> From<(&str, Settings, &'a str)> for Refusal<'a> {
    fn from((description, settings, setting): (&str, Settings, &'a str)) -> Self {
        Refusal {
            description: description.to_owned(),
            settings,
            setting,
        }
    }
}

/// Starts the binary once per case, side by side (each only parses its settings and exits), and
/// returns one report line per case that was not refused as [`StartupFailure::problems_naming`]
/// requires or for which `also_wrong` finds something. Empty when every case is right.
pub(crate) fn misrefused_startups(
    cases: &[Refusal<'_>],
    also_wrong: impl Fn(&StartupFailure) -> Vec<String> + Sync,
) -> Vec<String> {
    misrefused_startups_by_case(cases, |_, failure| also_wrong(failure))
}

/// [`misrefused_startups`] where what else is wrong depends on the case: `also_wrong` gets the
/// case with its failure (for instance to check that the one stderr line also names a second
/// setting, or never suggests a value).
pub(crate) fn misrefused_startups_by_case(
    cases: &[Refusal<'_>],
    also_wrong: impl Fn(&Refusal<'_>, &StartupFailure) -> Vec<String> + Sync,
) -> Vec<String> {
    problems_of_each(cases, "a start-up check", |case| {
        let failure = spawn_expecting_failure(&case.settings);
        let mut problems = failure.problems_naming(case.setting);
        problems.extend(also_wrong(case, &failure));
        (!problems.is_empty()).then(|| {
            format!(
                "{} (expected {}): {}\n    stderr: {:?}",
                case.description,
                case.setting,
                problems.join("; "),
                failure.stderr
            )
        })
    })
}
