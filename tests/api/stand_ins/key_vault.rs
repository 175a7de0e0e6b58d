//! The Key Vault secrets API (docs/azure-behaviour.md §7), over HTTPS, reached through an HTTP
//! `CONNECT` proxy so that clients address it by a `*.vault.azure.net` name.
//!
//! **Wire protocol.** `GET /secrets/{name}/[{version}]?api-version=…` (the SDK asks for the latest
//! version with a trailing slash; without one is accepted too):
//! - no `Authorization` → `401` with `WWW-Authenticate: Bearer
//!   authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`
//!   (the challenge the SDK waits for before it asks for a token);
//! - `Authorization: Bearer <t>` where `t` was not issued by the identity stand-in, or has
//!   expired → `401` with the same challenge;
//! - no `api-version` → `400 BadParameter`;
//! - a caller whose access was removed ([`KeyVault::revoke_access`]) → `403
//!   {"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on
//!   resource.\r\n…","innererror":{"code":"ForbiddenByRbac"}}}`, whether or not the secret exists
//!   (Key Vault checks the role assignment before it looks the secret up);
//! - an unknown secret or version, or a deleted one → `404
//!   {"error":{"code":"SecretNotFound","message":…}}`;
//! - a disabled version ([`KeyVault::disable_secret`]) → `403
//!   {"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled
//!   secret.","innererror":{"code":"SecretDisabled"}}}`;
//! - otherwise `200 {"value","id":"https://<host>/secrets/<name>/<32 hex>","attributes":{…}}`.
//!
//! Every answer carries the headers Key Vault sets (`x-ms-request-id`, `x-ms-keyvault-region`,
//! `x-ms-keyvault-service-version`, `cache-control: no-cache`, …) and, like Key Vault, no
//! `x-ms-error-code`: a client reads the error code from the body. The 403 and 404 bodies are
//! byte for byte those of Key Vault's recorded answers (the Azure SDK for JavaScript's test
//! recordings `cant_get_a_disabled_secret`; issue reports of `ForbiddenByRbac`;
//! docs/azure-behaviour.md §7 and §10).
//!
//! **The proxy** accepts exactly `CONNECT <this vault's host>:443`, answers anything else with
//! `403` and tunnels to the TLS listener on 127.0.0.1; it never opens any other connection.
//!
//! **Controls** for tests: store or rotate a secret (each value is a new version); what an
//! operator does to stop a reader — disable the secret, delete it (soft delete: it can be
//! recovered), remove an identity's access — and undo it; take the vault down (503s, 429s or
//! dropped connections) and back up; slow every answer down; and a log of every request with how
//! it was authorized, answered and when.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use super::{
    Grants, bind_loopback, header, json, lock, query_pairs, random_guid, random_hex32,
    random_string, serve,
};
use crate::support::clock::unix_now;
use crate::support::tls::TestCa;

/// The API version the SDK (`azure_security_keyvault_secrets` 1.0.1) asks for.
pub(crate) const SDK_API_VERSION: &str = "2025-07-01";
/// The resource a Key Vault challenge names; tokens must be for it.
const RESOURCE: &str = "https://vault.azure.net";
/// Longest `CONNECT` request head the proxy reads.
const MAX_CONNECT_HEAD: usize = 8 * 1024;
/// The region a vault stand-in says it is in (`x-ms-keyvault-region`, the RBAC message).
const REGION: &str = "westeurope";

/// How a vault that is down behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outage {
    /// Every request is answered `503 ServiceUnavailable`.
    ServiceUnavailable,
    /// Every request's connection is closed without an answer.
    DropConnections,
    /// Every request is answered `429 Throttled`, as when the vault's shared quota is used up.
    Throttled,
}

/// How a request was authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    /// No `Authorization` header.
    None,
    /// A bearer token the identity stand-in issued, still valid; for this identity (client id).
    Valid(String),
    /// An `Authorization` header with anything else.
    Rejected,
}

/// One request to the vault, as received.
#[derive(Clone, Debug)]
pub(crate) struct VaultRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) api_version: Option<String>,
    /// The `Host` header.
    pub(crate) host: Option<String>,
    pub(crate) auth: Auth,
    /// The status it was answered with; `None` when the connection was dropped.
    pub(crate) status: Option<u16>,
    /// When it was answered (or dropped).
    pub(crate) at: Instant,
}

/// One version of a secret.
#[derive(Clone, Debug)]
struct Version {
    id: String,
    value: String,
    created: u64,
    /// `attributes.enabled`: a disabled version is refused with 403 `SecretDisabled`.
    enabled: bool,
}

/// Handle on a running Key Vault stand-in.
pub(crate) struct KeyVault {
    state: Arc<State>,
    proxy_address: SocketAddr,
    tls_address: SocketAddr,
    ca_file: PathBuf,
    ca_pem: String,
}

struct State {
    /// `kv-….vault.azure.net`.
    host: String,
    tenant: String,
    /// The subscription the vault is in (named in RBAC refusals).
    subscription: String,
    /// Versions of each secret, oldest first.
    secrets: Mutex<HashMap<String, Vec<Version>>>,
    /// Deleted secrets, recoverable (soft delete).
    deleted: Mutex<HashMap<String, Vec<Version>>>,
    /// Identities (client ids) whose access to the vault was removed.
    revoked: Mutex<HashSet<String>>,
    grants: Grants,
    outage: Mutex<Option<Outage>>,
    delay_ms: AtomicU64,
    requests: Mutex<Vec<VaultRequest>>,
    /// Tunnels opened by the proxy.
    tunnels: AtomicUsize,
    /// What refused `CONNECT`s (or other requests) asked for: their request line.
    refused: Mutex<Vec<String>>,
}

impl KeyVault {
    pub(super) fn start(runtime: &Runtime, grants: Grants) -> KeyVault {
        let name = format!(
            "kv-{}",
            random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 10)
        );
        let host = format!("{name}.vault.azure.net");
        let ca = TestCa::new("Key Vault stand-in test CA");
        let acceptor = ca.issue(&[&host]).acceptor();
        let ca_pem = ca.pem();
        let ca_file =
            std::env::temp_dir().join(format!("stand-in-ca-{}-{name}.pem", std::process::id()));
        std::fs::write(&ca_file, &ca_pem).expect("the temp directory is writable");

        let state = Arc::new(State {
            host,
            tenant: random_guid(),
            subscription: random_guid(),
            secrets: Mutex::new(HashMap::new()),
            deleted: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashSet::new()),
            grants,
            outage: Mutex::new(None),
            delay_ms: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            tunnels: AtomicUsize::new(0),
            refused: Mutex::new(Vec::new()),
        });

        let tls_listener = bind_loopback(runtime);
        let proxy_listener = bind_loopback(runtime);
        let tls_address = tls_listener
            .local_addr()
            .expect("a bound listener has an address");
        let proxy_address = proxy_listener
            .local_addr()
            .expect("a bound listener has an address");

        let _context = runtime.enter();
        let shared = Arc::clone(&state);
        serve(tls_listener, Some(acceptor), move |parts| {
            let state = Arc::clone(&shared);
            async move { state.answer(&parts).await }
        });
        tokio::spawn(run_proxy(proxy_listener, Arc::clone(&state), tls_address));

        KeyVault {
            state,
            proxy_address,
            tls_address,
            ca_file,
            ca_pem,
        }
    }

    /// `KEYVAULT_URI`: `https://kv-….vault.azure.net/`.
    pub(crate) fn uri(&self) -> String {
        format!("https://{}/", self.state.host)
    }

    /// The vault's host name, `kv-….vault.azure.net`.
    pub(crate) fn host(&self) -> &str {
        &self.state.host
    }

    /// `HTTPS_PROXY`: `http://127.0.0.1:PORT`.
    pub(crate) fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_address)
    }

    /// The proxy's address.
    pub(crate) fn proxy_address(&self) -> SocketAddr {
        self.proxy_address
    }

    /// The TLS listener the proxy tunnels to.
    pub(crate) fn tls_address(&self) -> SocketAddr {
        self.tls_address
    }

    /// `SSL_CERT_FILE`: the PEM of the CA that issued the vault's certificate.
    pub(crate) fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The same CA, as PEM text.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The tenant the challenge names.
    pub(crate) fn tenant(&self) -> &str {
        &self.state.tenant
    }

    /// Stores `value` as the newest version of `secret`; returns the version id.
    pub(crate) fn set_secret(&self, secret: &str, value: &str) -> String {
        let version = Version {
            id: random_hex32(),
            value: value.to_owned(),
            created: unix_now(),
            enabled: true,
        };
        let id = version.id.clone();
        lock(&self.state.secrets)
            .entry(secret.to_owned())
            .or_default()
            .push(version);
        id
    }

    /// Every value of every version of every secret ever stored, deleted ones too (for "never
    /// printed" checks).
    pub(crate) fn secret_values(&self) -> Vec<String> {
        let stored = lock(&self.state.secrets)
            .values()
            .flatten()
            .cloned()
            .collect::<Vec<_>>();
        let deleted = lock(&self.state.deleted)
            .values()
            .flatten()
            .cloned()
            .collect::<Vec<_>>();
        stored
            .into_iter()
            .chain(deleted)
            .map(|version| version.value)
            .collect()
    }

    /// Deletes `secret` (every version), as `az keyvault secret delete` does: reads get 404
    /// until it is recovered ([`KeyVault::recover_secret`]).
    pub(crate) fn delete_secret(&self, secret: &str) {
        if let Some(versions) = lock(&self.state.secrets).remove(secret) {
            lock(&self.state.deleted).insert(secret.to_owned(), versions);
        }
    }

    /// Recovers a deleted `secret` with all its versions (`az keyvault secret recover`).
    pub(crate) fn recover_secret(&self, secret: &str) {
        let versions = lock(&self.state.deleted)
            .remove(secret)
            .unwrap_or_else(|| panic!("the stand-in holds no deleted secret `{secret}`"));
        lock(&self.state.secrets).insert(secret.to_owned(), versions);
    }

    /// Disables the newest version of `secret` (`az keyvault secret set-attributes --enabled
    /// false`): reading it gets 403 `SecretDisabled`.
    pub(crate) fn disable_secret(&self, secret: &str) {
        self.set_enabled(secret, false);
    }

    /// Enables the newest version of `secret` again.
    pub(crate) fn enable_secret(&self, secret: &str) {
        self.set_enabled(secret, true);
    }

    fn set_enabled(&self, secret: &str, enabled: bool) {
        lock(&self.state.secrets)
            .get_mut(secret)
            .and_then(|versions| versions.last_mut())
            .unwrap_or_else(|| panic!("the stand-in holds no secret `{secret}`"))
            .enabled = enabled;
    }

    /// Removes the access of the identity `client_id` (its role assignment deleted): its reads
    /// get 403 `ForbiddenByRbac`, with a token that is still valid.
    pub(crate) fn revoke_access(&self, client_id: &str) {
        lock(&self.state.revoked).insert(client_id.to_owned());
    }

    /// Gives the identity `client_id` its access back.
    pub(crate) fn restore_access(&self, client_id: &str) {
        lock(&self.state.revoked).remove(client_id);
    }

    /// From now on, every request fails as `outage` says.
    pub(crate) fn go_down(&self, outage: Outage) {
        *lock(&self.state.outage) = Some(outage);
    }

    /// Ends an outage.
    pub(crate) fn come_back(&self) {
        *lock(&self.state.outage) = None;
    }

    /// Every answer waits `delay` first.
    pub(crate) fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).expect("a test delay fits in u64 ms");
        self.state.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Every request so far, in order.
    pub(crate) fn requests(&self) -> Vec<VaultRequest> {
        lock(&self.state.requests).clone()
    }

    /// Secret reads answered 200: the reads that count against the vault's quota.
    pub(crate) fn authorized_reads(&self) -> usize {
        self.count(|r| r.status == Some(200))
    }

    /// Requests without a token, answered with the 401 challenge.
    pub(crate) fn challenges(&self) -> usize {
        self.count(|r| r.auth == Auth::None && r.status == Some(401))
    }

    /// Requests whose token was refused.
    pub(crate) fn rejected_tokens(&self) -> usize {
        self.count(|r| r.auth == Auth::Rejected)
    }

    /// Requests that met an outage (503, 429 or a dropped connection).
    pub(crate) fn failed_by_outage(&self) -> usize {
        self.count(|r| matches!(r.status, None | Some(503 | 429)))
    }

    /// Requests answered with `status`.
    pub(crate) fn answered_with(&self, status: u16) -> usize {
        self.count(|r| r.status == Some(status))
    }

    /// When the last secret read answered 200 was answered.
    pub(crate) fn last_authorized_read(&self) -> Option<Instant> {
        lock(&self.state.requests)
            .iter()
            .rev()
            .find(|r| r.status == Some(200))
            .map(|r| r.at)
    }

    /// Tunnels the proxy has opened.
    pub(crate) fn tunnels(&self) -> usize {
        self.state.tunnels.load(Ordering::SeqCst)
    }

    /// Request lines the proxy refused.
    pub(crate) fn refused(&self) -> Vec<String> {
        lock(&self.state.refused).clone()
    }

    fn count(&self, predicate: impl Fn(&VaultRequest) -> bool) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| predicate(r))
            .count()
    }
}

impl Drop for KeyVault {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

impl State {
    async fn answer(&self, parts: &Parts) -> Option<Response<Body>> {
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let auth = match header(parts, "authorization") {
            None => Auth::None,
            Some(value) => value
                .strip_prefix("Bearer ")
                .and_then(|token| self.grants.valid(token))
                .map_or(Auth::Rejected, |grant| Auth::Valid(grant.client_id)),
        };
        let mut request = VaultRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            api_version: query_pairs(parts).get("api-version").cloned(),
            host: header(parts, "host"),
            auth,
            status: None,
            at: Instant::now(),
        };
        let outage = *lock(&self.outage);
        let response = match outage {
            Some(Outage::DropConnections) => None,
            Some(Outage::ServiceUnavailable) => Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            )),
            Some(Outage::Throttled) => Some(error(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: \
                 VaultRequestTypeLimitReached",
            )),
            None => Some(self.decide(&request)),
        };
        request.status = response.as_ref().map(|r| r.status().as_u16());
        request.at = Instant::now();
        lock(&self.requests).push(request);
        response
    }

    fn decide(&self, request: &VaultRequest) -> Response<Body> {
        let Some(rest) = request.path.strip_prefix("/secrets/") else {
            return error(StatusCode::NOT_FOUND, "NotFound", "The route is not known.");
        };
        let mut segments = rest.split('/');
        let name = segments.next().unwrap_or_default();
        let version = segments.next().filter(|v| !v.is_empty());
        if name.is_empty() || segments.next().is_some() {
            return error(StatusCode::NOT_FOUND, "NotFound", "The route is not known.");
        }
        if request.method != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "Only GET is served by this stand-in.",
            );
        }
        let client_id = match &request.auth {
            Auth::None => {
                return self.challenge("AKV10000: Request is missing a Bearer or PoP token.");
            }
            Auth::Rejected => {
                return self.challenge("AKV10022: Invalid audience or unknown token.");
            }
            Auth::Valid(client_id) => client_id,
        };
        if request.api_version.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The request URI must contain the api-version query parameter.",
            );
        }
        if lock(&self.revoked).contains(client_id) {
            return self.forbidden_by_rbac(client_id, name);
        }
        let secrets = lock(&self.secrets);
        let found = secrets.get(name).and_then(|versions| match version {
            None => versions.last(),
            Some(version) => versions.iter().find(|v| v.id == version),
        });
        let Some(found) = found else {
            return error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!(
                    "A secret with (name/id) {name} was not found in this key vault. If you \
                     recently deleted this secret you may be able to recover it using the \
                     correct recovery command. For help resolving this issue, please see \
                     https://go.microsoft.com/fwlink/?linkid=2125182"
                ),
            );
        };
        if !found.enabled {
            return error_with_inner(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                "SecretDisabled",
            );
        }
        with_key_vault_headers(json(
            StatusCode::OK,
            &json!({
                "value": found.value,
                "id": format!("https://{}/secrets/{name}/{}", self.host, found.id),
                "attributes": {
                    "enabled": true,
                    "created": found.created,
                    "updated": found.created,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {},
            }),
        ))
    }

    /// The `403` Key Vault (RBAC mode) answers an identity without a role that allows the read:
    /// its message names the caller, the action and the secret.
    fn forbidden_by_rbac(&self, client_id: &str, secret: &str) -> Response<Body> {
        let vault = self.host.split('.').next().unwrap_or_default();
        let message = format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny \
             assignments or role definitions were changed recently, please observe propagation \
             time.\r\nCaller: appid={client_id};iss=https://sts.windows.net/{tenant}/\r\nAction: \
             'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: \
             '/subscriptions/{subscription}/resourcegroups/rg-stand-in/providers/microsoft.keyvault/vaults/{vault}/secrets/{secret}'\r\n\
             Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: \
             'DeniedWithNoValidRBAC' \r\nVault: {vault};location={REGION}\r\n",
            tenant = self.tenant,
            subscription = self.subscription,
        );
        error_with_inner(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &message,
            "ForbiddenByRbac",
        )
    }

    /// `401` with the challenge that tells a client which resource to get a token for.
    fn challenge(&self, message: &str) -> Response<Body> {
        let mut response = error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
        let challenge = format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"{RESOURCE}\"",
            self.tenant
        );
        response.headers_mut().insert(
            "www-authenticate",
            challenge
                .parse()
                .expect("the challenge is a valid header value"),
        );
        response
    }
}

/// `{"error":{"code","message"}}`, with the headers Key Vault sets on every answer.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    error_answer(status, code, message, None)
}

/// `{"error":{"code","message","innererror":{"code"}}}`: how Key Vault tells its 403s apart.
fn error_with_inner(status: StatusCode, code: &str, message: &str, inner: &str) -> Response<Body> {
    error_answer(status, code, message, Some(inner))
}

/// An error answer whose body has its members in Key Vault's order (`code`, `message`,
/// `innererror`; `json!` would sort them), with the headers Key Vault sets on every answer.
fn error_answer(
    status: StatusCode,
    code: &str,
    message: &str,
    inner: Option<&str>,
) -> Response<Body> {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let inner = inner
        .map(|inner| format!(r#","innererror":{{"code":{}}}"#, quoted(inner)))
        .unwrap_or_default();
    let body = format!(
        r#"{{"error":{{"code":{},"message":{}{inner}}}}}"#,
        quoted(code),
        quoted(message)
    );
    with_key_vault_headers(
        Response::builder()
            .status(status)
            .header("content-type", "application/json; charset=utf-8")
            .body(Body::from(body))
            .expect("a static status and header make a valid response"),
    )
}

/// `response` with the headers Key Vault sets on every answer, as recorded from the service.
/// There is no `x-ms-error-code` among them: clients take the code from the body.
fn with_key_vault_headers(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-cache".to_owned()),
        ("pragma", "no-cache".to_owned()),
        ("expires", "-1".to_owned()),
        ("x-ms-keyvault-region", REGION.to_owned()),
        ("x-ms-request-id", random_guid()),
        ("x-ms-keyvault-service-version", "1.9.3019.1".to_owned()),
        (
            "x-ms-keyvault-network-info",
            "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;".to_owned(),
        ),
        ("x-content-type-options", "nosniff".to_owned()),
        (
            "strict-transport-security",
            "max-age=31536000;includeSubDomains".to_owned(),
        ),
    ] {
        headers.insert(
            name,
            value
                .parse()
                .expect("Key Vault's header values are valid header values"),
        );
    }
    response
}

/// Accepts proxy clients until the runtime stops.
async fn run_proxy(listener: TcpListener, state: Arc<State>, tls_address: SocketAddr) {
    loop {
        let Ok((client, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(tunnel(client, Arc::clone(&state), tls_address));
    }
}

/// Reads one `CONNECT` request; if it names this vault on port 443, answers `200` and relays
/// bytes to the TLS listener until either side closes; otherwise answers `403`.
async fn tunnel(mut client: TcpStream, state: Arc<State>, tls_address: SocketAddr) {
    let mut head = Vec::new();
    let mut chunk = [0_u8; 1024];
    let end = loop {
        if let Some(end) = find_head_end(&head) {
            break end;
        }
        if head.len() > MAX_CONNECT_HEAD {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let request_line = text.lines().next().unwrap_or_default().to_owned();
    let expected = format!("{}:443", state.host);
    let mut words = request_line.split(' ');
    let allowed = words.next() == Some("CONNECT")
        && words.next() == Some(expected.as_str())
        && words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    if !allowed {
        lock(&state.refused).push(request_line);
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    // The only connection the proxy ever opens: to its own listener on 127.0.0.1.
    let Ok(mut upstream) = TcpStream::connect(tls_address).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    state.tunnels.fetch_add(1, Ordering::SeqCst);
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    // Bytes the client sent after the request head belong to the tunnel.
    if upstream.write_all(&head[end..]).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// The index just past the blank line that ends an HTTP request head.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}
