//! A background task that stops is not silent: the application logs which task stopped and how,
//! stops serving, and `run_until_stopped` returns the failure (which `main` turns into a non-zero
//! exit, so the Functions host starts a new process).
//!
//! The application's own tasks (the Key Vault and issuer-key refresh loops) never end, so the
//! failure is injected through [`Application::spawn_background`], which runs a task exactly as the
//! application runs its own. This test drives the library in-process rather than the binary for
//! that reason; it is its own test binary because it installs a global log subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iothub_sas_handler::config::Config;
use iothub_sas_handler::startup::Application;
use iothub_sas_handler::tasks::TaskFailure;
use serde_json::Value;

/// Log lines written by the application, kept for the assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

fn demo_config() -> Config {
    Config::from_lookup(|name| {
        let value = match name {
            "IOTHUB_HOSTNAME" => "demo-hub.azure-devices.net",
            "IOTHUB_POLICY_NAME" => "device",
            "IOTHUB_POLICY_KEY" => "1CwqlolcDe+RIf3BLgbXJFiKOxGMxWbMGpbR598oqiw=",
            "ALLOWED_IPS" => "127.0.0.1",
            "FUNCTIONS_CUSTOMHANDLER_PORT" => "0",
            "SHUTDOWN_GRACE_SECONDS" => "1",
            _ => return None,
        };
        Some(value.to_owned())
    })
    .expect("the demo settings are valid")
}

#[tokio::test]
async fn a_background_task_that_panics_is_logged_by_name_and_stops_the_server() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .init();

    let mut app = Application::build(demo_config())
        .await
        .expect("the application builds");
    let address = app.local_addr().expect("bound");
    let (fail, failed) = tokio::sync::oneshot::channel::<()>();
    app.spawn_background("injected task", async move {
        let _ = failed.await;
        panic!("injected failure");
    });

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://{address}/api/devices/dev-1/sas-token");
    let run = app.run_until_stopped(std::future::pending());
    let exercise = async {
        let before = client
            .get(&url)
            .send()
            .await
            .expect("served while the task runs");
        assert_eq!(before.status(), 200, "served while the task runs");
        fail.send(()).expect("the task is waiting");
    };
    let (stopped, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(run, exercise)
    })
    .await
    .expect("the server stops when the task fails, without waiting for a shutdown signal");

    assert_eq!(
        stopped,
        Err(TaskFailure {
            task: "injected task".to_owned(),
            how: "panicked"
        })
    );
    assert!(
        client.get(&url).send().await.is_err(),
        "after the failure the port no longer accepts requests"
    );
    let lines = logs.lines();
    let error = lines
        .iter()
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line among {lines:#?}"));
    assert_eq!(error["task"], "injected task", "{error}");
    assert_eq!(error["how"], "panicked", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("injected task") && message.contains("new process"),
        "the message says which task and what happens next: {message}"
    );
}
