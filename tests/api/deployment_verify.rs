//! `make verify` (`infra/verify.py`) against a local stand-in of the deployed topology built from
//! real proxies: Debian's nginx (unpacked into `.tools/debian/` by `infra/debian-tools.sh`, which
//! `make infra-check` runs) plays API Management and the App Service front end, the real handler
//! binary sits behind them, and the Entra ID issuer stand-in signs API Management's token.
//!
//! ```text
//! verify.py ──► gateway nginx ─────────────────► front end nginx ──────────────────► handler
//!               subscription key (401)            access restriction: only the        ALLOWED_IPS,
//!               repeated query key (400)          gateway's address 127.0.0.2 (403)   XFF_DEPTH=1,
//!               strips the key, adds the          appends peer ip:port to XFF          AUTH_* (issuer
//!               function key and the bearer       function key (empty 401)             stand-in)
//!               token, appends the caller to      merges repeated query keys as the
//!               X-Forwarded-For, connects from    Functions host does (njs)
//!               127.0.0.2 (proxy_bind)
//!           └──────────────── direct calls (verify's "function" probes) ──►┘
//! ```
//!
//! Every layer on → verify passes; each layer turned off in turn → verify exits 1 and its summary
//! names exactly the layers that are open. Two modes, as deployed: the IP layer on (classic API
//! Management tiers: access restriction + `ALLOWED_IPS`) and off (Consumption/v2 tiers: neither;
//! `ALLOWED_IPS=*`). And both signing modes: hub-policy (device and module tokens with `skn`) and
//! enrollment-group with a DPS ID scope (device-key tokens without `skn`, registration tokens, no
//! module tokens); a handler whose mode is not the one the deployment reports fails the token
//! probes. Behind an access restriction the function-key check cannot be observed from
//! outside, so it is turned off in the IP-layer-off mode, where it is the first layer a direct
//! call meets here (App Service Authentication has no stand-in: `VERIFY_APP_SERVICE_AUTH=off`).
//!
//! Callers behind the gateway (issue 22): the gateway deletes every `X-Caller-*` header a client
//! sends, and with per-caller scoping sets the one of its kind, as the policy variants do —
//! `X-Caller-Subscription` (the subscription's id, escaped as `Uri.EscapeDataString` writes it),
//! `X-Caller-Certificate-Thumbprint` (the SHA-256 of the client certificate it received over
//! TLS and checked against pinned SHA-1 thumbprints, computed in njs) or `X-Caller-Authorization`
//! (the caller's own `Authorization`, copied before the gateway's token replaces it); the
//! handler runs with `GATEWAY_CALLERS` naming the gateway's identity and that kind, and rules for
//! two callers. verify shows that a client's caller headers change nothing and that each caller
//! is refused the other's device; a gateway passing those headers through, or rules giving one
//! caller every device, fail it naming `caller headers` / `caller scoping`. The gateway's own
//! validation of a caller's token (`validate-azure-ad-token`) is not played: the handler
//! validates the forwarded token itself.
//!
//! What no probe can see (on a classic tier everything behind the access restriction's 403) verify
//! reads from the deployed configuration through Azure Resource Manager; the second test runs it
//! with a fake Azure CLI (`infra/tests/fake_az.py`) answering with the Function App's
//! configuration in ARM's shapes: every layer ends in verify's table as probed or configured, and
//! a layer switched off in that configuration fails naming it.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};

use crate::stand_ins::issuer::{Caller, Issuer, Version, entra_claims};
use crate::support::app::TestApp;
use crate::support::client_certs;
use crate::support::process::{ensure_tools, output_within};
use crate::support::settings::{HOSTNAME, KEY, POLICY, Settings};
use crate::support::side_by_side::problems_of_each;
use crate::support::tls::TestCa;

/// The topology's second hub, listed by its TLS 1.3 device host name.
const SECOND_HUB: &str = "second-hub.device.azure-devices.net";

/// The gateway's own source address towards the front end (API Management's outbound address).
const GATEWAY_ADDRESS: &str = "127.0.0.2";
/// The API's URL suffix on the gateway, and the handler's route prefix behind the front end.
const API_SUFFIX: &str = "/iothub-sas";
/// The App ID URI API Management asks its token for.
const AUDIENCE: &str = "api://iothub-sas-verify";
/// How long an nginx may take to accept connections.
const NGINX_STARTUP: Duration = Duration::from_secs(10);
/// How many ports a proxy may lose to other sockets before its start fails.
const NGINX_PORT_ATTEMPTS: usize = 5;
/// The DPS ID scope of the enrollment-group scenarios.
const ID_SCOPE: &str = "0ne00000A0A";
/// How long verify.py may take (fourteen requests on loopback).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);
/// The audience of the callers' own tokens (`AUTH_CALLER_AUDIENCE`), another app registration's.
const CALLER_AUDIENCE: &str = "api://iothub-sas-verify-callers";
/// Caller A's device (verify's `VERIFY_DEVICE_ID`, its default) and caller B's.
const DEVICE_A: &str = "verify-device";
const DEVICE_B: &str = "verify-other";
/// Caller A's subscription id as API Management stores it, as `Uri.EscapeDataString` sends it,
/// and as a `DEVICE_SCOPES` key names it (in another letter case: ids match without regard to
/// case); caller B's needs no escaping.
const SUBSCRIPTION_A: (&str, &str) = ("Backend A", "Backend%20A");
const SUBSCRIPTION_A_KEY: &str = "subscription:backend a";
const SUBSCRIPTION_B: &str = "backend-b";

/// The kind of caller fact the gateway forwards (`apimCallerKind`), and the handler's
/// `GATEWAY_CALLERS` names it for the gateway; `None`: no per-caller scoping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallerKind {
    None,
    Subscription,
    Certificate,
    Entra,
}

impl CallerKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Subscription => "subscription",
            Self::Certificate => "certificate",
            Self::Entra => "entra",
        }
    }
}

/// Which layers of the topology are on.
#[derive(Clone, Copy, Debug)]
struct Layers {
    /// API Management tier with stable outbound addresses: access restriction + ALLOWED_IPS.
    ip_layer: bool,
    subscription_key: bool,
    repeated_keys: bool,
    access_restriction: bool,
    front_end_appends_xff: bool,
    function_key: bool,
    allowed_ips: bool,
    bearer: bool,
    /// The handler's `SIGNING_MODE`.
    signing_mode: &'static str,
    /// The signing mode the deployment's outputs report to verify.
    reported_mode: &'static str,
    /// The caller fact the gateway forwards.
    caller_kind: CallerKind,
    /// The gateway deletes the `X-Caller-*` headers a client sent.
    deletes_caller_headers: bool,
    /// `DEVICE_SCOPES` gives each caller only its own device (else caller A every device).
    own_devices_only: bool,
    /// verify is given the second caller.
    second_caller_given: bool,
    /// None: verify reads no deployed configuration (every value given). Some(off): verify reads
    /// it from a fake Azure CLI (infra/tests/fake_az.py) that answers with the Function App's
    /// configuration as the template deploys it, with the layers named in `off` switched off.
    configuration: Option<&'static [&'static str]>,
}

impl Layers {
    fn all_on(ip_layer: bool) -> Layers {
        Layers {
            ip_layer,
            subscription_key: true,
            repeated_keys: true,
            access_restriction: ip_layer,
            front_end_appends_xff: true,
            function_key: true,
            allowed_ips: ip_layer,
            bearer: true,
            signing_mode: "hub-policy",
            reported_mode: "hub-policy",
            caller_kind: CallerKind::None,
            deletes_caller_headers: true,
            own_devices_only: true,
            second_caller_given: true,
            configuration: None,
        }
    }

    fn scoped(kind: CallerKind, ip_layer: bool) -> Layers {
        Layers {
            caller_kind: kind,
            ..Layers::all_on(ip_layer)
        }
    }

    fn enrollment_group(ip_layer: bool) -> Layers {
        Layers {
            signing_mode: "enrollment-group",
            reported_mode: "enrollment-group",
            ..Layers::all_on(ip_layer)
        }
    }
}

/// Debian's nginx and its njs module, unpacked by `infra/debian-tools.sh`.
struct Nginx {
    binary: PathBuf,
    njs: PathBuf,
}

impl Nginx {
    fn find() -> Nginx {
        ensure_tools();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/debian");
        let nginx = Nginx {
            binary: root.join("usr/sbin/nginx"),
            njs: root.join("usr/lib/nginx/modules/ngx_http_js_module.so"),
        };
        assert!(
            nginx.binary.is_file() && nginx.njs.is_file(),
            "Debian's nginx is not unpacked ({} or {} missing): run `make infra-check` \
             (infra/debian-tools.sh), which `make test` runs first",
            nginx.binary.display(),
            nginx.njs.display()
        );
        nginx
    }
}

/// A running nginx, killed on drop.
struct Proxy {
    address: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Proxy {
    /// Starts nginx with `config_for(port)` on a port of its own. A port chosen by binding port 0
    /// and letting go is only free for a moment: another scenario, a handler or a client socket
    /// can take it before nginx binds. So the wait is for nginx itself to hold the listening
    /// socket (a connection would also succeed against whoever took the port), and a start that
    /// lost the port is tried again on another.
    fn start(nginx: &Nginx, dir: &Path, name: &str, config_for: impl Fn(u16) -> String) -> Proxy {
        let conf = dir.join(format!("{name}.conf"));
        let log = dir.join(format!("{name}-error.log"));
        for _ in 0..NGINX_PORT_ATTEMPTS {
            let port = free_port();
            let config = config_for(port);
            fs::write(&conf, &config).expect("the temp directory is writable");
            let _ = fs::remove_file(&log);
            let child = Command::new(&nginx.binary)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", nginx.binary.display()));
            let mut proxy = Proxy {
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
                log: log.clone(),
            };
            let deadline = Instant::now() + NGINX_STARTUP;
            loop {
                if listens_on(proxy.child.id(), port) {
                    return proxy;
                }
                if proxy.errors().contains("Address already in use") {
                    break; // dropped below: killed, and tried again on another port
                }
                if let Ok(Some(status)) = proxy.child.try_wait() {
                    panic!(
                        "nginx ({name}) exited with {status}:\n{}\n--- config ---\n{config}",
                        proxy.errors()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx ({name}) did not listen on port {port} within {NGINX_STARTUP:?}:\n{}",
                    proxy.errors()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx ({name}) lost its port to another socket {NGINX_PORT_ATTEMPTS} times")
    }

    fn errors(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port`: Linux lists listening
/// TCP sockets in /proc/net/tcp (local address in hex, state `0A`, inode) and a process's open
/// sockets as /proc/PID/fd links named `socket:[INODE]`.
fn listens_on(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let listening: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() > 9 && fields[1] == local && fields[3] == "0A")
        .map(|fields| format!("socket:[{}]", fields[9]))
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .any(|target| {
            listening
                .iter()
                .any(|socket| target.as_os_str() == socket.as_str())
        })
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port is free")
        .port()
}

fn random_secret() -> String {
    (0..32)
        .map(|_| fastrand::alphanumeric())
        .collect::<String>()
}

/// Directives every config shares: one process in the foreground, everything in `dir`.
fn preamble(nginx: &Nginx, dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "load_module {njs};\n\
         master_process off;\n\
         daemon off;\n\
         pid {d}/{name}.pid;\n\
         events {{ worker_connections 256; }}\n",
        njs = nginx.njs.display()
    ) + &format!(
        "http {{\n\
         access_log {d}/{name}-access.log;\n\
         client_body_temp_path {d}/{name}-body;\n\
         proxy_temp_path {d}/{name}-proxy;\n\
         fastcgi_temp_path {d}/{name}-fastcgi;\n\
         uwsgi_temp_path {d}/{name}-uwsgi;\n\
         scgi_temp_path {d}/{name}-scgi;\n\
         js_path {d};\n"
    )
}

/// njs for both proxies: the Functions host's query rebuilding, and the gateway's URL rewrite
/// and repeated-key check (the same rule as the policy's expression in infra/policies/).
const NJS: &str = r#"
import crypto from 'crypto';
function decode(text) {
    try { return decodeURIComponent(text.replace(/\+/g, ' ')); } catch (e) { return text; }
}
function split(raw) {
    var at = raw.indexOf('?');
    return at < 0 ? [raw, ''] : [raw.slice(0, at), raw.slice(at + 1)];
}
function pairs(query) {
    return query.split('&').filter(function (p) { return p !== ''; }).map(function (p) {
        var at = p.indexOf('=');
        return { raw: p, name: decode(at < 0 ? p : p.slice(0, at)), value: decode(at < 0 ? '' : p.slice(at + 1)) };
    });
}
// The Functions host rebuilds the query from its (case-insensitive) query collection: one entry
// per key, the values of a repeated key joined with ',' (HttpRequestExtensions.ToHttpRequestMessage).
function host_uri(r) {
    var parts = split(r.variables.request_uri);
    var order = [], values = {}, names = {};
    pairs(parts[1]).forEach(function (p) {
        var key = p.name.toLowerCase();
        if (!(key in values)) { order.push(key); values[key] = []; names[key] = p.name; }
        values[key].push(p.value);
    });
    if (order.length === 0) { return parts[0]; }
    return parts[0] + '?' + order.map(function (key) {
        return encodeURIComponent(names[key]) + '=' + encodeURIComponent(values[key].join(','));
    }).join('&');
}
// API Management: the API suffix becomes the back end's /api; the subscription key and any
// caller-sent `code` are removed from the query (set-query-parameter exists-action="delete").
function gateway_uri(r) {
    var parts = split(r.variables.request_uri);
    var path = '/api' + parts[0].slice(SUFFIX.length);
    var kept = pairs(parts[1]).filter(function (p) {
        var key = p.name.toLowerCase();
        return key !== 'subscription-key' && key !== 'code';
    }).map(function (p) { return p.raw; });
    return kept.length ? path + '?' + kept.join('&') : path;
}
// The policy's condition: a query parameter name (any letter case) given more than once.
function repeated(r) {
    var seen = {};
    var found = pairs(split(r.variables.request_uri)[1]).some(function (p) {
        var key = p.name.toLowerCase();
        if (seen[key]) { return true; }
        seen[key] = true;
        return false;
    });
    return found ? '1' : '';
}
// The policy's X-Caller-Certificate-Thumbprint: SHA-256 over the client certificate's DER bytes,
// upper-case hex (BitConverter.ToString without the dashes).
function client_sha256(r) {
    var pem = r.variables.ssl_client_raw_cert;
    if (!pem) { return ''; }
    var der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    return crypto.createHash('sha256').update(der).digest('hex').toUpperCase();
}
var SUFFIX = 'SUFFIX_PLACEHOLDER';
export default { host_uri: host_uri, gateway_uri: gateway_uri, repeated: repeated, client_sha256: client_sha256 };
"#;

/// The App Service front end and the Functions host in front of the handler.
fn front_end_config(
    nginx: &Nginx,
    dir: &Path,
    port: u16,
    handler: SocketAddr,
    function_key: &str,
    layers: Layers,
) -> String {
    let mut config = preamble(nginx, dir, "front-end");
    config += "js_import topology from topology.js;\n";
    config += "js_set $host_uri topology.host_uri;\n";
    // App Service appends the TCP peer it accepted, as ip:port (docs/azure-behaviour.md §3).
    config += "map $http_x_forwarded_for $front_end_xff {\n\
                   \"\" \"$remote_addr:$remote_port\";\n\
                   default \"$http_x_forwarded_for, $remote_addr:$remote_port\";\n\
               }\n";
    // The access restriction: only API Management's outbound address.
    config += &format!(
        "map $remote_addr $restricted {{ {GATEWAY_ADDRESS} 0; default {}; }}\n",
        u8::from(layers.access_restriction)
    );
    // The Functions host reads the key from x-functions-key, else from ?code=.
    config += "map $http_x_functions_key $presented_key { \"\" $arg_code; default $http_x_functions_key; }\n";
    config += &format!(
        "map $presented_key $key_refused {{ \"{function_key}\" 0; default {}; }}\n",
        u8::from(layers.function_key)
    );
    let xff = if layers.front_end_appends_xff {
        "$front_end_xff"
    } else {
        "$http_x_forwarded_for"
    };
    config += &format!(
        "server {{\n\
           listen 127.0.0.1:{port};\n\
           location / {{\n\
             default_type text/html;\n\
             if ($restricted) {{ return 403 '<!DOCTYPE html><html><head><title>Web App - Unavailable</title></head><body><h1>Error 403 - Forbidden</h1><p>The web app you have attempted to reach has blocked your access.</p></body></html>'; }}\n\
             if ($key_refused) {{ return 401 ''; }}\n\
             proxy_pass http://{handler}$host_uri;\n\
             proxy_set_header X-Forwarded-For {xff};\n\
           }}\n\
         }}\n\
         }}\n"
    );
    config
}

/// API Management in front of the front end.
fn gateway_config(
    nginx: &Nginx,
    dir: &Path,
    port: u16,
    front_end: SocketAddr,
    keys: &Keys,
    callers: &Callers,
    layers: Layers,
) -> String {
    let mut config = preamble(nginx, dir, "gateway");
    config += "js_import topology from topology.js;\n";
    config += "js_set $gateway_uri topology.gateway_uri;\n";
    config += "js_set $repeated topology.repeated;\n";
    config += "js_set $client_sha256 topology.client_sha256;\n";
    config += "map $http_ocp_apim_subscription_key $presented_subscription { \"\" $arg_subscription_key; default $http_ocp_apim_subscription_key; }\n";
    config += &format!(
        "map $presented_subscription $subscription_refused {{ \"{}\" 0; \"{}\" 0; default {}; }}\n",
        keys.subscription,
        keys.other_subscription,
        u8::from(layers.subscription_key)
    );
    // context.Subscription.Id, escaped (the policy: Uri.EscapeDataString).
    config += &format!(
        "map $presented_subscription $caller_subscription {{ \"{}\" \"{}\"; \"{}\" \"{SUBSCRIPTION_B}\"; default \"\"; }}\n",
        keys.subscription, SUBSCRIPTION_A.1, keys.other_subscription
    );
    // validate-client-certificate: the pinned SHA-1 thumbprints.
    config += &format!(
        "map $ssl_client_fingerprint $certificate_refused {{ ~*^{}$ 0; ~*^{}$ 0; default 1; }}\n",
        callers.certificates[0].sha1, callers.certificates[1].sha1
    );
    let repeated = if layers.repeated_keys {
        "if ($repeated) { return 400 '{\"type\":\"urn:iothub-sas:problem:invalid-query\",\"title\":\"Invalid query\",\"status\":400,\"detail\":\"Each query parameter may appear only once.\"}'; }\n"
    } else {
        ""
    };
    let (listen, certificate_check) = if layers.caller_kind == CallerKind::Certificate {
        let d = dir.display();
        (
            format!(
                "listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {d}/gateway.crt;\n\
                 ssl_certificate_key {d}/gateway.key;\n\
                 ssl_verify_client optional_no_ca;\n"
            ),
            "if ($certificate_refused) { return 403 '{\"type\":\"urn:iothub-sas:problem:client-certificate-required\",\"title\":\"Client certificate required\",\"status\":403,\"detail\":\"A valid client certificate registered for this API is required.\"}'; }\n",
        )
    } else {
        (format!("listen 127.0.0.1:{port};\n"), "")
    };
    // Every X-Caller-* header a client sent is deleted (an empty value: nginx then sends none),
    // and the one of the gateway's kind set (replacing the client's, as override does).
    let caller_headers: String = [
        (
            CallerKind::Subscription,
            "X-Caller-Subscription",
            "$caller_subscription",
        ),
        (
            CallerKind::Certificate,
            "X-Caller-Certificate-Thumbprint",
            "$client_sha256",
        ),
        (
            CallerKind::Entra,
            "X-Caller-Authorization",
            "$http_authorization",
        ),
    ]
    .iter()
    .filter_map(|(kind, name, value)| {
        if layers.caller_kind == *kind {
            Some(format!("proxy_set_header {name} {value};\n"))
        } else {
            layers
                .deletes_caller_headers
                .then(|| format!("proxy_set_header {name} \"\";\n"))
        }
    })
    .collect();
    config += &format!(
        "server {{\n\
           {listen}\
           location {API_SUFFIX}/ {{\n\
             default_type application/problem+json;\n\
             if ($subscription_refused) {{ return 401 '{{\"type\":\"urn:iothub-sas:problem:subscription-required\",\"title\":\"Subscription key required\",\"status\":401,\"detail\":\"A valid API Management subscription key is required.\"}}'; }}\n\
             {repeated}\
             {certificate_check}\
             proxy_pass http://{front_end}$gateway_uri;\n\
             proxy_bind {GATEWAY_ADDRESS};\n\
             proxy_set_header Ocp-Apim-Subscription-Key \"\";\n\
             proxy_set_header X-ARR-ClientCert \"\";\n\
             {caller_headers}\
             proxy_set_header Authorization \"Bearer {token}\";\n\
             proxy_set_header x-functions-key \"{function_key}\";\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
           }}\n\
         }}\n\
         }}\n",
        function_key = keys.function,
        token = keys.gateway_token,
    );
    config
}

struct Keys {
    /// Caller A's subscription key (every probe's).
    subscription: String,
    /// Caller B's.
    other_subscription: String,
    function: String,
    /// API Management's managed-identity token for the Function App.
    gateway_token: String,
}

/// A client certificate with its key, as a caller holds it (one PEM file), and its thumbprints.
struct ClientCertificate {
    pem: String,
    sha1: String,
    sha256: String,
}

impl ClientCertificate {
    fn new(name: &str) -> ClientCertificate {
        let key = KeyPair::generate().expect("a key pair generates");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2049, 12, 31);
        let cert = params
            .self_signed(&key)
            .expect("the certificate self-signs");
        ClientCertificate {
            pem: format!("{}{}", cert.pem(), key.serialize_pem()),
            sha1: client_certs::sha1(cert.der()),
            sha256: client_certs::sha256(cert.der()),
        }
    }
}

/// Callers A and B behind the gateway: their own tokens (entra) and certificates (certificate).
struct Callers {
    tokens: [String; 2],
    identities: [Caller; 2],
    certificates: [ClientCertificate; 2],
}

impl Callers {
    fn new(issuer: &Issuer) -> Callers {
        let identities = [Caller::random(), Caller::random()];
        let tokens = identities.clone().map(|caller| {
            issuer.sign(&entra_claims(
                Version::V1,
                issuer.tenant(),
                CALLER_AUDIENCE,
                &caller,
            ))
        });
        Callers {
            tokens,
            identities,
            certificates: [
                ClientCertificate::new("verify caller A"),
                ClientCertificate::new("verify caller B"),
            ],
        }
    }

    /// `DEVICE_SCOPES` for the gateway's kind: caller A gets its device (or every device), caller
    /// B its own.
    fn scopes(&self, layers: Layers) -> String {
        let [a, b] = match layers.caller_kind {
            CallerKind::None => unreachable!("no rules without a caller fact"),
            CallerKind::Subscription => [
                SUBSCRIPTION_A_KEY.to_owned(),
                format!("subscription:{SUBSCRIPTION_B}"),
            ],
            CallerKind::Certificate => self
                .certificates
                .each_ref()
                .map(|cert| format!("fwd-cert:{}", cert.sha256)),
            CallerKind::Entra => self
                .identities
                .each_ref()
                .map(|caller| format!("caller:{}", caller.oid)),
        };
        let own = if layers.own_devices_only {
            DEVICE_A
        } else {
            "*"
        };
        // Two hubs: every pattern names its hub, here every hub.
        format!(r#"{{"{a}": ["*/{own}"], "{b}": ["*/{DEVICE_B}"]}}"#)
    }
}

/// What one run of verify.py printed, and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The layers the summary line names as open.
    fn failed_layers(&self) -> Vec<String> {
        let mut failed: Vec<String> = self
            .stdout
            .lines()
            .filter_map(|line| line.strip_prefix("verify: FAIL "))
            .filter_map(|rest| rest.split_once(':').map(|(layer, _)| layer.to_owned()))
            .collect();
        failed.sort();
        failed.dedup();
        failed
    }

    fn text(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs infra/verify.py with every value given (no `az`), bounded by VERIFY_TIMEOUT.
fn run_verify(env: &[(&str, String)]) -> Run {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("infra/verify.py");
    let mut command = Command::new("python3");
    command.arg(&script).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = output_within(&mut command, VERIFY_TIMEOUT, "verify.py");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// One topology with `layers`, and verify run against it.
fn verify_topology(nginx: &Nginx, issuer: &Issuer, apim: &Caller, layers: Layers) -> Run {
    let dir = std::env::temp_dir().join(format!(
        "deployment-verify-{}-{}",
        std::process::id(),
        random_secret()
    ));
    fs::create_dir_all(&dir).expect("the temp directory is writable");
    fs::write(
        dir.join("topology.js"),
        NJS.replace("SUFFIX_PLACEHOLDER", API_SUFFIX),
    )
    .expect("the temp directory is writable");

    let callers = Callers::new(issuer);
    let gateway_tls = TestCa::new("gateway stand-in CA");
    let server = gateway_tls.issue(&["127.0.0.1"]);
    for (name, text) in [
        ("gateway.crt", server.cert_pem().to_owned()),
        ("gateway.key", server.key_pem()),
        ("gateway-ca.pem", gateway_tls.pem()),
        ("caller-a.pem", callers.certificates[0].pem.clone()),
        ("caller-b.pem", callers.certificates[1].pem.clone()),
    ] {
        fs::write(dir.join(name), text).expect("the temp directory is writable");
    }
    let allowed = if layers.allowed_ips {
        GATEWAY_ADDRESS
    } else {
        "*"
    };
    // Two hubs, the second listed by its TLS 1.3 device host name: verify asks for each, in each
    // form it has.
    let mut settings = Settings::none()
        .set("IOTHUB_HOSTNAMES", format!("{HOSTNAME},{SECOND_HUB}"))
        .set("SIGNING_MODE", layers.signing_mode)
        .set("ALLOWED_IPS", allowed)
        .set("XFF_DEPTH", "1")
        .set("RUST_LOG", "info");
    settings = if layers.signing_mode == "enrollment-group" {
        settings
            .set("ENROLLMENT_GROUP_KEY", KEY)
            .set("DPS_ID_SCOPE", ID_SCOPE)
    } else {
        settings.set("IOTHUB_POLICY_NAME", POLICY).set(
            "IOTHUB_POLICY_KEYS",
            serde_json::json!({ HOSTNAME: KEY, SECOND_HUB: KEY }).to_string(),
        )
    };
    if layers.bearer {
        settings = settings
            .set_all(issuer.settings().iter())
            .set("AUTH_AUDIENCE", AUDIENCE)
            .set("AUTH_ALLOWED_CALLERS", &apim.oid);
    }
    // The gateway's identity forwards callers of its kind, whose rules DEVICE_SCOPES holds.
    let kind = layers.caller_kind;
    if kind != CallerKind::None {
        settings = settings.set("DEVICE_SCOPES", callers.scopes(layers)).set(
            "GATEWAY_CALLERS",
            format!(r#"{{"{}": "{}"}}"#, apim.oid, kind.as_str()),
        );
    }
    if kind == CallerKind::Entra {
        settings = settings.set("AUTH_CALLER_AUDIENCE", CALLER_AUDIENCE);
    }
    let app = TestApp::spawn(&settings);
    let keys = Keys {
        subscription: random_secret(),
        other_subscription: random_secret(),
        function: random_secret(),
        gateway_token: issuer.sign(&entra_claims(Version::V1, issuer.tenant(), AUDIENCE, apim)),
    };

    let front_end = Proxy::start(nginx, &dir, "front-end", |port| {
        front_end_config(nginx, &dir, port, app.address, &keys.function, layers)
    });
    let gateway = Proxy::start(nginx, &dir, "gateway", |port| {
        gateway_config(
            nginx,
            &dir,
            port,
            front_end.address,
            &keys,
            &callers,
            layers,
        )
    });

    let on_off = |on: bool| if on { "on" } else { "off" }.to_owned();
    let scheme = if kind == CallerKind::Certificate {
        "https"
    } else {
        "http"
    };
    let path = |name: &str| dir.join(name).display().to_string();
    let mut caller_env = vec![("VERIFY_CALLER_KIND", kind.as_str().to_owned())];
    if layers.second_caller_given {
        caller_env.push(("VERIFY_OTHER_DEVICE_ID", DEVICE_B.to_owned()));
    }
    match kind {
        CallerKind::None => {}
        CallerKind::Subscription => {
            caller_env.push((
                "VERIFY_OTHER_SUBSCRIPTION_KEY",
                keys.other_subscription.clone(),
            ));
        }
        // Both callers with caller A's subscription (verify's default): the token or the
        // certificate tells them apart.
        CallerKind::Entra => {
            caller_env.push(("VERIFY_CALLER_TOKEN", callers.tokens[0].clone()));
            if layers.second_caller_given {
                caller_env.push(("VERIFY_OTHER_CALLER_TOKEN", callers.tokens[1].clone()));
            }
        }
        CallerKind::Certificate => {
            caller_env.push(("VERIFY_CLIENT_CERT", path("caller-a.pem")));
            caller_env.push(("VERIFY_OTHER_CLIENT_CERT", path("caller-b.pem")));
            // verify trusts the gateway's certificate as a client trusts API Management's.
            caller_env.push(("SSL_CERT_FILE", path("gateway-ca.pem")));
        }
    }
    let mut env = vec![
        (
            "VERIFY_API_URL",
            format!("{scheme}://{}{API_SUFFIX}", gateway.address),
        ),
        ("VERIFY_SUBSCRIPTION_KEY", keys.subscription.clone()),
        (
            "VERIFY_FUNCTION_URL",
            format!("http://{}/api", front_end.address),
        ),
        ("VERIFY_FUNCTION_KEY", keys.function.clone()),
        ("VERIFY_IOTHUB_HOSTNAME", HOSTNAME.to_owned()),
        (
            "VERIFY_IOTHUB_HOSTNAMES",
            format!("{HOSTNAME},{SECOND_HUB}"),
        ),
        ("VERIFY_SIGNING_MODE", layers.reported_mode.to_owned()),
        ("VERIFY_POLICY_NAME", POLICY.to_owned()),
        ("VERIFY_DPS_ID_SCOPE", ID_SCOPE.to_owned()),
        // What the deployment would say: the mode, not the switched-off layer.
        ("VERIFY_IP_LAYER", on_off(layers.ip_layer)),
        ("VERIFY_APIM_ADDRESSES", GATEWAY_ADDRESS.to_owned()),
        ("VERIFY_APP_SERVICE_AUTH", "off".to_owned()),
        ("VERIFY_BEARER", "on".to_owned()),
        ("VERIFY_TIMEOUT", "10".to_owned()),
    ];
    env.extend(caller_env);
    let arm = layers
        .configuration
        .map(|off| fake_arm(&dir, apim, layers.ip_layer, off))
        .unwrap_or_default();
    env.extend(arm);
    let run = run_verify(&env);
    // Secrets must never be printed, whatever failed.
    for secret in [
        &keys.subscription,
        &keys.other_subscription,
        &keys.function,
        &keys.gateway_token,
        &callers.tokens[0],
        &callers.tokens[1],
    ] {
        assert!(
            !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
            "verify.py printed a key or token:\n{}",
            run.text()
        );
    }
    assert!(
        !run.stdout.contains("sig="),
        "verify.py printed a token signature:\n{}",
        run.text()
    );
    drop(gateway);
    drop(front_end);
    drop(app);
    let _ = fs::remove_dir_all(&dir);
    run
}

#[test]
fn verify_passes_with_every_layer_on_and_names_each_layer_turned_off() {
    let nginx = Nginx::find();
    let issuer = Issuer::start();
    let apim = Caller::random();

    let on = Layers::all_on(true);
    let off = Layers::all_on(false);
    // (scenario, layers, layers verify must name as open; empty = must pass)
    let scenarios: Vec<(&str, Layers, Vec<&str>)> = vec![
        ("IP layer on, every layer on", on, vec![]),
        (
            "gateway without the subscription-key check",
            Layers {
                subscription_key: false,
                ..on
            },
            vec!["subscription key"],
        ),
        (
            "gateway without the repeated-key check",
            Layers {
                repeated_keys: false,
                ..on
            },
            vec!["repeated query keys"],
        ),
        (
            "front end without the access restriction",
            Layers {
                access_restriction: false,
                ..on
            },
            vec!["access restriction"],
        ),
        (
            "no access restriction and ALLOWED_IPS=*",
            Layers {
                access_restriction: false,
                allowed_ips: false,
                ..on
            },
            vec!["ALLOWED_IPS", "access restriction"],
        ),
        (
            "front end not appending X-Forwarded-For",
            Layers {
                front_end_appends_xff: false,
                ..on
            },
            vec!["X-Forwarded-For"],
        ),
        ("IP layer off, every layer on", off, vec![]),
        (
            "IP layer off, host without the function-key check",
            Layers {
                function_key: false,
                ..off
            },
            vec!["function key"],
        ),
        (
            "IP layer off, handler without the bearer layer",
            Layers {
                bearer: false,
                ..off
            },
            vec!["bearer"],
        ),
        (
            "IP layer on, enrollment-group mode, every layer on",
            Layers::enrollment_group(true),
            vec![],
        ),
        (
            "IP layer off, enrollment-group mode, every layer on",
            Layers::enrollment_group(false),
            vec![],
        ),
        (
            "deployment reports enrollment-group, handler signs with a hub policy",
            Layers {
                reported_mode: "enrollment-group",
                ..on
            },
            vec!["module token", "registration token", "token"],
        ),
        (
            "deployment reports hub-policy, handler signs with a group key",
            Layers {
                reported_mode: "hub-policy",
                ..Layers::enrollment_group(true)
            },
            vec!["module token", "registration token", "token"],
        ),
        (
            "IP layer on, gateway passing a client's X-Caller-* through",
            Layers {
                deletes_caller_headers: false,
                ..on
            },
            vec!["caller headers"],
        ),
        (
            "IP layer on, subscription callers, every layer on",
            Layers::scoped(CallerKind::Subscription, true),
            vec![],
        ),
        (
            "IP layer off, entra callers, every layer on",
            Layers::scoped(CallerKind::Entra, false),
            vec![],
        ),
        (
            "IP layer on, certificate callers, every layer on",
            Layers::scoped(CallerKind::Certificate, true),
            vec![],
        ),
        (
            "IP layer off, subscription callers, gateway passing a client's X-Caller-* through",
            Layers {
                deletes_caller_headers: false,
                ..Layers::scoped(CallerKind::Subscription, false)
            },
            vec!["caller headers"],
        ),
        (
            "IP layer on, certificate callers, rules giving caller A every device",
            Layers {
                own_devices_only: false,
                ..Layers::scoped(CallerKind::Certificate, true)
            },
            vec!["caller scoping"],
        ),
        (
            "IP layer off, entra callers, verify not given a second caller",
            Layers {
                second_caller_given: false,
                ..Layers::scoped(CallerKind::Entra, false)
            },
            vec!["caller scoping"],
        ),
    ];

    let problems = problems_of_each(&scenarios, "a scenario", |(name, layers, open)| {
        let run = verify_topology(&nginx, &issuer, &apim, *layers);
        check_run(name, *layers, open, &run)
    });
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// What is wrong with `run` for a scenario whose open layers are `open`; None when right.
fn check_run(name: &str, layers: Layers, open: &[&str], run: &Run) -> Option<String> {
    let mut expected: Vec<String> = open.iter().map(|layer| (*layer).to_owned()).collect();
    expected.sort();
    let mut wrong = Vec::new();
    let wanted_code = if open.is_empty() { 0 } else { 1 };
    if run.code != Some(wanted_code) {
        wrong.push(format!("exit code {:?}, expected {wanted_code}", run.code));
    }
    if run.failed_layers() != expected {
        wrong.push(format!(
            "FAIL lines name {:?}, expected {expected:?}",
            run.failed_layers()
        ));
    }
    if !open.is_empty() {
        let summary = run
            .stdout
            .lines()
            .find(|line| line.starts_with("verify: FAILED: "))
            .unwrap_or_default();
        for layer in open {
            if !summary.contains(layer) {
                wrong.push(format!("the summary line does not name {layer}"));
            }
        }
    } else {
        // Every probe passed, and the direct calls say who refused them.
        let refusal = if layers.ip_layer {
            "refused by the front end's access restriction"
        } else {
            "refused by the handler's bearer-token layer"
        };
        if !run.stdout.contains(refusal) {
            wrong.push(format!("no PASS line says \"{refusal}\""));
        }
        let passes = run
            .stdout
            .lines()
            .filter(|line| line.starts_with("verify: PASS "))
            .count();
        // Eight layers, the caller headers, the hubs, and with a caller fact the caller scoping.
        let expected = 10 + usize::from(layers.caller_kind != CallerKind::None);
        if passes != expected {
            wrong.push(format!(
                "{passes} PASS lines, expected one per probe ({expected})"
            ));
        }
    }
    (!wrong.is_empty()).then(|| format!("{name}: {}\n{}", wrong.join("; "), run.text()))
}

/// The fake Azure CLI of infra/tests/fake_az.py in `dir`, answering for a deployment whose Function
/// App is configured as the template configures it, with the layers in `off` switched off; and
/// the environment that makes verify.py read it (a resource group, the subscription, the fake
/// first on PATH). Installed with `.venv-infra`'s Python, which has the CLI's query language.
fn fake_arm(
    dir: &Path,
    apim: &Caller,
    ip_layer: bool,
    off: &[&str],
) -> Vec<(&'static str, String)> {
    const SUBSCRIPTION: &str = "11111111-2222-3333-4444-555555555555";
    const GROUP: &str = "rg-verify";
    const APP: &str = "iothubsas-func-verify";
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-infra/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make infra-check`, which `make test` runs first",
        python.display()
    );
    let bin = dir.join("fake-az");
    let scenario = serde_json::json!({
        "state": {"outputs": {"functionAppName": APP, "apimPrincipalId": apim.oid}},
        "site": {
            "subscription": SUBSCRIPTION,
            "group": GROUP,
            "app": APP,
            "apim_principal": apim.oid,
            "apim_addresses": if ip_layer { vec![GATEWAY_ADDRESS] } else { vec![] },
            "ip_layer": ip_layer,
            "off": off,
        },
    });
    let status = Command::new(&python)
        .arg(root.join("infra/tests/fake_az.py"))
        .arg("install")
        .arg(&bin)
        .arg(scenario.to_string())
        .status()
        .expect("the fake Azure CLI installs");
    assert!(status.success(), "infra/tests/fake_az.py install failed");
    let path = std::env::var("PATH").unwrap_or_default();
    vec![
        ("PATH", format!("{}:{path}", bin.display())),
        ("RESOURCE_GROUP", GROUP.to_owned()),
        ("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION.to_owned()),
    ]
}

/// What is wrong with `run`'s closing table for a scenario whose failed layers are `failed`,
/// where `hidden` are the layers a classic tier's 403 hides from the probes; None when right.
fn check_layer_table(
    name: &str,
    layers: Layers,
    failed: &[&str],
    hidden: &[&str],
    run: &Run,
) -> Option<String> {
    let table = layer_table(run);
    let mut wrong = Vec::new();
    let mut expected: Vec<String> = failed.iter().map(|l| (*l).to_owned()).collect();
    expected.sort();
    if run.failed_layers() != expected {
        wrong.push(format!(
            "FAIL lines name {:?}, expected {expected:?}",
            run.failed_layers()
        ));
    }
    if run.code != Some(if failed.is_empty() { 0 } else { 1 }) {
        wrong.push(format!("exit code {:?}", run.code));
    }
    if table.len() != 9 {
        wrong.push(format!("{} table rows, expected 9", table.len()));
    }
    for (layer, (shown, result)) in &table {
        let off_by_design =
            !layers.ip_layer && (layer == "access restriction" || layer == "ALLOWED_IPS");
        let want = if failed.contains(&layer.as_str()) {
            "FAIL"
        } else if off_by_design {
            "off (the tier has no stable outbound address)"
        } else {
            "PASS"
        };
        if result != want {
            wrong.push(format!("{layer}: {result}, expected {want}"));
        }
        if !off_by_design
            && !["probed", "configured", "probed + configured"].contains(&shown.as_str())
        {
            wrong.push(format!(
                "{layer} shown by {shown:?}: neither probed nor configured"
            ));
        }
        // On a classic tier the access restriction's 403 hides every layer behind it.
        if layers.ip_layer && hidden.contains(&layer.as_str()) && shown != "configured" {
            wrong.push(format!(
                "{layer} shown by {shown:?}, expected configured (hidden behind the 403)"
            ));
        }
    }
    (!wrong.is_empty()).then(|| format!("{name}: {}\n{}", wrong.join("; "), run.text()))
}

/// The table verify.py ends with: layer -> (shown by, result).
fn layer_table(run: &Run) -> std::collections::BTreeMap<String, (String, String)> {
    run.stdout
        .lines()
        .filter_map(|line| line.strip_prefix("verify: | "))
        .skip(1)
        .map(|row| {
            let cell = |from: usize, to: usize| {
                row.get(from..to.min(row.len()))
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            };
            (cell(0, 27), (cell(28, 49), cell(50, row.len())))
        })
        .collect()
}

#[test]
fn verify_reads_the_configuration_it_cannot_probe_and_names_a_layer_switched_off_there() {
    let nginx = Nginx::find();
    let issuer = Issuer::start();
    let apim = Caller::random();
    let classic = Layers {
        configuration: Some(&[]),
        ..Layers::all_on(true)
    };
    let consumption = Layers {
        configuration: Some(&[]),
        ..Layers::all_on(false)
    };
    // (scenario, layers, layers verify must name as failed, expected "shown by" per layer)
    let hidden = [
        "App Service Authentication",
        "function key",
        "ALLOWED_IPS",
        "bearer",
    ];
    let scenarios: Vec<(&str, Layers, Vec<&str>)> = vec![
        ("classic tier, configuration read", classic, vec![]),
        ("consumption tier, configuration read", consumption, vec![]),
        (
            "classic tier, App Service Authentication off in the configuration",
            Layers {
                configuration: Some(&["App Service Authentication"]),
                ..classic
            },
            vec!["App Service Authentication"],
        ),
        (
            "classic tier, the bearer layer's AUTH_ALLOWED_CALLERS missing in the configuration",
            Layers {
                configuration: Some(&["bearer"]),
                ..classic
            },
            vec!["bearer"],
        ),
        (
            "consumption tier, an anonymous function in the configuration",
            Layers {
                configuration: Some(&["function key"]),
                ..consumption
            },
            vec!["function key"],
        ),
    ];
    let problems = problems_of_each(&scenarios, "a scenario", |(name, layers, failed)| {
        let run = verify_topology(&nginx, &issuer, &apim, *layers);
        check_layer_table(name, *layers, failed, &hidden, &run)
    });
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
