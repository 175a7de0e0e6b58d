//! An Entra ID stand-in for the bearer-token tests: [`Issuer`] runs
//! `tests/oracles/node/entra_issuer.mjs`, a small driver around the `oauth2-mock-server` npm
//! package (installed by `make oracles`), as a child process. Independence is the point: the
//! keys are generated, published (OpenID metadata + JWKS) and used for signing by a third-party
//! issuer built on `jose`, not by anything this project (or the handler's JWT crate) wrote.
//!
//! **Wire.** HTTPS on `127.0.0.1:<port picked by the system>`; the certificate is issued for
//! `127.0.0.1` and `localhost` by a CA generated per stand-in, which the handler trusts through
//! `SSL_CERT_FILE` ([`Issuer::settings`]). The handler is given
//! `AUTH_OPENID_CONFIG_URL=https://127.0.0.1:<port>/.well-known/openid-configuration`, reads its
//! `jwks_uri` (`https://127.0.0.1:<port>/jwks`) and fetches the key set from there.
//!
//! **Tokens.** [`entra_claims`] writes the claims Entra puts in a managed identity's access token
//! (platform-facts §4, v1 and v2 shapes); the mock's issuer signs them (RS256, header `kid` = the
//! current key) after the driver applies them through the mock's token-transform hook. Tests
//! change or delete single claims or header members to make invalid tokens, sign with a key that
//! was never published, or have the driver forge `alg: none` and HS256-with-the-public-key tokens.
//!
//! **Controls.** Key rollover (a new key is published and signs from then on; old keys stay
//! published), withdrawing a key from the published set, Entra's JWKS shape (no `alg`), a `jwks_uri` override, an outage (503 for
//! everything), and a count of requests per path.
//!
//! The stand-in talks to its driver over stdin/stdout, one JSON line each way, and kills it on
//! drop. Each test starts its own, so tests run in parallel.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{lock, random_guid, random_string};
use crate::support::clock::unix_now;
use crate::support::settings::Settings;
use crate::support::tls::TestCa;

/// How long the driver may take to start (node, two RSA keys) and to answer one command.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(20);

/// The two token versions Entra issues (platform-facts §4, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// `ver` "1.0", `iss` `https://sts.windows.net/<tid>/`, caller in `appid`: what API
    /// Management's managed identity gets for a resource app with the default manifest.
    V1,
    /// `ver` "2.0", `iss` `https://login.microsoftonline.com/<tid>/v2.0`, caller in `azp`.
    V2,
}

/// A managed identity calling the handler (API Management's, or a stranger's).
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// Client (application) id: `appid` in v1 tokens, `azp` in v2.
    pub(crate) client_id: String,
    /// Object (principal) id: `oid` and `sub`.
    pub(crate) oid: String,
}

impl Caller {
    /// A caller with fresh random ids.
    pub(crate) fn random() -> Caller {
        Caller {
            client_id: random_guid(),
            oid: random_guid(),
        }
    }
}

/// `https://sts.windows.net/<tenant>/`: the `iss` of v1 tokens.
pub(crate) fn v1_issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

/// `https://login.microsoftonline.com/<tenant>/v2.0`: the `iss` of v2 tokens.
pub(crate) fn v2_issuer(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/v2.0")
}

/// The claims of an access token Entra issues to `caller`'s managed identity for `audience`,
/// valid from five minutes ago (Entra backdates `nbf`) for an hour, without `roles`.
pub(crate) fn entra_claims(
    version: Version,
    tenant: &str,
    audience: &str,
    caller: &Caller,
) -> Map<String, Value> {
    let now = unix_now();
    let mut claims = json!({
        "aud": audience,
        "iat": now - 300,
        "nbf": now - 300,
        "exp": now + 3600,
        "aio": random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 48),
        "idtyp": "app",
        "oid": caller.oid,
        "rh": "0.AAAA-stand-in.",
        "sub": caller.oid,
        "tid": tenant,
        "uti": random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 22),
        "xms_mirid": format!(
            "/subscriptions/{}/resourcegroups/rg-apim/providers/Microsoft.ApiManagement/service/apim-stand-in",
            random_guid()
        ),
    });
    let object = claims
        .as_object_mut()
        .expect("a JSON object literal is an object");
    match version {
        Version::V1 => {
            object.insert("ver".into(), json!("1.0"));
            object.insert("iss".into(), json!(v1_issuer(tenant)));
            object.insert("idp".into(), json!(v1_issuer(tenant)));
            object.insert("appid".into(), json!(caller.client_id));
            object.insert("appidacr".into(), json!("2"));
        }
        Version::V2 => {
            object.insert("ver".into(), json!("2.0"));
            object.insert("iss".into(), json!(v2_issuer(tenant)));
            object.insert("azp".into(), json!(caller.client_id));
            object.insert("azpacr".into(), json!("2"));
        }
    }
    claims.as_object().expect("still an object").clone()
}

/// Which key signs a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signer {
    /// The issuer's current key, published in its JWKS.
    Published,
    /// A key of the same kind that the issuer never publishes.
    Unpublished,
}

/// Tokens the driver forges with `node:crypto` instead of signing them with an RSA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forgery {
    /// `alg: none` with an empty signature.
    AlgNone,
    /// HS256 keyed with the current public key as SPKI PEM text.
    Hs256SpkiPem,
    /// HS256 keyed with the current public key as PKCS#1 PEM text.
    Hs256Pkcs1Pem,
    /// HS256 keyed with the current public key as SPKI DER bytes.
    Hs256SpkiDer,
    /// HS256 keyed with the current public key's JWK as JSON text.
    Hs256Jwk,
}

impl Forgery {
    /// Every forgery.
    pub(crate) const ALL: [Forgery; 5] = [
        Forgery::AlgNone,
        Forgery::Hs256SpkiPem,
        Forgery::Hs256Pkcs1Pem,
        Forgery::Hs256SpkiDer,
        Forgery::Hs256Jwk,
    ];

    fn kind(self) -> &'static str {
        match self {
            Forgery::AlgNone => "none",
            Forgery::Hs256SpkiPem => "hs256-spki-pem",
            Forgery::Hs256Pkcs1Pem => "hs256-pkcs1-pem",
            Forgery::Hs256SpkiDer => "hs256-spki-der",
            Forgery::Hs256Jwk => "hs256-jwk",
        }
    }
}

/// Handle on a running issuer stand-in.
pub(crate) struct Issuer {
    tenant: String,
    base_url: String,
    metadata_url: String,
    /// The key that signs now.
    kid: Mutex<String>,
    dir: PathBuf,
    ca_file: PathBuf,
    ca_pem: String,
    child: Child,
    /// Commands go in one at a time: the lock covers a write and the read of its answer.
    channel: Mutex<(ChildStdin, mpsc::Receiver<String>)>,
}

/// The path of the driver script and its `node_modules`.
fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracles/node")
}

impl Issuer {
    /// Starts the driver with a fresh tenant id, TLS certificate and signing key.
    pub(crate) fn start() -> Issuer {
        let dir = driver_dir();
        let package = dir.join("node_modules/oauth2-mock-server/package.json");
        assert!(
            package.exists(),
            "the issuer stand-in needs oauth2-mock-server ({} is missing): run `make oracles`",
            package.display()
        );
        let files = std::env::temp_dir().join(format!(
            "entra-issuer-{}-{}",
            std::process::id(),
            random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 10)
        ));
        std::fs::create_dir_all(&files).expect("the temp directory is writable");
        let ca = TestCa::new("Entra issuer stand-in test CA");
        let server = ca.issue(&["127.0.0.1", "localhost"]);
        let ca_pem = ca.pem();
        let ca_file = files.join("ca.pem");
        let key_file = files.join("key.pem");
        let cert_file = files.join("cert.pem");
        for (path, text) in [
            (&ca_file, ca_pem.as_str()),
            (&key_file, server.key_pem().as_str()),
            (&cert_file, server.cert_pem()),
        ] {
            std::fs::write(path, text).expect("the temp directory is writable");
        }

        let mut child = Command::new("node")
            .arg(dir.join("entra_issuer.mjs"))
            .arg("--tls-key")
            .arg(&key_file)
            .arg("--tls-cert")
            .arg(&cert_file)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node for the issuer stand-in: {e}"));
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = receive(&rx, "its ready line");
        let text = |name: &str| {
            ready[name]
                .as_str()
                .unwrap_or_else(|| panic!("the ready line lacks `{name}`: {ready}"))
                .to_owned()
        };
        Issuer {
            tenant: random_guid(),
            base_url: text("base_url"),
            metadata_url: text("metadata_url"),
            kid: Mutex::new(text("kid")),
            dir: files,
            ca_file,
            ca_pem,
            child,
            channel: Mutex::new((stdin, rx)),
        }
    }

    /// The tenant id this issuer's tokens are for (`AUTH_TENANT_ID`).
    pub(crate) fn tenant(&self) -> &str {
        &self.tenant
    }

    /// `https://127.0.0.1:PORT`.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `AUTH_OPENID_CONFIG_URL`: `https://127.0.0.1:PORT/.well-known/openid-configuration`.
    pub(crate) fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The same CA, as PEM text.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The `kid` of the key that signs now.
    pub(crate) fn kid(&self) -> String {
        lock(&self.kid).clone()
    }

    /// What the handler needs to trust this issuer for `AUTH_TENANT_ID`'s tokens:
    /// `AUTH_TENANT_ID`, `AUTH_OPENID_CONFIG_URL` and `SSL_CERT_FILE`.
    pub(crate) fn settings(&self) -> Settings {
        Settings::none()
            .set("AUTH_TENANT_ID", &self.tenant)
            .set("AUTH_OPENID_CONFIG_URL", &self.metadata_url)
            .set("SSL_CERT_FILE", self.ca_file.display().to_string())
    }

    /// Sends one command and returns its answer; panics on a driver error.
    fn call(&self, command: &Value) -> Value {
        let guard = lock(&self.channel);
        let (stdin, rx) = &*guard;
        let mut stdin = stdin;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("the issuer driver stopped reading ({e})"));
        let answer = receive(rx, &format!("an answer to {command}"));
        if let Some(error) = answer.get("error") {
            panic!("the issuer driver refused {command}: {error}");
        }
        answer
    }

    /// `claims`, signed RS256 with the current key; header `typ` JWT, `kid`, `alg` RS256.
    pub(crate) fn sign(&self, claims: &Map<String, Value>) -> String {
        self.sign_with(claims, &Map::new(), Signer::Published)
    }

    /// `claims`, signed by `signer`, with `header` members replacing the mock's (`null`
    /// deletes one; `alg` stays the key's).
    pub(crate) fn sign_with(
        &self,
        claims: &Map<String, Value>,
        header: &Map<String, Value>,
        signer: Signer,
    ) -> String {
        let signer = match signer {
            Signer::Published => "published",
            Signer::Unpublished => "unpublished",
        };
        token_of(&self.call(&json!({
            "op": "token",
            "claims": claims,
            "header": header,
            "signer": signer,
        })))
    }

    /// `claims` in a token forged as `forgery` says (header `kid` = the current key).
    pub(crate) fn forge(&self, forgery: Forgery, claims: &Map<String, Value>) -> String {
        token_of(&self.call(&json!({"op": "forge", "kind": forgery.kind(), "claims": claims})))
    }

    /// Publishes a new key, which signs from now on; returns its `kid`.
    pub(crate) fn rollover(&self) -> String {
        let answer = self.call(&json!({"op": "rollover"}));
        let kid = answer["kid"]
            .as_str()
            .unwrap_or_else(|| panic!("rollover answered without a kid: {answer}"))
            .to_owned();
        *lock(&self.kid) = kid.clone();
        kid
    }

    /// Stops publishing the key `kid` (as Entra ID withdraws a key); tokens it signed stay as
    /// they are.
    pub(crate) fn withdraw(&self, kid: &str) {
        self.call(&json!({"op": "withdraw", "kid": kid}));
    }

    /// Serves the JWKS as Entra does (`entra`: no `alg`, `use` "sig", `x5t`) or as the mock
    /// does (`false`: `alg` RS256, no `use`).
    pub(crate) fn set_entra_jwks_shape(&self, entra: bool) {
        self.call(&json!({"op": "jwks_shape", "shape": if entra { "entra" } else { "mock" }}));
    }

    /// Makes the metadata advertise `url` as `jwks_uri` (`None`: the real one again).
    pub(crate) fn advertise_jwks_uri(&self, url: Option<&str>) {
        self.call(&json!({"op": "jwks_uri", "url": url}));
    }

    /// While `on`, every request is answered `503`.
    pub(crate) fn set_outage(&self, on: bool) {
        self.call(&json!({"op": "outage", "on": on}));
    }

    /// How many requests for `path` (e.g. `/jwks`) the issuer has received, outages included.
    pub(crate) fn requests(&self, path: &str) -> u64 {
        self.call(&json!({"op": "stats"}))["requests"][path]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next line from the driver, as JSON.
fn receive(rx: &mpsc::Receiver<String>, what: &str) -> Value {
    let line = rx
        .recv_timeout(DRIVER_TIMEOUT)
        .unwrap_or_else(|e| panic!("the issuer driver sent no {what} ({e})"));
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the issuer driver sent a line that is not JSON ({e}): {line}"))
}

fn token_of(answer: &Value) -> String {
    answer["token"]
        .as_str()
        .unwrap_or_else(|| panic!("the issuer driver answered without a token: {answer}"))
        .to_owned()
}

/// The stand-in itself: what it publishes and signs is what Entra would, and checks out with
/// an RSA implementation of its own (aws-lc-rs), independent of the driver and the handler.
mod self_tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Map, Value, json};

    use super::{Caller, Forgery, Issuer, Signer, Version, entra_claims, v1_issuer, v2_issuer};
    use crate::support::tls::client_trusting;

    /// A client that trusts nothing but the stand-in's CA.
    fn client(issuer: &Issuer) -> reqwest::Client {
        client_trusting(issuer.ca_pem())
            .build()
            .expect("a reqwest client builds")
    }

    async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
        let response = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.expect("body is readable");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn decode(part: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("not base64url ({e}): {part}"))
    }

    fn parts(token: &str) -> (Value, Value, Vec<u8>) {
        let pieces: Vec<&str> = token.split('.').collect();
        assert_eq!(pieces.len(), 3, "a JWS has three parts: {token}");
        (
            serde_json::from_slice(&decode(pieces[0])).expect("the header is JSON"),
            serde_json::from_slice(&decode(pieces[1])).expect("the payload is JSON"),
            decode(pieces[2]),
        )
    }

    /// Whether `token`'s RS256 signature verifies with the JWKS member `kid`.
    fn rs256_verifies(token: &str, jwks: &Value, kid: &str) -> bool {
        let Some(key) = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        else {
            return false;
        };
        let component = |name: &str| decode(key[name].as_str().expect("n and e are strings"));
        let (signed, signature) = token.rsplit_once('.').expect("a JWS has dots");
        aws_lc_rs::signature::RsaPublicKeyComponents {
            n: component("n"),
            e: component("e"),
        }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &decode(signature),
        )
        .is_ok()
    }

    #[tokio::test]
    async fn the_issuer_publishes_metadata_and_keys_over_https_and_signs_what_it_is_given() {
        let issuer = Issuer::start();
        let client = client(&issuer);

        let (status, metadata) = get_json(&client, issuer.metadata_url()).await;
        assert_eq!(status, 200, "metadata: {metadata}");
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .expect("metadata has jwks_uri");
        assert_eq!(jwks_uri, format!("{}/jwks", issuer.base_url()));
        let (status, jwks) = get_json(&client, jwks_uri).await;
        assert_eq!(status, 200, "jwks: {jwks}");
        let kid = issuer.kid();
        let key = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
            .unwrap_or_else(|| panic!("the current kid {kid} is published: {jwks}"));
        assert_eq!(key["kty"], "RSA");
        assert!(key.get("d").is_none(), "no private part is published");

        for version in [Version::V1, Version::V2] {
            let caller = Caller::random();
            let mut claims = entra_claims(version, issuer.tenant(), "api://x", &caller);
            claims.insert("roles".into(), json!(["SasToken.Issue"]));
            claims.remove("aio");
            let token = issuer.sign(&claims);
            let (header, payload, _) = parts(&token);
            assert_eq!(header["alg"], "RS256", "{version:?}");
            assert_eq!(header["kid"], kid.as_str(), "{version:?}");
            assert_eq!(
                payload,
                Value::Object(claims.clone()),
                "{version:?}: the payload is exactly the claims given"
            );
            let expected_iss = match version {
                Version::V1 => v1_issuer(issuer.tenant()),
                Version::V2 => v2_issuer(issuer.tenant()),
            };
            assert_eq!(payload["iss"], expected_iss.as_str());
            assert!(rs256_verifies(&token, &jwks, &kid), "{version:?}: verifies");
        }

        let mut no_exp = Map::new();
        no_exp.insert("exp".into(), Value::Null);
        no_exp.insert("sub".into(), json!("s"));
        let (_, payload, _) = parts(&issuer.sign(&no_exp));
        assert!(payload.get("exp").is_none(), "null deletes: {payload}");

        let mut header = Map::new();
        header.insert("kid".into(), json!("someone-else"));
        let (header, _, _) = parts(&issuer.sign_with(&Map::new(), &header, Signer::Published));
        assert_eq!(
            header["kid"], "someone-else",
            "header members can be replaced"
        );

        let stranger = issuer.sign_with(&Map::new(), &Map::new(), Signer::Unpublished);
        let (stranger_header, _, _) = parts(&stranger);
        let stranger_kid = stranger_header["kid"].as_str().expect("a kid");
        assert!(!rs256_verifies(&stranger, &jwks, stranger_kid));
        assert!(!rs256_verifies(&stranger, &jwks, &kid));

        assert!(issuer.requests("/jwks") >= 1);
        assert!(issuer.requests("/.well-known/openid-configuration") >= 1);
    }

    #[tokio::test]
    async fn forgeries_are_what_they_claim_to_be() {
        let issuer = Issuer::start();
        let claims = entra_claims(Version::V1, issuer.tenant(), "api://x", &Caller::random());
        for forgery in Forgery::ALL {
            let token = issuer.forge(forgery, &claims);
            let (header, payload, signature) = parts(&token);
            assert_eq!(header["kid"], issuer.kid().as_str(), "{forgery:?}");
            assert_eq!(payload, Value::Object(claims.clone()), "{forgery:?}");
            if forgery == Forgery::AlgNone {
                assert_eq!(header["alg"], "none");
                assert!(signature.is_empty(), "alg none has no signature");
            } else {
                assert_eq!(header["alg"], "HS256", "{forgery:?}");
                assert_eq!(signature.len(), 32, "{forgery:?}: an HMAC-SHA256");
            }
        }
        // The SPKI PEM one is keyed with exactly the PEM an RS256 verifier would load.
        let client = client(&issuer);
        let (_, jwks) = get_json(&client, &format!("{}/jwks", issuer.base_url())).await;
        let token = issuer.forge(Forgery::Hs256SpkiPem, &claims);
        let (signed, signature) = token.rsplit_once('.').expect("dots");
        let key = jwks["keys"][0].clone();
        assert_eq!(key["kid"], issuer.kid().as_str());
        let spki_pem = spki_pem_of(&key);
        assert_eq!(
            hmac_sha256::HMAC::mac(signed.as_bytes(), spki_pem.as_bytes()).to_vec(),
            decode(signature),
            "HS256 over the header and payload, keyed with the SPKI PEM"
        );
    }

    /// The SPKI PEM of an RSA JWK, built by hand (DER of SEQUENCE{algid, BIT STRING{n, e}}).
    fn spki_pem_of(jwk: &Value) -> String {
        fn der(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = content.len();
            if len < 0x80 {
                out.push(u8::try_from(len).expect("short"));
            } else {
                let bytes: Vec<u8> = len
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|b| *b == 0)
                    .collect();
                out.push(0x80 | u8::try_from(bytes.len()).expect("few length bytes"));
                out.extend(bytes);
            }
            out.extend_from_slice(content);
            out
        }
        fn integer(magnitude: &[u8]) -> Vec<u8> {
            let mut content = Vec::new();
            if magnitude.first().is_some_and(|b| b & 0x80 != 0) {
                content.push(0);
            }
            content.extend_from_slice(magnitude);
            der(0x02, &content)
        }
        let n = decode(jwk["n"].as_str().expect("n"));
        let e = decode(jwk["e"].as_str().expect("e"));
        let rsa_key = der(0x30, &[integer(&n), integer(&e)].concat());
        let mut bit_string = vec![0];
        bit_string.extend(rsa_key);
        // rsaEncryption OID 1.2.840.113549.1.1.1 with NULL parameters.
        let algorithm = der(
            0x30,
            &[
                der(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                ),
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        let spki = der(0x30, &[algorithm, der(0x03, &bit_string)].concat());
        let body = base64::engine::general_purpose::STANDARD.encode(spki);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    #[tokio::test]
    async fn rollover_publishes_a_new_key_and_keeps_the_old_one() {
        let issuer = Issuer::start();
        let client = client(&issuer);
        let jwks_url = format!("{}/jwks", issuer.base_url());
        let old = issuer.kid();
        let old_token = issuer.sign(&Map::new());
        let new = issuer.rollover();
        assert_ne!(old, new);
        let new_token = issuer.sign(&Map::new());
        let (header, _, _) = parts(&new_token);
        assert_eq!(header["kid"], new.as_str(), "the new key signs");
        let (_, jwks) = get_json(&client, &jwks_url).await;
        assert!(rs256_verifies(&new_token, &jwks, &new));
        assert!(rs256_verifies(&old_token, &jwks, &old), "the old key stays");

        issuer.withdraw(&old);
        let (_, withdrawn) = get_json(&client, &jwks_url).await;
        assert!(rs256_verifies(&new_token, &withdrawn, &new));
        assert!(
            !rs256_verifies(&old_token, &withdrawn, &old),
            "a withdrawn key is no longer published: {withdrawn}"
        );

        issuer.set_entra_jwks_shape(true);
        let (_, jwks) = get_json(&client, &jwks_url).await;
        for key in jwks["keys"].as_array().expect("keys") {
            assert!(key.get("alg").is_none(), "Entra publishes no alg: {key}");
            assert_eq!(key["use"], "sig");
        }
        assert!(rs256_verifies(&new_token, &jwks, &new));

        issuer.advertise_jwks_uri(Some("http://127.0.0.1:9/keys"));
        let (_, metadata) = get_json(&client, issuer.metadata_url()).await;
        assert_eq!(metadata["jwks_uri"], "http://127.0.0.1:9/keys");

        let before = issuer.requests("/jwks");
        issuer.set_outage(true);
        let (status, _) = get_json(&client, &jwks_url).await;
        assert_eq!(status, 503);
        assert_eq!(issuer.requests("/jwks"), before + 1, "outages are counted");
        issuer.set_outage(false);
        let (status, _) = get_json(&client, &jwks_url).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn a_client_without_the_test_ca_does_not_trust_the_issuer() {
        let issuer = Issuer::start();
        let plain = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a reqwest client builds");
        assert!(plain.get(issuer.metadata_url()).send().await.is_err());
    }
}
