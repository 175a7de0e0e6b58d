//! Start-up failures other than a malformed setting (those are `bad_settings`): the process exits
//! non-zero before it listens, and its one stderr line says what failed and names the setting or
//! resource to look at — never "cannot serve" for something that is not about serving.

use std::net::TcpListener;

use crate::support::settings::Settings;
use crate::support::startup::spawn_expecting_failure;

/// Runs the binary with `settings`; asserts a non-zero exit, no `listening` line and exactly one
/// stderr line that starts with `prefix` and contains every one of `names`.
fn assert_refused_naming(description: &str, settings: &Settings, prefix: &str, names: &[&str]) {
    let failure = spawn_expecting_failure(settings);
    assert!(
        !failure.status.success(),
        "{description}: exited successfully"
    );
    assert!(
        !failure.stdout.contains("\"listening\""),
        "{description}: printed a listening line:\n{}",
        failure.stdout
    );
    let lines: Vec<&str> = failure
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{description}: stderr {:?}", failure.stderr);
    assert!(
        lines[0].starts_with(prefix),
        "{description}: stderr line {:?} does not start with {prefix:?}",
        lines[0]
    );
    for name in names {
        assert!(
            lines[0].contains(name),
            "{description}: stderr line {:?} does not name {name:?}",
            lines[0]
        );
    }
}

#[test]
fn a_port_already_in_use_is_named_as_the_port_that_could_not_be_bound() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("bound").port().to_string();
    assert_refused_naming(
        "port in use",
        &Settings::base().set("FUNCTIONS_CUSTOMHANDLER_PORT", &port),
        &format!(
            "startup error: cannot listen on 127.0.0.1:{port} (FUNCTIONS_CUSTOMHANDLER_PORT): "
        ),
        &["in use"],
    );
}

#[test]
fn a_key_vault_client_that_cannot_be_built_names_key_vault_and_the_identity_endpoint() {
    let settings = Settings::key_vault("iothub-device-policy")
        .set("KEYVAULT_URI", "https://contoso-kv.vault.azure.net/")
        .set("IDENTITY_ENDPOINT", "not a url")
        .set("IDENTITY_HEADER", "x");
    assert_refused_naming(
        "malformed IDENTITY_ENDPOINT",
        &settings,
        "startup error: cannot set up the Key Vault client (KEYVAULT_URI, IDENTITY_ENDPOINT): ",
        &["not a url"],
    );
}

#[test]
fn an_invalid_log_filter_is_a_configuration_error_naming_rust_log() {
    assert_refused_naming(
        "bad RUST_LOG",
        &Settings::base().set("RUST_LOG", "info,[[["),
        "configuration error: RUST_LOG: ",
        &[],
    );
}

/// Without this check the Azure SDK panicked while building its client, and the bearer layer
/// failed later with a message about "the system": with an empty `SSL_CERT_FILE` no https server
/// can be trusted, so either https client must stop the start naming the setting.
#[test]
fn a_trust_file_without_certificates_is_named_for_every_https_client() {
    let empty = std::env::temp_dir().join(format!("no-roots-{}.pem", std::process::id()));
    std::fs::write(&empty, "").expect("write an empty file");
    let path = empty.to_str().expect("a UTF-8 temp path");
    let key_vault = Settings::key_vault("iothub-device-policy")
        .set("KEYVAULT_URI", "https://contoso-kv.vault.azure.net/")
        .set("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
        .set("IDENTITY_HEADER", "x")
        .set("SSL_CERT_FILE", path);
    let bearer = Settings::base()
        .set("AUTH_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")
        .set("AUTH_AUDIENCE", "api://iothub-sas-handler")
        .set(
            "AUTH_ALLOWED_CALLERS",
            "11111111-2222-3333-4444-555555555555",
        )
        .set("SSL_CERT_FILE", path);
    for (description, settings) in [("Key Vault", key_vault), ("bearer layer", bearer)] {
        assert_refused_naming(
            description,
            &settings,
            "configuration error: SSL_CERT_FILE: holds no PEM certificate",
            &[],
        );
    }
    std::fs::remove_file(&empty).ok();
}
