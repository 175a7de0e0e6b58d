//! A bounded soak: many connections sending a mix of allowed, denied and invalid requests to the
//! real binary on loopback. No 5xx, no dropped connection, memory flat after warm-up.
//!
//! `make test` runs it briefly (3 s, 32 connections); `make soak` runs it as the hardening issue
//! asks (60 s, 256 connections, release build) via `SOAK_SECONDS` and `SOAK_CONNECTIONS`, and
//! prints the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{app::TestApp, settings::Settings};

/// A setting of this test, from the environment, or `default`.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of `pid` in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The request mix, one per step; (path, X-Forwarded-For, expected status).
const MIX: &[(&str, Option<&str>, u16)] = &[
    ("/api/devices/dev-1/sas-token", None, 200),
    (
        "/api/getSASTokenByDeviceID?deviceid=dev-2&ttl=600",
        Some("127.0.0.1:5000"),
        200,
    ),
    (
        "/api/devices/dev-3/sas-token",
        Some("127.0.0.1, 203.0.113.9:443"),
        403,
    ),
    ("/api/devices/dev-4/sas-token", Some("not-an-address"), 403),
    ("/api/devices/bad%20id/sas-token", None, 400),
    ("/api/getSASTokenByDeviceID?deviceid=dev-5&ttl=5", None, 400),
    ("/api/nope", None, 404),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_load_gets_no_5xx_drops_nothing_and_keeps_memory_flat() {
    let seconds = knob("SOAK_SECONDS", 3);
    let connections = knob("SOAK_CONNECTIONS", 32);
    // Production logging: one info line per request.
    let app = TestApp::spawn(&Settings::base().set("RUST_LOG", "info"));
    let pid = app.pid();
    let base = format!("http://{}", app.address);

    // One keep-alive connection per worker. The clients are built before the clock starts:
    // building one takes longer than many requests, and the run measures the handler.
    let clients: Vec<reqwest::Client> = (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client builds")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let unexpected = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(worker, client)| {
            let base = base.clone();
            let sent = Arc::clone(&sent);
            let unexpected = Arc::clone(&unexpected);
            tokio::spawn(async move {
                let mut step = worker;
                while Instant::now() < deadline {
                    let (path, xff, want) = MIX[step % MIX.len()];
                    step += 1;
                    let mut request = client.get(format!("{base}{path}"));
                    if let Some(xff) = xff {
                        request = request.header("x-forwarded-for", xff);
                    }
                    let outcome = match request.send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            // Read the whole body: a cut-off body is a dropped connection too.
                            match response.bytes().await {
                                Ok(_) if status == want => None,
                                Ok(_) => Some(format!("{path}: {status}, expected {want}")),
                                Err(e) => Some(format!("{path}: body cut off: {e}")),
                            }
                        }
                        Err(e) => Some(format!("{path}: transport error: {e}")),
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(problem) = outcome {
                        unexpected
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(problem);
                    }
                }
            })
        })
        .collect();

    // Sample memory once a second; the first fifth of the run is warm-up.
    let warm_up = Duration::from_secs(seconds.div_ceil(5).max(1));
    let started = Instant::now();
    let mut after_warm_up = None;
    let mut peak_after_warm_up = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = rss_kib(pid);
        if started.elapsed() >= warm_up {
            after_warm_up.get_or_insert(rss);
            peak_after_warm_up = peak_after_warm_up.max(rss);
        }
    }
    for worker in workers {
        worker.await.expect("worker finished");
    }

    let sent = sent.load(Ordering::Relaxed);
    let unexpected = unexpected.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let baseline = after_warm_up.unwrap_or(peak_after_warm_up).max(1);
    let growth = (peak_after_warm_up.saturating_sub(baseline)) as f64 / baseline as f64;
    println!(
        "soak: {seconds} s, {connections} connections, {sent} requests ({:.0}/s), \
         {} unexpected answers, RSS after warm-up {baseline} KiB, peak {peak_after_warm_up} KiB \
         (+{:.1}%)",
        sent as f64 / seconds as f64,
        unexpected.len(),
        growth * 100.0
    );
    assert!(sent > connections, "the load ran ({sent} requests)");
    assert!(
        unexpected.is_empty(),
        "{} unexpected answers, first: {:?}",
        unexpected.len(),
        unexpected.first()
    );
    assert!(
        growth < 0.10,
        "RSS grew {:.1}% after warm-up ({baseline} → {peak_after_warm_up} KiB)",
        growth * 100.0
    );
}
