//! The README's quick start, run as a user pastes it: each mode's environment block, taken from
//! the README itself, is run by bash to set up the real binary's environment; the request block
//! after it is run by bash too (curl, openssl), against that binary; and every token it prints is
//! checked by the README's own `check_token.py`. A block that no longer starts the handler, a
//! request that no longer gets its token or its refusal, or a script that no longer checks
//! signatures fails here — and the script must also refuse a wrong key, a wrong registration id
//! and a changed expiry, so it cannot pass by checking nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::app::TestApp;
use crate::support::process::output_within;
use crate::support::settings::{KEY, Settings};

/// Where the README says the handler listens when `FUNCTIONS_CUSTOMHANDLER_PORT` is unset.
const README_ADDRESS: &str = "127.0.0.1:8080";
/// The line that ends every environment block: it starts the handler.
const START: &str = "target/release/handler";
/// Variables bash sets by itself; everything else a block's environment holds, the block set.
const SHELL_VARIABLES: &[&str] = &["PATH", "PWD", "OLDPWD", "SHLVL", "_"];

/// A fenced code block of the README's quick start.
struct Block {
    language: String,
    text: String,
}

/// The fenced blocks between `## Quick start` and the next `## ` heading.
fn quick_start_blocks() -> Vec<Block> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md is readable");
    let section = readme
        .split_once("\n## Quick start")
        .map(|(_, rest)| {
            rest.split_once("\n## ")
                .map_or(rest, |(section, _)| section)
        })
        .expect("README.md has a `## Quick start` section");
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(language) = line.strip_prefix("```") else {
            continue;
        };
        let text: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push(Block {
            language: language.to_owned(),
            text: text.join("\n") + "\n",
        });
    }
    blocks
}

/// The README's checking script.
fn check_script(blocks: &[Block]) -> &str {
    let scripts: Vec<&Block> = blocks.iter().filter(|b| b.language == "python").collect();
    assert_eq!(scripts.len(), 1, "the quick start has one python block");
    assert!(
        scripts[0].text.starts_with("# check_token.py"),
        "the python block is check_token.py"
    );
    &scripts[0].text
}

/// Each mode: its environment block (ending in [`START`]) and the request block after it.
fn modes(blocks: &[Block]) -> Vec<(&str, &str)> {
    let shell: Vec<&Block> = blocks.iter().filter(|b| b.language == "sh").collect();
    shell
        .iter()
        .enumerate()
        .filter(|(_, block)| block.text.trim_end().ends_with(START))
        .map(|(i, block)| {
            let requests = shell
                .get(i + 1)
                .filter(|next| !next.text.trim_end().ends_with(START))
                .unwrap_or_else(|| panic!("no request block after:\n{}", block.text));
            (block.text.as_str(), requests.text.as_str())
        })
        .collect()
}

/// Runs `script` with bash (`set -euo pipefail`) in `dir`, with nothing in the environment but
/// `PATH`.
fn bash(script: &str, dir: &Path, what: &str) -> Output {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    output_within(&mut command, Duration::from_secs(60), what)
}

/// What an environment block exports, as bash evaluates it (quotes, `$(…)` and all); the start
/// line itself is left out — the test starts the binary.
fn environment_of(block: &str, dir: &Path) -> Settings {
    let setup = block
        .trim_end()
        .strip_suffix(START)
        .expect("an environment block ends with the start line");
    let output = bash(&format!("{setup}\nenv -0\n"), dir, "an environment block");
    assert!(
        output.status.success(),
        "the environment block failed ({}):\n{block}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let env = String::from_utf8(output.stdout).expect("the environment is UTF-8");
    let exported = env
        .split('\0')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| !SHELL_VARIABLES.contains(name))
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    Settings::none().set_all(exported)
}

fn value<'s>(settings: &'s Settings, name: &str) -> Option<&'s str> {
    settings.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Runs the README's `check_token.py` with `args` on `answer`; (exit code, what it printed).
fn check_token(dir: &Path, answer: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new("python3")
        .arg(dir.join("check_token.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin is piped"),
        answer.as_bytes(),
    )
    .expect("the script reads the answer");
    let output = child
        .wait_with_output()
        .expect("the script runs to its end");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// The status codes a request block's comments promise (`# 403: …`), in order.
fn promised_statuses(requests: &str) -> Vec<&str> {
    requests
        .lines()
        .filter_map(|line| line.trim().strip_prefix("# ")?.get(..3))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

#[tokio::test]
async fn every_quick_start_block_runs_and_every_token_passes_the_readmes_check() {
    let blocks = quick_start_blocks();
    let script = check_script(&blocks);
    let modes = modes(&blocks);
    assert_eq!(
        modes.len(),
        3,
        "three modes: hub policy, enrollment group, certificate + scopes"
    );

    let mut seen = Vec::new();
    for (environment, requests) in modes {
        let dir = tempfile_dir();
        std::fs::write(dir.join("check_token.py"), script).expect("the temp dir is writable");
        let settings = environment_of(environment, &dir);
        assert_eq!(
            value(&settings, "FUNCTIONS_CUSTOMHANDLER_PORT"),
            None,
            "the blocks leave the port at its default, which the request blocks use"
        );
        let app = TestApp::spawn(&settings);

        let output = bash(
            &requests.replace(README_ADDRESS, &app.address.to_string()),
            &dir,
            "a request block",
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the request block failed ({}):\n{requests}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            output.status
        );
        let checks = requests.matches("check_token.py").count();
        assert!(
            checks > 0,
            "every request block checks a token:\n{requests}"
        );
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.ends_with(": signature OK"))
                .count(),
            checks,
            "each check_token.py run says `signature OK`:\n{stdout}"
        );
        let statuses: Vec<&str> = stdout
            .lines()
            .filter(|l| l.len() == 3 && l.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        assert_eq!(
            statuses,
            promised_statuses(requests),
            "the status codes the block's comments promise:\n{stdout}"
        );

        // The script checks: a wrong key, a wrong id and a changed expiry are refused.
        let mode = value(&settings, "SIGNING_MODE")
            .unwrap_or("hub-policy")
            .to_owned();
        match mode.as_str() {
            // With the certificate layer on, the request block's 403s already show refusals.
            "hub-policy" if value(&settings, "CLIENT_CERT_THUMBPRINTS").is_some() => {}
            "hub-policy" => {
                let key = value(&settings, "IOTHUB_POLICY_KEY").expect("a policy key");
                let answer = answer(&app, "/api/devices/sensor-1/sas-token").await;
                assert_eq!(check_token(&dir, &answer, &[key]).0, Some(0), "{answer}");
                let (code, text) = check_token(&dir, &answer, &[KEY]);
                assert_eq!(code, Some(1), "another key is refused: {text}");
                assert!(text.contains("signature does NOT match"), "{text}");
                let expiry = answer_expiry(&answer);
                let later = answer.replace(&format!("se={expiry}"), &format!("se={}", expiry + 1));
                let (code, text) = check_token(&dir, &later, &[key]);
                assert_eq!(code, Some(1), "a changed expiry is refused: {text}");
            }
            "enrollment-group" => {
                let key = value(&settings, "ENROLLMENT_GROUP_KEY").expect("a group key");
                let answer = answer(&app, "/api/devices/sensor-1/sas-token").await;
                assert_eq!(
                    check_token(&dir, &answer, &[key, "sensor-1"]).0,
                    Some(0),
                    "{answer}"
                );
                let (code, text) = check_token(&dir, &answer, &[key, "sensor-2"]);
                assert_eq!(code, Some(1), "another device's key is refused: {text}");
            }
            other => panic!("a quick start block in an unknown mode: {other}"),
        }
        seen.push((
            mode,
            value(&settings, "DPS_ID_SCOPE").is_some(),
            value(&settings, "CLIENT_CERT_THUMBPRINTS").is_some()
                && value(&settings, "DEVICE_SCOPES").is_some(),
        ));
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(
        seen,
        [
            ("hub-policy".to_owned(), false, false),
            ("enrollment-group".to_owned(), true, false),
            ("hub-policy".to_owned(), false, true),
        ],
        "the quick start covers hub policy, enrollment group with DPS, and the certificate \
         layer with DEVICE_SCOPES"
    );
}

/// The body of a 200 for `path`.
async fn answer(app: &TestApp, path: &str) -> String {
    let response = app.get(path, &[]).await;
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.text().await.expect("the body is readable")
}

/// The `se` of the token in `answer`.
fn answer_expiry(answer: &str) -> u64 {
    let body: Value = serde_json::from_str(answer).expect("the answer is JSON");
    body["sastoken"]
        .as_str()
        .and_then(|token| token.split('&').find_map(|p| p.strip_prefix("se=")))
        .and_then(|se| se.parse().ok())
        .unwrap_or_else(|| panic!("no se in {answer}"))
}

/// A fresh directory for one mode's files (the certificate, the script).
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "quick-start-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("the temp directory is writable");
    dir
}
