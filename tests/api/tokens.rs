//! 200 answers: headers, body, lifetime, and tokens checked against the official Azure IoT SDKs.
//!
//! Python's `azure-iot-device` percent-encodes `sr` with `quote(uri, safe="")`, which is
//! exactly our rule (everything but `A–Z a–z 0–9 - . _ ~`, upper-case hex), writes the
//! fields in our order and leaves `skn` alone; so with an ordinary policy name its token must
//! equal ours byte for byte, for every valid device id. Node's `azure-iot-common` writes
//! `sr, sig, skn, se` and lower-case hex for `!'()*`, so it is compared field by field.

use serde_json::Value;

use crate::support::{
    answers::{Issued, assert_problem, media_type},
    app::TestApp,
    oracles::{node_oracle, oracle_batch, oracle_case, oracle_str, python_oracle},
    routes::{LEGACY_ROUTE, token_path},
    sas::{encode, upper_hex},
    settings::{HOSTNAME, KEY, POLICY, Settings},
};

/// A second key, for the settings tests (must differ from `KEY`).
const OTHER_KEY: &str = "q83vEjRWeJC7zN7/ASNFZ4mrze8BI0VniavN7wEjRWc=";
/// The hub and policy the seed-name tests configure.
const SEED_HUB: &str = "seed-hub.azure-devices.net";
const SEED_POLICY: &str = "seedpolicy";

/// `settings` with the seed's setting names set: hub, policy, `OTHER_KEY`, and `allowedip`.
fn seed_names(settings: Settings, allowedip: &str) -> Settings {
    settings
        .set("iothubhostname", SEED_HUB)
        .set("keyname", SEED_POLICY)
        .set("keyvalue", OTHER_KEY)
        .set("allowedip", allowedip)
}

/// Device ids every SDK encodes the same way.
fn ordinary_ids() -> Vec<String> {
    vec![
        "dev-1".to_owned(),
        "Device.42".to_owned(),
        "sensor_7".to_owned(),
        "A".to_owned(),
        "a1-B2.c3_D4".repeat(11) + "xyz", // 128 characters, the longest allowed
    ]
}

/// Device ids with each special character the IoT Hub registry allows.
const SPECIAL_IDS: [&str; 9] = [
    "dev*1",
    "a(b)",
    "x!y'z",
    "id%20x",
    "a:b=c@d$e",
    "q?r,s",
    "%",
    "!'()*",
    "semi$@:=,",
];

/// One request per id and route: (description, id, ttl the token must live, answer).
async fn issue_on_both_routes(
    app: &TestApp,
    ids: &[String],
    default_ttl: u64,
) -> Vec<(String, String, u64, Issued)> {
    let mut issued = Vec::new();
    for id in ids {
        let path = token_path(&encode(id), None);
        let with_ttl = token_path(&encode(id), Some("ttl=120"));
        let legacy = format!("{LEGACY_ROUTE}?deviceid={}", encode(id));
        let legacy_ttl = format!("{LEGACY_ROUTE}?deviceid={}&ttl=86400", encode(id));
        for (url, ttl) in [
            (path, default_ttl),
            (with_ttl, 120),
            (legacy, default_ttl),
            (legacy_ttl, 86_400),
        ] {
            let answer = app.issue(&url).await;
            issued.push((format!("GET {url}"), id.clone(), ttl, answer));
        }
    }
    issued
}

/// The oracle batch for `issued`: every token signed with `key` under `policy` for `hostname`.
fn batch_of(
    key: &str,
    policy: &str,
    hostname: &str,
    issued: &[(String, String, u64, Issued)],
) -> Value {
    oracle_batch(
        key,
        policy,
        issued
            .iter()
            .map(|(_, id, ttl, answer)| oracle_case(hostname, id, *ttl, &answer.token)),
    )
}

/// The token Python's `azure-iot-device` makes for `dev-1` on `hostname` with `key` under
/// `policy`, expiring when `answer`'s token does (an hour after it was asked for).
fn python_sdk_token(key: &str, policy: &str, hostname: &str, answer: &Issued) -> String {
    let results = python_oracle(&oracle_batch(
        key,
        policy,
        [oracle_case(hostname, "dev-1", 3600, &answer.token)],
    ));
    oracle_str(&results[0], "sdk_token").to_owned()
}

#[tokio::test]
async fn ordinary_device_tokens_match_the_python_sdk_byte_for_byte() {
    let app = TestApp::spawn(&Settings::base());

    let issued = issue_on_both_routes(&app, &ordinary_ids(), 3600).await;
    let results = python_oracle(&batch_of(KEY, POLICY, HOSTNAME, &issued));

    for ((what, id, ttl, answer), sdk) in issued.iter().zip(&results) {
        assert_eq!(answer.device_id, *id, "{what}: deviceId");
        answer.assert_lifetime(*ttl, what);
        assert_eq!(
            answer.token.raw,
            oracle_str(sdk, "sdk_token"),
            "{what}: token differs from azure-iot-device's"
        );
        assert_eq!(
            oracle_str(sdk, "parsed_resource_uri"),
            format!("{HOSTNAME}/devices/{id}"),
            "{what}: resource URI as the SDK reads it"
        );
    }
}

#[tokio::test]
async fn ordinary_device_tokens_match_the_node_sdk_field_by_field() {
    let app = TestApp::spawn(&Settings::base());

    let issued = issue_on_both_routes(&app, &ordinary_ids(), 3600).await;
    let results = node_oracle(&batch_of(KEY, POLICY, HOSTNAME, &issued));

    for ((what, _, _, answer), sdk) in issued.iter().zip(&results) {
        let fields = &sdk["sdk_fields"];
        assert_eq!(answer.token.sr, oracle_str(fields, "sr"), "{what}: sr");
        assert_eq!(answer.token.sig, oracle_str(fields, "sig"), "{what}: sig");
        assert_eq!(
            answer.token.skn.as_deref(),
            Some(oracle_str(fields, "skn")),
            "{what}: skn"
        );
        assert_eq!(
            answer.token.se.to_string(),
            oracle_str(fields, "se"),
            "{what}: se"
        );
        assert!(
            sdk["parsed"].get("error").is_none(),
            "{what}: azure-iot-common cannot parse our token: {}",
            sdk["parsed"]
        );
    }
}

#[tokio::test]
async fn special_character_ids_are_encoded_strictly_and_signed_as_both_sdks_sign() {
    let app = TestApp::spawn(&Settings::base());

    // `?` and `%` cannot travel in a path segment without ambiguity: query route only.
    let mut issued = Vec::new();
    for id in SPECIAL_IDS {
        let mut urls = vec![format!("{LEGACY_ROUTE}?deviceid={}", encode(id))];
        if !id.contains(['?', '%']) {
            urls.push(token_path(&encode(id), None));
            // These are all RFC 3986 pchars, so they may also arrive unencoded.
            urls.push(token_path(id, None));
        }
        for url in urls {
            let answer = app.issue(&url).await;
            issued.push((
                format!("GET {url} (id {id:?})"),
                id.to_owned(),
                3600,
                answer,
            ));
        }
    }
    let python = python_oracle(&batch_of(KEY, POLICY, HOSTNAME, &issued));
    let node = node_oracle(&batch_of(KEY, POLICY, HOSTNAME, &issued));

    for (((what, id, ttl, answer), py), nd) in issued.iter().zip(&python).zip(&node) {
        assert_eq!(answer.device_id, *id, "{what}: deviceId");
        answer.assert_lifetime(*ttl, what);
        assert_eq!(
            answer.token.sr,
            encode(&format!("{HOSTNAME}/devices/{id}")),
            "{what}: sr must encode every byte outside A-Z a-z 0-9 -._~ with upper-case hex"
        );
        assert_eq!(
            oracle_str(py, "parsed_resource_uri"),
            format!("{HOSTNAME}/devices/{id}"),
            "{what}: sr must percent-decode to the resource URI"
        );
        assert_eq!(
            answer.token.sig,
            oracle_str(py, "sig_over_token_sr"),
            "{what}: sig differs from azure-iot-device's signature over our sr"
        );
        assert_eq!(
            answer.token.sig,
            oracle_str(nd, "sig_over_token_sr"),
            "{what}: sig differs from azure-iot-common's signature over our sr"
        );
        assert_eq!(
            answer.token.raw,
            oracle_str(py, "sdk_token"),
            "{what}: quote(uri, safe=\"\") is our rule, so azure-iot-device's token must be ours"
        );
        assert_eq!(
            answer.token.sr,
            upper_hex(oracle_str(&nd["sdk_fields"], "sr")),
            "{what}: sr differs from azure-iot-common's beyond the case of its hex"
        );
    }
}

#[tokio::test]
async fn ttl_at_either_bound_sets_se_and_expires_on() {
    let app = TestApp::spawn(&Settings::base());

    for (description, url, ttl) in [
        (
            "path route, ttl at the minimum",
            token_path("dev-1", Some("ttl=60")),
            60,
        ),
        (
            "path route, ttl at the default maximum",
            token_path("dev-1", Some("ttl=86400")),
            86_400,
        ),
        (
            "legacy route, ttl at the minimum",
            format!("{LEGACY_ROUTE}?deviceid=dev-1&ttl=60"),
            60,
        ),
        (
            "legacy route, ttl before deviceid",
            format!("{LEGACY_ROUTE}?ttl=86400&deviceid=dev-1"),
            86_400,
        ),
        ("path route, no ttl", token_path("dev-1", None), 3600),
    ] {
        let answer = app.issue(&url).await;

        answer.assert_lifetime(ttl, description);
    }
}

#[tokio::test]
async fn default_and_maximum_lifetime_come_from_the_settings() {
    let app = TestApp::spawn(
        &Settings::base()
            .set("TOKEN_TTL_SECONDS", "120")
            .set("TOKEN_MAX_TTL_SECONDS", "600"),
    );

    app.issue(&token_path("dev-1", None))
        .await
        .assert_lifetime(120, "no ttl: TOKEN_TTL_SECONDS");
    app.issue(&format!("{LEGACY_ROUTE}?deviceid=dev-1"))
        .await
        .assert_lifetime(120, "legacy, no ttl: TOKEN_TTL_SECONDS");
    app.issue(&token_path("dev-1", Some("ttl=600")))
        .await
        .assert_lifetime(600, "ttl=TOKEN_MAX_TTL_SECONDS");

    let over = app.get_sas_token("dev-1", Some("ttl=601")).await;
    assert_problem(over, 400, "ttl one above TOKEN_MAX_TTL_SECONDS").await;
    let over = app.get_legacy("deviceid=dev-1&ttl=601").await;
    assert_problem(over, 400, "legacy ttl one above TOKEN_MAX_TTL_SECONDS").await;
}

#[tokio::test]
async fn a_one_year_maximum_and_a_one_minute_default_are_accepted() {
    let app = TestApp::spawn(
        &Settings::base()
            .set("TOKEN_TTL_SECONDS", "60")
            .set("TOKEN_MAX_TTL_SECONDS", "31536000"),
    );

    app.issue(&token_path("dev-1", None))
        .await
        .assert_lifetime(60, "TOKEN_TTL_SECONDS=60");
    app.issue(&token_path("dev-1", Some("ttl=31536000")))
        .await
        .assert_lifetime(31_536_000, "ttl at TOKEN_MAX_TTL_SECONDS=31536000");
}

#[tokio::test]
async fn the_handler_listens_on_the_configured_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("the OS hands out a free port")
        .port()
        .to_string();

    let app = TestApp::spawn(&Settings::base().set("FUNCTIONS_CUSTOMHANDLER_PORT", port.as_str()));

    assert_eq!(
        app.address.port().to_string(),
        port,
        "the startup line's port"
    );
    app.issue(&token_path("dev-1", None)).await;
}

#[tokio::test]
async fn token_answers_are_json_and_never_cached() {
    let app = TestApp::spawn(&Settings::base());

    for url in [
        token_path("dev-1", None),
        format!("{LEGACY_ROUTE}?deviceid=dev-1"),
    ] {
        let answer = app.issue(&url).await;

        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            media_type(&header("content-type")),
            "application/json",
            "GET {url}"
        );
        assert_eq!(header("cache-control"), "no-store", "GET {url}");
    }
}

#[tokio::test]
async fn query_keys_match_case_insensitively_and_unknown_keys_are_ignored() {
    let app = TestApp::spawn(&Settings::base());

    for (description, url, ttl) in [
        (
            "DeviceId and TTL",
            format!("{LEGACY_ROUTE}?DeviceId=dev-1&TTL=120"),
            120,
        ),
        ("DEVICEID", format!("{LEGACY_ROUTE}?DEVICEID=dev-1"), 3600),
        (
            "a function key in `code`",
            format!("{LEGACY_ROUTE}?code=abc123%3D%3D&deviceId=dev-1&Ttl=60"),
            60,
        ),
        (
            "path route, Ttl and unknown keys",
            token_path("dev-1", Some("code=abc&Ttl=120&foo=bar")),
            120,
        ),
        (
            "path route, a deviceid query key is not the device",
            token_path("dev-1", Some("deviceid=other")),
            3600,
        ),
    ] {
        let answer = app.issue(&url).await;

        assert_eq!(answer.device_id, "dev-1", "{description}: deviceId");
        answer.assert_lifetime(ttl, description);
    }
}

#[tokio::test]
async fn seed_setting_names_configure_the_handler_when_upper_case_names_are_unset() {
    let app = TestApp::spawn(
        &Settings::none()
            .set("iothubhostname", "seed-hub.azure-devices.net")
            .set("keyname", "seedpolicy")
            .set("keyvalue", OTHER_KEY)
            .set("allowedip", "127.0.0.1"),
    );

    let answer = app.issue(&token_path("dev-1", None)).await;
    let sdk_token = python_sdk_token(OTHER_KEY, SEED_POLICY, SEED_HUB, &answer);

    assert_eq!(answer.token.raw, sdk_token);
}

#[tokio::test]
async fn an_empty_upper_case_setting_counts_as_unset_and_the_seed_name_applies() {
    let app = TestApp::spawn(
        &Settings::none()
            .set("IOTHUB_HOSTNAME", "")
            .set("iothubhostname", "seed-hub.azure-devices.net")
            .set("IOTHUB_POLICY_NAME", "")
            .set("keyname", "seedpolicy")
            .set("IOTHUB_POLICY_KEY", "")
            .set("keyvalue", OTHER_KEY)
            .set("ALLOWED_IPS", "")
            .set("allowedip", "127.0.0.1"),
    );

    let answer = app.issue(&token_path("dev-1", None)).await;
    let sdk_token = python_sdk_token(OTHER_KEY, SEED_POLICY, SEED_HUB, &answer);

    assert_eq!(answer.token.raw, sdk_token);
}

#[tokio::test]
async fn upper_case_settings_win_over_seed_names() {
    let app = TestApp::spawn(&seed_names(Settings::base(), "10.9.9.9"));

    // 127.0.0.1 is allowed only by ALLOWED_IPS, so a 200 shows the upper-case allow list won.
    let answer = app.issue(&token_path("dev-1", None)).await;
    let sdk_token = python_sdk_token(KEY, POLICY, HOSTNAME, &answer);

    assert_eq!(answer.token.raw, sdk_token);
}

#[tokio::test]
async fn policy_name_is_percent_encoded_in_skn() {
    // Policy names have no spaces, but `*`, `(` and `)` are printable ASCII that must be encoded.
    let policy = "device*(1)";
    let app = TestApp::spawn(&Settings::base().set("IOTHUB_POLICY_NAME", policy));

    let answer = app.issue(&token_path("dev-1", None)).await;
    let batch = oracle_batch(
        KEY,
        policy,
        [oracle_case(HOSTNAME, "dev-1", 3600, &answer.token)],
    );
    let python = python_oracle(&batch);
    let node = node_oracle(&batch);

    assert_eq!(answer.token.skn.as_deref(), Some("device%2A%281%29"));
    assert_eq!(
        answer.token.skn,
        Some(upper_hex(oracle_str(&node[0]["sdk_fields"], "skn"))),
        "skn as azure-iot-common encodes it (modulo hex case)"
    );
    assert_eq!(
        answer.token.sig,
        oracle_str(&python[0], "sig_over_token_sr")
    );
    assert_eq!(answer.token.sig, oracle_str(&node[0], "sig_over_token_sr"));
}
