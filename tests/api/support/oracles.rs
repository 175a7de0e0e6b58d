//! The official Azure IoT SDKs as oracles: Python's `azure-iot-device` and Node's
//! `azure-iot-common` (installed by `make oracles`), each run as a child process on a batch of
//! cases (`tests/oracles/*/sas_oracle.*` say what a batch holds and what they answer).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::process::ensure_tools;
use super::sas::SasToken;

/// One case of an oracle batch: `token`, which the handler issued for `device_id` on the hub
/// `hostname`, asked to live `ttl` seconds.
pub(crate) fn oracle_case(hostname: &str, device_id: &str, ttl: u64, token: &SasToken) -> Value {
    json!({
        "hostname": hostname,
        "device_id": device_id,
        "se": token.se,
        "ttl": ttl,
        "token": token.raw,
    })
}

/// A batch of `cases` for the oracles to sign with the base64 `key` under `policy`.
pub(crate) fn oracle_batch(
    key: &str,
    policy: &str,
    cases: impl IntoIterator<Item = Value>,
) -> Value {
    let cases: Vec<Value> = cases.into_iter().collect();
    json!({ "key": key, "policy": policy, "cases": cases })
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the Python oracle (`azure-iot-device`) on one batch; returns its `results`.
pub(crate) fn python_oracle(request: &Value) -> Vec<Value> {
    ensure_tools();
    let python = manifest_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the Python oracle is not installed ({} is missing): run `make oracles`",
        python.display()
    );
    run_oracle(
        &python,
        &manifest_dir().join("tests/oracles/python/sas_oracle.py"),
        request,
    )
}

/// Runs the Node oracle (`azure-iot-common`) on one batch; returns its `results`.
pub(crate) fn node_oracle(request: &Value) -> Vec<Value> {
    ensure_tools();
    let dir = manifest_dir().join("tests/oracles/node");
    let sdk = dir.join("node_modules/azure-iot-common/package.json");
    assert!(
        sdk.exists(),
        "the Node oracle is not installed ({} is missing): run `make oracles`",
        sdk.display()
    );
    run_oracle(Path::new("node"), &dir.join("sas_oracle.js"), request)
}

fn run_oracle(program: &Path, script: &Path, request: &Value) -> Vec<Value> {
    let mut child = Command::new(program)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the oracle {} ({e}): run `make oracles`",
                program.display()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())
        .expect("the oracle reads its batch from stdin");
    let output = child
        .wait_with_output()
        .expect("the oracle runs to its end");
    assert!(
        output.status.success(),
        "the oracle {} failed ({}); is it installed? run `make oracles`\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the oracle {} printed no JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    });
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("the oracle answer has no `results`: {answer}"))
        .clone()
}

/// A string member of an oracle result.
pub(crate) fn oracle_str<'a>(result: &'a Value, member: &str) -> &'a str {
    result[member]
        .as_str()
        .unwrap_or_else(|| panic!("oracle result lacks string `{member}`: {result}"))
}
