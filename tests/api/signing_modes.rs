//! Issue 13: what each route signs in each signing mode, checked against the official SDKs.
//!
//! - hub-policy: module tokens byte for byte against Python's `azure-iot-device` module token and
//!   field by field against Node's `azure-iot-common`; device and module tokens accepted by the
//!   Python SDK's `create_from_sastoken` for the right device, module and hub;
//! - enrollment-group: device-key tokens (no `skn`) byte for byte against Python's token signed
//!   with the key the oracle derives itself (Python's `hmac`, as Microsoft's docs write the
//!   derivation), field by field against Node's, accepted by `create_from_sastoken`; DPS
//!   registration tokens byte for byte against the token the Python provisioning client builds
//!   (which sends no `skn`) plus `skn=registration`;
//! - what a mode cannot sign is a 404 or a 400, never a token; the renewal hints of every answer;
//!   the audit fields of each issued token's log line; and each new start-up refusal.

use std::time::Duration;

use serde_json::{Value, json};

use crate::stand_ins::StandIns;
use crate::support::{
    answers::{TokenFor, assert_problem},
    app::TestApp,
    logs::log_text,
    oracles::{node_oracle, oracle_batch, oracle_str, python_oracle},
    routes::{
        LEGACY_ROUTE, MODULE_ROUTE, REGISTRATION_ROUTE, TOKEN_ROUTE, module_path,
        registration_path, token_path,
    },
    sas::{encode, upper_hex},
    settings::{HOSTNAME, KEY, POLICY, Settings},
    startup::{Refusal, misrefused_startups},
    waiting::poll,
};

/// The enrollment group key of DPS's published example (docs/azure-behaviour.md §8) …
const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
/// … its registration id …
const PUBLISHED_ID: &str = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
/// … and the device key derived from them.
const PUBLISHED_DERIVED_KEY: &str = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=";
/// A DPS ID scope.
const ID_SCOPE: &str = "0ne00000A0A";
/// The fields of a device-key token, in order: no `skn`.
const DEVICE_KEY_FIELDS: [&str; 3] = ["sr", "sig", "se"];

/// Enrollment-group mode with the published group key, no hub policy settings.
fn enrollment_group() -> Settings {
    Settings::base()
        .unset("IOTHUB_POLICY_NAME")
        .unset("IOTHUB_POLICY_KEY")
        .set("SIGNING_MODE", "enrollment-group")
        .set("ENROLLMENT_GROUP_KEY", GROUP_KEY)
}

/// Registration ids (and so, in enrollment-group mode, device ids) with every character DPS
/// allows, the published one, and the longest.
fn registration_ids() -> Vec<String> {
    vec![
        PUBLISHED_ID.to_owned(),
        "dev-1".to_owned(),
        "a.b_c:d-".to_owned(),
        "r".repeat(128),
    ]
}

/// A case for the oracles: `kind`, the token the handler issued, and what it was asked for.
fn case(kind: &str, ids: Value, token: &str, expires_in: u64, se: u64) -> Value {
    let mut case = json!({
        "kind": kind,
        "hostname": HOSTNAME,
        "se": se,
        "ttl": expires_in,
        "token": token,
        "group_key": GROUP_KEY,
        "id_scope": ID_SCOPE,
    });
    for (name, value) in ids.as_object().expect("ids are an object") {
        case[name] = value.clone();
    }
    case
}

/// `se` of a token, as a number.
fn se_of(token: &str) -> u64 {
    token
        .split(['&', ' '])
        .find_map(|field| field.strip_prefix("se="))
        .and_then(|se| se.parse().ok())
        .unwrap_or_else(|| panic!("no integer se in {token}"))
}

#[tokio::test]
async fn module_tokens_match_the_python_sdk_byte_for_byte_and_the_node_sdk_field_by_field() {
    let app = TestApp::spawn(&Settings::base());
    let pairs = [
        ("dev-1", "m1"),
        ("gateway.7", "edgeHub"),
        ("a:b=c@d$e", "mod$1:x"),
        ("dev*1", "(m)!'"),
        ("d", &*"m".repeat(128)),
    ];
    let mut cases = Vec::new();
    for (device, module) in pairs {
        for query in [None, Some("ttl=120")] {
            let path = module_path(&encode(device), &encode(module), query);
            let answer = app.token(&path, &[], TokenFor::Module).await;
            assert_eq!(answer.text("deviceId"), device, "{path}");
            assert_eq!(answer.text("moduleId"), module, "{path}");
            assert_eq!(answer.expires_in, if query.is_some() { 120 } else { 3600 });
            let token = answer.fields(&["sr", "sig", "se", "skn"]);
            assert_eq!(
                token.sr,
                encode(&format!("{HOSTNAME}/devices/{device}/modules/{module}")),
                "{path}: sr"
            );
            assert_eq!(token.skn.as_deref(), Some(POLICY), "{path}: skn");
            cases.push((
                path,
                device,
                module,
                case(
                    "module",
                    json!({"device_id": device, "module_id": module}),
                    &answer.token,
                    answer.expires_in,
                    token.se,
                ),
                token,
            ));
        }
    }
    let batch = oracle_batch(KEY, POLICY, cases.iter().map(|c| c.3.clone()));
    let python = python_oracle(&batch);
    let node = node_oracle(&batch);
    for (((path, device, module, _, token), py), js) in cases.iter().zip(&python).zip(&node) {
        assert_eq!(
            token.raw,
            oracle_str(py, "sdk_token"),
            "{path}: differs from azure-iot-device's module token"
        );
        assert_eq!(
            py["accepted"],
            json!({"device_id": device, "module_id": module, "hostname": HOSTNAME}),
            "{path}: IoTHubModuleClient.create_from_sastoken must accept it for that module"
        );
        let fields = &js["sdk_fields"];
        assert_eq!(
            upper_hex(oracle_str(fields, "sr")),
            token.sr,
            "{path}: Node sr"
        );
        assert_eq!(oracle_str(fields, "skn"), POLICY, "{path}: Node skn");
        assert_eq!(
            oracle_str(fields, "se"),
            token.se.to_string(),
            "{path}: Node se"
        );
        assert_eq!(
            oracle_str(js, "sig_over_token_sr"),
            token.sig,
            "{path}: azure-iot-common signs our sr to our sig"
        );
    }
}

#[tokio::test]
async fn device_tokens_of_both_routes_are_accepted_by_the_python_device_sdk() {
    let app = TestApp::spawn(&Settings::base());
    let mut cases = Vec::new();
    for device in ["dev-1", "a:b=c@d$e", "dev*1"] {
        for path in [
            token_path(&encode(device), None),
            format!("{LEGACY_ROUTE}?deviceid={}", encode(device)),
        ] {
            let answer = app.token(&path, &[], TokenFor::Device).await;
            let se = se_of(&answer.token);
            cases.push((
                path,
                device,
                case(
                    "device",
                    json!({"device_id": device}),
                    &answer.token,
                    answer.expires_in,
                    se,
                ),
            ));
        }
    }
    let python = python_oracle(&oracle_batch(
        KEY,
        POLICY,
        cases.iter().map(|c| c.2.clone()),
    ));
    for ((path, device, _), py) in cases.iter().zip(&python) {
        assert_eq!(
            py["accepted"],
            json!({"device_id": device, "module_id": "", "hostname": HOSTNAME}),
            "{path}: IoTHubDeviceClient.create_from_sastoken must accept it for that device"
        );
    }
}

#[tokio::test]
async fn enrollment_group_device_tokens_are_device_key_tokens_signed_with_the_derived_key() {
    let app = TestApp::spawn(&enrollment_group());
    let mut cases = Vec::new();
    for id in registration_ids() {
        for path in [
            token_path(&encode(&id), None),
            format!("{LEGACY_ROUTE}?deviceid={}&ttl=600", encode(&id)),
        ] {
            let answer = app.token(&path, &[], TokenFor::Device).await;
            assert_eq!(answer.text("deviceId"), id, "{path}");
            let token = answer.fields(&DEVICE_KEY_FIELDS);
            assert_eq!(
                token.sr,
                encode(&format!("{HOSTNAME}/devices/{id}")),
                "{path}: sr"
            );
            assert!(
                !token.is_signed_with(GROUP_KEY),
                "{path}: never signed with the group key itself"
            );
            let kase = case(
                "device_key",
                json!({"device_id": id}),
                &answer.token,
                answer.expires_in,
                token.se,
            );
            cases.push((path, id.clone(), kase, token));
        }
    }
    let batch = oracle_batch(KEY, POLICY, cases.iter().map(|c| c.2.clone()));
    let python = python_oracle(&batch);
    let node = node_oracle(&batch);
    for (((path, id, _, token), py), js) in cases.iter().zip(&python).zip(&node) {
        let derived = oracle_str(py, "derived_key");
        // Every test runs at RUST_LOG=trace; the drop check watches the group key, this the
        // keys derived from it.
        assert!(
            !app.output().contains(derived),
            "{path}: a derived key was printed"
        );
        if id == PUBLISHED_ID {
            assert_eq!(derived, PUBLISHED_DERIVED_KEY, "the published derivation");
        }
        assert_eq!(
            derived,
            oracle_str(js, "derived_key"),
            "both oracles derive alike"
        );
        assert!(
            token.is_signed_with(derived),
            "{path}: signed with the derived key"
        );
        assert_eq!(
            token.raw,
            oracle_str(py, "sdk_token"),
            "{path}: differs from azure-iot-device's device-key token"
        );
        assert_eq!(
            py["accepted"],
            json!({"device_id": id, "module_id": "", "hostname": HOSTNAME}),
            "{path}: IoTHubDeviceClient.create_from_sastoken must accept it"
        );
        let fields = &js["sdk_fields"];
        assert_eq!(
            upper_hex(oracle_str(fields, "sr")),
            token.sr,
            "{path}: Node sr"
        );
        assert_eq!(oracle_str(fields, "sig"), token.sig, "{path}: Node sig");
        assert!(
            fields.get("skn").is_none_or(Value::is_null),
            "{path}: Node skn"
        );
    }
}

#[tokio::test]
async fn registration_tokens_match_the_python_provisioning_clients_token() {
    let app = TestApp::spawn(&enrollment_group().set("DPS_ID_SCOPE", ID_SCOPE));
    let mut cases = Vec::new();
    for id in registration_ids() {
        for query in [None, Some("ttl=900")] {
            let path = registration_path(&encode(&id), query);
            let answer = app.token(&path, &[], TokenFor::Registration).await;
            assert_eq!(answer.text("registrationId"), id, "{path}");
            let token = answer.fields(&["sr", "sig", "se", "skn"]);
            assert_eq!(
                token.sr,
                encode(&format!("{ID_SCOPE}/registrations/{id}")),
                "{path}: sr"
            );
            assert_eq!(token.skn.as_deref(), Some("registration"), "{path}: skn");
            let kase = case(
                "registration",
                json!({"registration_id": id}),
                &answer.token,
                answer.expires_in,
                token.se,
            );
            cases.push((path, kase, token));
        }
    }
    let python = python_oracle(&oracle_batch(
        KEY,
        POLICY,
        cases.iter().map(|c| c.1.clone()),
    ));
    for ((path, _, token), py) in cases.iter().zip(&python) {
        assert_eq!(
            format!("{}&skn=registration", oracle_str(py, "client_token")),
            token.raw,
            "{path}: the provisioning client's own token, plus skn=registration"
        );
        assert_eq!(
            token.raw,
            oracle_str(py, "sdk_token"),
            "{path}: differs from the SDK token with key_name=registration"
        );
        assert!(
            token.is_signed_with(oracle_str(py, "derived_key")),
            "{path}: signed with the derived key"
        );
    }
}

#[tokio::test]
async fn what_a_mode_cannot_sign_is_refused_never_signed() {
    let policy = TestApp::spawn(&Settings::base());
    let group = TestApp::spawn(&enrollment_group());
    let group_with_scope = TestApp::spawn(&enrollment_group().set("DPS_ID_SCOPE", ID_SCOPE));

    let (_, body) = assert_problem(
        policy.get(&registration_path("dev-1", None), &[]).await,
        404,
        "hub-policy mode: no registration route",
    )
    .await;
    assert_eq!(body["type"], "about:blank", "a plain 404: {body}");
    assert_problem(
        group.get(&registration_path("dev-1", None), &[]).await,
        404,
        "enrollment-group mode without DPS_ID_SCOPE: no registration route",
    )
    .await;
    for app in [&group, &group_with_scope] {
        let (_, body) = assert_problem(
            app.get(&module_path("dev-1", "m1", None), &[]).await,
            404,
            "enrollment-group mode: module tokens",
        )
        .await;
        assert_eq!(
            body["type"], "urn:iothub-sas:problem:module-tokens-unavailable",
            "{body}"
        );
    }
    for (app, path, kind, what) in [
        (
            &group,
            token_path("Sensor-1", None),
            "invalid-device-id",
            "an upper-case device id",
        ),
        (
            &group,
            token_path("dev*1", None),
            "invalid-device-id",
            "a device id DPS cannot register",
        ),
        (
            &group,
            format!("{LEGACY_ROUTE}?deviceid=a."),
            "invalid-device-id",
            "a bad last character",
        ),
        (
            &group_with_scope,
            registration_path("Sensor-1", None),
            "invalid-registration-id",
            "an upper-case registration id",
        ),
        (
            &group_with_scope,
            registration_path("a%2Fb", None),
            "invalid-registration-id",
            "a slash",
        ),
        (
            &policy,
            module_path("dev-1", "a%2Fb", None),
            "invalid-module-id",
            "a slash in a module id",
        ),
        (
            &policy,
            module_path("dev-1", &"m".repeat(129), None),
            "invalid-module-id",
            "a module id over 128",
        ),
    ] {
        let (_, body) = assert_problem(app.get(&path, &[]).await, 400, what).await;
        assert_eq!(
            body["type"],
            format!("urn:iothub-sas:problem:{kind}"),
            "{what}: {body}"
        );
    }
}

#[tokio::test]
async fn refresh_hints_vary_from_answer_to_answer_within_their_bounds() {
    let app = TestApp::spawn(&Settings::base());
    for ttl in [60_u64, 3600] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let answer = app
                .token(
                    &token_path("dev-1", Some(&format!("ttl={ttl}"))),
                    &[],
                    TokenFor::Device,
                )
                .await;
            // `TokenAnswer::read` checked 75 % ≤ refreshIn ≤ 90 % of expiresIn.
            assert_eq!(
                answer.expires_in, ttl,
                "expiresIn is the lifetime asked for"
            );
            seen.insert(answer.refresh_in);
        }
        // 40 draws from 10 (ttl=60) or 541 (ttl=3600) values: all alike has odds below 1e-38.
        assert!(seen.len() > 1, "ttl={ttl}: every refreshIn was {seen:?}");
    }
}

#[tokio::test]
async fn each_issued_tokens_log_line_is_its_audit_record() {
    let policy = TestApp::spawn(&Settings::base());
    let module = policy
        .token(&module_path("dev-1", "m1", None), &[], TokenFor::Module)
        .await;
    let device = policy
        .token(&token_path("dev-2", None), &[], TokenFor::Device)
        .await;
    let group = TestApp::spawn(&enrollment_group().set("DPS_ID_SCOPE", ID_SCOPE));
    let registration = group
        .token(
            &registration_path("reg-1", None),
            &[],
            TokenFor::Registration,
        )
        .await;

    let stand_ins = StandIns::start();
    let version = stand_ins.key_vault.set_secret("iothub-device-policy", KEY);
    let vault = TestApp::spawn(
        &Settings::key_vault("iothub-device-policy").set_all(stand_ins.environment().iter()),
    );
    let from_vault = vault
        .token(&token_path("dev-3", None), &[], TokenFor::Device)
        .await;

    for (app, answer, route, ids, mode, key_version) in [
        (
            &policy,
            &module,
            MODULE_ROUTE,
            vec![("device_id", "dev-1"), ("module_id", "m1")],
            "hub-policy",
            None,
        ),
        (
            &policy,
            &device,
            TOKEN_ROUTE,
            vec![("device_id", "dev-2")],
            "hub-policy",
            None,
        ),
        (
            &group,
            &registration,
            REGISTRATION_ROUTE,
            vec![("registration_id", "reg-1")],
            "enrollment-group",
            None,
        ),
        (
            &vault,
            &from_vault,
            TOKEN_ROUTE,
            vec![("device_id", "dev-3")],
            "hub-policy",
            Some(version.as_str()),
        ),
    ] {
        // A log line may arrive after its answer: poll for it.
        let line = poll(Duration::from_secs(5), || async {
            app.request_log_lines(1).await.into_iter().find(|line| {
                log_text(line, "status").as_deref() == Some("200")
                    && log_text(line, "expires_on").as_deref() == Some(answer.text("expiresOn"))
                    && ids
                        .iter()
                        .all(|(k, v)| log_text(line, k).as_deref() == Some(*v))
            })
        })
        .await
        .unwrap_or_else(|| panic!("no audit line for {route} {ids:?}"));
        let line = &line;
        assert_eq!(log_text(line, "route").as_deref(), Some(route), "{line}");
        assert_eq!(
            log_text(line, "signing_mode").as_deref(),
            Some(mode),
            "{line}"
        );
        assert_eq!(
            log_text(line, "key_version").as_deref(),
            key_version,
            "{line}"
        );
        assert_eq!(
            log_text(line, "scope"),
            None,
            "no DEVICE_SCOPES, no scope key: {line}"
        );
        assert!(
            !line.to_string().contains(&answer.token),
            "never the token: {line}"
        );
    }
}

#[test]
fn settings_the_signing_mode_would_ignore_or_cannot_use_stop_the_start() {
    let group = enrollment_group;
    let refusals = [
        (
            "an unknown mode",
            Settings::base().set("SIGNING_MODE", "policy"),
            "SIGNING_MODE",
        ),
        (
            "a policy name in enrollment-group mode",
            group().set("IOTHUB_POLICY_NAME", "device"),
            "IOTHUB_POLICY_NAME",
        ),
        (
            "a policy key in enrollment-group mode",
            group().set("IOTHUB_POLICY_KEY", KEY),
            "IOTHUB_POLICY_KEY",
        ),
        (
            "the seed's policy name",
            group().set("keyname", "device"),
            "keyname",
        ),
        (
            "the seed's policy key",
            group().set("keyvalue", KEY),
            "keyvalue",
        ),
        (
            "a policy key secret in enrollment-group mode",
            group().set("IOTHUB_POLICY_KEY_SECRET", "s"),
            "IOTHUB_POLICY_KEY_SECRET",
        ),
        (
            "no group key",
            group().unset("ENROLLMENT_GROUP_KEY"),
            "ENROLLMENT_GROUP_KEY",
        ),
        (
            "a group key that is not base64",
            group().set("ENROLLMENT_GROUP_KEY", "n0t-base64!"),
            "ENROLLMENT_GROUP_KEY",
        ),
        (
            "a group key secret without KEYVAULT_URI",
            group().set("ENROLLMENT_GROUP_KEY_SECRET", "g"),
            "ENROLLMENT_GROUP_KEY_SECRET",
        ),
        (
            "a group key in settings next to KEYVAULT_URI",
            group()
                .set("KEYVAULT_URI", "https://kv.vault.azure.net/")
                .set("ENROLLMENT_GROUP_KEY_SECRET", "g"),
            "ENROLLMENT_GROUP_KEY",
        ),
        (
            "a malformed ID scope",
            group().set("DPS_ID_SCOPE", "0ne/../x"),
            "DPS_ID_SCOPE",
        ),
        (
            "no hub in enrollment-group mode",
            group().unset("IOTHUB_HOSTNAME"),
            "IOTHUB_HOSTNAME",
        ),
        (
            "an ID scope in hub-policy mode",
            Settings::base().set("DPS_ID_SCOPE", ID_SCOPE),
            "DPS_ID_SCOPE",
        ),
        (
            "a group key in hub-policy mode",
            Settings::base().set("ENROLLMENT_GROUP_KEY", GROUP_KEY),
            "ENROLLMENT_GROUP_KEY",
        ),
    ];
    let cases: Vec<Refusal<'_>> = refusals.into_iter().map(Refusal::from).collect();
    let problems = misrefused_startups(&cases, |failure| {
        // Neither key is ever echoed, not even a malformed one.
        ["n0t-base64!", GROUP_KEY, KEY]
            .iter()
            .filter(|secret| failure.stderr.contains(*secret) || failure.stdout.contains(*secret))
            .map(|secret| format!("printed the value {secret:?}"))
            .collect()
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
