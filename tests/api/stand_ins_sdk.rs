//! The stand-ins speak the real wire protocol: Azure's own SDK clients, unchanged, get a token
//! from the identity stand-in and read a secret from the vault stand-in through its proxy, and
//! the stand-ins refuse what the real services refuse.
//!
//! `ManagedIdentityCredential` reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, and reqwest reads
//! `HTTPS_PROXY`/`NO_PROXY`/`SSL_CERT_FILE`, from the process environment. This test binary
//! can't set them (`set_var` is `unsafe` and races other test threads), so the SDK runs in a
//! child process: this same binary, filtered to the ignored test
//! [`official_sdk_clients_in_a_child_process`], with the stand-ins' environment. It prints one
//! `SDK-RESULT {json}` line per step for the parent to check.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::error::{ErrorKind, ErrorResponse};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_security_keyvault_secrets::SecretClient;
use serde_json::{Value, json};

use crate::stand_ins::identity::{API_VERSION, VAULT_RESOURCE};
use crate::stand_ins::key_vault::SDK_API_VERSION;
use crate::stand_ins::{Auth, Outage, StandIns};
use crate::support::clock::unix_now;
use crate::support::process::ensure_tools;
use crate::support::settings::Settings;
use crate::support::tls::client_trusting;

/// Set in the child's environment; without it the child test does nothing.
const CHILD_MARKER: &str = "STAND_INS_SDK_CHILD";
const SECRET: &str = "iothub-policy-key";
const SECRET_VALUE: &str = "c2RrLXByb29mLXZhbHVl";
const CHILD_TEST: &str = "stand_ins_sdk::official_sdk_clients_in_a_child_process";

/// Runs the child with `environment` (the stand-ins' and what the steps read) and returns its
/// `SDK-RESULT` lines.
fn run_child(environment: &Settings) -> Vec<Value> {
    ensure_tools();
    let mut command = Command::new(std::env::current_exe().expect("the test binary has a path"));
    command
        .args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD_MARKER, "1");
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(environment.iter());
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("the test binary cannot run itself as a child: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SDK child failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = stdout
        .lines()
        // The harness prints `test … ... ` before the first line, without a line break.
        .filter_map(|line| line.split_once("SDK-RESULT ").map(|(_, json)| json))
        .map(|json| serde_json::from_str(json).expect("the child prints JSON results"))
        .collect();
    assert!(
        !results.is_empty(),
        "the SDK child ran no steps; is the test filter `{CHILD_TEST}` right?\n{stdout}"
    );
    results
}

fn step<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["step"] == name)
        .unwrap_or_else(|| panic!("the SDK child did not report step `{name}`: {results:?}"))
}

#[test]
fn the_official_sdk_reads_a_secret_through_the_challenge_and_managed_identity() {
    // Arrange
    let stand_ins = StandIns::start();
    let version = stand_ins.key_vault.set_secret(SECRET, SECRET_VALUE);
    let (client_id, _object_id) = stand_ins.identity.add_user_assigned();
    let vault = &stand_ins.key_vault;
    let identity = &stand_ins.identity;

    // Act
    let results = run_child(&stand_ins.environment().set("SDK_CLIENT_ID", &client_id));

    // Assert: what the SDK got.
    let expected_id = format!("https://{}/secrets/{SECRET}/{version}", vault.host());
    for name in ["latest", "again", "user-assigned"] {
        let result = step(&results, name);
        assert_eq!(result["value"], SECRET_VALUE, "{name}: {result}");
        assert_eq!(result["id"], expected_id.as_str(), "{name}: {result}");
    }
    let missing = step(&results, "missing");
    assert_eq!(missing["status"], 404, "{missing}");
    assert_eq!(missing["code"], "SecretNotFound", "{missing}");
    let unknown = step(&results, "unknown-identity");
    assert!(
        unknown["error"]
            .as_str()
            .is_some_and(|e| e.contains("has not been assigned")),
        "an unassigned client id is the SDK's 400 error: {unknown}"
    );

    // Assert: what the vault saw. First the bare request and its challenge, then the same
    // request with a bearer token; after that the scope and token are cached: no challenge.
    let requests = vault.requests();
    let summary: Vec<(String, Auth, Option<u16>)> = requests
        .iter()
        .map(|r| (r.path.clone(), r.auth.clone(), r.status))
        .collect();
    let latest_path = format!("/secrets/{SECRET}/");
    let system = identity_client_id(&requests[1].auth);
    assert_eq!(
        summary,
        vec![
            (latest_path.clone(), Auth::None, Some(401)),
            (latest_path.clone(), Auth::Valid(system.clone()), Some(200)),
            (latest_path.clone(), Auth::Valid(system.clone()), Some(200)),
            (
                "/secrets/no-such-secret/".to_owned(),
                Auth::Valid(system),
                Some(404)
            ),
            (latest_path.clone(), Auth::None, Some(401)),
            (latest_path, Auth::Valid(client_id.clone()), Some(200)),
        ],
        "the vault's request log"
    );
    for request in &requests {
        assert_eq!(request.api_version.as_deref(), Some(SDK_API_VERSION));
        assert_eq!(request.host.as_deref(), Some(vault.host()));
    }
    assert!(vault.tunnels() >= 1, "the SDK went through the proxy");
    assert_eq!(
        vault.refused(),
        Vec::<String>::new(),
        "no CONNECT was refused"
    );

    // Assert: what the identity endpoint saw: one token per credential, asked with the
    // platform's header for the vault's resource; the unassigned client id was refused.
    let asked = identity.requests();
    assert_eq!(asked.len(), 3, "identity requests: {asked:?}");
    for request in &asked {
        assert_eq!(
            request.identity_header.as_deref(),
            Some(identity.header_secret())
        );
        assert_eq!(request.metadata.as_deref(), Some("true"));
        assert_eq!(request.api_version.as_deref(), Some(API_VERSION));
        assert_eq!(request.resource.as_deref(), Some(VAULT_RESOURCE));
        assert_eq!(request.object_id, None);
    }
    assert_eq!(
        asked
            .iter()
            .map(|r| (r.client_id.clone(), r.status))
            .collect::<Vec<_>>(),
        vec![
            (None, 200),
            (Some(client_id), 200),
            (Some("00000000-0000-0000-0000-000000000000".to_owned()), 400),
        ]
    );
}

#[test]
fn the_official_sdk_is_refused_a_token_with_the_wrong_identity_header() {
    let stand_ins = StandIns::start();
    stand_ins.key_vault.set_secret(SECRET, SECRET_VALUE);

    let results = run_child(
        &stand_ins
            .environment()
            .set("SDK_SCENARIO", "wrong-header")
            .set("IDENTITY_HEADER", "not-the-platform-secret"),
    );

    let refused = step(&results, "wrong-header");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("X-IDENTITY-HEADER")),
        "the SDK reports the 403: {refused}"
    );
    let asked = stand_ins.identity.requests();
    assert_eq!(asked.len(), 1, "a 403 is not retried: {asked:?}");
    assert_eq!(asked[0].status, 403);
    assert_eq!(stand_ins.key_vault.authorized_reads(), 0);
    assert_eq!(stand_ins.key_vault.challenges(), 1);
}

/// The secrets of the withdrawal test: one disabled, one deleted; `SECRET` itself is read by an
/// identity whose access was removed.
const DISABLED_SECRET: &str = "disabled-policy-key";
const DELETED_SECRET: &str = "deleted-policy-key";

#[test]
fn the_official_sdk_reads_key_vaults_403_and_404_answers_for_a_withdrawn_secret_unchanged() {
    // Arrange: a disabled secret, a deleted one, and an identity whose access was removed.
    let stand_ins = StandIns::start();
    let vault = &stand_ins.key_vault;
    vault.set_secret(SECRET, SECRET_VALUE);
    vault.set_secret(DISABLED_SECRET, SECRET_VALUE);
    vault.set_secret(DELETED_SECRET, SECRET_VALUE);
    vault.disable_secret(DISABLED_SECRET);
    vault.delete_secret(DELETED_SECRET);
    let (revoked, _object_id) = stand_ins.identity.add_user_assigned();
    vault.revoke_access(&revoked);
    let environment = stand_ins
        .environment()
        .set("SDK_SCENARIO", "withdrawn")
        .set("SDK_CLIENT_ID", &revoked);

    // Act
    let withdrawn = run_child(&environment);
    vault.enable_secret(DISABLED_SECRET);
    vault.recover_secret(DELETED_SECRET);
    vault.restore_access(&revoked);
    let restored = run_child(&environment);

    // Assert: the SDK's own reading of each answer — an HTTP response error with Key Vault's
    // status, its error code (from the body: Key Vault sends no `x-ms-error-code`), its message,
    // and the inner code that tells the 403s apart. The RBAC refusal's message holds `\r\n`
    // escapes, which the SDK's error parser (it borrows the strings) cannot read: for that
    // answer it falls back to the status as the code and `403: <body>` as the message, as it
    // does with Key Vault itself. The status is what the handler matches on.
    let expected = [
        (
            "disabled",
            403,
            "Forbidden",
            Some("SecretDisabled"),
            "Operation get is not allowed on a disabled secret.",
        ),
        (
            "deleted",
            404,
            "SecretNotFound",
            None,
            "A secret with (name/id) deleted-policy-key was not found in this key vault.",
        ),
        (
            "access-removed",
            403,
            "403",
            Some("ForbiddenByRbac"),
            "403: {\"error\":{\"code\":\"Forbidden\",\"message\":\"Caller is not authorized to perform action on resource.",
        ),
    ];
    for (name, status, code, inner, message) in expected {
        let result = step(&withdrawn, name);
        assert_eq!(result["kind"], "HttpResponse", "{name}: {result}");
        assert_eq!(result["status"], status, "{name}: {result}");
        assert_eq!(result["code"], code, "{name}: {result}");
        assert_eq!(result["inner"].as_str(), inner, "{name}: {result}");
        assert!(
            result["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message)),
            "{name}: the SDK's message is Key Vault's: {result}"
        );
    }
    assert!(
        step(&withdrawn, "access-removed")["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("appid={revoked}"))),
        "the RBAC refusal names the caller, as Key Vault's does"
    );
    assert_eq!(
        step(&withdrawn, "other-identity")["value"],
        SECRET_VALUE,
        "removing one identity's access leaves the others'"
    );
    for name in ["disabled", "deleted", "access-removed"] {
        assert_eq!(
            step(&restored, name)["value"],
            SECRET_VALUE,
            "{name}: undone, the secret reads again"
        );
    }
    let statuses: Vec<Option<u16>> = vault.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(403)).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(404)).count(),
        1,
        "{statuses:?}"
    );
}

fn identity_client_id(auth: &Auth) -> String {
    match auth {
        Auth::Valid(client_id) => client_id.clone(),
        other => panic!("expected an authorized request, got {other:?}"),
    }
}

/// The child side: run only by the tests above, with the stand-ins' environment.
#[test]
#[ignore = "run as a child process by the stand_ins_sdk tests, with the stand-ins' environment"]
fn official_sdk_clients_in_a_child_process() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        eprintln!("{CHILD_TEST} only does something as a child of the stand_ins_sdk tests");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime starts");
    runtime.block_on(child_steps());
}

async fn child_steps() {
    let vault = std::env::var("KEYVAULT_URI").expect("the parent sets KEYVAULT_URI");
    let report = |value: Value| println!("SDK-RESULT {value}");

    let scenario = std::env::var("SDK_SCENARIO").ok();
    if let Some(scenario @ ("withdrawn" | "restored")) = scenario.as_deref() {
        withdrawal_steps(&vault, scenario == "withdrawn").await;
        return;
    }
    if scenario.as_deref() == Some("wrong-header") {
        let credential = ManagedIdentityCredential::new(None).expect("App Service source");
        let client = SecretClient::new(&vault, credential, None).expect("a secret client");
        let error = client
            .get_secret(SECRET, None)
            .await
            .expect_err("a wrong identity header gets no token");
        report(json!({ "step": "wrong-header", "error": chain(&error) }));
        return;
    }

    // System-assigned identity.
    let credential = ManagedIdentityCredential::new(None).expect("App Service source");
    let client = SecretClient::new(&vault, credential, None).expect("a secret client");
    for name in ["latest", "again"] {
        let secret = client
            .get_secret(SECRET, None)
            .await
            .expect("the SDK reads the secret")
            .into_model()
            .expect("the SDK parses the secret");
        report(json!({ "step": name, "value": secret.value, "id": secret.id }));
    }
    let error = client
        .get_secret("no-such-secret", None)
        .await
        .expect_err("an unknown secret is an error");
    let code = match error.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    };
    report(json!({
        "step": "missing",
        "status": error.http_status().map(u16::from),
        "code": code,
    }));

    // A user-assigned identity, by client id.
    let client_id = std::env::var("SDK_CLIENT_ID").expect("the parent sets SDK_CLIENT_ID");
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ClientId(client_id)),
        ..Default::default()
    }))
    .expect("App Service source");
    let client = SecretClient::new(&vault, credential, None).expect("a secret client");
    let secret = client
        .get_secret(SECRET, None)
        .await
        .expect("the SDK reads the secret as the user-assigned identity")
        .into_model()
        .expect("the SDK parses the secret");
    report(json!({ "step": "user-assigned", "value": secret.value, "id": secret.id }));

    // An identity the app doesn't have.
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ClientId(
            "00000000-0000-0000-0000-000000000000".to_owned(),
        )),
        ..Default::default()
    }))
    .expect("App Service source");
    let error = credential
        .get_token(&["https://vault.azure.net/.default"], None)
        .await
        .expect_err("an unassigned identity gets no token");
    report(json!({ "step": "unknown-identity", "error": chain(&error) }));
}

/// Reads the disabled and the deleted secret as the system-assigned identity, and `SECRET` as
/// `SDK_CLIENT_ID`, whose access was removed; reports the SDK's error for each (`withdrawn`) or
/// the value it read (`restored`).
async fn withdrawal_steps(vault: &str, withdrawn: bool) {
    let report = |value: Value| println!("SDK-RESULT {value}");
    let system = SecretClient::new(
        vault,
        ManagedIdentityCredential::new(None).expect("App Service source"),
        None,
    )
    .expect("a secret client");
    let client_id = std::env::var("SDK_CLIENT_ID").expect("the parent sets SDK_CLIENT_ID");
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ClientId(client_id)),
        ..Default::default()
    }))
    .expect("App Service source");
    let revoked = SecretClient::new(vault, credential, None).expect("a secret client");
    for (step, client, secret) in [
        ("disabled", &system, DISABLED_SECRET),
        ("deleted", &system, DELETED_SECRET),
        ("access-removed", &revoked, SECRET),
        ("other-identity", &system, SECRET),
    ] {
        let read = client.get_secret(secret, None).await;
        let result = match read {
            Ok(response) => {
                let secret = response.into_model().expect("the SDK parses the secret");
                json!({ "step": step, "value": secret.value })
            }
            Err(error) if withdrawn => {
                let (kind, code) = match error.kind() {
                    ErrorKind::HttpResponse { error_code, .. } => {
                        ("HttpResponse", error_code.clone())
                    }
                    other => (
                        match other {
                            ErrorKind::Credential => "Credential",
                            ErrorKind::Connection => "Connection",
                            _ => "other",
                        },
                        None,
                    ),
                };
                let status = error.http_status().map(u16::from);
                let message = error.to_string();
                let inner = ErrorResponse::try_from(error)
                    .ok()
                    .and_then(|response| response.error)
                    .and_then(|detail| detail.inner_error)
                    .and_then(|inner| inner.code);
                json!({
                    "step": step, "kind": kind, "status": status, "code": code,
                    "inner": inner, "message": message,
                })
            }
            Err(error) => panic!("{step}: the restored secret is readable: {}", chain(&error)),
        };
        report(result);
    }
}

/// An error and its sources, `: `-separated. The SDK's top-level message for a failed token
/// request is only "non-transport error occurred which will not be retried".
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ----- The stand-ins' own refusals, checked with a plain HTTP client -----

/// A client that trusts the stand-in CA only and reaches the vault through its proxy.
fn vault_client(stand_ins: &StandIns) -> reqwest::Client {
    client_trusting(stand_ins.key_vault.ca_pem())
        .proxy(
            reqwest::Proxy::https(stand_ins.key_vault.proxy_url()).expect("the proxy URL parses"),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client builds")
}

/// `GET IDENTITY_ENDPOINT?query` with `header` as `X-IDENTITY-HEADER`.
async fn ask_identity(stand_ins: &StandIns, query: &str, header: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client builds");
    let mut request = client.get(format!("{}?{query}", stand_ins.identity.endpoint()));
    if let Some(header) = header {
        request = request.header("X-IDENTITY-HEADER", header);
    }
    let response = request.send().await.expect("the identity stand-in answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn identity_stand_in_refuses_what_app_service_refuses() {
    let stand_ins = StandIns::start();
    let secret = stand_ins.identity.header_secret().to_owned();
    let (client_id, object_id) = stand_ins.identity.add_user_assigned();
    let vault = "resource=https%3A%2F%2Fvault.azure.net";
    let good = format!("api-version=2019-08-01&{vault}");
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("no header", good.clone(), None, 403),
        ("wrong header", good.clone(), Some("guess"), 403),
        (
            "old api-version",
            format!("api-version=2017-09-01&{vault}"),
            Some(&secret),
            400,
        ),
        (
            "another resource",
            "api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com".to_owned(),
            Some(&secret),
            400,
        ),
        (
            "unassigned client id",
            format!("{good}&client_id=00000000-0000-0000-0000-000000000000"),
            Some(&secret),
            400,
        ),
        (
            "client and object id",
            format!("{good}&client_id={client_id}&object_id={object_id}"),
            Some(&secret),
            400,
        ),
        ("system-assigned", good.clone(), Some(&secret), 200),
        (
            "user-assigned by client id",
            format!("{good}&client_id={client_id}"),
            Some(&secret),
            200,
        ),
        (
            "user-assigned by object id",
            format!("{good}&object_id={object_id}"),
            Some(&secret),
            200,
        ),
    ];
    for (description, query, header, status) in cases {
        let (actual, body) = ask_identity(&stand_ins, &query, header).await;
        assert_eq!(actual, status, "{description}: {body}");
        if status == 200 {
            let expires_on = body["expires_on"]
                .as_str()
                .unwrap_or_else(|| panic!("{description}: expires_on is a string: {body}"));
            let expires_on: u64 = expires_on.parse().expect("expires_on is Unix seconds");
            assert!(expires_on > unix_now() + 3_600, "{description}: {body}");
            assert_eq!(body["token_type"], "Bearer", "{description}");
            assert_eq!(body["resource"], VAULT_RESOURCE, "{description}");
            assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 20));
        }
        if description.starts_with("user-assigned") {
            assert_eq!(body["client_id"], client_id.as_str(), "{description}");
        }
    }
    assert_eq!(stand_ins.identity.tokens_issued(), 3);

    stand_ins.identity.set_failing(true);
    let (status, _) = ask_identity(&stand_ins, &good, Some(&secret)).await;
    assert_eq!(status, 500, "a failing endpoint answers 500");
    stand_ins.identity.set_failing(false);
    stand_ins.identity.set_token_lifetime(60);
    let (status, body) = ask_identity(&stand_ins, &good, Some(&secret)).await;
    assert_eq!(status, 200);
    let expires_on: u64 = body["expires_on"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("expires_on is a string of Unix seconds");
    assert!(
        expires_on.abs_diff(unix_now() + 60) <= 2,
        "lifetime is configurable"
    );
    assert_eq!(stand_ins.identity.request_count(), 11);
}

/// Sends `head` to the proxy and returns the status line it answers with.
fn proxy_status_line(stand_ins: &StandIns, head: &str) -> String {
    let mut stream =
        TcpStream::connect(stand_ins.key_vault.proxy_address()).expect("the proxy accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout can be set");
    stream.write_all(head.as_bytes()).expect("the proxy reads");
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 256];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_proxy_only_tunnels_to_the_vault_host() {
    let stand_ins = StandIns::start();
    let host = stand_ins.key_vault.host().to_owned();
    let refused = [
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_owned(),
        format!("CONNECT {host}:80 HTTP/1.1\r\n\r\n"),
        format!(
            "CONNECT {}:443 HTTP/1.1\r\n\r\n",
            stand_ins.key_vault.tls_address()
        ),
        "CONNECT other.vault.azure.net:443 HTTP/1.1\r\n\r\n".to_owned(),
        format!("GET http://{host}/secrets/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ];
    for head in &refused {
        assert_eq!(
            proxy_status_line(&stand_ins, head),
            "HTTP/1.1 403 Forbidden",
            "{head:?}"
        );
    }
    assert_eq!(stand_ins.key_vault.refused().len(), refused.len());
    assert_eq!(stand_ins.key_vault.tunnels(), 0);

    let allowed = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n");
    assert_eq!(
        proxy_status_line(&stand_ins, &allowed),
        "HTTP/1.1 200 Connection Established"
    );
    assert_eq!(stand_ins.key_vault.tunnels(), 1);
}

#[tokio::test]
async fn vault_stand_in_challenges_checks_tokens_and_serves_versions() {
    // Arrange
    let stand_ins = StandIns::start();
    let vault = &stand_ins.key_vault;
    let first = vault.set_secret(SECRET, "first-value");
    let second = vault.set_secret(SECRET, "second-value");
    let client = vault_client(&stand_ins);
    let url = |path: &str| format!("{}{path}?api-version={SDK_API_VERSION}", vault.uri());
    let secret = stand_ins.identity.header_secret().to_owned();
    let (_, token) = ask_identity(
        &stand_ins,
        "api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net",
        Some(&secret),
    )
    .await;
    let token = token["access_token"]
        .as_str()
        .expect("a token was issued")
        .to_owned();
    let get = |path: String, token: Option<String>| {
        let mut request = client.get(path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // No token: the challenge.
    let response = get(url(&format!("secrets/{SECRET}/")), None)
        .await
        .expect("the vault answers through the proxy");
    assert_eq!(response.status(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .expect("a 401 carries the challenge")
        .to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            vault.tenant()
        )
    );

    // A token nobody issued.
    let response = get(
        url(&format!("secrets/{SECRET}/")),
        Some("forged".to_owned()),
    )
    .await
    .expect("the vault answers");
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    // The latest version, with and without the trailing slash, and an older one by id.
    for (path, value, version) in [
        (format!("secrets/{SECRET}/"), "second-value", &second),
        (format!("secrets/{SECRET}"), "second-value", &second),
        (format!("secrets/{SECRET}/{first}"), "first-value", &first),
    ] {
        let response = get(url(&path), Some(token.clone()))
            .await
            .expect("the vault answers");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!(body["value"], value, "{path}");
        assert_eq!(
            body["id"],
            format!("https://{}/secrets/{SECRET}/{version}", vault.host()),
            "{path}"
        );
        assert_eq!(body["attributes"]["enabled"], true, "{path}");
        assert!(body["attributes"]["created"].is_u64(), "{path}: {body}");
        assert_eq!(version.len(), 32);
    }

    // An unknown secret.
    let response = get(url("secrets/absent/"), Some(token.clone()))
        .await
        .expect("the vault answers");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "SecretNotFound");

    // An outage, both kinds, and the way back.
    vault.go_down(Outage::ServiceUnavailable);
    let response = get(url(&format!("secrets/{SECRET}/")), Some(token.clone()))
        .await
        .expect("the vault answers");
    assert_eq!(response.status(), 503);
    vault.go_down(Outage::DropConnections);
    let dropped = get(url(&format!("secrets/{SECRET}/")), Some(token.clone())).await;
    assert!(
        dropped.is_err(),
        "a dropped connection is a transport error"
    );
    vault.come_back();
    vault.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    let response = get(url(&format!("secrets/{SECRET}/")), Some(token.clone()))
        .await
        .expect("the vault answers");
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the delay applies"
    );

    assert_eq!(vault.challenges(), 1);
    assert_eq!(vault.rejected_tokens(), 1);
    assert_eq!(vault.authorized_reads(), 4);
    assert_eq!(vault.failed_by_outage(), 2);

    // An expired token is refused like a forged one.
    stand_ins.identity.set_token_lifetime(-1);
    let (_, expired) = ask_identity(
        &stand_ins,
        "api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net",
        Some(&secret),
    )
    .await;
    let expired = expired["access_token"].as_str().map(str::to_owned);
    let response = get(url(&format!("secrets/{SECRET}/")), expired)
        .await
        .expect("the vault answers");
    assert_eq!(response.status(), 401);
    vault.delete_secret(SECRET);
    let response = get(url(&format!("secrets/{SECRET}/")), Some(token.clone()))
        .await
        .expect("the vault answers");
    assert_eq!(response.status(), 404, "a deleted secret is gone");
    vault.recover_secret(SECRET);

    // What an operator does to stop a reader, byte for byte as Key Vault answers it.
    let read = || get(url(&format!("secrets/{SECRET}/")), Some(token.clone()));
    vault.disable_secret(SECRET);
    let response = read().await.expect("the vault answers");
    assert_eq!(response.status(), 403, "a disabled secret");
    let headers = response.headers().clone();
    assert_eq!(
        response.text().await.expect("a body"),
        r#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#
    );
    assert!(headers.contains_key("x-ms-request-id"));
    assert!(headers.contains_key("x-ms-keyvault-service-version"));
    assert!(
        !headers.contains_key("x-ms-error-code"),
        "Key Vault sends no x-ms-error-code"
    );
    vault.enable_secret(SECRET);
    let response = read().await.expect("the vault answers");
    assert_eq!(response.status(), 200, "enabled again");

    let system = stand_ins.identity.system_client_id().to_owned();
    vault.revoke_access(&system);
    for path in [format!("secrets/{SECRET}/"), "secrets/absent/".to_owned()] {
        let response = get(url(&path), Some(token.clone()))
            .await
            .expect("the vault answers");
        assert_eq!(response.status(), 403, "{path}: access removed");
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!(body["error"]["code"], "Forbidden", "{path}");
        assert_eq!(
            body["error"]["innererror"]["code"], "ForbiddenByRbac",
            "{path}"
        );
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| m
                .starts_with("Caller is not authorized to perform action on resource.\r\n")
                && m.contains(&format!("Caller: appid={system};"))),
            "{path}: {body}"
        );
    }
    vault.restore_access(&system);
    let response = read().await.expect("the vault answers");
    assert_eq!(response.status(), 200, "access restored");

    vault.go_down(Outage::Throttled);
    let response = read().await.expect("the vault answers");
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "Throttled");
    vault.come_back();
}
