//! Request logs: one JSON line per request with route template, status, latency, the join keys
//! (the host's invocation id, the W3C trace id), caller and device; and nothing secret (key,
//! signature, `code`, `x-functions-key`) anywhere in the output.

use std::time::Duration;

use percent_encoding::percent_decode_str;
use reqwest::Method;
use serde_json::Value;

use crate::support::{
    answers::{Issued, assert_caller_not_allowed},
    app::TestApp,
    clock::unix_now,
    leaks::Secrets,
    logs::log_text,
    routes::{LEGACY_ROUTE, TOKEN_ROUTE, token_path},
    settings::{KEY, Settings},
    waiting::poll,
};

#[tokio::test]
async fn each_request_logs_one_json_line_with_route_status_latency_caller_and_device() {
    let app = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", "127.0.0.1,203.0.113.7"));
    // (description, path, X-Forwarded-For, route, status, caller, device)
    let requests = [
        (
            "issued through a proxy",
            token_path("dev-1", None),
            Some("6.6.6.6, 203.0.113.7:5555"),
            TOKEN_ROUTE,
            200,
            "203.0.113.7",
            Some("dev-1"),
        ),
        (
            "issued on the legacy route to the peer",
            format!("{LEGACY_ROUTE}?deviceid=dev-2"),
            None,
            LEGACY_ROUTE,
            200,
            "127.0.0.1",
            Some("dev-2"),
        ),
        (
            "invalid ttl",
            format!("{LEGACY_ROUTE}?deviceid=dev-3&ttl=abc"),
            None,
            LEGACY_ROUTE,
            400,
            "127.0.0.1",
            None,
        ),
        (
            "denied caller",
            token_path("dev-4", None),
            Some("6.6.6.6"),
            TOKEN_ROUTE,
            403,
            "6.6.6.6",
            None,
        ),
    ];

    for (description, path, xff, _, status, _, _) in &requests {
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("X-Forwarded-For", *v)).collect();
        let response = app.get(path, &headers).await;
        assert_eq!(response.status().as_u16(), *status, "{description}");
    }
    let lines = app.request_log_lines(requests.len()).await;

    let stdout = app.stdout();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
            "every stdout line must be a JSON object: {line}"
        );
    }
    assert_eq!(
        lines.len(),
        requests.len(),
        "one request line per request; stdout:\n{stdout}"
    );
    for ((description, _, _, route, status, caller, device), line) in requests.iter().zip(&lines) {
        let text = |name: &str| log_text(line, name);
        assert_eq!(
            text("route").as_deref(),
            Some(*route),
            "{description}: route in {line}"
        );
        assert_eq!(
            text("status"),
            Some(status.to_string()),
            "{description}: status in {line}"
        );
        assert!(
            text("latency_us").is_some_and(|v| v.parse::<u64>().is_ok()),
            "{description}: latency_us must be whole microseconds in {line}"
        );
        assert_eq!(
            text("caller_ip").as_deref(),
            Some(*caller),
            "{description}: caller_ip in {line}"
        );
        if let Some(device) = device {
            assert_eq!(
                text("device_id").as_deref(),
                Some(*device),
                "{description}: device_id in {line}"
            );
        }
    }
}

#[tokio::test]
async fn no_key_signature_function_key_or_code_ever_reaches_the_output() {
    let app = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", "127.0.0.1"));
    let fn_key = ("x-functions-key", "SECRETFNKEY456");
    let requests = [
        (
            Method::GET,
            token_path("dev-1", Some("code=SECRETCODE123")),
            None,
        ),
        (
            Method::GET,
            format!("{LEGACY_ROUTE}?code=SECRETCODE123&deviceid=dev-2"),
            None,
        ),
        (
            Method::GET,
            token_path("dev-3", Some("code=SECRETCODE123&ttl=abc")),
            None,
        ),
        (
            Method::GET,
            format!("{LEGACY_ROUTE}?code=SECRETCODE123"),
            None,
        ),
        (
            Method::GET,
            token_path("dev-5", Some("code=SECRETCODE123")),
            Some("6.6.6.6"),
        ),
        (Method::GET, "/api/nope?code=SECRETCODE123".to_owned(), None),
        (
            Method::POST,
            token_path("dev-6", Some("code=SECRETCODE123")),
            None,
        ),
    ];

    let mut signatures = Vec::new();
    for (method, path, xff) in requests {
        let mut headers = vec![fn_key];
        headers.extend(xff.map(|v| ("X-Forwarded-For", v)));
        let response = app.request(method, &path, &headers).await;
        if response.status().as_u16() == 200 {
            let body: Value = response.json().await.expect("a 200 body is JSON");
            let token = body["sastoken"]
                .as_str()
                .expect("sastoken is a string")
                .to_owned();
            let sig = token
                .split('&')
                .find_map(|field| field.strip_prefix("sig="))
                .expect("the token has a sig")
                .to_owned();
            signatures.push(token);
            signatures.push(
                percent_decode_str(&sig)
                    .decode_utf8()
                    .expect("sig decodes to base64 text")
                    .into_owned(),
            );
            signatures.push(sig);
        }
    }
    assert_eq!(signatures.len(), 6, "both token requests must succeed");
    // The five token-route requests above must all have been logged before we look.
    let logged = app.request_log_lines(5).await;
    assert!(
        logged.len() >= 5,
        "expected request log lines, got {logged:?}"
    );

    let mut secrets = Secrets::default()
        .with("policy key", KEY)
        .with("policy key without padding", KEY.trim_end_matches('='))
        .with("code query parameter", "SECRETCODE123")
        .with("x-functions-key header", "SECRETFNKEY456");
    for signature in &signatures {
        secrets.add("token or signature", signature);
    }
    secrets.assert_absent_from(&app.output(), "request logs");
}

#[tokio::test]
async fn rust_log_turns_the_request_line_off_and_on() {
    // (RUST_LOG, request lines expected)
    let filters = [
        ("info", true),
        ("warn,handler=info,request=info", true),
        ("info,request=off", false),
        ("info,request=warn", false),
    ];
    for (filter, expected) in filters {
        let settings = Settings::base()
            .set("ALLOWED_IPS", "127.0.0.1")
            .set("RUST_LOG", filter);
        let mut app = TestApp::spawn(&settings);
        for path in [
            token_path("dev-1", None),
            format!("{LEGACY_ROUTE}?deviceid=dev-2"),
            "/api/nope".to_owned(),
        ] {
            app.get(&path, &[("X-Forwarded-For", "127.0.0.1")]).await;
        }
        // The line is written before the response is sent; stopping the handler and waiting
        // for its last line ("shutting down", also info) makes sure all output has been read.
        app.signal("TERM");
        assert!(
            app.wait_exit(Duration::from_secs(10)).is_some(),
            "RUST_LOG={filter}: the handler must exit on SIGTERM"
        );
        let stdout = poll(Duration::from_secs(5), || async {
            let stdout = app.stdout();
            stdout.contains("\"shutting down\"").then_some(stdout)
        })
        .await
        .unwrap_or_else(|| app.stdout());
        assert!(
            stdout.contains("\"shutting down\""),
            "RUST_LOG={filter}: other info lines must still be written:\n{stdout}"
        );
        let lines = app.request_log_lines(0).await;
        assert_eq!(
            lines.len(),
            if expected { 3 } else { 0 },
            "RUST_LOG={filter}: request lines in\n{stdout}"
        );
    }
}

/// (description, headers, expected `invocation_id`, expected `trace_id`).
type JoinCase<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<&'a str>,
    Option<&'a str>,
);

/// The host's invocation id header and W3C's, as the Functions host and API Management send them.
const INVOCATION_ID: &str = "X-Azure-Functions-InvocationId";
const TRACEPARENT: &str = "traceparent";

#[tokio::test]
async fn the_join_keys_come_from_the_host_and_gateway_headers_and_change_no_answer() {
    let app = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", "127.0.0.1"));
    let host = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let client = "11111111-2222-3333-4444-555555555555";
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let upper = host.to_ascii_uppercase();
    let joined = format!("{client}, {host}");
    // (description, headers, invocation_id, trace_id): the host appends its id after the
    // client's headers, so the last value is the host's (docs/azure-behaviour.md §13).
    let cases: [JoinCase; 7] = [
        ("neither", vec![], None, None),
        (
            "both, as the host and the gateway send them",
            vec![(INVOCATION_ID, host), (TRACEPARENT, &traceparent)],
            Some(host),
            Some(trace),
        ),
        (
            "the client's id, then the host's, on two lines",
            vec![(INVOCATION_ID, client), (INVOCATION_ID, host)],
            Some(host),
            None,
        ),
        (
            "the client's id and the host's, joined on one line",
            vec![(INVOCATION_ID, &joined)],
            Some(host),
            None,
        ),
        (
            "a GUID in upper case is written in lower case",
            vec![(INVOCATION_ID, &upper)],
            Some(host),
            None,
        ),
        (
            "a malformed id and traceparent are left out",
            vec![
                (INVOCATION_ID, "not-a-guid"),
                (
                    TRACEPARENT,
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                ),
            ],
            None,
            None,
        ),
        (
            "another version of traceparent, and two of them",
            vec![
                (
                    TRACEPARENT,
                    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                (TRACEPARENT, &traceparent),
            ],
            None,
            None,
        ),
    ];

    // Act: each case on the token route (issued), to a refused caller, and to an unknown path.
    let mut answers = Vec::new();
    for (description, headers, _, _) in &cases {
        let path = token_path("dev-1", None);
        let issued = Issued::read(app.get(&path, headers).await, &path, unix_now()).await;
        assert!(issued.token.is_signed_with(KEY), "{description}");
        let mut refused_headers = headers.clone();
        refused_headers.push(("X-Forwarded-For", "6.6.6.6"));
        let refused =
            assert_caller_not_allowed(app.get(&path, &refused_headers).await, description).await;
        let unknown = app.get("/api/nope", headers).await;
        answers.push((
            issued.device_id,
            issued.host_name,
            (issued.token.sr.clone(), issued.token.skn.clone()),
            refused,
            unknown.status().as_u16(),
            unknown.text().await.expect("a body"),
        ));
    }
    let lines = app.request_log_lines(3 * cases.len()).await;

    // Assert: the keys where the headers carry them, on every kind of line; the answers the same
    // whatever the headers.
    assert_eq!(lines.len(), 3 * cases.len(), "{}", app.stdout());
    for ((description, _, invocation_id, trace_id), lines) in cases.iter().zip(lines.chunks(3)) {
        for line in lines {
            assert_eq!(
                log_text(line, "invocation_id").as_deref(),
                *invocation_id,
                "{description}: invocation_id in {line}"
            );
            assert_eq!(
                log_text(line, "trace_id").as_deref(),
                *trace_id,
                "{description}: trace_id in {line}"
            );
        }
        assert_eq!(
            lines
                .iter()
                .map(|l| l["status"].clone())
                .collect::<Vec<_>>(),
            [200, 403, 404],
            "{description}"
        );
    }
    for (answer, (description, ..)) in answers.iter().zip(&cases).skip(1) {
        assert_eq!(
            answer, &answers[0],
            "{description}: the same answers as without the headers"
        );
    }
}
