//! Local stand-ins for the two Azure services the handler talks to when its key lives in Key
//! Vault, speaking the same wire protocol as the real ones (docs/azure-behaviour.md §6 and §7):
//!
//! - [`Identity`]: the App Service managed-identity endpoint (`IDENTITY_ENDPOINT`, protocol
//!   2019-08-01), plain HTTP on 127.0.0.1.
//! - [`KeyVault`]: the Key Vault secrets API over HTTPS, addressed as `https://kv-….vault.azure.net/`.
//!   The Key Vault SDK insists that the vault's host name ends with `.vault.azure.net` (the
//!   challenge resource), so nothing may be addressed by `127.0.0.1`. Instead the stand-in is also
//!   an HTTP `CONNECT` proxy: the client is given `HTTPS_PROXY=http://127.0.0.1:<port>` and sends
//!   `CONNECT kv-….vault.azure.net:443`, which the proxy tunnels to its own TLS listener. No
//!   name is ever resolved and no connection leaves 127.0.0.1. The TLS certificate is issued
//!   for the vault's host name by a CA generated per stand-in, which the client trusts through
//!   `SSL_CERT_FILE`.
//!
//! A third, [`issuer::Issuer`], stands in for Entra ID as the issuer of the bearer tokens API
//! Management sends (OpenID metadata and JWKS over HTTPS): a child process around the
//! `oauth2-mock-server` npm package, started by each bearer-token test on its own.
//!
//! [`bearer::Fixture`] is the arrangement the bearer-token tests start from: an issuer, API
//! Management's identity as the allowed caller, and the handler's app registration.
//!
//! [`StandIns`] starts both on a runtime of their own: they keep answering while the test thread
//! blocks (for instance in `TestApp::spawn`), and they stop when it is dropped. Each test starts
//! its own, on ports picked by the system, so tests run in parallel.

pub(crate) mod bearer;
pub(crate) mod identity;
pub(crate) mod issuer;
pub(crate) mod key_vault;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

pub(crate) use identity::Identity;
pub(crate) use key_vault::{Auth, KeyVault, Outage};

use crate::support::clock::unix_now;
use crate::support::leaks::Secrets;
use crate::support::settings::Settings;

/// The managed-identity endpoint and the vault, sharing the tokens one issues and the other
/// accepts.
pub(crate) struct StandIns {
    pub(crate) identity: Identity,
    pub(crate) key_vault: KeyVault,
    /// Owns the stand-ins' tasks; shut down on drop.
    runtime: Option<Runtime>,
}

impl StandIns {
    /// Starts both stand-ins on fresh loopback ports.
    pub(crate) fn start() -> StandIns {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stand-in")
            .enable_all()
            .build()
            .expect("the stand-ins' runtime starts");
        let grants = Grants::default();
        let identity = Identity::start(&runtime, grants.clone());
        let key_vault = KeyVault::start(&runtime, grants);
        StandIns {
            identity,
            key_vault,
            runtime: Some(runtime),
        }
    }

    /// What the handler (or any Azure SDK client) needs in its environment to use the stand-ins:
    /// `KEYVAULT_URI`, `IDENTITY_ENDPOINT`, `IDENTITY_HEADER`, `SSL_CERT_FILE`, `HTTPS_PROXY`
    /// and `NO_PROXY` (so that the identity endpoint on 127.0.0.1 is reached directly).
    pub(crate) fn environment(&self) -> Settings {
        Settings::none()
            .set("KEYVAULT_URI", self.key_vault.uri())
            .set("IDENTITY_ENDPOINT", self.identity.endpoint())
            .set("IDENTITY_HEADER", self.identity.header_secret())
            .set(
                "SSL_CERT_FILE",
                self.key_vault.ca_file().display().to_string(),
            )
            .set("HTTPS_PROXY", self.key_vault.proxy_url())
            .set("NO_PROXY", "127.0.0.1,localhost")
    }
}

impl StandIns {
    /// What the stand-ins hold that the handler must never print: every value ever stored in
    /// the vault, every access token the identity endpoint issued, and the `IDENTITY_HEADER`
    /// value.
    pub(crate) fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::default();
        for value in self.key_vault.secret_values() {
            secrets.add("vault secret value", &value);
        }
        for token in self.identity.issued_tokens() {
            secrets.add("managed-identity access token", &token);
        }
        secrets.add("IDENTITY_HEADER value", self.identity.header_secret());
        secrets
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        // `shutdown_background` rather than dropping: a runtime may not be dropped inside
        // another runtime's async context, which is where `#[tokio::test]` bodies run.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Access tokens the identity stand-in has issued, which the vault stand-in accepts until
/// they expire.
#[derive(Clone, Default)]
pub(crate) struct Grants(Arc<Mutex<HashMap<String, Grant>>>);

/// One issued access token.
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    /// The identity it was issued to.
    pub(crate) client_id: String,
    /// Unix seconds.
    pub(crate) expires_on: i64,
}

impl Grants {
    fn insert(&self, token: String, grant: Grant) {
        lock(&self.0).insert(token, grant);
    }

    /// The grant behind `token`, if it was issued and has not expired.
    fn valid(&self, token: &str) -> Option<Grant> {
        let now = i64::try_from(unix_now()).expect("the time fits in i64");
        lock(&self.0)
            .get(token)
            .filter(|grant| grant.expires_on > now)
            .cloned()
    }
}

/// Locks `mutex`, ignoring poisoning: a panicking test must not take its stand-ins down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `count` random characters from `alphabet`.
fn random_string(alphabet: &[u8], count: usize) -> String {
    (0..count)
        .map(|_| char::from(alphabet[fastrand::usize(..alphabet.len())]))
        .collect()
}

/// 32 lower-case hex digits: the shape of a Key Vault secret version.
fn random_hex32() -> String {
    random_string(b"0123456789abcdef", 32)
}

/// A random GUID in its usual text form (client ids, tenant ids, request ids).
fn random_guid() -> String {
    let hex = random_hex32();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A JSON answer.
fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .expect("a static status and header make a valid response")
}

/// The query parameters of a request, percent-decoded. The first of repeated names wins.
fn query_pairs(parts: &Parts) -> HashMap<String, String> {
    let Some(query) = parts.uri.query() else {
        return HashMap::new();
    };
    let url = azure_core::http::Url::parse(&format!("http://stand-in/?{query}"))
        .expect("any query string parses after a fixed prefix");
    let mut pairs = HashMap::new();
    for (name, value) in url.query_pairs() {
        pairs
            .entry(name.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    pairs
}

/// A header's value as text, if present and visible ASCII.
fn header(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Accepts connections on `listener` until the runtime stops, wrapping each in TLS when
/// `tls` is given, and answers each HTTP/1.1 request with `answer`. An answer of `None`
/// closes the connection without a response (a vault that drops connections).
fn serve<A, F>(listener: TcpListener, tls: Option<TlsAcceptor>, answer: A)
where
    A: Fn(Parts) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Option<Response<Body>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _peer)) = listener.accept().await else {
                // Out of descriptors, say: wait instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let answer = answer.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(stream, answer).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, answer).await;
                        }
                    }
                }
            });
        }
    });
}

async fn serve_connection<I, A, F>(io: I, answer: A)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Fn(Parts) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Option<Response<Body>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let answer = answer.clone();
        async move {
            // Every request the stand-ins take is a GET without a body.
            let (parts, _body) = request.into_parts();
            answer(parts).await.ok_or(ConnectionDropped)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Returned to hyper to make it close a connection without answering.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stand-in dropped the connection")
    }
}

impl std::error::Error for ConnectionDropped {}

/// Binds 127.0.0.1:0 for the runtime behind `runtime`.
fn bind_loopback(runtime: &Runtime) -> TcpListener {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port is available");
    listener
        .set_nonblocking(true)
        .expect("a listener can be made non-blocking");
    let _context = runtime.enter();
    TcpListener::from_std(listener).expect("tokio adopts a bound listener")
}
