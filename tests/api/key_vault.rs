//! The signing key from Key Vault, read with the managed identity: what an operator and a caller
//! can observe. Every test starts its own identity and vault stand-ins (see `stand_ins`) and the
//! real `handler` binary configured to use them, so the tests run in parallel.
//!
//! What is checked: reading, refreshing and rotating the key; outages (the last good key serves,
//! but only while its last read is younger than `KEYVAULT_MAX_KEY_AGE_SECONDS`); revocation (a
//! disabled, deleted or no longer readable secret stops issuance until it is undone); identity
//! and secret-value failures; and that nothing secret is ever printed.
//!
//! Time: refresh intervals are the minimum the handler accepts, 10 s, and the maximum key age
//! twice that; a test that waits for a refresh polls (it does not sleep a fixed time) and fails
//! if it takes longer than the interval plus a small margin. Scenarios that wait on those
//! intervals run side by side inside one test.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::stand_ins::{Auth, Outage, StandIns};
use crate::support::{
    answers::{Issued, KEY_UNAVAILABLE, assert_unavailable},
    app::TestApp,
    clock::unix_now,
    logs::{json_lines, log_field, log_text, problem_lines, request_lines},
    routes::token_path,
    sas::{SasToken, encode},
    settings::{HOSTNAME, POLICY, Settings},
    waiting::{poll, wait_until},
};

/// The secret's name in the vault (`IOTHUB_POLICY_KEY_SECRET`).
const SECRET: &str = "iothub-policy-key";
/// `KEYVAULT_REFRESH_SECONDS` for tests that watch a refresh: the handler's minimum.
const REFRESH_SECONDS: u64 = 10;
/// How long after the interval a refresh may still be in flight (fetch time, scheduling).
const REFRESH_MARGIN: Duration = Duration::from_secs(4);
/// How long a request waits for the first key before the 503 (the handler's `FIRST_KEY_WAIT`).
const FIRST_KEY_WAIT: Duration = Duration::from_secs(5);

/// A fresh random policy key: 32 bytes, base64.
fn random_key() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    BASE64.encode(bytes)
}

/// Stand-ins whose vault holds a fresh random key as `SECRET`, and that key.
fn stand_ins_with_key() -> (StandIns, String) {
    let stand_ins = StandIns::start();
    let key = random_key();
    stand_ins.key_vault.set_secret(SECRET, &key);
    (stand_ins, key)
}

/// The handler's settings for Key Vault mode against `stand_ins`, reading the secret `SECRET`.
fn vault_settings(stand_ins: &StandIns) -> Settings {
    Settings::key_vault(SECRET).set_all(stand_ins.environment().iter())
}

/// Issues a token for `dev-1` and returns it, asserting a 200.
async fn issue(app: &TestApp) -> SasToken {
    app.issue(&token_path("dev-1", None)).await.token
}

/// Asserts `token` is for `hub`'s `dev-1`, under `policy`, signed with `key`.
fn assert_token(token: &SasToken, hub: &str, policy: &str, key: &str, context: &str) {
    assert_eq!(
        token.sr,
        encode(&format!("{hub}/devices/dev-1")),
        "{context}: sr"
    );
    assert_eq!(token.skn, Some(encode(policy)), "{context}: skn");
    assert!(
        token.is_signed_with(key),
        "{context}: the token is not signed with the vault's key: {}",
        token.raw
    );
}

/// Asserts a token request is answered 503 with `Retry-After`; returns how long the answer took.
async fn assert_token_unavailable(app: &TestApp, context: &str) -> Duration {
    let started = Instant::now();
    let response = app.get_sas_token("dev-1", None).await;
    let took = started.elapsed();
    assert_unavailable(response, context).await;
    took
}

/// Waits for a WARN/ERROR line that names the secret and says `contains` (the cause, in any
/// field).
async fn assert_logged_failure(app: &TestApp, contains: &str, context: &str) {
    let found = poll(Duration::from_secs(10), || async {
        problem_lines(&app.stdout())
            .iter()
            .map(Value::to_string)
            .any(|text| text.contains(SECRET) && text.contains(contains))
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "{context}: no WARN/ERROR line names the secret `{SECRET}` and says {contains:?}\n{}",
        app.output()
    );
}

/// Asserts nothing the handler printed contains a secret: any value stored in the vault, any
/// access token the identity endpoint issued, the `IDENTITY_HEADER` value, or any of `extra`
/// (keys inside connection strings); nor their percent-encoding.
fn assert_no_secret_printed(app: &TestApp, stand_ins: &StandIns, extra: &[&str], context: &str) {
    let mut secrets = stand_ins.secrets();
    for key in extra {
        secrets.add("key inside a secret", key);
    }
    secrets.assert_absent_from(&app.output(), context);
}

// ----- Reading the key -----

#[tokio::test]
async fn a_token_is_signed_with_the_vaults_key_and_the_identity_is_asked_once() {
    // Arrange
    let (stand_ins, key) = stand_ins_with_key();
    let app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );

    // Act: 50 requests, then one refresh, then more requests.
    for n in 0..50 {
        let token = issue(&app).await;
        assert_token(&token, HOSTNAME, POLICY, &key, &format!("request {n}"));
    }
    let vault = &stand_ins.key_vault;
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "the first refresh",
        || async { vault.authorized_reads() >= 2 },
    )
    .await;
    let token = issue(&app).await;

    // Assert
    assert_token(&token, HOSTNAME, POLICY, &key, "after the refresh");
    assert_eq!(
        vault.authorized_reads(),
        2,
        "one read at start, one refresh"
    );
    assert_eq!(
        vault.challenges(),
        1,
        "the challenge is answered once per client"
    );
    assert_eq!(vault.rejected_tokens(), 0);
    assert_eq!(
        stand_ins.identity.request_count(),
        1,
        "one identity token serves every read within its lifetime: {:?}",
        stand_ins.identity.requests()
    );
    let asked = &stand_ins.identity.requests()[0];
    assert_eq!(asked.client_id, None, "system-assigned identity");
    assert_eq!(asked.status, 200);
    assert_no_secret_printed(&app, &stand_ins, &[], "signing");
}

#[tokio::test]
async fn an_identity_token_near_its_expiry_is_renewed_at_the_next_refresh() {
    // Arrange: tokens that expire 303 s after issue. The SDK renews a token within 300 s of its
    // expiry, so the one fetched at start is due for renewal by the first refresh.
    let (stand_ins, key) = stand_ins_with_key();
    stand_ins.identity.set_token_lifetime(303);
    let app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );
    assert_token(&issue(&app).await, HOSTNAME, POLICY, &key, "first key");

    // Act
    let vault = &stand_ins.key_vault;
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "the first refresh",
        || async { vault.authorized_reads() >= 2 },
    )
    .await;

    // Assert
    assert_eq!(
        stand_ins.identity.tokens_issued(),
        2,
        "one token per lifetime: {:?}",
        stand_ins.identity.requests()
    );
    assert_eq!(vault.rejected_tokens(), 0, "no expired token is ever sent");
    let tokens: Vec<Auth> = vault
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.auth)
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_no_secret_printed(&app, &stand_ins, &[], "identity token renewal");
}

#[tokio::test]
async fn a_thousand_concurrent_requests_cause_at_most_one_secret_read() {
    // Arrange: a slow vault, so every request arrives while the first read is in flight.
    let (stand_ins, key) = stand_ins_with_key();
    stand_ins.key_vault.set_delay(Duration::from_millis(1_500));
    let app = TestApp::spawn(&vault_settings(&stand_ins));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a reqwest client builds");

    // Act
    let url = app.url(&token_path("dev-1", None));
    let mut requests = JoinSet::new();
    for _ in 0..1_000 {
        let request = client.get(&url).send();
        requests.spawn(async move {
            let response = request.await.expect("the handler answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            (status, body)
        });
    }
    let answers = requests.join_all().await;

    // Assert
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        let token = SasToken::parse(body["sastoken"].as_str().unwrap_or_default());
        assert!(token.is_signed_with(&key), "{}", token.raw);
    }
    assert_eq!(answers.len(), 1_000);
    assert_eq!(
        stand_ins.key_vault.authorized_reads(),
        1,
        "requests read memory, never the vault: {:?}",
        stand_ins.key_vault.requests()
    );
    assert_eq!(stand_ins.identity.request_count(), 1);
    assert_no_secret_printed(&app, &stand_ins, &[], "1,000 requests");
}

#[tokio::test]
async fn a_request_during_the_first_read_waits_for_it_instead_of_failing() {
    let (stand_ins, key) = stand_ins_with_key();
    stand_ins.key_vault.set_delay(Duration::from_secs(2));

    // The port opens before the key is read: spawning returns at once.
    let started = Instant::now();
    let app = TestApp::spawn(&vault_settings(&stand_ins));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the handler must listen before the first read completes (took {:?})",
        started.elapsed()
    );
    let token = issue(&app).await;

    assert_token(&token, HOSTNAME, POLICY, &key, "first request");
    assert_eq!(stand_ins.key_vault.authorized_reads(), 1);
    assert_no_secret_printed(&app, &stand_ins, &[], "first read");
}

#[tokio::test]
async fn a_rotated_secret_is_used_within_one_refresh_interval_without_a_restart() {
    // Arrange
    let stand_ins = StandIns::start();
    let old_key = random_key();
    let new_key = random_key();
    stand_ins.key_vault.set_secret(SECRET, &old_key);
    let mut app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );
    let before = issue(&app).await;
    assert_token(&before, HOSTNAME, POLICY, &old_key, "before rotation");

    // Act
    let new_version = stand_ins.key_vault.set_secret(SECRET, &new_key);
    let took = wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "tokens signed with the rotated key",
        || async {
            let token = issue(&app).await;
            if token.is_signed_with(&new_key) {
                true
            } else {
                assert!(token.is_signed_with(&old_key), "{}", token.raw);
                false
            }
        },
    )
    .await;

    // Assert
    assert!(took <= Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN);
    assert!(app.is_running(), "no restart");
    let loaded: Vec<Value> = logged(&app, "INFO", LOADED, 2)
        .await
        .into_iter()
        .filter(|line| {
            line["event"] == "key_loaded"
                && line["secret"] == SECRET
                && line["key_version"] == new_version.as_str()
        })
        .collect();
    assert_eq!(
        loaded.len(),
        1,
        "one log line names the new version\n{}",
        app.stdout()
    );
    assert_no_secret_printed(&app, &stand_ins, &[], "rotation");
}

#[tokio::test]
async fn a_connection_string_secret_supplies_the_hub_and_policy_unless_they_are_set() {
    // Arrange
    let stand_ins = StandIns::start();
    let key = random_key();
    let connection_string = format!(
        "HostName=cs-hub.azure-devices.net;SharedAccessKeyName=registryReadWrite;SharedAccessKey={key}"
    );
    stand_ins.key_vault.set_secret(SECRET, &connection_string);

    // Act
    let from_secret = TestApp::spawn(
        &vault_settings(&stand_ins)
            .unset("IOTHUB_HOSTNAME")
            .unset("IOTHUB_POLICY_NAME"),
    );
    let from_settings = TestApp::spawn(&vault_settings(&stand_ins));

    // Assert
    let token = issue(&from_secret).await;
    assert_token(
        &token,
        "cs-hub.azure-devices.net",
        "registryReadWrite",
        &key,
        "host and policy from the connection string",
    );
    let token = issue(&from_settings).await;
    assert_token(
        &token,
        HOSTNAME,
        POLICY,
        &key,
        "IOTHUB_HOSTNAME and IOTHUB_POLICY_NAME win",
    );
    for app in [&from_secret, &from_settings] {
        assert_no_secret_printed(app, &stand_ins, &[&key], "connection string");
        // The warnings come before the read's own line.
        logged(app, "INFO", LOADED, 1).await;
    }
    let overridden = |app: &TestApp| {
        problem_lines(&app.stdout())
            .into_iter()
            .filter(|line| {
                line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("differs from the connection string's"))
            })
            .count()
    };
    assert_eq!(
        overridden(&from_secret),
        0,
        "nothing overridden, nothing to warn about"
    );
    assert_eq!(
        overridden(&from_settings),
        2,
        "both settings differ from the connection string\n{}",
        from_settings.stdout()
    );
}

#[tokio::test]
async fn azure_client_id_is_passed_to_the_identity_endpoint_as_client_id() {
    let (stand_ins, key) = stand_ins_with_key();
    let (client_id, _object_id) = stand_ins.identity.add_user_assigned();

    let app = TestApp::spawn(&vault_settings(&stand_ins).set("AZURE_CLIENT_ID", &client_id));
    let token = issue(&app).await;

    assert_token(&token, HOSTNAME, POLICY, &key, "user-assigned identity");
    let asked = stand_ins.identity.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(asked[0].object_id, None);
    let read_as: Vec<Auth> = stand_ins
        .key_vault
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.auth)
        .collect();
    assert_eq!(read_as, vec![Auth::Valid(client_id)]);
    assert_no_secret_printed(&app, &stand_ins, &[], "user-assigned identity");
}

// ----- Outages -----

#[tokio::test]
async fn a_vault_down_at_start_means_503_with_retry_after_then_recovery_on_its_own() {
    // Arrange
    let (stand_ins, key) = stand_ins_with_key();
    stand_ins.key_vault.go_down(Outage::ServiceUnavailable);
    let mut app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );

    // Act / Assert: no key yet.
    let took = assert_token_unavailable(&app, "vault down at start").await;
    assert!(
        took >= FIRST_KEY_WAIT - Duration::from_millis(500) && took < FIRST_KEY_WAIT * 2,
        "a request waits about {FIRST_KEY_WAIT:?} for the first key, took {took:?}"
    );
    assert_logged_failure(&app, "temporarily unavailable", "vault down at start").await;
    let failed_reads = stand_ins.key_vault.failed_by_outage();
    assert!(failed_reads >= 2, "the handler retries: {failed_reads}");

    // The vault comes back: the handler recovers by itself within its back-off (≤ refresh).
    stand_ins.key_vault.come_back();
    let took = wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "recovery after the vault came back",
        || async { app.get_sas_token("dev-1", None).await.status() == 200 },
    )
    .await;
    let token = issue(&app).await;
    assert_token(&token, HOSTNAME, POLICY, &key, "after recovery");
    assert!(app.is_running());
    assert!(took <= Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN);
    assert_no_secret_printed(&app, &stand_ins, &[], "vault down at start");
}

#[tokio::test]
async fn a_vault_down_later_leaves_the_last_good_key_in_use() {
    // Arrange
    let (stand_ins, key) = stand_ins_with_key();
    let mut app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );
    assert_token(&issue(&app).await, HOSTNAME, POLICY, &key, "before");

    // Act: the vault drops every connection when the refresh comes.
    let vault = &stand_ins.key_vault;
    vault.go_down(Outage::DropConnections);
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "a refresh that meets the outage",
        || async { vault.failed_by_outage() >= 1 },
    )
    .await;

    // Assert
    let token = issue(&app).await;
    assert_token(&token, HOSTNAME, POLICY, &key, "during the outage");
    assert_logged_failure(&app, "connection", "vault down later").await;
    assert!(app.is_running());

    // And once it is back, the next (backed-off) read picks up a rotation.
    let new_key = random_key();
    vault.set_secret(SECRET, &new_key);
    vault.come_back();
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "the rotated key after the outage",
        || async { issue(&app).await.is_signed_with(&new_key) },
    )
    .await;
    assert_no_secret_printed(&app, &stand_ins, &[], "vault down later");
}

// ----- Identity and secret failures: 503, a clear log line, no crash -----

/// One way the first read can fail.
struct Failure {
    description: &'static str,
    stand_ins: StandIns,
    settings: Settings,
    /// Text the log line's `error` must contain: the cause, in words an operator can act on.
    cause: &'static str,
    /// The 503's request log field `key`: `not_loaded` for every failure but Key Vault's own
    /// 404, which withdraws the key (an identity failure never does).
    key: &'static str,
    /// Values that must never be printed.
    secrets: Vec<String>,
}

fn failure_cases() -> Vec<Failure> {
    let mut cases = Vec::new();
    let case = |description, secret: Option<&str>| {
        let stand_ins = StandIns::start();
        if let Some(value) = secret {
            stand_ins.key_vault.set_secret(SECRET, value);
        }
        (description, stand_ins)
    };

    let key = random_key();
    let (description, stand_ins) = case("identity endpoint answers 500", Some(&key));
    stand_ins.identity.set_failing(true);
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins),
        stand_ins,
        cause: "ManagedIdentityCredential",
        key: "not_loaded",
        secrets: vec![key],
    });

    let key = random_key();
    let (description, stand_ins) = case("wrong IDENTITY_HEADER", Some(&key));
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins).set("IDENTITY_HEADER", "not-the-platform-secret"),
        stand_ins,
        cause: "X-IDENTITY-HEADER",
        key: "not_loaded",
        secrets: vec![key],
    });

    let key = random_key();
    let (description, stand_ins) = case("unassigned AZURE_CLIENT_ID", Some(&key));
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins)
            .set("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000000"),
        stand_ins,
        cause: "not been assigned",
        key: "not_loaded",
        secrets: vec![key],
    });

    let value = "sup3r-s3cret-not-base64!";
    let (description, stand_ins) = case("a secret that is not base64", Some(value));
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins),
        stand_ins,
        cause: "base64",
        key: "not_loaded",
        secrets: vec![value.to_owned()],
    });

    let key = random_key();
    let value = format!("HostName=cs-hub.azure-devices.net;SharedAccessKey={key}");
    let (description, stand_ins) = case(
        "a connection string without SharedAccessKeyName",
        Some(&value),
    );
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins)
            .unset("IOTHUB_HOSTNAME")
            .unset("IOTHUB_POLICY_NAME"),
        stand_ins,
        cause: "SharedAccessKeyName",
        key: "not_loaded",
        secrets: vec![key, value],
    });

    let key = random_key();
    let value = format!("HostName=;SharedAccessKeyName=device;SharedAccessKey={key};junk");
    let (description, stand_ins) = case("a connection string with bad syntax", Some(&value));
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins)
            .unset("IOTHUB_HOSTNAME")
            .unset("IOTHUB_POLICY_NAME"),
        stand_ins,
        cause: "connection string",
        key: "not_loaded",
        secrets: vec![key, value],
    });

    // A device's key signs only for its device, and as a policy key it would sign for any: with
    // IOTHUB_HOSTNAME and IOTHUB_POLICY_NAME set, it must not be taken for a policy's.
    let key = random_key();
    let value = format!("HostName=cs-hub.azure-devices.net;DeviceId=dev-1;SharedAccessKey={key}");
    let (description, stand_ins) = case("a device connection string", Some(&value));
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins),
        stand_ins,
        cause: "device connection string",
        key: "not_loaded",
        secrets: vec![key, value],
    });

    let (description, stand_ins) = case("no such secret", None);
    cases.push(Failure {
        description,
        settings: vault_settings(&stand_ins),
        stand_ins,
        cause: "not found",
        key: "withdrawn_not_found",
        secrets: vec![],
    });
    cases
}

/// Starts the handler for `case`; expects a 503 with `Retry-After`, a WARN/ERROR line naming the
/// secret and its cause, a running process, and no secret in the output.
async fn assert_no_key_but_alive(case: Failure) {
    let Failure {
        description,
        stand_ins,
        settings,
        cause,
        key,
        secrets,
    } = case;
    let mut app = TestApp::spawn(&settings);
    assert_token_unavailable(&app, description).await;
    assert_last_logged_as(&app, key, description).await;
    assert_logged_failure(&app, cause, description).await;
    assert!(app.is_running(), "{description}: the handler must not exit");
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret_printed(&app, &stand_ins, &secrets, description);
}

#[tokio::test]
async fn identity_and_secret_failures_mean_503_an_error_line_and_no_crash() {
    // The cases run side by side: each waits out the handler's first-key bound.
    let mut running = JoinSet::new();
    for case in failure_cases() {
        running.spawn(assert_no_key_but_alive(case));
    }
    while let Some(finished) = running.join_next().await {
        if let Err(failed) = finished {
            std::panic::resume_unwind(failed.into_panic());
        }
    }
}

#[tokio::test]
async fn the_handler_recovers_once_the_identity_endpoint_works_again() {
    let (stand_ins, key) = stand_ins_with_key();
    stand_ins.identity.set_failing(true);
    let app = TestApp::spawn(&vault_settings(&stand_ins));
    assert_logged_failure(&app, "ManagedIdentityCredential", "identity endpoint 500").await;

    stand_ins.identity.set_failing(false);
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "recovery once the identity endpoint works",
        || async { app.get_sas_token("dev-1", None).await.status() == 200 },
    )
    .await;

    assert_token(&issue(&app).await, HOSTNAME, POLICY, &key, "after recovery");
    assert_eq!(
        stand_ins.identity.tokens_issued(),
        1,
        "failures are not cached, and the token is"
    );
    assert_no_secret_printed(&app, &stand_ins, &[], "identity recovery");
}

// ----- Nothing secret in the output, even at the most verbose log level -----

#[tokio::test]
async fn neither_the_key_nor_the_access_token_is_printed_even_at_trace_level() {
    let stand_ins = StandIns::start();
    let key = random_key();
    let connection_string = format!(
        "HostName=cs-hub.azure-devices.net;SharedAccessKeyName=device;SharedAccessKey={key}"
    );
    stand_ins.key_vault.set_secret(SECRET, &connection_string);

    let app = TestApp::spawn(&vault_settings(&stand_ins).set("RUST_LOG", "trace"));
    let token = issue(&app).await;

    assert!(token.is_signed_with(&key));
    let verbose = app
        .stdout()
        .lines()
        .filter(|line| line.contains(r#""level":"TRACE""#) || line.contains(r#""level":"DEBUG""#))
        .count();
    assert!(
        verbose > 0,
        "RUST_LOG=trace must make the SDK and HTTP stack log\n{}",
        app.output()
    );
    assert!(
        !stand_ins.identity.issued_tokens().is_empty(),
        "the handler got an access token"
    );
    assert_no_secret_printed(&app, &stand_ins, &[&key], "RUST_LOG=trace");
}

// ----- Faults: a slow vault never blocks requests past their bound -----

/// The handler's bound on one secret read (`FETCH_TIMEOUT`).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_vault_slower_than_the_read_bound_never_blocks_requests_and_the_last_key_serves() {
    // Arrange: a key is loaded, then the vault starts taking longer than the read bound.
    let (stand_ins, key) = stand_ins_with_key();
    let app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );
    assert_token(&issue(&app).await, HOSTNAME, POLICY, &key, "before");
    let vault = &stand_ins.key_vault;
    vault.set_delay(FETCH_TIMEOUT + Duration::from_secs(5));

    // Act: the refresh is due after REFRESH_SECONDS and then hangs; requests keep coming.
    tokio::time::sleep(Duration::from_secs(REFRESH_SECONDS + 1)).await;
    for attempt in 0..10 {
        let started = Instant::now();
        let token = issue(&app).await;
        let took = started.elapsed();
        // Assert: answered from memory, with the last good key, at once.
        assert!(
            took < Duration::from_secs(1),
            "request {attempt} during the slow read took {took:?}"
        );
        assert_token(&token, HOSTNAME, POLICY, &key, "during the slow read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_logged_failure(&app, "no answer from Key Vault", "slow vault").await;

    // Recovery needs no restart: the vault speeds up and a rotation is picked up.
    let new_key = random_key();
    vault.set_secret(SECRET, &new_key);
    vault.set_delay(Duration::ZERO);
    wait_until(
        FETCH_TIMEOUT + Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "the rotated key once the vault is fast again",
        || async { issue(&app).await.is_signed_with(&new_key) },
    )
    .await;
    assert_no_secret_printed(&app, &stand_ins, &[], "slow vault");
}

#[tokio::test]
async fn a_slow_first_read_answers_503_at_the_bound_then_serves_when_the_key_arrives() {
    // Arrange: the first read takes about 6 s (two answers — the challenge and the secret — of 3 s
    // each): longer than a request may wait, shorter than the bound on the read itself.
    let (stand_ins, key) = stand_ins_with_key();
    stand_ins.key_vault.set_delay(Duration::from_secs(3));
    let app = TestApp::spawn(&vault_settings(&stand_ins));

    // Act + Assert: the early request is answered 503 after the first-key wait, not later.
    let took = assert_token_unavailable(&app, "before the slow first read completes").await;
    assert!(
        took >= FIRST_KEY_WAIT - Duration::from_millis(500)
            && took < FIRST_KEY_WAIT + Duration::from_secs(2),
        "the early request took {took:?}; the bound is {FIRST_KEY_WAIT:?}"
    );
    // The same read completes and is used without a restart.
    wait_until(
        Duration::from_secs(10),
        "a token once the slow first read completes",
        || async { app.get_sas_token("dev-1", None).await.status().as_u16() == 200 },
    )
    .await;
    assert_token(
        &issue(&app).await,
        HOSTNAME,
        POLICY,
        &key,
        "after the slow read",
    );
    assert_eq!(
        stand_ins.key_vault.authorized_reads(),
        1,
        "one read served the waiting and the later requests"
    );
}

// ----- Revocation: Key Vault's answer is the operator's intent -----

/// What an operator does in Key Vault to stop issuance now (README, "How to stop issuing tokens
/// now"), each undone as the README says.
#[derive(Clone, Copy, Debug)]
enum Withdrawal {
    /// `az keyvault secret set-attributes --enabled false`: 403 `SecretDisabled`.
    Disable,
    /// `az keyvault secret delete`: 404 `SecretNotFound`.
    Delete,
    /// The app's role assignment deleted: 403 `ForbiddenByRbac`.
    RemoveAccess,
}

impl Withdrawal {
    fn apply(self, stand_ins: &StandIns) {
        let vault = &stand_ins.key_vault;
        match self {
            Self::Disable => vault.disable_secret(SECRET),
            Self::Delete => vault.delete_secret(SECRET),
            Self::RemoveAccess => vault.revoke_access(stand_ins.identity.system_client_id()),
        }
    }

    fn undo(self, stand_ins: &StandIns) {
        let vault = &stand_ins.key_vault;
        match self {
            Self::Disable => vault.enable_secret(SECRET),
            Self::Delete => vault.recover_secret(SECRET),
            Self::RemoveAccess => vault.restore_access(stand_ins.identity.system_client_id()),
        }
    }

    /// The status Key Vault answers a read with.
    fn status(self) -> u16 {
        match self {
            Self::Disable | Self::RemoveAccess => 403,
            Self::Delete => 404,
        }
    }

    /// The request log line's `key` field on a refused token request.
    fn logged_as(self) -> &'static str {
        match self {
            Self::Disable | Self::RemoveAccess => "withdrawn_forbidden",
            Self::Delete => "withdrawn_not_found",
        }
    }

    /// How the one error line begins.
    fn error_line(self) -> &'static str {
        match self {
            Self::Disable | Self::RemoveAccess => {
                "Key Vault answered 403: the secret is disabled, or the app's access to it was removed"
            }
            Self::Delete => "Key Vault answered 404: ",
        }
    }

    /// What Key Vault's answer says, which the error line passes on: which of the 403s it was.
    fn cause(self) -> &'static str {
        match self {
            Self::Disable => "Operation get is not allowed on a disabled secret.",
            Self::Delete => "SecretNotFound",
            Self::RemoveAccess => "ForbiddenByRbac",
        }
    }
}

/// The INFO line of each successful read.
const LOADED: &str = "signing key loaded from Key Vault";

/// [`lines_starting`], once there are at least `at_least` of them: a line is printed before the
/// answer it explains, but reaches the test through a pipe, so it may arrive after that answer.
/// After 5 s, whatever there is (the caller asserts the count).
async fn logged(app: &TestApp, level: &str, prefix: &str, at_least: usize) -> Vec<Value> {
    poll(Duration::from_secs(5), || async {
        let lines = lines_starting(app, level, prefix);
        (lines.len() >= at_least).then_some(lines)
    })
    .await
    .unwrap_or_else(|| lines_starting(app, level, prefix))
}

/// The handler's log lines at `level` whose message starts with `prefix`.
fn lines_starting(app: &TestApp, level: &str, prefix: &str) -> Vec<Value> {
    json_lines(&app.stdout())
        .into_iter()
        .filter(|line| {
            line["level"] == level
                && line["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with(prefix))
        })
        .collect()
}

/// Asserts a token request is refused with the key-unavailable 503 and that its request log
/// line says why (`key`).
async fn assert_refused_for(app: &TestApp, key: &str, context: &str) {
    let response = app.get_sas_token("dev-1", None).await;
    let (_, body) = assert_unavailable(response, context).await;
    assert_eq!(body["type"], KEY_UNAVAILABLE, "{context}: {body}");
    assert_last_logged_as(app, key, context).await;
}

/// Asserts the last request log line is a 503's whose `key` field is `key`.
async fn assert_last_logged_as(app: &TestApp, key: &str, context: &str) {
    let logged = poll(Duration::from_secs(5), || async {
        request_lines(&app.stdout())
            .last()
            .filter(|line| line["status"] == 503)
            .and_then(|line| log_text(line, "key"))
    })
    .await;
    assert_eq!(
        logged.as_deref(),
        Some(key),
        "{context}: the 503's request log line names why\n{}",
        app.stdout()
    );
}

/// `withdrawal` stops issuance within one refresh (+ margin), with a 503 and one error line
/// naming it; repeats of the same answer are not logged again as errors; undoing it resumes
/// issuance without a restart.
async fn assert_withdrawal_stops_issuance_until_undone(withdrawal: Withdrawal) {
    let context = format!("{withdrawal:?}");
    // Arrange
    let (stand_ins, key) = stand_ins_with_key();
    let vault = &stand_ins.key_vault;
    let mut app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );
    assert_token(&issue(&app).await, HOSTNAME, POLICY, &key, &context);

    // Act: the operator withdraws the key; requests keep coming.
    withdrawal.apply(&stand_ins);
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        &format!("{context}: token requests refused within one refresh interval"),
        || async {
            let status = app.get_sas_token("dev-1", None).await.status().as_u16();
            assert!(
                status == 200 || status == 503,
                "{context}: only 200 or 503, got {status}"
            );
            status == 503
        },
    )
    .await;

    // Assert: the 503, its log field, and one error line — however many reads repeat the answer.
    assert_refused_for(&app, withdrawal.logged_as(), &context).await;
    wait_until(
        Duration::from_secs(10),
        &format!("{context}: three reads answered {}", withdrawal.status()),
        || async { vault.answered_with(withdrawal.status()) >= 3 },
    )
    .await;
    assert_refused_for(&app, withdrawal.logged_as(), &context).await;
    // Retried with back-off: 1 s, then 2 s, each scaled by a jitter in [0.5, 1].
    let answered: Vec<Instant> = vault
        .requests()
        .iter()
        .filter(|r| r.status == Some(withdrawal.status()))
        .map(|r| r.at)
        .collect();
    for (retry, (low, high)) in [(0.45, 1.5), (0.95, 2.5)].into_iter().enumerate() {
        let gap = answered[retry + 1]
            .duration_since(answered[retry])
            .as_secs_f64();
        assert!(
            (low..=high).contains(&gap),
            "{context}: retry {} came {gap:.2} s after the read before it",
            retry + 1
        );
    }
    let errors = logged(&app, "ERROR", withdrawal.error_line(), 1).await;
    assert_eq!(
        errors.len(),
        1,
        "{context}: one error line for the withdrawal, not one a read\n{}",
        app.stdout()
    );
    let error = &errors[0];
    assert_eq!(error["secret"], SECRET, "{context}: {error}");
    // The key event: which key was withdrawn, and how long after its last good read.
    assert_eq!(error["event"], "key_withdrawn", "{context}: {error}");
    let loaded_version = logged(&app, "INFO", LOADED, 1).await[0]["key_version"].clone();
    assert!(loaded_version.is_string(), "{context}: {}", app.stdout());
    assert_eq!(error["key_version"], loaded_version, "{context}: {error}");
    assert!(
        error["key_age_seconds"]
            .as_u64()
            .is_some_and(|age| age <= REFRESH_SECONDS + 1),
        "{context}: withdrawn within a refresh of the last good read: {error}"
    );
    assert!(
        error.to_string().contains(withdrawal.cause()),
        "{context}: the error line passes on Key Vault's answer ({}): {error}",
        withdrawal.cause()
    );
    let repeated = logged(&app, "DEBUG", "still withdrawn", 1).await;
    assert!(
        !repeated.is_empty() && repeated.iter().all(|line| line["event"] == "key_withdrawn"),
        "{context}: the repeated answers are logged at debug, as the same event\n{}",
        app.stdout()
    );

    // Undo: the next read (within the back-off, capped at the refresh interval) resumes issuance.
    withdrawal.undo(&stand_ins);
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        &format!("{context}: tokens again after undoing it"),
        || async { app.get_sas_token("dev-1", None).await.status() == 200 },
    )
    .await;
    assert_token(&issue(&app).await, HOSTNAME, POLICY, &key, &context);
    let resumed = logged(
        &app,
        "INFO",
        "Key Vault read succeeded again; issuing tokens",
        1,
    )
    .await;
    assert_eq!(
        resumed.len(),
        1,
        "{context}: one line says issuance resumed\n{}",
        app.stdout()
    );
    let resumed = &resumed[0];
    assert_eq!(resumed["event"], "key_resumed", "{context}: {resumed}");
    assert_eq!(
        resumed["key_version"], loaded_version,
        "{context}: {resumed}"
    );
    assert!(
        resumed["key_age_seconds"]
            .as_u64()
            .is_some_and(|age| age > error["key_age_seconds"].as_u64().unwrap_or(u64::MAX)),
        "{context}: the key's age at resumption counts the withdrawal: {resumed}"
    );
    assert!(
        logged(&app, "INFO", LOADED, 1)
            .await
            .iter()
            .all(|line| line["event"] == "key_loaded"),
        "{context}: every routine read is key_loaded\n{}",
        app.stdout()
    );
    assert!(app.is_running(), "{context}: no restart");
    assert_no_secret_printed(&app, &stand_ins, &[], &context);
}

// ----- Outages: the last good key, for at most KEYVAULT_MAX_KEY_AGE_SECONDS -----

/// `KEYVAULT_MAX_KEY_AGE_SECONDS` for the outage tests: the least the handler accepts with a
/// 10 s refresh (twice the refresh).
const MAX_KEY_AGE: Duration = Duration::from_secs(2 * REFRESH_SECONDS);

/// Settings for an outage test: the shortest refresh and `max_age` seconds.
fn outage_settings(stand_ins: &StandIns, max_age: u64) -> Settings {
    vault_settings(stand_ins)
        .set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string())
        .set("KEYVAULT_MAX_KEY_AGE_SECONDS", max_age.to_string())
}

/// Issues a token and asserts it is signed with `key`.
async fn assert_signs_with(app: &TestApp, key: &str, context: &str) {
    let token = issue(app).await;
    assert_token(&token, HOSTNAME, POLICY, key, context);
}

/// An outage that outlasts the maximum key age: the last good key signs until its last read is
/// that old, then 503 (`key: too_old`, one error line); the vault's return restores issuance.
async fn an_outage_longer_than_the_max_key_age_stops_issuance_when_the_key_is_that_old() {
    let context = "outage longer than KEYVAULT_MAX_KEY_AGE_SECONDS";
    let (stand_ins, key) = stand_ins_with_key();
    let vault = &stand_ins.key_vault;
    let app = TestApp::spawn(&outage_settings(&stand_ins, MAX_KEY_AGE.as_secs()));
    assert_signs_with(&app, &key, context).await;

    vault.go_down(Outage::ServiceUnavailable);
    let last_read = vault
        .last_authorized_read()
        .expect("the first read was answered");
    // Every answer is the last good key until the first 503, which comes once the key is
    // MAX_KEY_AGE old (never earlier: the handler takes its read time after the vault answered).
    let refused_at = poll(MAX_KEY_AGE + REFRESH_MARGIN, || async {
        let response = app.get_sas_token("dev-1", None).await;
        match response.status().as_u16() {
            503 => Some(last_read.elapsed()),
            _ => {
                let issued = Issued::read(response, "during the outage", unix_now()).await;
                assert_token(&issued.token, HOSTNAME, POLICY, &key, context);
                None
            }
        }
    })
    .await
    .unwrap_or_else(|| {
        panic!("{context}: still issuing {MAX_KEY_AGE:?} + margin after the last read")
    });
    assert!(
        refused_at > MAX_KEY_AGE,
        "{context}: refused {refused_at:?} after the last good read, before {MAX_KEY_AGE:?}"
    );
    assert_refused_for(&app, "too_old", context).await;
    let warned = lines_starting(
        &app,
        "WARN",
        "Key Vault read failed; still signing with the last good key",
    );
    assert!(
        !warned.is_empty(),
        "{context}: failures within the age are warnings\n{}",
        app.stdout()
    );
    for line in &warned {
        assert_eq!(line["event"], "key_read_failed", "{context}: {line}");
        assert!(
            line["failures"].as_u64().is_some_and(|n| n >= 1),
            "{context}: {line}"
        );
    }
    let too_old =
        "Key Vault read failed and the last good key is older than KEYVAULT_MAX_KEY_AGE_SECONDS";
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        &format!("{context}: the error line once a read fails with the key too old"),
        || async { !lines_starting(&app, "ERROR", too_old).is_empty() },
    )
    .await;
    let errors = lines_starting(&app, "ERROR", too_old);
    assert_eq!(
        errors.len(),
        1,
        "{context}: one error line\n{}",
        app.stdout()
    );
    assert_eq!(errors[0]["secret"], SECRET);
    assert_eq!(
        errors[0]["event"], "key_too_old",
        "{context}: {}",
        errors[0]
    );
    assert!(
        errors[0]["key_age_seconds"]
            .as_u64()
            .is_some_and(|age| age >= MAX_KEY_AGE.as_secs()),
        "{context}: the age that made it too old: {}",
        errors[0]
    );

    vault.come_back();
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        &format!("{context}: tokens again once the vault is back"),
        || async { app.get_sas_token("dev-1", None).await.status() == 200 },
    )
    .await;
    assert_signs_with(&app, &key, context).await;
    assert_eq!(
        lines_starting(&app, "ERROR", too_old).len(),
        1,
        "{context}: still one error line\n{}",
        app.stdout()
    );
    assert_no_secret_printed(&app, &stand_ins, &[], context);
}

/// A throttled vault (429) for the scheduled refresh and the retry after it: the key's last read
/// stays younger than the maximum age, so every request is answered with it.
async fn an_outage_shorter_than_the_max_key_age_never_stops_issuance() {
    let context = "outage shorter than KEYVAULT_MAX_KEY_AGE_SECONDS";
    let (stand_ins, key) = stand_ins_with_key();
    let vault = &stand_ins.key_vault;
    let app = TestApp::spawn(&outage_settings(&stand_ins, MAX_KEY_AGE.as_secs()));
    assert_signs_with(&app, &key, context).await;

    vault.go_down(Outage::Throttled);
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        &format!("{context}: the refresh and one retry throttled, tokens signed throughout"),
        || async {
            assert_signs_with(&app, &key, context).await;
            vault.failed_by_outage() >= 2
        },
    )
    .await;
    vault.come_back();
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        &format!("{context}: the read after the outage, tokens signed throughout"),
        || async {
            assert_signs_with(&app, &key, context).await;
            vault.authorized_reads() >= 2
        },
    )
    .await;

    assert_signs_with(&app, &key, context).await;
    let warned = logged(
        &app,
        "WARN",
        "Key Vault read failed; still signing with the last good key",
        2,
    )
    .await;
    assert!(
        warned.len() >= 2,
        "{context}: a warning a failed read\n{}",
        app.stdout()
    );
    assert!(
        warned
            .iter()
            .all(|line| line["error"].as_str().is_some_and(|e| e.contains("429"))),
        "{context}: the warnings name the throttling: {warned:?}"
    );
    assert!(
        warned.iter().all(|line| line["event"] == "key_read_failed"
            && line["key_age_seconds"]
                .as_u64()
                .is_some_and(|age| age < MAX_KEY_AGE.as_secs())),
        "{context}: read failures with a key younger than the maximum age: {warned:?}"
    );
    assert!(
        request_lines(&app.stdout())
            .iter()
            .all(|line| log_field(line, "key").is_none() && line["status"] == 200),
        "{context}: every request was issued\n{}",
        app.stdout()
    );
    assert!(
        problem_lines(&app.stdout())
            .iter()
            .all(|line| line["level"] != "ERROR"),
        "{context}: no error line\n{}",
        app.stdout()
    );
    assert_no_secret_printed(&app, &stand_ins, &[], context);
}

/// `KEYVAULT_MAX_KEY_AGE_SECONDS=0`: a warning at start, and an outage longer than any other
/// test's maximum age leaves the last good key in use.
async fn a_max_key_age_of_zero_warns_at_start_and_keeps_the_key_through_an_outage() {
    let context = "KEYVAULT_MAX_KEY_AGE_SECONDS=0";
    let (stand_ins, key) = stand_ins_with_key();
    let vault = &stand_ins.key_vault;
    let app = TestApp::spawn(&outage_settings(&stand_ins, 0));
    assert_signs_with(&app, &key, context).await;
    assert_eq!(
        lines_starting(&app, "WARN", "KEYVAULT_MAX_KEY_AGE_SECONDS is 0").len(),
        1,
        "{context}: one warning at start\n{}",
        app.stdout()
    );

    vault.go_down(Outage::DropConnections);
    let last_read = vault
        .last_authorized_read()
        .expect("the first read was answered");
    wait_until(
        MAX_KEY_AGE + REFRESH_MARGIN,
        &format!("{context}: the key older than {MAX_KEY_AGE:?}, tokens signed throughout"),
        || async {
            assert_signs_with(&app, &key, context).await;
            last_read.elapsed() > MAX_KEY_AGE + Duration::from_secs(1)
        },
    )
    .await;
    assert!(vault.failed_by_outage() >= 2, "{context}: the reads failed");
    assert_no_secret_printed(&app, &stand_ins, &[], context);
}

#[tokio::test]
async fn a_withdrawal_stops_issuance_within_a_refresh_and_an_outage_only_once_the_key_is_too_old() {
    // Key Vault's answers as the README's table has them. Each scenario waits on the refresh
    // interval, the back-off or the maximum age, mostly idle: they run side by side, in one test,
    // so that together they take no longer than the slowest.
    let mut running = JoinSet::new();
    for withdrawal in [
        Withdrawal::Disable,
        Withdrawal::Delete,
        Withdrawal::RemoveAccess,
    ] {
        running.spawn(assert_withdrawal_stops_issuance_until_undone(withdrawal));
    }
    running.spawn(an_outage_longer_than_the_max_key_age_stops_issuance_when_the_key_is_that_old());
    running.spawn(an_outage_shorter_than_the_max_key_age_never_stops_issuance());
    running.spawn(a_max_key_age_of_zero_warns_at_start_and_keeps_the_key_through_an_outage());
    while let Some(finished) = running.join_next().await {
        if let Err(failed) = finished {
            std::panic::resume_unwind(failed.into_panic());
        }
    }
}

// ----- What the secret's value may be -----

#[tokio::test]
async fn settings_that_override_a_different_connection_string_part_are_warned_about_once_a_version()
{
    // Arrange: a connection string for another hub and policy than the settings name.
    let stand_ins = StandIns::start();
    let vault = &stand_ins.key_vault;
    let key = random_key();
    let connection_string = |key: &str| {
        format!(
            "HostName=cs-hub.azure-devices.net;SharedAccessKeyName=registryReadWrite;SharedAccessKey={key}"
        )
    };
    let first_version = vault.set_secret(SECRET, &connection_string(&key));
    let app = TestApp::spawn(
        &vault_settings(&stand_ins).set("KEYVAULT_REFRESH_SECONDS", REFRESH_SECONDS.to_string()),
    );
    assert_signs_with(&app, &key, "the settings win").await;
    let warnings = |version: &str| {
        let hub = lines_starting(
            &app,
            "WARN",
            "IOTHUB_HOSTNAME differs from the connection string's HostName; IOTHUB_HOSTNAME is used",
        );
        let policy = lines_starting(
            &app,
            "WARN",
            "IOTHUB_POLICY_NAME differs from the connection string's SharedAccessKeyName; IOTHUB_POLICY_NAME is used",
        );
        [hub, policy].map(|lines| {
            lines
                .iter()
                .filter(|line| line["key_version"] == version && line["secret"] == SECRET)
                .count()
        })
    };

    // Act: a refresh reads the same version; then the secret is rotated.
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "a refresh of the same version",
        || async { vault.authorized_reads() >= 2 },
    )
    .await;
    // A read's warnings come before its own line.
    logged(&app, "INFO", LOADED, 2).await;
    let warned_for_first = warnings(&first_version);
    let new_key = random_key();
    let second_version = vault.set_secret(SECRET, &connection_string(&new_key));
    wait_until(
        Duration::from_secs(REFRESH_SECONDS) + REFRESH_MARGIN,
        "the rotated connection string",
        || async { issue(&app).await.is_signed_with(&new_key) },
    )
    .await;
    logged(&app, "INFO", LOADED, 3).await;

    // Assert: each setting warned about once for each version, however often it is read.
    assert_eq!(
        warned_for_first,
        [1, 1],
        "one warning a setting for the first version, not one a read\n{}",
        app.stdout()
    );
    assert_eq!(warnings(&first_version), [1, 1]);
    assert_eq!(
        warnings(&second_version),
        [1, 1],
        "and again for the new version\n{}",
        app.stdout()
    );
    assert_no_secret_printed(&app, &stand_ins, &[&key, &new_key], "override warnings");
}
