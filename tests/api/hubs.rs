//! Issue 23: tokens for the hub each device is assigned to — several hubs, both host-name forms
//! of a TLS 1.3 hub, suffix entries (IoT Central), and `hostName` in every answer.
//!
//! The official Python device SDK is the judge of what a token's host means: given each hub's
//! token in each form, `IoTHubDeviceClient.create_from_sastoken` reads back the host the caller
//! asked for, and `update_sastoken` with the same device's token for another hub is refused
//! ("does not match existing hostname") — which is why `hostName` must equal the host in `sr`,
//! and why a device that DPS moved needs a new client, not a renewed token.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::stand_ins::StandIns;
use crate::stand_ins::bearer::Fixture;
use crate::stand_ins::issuer::{Caller, Version};
use crate::support::{
    answers::{TokenFor, assert_caller_not_allowed, assert_problem, assert_unavailable},
    app::TestApp,
    logs::{json_lines, log_text},
    oracles::{oracle_str, python_oracle},
    routes::{LEGACY_ROUTE, module_path, registration_path, token_path},
    sas::{SasToken, encode},
    settings::{KEY, POLICY, Settings},
    startup::{Refusal, misrefused_startups},
    waiting::{poll, wait_until},
};

/// Three hubs: the first listed in its classic form (the default), the second in its device
/// form (the TLS 1.3 gateway's name), the third classic.
const EU: &str = "contoso-eu.azure-devices.net";
const US: &str = "contoso-us.device.azure-devices.net";
const AP: &str = "contoso-ap.azure-devices.net";
/// Each hub's policy key (32 random bytes each, base64).
const EU_KEY: &str = KEY;
const US_KEY: &str = "r4t0xIbbNRZ8d1zUj1Zb3uhdC0e4mzPVjrkJ7EVPn7s=";
const AP_KEY: &str = "8Vv1Y6j1cVt2jYQmD3m+Jx5p2q6JkQ2P7pYQmP1d9lA=";
/// The enrollment group key of DPS's published example.
const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
const ID_SCOPE: &str = "0ne00000A0A";

/// A hub's two host names: classic and device.
fn forms(name: &str) -> [String; 2] {
    [
        format!("{name}.azure-devices.net"),
        format!("{name}.device.azure-devices.net"),
    ]
}

/// Hub-policy mode over the three hubs, each with its own key.
fn three_hub_policy() -> Settings {
    Settings::base()
        .unset("IOTHUB_HOSTNAME")
        .unset("IOTHUB_POLICY_KEY")
        .set("IOTHUB_HOSTNAMES", format!("{EU}, {US},{AP}"))
        .set(
            "IOTHUB_POLICY_KEYS",
            json!({
                // Either form names the hub.
                "contoso-eu.device.azure-devices.net": EU_KEY,
                US: US_KEY,
                "CONTOSO-AP.azure-devices.net": AP_KEY,
            })
            .to_string(),
        )
}

/// Enrollment-group mode with DPS over `hubs`.
fn enrollment_group(hubs: &str) -> Settings {
    Settings::base()
        .unset("IOTHUB_HOSTNAME")
        .unset("IOTHUB_POLICY_NAME")
        .unset("IOTHUB_POLICY_KEY")
        .set("IOTHUB_HOSTNAMES", hubs)
        .set("SIGNING_MODE", "enrollment-group")
        .set("ENROLLMENT_GROUP_KEY", GROUP_KEY)
        .set("DPS_ID_SCOPE", ID_SCOPE)
}

/// The host in a token's `sr`.
fn sr_host(token: &SasToken) -> String {
    let sr = percent_encoding::percent_decode_str(&token.sr)
        .decode_utf8()
        .expect("sr decodes")
        .into_owned();
    sr.split('/').next().expect("a host").to_owned()
}

/// `path` with `hub=HUB` added to its query.
fn with_hub(path: &str, hub: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}hub={}", encode(hub))
}

/// The audit line of the answer whose token expires at `expires_on` for `device`, polled for.
async fn audit_line(app: &TestApp, device: &str, expires_on: &str, host: &str) -> Value {
    poll(Duration::from_secs(5), || async {
        app.request_log_lines(1)
            .await
            .into_iter()
            .rev()
            .find(|line| {
                log_text(line, "device_id").as_deref() == Some(device)
                    && log_text(line, "expires_on").as_deref() == Some(expires_on)
                    && log_text(line, "hub_form").as_deref()
                        == Some(if host.contains(".device.") {
                            "device"
                        } else {
                            "classic"
                        })
            })
    })
    .await
    .unwrap_or_else(|| panic!("no audit line for {device} expiring {expires_on}"))
}

#[tokio::test]
async fn each_hub_in_each_form_gets_its_own_key_and_the_python_sdk_connects_to_the_host_asked_for()
{
    let app = TestApp::spawn(&three_hub_policy());
    let hubs = [
        ("contoso-eu", EU_KEY),
        ("contoso-us", US_KEY),
        ("contoso-ap", AP_KEY),
    ];
    for (name, key) in hubs {
        let mut cases = Vec::new();
        let mut tokens = Vec::new();
        for host in forms(name) {
            // The device and legacy routes, and the hub named in another letter case.
            let asked = [
                with_hub(&token_path("dev-1", None), &host),
                with_hub(
                    &format!("{LEGACY_ROUTE}?deviceid=dev-1"),
                    &host.to_uppercase(),
                ),
            ];
            for path in asked {
                let issued = app.issue(&path).await;
                assert_eq!(sr_host(&issued.token), host, "{path}: the form asked for");
                assert_eq!(issued.host_name, host, "{path}: hostName");
                assert!(
                    issued.token.is_signed_with(key),
                    "{path}: the hub's own key"
                );
                for other in hubs.iter().filter(|(other, _)| *other != name) {
                    assert!(
                        !issued.token.is_signed_with(other.1),
                        "{path}: not {}'s key",
                        other.0
                    );
                }
                let line = audit_line(&app, "dev-1", &issued.expires_on, &host).await;
                assert_eq!(
                    log_text(&line, "hub").as_deref(),
                    Some(format!("{name}.azure-devices.net").as_str()),
                    "{path}: one name per hub in the audit line: {line}"
                );
                tokens.push(issued.token.raw.clone());
                cases.push(json!({
                    "hostname": host, "device_id": "dev-1", "se": issued.token.se,
                    "ttl": 3600, "token": issued.token.raw,
                }));
            }
            // A module token names the form asked for too.
            let answer = app
                .token(
                    &with_hub(&module_path("dev-1", "m1", None), &host),
                    &[],
                    TokenFor::Module,
                )
                .await;
            assert_eq!(answer.text("hostName"), host);
            assert!(
                answer
                    .fields(&["sr", "sig", "se", "skn"])
                    .is_signed_with(key)
            );
        }
        for (result, case) in python_oracle(&json!({"key": key, "policy": POLICY, "cases": cases}))
            .iter()
            .zip(&tokens)
        {
            let host = sr_host(&SasToken::parse(case));
            assert_eq!(
                result["accepted"]["hostname"], host,
                "create_from_sastoken connects to the host in sr: {result}"
            );
            assert_eq!(result["accepted"]["device_id"], "dev-1");
            assert_eq!(
                result["sdk_token"].as_str(),
                Some(case.as_str()),
                "byte for byte the SDK's token for {host}"
            );
        }
    }

    // The default hub, in its listed form.
    let default = app.issue(&token_path("dev-1", None)).await;
    assert_eq!(default.host_name, EU);
    assert!(default.token.is_signed_with(EU_KEY));
    let us_default_form = app.issue(&with_hub(&token_path("dev-1", None), US)).await;
    assert_eq!(us_default_form.host_name, US);
}

#[tokio::test]
async fn a_client_cannot_be_renewed_with_another_hubs_token_which_is_why_host_name_matters() {
    let app = TestApp::spawn(&three_hub_policy());
    let eu = app.issue(&with_hub(&token_path("dev-1", None), EU)).await;
    let eu_device_form = app
        .issue(&with_hub(
            &token_path("dev-1", None),
            "contoso-eu.device.azure-devices.net",
        ))
        .await;
    let eu_again = app
        .issue(&with_hub(&token_path("dev-1", Some("ttl=120")), EU))
        .await;
    let us = app.issue(&with_hub(&token_path("dev-1", None), US)).await;
    let case = |token: &SasToken, update: &SasToken| {
        json!({
            "hostname": sr_host(token), "device_id": "dev-1", "se": token.se, "ttl": 3600,
            "token": token.raw, "update_with": update.raw,
        })
    };
    let results = python_oracle(&json!({
        "key": EU_KEY, "policy": POLICY,
        "cases": [
            case(&eu.token, &eu_again.token),
            case(&eu.token, &us.token),
            case(&eu.token, &eu_device_form.token),
        ],
    }));
    let updated = |i: usize| results[i]["updated"].clone();
    assert_eq!(
        updated(0),
        "ok",
        "the same hub's renewed token: {}",
        results[0]
    );
    for (i, what) in [(1, "another hub"), (2, "the same hub's other host name")] {
        let error = updated(i)["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            error.contains("does not match existing hostname"),
            "update_sastoken refuses {what}: {}",
            results[i]
        );
    }
}

#[tokio::test]
async fn enrollment_group_mode_signs_for_every_listed_hub_and_any_hub_in_a_suffix() {
    let listed = TestApp::spawn(&enrollment_group(&format!("{EU},{US}, {AP}")));
    let central = TestApp::spawn(&enrollment_group("*.azure-devices.net"));
    let device = "sensor-1";
    let mut cases = Vec::new();
    for (app, host) in [
        (&listed, EU.to_owned()),
        (&listed, US.to_owned()),
        (&listed, "contoso-ap.device.azure-devices.net".to_owned()),
        (&central, "iotc-0a1b2c.azure-devices.net".to_owned()),
        (&central, "iotc-0a1b2c.device.azure-devices.net".to_owned()),
    ] {
        let path = with_hub(&token_path(device, None), &host.to_uppercase());
        let answer = app.token(&path, &[], TokenFor::Device).await;
        assert_eq!(answer.text("hostName"), host, "{path}");
        let token = answer.fields(&["sr", "sig", "se"]);
        assert_eq!(sr_host(&token), host, "{path}");
        cases.push(json!({
            "kind": "device_key", "hostname": host, "device_id": device, "se": token.se,
            "ttl": answer.expires_in, "token": answer.token, "group_key": GROUP_KEY,
        }));
    }
    let results = python_oracle(&json!({"key": KEY, "policy": POLICY, "cases": cases}));
    for (result, case) in results.iter().zip(&cases) {
        assert_eq!(
            oracle_str(result, "sdk_token"),
            case["token"].as_str().expect("a token"),
            "a device-key token for {}, byte for byte",
            case["hostname"]
        );
        assert_eq!(result["accepted"]["hostname"], case["hostname"]);
    }
    // The default hub; none where only a suffix is listed.
    let default = listed
        .token(&token_path(device, None), &[], TokenFor::Device)
        .await;
    assert_eq!(default.text("hostName"), EU);
    let (_, body) = assert_problem(
        central.get_sas_token(device, None).await,
        400,
        "no hub and no default hub",
    )
    .await;
    assert_eq!(body["type"], "urn:iothub-sas:problem:hub-required");
    let (_, body) = assert_problem(
        central
            .get(
                &with_hub(&token_path(device, None), "x.azure-devices.cn"),
                &[],
            )
            .await,
        400,
        "a hub outside the suffix",
    )
    .await;
    assert_eq!(body["type"], "urn:iothub-sas:problem:unknown-hub");
    // A registration answer names DPS, not a hub.
    for app in [&listed, &central] {
        let answer = app
            .token(
                &registration_path(device, None),
                &[],
                TokenFor::Registration,
            )
            .await;
        assert_eq!(answer.text("idScope"), ID_SCOPE);
        assert_eq!(
            answer.text("provisioningHost"),
            "global.azure-devices-provisioning.net"
        );
    }
}

#[tokio::test]
async fn a_hub_that_is_not_served_or_not_asked_for_properly_is_a_400() {
    let policy = TestApp::spawn(&three_hub_policy());
    let group = TestApp::spawn(&enrollment_group(&format!("{EU},{US}")));
    for (app, path, problem) in [
        (
            &policy,
            with_hub(&token_path("dev-1", None), "contoso-xx.azure-devices.net"),
            "unknown-hub",
        ),
        (
            &policy,
            with_hub(&token_path("dev-1", None), "contoso-eu.azure-devices.cn"),
            "unknown-hub",
        ),
        (
            &policy,
            with_hub(
                &token_path("dev-1", None),
                "contoso-eu.service.azure-devices.net",
            ),
            "unknown-hub",
        ),
        // Behind the Functions host `?hub=a&hub=b` arrives as `hub=a,b`.
        (
            &policy,
            with_hub(&token_path("dev-1", None), &format!("{EU},{AP}")),
            "unknown-hub",
        ),
        (
            &policy,
            format!("{}&hub={AP}", with_hub(&token_path("dev-1", None), EU)),
            "invalid-query",
        ),
        (
            &policy,
            format!(
                "{}&HUB={AP}",
                with_hub(&format!("{LEGACY_ROUTE}?deviceid=d"), EU)
            ),
            "invalid-query",
        ),
        (
            &policy,
            with_hub(&module_path("dev-1", "m", None), "contoso-eu"),
            "unknown-hub",
        ),
        (
            &group,
            with_hub(&registration_path("sensor-1", None), EU),
            "invalid-query",
        ),
        (
            &group,
            with_hub(&token_path("sensor-1", None), AP),
            "unknown-hub",
        ),
    ] {
        let (_, body) = assert_problem(app.get(&path, &[]).await, 400, &path).await;
        assert_eq!(
            body["type"],
            format!("urn:iothub-sas:problem:{problem}"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn ids_made_only_of_dots_are_refused_on_every_route() {
    let policy = TestApp::spawn(&Settings::base());
    let group = TestApp::spawn(&enrollment_group(EU));
    for id in [".", ".."] {
        for query in [format!("deviceid={id}"), format!("deviceid={}", encode(id))] {
            let (_, body) = assert_problem(
                policy.get_legacy(&query).await,
                400,
                &format!("legacy {query}"),
            )
            .await;
            assert_eq!(body["type"], "urn:iothub-sas:problem:invalid-device-id");
        }
        // Raw requests: an HTTP client would resolve `.` and `..` path segments itself.
        for (app, path) in [
            (&policy, format!("/api/devices/{id}/sas-token")),
            (&policy, format!("/api/devices/%2E{}/sas-token", &id[1..])),
            (
                &policy,
                format!("/api/devices/dev-1/modules/{id}/sas-token"),
            ),
            (&group, format!("/api/devices/{id}/sas-token")),
            (&group, format!("/api/registrations/{id}/sas-token")),
        ] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            assert_eq!(
                app.raw_status(request.as_bytes()),
                Ok(400),
                "{path} must be refused, not read as a path"
            );
        }
    }
    assert_eq!(
        policy
            .token(&token_path(".dev.", None), &[], TokenFor::Device)
            .await
            .text("deviceId"),
        ".dev.",
        "dots among other characters are an ordinary id"
    );
}

/// Bearer callers with roles, for scoping on several hubs.
struct RoleCallers {
    fixture: Fixture,
    caller: Caller,
}

impl RoleCallers {
    fn new() -> RoleCallers {
        RoleCallers {
            fixture: Fixture::new(),
            caller: Caller::random(),
        }
    }

    fn settings(&self, base: Settings, scopes: &Value) -> Settings {
        let layer = self.fixture.settings();
        // The bearer layer's settings only: the fixture's own base names one hub.
        base.set_all(
            layer
                .iter()
                .filter(|(name, _)| name.starts_with("AUTH_") || *name == "SSL_CERT_FILE"),
        )
        .set("AUTH_ALLOWED_CALLERS", self.caller.oid.clone())
        .set("DEVICE_SCOPES", scopes.to_string())
    }

    fn bearer(&self, roles: &[&str]) -> String {
        let mut claims: Map<String, Value> = self.fixture.claims_for(Version::V2, &self.caller);
        claims.insert("roles".to_owned(), json!(roles));
        format!("Bearer {}", self.fixture.issuer.sign(&claims))
    }
}

#[tokio::test]
async fn scopes_are_per_hub_in_either_form_and_a_registration_is_matched_on_every_hub() {
    let callers = RoleCallers::new();
    let scopes = json!({
        "role:EU": ["contoso-eu.device.azure-devices.net/line-*"],
        "role:US": [format!("{US}/line-*")],
        "role:All": ["*/shared-*"],
    });
    let policy = TestApp::spawn(&callers.settings(three_hub_policy(), &scopes));
    let group = TestApp::spawn(&callers.settings(enrollment_group(&format!("{EU},{US}")), &scopes));
    let denial = policy.ip_denial_body().await;
    let eu = callers.bearer(&["EU"]);
    let all = callers.bearer(&["All"]);
    async fn allowed(app: &TestApp, path: String, bearer: String) -> String {
        let answer = app
            .token(
                &path,
                &[("Authorization", bearer.as_str())],
                TokenFor::Device,
            )
            .await;
        answer.text("hostName").to_owned()
    }
    for host in forms("contoso-eu") {
        let path = with_hub(&token_path("line-1", None), &host);
        assert_eq!(allowed(&policy, path, eu.clone()).await, host);
    }
    for host in forms("contoso-us").into_iter().chain([AP.to_owned()]) {
        let path = with_hub(&token_path("line-1", None), &host);
        let response = policy.get(&path, &[("Authorization", eu.as_str())]).await;
        let body = assert_caller_not_allowed(response, &path).await;
        assert_eq!(body, denial, "{path}: another hub's device is the same 403");
    }
    assert_eq!(
        allowed(&policy, token_path("line-1", None), eu.clone()).await,
        EU,
        "the default hub is the EU hub"
    );
    for host in [EU, US, AP] {
        let path = with_hub(&token_path("shared-1", None), host);
        assert_eq!(
            allowed(&policy, path, all.clone()).await,
            host,
            "*/ covers {host}"
        );
    }
    // A registration: DPS picks the hub later, so a rule for any hub covers it.
    for (bearer, id) in [
        (&eu, "line-9"),
        (&callers.bearer(&["US"]), "line-9"),
        (&all, "shared-9"),
    ] {
        let answer = group
            .token(
                &registration_path(id, None),
                &[("Authorization", bearer.as_str())],
                TokenFor::Registration,
            )
            .await;
        assert_eq!(answer.text("registrationId"), id);
    }
    let response = group
        .get(
            &registration_path("other-1", None),
            &[("Authorization", eu.as_str())],
        )
        .await;
    assert_caller_not_allowed(response, "a registration no rule covers").await;
    // The audit line names the hub of the rule that allowed it.
    let line = poll(Duration::from_secs(5), || async {
        policy
            .request_log_lines(1)
            .await
            .into_iter()
            .find(|line| log_text(line, "scope").as_deref() == Some("role:All"))
    })
    .await
    .expect("an audit line allowed by role:All");
    assert!(log_text(&line, "hub").is_some(), "{line}");
}

#[tokio::test]
async fn keys_that_name_ids_differing_only_in_case_are_warned_about_in_hub_policy_mode() {
    let callers = RoleCallers::new();
    let scopes = json!({
        "role:A": ["*/gw-1", "contoso-eu.azure-devices.net/sensor-*"],
        "role:B": ["*/GW-1"],
        "role:C": [format!("{US}/Sensor-1")],
        "role:D": ["contoso-eu.azure-devices.net/Sensor-1"],
    });
    let policy = TestApp::spawn(&callers.settings(three_hub_policy(), &scopes));
    let group = TestApp::spawn(&callers.settings(enrollment_group(&format!("{EU},{US}")), &scopes));
    let warnings = |app: &TestApp| {
        json_lines(&app.stdout())
            .into_iter()
            .filter(|line| {
                line["level"] == "WARN"
                    && line["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("differ only in letter case"))
            })
            .map(|line| line["message"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let found = warnings(&policy);
    assert_eq!(
        found.len(),
        2,
        "A–B on every hub, A–D on the EU hub: {found:#?}"
    );
    assert!(
        found.iter().any(|w| w.contains("`role:A` and `role:B`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|w| w.contains("`role:A` and `role:D`") && w.contains(EU)),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|w| w.contains("role:C")),
        "C is on another hub than A's sensors: {found:#?}"
    );
    assert!(
        warnings(&group).is_empty(),
        "device-key tokens are scoped by their key: no warning in enrollment-group mode"
    );
}

/// Hub-policy mode over the EU and US hubs, each hub's key in the stand-in vault's secret that
/// `secrets` (hub -> secret name) names.
fn two_hub_vault(stand_ins: &StandIns, secrets: Value) -> Settings {
    Settings::base()
        .unset("IOTHUB_HOSTNAME")
        .unset("IOTHUB_POLICY_KEY")
        .set("IOTHUB_HOSTNAMES", format!("{EU},{US}"))
        .set("IOTHUB_POLICY_KEY_SECRETS", secrets.to_string())
        .set_all(stand_ins.environment().iter())
}

#[tokio::test]
async fn one_hubs_disabled_secret_stops_that_hub_only_and_the_log_names_it() {
    let stand_ins = StandIns::start();
    let vault = &stand_ins.key_vault;
    vault.set_secret("eu-key", EU_KEY);
    // A hub's secret may be its connection string, in either form of the hub's name.
    vault.set_secret(
        "us-key",
        &format!(
            "HostName=contoso-us.azure-devices.net;SharedAccessKeyName={POLICY};SharedAccessKey={US_KEY}"
        ),
    );
    let app = TestApp::spawn(
        &two_hub_vault(
            &stand_ins,
            json!({EU: "eu-key", "contoso-us.azure-devices.net": "us-key"}),
        )
        .set("KEYVAULT_REFRESH_SECONDS", "10")
        .set("RUST_LOG", "trace"),
    );
    let eu_path = with_hub(&token_path("dev-1", None), EU);
    let us_path = with_hub(&token_path("dev-1", None), US);
    assert!(app.issue(&eu_path).await.token.is_signed_with(EU_KEY));
    assert!(app.issue(&us_path).await.token.is_signed_with(US_KEY));
    for secret in ["eu-key", "us-key"] {
        assert!(
            vault
                .requests()
                .iter()
                .any(|r| r.path.contains(secret) && r.status == Some(200)),
            "{secret} is read"
        );
    }

    vault.disable_secret("us-key");
    wait_until(
        Duration::from_secs(30),
        "the US hub answers 503",
        || async { app.get(&us_path, &[]).await.status() == 503 },
    )
    .await;
    assert_unavailable(app.get(&us_path, &[]).await, "the disabled hub").await;
    assert!(
        app.issue(&eu_path).await.token.is_signed_with(EU_KEY),
        "the other hub keeps issuing"
    );
    let withdrawn = json_lines(&app.stdout())
        .into_iter()
        .find(|line| {
            line["level"] == "ERROR"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Key Vault answered 403"))
        })
        .unwrap_or_else(|| panic!("a withdrawal line\n{}", app.stdout()));
    assert_eq!(
        withdrawn["hub"], "contoso-us.azure-devices.net",
        "{withdrawn}"
    );
    assert_eq!(withdrawn["secret"], "us-key", "{withdrawn}");
    assert_eq!(withdrawn["event"], "key_withdrawn", "{withdrawn}");

    vault.enable_secret("us-key");
    wait_until(
        Duration::from_secs(90),
        "the US hub issues again",
        || async { app.get(&us_path, &[]).await.status() == 200 },
    )
    .await;
    // Each hub's key events name its secret, its hub, the version and the key's age.
    let events = poll(Duration::from_secs(5), || async {
        let lines = json_lines(&app.stdout());
        lines
            .iter()
            .any(|line| line["event"] == "key_resumed")
            .then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("a key_resumed line\n{}", app.stdout()));
    let of = |event: &str, secret: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|line| line["event"] == event && line["secret"] == secret)
            .collect()
    };
    for (secret, hub) in [("eu-key", EU), ("us-key", "contoso-us.azure-devices.net")] {
        let loaded = of("key_loaded", secret);
        assert!(!loaded.is_empty(), "{secret} loaded\n{}", app.stdout());
        for line in loaded {
            assert_eq!(line["hub"], hub, "{line}");
            assert!(line["key_version"].is_string(), "{line}");
        }
    }
    let resumed = of("key_resumed", "us-key");
    assert_eq!(resumed.len(), 1, "{}", app.stdout());
    assert_eq!(
        resumed[0]["hub"], "contoso-us.azure-devices.net",
        "{}",
        resumed[0]
    );
    assert_eq!(
        resumed[0]["key_version"], withdrawn["key_version"],
        "{}",
        resumed[0]
    );
    assert!(resumed[0]["key_age_seconds"].is_u64(), "{}", resumed[0]);
    assert!(
        of("key_resumed", "eu-key").is_empty() && of("key_withdrawn", "eu-key").is_empty(),
        "the other hub's key was never withdrawn\n{}",
        app.stdout()
    );
    let mut secrets = stand_ins.secrets();
    secrets.add("the US key", US_KEY);
    secrets.add("the EU key", EU_KEY);
    secrets.assert_absent_from(&app.output(), "RUST_LOG=trace with a secret per hub");
}

#[tokio::test]
async fn a_hubs_secret_filed_under_another_hub_is_a_bad_secret_not_a_warning() {
    let stand_ins = StandIns::start();
    let vault = &stand_ins.key_vault;
    vault.set_secret("eu-key", EU_KEY);
    vault.set_secret(
        "us-key",
        &format!("HostName={AP};SharedAccessKeyName={POLICY};SharedAccessKey={US_KEY}"),
    );
    let app = TestApp::spawn(&two_hub_vault(
        &stand_ins,
        json!({EU: "eu-key", US: "us-key"}),
    ));
    assert!(
        app.issue(&with_hub(&token_path("d", None), EU))
            .await
            .token
            .is_signed_with(EU_KEY)
    );
    assert_unavailable(
        app.get(&with_hub(&token_path("d", None), US), &[]).await,
        "a connection string for another hub",
    )
    .await;
    let line = poll(Duration::from_secs(5), || async {
        json_lines(&app.stdout())
            .into_iter()
            .find(|line| line["level"] == "ERROR" && line["hub"] == "contoso-us.azure-devices.net")
    })
    .await
    .unwrap_or_else(|| panic!("an error line naming the hub\n{}", app.stdout()));
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("HostName disagrees")),
        "{line}"
    );
}

#[test]
fn settings_for_several_hubs_that_cannot_mean_what_they_say_stop_the_start() {
    let keys = |pairs: &[(&str, &str)]| {
        Value::Object(
            pairs
                .iter()
                .map(|(hub, key)| ((*hub).to_owned(), json!(key)))
                .collect(),
        )
        .to_string()
    };
    let two = || {
        Settings::base()
            .unset("IOTHUB_HOSTNAME")
            .unset("IOTHUB_POLICY_KEY")
            .set("IOTHUB_HOSTNAMES", format!("{EU},{US}"))
            .set("IOTHUB_POLICY_KEYS", keys(&[(EU, EU_KEY), (US, US_KEY)]))
    };
    let vault = || {
        two()
            .unset("IOTHUB_POLICY_KEYS")
            .set("KEYVAULT_URI", "https://127.0.0.1:9/")
            .set(
                "IOTHUB_POLICY_KEY_SECRETS",
                json!({EU: "eu-key", US: "us-key"}).to_string(),
            )
    };
    let cases: Vec<(&str, Settings, &str)> = vec![
        (
            "both hub settings",
            two().set("IOTHUB_HOSTNAME", EU),
            "IOTHUB_HOSTNAME",
        ),
        (
            "both hub settings, seed name",
            two().set("iothubhostname", EU),
            "iothubhostname",
        ),
        (
            "an empty element",
            two().set("IOTHUB_HOSTNAMES", format!("{EU},,{US}")),
            "IOTHUB_HOSTNAMES",
        ),
        (
            "two forms of one hub",
            two().set(
                "IOTHUB_HOSTNAMES",
                format!("{EU},contoso-eu.device.azure-devices.net"),
            ),
            "IOTHUB_HOSTNAMES",
        ),
        (
            "a bad name",
            two().set("IOTHUB_HOSTNAMES", format!("{EU},https://{AP}")),
            "IOTHUB_HOSTNAMES",
        ),
        (
            "a service host name",
            two().set("IOTHUB_HOSTNAMES", "contoso.service.azure-devices.net"),
            "IOTHUB_HOSTNAMES",
        ),
        (
            "a suffix entry in hub-policy mode",
            two().set("IOTHUB_HOSTNAMES", format!("{EU},{US},*.azure-devices.net")),
            "IOTHUB_HOSTNAMES",
        ),
        (
            "one key for two hubs",
            two()
                .unset("IOTHUB_POLICY_KEYS")
                .set("IOTHUB_POLICY_KEY", KEY),
            "IOTHUB_POLICY_KEY",
        ),
        (
            "no key for two hubs",
            two().unset("IOTHUB_POLICY_KEYS"),
            "IOTHUB_POLICY_KEYS",
        ),
        (
            "a key map missing a hub",
            two().set("IOTHUB_POLICY_KEYS", keys(&[(EU, EU_KEY)])),
            "IOTHUB_POLICY_KEYS",
        ),
        (
            "a key map naming an unlisted hub",
            two().set(
                "IOTHUB_POLICY_KEYS",
                keys(&[(EU, EU_KEY), (US, US_KEY), (AP, AP_KEY)]),
            ),
            "IOTHUB_POLICY_KEYS",
        ),
        (
            "a key map naming one hub in both forms",
            two().set(
                "IOTHUB_POLICY_KEYS",
                keys(&[
                    (EU, EU_KEY),
                    (US, US_KEY),
                    ("contoso-eu.device.azure-devices.net", EU_KEY),
                ]),
            ),
            "IOTHUB_POLICY_KEYS",
        ),
        (
            "a key that is not base64",
            two().set(
                "IOTHUB_POLICY_KEYS",
                keys(&[(EU, EU_KEY), (US, "n0t-base64!")]),
            ),
            "IOTHUB_POLICY_KEYS",
        ),
        (
            "one secret for two hubs",
            vault()
                .unset("IOTHUB_POLICY_KEY_SECRETS")
                .set("IOTHUB_POLICY_KEY_SECRET", "k"),
            "IOTHUB_POLICY_KEY_SECRET",
        ),
        (
            "a secret map missing a hub",
            vault().set(
                "IOTHUB_POLICY_KEY_SECRETS",
                json!({EU: "eu-key"}).to_string(),
            ),
            "IOTHUB_POLICY_KEY_SECRETS",
        ),
        (
            "a secret map with a bad secret name",
            vault().set(
                "IOTHUB_POLICY_KEY_SECRETS",
                json!({EU: "eu key", US: "us-key"}).to_string(),
            ),
            "IOTHUB_POLICY_KEY_SECRETS",
        ),
        (
            "a key map next to KEYVAULT_URI",
            vault().set("IOTHUB_POLICY_KEYS", keys(&[(EU, EU_KEY), (US, US_KEY)])),
            "IOTHUB_POLICY_KEYS",
        ),
        (
            "an unqualified scope pattern with two hubs",
            two().set("CLIENT_CERT_THUMBPRINTS", "ab".repeat(20)).set(
                "DEVICE_SCOPES",
                json!({format!("cert:{}", "ab".repeat(20)): ["gw-*"]}).to_string(),
            ),
            "DEVICE_SCOPES",
        ),
        (
            "a scope pattern naming an unlisted hub",
            two().set("CLIENT_CERT_THUMBPRINTS", "ab".repeat(20)).set(
                "DEVICE_SCOPES",
                json!({format!("cert:{}", "ab".repeat(20)): [format!("{AP}/gw-*")]}).to_string(),
            ),
            "DEVICE_SCOPES",
        ),
        (
            "DPS in another cloud than the hubs",
            enrollment_group(EU).set(
                "DPS_GLOBAL_ENDPOINT",
                "global.azure-devices-provisioning.cn",
            ),
            "DPS_GLOBAL_ENDPOINT",
        ),
        (
            "hubs in two clouds with DPS",
            enrollment_group(&format!("{EU},contoso.azure-devices.cn")),
            "IOTHUB_HOSTNAMES",
        ),
        (
            "an unknown cloud with DPS and no endpoint",
            enrollment_group("hub.example.com"),
            "DPS_GLOBAL_ENDPOINT",
        ),
        (
            "DPS_GLOBAL_ENDPOINT without DPS_ID_SCOPE",
            enrollment_group(EU).unset("DPS_ID_SCOPE").set(
                "DPS_GLOBAL_ENDPOINT",
                "global.azure-devices-provisioning.net",
            ),
            "DPS_GLOBAL_ENDPOINT",
        ),
        (
            "DPS_GLOBAL_ENDPOINT in hub-policy mode",
            two().set(
                "DPS_GLOBAL_ENDPOINT",
                "global.azure-devices-provisioning.net",
            ),
            "DPS_GLOBAL_ENDPOINT",
        ),
        (
            "a key map in enrollment-group mode",
            enrollment_group(EU).set("IOTHUB_POLICY_KEYS", keys(&[(EU, EU_KEY)])),
            "IOTHUB_POLICY_KEYS",
        ),
    ];
    let refusals: Vec<Refusal<'_>> = cases.into_iter().map(Refusal::from).collect();
    let misrefused = misrefused_startups(&refusals, |failure| {
        [EU_KEY, US_KEY, AP_KEY, "n0t-base64"]
            .iter()
            .filter(|key| failure.stderr.contains(*key) || failure.stdout.contains(*key))
            .map(|_| "a key was echoed".to_owned())
            .collect()
    });
    assert!(misrefused.is_empty(), "{}", misrefused.join("\n"));
}

#[tokio::test]
async fn a_connection_string_that_names_the_one_hub_is_asked_for_by_either_host_name() {
    let stand_ins = StandIns::start();
    stand_ins.key_vault.set_secret(
        "cs-key",
        &format!(
            "HostName=cs-hub.azure-devices.net;SharedAccessKeyName={POLICY};SharedAccessKey={US_KEY}"
        ),
    );
    // No hub setting: the key's own connection string names the hub.
    let app = TestApp::spawn(
        &Settings::key_vault("cs-key")
            .unset("IOTHUB_HOSTNAME")
            .unset("IOTHUB_POLICY_NAME")
            .set_all(stand_ins.environment().iter()),
    );
    let default = app.issue(&token_path("dev-1", None)).await;
    assert_eq!(default.host_name, "cs-hub.azure-devices.net");
    assert!(default.token.is_signed_with(US_KEY));
    let device_form = app
        .issue(&with_hub(
            &token_path("dev-1", None),
            "CS-HUB.device.azure-devices.net",
        ))
        .await;
    assert_eq!(device_form.host_name, "cs-hub.device.azure-devices.net");
    let (_, body) = assert_problem(
        app.get(&with_hub(&token_path("dev-1", None), EU), &[])
            .await,
        400,
        "another hub than the connection string's",
    )
    .await;
    assert_eq!(body["type"], "urn:iothub-sas:problem:unknown-hub");
}
