//! `cargo xtask <task>`: reads the command line and runs one task of the library. On failure it
//! prints `<task>: error: <what failed>` on stderr and exits 1; a bad command line exits 2.

use std::process::ExitCode;

use xtask::{package, project_root};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  package               build the static x86-64 handler, stage dist/app, write dist/handler.zip
                        (`make package`; the musl target and compiler come from `make tools`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let project = project_root();
    let (task, result) = match args.as_slice() {
        ["package"] => ("package", package::run(&project)),
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

fn usage(problem: &str) -> ExitCode {
    eprintln!("xtask: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}
