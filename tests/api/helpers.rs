//! `TestApp` runs the real `handler` binary on a free port, keeps everything it prints and
//! kills it on drop. Also here: the official-SDK oracles (Python and Node, installed by
//! `make oracles`), and the small parsers the tests share (SAS token, problem body, log line).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderMap;
use reqwest::{Method, Response};
use serde_json::Value;

/// IoT Hub host name every `TestApp` is configured with unless a test overrides it.
pub(crate) const HOSTNAME: &str = "demo-hub.azure-devices.net";
/// Shared access policy name; ordinary, so every SDK writes it the same way.
pub(crate) const POLICY: &str = "device";
/// 32 random bytes in base64. The `+` and `/` make sure the key is decoded, not used as text.
pub(crate) const KEY: &str = "1CwqlolcDe+RIf3BLgbXJFiKOxGMxWbMGpbR598oqiw=";

/// Route templates as the request log must name them.
pub(crate) const TOKEN_ROUTE: &str = "/api/devices/{deviceId}/sas-token";
pub(crate) const LEGACY_ROUTE: &str = "/api/getSASTokenByDeviceID";

/// How long the binary may take to print its `listening` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a misconfigured binary may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request log line may lag behind its response.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes a SAS token leaves as they are: RFC 3986 unreserved. Everything else becomes `%XX`
/// with upper-case hex, which is what Python's `urllib.parse.quote(s, safe="")` does.
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes every byte outside `A–Z a–z 0–9 - . _ ~`, upper-case hex.
pub(crate) fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// A valid configuration whose allow list holds 127.0.0.1, the TCP peer of every test request.
pub(crate) fn base_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IOTHUB_HOSTNAME", HOSTNAME),
        ("IOTHUB_POLICY_NAME", POLICY),
        ("IOTHUB_POLICY_KEY", KEY),
        ("ALLOWED_IPS", "127.0.0.1"),
    ]
}

/// `base_settings()` with each of `overrides` replacing the setting of the same name, or added.
pub(crate) fn settings_with<'a>(overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut settings: Vec<(&str, &str)> = base_settings()
        .into_iter()
        .filter(|(name, _)| !overrides.iter().any(|(o, _)| o == name))
        .collect();
    settings.extend_from_slice(overrides);
    settings
}

/// `settings_with(overrides)` without the settings named in `removed`.
pub(crate) fn settings_without<'a>(
    removed: &[&str],
    overrides: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    settings_with(overrides)
        .into_iter()
        .filter(|(name, _)| !removed.contains(name))
        .collect()
}

/// What a process printed, shared with the thread that keeps reading it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn push(&self, text: &str) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_str(text);
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Reads `stream` to its end on a thread, appending each line to `into` (and sending it on
/// `lines` while someone listens), so the child never blocks on a full pipe.
fn drain(
    stream: impl Read + Send + 'static,
    into: Captured,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    into.push(&line);
                    if let Some(tx) = &lines {
                        // After startup nobody listens any more; the buffer still gets the line.
                        let _ = tx.send(line);
                    }
                }
            }
        }
    })
}

/// The binary with a clean environment (PATH only), port 0 and `settings`.
fn handler_command(settings: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.env("FUNCTIONS_CUSTOMHANDLER_PORT", "0");
    // Every scenario runs at the most verbose level unless a test says otherwise, and every
    // TestApp checks on drop that nothing secret was printed (see `SecretWatch`).
    command.env("RUST_LOG", "trace");
    for (name, value) in settings {
        command.env(name, value);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The address in a startup line `{"message":"listening","address":"127.0.0.1:PORT",..}`.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("message")?.as_str()? != "listening" {
        return None;
    }
    value.get("address")?.as_str()?.parse().ok()
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

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
/// `code` query value, `x-functions-key` and `Authorization` header a test sent through
/// [`TestApp::request`]. Checked when the `TestApp` is dropped, for every test in the suite.
#[derive(Default)]
struct SecretWatch(Mutex<Vec<String>>);

/// Settings whose values are secrets.
const SECRET_SETTINGS: &[&str] = &["IOTHUB_POLICY_KEY", "keyvalue", "IDENTITY_HEADER"];

impl SecretWatch {
    fn add(&self, value: &str) {
        if value.len() >= 4 {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(value.to_owned());
        }
    }

    fn add_request(&self, path_and_query: &str, headers: &[(&str, &str)]) {
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("x-functions-key")
                || name.eq_ignore_ascii_case("authorization")
            {
                self.add(value);
            }
        }
        let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
        for pair in query.split('&') {
            if let Some(("code", value)) = pair.split_once('=') {
                self.add(value);
            }
        }
    }

    /// Panics if `output` holds a watched value or any SAS token.
    fn assert_absent_from(&self, output: &str) {
        assert!(
            !output.contains("SharedAccessSignature"),
            "the handler printed a SAS token:\n{output}"
        );
        for secret in self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            assert!(
                !output.contains(secret.as_str()),
                "the handler printed a secret value ({} chars) in:\n{output}",
                secret.len()
            );
        }
    }
}

impl TestApp {
    /// Starts the binary with `settings` on port 0 and waits for its `listening` line.
    pub(crate) fn spawn(settings: &[(&str, &str)]) -> TestApp {
        let mut child = handler_command(settings)
            .spawn()
            .expect("failed to start the handler binary");
        let stdout = Captured::default();
        let stderr = Captured::default();
        let (tx, rx) = mpsc::channel();
        drain(
            child.stdout.take().expect("stdout is piped"),
            stdout.clone(),
            Some(tx),
        );
        let stderr_reader = drain(
            child.stderr.take().expect("stderr is piped"),
            stderr.clone(),
            None,
        );

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
        for (name, value) in settings {
            if SECRET_SETTINGS.contains(name) {
                secrets.add(value);
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
        let mut request = self.client.request(method, self.url(path_and_query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query} got no answer: {e}"))
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

    /// `GET path_and_query`, asserting a 200 and a well-formed body, with the time window the
    /// token was issued in.
    pub(crate) async fn issue(&self, path_and_query: &str) -> Issued {
        let before = unix_now();
        let response = self.get(path_and_query, &[]).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body is readable");
        let after = unix_now();
        assert_eq!(
            status, 200,
            "GET {path_and_query} answered {status}: {text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: body is not JSON ({e}): {text}"));
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("GET {path_and_query}: body is not an object: {text}"));
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "deviceId",
                "expiresIn",
                "expiresOn",
                "refreshIn",
                "sastoken"
            ],
            "GET {path_and_query}: body keys"
        );
        let string = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("GET {path_and_query}: `{name}` is not a string: {text}"))
                .to_owned()
        };
        Issued {
            token: SasToken::parse(&string("sastoken")),
            device_id: string("deviceId"),
            expires_on: string("expiresOn"),
            headers,
            before,
            after,
        }
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
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything printed to stdout so far.
    pub(crate) fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything printed to stdout and stderr so far.
    pub(crate) fn output(&self) -> String {
        format!("{}{}", self.stdout.text(), self.stderr.text())
    }

    /// Request log lines (stdout JSON lines that carry `latency_us`), once there are at
    /// least `at_least` of them (or the wait runs out: the caller asserts the count).
    pub(crate) async fn request_log_lines(&self, at_least: usize) -> Vec<Value> {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let lines: Vec<Value> = self
                .stdout()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|line| log_field(line, "latency_us").is_some())
                .collect();
            if lines.len() >= at_least || Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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

/// `/api/devices/{segment}/sas-token[?query]`.
pub(crate) fn token_path(segment: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("/api/devices/{segment}/sas-token?{query}"),
        None => format!("/api/devices/{segment}/sas-token"),
    }
}

/// A binary that refused to start.
pub(crate) struct StartupFailure {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the binary with `settings` and expects it to exit by itself within a few seconds.
pub(crate) fn spawn_expecting_failure(settings: &[(&str, &str)]) -> StartupFailure {
    let mut child = handler_command(settings)
        .spawn()
        .expect("failed to start the handler binary");
    let stdout = Captured::default();
    let stderr = Captured::default();
    let readers = [
        drain(
            child.stdout.take().expect("stdout is piped"),
            stdout.clone(),
            None,
        ),
        drain(
            child.stderr.take().expect("stderr is piped"),
            stderr.clone(),
            None,
        ),
    ];
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the handler was still running after {EXIT_TIMEOUT:?} with settings \
                     {settings:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    stdout.text(),
                    stderr.text()
                );
            }
            Err(e) => panic!("waiting for the handler failed: {e}"),
        }
    };
    for reader in readers {
        let _ = reader.join();
    }
    StartupFailure {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

impl StartupFailure {
    /// Everything wrong with this failure for a bad `setting`: it must exit non-zero before
    /// `listening`, with exactly one stderr line `configuration error: <setting>: <problem>`.
    /// Empty when it is right.
    pub(crate) fn problems_naming(&self, setting: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.status.success() {
            problems.push(format!("exited successfully ({})", self.status));
        }
        if self.stdout.contains("listening") {
            problems.push("printed a `listening` line".to_owned());
        }
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        if lines.len() != 1 {
            problems.push(format!("wrote {} stderr lines, not one", lines.len()));
        }
        let prefix = format!("configuration error: {setting}: ");
        match lines.first() {
            Some(line) if line.starts_with(&prefix) && line.len() > prefix.len() => {}
            Some(line) => {
                problems.push(format!("stderr line is not `{prefix}<problem>`: {line:?}"))
            }
            None => problems.push("wrote nothing to stderr".to_owned()),
        }
        problems
    }
}

/// One start-up that must be refused: what is wrong, the full settings, and the setting the one
/// stderr line must name.
pub(crate) struct Refusal<'a> {
    pub(crate) description: String,
    pub(crate) settings: Vec<(&'a str, &'a str)>,
    pub(crate) setting: &'a str,
}

/// Starts the binary once per case, side by side (each only parses its settings and exits), and
/// returns one report line per case that was not refused as [`StartupFailure::problems_naming`]
/// requires or for which `also_wrong` finds something. Empty when every case is right.
pub(crate) fn misrefused_startups(
    cases: &[Refusal<'_>],
    also_wrong: impl Fn(&StartupFailure) -> Vec<String> + Sync,
) -> Vec<String> {
    let also_wrong = &also_wrong;
    std::thread::scope(|scope| {
        let running: Vec<_> = cases
            .iter()
            .map(|case| {
                scope.spawn(move || {
                    let failure = spawn_expecting_failure(&case.settings);
                    let mut problems = failure.problems_naming(case.setting);
                    problems.extend(also_wrong(&failure));
                    (!problems.is_empty()).then(|| {
                        format!(
                            "{} (expected {}): {}\n    stderr: {:?}",
                            case.description,
                            case.setting,
                            problems.join("; "),
                            failure.stderr
                        )
                    })
                })
            })
            .collect();
        running
            .into_iter()
            .filter_map(|handle| handle.join().expect("the startup check panicked"))
            .collect()
    })
}

/// A `200` answer from either token route.
pub(crate) struct Issued {
    pub(crate) token: SasToken,
    pub(crate) device_id: String,
    pub(crate) expires_on: String,
    pub(crate) headers: HeaderMap,
    /// Unix seconds just before the request was sent.
    pub(crate) before: u64,
    /// Unix seconds just after the answer arrived.
    pub(crate) after: u64,
}

impl Issued {
    /// Asserts `se` is "now + ttl" for some now inside the request's time window.
    pub(crate) fn assert_lifetime(&self, ttl: u64, context: &str) {
        let se = self.token.se;
        assert!(
            self.before + ttl <= se && se <= self.after + ttl,
            "{context}: se={se} is not now+{ttl} (now was {}..={})",
            self.before,
            self.after
        );
        assert_eq!(
            self.expires_on,
            rfc3339(se),
            "{context}: expiresOn must be se as RFC 3339 UTC"
        );
    }
}

/// The four fields of a `SharedAccessSignature` token, still percent-encoded.
#[derive(Debug, Clone)]
pub(crate) struct SasToken {
    pub(crate) raw: String,
    pub(crate) sr: String,
    pub(crate) sig: String,
    pub(crate) se: u64,
    pub(crate) skn: String,
}

impl SasToken {
    /// Splits `SharedAccessSignature sr=..&sig=..&se=..&skn=..`, asserting that exact order.
    pub(crate) fn parse(token: &str) -> SasToken {
        let rest = token
            .strip_prefix("SharedAccessSignature ")
            .unwrap_or_else(|| panic!("token lacks the `SharedAccessSignature ` prefix: {token}"));
        let fields: Vec<(&str, &str)> = rest
            .split('&')
            .map(|pair| {
                pair.split_once('=')
                    .unwrap_or_else(|| panic!("token field without `=`: {pair} in {token}"))
            })
            .collect();
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["sr", "sig", "se", "skn"],
            "token fields must be sr, sig, se, skn in that order: {token}"
        );
        let se = fields[2].1;
        SasToken {
            raw: token.to_owned(),
            sr: fields[0].1.to_owned(),
            sig: fields[1].1.to_owned(),
            se: se
                .parse()
                .unwrap_or_else(|_| panic!("se is not integer Unix seconds: {se} in {token}")),
            skn: fields[3].1.to_owned(),
        }
    }
}

/// `secs` as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, Howard Hinnant's civil_from_days).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).expect("days fit in i64");
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Asserts `response` is an RFC 9457 problem with `status`; returns its headers and body.
pub(crate) async fn assert_problem(
    response: Response,
    status: u16,
    context: &str,
) -> (HeaderMap, Value) {
    let actual = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body is readable");
    assert_eq!(actual, status, "{context}: status (body: {text})");
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        media_type(content_type),
        "application/problem+json",
        "{context}: content type of {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{context}: problem body is not JSON ({e}): {text}"));
    for member in ["type", "title", "detail"] {
        assert!(
            body.get(member).is_some_and(Value::is_string),
            "{context}: problem member `{member}` must be a string: {text}"
        );
    }
    assert_eq!(
        body.get("status").and_then(Value::as_u64),
        Some(u64::from(status)),
        "{context}: problem `status` must be the number {status}: {text}"
    );
    (headers, body)
}

/// `application/json; charset=utf-8` → `application/json`.
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A field of a JSON log line: at the top level, or else in a nested object (tracing's
/// `fields`, `span`, `spans`), depth first.
fn log_field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    match line {
        Value::Object(map) => map
            .get(name)
            .or_else(|| map.values().find_map(|v| log_field(v, name))),
        Value::Array(items) => items.iter().find_map(|v| log_field(v, name)),
        _ => None,
    }
}

/// A log field as text, whether it was written as a JSON string or number.
pub(crate) fn log_text(line: &Value, name: &str) -> Option<String> {
    match log_field(line, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the Python oracle (`azure-iot-device`) on one batch; returns its `results`.
pub(crate) fn python_oracle(request: &Value) -> Vec<Value> {
    let python = manifest_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the Python oracle is not installed ({} is missing): run `make oracles`",
        python.display()
    );
    run_oracle(
        &python,
        &manifest_dir().join("tests/oracles/python/sas_oracle.py"),
        request,
    )
}

/// Runs the Node oracle (`azure-iot-common`) on one batch; returns its `results`.
pub(crate) fn node_oracle(request: &Value) -> Vec<Value> {
    let dir = manifest_dir().join("tests/oracles/node");
    let sdk = dir.join("node_modules/azure-iot-common/package.json");
    assert!(
        sdk.exists(),
        "the Node oracle is not installed ({} is missing): run `make oracles`",
        sdk.display()
    );
    run_oracle(Path::new("node"), &dir.join("sas_oracle.js"), request)
}

fn run_oracle(program: &Path, script: &Path, request: &Value) -> Vec<Value> {
    let mut child = Command::new(program)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the oracle {} ({e}): run `make oracles`",
                program.display()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())
        .expect("the oracle reads its batch from stdin");
    let output = child
        .wait_with_output()
        .expect("the oracle runs to its end");
    assert!(
        output.status.success(),
        "the oracle {} failed ({}); is it installed? run `make oracles`\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the oracle {} printed no JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    });
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("the oracle answer has no `results`: {answer}"))
        .clone()
}

/// A string member of an oracle result.
pub(crate) fn oracle_str<'a>(result: &'a Value, member: &str) -> &'a str {
    result[member]
        .as_str()
        .unwrap_or_else(|| panic!("oracle result lacks string `{member}`: {result}"))
}
