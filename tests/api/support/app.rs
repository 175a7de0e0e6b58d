//! `TestApp`: the real `handler` binary on a free port, spoken to over HTTP. It keeps
//! everything the binary prints, checks when dropped that nothing secret was printed, and kills
//! the process. Its methods are named for what a caller or an operator does.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::{Method, Response};
use serde_json::Value;

use super::answers::{Issued, TokenAnswer, TokenFor, assert_caller_not_allowed};
use super::client_certs::CLIENT_CERT_HEADER;
use super::clock::unix_now;
use super::leaks::Secrets;
use super::logs::request_lines;
use super::process::{self, Captured, listening_address};
use super::routes::{LEGACY_ROUTE, token_path};
use super::settings::{DENIED_IP, Settings};
use super::waiting::{poll, poll_blocking};

/// How long the binary may take to print its `listening` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request log line may lag behind its response.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// The handler binary, running.
pub(crate) struct TestApp {
    /// Where it listens (127.0.0.1 and the port it picked).
    pub(crate) address: SocketAddr,
    child: Child,
    stdout: Captured,
    stderr: Captured,
    client: reqwest::Client,
    secrets: SecretWatch,
}

/// Values that must never appear in anything the handler prints: the key settings, and every
/// `code` query value, `x-functions-key`, `Authorization` and `X-Caller-Authorization` header a
/// test sent through [`TestApp::request`]. Checked when the `TestApp` is dropped, for every test in the suite.
#[derive(Default)]
struct SecretWatch(Mutex<Secrets>);

/// Settings whose values are secrets.
const SECRET_SETTINGS: &[&str] = &[
    "IOTHUB_POLICY_KEY",
    "keyvalue",
    "ENROLLMENT_GROUP_KEY",
    "IDENTITY_HEADER",
];

impl SecretWatch {
    fn add(&self, what: &str, value: &str) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(what, value);
    }

    fn add_request(&self, path_and_query: &str, headers: &[(&str, &str)]) {
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("x-functions-key")
                || name.eq_ignore_ascii_case("authorization")
                || name.eq_ignore_ascii_case("x-caller-authorization")
            {
                self.add(&format!("{name} header"), value);
                // The credential alone, as a log might print it without its scheme.
                if let Some((_, credential)) = value.split_once(' ') {
                    self.add(&format!("{name} header's credential"), credential.trim());
                }
            }
        }
        let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
        for pair in query.split('&') {
            if let Some(("code", value)) = pair.split_once('=') {
                self.add("`code` query value", value);
            }
        }
    }

    /// Panics if `output` holds a watched value or any SAS token.
    fn assert_absent_from(&self, output: &str) {
        assert!(
            !output.contains("SharedAccessSignature"),
            "the handler printed a SAS token:\n{output}"
        );
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .assert_absent_from(output, "what the handler printed");
    }
}

impl TestApp {
    /// Starts the binary with `settings` on port 0 and waits for its `listening` line.
    pub(crate) fn spawn(settings: &Settings) -> TestApp {
        let process::Started {
            mut child,
            stdout,
            stderr,
            stdout_lines: rx,
            readers: [_, stderr_reader],
        } = process::start(settings);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let address = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(address) = listening_address(&line) {
                        break address;
                    }
                }
                Err(reason) => {
                    let _ = child.kill();
                    let status = child.wait();
                    let _ = stderr_reader.join();
                    panic!(
                        "the handler printed no `listening` line ({}; exit: {status:?})\n\
                         settings: {settings:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        match reason {
                            mpsc::RecvTimeoutError::Timeout =>
                                format!("waited {STARTUP_TIMEOUT:?}"),
                            mpsc::RecvTimeoutError::Disconnected => "stdout closed".to_owned(),
                        },
                        stdout.text(),
                        stderr.text()
                    );
                }
            }
        };
        let secrets = SecretWatch::default();
        for (name, value) in settings.iter() {
            if SECRET_SETTINGS.contains(&name) {
                secrets.add(name, value);
            }
        }
        let app = TestApp {
            address,
            child,
            stdout,
            stderr,
            secrets,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain-HTTP reqwest client builds"),
        };
        assert_eq!(
            address.ip(),
            Ipv4Addr::LOCALHOST,
            "the handler must bind 127.0.0.1, its startup line says {address}"
        );
        assert_ne!(
            address.port(),
            0,
            "the startup line must name the real port"
        );
        app
    }

    /// `http://127.0.0.1:PORT` + `path_and_query` (already percent-encoded by the caller).
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.address, path_and_query)
    }

    /// Any request. Repeated header names become separate header lines.
    pub(crate) async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        self.secrets.add_request(path_and_query, headers);
        let described = format!("{method} {path_and_query}");
        let mut request = self.client.request(method, self.url(path_and_query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{described} got no answer: {e}"))
    }

    /// `GET path_and_query` with `headers`.
    pub(crate) async fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Response {
        self.request(Method::GET, path_and_query, headers).await
    }

    /// `GET /api/devices/{segment}/sas-token[?query]`; `segment` is already percent-encoded.
    pub(crate) async fn get_sas_token(&self, segment: &str, query: Option<&str>) -> Response {
        self.get(&token_path(segment, query), &[]).await
    }

    /// `GET /api/getSASTokenByDeviceID?query`; `query` is already percent-encoded.
    pub(crate) async fn get_legacy(&self, query: &str) -> Response {
        self.get(&format!("{LEGACY_ROUTE}?{query}"), &[]).await
    }

    /// `GET /api/devices/dev-1/sas-token` with one `X-Forwarded-For` line per entry of `xff_lines`.
    pub(crate) async fn get_with_xff(&self, xff_lines: &[&str]) -> Response {
        let headers: Vec<(&str, &str)> = xff_lines
            .iter()
            .map(|line| ("X-Forwarded-For", *line))
            .collect();
        self.get(&token_path("dev-1", None), &headers).await
    }

    /// `GET path` with `Authorization: Bearer <token>` (no header when `None`) and `extra`
    /// headers.
    pub(crate) async fn get_with_token(
        &self,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Response {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(value) = &authorization {
            headers.push(("Authorization", value));
        }
        self.get(path, &headers).await
    }

    /// `GET path` with the client certificate header App Service forwards set to `value` (no
    /// header when `None`; see `client_certs`) and `extra` headers.
    pub(crate) async fn get_with_cert(
        &self,
        path: &str,
        value: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(value) = value {
            headers.push((CLIENT_CERT_HEADER, value));
        }
        self.get(path, &headers).await
    }

    /// The body of the 403 a caller outside the allow list gets: what every other refused
    /// caller must get too.
    pub(crate) async fn ip_denial_body(&self) -> Value {
        let response = self.get_with_xff(&[DENIED_IP]).await;
        assert_caller_not_allowed(response, "IP denial").await
    }

    /// `GET path_and_query`, asserting a 200 and a well-formed body, with the time window the
    /// token was issued in.
    pub(crate) async fn issue(&self, path_and_query: &str) -> Issued {
        let before = unix_now();
        let response = self.get(path_and_query, &[]).await;
        Issued::read(response, path_and_query, before).await
    }

    /// `GET path_and_query` with `headers`, asserting a 200 for `subject` ([`TokenAnswer::read`]).
    pub(crate) async fn token(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
        subject: TokenFor,
    ) -> TokenAnswer {
        let before = unix_now();
        let response = self.get(path_and_query, headers).await;
        TokenAnswer::read(response, &format!("GET {path_and_query}"), subject, before).await
    }

    /// Sends `request` byte for byte on a fresh connection and returns the status it got.
    /// For inputs no HTTP client would send (invalid UTF-8 headers, raw `%` in paths).
    pub(crate) fn raw_status(&self, request: &[u8]) -> Result<u16, String> {
        let mut stream = TcpStream::connect(self.address).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        // The server may answer (431, 400) and close before it has read everything.
        let write_result = stream.write_all(request);
        let mut response = Vec::new();
        let mut chunk = [0_u8; 4096];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&response);
        let status_line = head.lines().next().unwrap_or_default();
        status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no status line (write: {write_result:?}); got {status_line:?}"))
    }

    /// The process id (for /proc readings).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`) to the process.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("`kill` runs");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_blocking(timeout, || self.child.try_wait().ok().flatten())
    }

    /// True while the process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything printed to stdout so far.
    pub(crate) fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything printed to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Everything printed to stdout and stderr so far.
    pub(crate) fn output(&self) -> String {
        format!("{}{}", self.stdout.text(), self.stderr.text())
    }

    /// Request log lines (stdout JSON lines that carry `latency_us`), once there are at
    /// least `at_least` of them (or the wait runs out: the caller asserts the count).
    pub(crate) async fn request_log_lines(&self, at_least: usize) -> Vec<Value> {
        poll(LOG_TIMEOUT, || async {
            let lines = request_lines(&self.stdout());
            (lines.len() >= at_least).then_some(lines)
        })
        .await
        .unwrap_or_else(|| request_lines(&self.stdout()))
    }
}

/// A client of its own, so that its requests run on separate connections (requests held in
/// flight side by side). Build it before the moment that matters: building a client takes
/// longer than sending a request on loopback.
pub(crate) fn separate_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a plain-HTTP client builds")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            self.secrets.assert_absent_from(&self.output());
        }
    }
}
