//! What the API tests share, one job a module. Test files import from here and from
//! `stand_ins`, never from each other; nothing here imports a test file or a stand-in.
//!
//! - [`settings`]: the handler's environment for one start, and a valid configuration's values.
//! - [`app`]: `TestApp`, the real binary on a free port: requests, output, signals.
//! - [`process`]: starting the binary and keeping what it prints (under `app` and `startup`),
//!   and running any other program to its end within a deadline.
//! - [`startup`]: start-ups that must be refused, run side by side.
//! - [`side_by_side`]: independent checks that each start processes, one thread each.
//! - [`routes`]: the routes' paths, and the names the request log gives them.
//! - [`answers`]: what each answer must look like: problem+json, a 200 with a token, the 401
//!   and 403 of each refused caller, the 503 with `Retry-After`.
//! - [`client_certs`]: client certificates and thumbprints, as App Service forwards them.
//! - [`sas`]: SAS tokens taken apart, and the percent-encoding rule they follow.
//! - [`oracles`]: the official Azure IoT SDKs (Python, Node) as oracles.
//! - [`logs`]: the handler's JSON log lines.
//! - [`leaks`]: what the handler must never print, and the one scan for it.
//! - [`waiting`]: waiting for something to become true, with a deadline (one polling schedule).
//! - [`clock`]: Unix seconds now, and RFC 3339.
//! - [`tls`]: a test CA per stand-in, the server certificates it issues, clients that trust it.
//! - [`prerequisites`]: the installed tools the suite needs, checked once before anything starts
//!   ([`process::ensure_tools`]): one line naming `make test-tools` when they are missing.

pub(crate) mod answers;
pub(crate) mod app;
pub(crate) mod client_certs;
pub(crate) mod clock;
pub(crate) mod leaks;
pub(crate) mod logs;
pub(crate) mod oracles;
#[path = "../../common/prerequisites.rs"]
pub(crate) mod prerequisites;
pub(crate) mod process;
pub(crate) mod routes;
pub(crate) mod sas;
pub(crate) mod settings;
pub(crate) mod side_by_side;
pub(crate) mod startup;
pub(crate) mod tls;
pub(crate) mod waiting;
