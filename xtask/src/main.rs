//! `cargo xtask <task>`: reads the command line and runs one task of the library. On failure it
//! prints `<task>: error: <what failed>` on stderr and exits 1; a bad command line exits 2.

use std::process::ExitCode;

use xtask::{package, project_root, run_local};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  package               build the static x86-64 handler, stage dist/app, write dist/handler.zip
                        (`make package`; the musl target and compiler come from `make tools`)
  run-local [--port N]  serve the app on 127.0.0.1:N (default 7071) with local.settings.json:
                        `func start` when Core Tools is installed, else the handler alone (`make run`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let project = project_root();
    let (task, result) = match args.as_slice() {
        ["package"] => ("package", package::run(&project)),
        ["run-local", options @ ..] => match port(options) {
            Ok(port) => (
                "run-local",
                run_local::run(&project, port).map(|never| match never {}),
            ),
            Err(problem) => return usage(&problem),
        },
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [] => return usage("no task given"),
        [other, ..] => return usage(&format!("unknown task or arguments: {other}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{task}: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The port of `run-local [--port N]`.
fn port(options: &[&str]) -> Result<u16, String> {
    let text = match options {
        [] => return Ok(run_local::DEFAULT_PORT),
        ["--port", text] => *text,
        [option] if option.starts_with("--port=") => &option["--port=".len()..],
        _ => return Err(format!("run-local takes only --port N, not {options:?}")),
    };
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("--port must be 1..=65535, not {text:?}")),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("xtask: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_local_reads_its_port_in_either_spelling_or_defaults() {
        assert_eq!(port(&[]), Ok(run_local::DEFAULT_PORT));
        assert_eq!(port(&["--port", "8080"]), Ok(8080));
        assert_eq!(port(&["--port=8081"]), Ok(8081));
    }

    #[test]
    fn run_local_refuses_ports_that_cannot_be_served() {
        for options in [
            &["--port", "0"][..],
            &["--port", "65536"],
            &["--port", "http"],
            &["--port"],
            &["8080"],
            &["--port", "1", "--port", "2"],
        ] {
            assert!(port(options).is_err(), "{options:?}");
        }
    }
}
