//! Checks of what gets deployed to Azure Functions.
//!
//! * `host.json`, every `function-apps/*/function.json` and
//!   `local.settings.json.example` validate against SchemaStore's JSON Schemas
//!   vendored in `schemas/` (Python `jsonschema.Draft7Validator` from the
//!   project venv that `make oracles` installs), plus the rules those schemas
//!   miss (methods, auth level, routes, custom-handler switches).
//! * `dist/handler.zip` (written by `make package`) holds exactly the app root:
//!   `host.json`, `handler` (mode 0755) and `<Function>/function.json`, copied
//!   byte for byte; `handler` is an x86-64 ELF that is fully static (or needs
//!   no glibc newer than 2.31) and actually runs: with no settings it reports a
//!   `configuration error:` on stderr and exits non-zero.
//!
//! The packaged binary's ELF headers are read with `xtask::elf`, the reader `cargo xtask package`
//! judges the binary with before zipping it (its unit tests feed it made-up and real binaries);
//! this file reads the zip with the `zip` crate's reader, apart from the writer in xtask.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xtask::elf::Linkage;

#[path = "common/prerequisites.rs"]
mod prerequisites;

/// Stops this test binary with one line when the venv or the package is missing (see
/// `tests/common/prerequisites.rs`); called before anything reads them or starts a process.
fn ensure_tools() {
    prerequisites::ensure(&[&prerequisites::ORACLES[..1], &prerequisites::PACKAGE]);
}

/// The functions this app serves, with the route each one must declare.
const FUNCTIONS: [(&str, &str); 4] = [
    (
        "GetModuleSasToken",
        "devices/{deviceId}/modules/{moduleId}/sas-token",
    ),
    (
        "GetRegistrationSasToken",
        "registrations/{registrationId}/sas-token",
    ),
    ("GetSasToken", "devices/{deviceId}/sas-token"),
    ("getSASTokenByDeviceID", "getSASTokenByDeviceID"),
];

/// Name of the custom-handler executable at the app root.
const HANDLER: &str = "handler";

/// Newest glibc symbol version a dynamically linked handler may need (Debian 11 bullseye images).
const MAX_GLIBC: (u32, u32) = (2, 31);

/// Validates the JSON document on stdin against the schema file in argv[1] with
/// Draft7Validator; prints one line per error and exits 1 if there are any.
const VALIDATE_PY: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.stderr.write("jsonschema is not installed in the project venv\n")
    sys.exit(3)
with open(sys.argv[1], encoding="utf-8") as f:
    schema = json.load(f)
doc = json.load(sys.stdin)
errors = sorted(
    jsonschema.Draft7Validator(schema).iter_errors(doc),
    key=lambda e: [str(p) for p in e.absolute_path],
)
for e in errors:
    print("/" + "/".join(str(p) for p in e.absolute_path) + ": " + e.message)
sys.exit(1 if errors else 0)
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn schema_path(file: &str) -> PathBuf {
    let path = repo().join("schemas").join(file);
    assert!(
        path.is_file(),
        "{} not found: the SchemaStore schemas are vendored in schemas/ (see schemas/README.md)",
        path.display()
    );
    path
}

fn venv_python() -> PathBuf {
    ensure_tools();
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make oracles` (it installs jsonschema into the project venv)",
        python.display()
    );
    python
}

/// Errors that `jsonschema.Draft7Validator` reports for `doc` against `schema_file`.
fn schema_errors(schema_file: &str, doc: &Value) -> Vec<String> {
    let schema = schema_path(schema_file);
    let mut child = Command::new(venv_python())
        .arg("-c")
        .arg(VALIDATE_PY)
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the venv python (run `make oracles`)");
    let input = serde_json::to_vec(doc).expect("serialize the document");
    child
        .stdin
        .take()
        .expect("python stdin is piped")
        .write_all(&input)
        .expect("send the document to python");
    let out = child.wait_with_output().expect("wait for python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Vec::new(),
        Some(1) => stdout.lines().map(str::to_owned).collect(),
        Some(3) => panic!("{}: run `make oracles`", stderr.trim()),
        _ => panic!(
            "schema validation with {} failed to run ({}): {stderr}",
            schema.display(),
            out.status
        ),
    }
}

fn assert_schema_valid(schema_file: &str, doc: &Value, what: &str) {
    let errors = schema_errors(schema_file, doc);
    assert!(
        errors.is_empty(),
        "{what} does not validate against {schema_file}:\n{}",
        errors.join("\n")
    );
}

fn function_dirs() -> BTreeSet<String> {
    let dir = repo().join("function-apps");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("read function-apps entry"))
        .filter(|entry| entry.path().join("function.json").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

fn expected_function_names() -> BTreeSet<String> {
    FUNCTIONS
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

#[test]
fn host_json_validates_and_configures_the_forwarding_custom_handler() {
    let host = read_json(&repo().join("host.json"));
    assert_schema_valid("host.json.schema.json", &host, "host.json");

    assert_eq!(host["version"], json!("2.0"), "host.json version");
    let handler = &host["customHandler"];
    assert!(
        handler.is_object(),
        "host.json needs a customHandler section"
    );
    assert_eq!(
        handler["description"]["defaultExecutablePath"],
        json!(HANDLER),
        "customHandler.description.defaultExecutablePath must name the packaged binary"
    );
    assert_eq!(
        handler["enableForwardingHttpRequest"],
        json!(true),
        "the handler serves the forwarded request itself (enableForwardingHttpRequest: true)"
    );
    assert_ne!(
        handler.get("enableProxyingHttpRequest"),
        Some(&json!(true)),
        "enableProxyingHttpRequest must stay off: the YARP proxy rewrites X-Forwarded-For"
    );
    // Every function is an HTTP trigger, a binding the host registers itself (AddHttp); without
    // an extension bundle the host loads extensions only from bin/extensions.json, which the
    // package has none of, so a bundle would be downloaded and loaded for nothing
    // (docs/azure-behaviour.md §1).
    assert!(
        host.get("extensionBundle").is_none(),
        "host.json needs no extensionBundle: the functions are HTTP triggers only"
    ); // The request lines are the audit log and arrive as traces, and the host's request items are
    // what they join to: adaptive sampling (on by default) must keep every one of both
    // (docs/azure-behaviour.md §13; the cost is in docs/operations.md).
    let sampling = &host["logging"]["applicationInsights"]["samplingSettings"];
    let excluded: Vec<&str> = sampling["excludedTypes"]
        .as_str()
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .collect();
    assert!(
        sampling["isEnabled"] == json!(false)
            || (excluded.contains(&"Request") && excluded.contains(&"Trace")),
        "host.json: adaptive sampling must not drop Request or Trace items: {sampling}"
    );
    assert!(
        sampling.get("includedTypes").is_none(),
        "host.json: includedTypes stays unset, so that excludedTypes alone decides: {sampling}"
    );
}

#[test]
fn function_json_files_validate_and_declare_the_http_get_routes() {
    assert_eq!(
        function_dirs(),
        expected_function_names(),
        "function-apps/ must hold exactly these functions"
    );
    for (name, route) in FUNCTIONS {
        let path = repo()
            .join("function-apps")
            .join(name)
            .join("function.json");
        let doc = read_json(&path);
        assert_schema_valid(
            "function.json.schema.json",
            &doc,
            &path.display().to_string(),
        );

        assert_ne!(
            doc.get("disabled"),
            Some(&json!(true)),
            "{name} is disabled"
        );
        let bindings = doc["bindings"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: bindings must be an array"));
        assert_eq!(
            bindings.len(),
            2,
            "{name}: exactly an httpTrigger in and an http out binding"
        );
        let of_type = |t: &str| -> Vec<&Value> {
            bindings.iter().filter(|b| b["type"] == json!(t)).collect()
        };
        let triggers = of_type("httpTrigger");
        let outputs = of_type("http");
        assert_eq!(triggers.len(), 1, "{name}: one httpTrigger binding");
        assert_eq!(outputs.len(), 1, "{name}: one http output binding");

        let trigger = triggers[0];
        assert_eq!(
            trigger["direction"],
            json!("in"),
            "{name}: trigger direction"
        );
        assert_eq!(
            trigger["authLevel"],
            json!("function"),
            "{name}: authLevel must be function"
        );
        assert_eq!(
            trigger["methods"],
            json!(["get"]),
            "{name}: methods must be exactly [\"get\"] (lowercase)"
        );
        assert_eq!(trigger["route"], json!(route), "{name}: route");
        assert!(
            trigger["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{name}: trigger binding needs a name"
        );

        let output = outputs[0];
        assert_eq!(
            output["direction"],
            json!("out"),
            "{name}: http binding direction"
        );
        assert!(
            output["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{name}: http output binding needs a name"
        );
    }
}

#[test]
fn local_settings_example_validates_and_selects_the_custom_runtime() {
    let path = repo().join("local.settings.json.example");
    let doc = read_json(&path);
    assert_schema_valid(
        "local.settings.json.schema.json",
        &doc,
        "local.settings.json.example",
    );
    assert_eq!(
        doc["Values"]["FUNCTIONS_WORKER_RUNTIME"],
        json!("custom"),
        "Values.FUNCTIONS_WORKER_RUNTIME must be custom"
    );
    let values = doc["Values"].as_object().expect("Values must be an object");
    for (key, value) in values {
        assert!(
            value.is_string(),
            "Values.{key} must be a string (app settings are strings)"
        );
    }
}

/// The schema check is only worth something if it rejects bad files: under
/// draft-04 rules function.json's schema accepts `authLevel: "superuser"`.
#[test]
fn schema_validation_rejects_invalid_documents() {
    let mut function = read_json(&repo().join("function-apps/GetSasToken/function.json"));
    function["bindings"][0]["authLevel"] = json!("superuser");
    assert!(
        !schema_errors("function.json.schema.json", &function).is_empty(),
        "authLevel superuser must fail validation (is Draft7Validator in use?)"
    );

    let mut host = read_json(&repo().join("host.json"));
    host["customHandler"]["unknownSwitch"] = json!(true);
    assert!(
        !schema_errors("host.json.schema.json", &host).is_empty(),
        "unknown customHandler keys must fail validation"
    );

    let mut settings = read_json(&repo().join("local.settings.json.example"));
    settings["IsEncrypted"] = json!("no");
    assert!(
        !schema_errors("local.settings.json.schema.json", &settings).is_empty(),
        "a non-boolean IsEncrypted must fail validation"
    );
}

fn open_package() -> zip::ZipArchive<File> {
    ensure_tools();
    let path = repo().join("dist/handler.zip");
    let file = File::open(&path).unwrap_or_else(|e| {
        panic!(
            "{} cannot be opened ({e}): run `make package`",
            path.display()
        )
    });
    zip::ZipArchive::new(file).unwrap_or_else(|e| {
        panic!(
            "{} is not a valid zip ({e}): run `make package`",
            path.display()
        )
    })
}

fn zipped_bytes(archive: &mut zip::ZipArchive<File>, name: &str) -> Vec<u8> {
    let mut entry = archive
        .by_name(name)
        .unwrap_or_else(|e| panic!("dist/handler.zip has no {name}: {e}"));
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("cannot inflate {name} from dist/handler.zip: {e}"));
    bytes
}

#[test]
fn package_zip_holds_exactly_the_app_root() {
    let mut archive = open_package();
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.expect("zip entry names are UTF-8").into_owned())
        .collect();

    assert!(
        !names
            .iter()
            .any(|n| n.rsplit('/').next() == Some("local.settings.json")),
        "local.settings.json must never be packaged: {names:?}"
    );
    let mut expected: BTreeSet<String> = FUNCTIONS
        .iter()
        .map(|(name, _)| format!("{name}/function.json"))
        .collect();
    expected.insert("host.json".to_owned());
    expected.insert(HANDLER.to_owned());
    let actual: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(actual, expected, "dist/handler.zip entries");
    assert_eq!(archive.len(), expected.len(), "zip entry count: {names:?}");

    {
        let handler = archive.by_name(HANDLER).expect("handler entry");
        let mode = handler
            .unix_mode()
            .expect("handler must carry unix permissions in the zip's external attributes");
        assert_eq!(
            mode & 0o170_000,
            0o100_000,
            "handler must be a regular file"
        );
        assert_eq!(
            mode & 0o7777,
            0o755,
            "handler mode must be 0755, is {mode:o}"
        );
    }

    let mut repo_files = vec![("host.json".to_owned(), repo().join("host.json"))];
    for (name, _) in FUNCTIONS {
        repo_files.push((
            format!("{name}/function.json"),
            repo()
                .join("function-apps")
                .join(name)
                .join("function.json"),
        ));
    }
    for (entry, path) in repo_files {
        let on_disk =
            fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            zipped_bytes(&mut archive, &entry) == on_disk,
            "{entry} in dist/handler.zip differs from {}: run `make package`",
            path.display()
        );
    }
}

#[test]
fn packaged_handler_is_a_static_or_portable_x86_64_elf() {
    let mut archive = open_package();
    let binary = zipped_bytes(&mut archive, HANDLER);
    // The reader `cargo xtask package` judges the binary with (xtask/src/elf.rs, unit-tested
    // there); this test applies it to what the zip actually holds.
    let linkage = Linkage::read(&binary).expect("handler must be a 64-bit ELF file");
    assert!(
        linkage.is_x86_64(),
        "handler must be built for x86-64: {linkage:?}"
    );
    if linkage.is_fully_static() {
        return; // fully static: runs on any x86-64 Linux image
    }
    assert_eq!(
        linkage.interpreter.as_deref(),
        Some("/lib64/ld-linux-x86-64.so.2"),
        "a dynamically linked handler must use the glibc loader: {linkage:?}"
    );
    let newest = linkage.newest_glibc();
    assert!(
        newest.is_none_or(|v| v <= MAX_GLIBC),
        "handler needs GLIBC_{}.{} but Debian 11 Functions images have glibc {}.{}: {linkage:?}",
        newest.map_or(0, |v| v.0),
        newest.map_or(0, |v| v.1),
        MAX_GLIBC.0,
        MAX_GLIBC.1
    );
}

/// Waits for `child` up to `limit`, killing it if it is still running then.
fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the handler") {
            return status;
        }
        if start.elapsed() > limit {
            child.kill().expect("kill the handler");
            child.wait().expect("reap the handler");
            panic!(
                "handler still running after {limit:?} with no settings; expected a configuration error"
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn packaged_handler_runs_and_reports_missing_settings() {
    let mut archive = open_package();
    let binary = zipped_bytes(&mut archive, HANDLER);

    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("function_app-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create the scratch directory");
    let exe = dir.join(HANDLER);
    fs::write(&exe, &binary).expect("extract handler");
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod 0755 handler");
    let stderr_path = dir.join("stderr.txt");
    let stdout_path = dir.join("stdout.txt");

    // Another test thread forking while the file was open for writing can make
    // exec fail with ETXTBSY for a moment; retry briefly.
    let mut attempts = 0;
    let mut child = loop {
        let spawned = Command::new(&exe)
            .env_clear()
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create stdout file"))
            .stderr(File::create(&stderr_path).expect("create stderr file"))
            .spawn();
        match spawned {
            Ok(child) => break child,
            Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot run the packaged handler {}: {e}", exe.display()),
        }
    };
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    let stderr = fs::read_to_string(&stderr_path).expect("read handler stderr");
    let _ = fs::remove_dir_all(&dir);

    assert!(
        status.code().is_some_and(|code| code != 0),
        "handler with no settings must exit with a non-zero code, got {status}; stderr:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("configuration error: ")),
        "handler stderr must report `configuration error: <SETTING>: <problem>`, got:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "handler must not panic on missing settings:\n{stderr}"
    );
}
