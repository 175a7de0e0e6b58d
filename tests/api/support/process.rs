//! Starting the `handler` binary and keeping everything it prints: the plumbing under
//! [`TestApp`](super::app::TestApp) (a binary that serves) and
//! [`startup`](super::startup) (a binary that must refuse to start); and [`output_within`], which
//! runs any other program (verify.py, schemathesis) to its end within a deadline.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::prerequisites::{INFRA_TOOLS, ORACLES, ensure};
use super::settings::Settings;

/// Stops the test binary with one line when a tool the suite needs is not installed (see
/// [`prerequisites`](super::prerequisites)). Every place that starts a child process calls it
/// first, so the check runs before anything has been started.
pub(crate) fn ensure_tools() {
    ensure(&[&ORACLES, &INFRA_TOOLS]);
}

/// What a process printed, shared with the thread that keeps reading it.
#[derive(Clone, Default)]
pub(super) struct Captured(Arc<Mutex<String>>);

impl Captured {
    fn push(&self, text: &str) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_str(text);
    }

    pub(super) fn text(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The binary, started, with readers on both its output streams.
pub(super) struct Started {
    pub(super) child: Child,
    pub(super) stdout: Captured,
    pub(super) stderr: Captured,
    /// Each stdout line as it arrives, for as long as someone listens.
    pub(super) stdout_lines: mpsc::Receiver<String>,
    /// The threads reading stdout and stderr; each ends when its stream closes.
    pub(super) readers: [JoinHandle<()>; 2],
}

/// Starts the binary with a clean environment (PATH only), port 0, `RUST_LOG=trace` and
/// `settings` (which may override both).
pub(super) fn start(settings: &Settings) -> Started {
    let mut child = handler_command(settings)
        .spawn()
        .expect("failed to start the handler binary");
    let stdout = Captured::default();
    let stderr = Captured::default();
    let (tx, stdout_lines) = mpsc::channel();
    let readers = [
        drain(
            child.stdout.take().expect("stdout is piped"),
            stdout.clone(),
            Some(tx),
        ),
        drain(
            child.stderr.take().expect("stderr is piped"),
            stderr.clone(),
            None,
        ),
    ];
    Started {
        child,
        stdout,
        stderr,
        stdout_lines,
        readers,
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
fn handler_command(settings: &Settings) -> Command {
    ensure_tools();
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.env("FUNCTIONS_CUSTOMHANDLER_PORT", "0");
    // Every scenario runs at the most verbose level unless a test says otherwise, and every
    // TestApp checks on drop that nothing secret was printed.
    command.env("RUST_LOG", "trace");
    for (name, value) in settings.iter() {
        command.env(name, value);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The address in a startup line `{"message":"listening","address":"127.0.0.1:PORT",..}`.
pub(super) fn listening_address(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("message")?.as_str()? != "listening" {
        return None;
    }
    value.get("address")?.as_str()?.parse().ok()
}

/// Runs `command` (stdin closed, stdout and stderr captured) and returns what it printed, or
/// kills it and panics naming `what` once `timeout` has passed. The output is read while the
/// child runs, so a child that prints more than a pipe holds cannot stall until the deadline.
pub(crate) fn output_within(command: &mut Command, timeout: Duration, what: &str) -> Output {
    ensure_tools();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("poll {what}: {e}"))
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("the stdout reader panicked"),
        stderr: stderr.join().expect("the stderr reader panicked"),
    }
}
