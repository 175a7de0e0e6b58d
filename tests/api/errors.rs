//! Every 400/403/404/405 is an RFC 9457 problem; the caller is checked before the input; and no
//! input, however hostile, gets a 5xx or brings the process down.

use reqwest::Method;

use crate::support::{
    answers::assert_problem,
    app::TestApp,
    routes::{LEGACY_ROUTE, token_path},
    settings::Settings,
};

/// Device ids the IoT Hub registry refuses, already percent-encoded for a URL.
fn invalid_device_ids() -> Vec<(&'static str, String)> {
    let mut ids: Vec<(&str, String)> = [
        ("space", "a%20b"),
        ("plus", "a%2Bb"),
        ("hash", "a%23b"),
        ("slash", "a%2Fb"),
        ("backslash", "a%5Cb"),
        ("ampersand", "a%26b"),
        ("semicolon", "a%3Bb"),
        ("double quote", "a%22b"),
        ("angle brackets", "%3Cscript%3E"),
        ("tilde", "a~b"),
        ("caret", "a%5Eb"),
        ("pipe", "a%7Cb"),
        ("backtick", "a%60b"),
        ("braces", "a%7Bb%7D"),
        ("square brackets", "a%5Bb%5D"),
        ("non-ASCII letter", "caf%C3%A9"),
        ("NUL", "a%00b"),
        ("tab", "a%09b"),
        ("line feed", "a%0Ab"),
        ("invalid UTF-8", "a%FFb"),
    ]
    .into_iter()
    .map(|(description, id)| (description, id.to_owned()))
    .collect();
    ids.push(("129 characters", "a".repeat(129)));
    ids
}

/// `ttl` values that are not an integer in 60..=86400 (the default maximum).
const INVALID_TTLS: [(&str, &str); 12] = [
    ("letters", "abc"),
    ("negative", "-5"),
    ("fraction", "1.5"),
    ("one below the minimum", "59"),
    ("zero", "0"),
    ("one above the maximum", "86401"),
    ("beyond u64", "99999999999999999999"),
    ("empty", ""),
    ("exponent", "1e3"),
    ("hexadecimal", "0x3c"),
    ("trailing letters", "60abc"),
    ("percent-encoded NUL", "60%00"),
];

#[tokio::test]
async fn invalid_device_ids_are_a_400_problem_on_both_routes() {
    let app = TestApp::spawn(&Settings::base());

    let empty = app.get_legacy("deviceid=").await;
    assert_problem(empty, 400, "legacy route, empty deviceid").await;
    for (description, id) in invalid_device_ids() {
        let path = app.get_sas_token(&id, None).await;
        assert_problem(
            path,
            400,
            &format!("path route, device id {description}: {id}"),
        )
        .await;

        let legacy = app.get_legacy(&format!("deviceid={id}")).await;
        assert_problem(
            legacy,
            400,
            &format!("legacy route, deviceid {description}: {id}"),
        )
        .await;
    }
}

#[tokio::test]
async fn invalid_ttls_are_a_400_problem_on_both_routes() {
    let app = TestApp::spawn(&Settings::base());

    for (description, ttl) in INVALID_TTLS {
        let path = app
            .get_sas_token("dev-1", Some(&format!("ttl={ttl}")))
            .await;
        assert_problem(
            path,
            400,
            &format!("path route, ttl {description}: {ttl:?}"),
        )
        .await;

        let legacy = app.get_legacy(&format!("deviceid=dev-1&ttl={ttl}")).await;
        assert_problem(
            legacy,
            400,
            &format!("legacy route, ttl {description}: {ttl:?}"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_repeated_deviceid_or_ttl_key_is_a_400_problem() {
    let app = TestApp::spawn(&Settings::base());

    for (description, path_and_query) in [
        (
            "deviceid twice",
            format!("{LEGACY_ROUTE}?deviceid=a&deviceid=b"),
        ),
        (
            "deviceid twice, same value",
            format!("{LEGACY_ROUTE}?deviceid=a&deviceid=a"),
        ),
        (
            "deviceid in two cases",
            format!("{LEGACY_ROUTE}?deviceid=a&DeviceId=a"),
        ),
        (
            "ttl twice on the legacy route",
            format!("{LEGACY_ROUTE}?deviceid=a&ttl=60&ttl=60"),
        ),
        (
            "ttl twice on the path route",
            token_path("dev-1", Some("ttl=60&ttl=120")),
        ),
        (
            "ttl in two cases on the path route",
            token_path("dev-1", Some("ttl=60&TTL=60")),
        ),
    ] {
        let response = app.get(&path_and_query, &[]).await;

        assert_problem(response, 400, &format!("{description}: {path_and_query}")).await;
    }
}

#[tokio::test]
async fn a_missing_deviceid_on_the_legacy_route_is_a_400_problem() {
    let app = TestApp::spawn(&Settings::base());

    for (description, path_and_query) in [
        ("no query", LEGACY_ROUTE.to_owned()),
        ("empty query", format!("{LEGACY_ROUTE}?")),
        ("only ttl", format!("{LEGACY_ROUTE}?ttl=60")),
        ("only a function key", format!("{LEGACY_ROUTE}?code=abc")),
        ("a near-miss key", format!("{LEGACY_ROUTE}?device_id=dev-1")),
    ] {
        let response = app.get(&path_and_query, &[]).await;

        assert_problem(response, 400, &format!("{description}: {path_and_query}")).await;
    }
}

#[tokio::test]
async fn a_denied_caller_gets_403_whatever_the_input() {
    let app = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", "10.0.0.1"));

    for (description, path_and_query) in [
        ("valid request", token_path("dev-1", None)),
        (
            "invalid device id on the path route",
            token_path("a%20b", None),
        ),
        ("over-long device id", token_path(&"a".repeat(129), None)),
        (
            "invalid ttl on the path route",
            token_path("dev-1", Some("ttl=abc")),
        ),
        (
            "invalid device id on the legacy route",
            format!("{LEGACY_ROUTE}?deviceid=a%23b"),
        ),
        ("missing deviceid", format!("{LEGACY_ROUTE}?ttl=60")),
        (
            "repeated deviceid",
            format!("{LEGACY_ROUTE}?deviceid=a&deviceid=b"),
        ),
        (
            "ttl above the maximum",
            format!("{LEGACY_ROUTE}?deviceid=a&ttl=999999"),
        ),
    ] {
        let response = app.get(&path_and_query, &[]).await;

        assert_problem(response, 403, &format!("{description}: {path_and_query}")).await;
    }
}

#[tokio::test]
async fn unknown_paths_are_a_404_problem() {
    let app = TestApp::spawn(&Settings::base());

    for path in [
        "/",
        "/api",
        "/api/nope",
        "/api/devices",
        "/api/devices/x",
        "/api/devices/x/sas-token/extra",
        "/api/devices/x/y/sas-token",
        "/api/getSASTokenByDeviceID/x?deviceid=dev-1",
        "/devices/x/sas-token",
        "/favicon.ico",
    ] {
        let response = app.get(path, &[]).await;

        assert_problem(response, 404, &format!("GET {path}")).await;
    }
}

#[tokio::test]
async fn other_methods_on_the_token_routes_are_a_405_problem_allowing_get() {
    let app = TestApp::spawn(&Settings::base());

    for path in [
        token_path("dev-1", None),
        format!("{LEGACY_ROUTE}?deviceid=dev-1"),
    ] {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let context = format!("{method} {path}");

            let response = app.request(method, &path, &[]).await;

            let (headers, _) = assert_problem(response, 405, &context).await;
            let allow = headers
                .get_all("allow")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect::<Vec<_>>();
            assert!(
                allow.iter().any(|m| m.eq_ignore_ascii_case("GET")),
                "{context}: the Allow header must list GET, got {allow:?}"
            );
        }
    }
}

/// A raw HTTP/1.1 GET with `headers`, closing the connection after the answer.
fn raw_get(target: &[u8], headers: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

/// Requests no well-behaved client sends, each with a description.
fn hostile_requests() -> Vec<(String, Vec<u8>)> {
    let mut requests = Vec::new();
    let long = "a".repeat(10_000);

    let segments = [
        long.as_str(),
        "%FF",
        "%FF%FE",
        "%00",
        "a%00",
        "%C0%AF",
        "%ED%A0%80",
        "%E2%80%AE",
        "%F0%9F%92%A9",
        "%25",
        "%",
        "%%",
        "%G1",
        "%2",
        "%2e%2e",
        "..",
        ".",
        "a%2F..%2F..%2Fetc%2Fpasswd",
        "%0D%0ASet-Cookie:%20x",
        "'%3B%20DROP%20TABLE%20devices%3B--",
        "%7B%22a%22%3A1%7D",
    ];
    for segment in segments {
        let target = token_path(segment, None);
        requests.push((
            format!("path {}", clip(&target)),
            raw_get(target.as_bytes(), &[]),
        ));
    }
    let mut raw_byte_target = b"/api/devices/caf".to_vec();
    raw_byte_target.extend_from_slice(&[0xC3, 0xA9, 0xFF]);
    raw_byte_target.extend_from_slice(b"/sas-token");
    requests.push((
        "raw non-ASCII bytes in the path".to_owned(),
        raw_get(&raw_byte_target, &[]),
    ));

    let repeated = "deviceid=a&".repeat(1_000);
    let many_keys = (0..2_000)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join("&");
    let queries = [
        "deviceid=%FF".to_owned(),
        "deviceid=%".to_owned(),
        "deviceid=%%".to_owned(),
        "deviceid=%G1".to_owned(),
        "deviceid=%00".to_owned(),
        "deviceid".to_owned(),
        "=".to_owned(),
        "&&&&".to_owned(),
        "=&=&=".to_owned(),
        format!("deviceid={long}"),
        repeated,
        format!("deviceid=dev-1&{many_keys}"),
        "deviceid=dev-1&ttl=%00".to_owned(),
        "deviceid=dev-1&ttl=18446744073709551616".to_owned(),
        "deviceid=dev-1&ttl=-0".to_owned(),
        "deviceid=dev-1&ttl=NaN".to_owned(),
        "deviceid=dev-1&ttl=inf".to_owned(),
        "deviceid=dev-1&ttl=%FF".to_owned(),
        "deviceid=dev-1&ttl=+60".to_owned(),
        "deviceid=dev-1&ttl=%2060".to_owned(),
        "deviceid=%FF%FE&ttl=%FF".to_owned(),
        "%FF=1&deviceid=dev-1".to_owned(),
        "deviceid=dev-1&%FF%FE=x".to_owned(),
        "DEVICEID=a&deviceid=b".to_owned(),
        "deviceid[]=x".to_owned(),
        "deviceid=a+b".to_owned(),
        "deviceid=dev-1;ttl=60".to_owned(),
    ];
    for query in &queries {
        let target = format!("{LEGACY_ROUTE}?{query}");
        requests.push((
            format!("query {}", clip(&target)),
            raw_get(target.as_bytes(), &[]),
        ));
        let target = token_path("dev-1", Some(query));
        requests.push((
            format!("query {}", clip(&target)),
            raw_get(target.as_bytes(), &[]),
        ));
    }

    let huge_list = vec!["1.2.3.4"; 5_000].join(", ");
    let xff_values: Vec<(&str, Vec<u8>)> = vec![
        ("percent junk", b"%FF".to_vec()),
        ("only commas", b",,,,,,".to_vec()),
        ("empty brackets", b"[]".to_vec()),
        ("unclosed bracket", b"[::1".to_vec()),
        ("colons", b"::::".to_vec()),
        ("five octets", b"1.2.3.4.5".to_vec()),
        ("octet over 255", b"999.1.1.1".to_vec()),
        ("zone id in brackets", b"[fe80::1%eth0]:1".to_vec()),
        ("encoded zone id", b"fe80::1%25eth0".to_vec()),
        ("two ports", b"127.0.0.1:0:0".to_vec()),
        ("port over 65535", b"[2001:db8::1]:99999".to_vec()),
        ("negative port", b"1.2.3.4:-1".to_vec()),
        ("unspecified v4", b"0.0.0.0".to_vec()),
        ("unspecified v6", b"::".to_vec()),
        ("broadcast", b"255.255.255.255".to_vec()),
        ("mapped with two ports", b"[::ffff:1.2.3.4]:1:2".to_vec()),
        ("quoted", b"\"1.2.3.4\"".to_vec()),
        ("obs-text bytes", vec![0xFF, 0xFE, b'1', 0x80]),
        ("10,000 character entry", long.clone().into_bytes()),
        ("5,000 entries", huge_list.into_bytes()),
    ];
    for (description, value) in xff_values {
        requests.push((
            format!("X-Forwarded-For {description}"),
            raw_get(
                token_path("dev-1", None).as_bytes(),
                &[("X-Forwarded-For", value)],
            ),
        ));
    }
    let many_lines: Vec<(&str, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                "X-Forwarded-For",
                format!("6.6.6.{i}, 127.0.0.1").into_bytes(),
            )
        })
        .collect();
    requests.push((
        "60 X-Forwarded-For lines".to_owned(),
        raw_get(token_path("dev-1", None).as_bytes(), &many_lines),
    ));
    let too_many_lines: Vec<(&str, Vec<u8>)> = (0..200)
        .map(|_| ("X-Forwarded-For", b"127.0.0.1".to_vec()))
        .collect();
    requests.push((
        "200 X-Forwarded-For lines".to_owned(),
        raw_get(token_path("dev-1", None).as_bytes(), &too_many_lines),
    ));
    requests
}

/// The first 80 characters, for assertion messages.
fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

#[tokio::test]
async fn hostile_inputs_never_get_a_5xx_or_crash_the_handler() {
    let mut app = TestApp::spawn(&Settings::base());

    let mut failures = Vec::new();
    for (description, request) in hostile_requests() {
        match app.raw_status(&request) {
            Ok(status) if status == 200 || (400..500).contains(&status) => {}
            Ok(status) => failures.push(format!("{description}: answered {status}")),
            Err(problem) => failures.push(format!("{description}: {problem}")),
        }
    }

    assert!(
        failures.is_empty(),
        "answers other than 200/4xx:\n{}\n--- handler output ---\n{}",
        failures.join("\n"),
        clip_output(&app.output())
    );
    assert!(
        app.is_running(),
        "the handler exited:\n{}",
        clip_output(&app.output())
    );
    let after = app.get_sas_token("dev-1", None).await;
    assert_eq!(
        after.status().as_u16(),
        200,
        "the handler still serves after the batch"
    );
}

/// The last 4,000 characters of the handler's output.
fn clip_output(output: &str) -> &str {
    let start = output.len().saturating_sub(4_000);
    let start = (start..output.len())
        .find(|&i| output.is_char_boundary(i))
        .unwrap_or(output.len());
    &output[start..]
}
