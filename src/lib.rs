//! An Azure Functions custom handler that issues Azure IoT Hub device SAS tokens to allowed callers.
//!
//! # Layout
//! Every module, by where it acts (a unit test below, `codemap`, fails when a module declared here
//! is missing from this map, or when the pipeline below differs from the one [`issuance`] runs).
//!
//! Start-up:
//! - [`config`]: reads the environment once and asks each layer to parse its own settings.
//! - [`settings`]: the lookup every layer reads its settings through; [`https_roots`]:
//!   `SSL_CERT_FILE`, checked at start-up.
//! - [`startup`]: prepares the layers, owns their background tasks ([`tasks`]), binds
//!   `127.0.0.1:{port}`; [`startup::StartupError`] is every reason it can fail.
//! - [`server`]: the HTTP/1 connection loop, the connection-level limits (request head size and
//!   read timeout) and the bounded drain.
//!
//! One request:
//! - [`routes`]: the route table, 404/405, the limits middleware and the request log line, with
//!   the join keys ([`correlation`]: the host's invocation id, the W3C trace id) read beside the
//!   route.
//! - [`limits`]: the per-request limits that middleware applies (URL, body, requests in flight),
//!   and every limit's setting.
//! - [`issuance`]: the pipeline every token route runs — caller → input → hub → scope → key → sign:
//!   - caller — [`caller`]: the caller layers in order, producing a typed [`caller::Caller`]:
//!     [`client_ip`] (`X-Forwarded-For`, `XFF_DEPTH` from the right) against [`allow_list`],
//!     then the optional [`auth`] layers (client certificate, Entra ID bearer token, and for a
//!     gateway the one caller it forwards);
//!   - input — [`params`]: device, module and registration ids, `ttl`, `hub` and the query
//!     string, parsed once (the IoT Hub id character set is defined there, once);
//!   - hub — [`hubs`]: the hubs tokens are for (`IOTHUB_HOSTNAMES`), each hub's two host names,
//!     and the choice of one per request;
//!   - scope — [`scope`]: `DEVICE_SCOPES`, which devices each caller (or, behind a gateway, the
//!     caller it forwards) may get tokens for, per hub;
//!   - key — [`secrets`]: the current keys (one per hub in hub-policy mode), read from memory;
//!     [`secrets::key_vault`] keeps them fresh;
//!   - sign — [`sas`]: the signing mode, the policy name, the signing key, the prepared signer
//!     and the token format.
//! - [`error`]: every error as RFC 9457 problem+json.
//! - [`request_record`]: what one request established (caller verdicts, ids, hub, the audit
//!   facts, the join keys), built once and read by [`request_log`], which writes it as the
//!   request's JSON line; [`telemetry`]: every other JSON log line on stdout. The test module
//!   `operations_queries` holds `docs/operations.md`'s queries and alerts to the fields these
//!   lines really have.
//!
//! The facts about Azure these modules rely on are cited from `docs/azure-behaviour.md` by
//! section (`§N`).
//!
//! # Which way the imports go
//! Downwards only, and no module imports one above it:
//! `main` → [`startup`] → [`config`] → the layers' settings types; [`startup`] → [`routes`] →
//! [`issuance`] → [`caller`] → [`auth`], [`client_ip`], [`allow_list`]; [`issuance`] →
//! [`scope`] → [`caller`], [`auth`], [`hubs`], [`params`]; [`issuance`] → [`secrets`] →
//! [`hubs`], [`sas`] → [`params`]. Every layer that has settings imports [`settings`], which imports nothing from
//! the crate; [`telemetry`] and [`correlation`] sit at the bottom beside it, and [`error`],
//! [`request_record`] and [`request_log`] just above [`params`]. Nothing below [`config`] imports it: a layer owns its settings type and
//! parser, and [`config`] only assembles them.
//!
//! # One request
//! The Functions host forwards `GET /api/devices/dev-1/sas-token` to `127.0.0.1:{port}`.
//! [`routes`] admits it under the [`limits`] and hands its raw inputs to [`issuance`], which asks
//! [`caller`] who is calling — the address from `X-Forwarded-For` against the allow list, then the
//! client certificate and bearer token when those layers are on, and who a gateway speaks for
//! (403/401); parses the device id,
//! `ttl` and `hub` ([`params`]; 400); chooses the hub and its host name ([`hubs`]; 400 for a hub
//! not served); with `DEVICE_SCOPES`, checks that the caller may have this device on that hub
//! ([`scope`]; 403); reads that hub's current signer ([`secrets`]; 503 if no key yet); signs
//! ([`sas`]) and answers 200 with the token and its `hostName`. On the way out one log line
//! records the route, status, latency, caller, device and hub — never the key, the token, `code`
//! or `x-functions-key`.

pub mod allow_list;
pub mod auth;
pub mod caller;
pub mod client_ip;
pub mod config;
pub mod correlation;
pub mod error;
pub mod https_roots;
pub mod hubs;
pub mod issuance;
pub mod limits;
pub mod params;
pub mod request_log;
pub mod request_record;
pub mod routes;
pub mod sas;
pub mod scope;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod startup;
pub mod tasks;
pub mod telemetry;

#[cfg(test)]
mod operations_queries;

#[cfg(test)]
mod codemap {
    //! The map at the top of this file, checked against the code it describes.

    const LIB: &str = include_str!("lib.rs");
    const ISSUANCE: &str = include_str!("issuance.rs");

    /// The `//!` text of a source file.
    fn module_docs(source: &str) -> String {
        source
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_map_names_every_module_declared_here() {
        let docs = module_docs(LIB);
        let layout = docs
            .split_once("# Layout")
            .and_then(|(_, rest)| rest.split_once("# Which way"))
            .map(|(layout, _)| layout)
            .expect("lib.rs has a `# Layout` section before `# Which way the imports go`");
        let declared: Vec<&str> = LIB
            .lines()
            .filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';'))
            .collect();
        assert!(
            declared.len() > 10,
            "found the module declarations: {declared:?}"
        );
        let missing: Vec<&&str> = declared
            .iter()
            .filter(|name| !layout.contains(&format!("[`{name}`]")))
            .collect();
        assert!(
            missing.is_empty(),
            "modules declared in src/lib.rs but not named in its `# Layout` map: {missing:?}"
        );
    }

    /// The steps are the bold names of `issuance.rs`'s numbered list; the map and `issuance.rs`'s
    /// own first line give them in that order.
    #[test]
    fn the_pipeline_sentence_names_every_step_issuance_runs() {
        let issuance_docs = module_docs(ISSUANCE);
        let steps: Vec<&str> = issuance_docs
            .lines()
            .filter_map(|line| {
                let (number, rest) = line.trim_start().split_once(". **")?;
                number.parse::<u32>().ok()?;
                rest.split_once("**").map(|(step, _)| step)
            })
            .collect();
        assert!(steps.len() >= 4, "issuance.rs lists its steps: {steps:?}");
        let pipeline = steps.join(" → ");
        assert!(
            issuance_docs
                .lines()
                .next()
                .is_some_and(|first| first.contains(&pipeline)),
            "issuance.rs's first line gives the pipeline {pipeline}"
        );
        assert!(
            module_docs(LIB).contains(&format!("the pipeline every token route runs — {pipeline}")),
            "src/lib.rs's map gives the pipeline {pipeline}"
        );
        for step in steps {
            assert!(
                module_docs(LIB).contains(&format!("  - {step} — ")),
                "src/lib.rs's map says which module does the step `{step}`"
            );
        }
    }
}
