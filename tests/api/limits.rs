//! Resource limits: URL length, body, request-head size, slow clients, the concurrency cap.
//! Each limit is a setting; these tests set small values and check the documented answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{
    answers::assert_problem,
    app::{TestApp, separate_client},
    routes::token_path,
    settings::Settings,
};

#[tokio::test]
async fn a_url_longer_than_max_url_bytes_gets_414() {
    let app = TestApp::spawn(&Settings::base().set("MAX_URL_BYTES", "300"));
    let long_query = format!("ttl=120&pad={}", "a".repeat(300));
    let response = app.get(&token_path("dev-1", Some(&long_query)), &[]).await;
    assert_problem(response, 414, "long URL").await;

    let response = app.get(&token_path("dev-1", Some("ttl=120")), &[]).await;
    assert_eq!(response.status().as_u16(), 200, "a short URL still works");
}

#[tokio::test]
async fn a_declared_body_gets_413_by_default() {
    let app = TestApp::spawn(&Settings::base());
    // Raw requests: HTTP clients will not put a body on a GET.
    let status = app
        .raw_status(
            b"GET /api/devices/dev-1/sas-token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .expect("an answer");
    assert_eq!(status, 413, "a 5-byte body with MAX_BODY_BYTES=0");

    let status = app
        .raw_status(
            b"GET /api/devices/dev-1/sas-token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .expect("an answer");
    assert_eq!(status, 413, "a chunked body with MAX_BODY_BYTES=0");

    let status = app
        .raw_status(
            b"GET /api/devices/dev-1/sas-token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .expect("an answer");
    assert_eq!(status, 200, "Content-Length: 0 is no body");
}

#[tokio::test]
async fn max_body_bytes_admits_bodies_up_to_the_limit() {
    let app = TestApp::spawn(&Settings::base().set("MAX_BODY_BYTES", "10"));
    let request = |len: usize| {
        format!(
            "GET /api/devices/dev-1/sas-token HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{}",
            "b".repeat(len)
        )
    };
    assert_eq!(app.raw_status(request(10).as_bytes()), Ok(200), "10 bytes");
    assert_eq!(app.raw_status(request(11).as_bytes()), Ok(413), "11 bytes");
}

#[tokio::test]
async fn a_request_head_over_max_request_header_bytes_gets_431() {
    let app = TestApp::spawn(&Settings::base().set("MAX_REQUEST_HEADER_BYTES", "8192"));
    let big = "x".repeat(9000);
    let request = format!(
        "GET /api/devices/dev-1/sas-token HTTP/1.1\r\nHost: x\r\nX-Padding: {big}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(app.raw_status(request.as_bytes()), Ok(431));

    let small = "x".repeat(4000);
    let request = format!(
        "GET /api/devices/dev-1/sas-token HTTP/1.1\r\nHost: x\r\nX-Padding: {small}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        app.raw_status(request.as_bytes()),
        Ok(200),
        "a 4 KB header fits"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let app = TestApp::spawn(&Settings::base().set("REQUEST_HEADER_TIMEOUT_SECONDS", "1"));
    let mut stream = TcpStream::connect(app.address).expect("connects");
    stream
        .write_all(b"GET /api/devices/dev-1/sas-token HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head written");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout set");
    let started = Instant::now();
    let mut rest = Vec::new();
    // The server closes the connection (possibly after a 408); the read ends either way.
    let _ = stream.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the slow client was held for {waited:?}, more than the 1 s head timeout allows"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || text.starts_with("HTTP/1.1 408"),
        "a slow client gets no token: {text}"
    );
    let response = app.get(&token_path("dev-1", None), &[]).await;
    assert_eq!(response.status().as_u16(), 200, "other clients are served");
}

#[tokio::test]
async fn requests_beyond_max_concurrent_requests_get_503_at_once() {
    let app = TestApp::spawn(&Settings::unreachable_vault().set("MAX_CONCURRENT_REQUESTS", "2"));
    let url = app.url(&token_path("dev-1", None));
    // Two requests occupy both permits while they wait for a key that never comes.
    // Clients are built before the requests start: building one takes longer than sending.
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(separate_client().get(&url).send()))
        .collect();
    let third_client = separate_client();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let third = third_client.get(&url).send().await.expect("an answer");
    let third_took = started.elapsed();

    assert!(
        third_took < Duration::from_secs(2),
        "the request over the cap must be refused at once, took {third_took:?}"
    );
    let retry_after = third
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (_, body) = assert_problem(third, 503, "request over the cap").await;
    assert_eq!(body["type"], "urn:iothub-sas:problem:overloaded", "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    for handle in waiting {
        let response = handle.await.expect("task ran").expect("an answer");
        let (_, body) = assert_problem(response, 503, "request waiting for a key").await;
        assert_eq!(
            body["type"], "urn:iothub-sas:problem:key-unavailable",
            "{body}"
        );
    }
}
