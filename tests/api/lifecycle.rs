//! Shutdown: SIGTERM and SIGINT stop accepting, let in-flight requests finish (up to
//! SHUTDOWN_GRACE_SECONDS) and exit 0.
//!
//! In-flight requests are made long-lived deterministically: in Key Vault mode with an unreachable
//! vault every token request waits about 5 s for a first key before it is answered 503.

use std::time::{Duration, Instant};

use crate::support::app::{TestApp, separate_client};
use crate::support::settings::Settings;

async fn drains_in_flight_requests_then_exits_0(signal: &str) {
    let mut app = TestApp::spawn(&Settings::unreachable_vault());
    let url = app.url("/api/devices/dev-1/sas-token");
    // Each client is built before its request is spawned, so that the pause only has to cover
    // connecting and sending on loopback, not building five TLS-capable clients.
    let in_flight: Vec<_> = (0..5)
        .map(|_| tokio::spawn(separate_client().get(&url).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    app.signal(signal);
    for request in in_flight {
        let response = request
            .await
            .expect("task ran")
            .unwrap_or_else(|e| panic!("an in-flight request was cut off by SIG{signal}: {e}"));
        assert_eq!(
            response.status().as_u16(),
            503,
            "answered in full after SIG{signal}"
        );
        let body = response.text().await.expect("the whole body arrives");
        assert!(body.contains("key-unavailable"), "{body}");
    }
    let status = app
        .wait_exit(Duration::from_secs(12))
        .unwrap_or_else(|| panic!("still running 12 s after SIG{signal}"));
    assert_eq!(status.code(), Some(0), "exit status after SIG{signal}");
    assert!(
        signalled.elapsed() < Duration::from_secs(11),
        "drain took {:?}, beyond SHUTDOWN_GRACE_SECONDS (10 s)",
        signalled.elapsed()
    );
    assert!(
        app.stdout().contains("drained in-flight requests"),
        "{}",
        app.stdout()
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    drains_in_flight_requests_then_exits_0("TERM").await;
}

#[tokio::test]
async fn sigint_drains_in_flight_requests_and_exits_0() {
    drains_in_flight_requests_then_exits_0("INT").await;
}

#[tokio::test]
async fn the_drain_is_bounded_by_shutdown_grace_seconds() {
    let mut app = TestApp::spawn(&Settings::unreachable_vault().set("SHUTDOWN_GRACE_SECONDS", "1"));
    let url = app.url("/api/devices/dev-1/sas-token");
    let stuck = tokio::spawn(separate_client().get(url).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    app.signal("TERM");
    let status = app
        .wait_exit(Duration::from_secs(4))
        .expect("exits within the 1 s grace period (plus slack)");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 1 s grace period"
    );
    // The request that outlived the grace period was cut off, not answered.
    assert!(stuck.await.expect("task ran").is_err());
    assert!(
        app.stdout().contains("SHUTDOWN_GRACE_SECONDS"),
        "{}",
        app.stdout()
    );
}

#[tokio::test]
async fn after_the_signal_new_connections_are_refused() {
    let mut app = TestApp::spawn(&Settings::base());
    let address = app.address;
    app.signal("TERM");
    app.wait_exit(Duration::from_secs(5))
        .expect("exits promptly when idle");
    assert!(std::net::TcpStream::connect(address).is_err());
}
