//! The bearer-token layer (issue 5): with `AUTH_TENANT_ID` set, each request must carry an
//! Entra ID access token, as API Management's managed identity sends it, from an allowed caller.
//!
//! The tokens come from an independent issuer (`stand_ins::issuer`, oauth2-mock-server over
//! HTTPS), which the handler finds through `AUTH_OPENID_CONFIG_URL` and trusts through
//! `SSL_CERT_FILE`. What is checked, through the spawned binary only:
//! - valid v1 and v2 tokens get a SAS token on both routes; the caller is matched by `oid`, or
//!   by `appid` (v1) / `azp` (v2); `exp`/`nbf` have five minutes of leeway;
//! - no bearer token → 401 `WWW-Authenticate: Bearer`; any invalid token → 401
//!   `Bearer error="invalid_token"` with one body whatever failed;
//! - a valid token from a caller not allowed, or without the required role → the 403 an IP
//!   denial gets;
//! - a new signing key at the issuer is picked up without a restart, unknown `kid`s re-fetch
//!   the key set at most once per `AUTH_JWKS_REFETCH_SECONDS`, and no key set → 503;
//! - bad settings stop the binary; the order IP → token → input; the log fields `auth` and
//!   `caller_oid`, and never the token.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stand_ins::issuer::{
    Caller, Forgery, Issuer, Signer, Version, entra_claims, v1_issuer, v2_issuer,
};
use crate::support::{
    answers::{assert_problem, media_type},
    app::TestApp,
    clock::unix_now,
    logs::log_text,
    routes::{LEGACY_ROUTE, token_path},
    settings::Settings,
    startup::{Refusal, misrefused_startups},
};

/// The handler's App ID URI: what API Management asks Entra for as `resource` (v1 `aud`).
pub(crate) const AUDIENCE_URI: &str = "api://iothub-sas-handler";
/// The app role the handler may require.
pub(crate) const ROLE: &str = "SasToken.Issue";
/// The problem `type` of every 403 for a caller (IP, certificate or token).
pub(crate) const CALLER_NOT_ALLOWED: &str = "urn:iothub-sas:problem:caller-not-allowed";
/// An address outside every test's `ALLOWED_IPS`.
pub(crate) const DENIED_IP: &str = "203.0.113.9";

/// One issuer, API Management's identity, and the handler app's client id.
pub(crate) struct Fixture {
    pub(crate) issuer: Issuer,
    /// The caller the handler allows (by `oid` unless a test says otherwise).
    pub(crate) apim: Caller,
    /// The handler app's client id: the `aud` of v2 tokens, the second accepted audience.
    pub(crate) audience_id: String,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture {
            issuer: Issuer::start(),
            apim: Caller::random(),
            audience_id: Caller::random().client_id,
        }
    }

    /// `AUTH_AUDIENCE`: the App ID URI and the client id.
    pub(crate) fn audiences(&self) -> String {
        format!("{AUDIENCE_URI},{}", self.audience_id)
    }

    /// The base settings with the issuer's, `AUTH_AUDIENCE` = both audiences and
    /// `AUTH_ALLOWED_CALLERS` = API Management's `oid`.
    pub(crate) fn settings(&self) -> Settings {
        Settings::base()
            .set_all(self.issuer.settings().iter())
            .set("AUTH_AUDIENCE", self.audiences())
            .set("AUTH_ALLOWED_CALLERS", &self.apim.oid)
    }

    /// Entra's claims for `caller`, audience as Entra sets it for `version` (v1: the App ID URI
    /// API Management asked for; v2: the client id).
    pub(crate) fn claims_for(&self, version: Version, caller: &Caller) -> Map<String, Value> {
        let audience = match version {
            Version::V1 => AUDIENCE_URI,
            Version::V2 => &self.audience_id,
        };
        entra_claims(version, self.issuer.tenant(), audience, caller)
    }

    /// API Management's claims for `version`.
    pub(crate) fn claims(&self, version: Version) -> Map<String, Value> {
        self.claims_for(version, &self.apim)
    }

    /// A valid token from API Management.
    pub(crate) fn token(&self, version: Version) -> String {
        self.issuer.sign(&self.claims(version))
    }
}

/// `(description, path)` of both routes for device `dev-1`.
pub(crate) fn both_routes() -> [(&'static str, String); 2] {
    [
        ("REST route", token_path("dev-1", None)),
        ("legacy route", format!("{LEGACY_ROUTE}?deviceid=dev-1")),
    ]
}

/// `GET path` with `Authorization: Bearer <token>` (no header when `None`) and `extra` headers.
pub(crate) async fn get_with_token(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Response {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(value) = &authorization {
        headers.push(("Authorization", value));
    }
    app.get(path, &headers).await
}

/// Asserts a 200 with a SAS token in the body.
pub(crate) async fn assert_issued(response: Response, context: &str) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body is readable");
    assert_eq!(status, 200, "{context}: status (body: {text})");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{context}: body is not JSON ({e}): {text}"));
    assert!(
        body["sastoken"]
            .as_str()
            .is_some_and(|t| t.starts_with("SharedAccessSignature ")),
        "{context}: body carries a SAS token: {text}"
    );
}

/// The `WWW-Authenticate` header of a response, or "" without one.
fn challenge(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts the 401 for a request without a bearer token: `WWW-Authenticate: Bearer` without an
/// `error` (RFC 6750 §3.1: no error code when no credentials were sent). Returns the body.
pub(crate) async fn assert_no_token(response: Response, context: &str) -> Value {
    let (headers, body) = assert_problem(response, 401, context).await;
    let challenge = challenge(&headers);
    assert!(
        challenge == "Bearer" || challenge.starts_with("Bearer "),
        "{context}: WWW-Authenticate must be a Bearer challenge, got {challenge:?}"
    );
    assert!(
        !challenge.contains("error="),
        "{context}: no error code without a token, got {challenge:?}"
    );
    body
}

/// Asserts the 401 for an invalid token: `WWW-Authenticate: Bearer error="invalid_token"`.
/// Returns the body.
pub(crate) async fn assert_invalid_token(response: Response, context: &str) -> Value {
    let (headers, body) = assert_problem(response, 401, context).await;
    let challenge = challenge(&headers);
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
        "{context}: WWW-Authenticate must be `Bearer error=\"invalid_token\"`, got {challenge:?}"
    );
    body
}

/// Asserts the caller-not-allowed 403. Returns the body.
pub(crate) async fn assert_caller_not_allowed(response: Response, context: &str) -> Value {
    let (headers, body) = assert_problem(response, 403, context).await;
    assert_eq!(body["type"], CALLER_NOT_ALLOWED, "{context}: problem type");
    assert!(
        headers.get("www-authenticate").is_none(),
        "{context}: a 403 is no authentication challenge"
    );
    body
}

/// Asserts a 503 problem with a `Retry-After` of whole seconds.
pub(crate) async fn assert_unavailable(response: Response, context: &str) {
    let (headers, body) = assert_problem(response, 503, context).await;
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{context}: a 503 carries Retry-After: {body}"));
    assert!(
        retry_after.parse::<u64>().is_ok(),
        "{context}: Retry-After must be whole seconds, got {retry_after:?}"
    );
}

/// The body of the 403 an IP outside the allow list gets, on `app`.
pub(crate) async fn ip_denial_body(app: &TestApp) -> Value {
    let response = app
        .get(
            &token_path("dev-1", None),
            &[("X-Forwarded-For", DENIED_IP)],
        )
        .await;
    assert_caller_not_allowed(response, "IP denial").await
}

/// `header.payload.signature` → the three parts.
fn jws_parts(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    [parts[0], parts[1], parts[2]]
}

/// `claims` with `name` set to `value`. `Value::Null` stays in: the issuer then deletes the
/// claim, including a default of its own (`exp`, `iss`, `iat`, `nbf`).
fn with(mut claims: Map<String, Value>, name: &str, value: Value) -> Map<String, Value> {
    claims.insert(name.to_owned(), value);
    claims
}

/// Polls `request` (every 200 ms) until it answers 200 or `timeout` passes; returns the last
/// status.
async fn poll_until_ok<F, Fut>(timeout: Duration, mut request: F) -> u16
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Response>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let status = request().await.status().as_u16();
        if status == 200 || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_valid_v1_token_from_api_management_gets_a_sas_token_on_both_routes() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let token = fixture.token(Version::V1);

    for (route, path) in both_routes() {
        let response = get_with_token(&app, &path, Some(&token), &[]).await;
        assert_issued(response, &format!("v1 token, {route}")).await;
    }
}

#[tokio::test]
async fn a_valid_v2_token_gets_a_sas_token_on_both_routes() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let token = fixture.token(Version::V2);

    for (route, path) in both_routes() {
        let response = get_with_token(&app, &path, Some(&token), &[]).await;
        assert_issued(response, &format!("v2 token, {route}")).await;
    }
}

#[tokio::test]
async fn a_caller_may_be_allowed_by_its_client_id_in_appid_or_azp() {
    let fixture = Fixture::new();
    let allowed = format!("{} , {}", Caller::random().oid, fixture.apim.client_id);
    let app = TestApp::spawn(&fixture.settings().set("AUTH_ALLOWED_CALLERS", &allowed));

    for version in [Version::V1, Version::V2] {
        let token = fixture.token(version);
        let response = get_with_token(&app, &token_path("dev-1", None), Some(&token), &[]).await;
        assert_issued(
            response,
            &format!("{version:?} token, caller listed by client id"),
        )
        .await;
    }
}

#[tokio::test]
async fn tokens_within_five_minutes_of_their_validity_window_are_accepted() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let now = unix_now();
    let cases = [
        (
            "expired two minutes ago",
            with(fixture.claims(Version::V1), "exp", json!(now - 120)),
        ),
        (
            "valid in two minutes",
            with(fixture.claims(Version::V1), "nbf", json!(now + 120)),
        ),
    ];

    for (description, claims) in cases {
        let token = fixture.issuer.sign(&claims);
        let response = get_with_token(&app, &token_path("dev-1", None), Some(&token), &[]).await;
        assert_issued(response, description).await;
    }
}

#[tokio::test]
async fn a_request_without_a_bearer_token_gets_401_with_a_bearer_challenge_on_both_routes() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let token = fixture.token(Version::V1);
    let basic = "Basic dXNlcjpwYXNzd29yZA==".to_owned();
    let cases: [(&str, Option<String>); 3] = [
        ("no Authorization header", None),
        ("Basic credentials", Some(basic)),
        // A valid token, but not presented as a bearer token.
        ("a token without a scheme", Some(token)),
    ];

    for (route, path) in both_routes() {
        for (description, authorization) in &cases {
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("Authorization", value.as_str()))
                .collect();
            let response = app.get(&path, &headers).await;
            assert_no_token(response, &format!("{description}, {route}")).await;
        }
    }
}

/// Invalid tokens and what makes each invalid. Every one must get the same 401.
fn invalid_tokens(fixture: &Fixture) -> Vec<(String, String)> {
    let issuer = &fixture.issuer;
    let tenant = issuer.tenant();
    let other_tenant = Caller::random().oid;
    let now = unix_now();
    let v1 = || fixture.claims(Version::V1);
    let v2 = || fixture.claims(Version::V2);
    let cases: Vec<(String, Map<String, Value>)> = vec![
        (
            "expired ten minutes ago".into(),
            with(
                with(v1(), "exp", json!(now - 600)),
                "nbf",
                json!(now - 4200),
            ),
        ),
        (
            "valid only in ten minutes".into(),
            with(v1(), "nbf", json!(now + 600)),
        ),
        ("without exp".into(), with(v1(), "exp", Value::Null)),
        (
            "exp not a number".into(),
            with(v1(), "exp", json!((now + 3600).to_string())),
        ),
        (
            "for another audience".into(),
            with(v1(), "aud", json!("api://some-other-api")),
        ),
        (
            "audience differing in case".into(),
            with(v1(), "aud", json!(AUDIENCE_URI.to_uppercase())),
        ),
        (
            "audience with a trailing slash".into(),
            with(v1(), "aud", json!(format!("{AUDIENCE_URI}/"))),
        ),
        ("without aud".into(), with(v1(), "aud", Value::Null)),
        (
            "v1 issuer of another tenant".into(),
            with(v1(), "iss", json!(v1_issuer(&other_tenant))),
        ),
        (
            "v2 issuer of another tenant".into(),
            with(v2(), "iss", json!(v2_issuer(&other_tenant))),
        ),
        (
            "v1 issuer without its trailing slash".into(),
            with(
                v1(),
                "iss",
                json!(v1_issuer(tenant).trim_end_matches('/').to_owned()),
            ),
        ),
        (
            "v2 issuer with a trailing slash".into(),
            with(v2(), "iss", json!(format!("{}/", v2_issuer(tenant)))),
        ),
        (
            "the issuer stand-in's own URL as issuer".into(),
            with(v1(), "iss", json!(issuer.base_url())),
        ),
        ("without iss".into(), with(v1(), "iss", Value::Null)),
    ];
    let mut tokens: Vec<(String, String)> = cases
        .into_iter()
        .map(|(description, claims)| (description, issuer.sign(&claims)))
        .collect();

    let mut unknown_kid = Map::new();
    unknown_kid.insert("kid".into(), json!("a-kid-the-issuer-never-published"));
    tokens.push((
        "a kid the issuer never published (signed with the published key)".into(),
        issuer.sign_with(&v1(), &unknown_kid, Signer::Published),
    ));
    let mut no_kid = Map::new();
    no_kid.insert("kid".into(), Value::Null);
    tokens.push((
        "no kid".into(),
        issuer.sign_with(&v1(), &no_kid, Signer::Published),
    ));
    tokens.push((
        "signed by an unpublished key with its own kid".into(),
        issuer.sign_with(&v1(), &Map::new(), Signer::Unpublished),
    ));
    let mut published_kid = Map::new();
    published_kid.insert("kid".into(), json!(issuer.kid()));
    tokens.push((
        "signed by an unpublished key under the published kid".into(),
        issuer.sign_with(&v1(), &published_kid, Signer::Unpublished),
    ));

    let valid = fixture.token(Version::V1);
    let [header, payload, signature] = jws_parts(&valid);
    // A stranger's claims under API Management's signature.
    let stranger = fixture
        .issuer
        .sign(&fixture.claims_for(Version::V1, &Caller::random()));
    let [_, stranger_payload, _] = jws_parts(&stranger);
    tokens.push((
        "payload swapped under a valid signature".into(),
        format!("{header}.{stranger_payload}.{signature}"),
    ));
    let mut flipped = signature.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    tokens.push((
        "one signature character changed".into(),
        format!(
            "{header}.{payload}.{}",
            String::from_utf8(flipped).expect("base64url is ASCII")
        ),
    ));
    tokens.push(("signature removed".into(), format!("{header}.{payload}.")));
    tokens.push(("two parts only".into(), format!("{header}.{payload}")));

    for forgery in Forgery::ALL {
        tokens.push((format!("forged: {forgery:?}"), issuer.forge(forgery, &v1())));
    }

    for (description, garbage) in [
        ("garbage", "garbage"),
        ("three dots of garbage", "a.b.c"),
        (
            "base64 that is not JSON",
            "bm90IGpzb24.bm90IGpzb24.bm90IGpzb24",
        ),
    ] {
        tokens.push((description.into(), garbage.to_owned()));
    }
    tokens
}

#[tokio::test]
async fn every_invalid_token_gets_the_same_401_invalid_token_answer_on_both_routes() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let tokens = invalid_tokens(&fixture);

    // Every case is tried before anything is asserted, so one run reports all that fail.
    let mut wrong: Vec<String> = Vec::new();
    let mut bodies: Vec<(String, String)> = Vec::new();
    for (route, path) in both_routes() {
        for (description, token) in &tokens {
            let context = format!("{description}, {route}");
            let response = get_with_token(&app, &path, Some(token), &[]).await;
            let status = response.status().as_u16();
            let challenge = challenge(response.headers());
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.text().await.expect("body is readable");
            if status != 401
                || !challenge.starts_with("Bearer ")
                || !challenge.contains(r#"error="invalid_token""#)
                || media_type(&content_type) != "application/problem+json"
            {
                wrong.push(format!(
                    "{context}: {status}, WWW-Authenticate {challenge:?}, {content_type}: {body}"
                ));
            } else {
                bodies.push((context, body));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} invalid-token requests were not answered 401 invalid_token problem+json:\n{}",
        wrong.len(),
        2 * tokens.len(),
        wrong.join("\n")
    );

    let (first_context, first) = &bodies[0];
    let first: Value = serde_json::from_str(first).expect("a problem body is JSON");
    assert_eq!(first["status"], 401, "{first_context}: {first}");
    for (context, body) in &bodies {
        let body: Value = serde_json::from_str(body).expect("a problem body is JSON");
        assert_eq!(
            body, first,
            "the 401 body must not say which check failed: {context} vs {first_context}"
        );
    }
    // The handler still works for a good token after all that.
    let response = get_with_token(
        &app,
        &both_routes()[0].1,
        Some(&fixture.token(Version::V1)),
        &[],
    )
    .await;
    assert_issued(response, "a valid token after the invalid ones").await;
}

#[tokio::test]
async fn a_valid_token_from_a_caller_not_in_the_list_gets_the_403_an_ip_denial_gets() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let ip_denial = ip_denial_body(&app).await;
    let stranger = Caller::random();
    // Ids are matched whole: neither a prefix nor an extension of an allowed id is allowed.
    let prefix = Caller {
        client_id: Caller::random().client_id,
        oid: fixture.apim.oid[..8].to_owned(),
    };
    let extended = Caller {
        client_id: Caller::random().client_id,
        oid: format!("{},{}", fixture.apim.oid, Caller::random().oid),
    };

    for (route, path) in both_routes() {
        for (description, caller) in [
            ("stranger", &stranger),
            ("oid a prefix of the allowed one", &prefix),
            ("oid the allowed one and more", &extended),
        ] {
            for version in [Version::V1, Version::V2] {
                let token = fixture.issuer.sign(&fixture.claims_for(version, caller));
                let context = format!("{description}, {version:?}, {route}");
                let response = get_with_token(&app, &path, Some(&token), &[]).await;
                let body = assert_caller_not_allowed(response, &context).await;
                assert_eq!(body, ip_denial, "{context}: the same body as an IP denial");
            }
        }
    }
}

#[tokio::test]
async fn with_a_required_role_only_tokens_carrying_it_get_a_sas_token() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings().set("AUTH_REQUIRED_ROLE", ROLE));
    let ip_denial = ip_denial_body(&app).await;
    let cases = [
        ("the role", Some(json!([ROLE])), true),
        (
            "the role among others",
            Some(json!(["Other.Role", ROLE])),
            true,
        ),
        ("no roles claim", None, false),
        ("empty roles", Some(json!([])), false),
        ("another role", Some(json!(["Other.Role"])), false),
        (
            "the role in other case",
            Some(json!([ROLE.to_lowercase()])),
            false,
        ),
    ];

    for (route, path) in both_routes() {
        for (description, roles, allowed) in &cases {
            let claims = with(
                fixture.claims(Version::V1),
                "roles",
                roles.clone().unwrap_or(Value::Null),
            );
            let token = fixture.issuer.sign(&claims);
            let context = format!("{description}, {route}");
            let response = get_with_token(&app, &path, Some(&token), &[]).await;
            if *allowed {
                assert_issued(response, &context).await;
            } else {
                let body = assert_caller_not_allowed(response, &context).await;
                assert_eq!(body, ip_denial, "{context}: the same body as an IP denial");
            }
        }
    }
}

#[tokio::test]
async fn a_new_signing_key_at_the_issuer_is_accepted_without_a_restart() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings().set("AUTH_JWKS_REFETCH_SECONDS", "1"));
    let path = token_path("dev-1", None);
    let old_token = fixture.token(Version::V1);
    assert_issued(
        get_with_token(&app, &path, Some(&old_token), &[]).await,
        "the first key",
    )
    .await;
    let fetches_before = fixture.issuer.requests("/jwks");

    fixture.issuer.rollover();
    let new_token = fixture.token(Version::V1);
    // The handler re-fetches for an unknown kid at most once a second here; by the time that
    // second has passed since its last fetch, the new key must be found.
    let status = poll_until_ok(Duration::from_secs(5), || {
        get_with_token(&app, &path, Some(&new_token), &[])
    })
    .await;

    assert_eq!(status, 200, "a token signed with the new key");
    assert!(
        fixture.issuer.requests("/jwks") > fetches_before,
        "the key set was fetched again"
    );
    assert_issued(
        get_with_token(&app, &path, Some(&old_token), &[]).await,
        "the old key is still published and still accepted",
    )
    .await;
}

#[tokio::test]
async fn unknown_kids_refetch_the_key_set_at_most_once_per_interval() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings().set("AUTH_JWKS_REFETCH_SECONDS", "60"));
    let path = token_path("dev-1", None);
    assert_issued(
        get_with_token(&app, &path, Some(&fixture.token(Version::V1)), &[]).await,
        "a valid token first, so the key set is loaded",
    )
    .await;
    let fetches_before = fixture.issuer.requests("/jwks");

    for n in 0..20 {
        let mut header = Map::new();
        header.insert("kid".into(), json!(format!("unknown-kid-{n}")));
        let token =
            fixture
                .issuer
                .sign_with(&fixture.claims(Version::V1), &header, Signer::Published);
        let response = get_with_token(&app, &path, Some(&token), &[]).await;
        assert_invalid_token(response, &format!("unknown kid #{n}")).await;
    }

    let refetches = fixture.issuer.requests("/jwks") - fetches_before;
    assert!(
        refetches <= 1,
        "20 unknown kids within one interval caused {refetches} key-set fetches"
    );
}

#[tokio::test]
async fn a_key_set_in_entras_shape_without_alg_is_accepted() {
    let fixture = Fixture::new();
    fixture.issuer.set_entra_jwks_shape(true);
    let app = TestApp::spawn(&fixture.settings());

    for version in [Version::V1, Version::V2] {
        let response = get_with_token(
            &app,
            &token_path("dev-1", None),
            Some(&fixture.token(version)),
            &[],
        )
        .await;
        assert_issued(response, &format!("{version:?} token, Entra-shaped JWKS")).await;
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port is free");
    listener.local_addr().expect("bound").port()
}

#[tokio::test]
async fn an_unreachable_issuer_means_503_with_retry_after_on_both_routes() {
    let fixture = Fixture::new();
    let metadata = format!(
        "https://127.0.0.1:{}/.well-known/openid-configuration",
        closed_port()
    );
    let mut app = TestApp::spawn(&fixture.settings().set("AUTH_OPENID_CONFIG_URL", &metadata));
    let token = fixture.token(Version::V1);

    for (route, path) in both_routes() {
        let response = get_with_token(&app, &path, Some(&token), &[]).await;
        assert_unavailable(response, &format!("issuer unreachable, {route}")).await;
    }
    assert!(
        app.is_running(),
        "an unreachable issuer is no reason to exit"
    );
}

#[tokio::test]
async fn an_issuer_down_at_start_means_503_then_recovery_without_a_restart() {
    let fixture = Fixture::new();
    fixture.issuer.set_outage(true);
    let app = TestApp::spawn(&fixture.settings().set("AUTH_JWKS_REFETCH_SECONDS", "1"));
    let path = token_path("dev-1", None);
    let token = fixture.token(Version::V1);

    let response = get_with_token(&app, &path, Some(&token), &[]).await;
    assert_unavailable(response, "issuer answering 503").await;

    fixture.issuer.set_outage(false);
    let status = poll_until_ok(Duration::from_secs(10), || {
        get_with_token(&app, &path, Some(&token), &[])
    })
    .await;
    assert_eq!(status, 200, "once the issuer is back, tokens are accepted");
}

/// A plain-HTTP server on 127.0.0.1 answering every request with `body`; returns its port and
/// a count of the connections it accepted. It stops with the test's runtime.
async fn plain_http_server(body: String) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port is free");
    let port = listener.local_addr().expect("bound").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, connections)
}

#[tokio::test]
async fn a_jwks_uri_over_plain_http_is_never_fetched() {
    let fixture = Fixture::new();
    // The same keys, served over plain HTTP: had the handler used them, the token would pass.
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([
            reqwest::Certificate::from_pem(fixture.issuer.ca_pem().as_bytes())
                .expect("the CA PEM parses"),
        ])
        .build()
        .expect("a reqwest client builds");
    let jwks = client
        .get(format!("{}/jwks", fixture.issuer.base_url()))
        .send()
        .await
        .expect("the issuer answers")
        .text()
        .await
        .expect("body is readable");
    let (port, connections) = plain_http_server(jwks).await;
    fixture
        .issuer
        .advertise_jwks_uri(Some(&format!("http://127.0.0.1:{port}/jwks")));
    let app = TestApp::spawn(&fixture.settings().set("AUTH_JWKS_REFETCH_SECONDS", "1"));

    let response = get_with_token(
        &app,
        &token_path("dev-1", None),
        Some(&fixture.token(Version::V1)),
        &[],
    )
    .await;

    assert_unavailable(response, "the metadata names an http jwks_uri").await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the handler connected to the http jwks_uri"
    );
}

/// A misconfiguration: description, settings removed from a valid set, settings set on top,
/// and the setting the stderr line must name.
type BadSetting<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_auth_settings_stop_the_binary_naming_the_setting() {
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let on = Settings::base()
        .set("AUTH_TENANT_ID", tenant)
        .set("AUTH_AUDIENCE", AUDIENCE_URI)
        .set(
            "AUTH_ALLOWED_CALLERS",
            "6a1f1d8e-0000-4000-8000-000000000001",
        );
    let cases: &[BadSetting<'_>] = &[
        (
            "AUTH_AUDIENCE missing",
            &["AUTH_AUDIENCE"],
            &[],
            "AUTH_AUDIENCE",
        ),
        (
            "AUTH_ALLOWED_CALLERS missing",
            &["AUTH_ALLOWED_CALLERS"],
            &[],
            "AUTH_ALLOWED_CALLERS",
        ),
        (
            "AUTH_AUDIENCE empty",
            &[],
            &[("AUTH_AUDIENCE", "")],
            "AUTH_AUDIENCE",
        ),
        (
            "AUTH_AUDIENCE only commas and spaces",
            &[],
            &[("AUTH_AUDIENCE", " , ")],
            "AUTH_AUDIENCE",
        ),
        (
            "AUTH_ALLOWED_CALLERS empty",
            &[],
            &[("AUTH_ALLOWED_CALLERS", "")],
            "AUTH_ALLOWED_CALLERS",
        ),
        (
            "AUTH_ALLOWED_CALLERS only a comma",
            &[],
            &[("AUTH_ALLOWED_CALLERS", ",")],
            "AUTH_ALLOWED_CALLERS",
        ),
        (
            "AUTH_OPENID_CONFIG_URL over http",
            &[],
            &[(
                "AUTH_OPENID_CONFIG_URL",
                "http://127.0.0.1:9/.well-known/openid-configuration",
            )],
            "AUTH_OPENID_CONFIG_URL",
        ),
        (
            "AUTH_OPENID_CONFIG_URL not a URL",
            &[],
            &[("AUTH_OPENID_CONFIG_URL", "login.microsoftonline.com/x")],
            "AUTH_OPENID_CONFIG_URL",
        ),
        (
            "AUTH_JWKS_REFETCH_SECONDS zero",
            &[],
            &[("AUTH_JWKS_REFETCH_SECONDS", "0")],
            "AUTH_JWKS_REFETCH_SECONDS",
        ),
        (
            "AUTH_JWKS_REFETCH_SECONDS above 3600",
            &[],
            &[("AUTH_JWKS_REFETCH_SECONDS", "3601")],
            "AUTH_JWKS_REFETCH_SECONDS",
        ),
        (
            "AUTH_JWKS_REFETCH_SECONDS not a number",
            &[],
            &[("AUTH_JWKS_REFETCH_SECONDS", "soon")],
            "AUTH_JWKS_REFETCH_SECONDS",
        ),
        (
            "AUTH_JWKS_REFETCH_SECONDS negative",
            &[],
            &[("AUTH_JWKS_REFETCH_SECONDS", "-5")],
            "AUTH_JWKS_REFETCH_SECONDS",
        ),
        // Partial configuration fails closed: audience and callers without the tenant that
        // turns the layer on must not mean "no token needed".
        (
            "AUTH_AUDIENCE and AUTH_ALLOWED_CALLERS without AUTH_TENANT_ID",
            &["AUTH_TENANT_ID"],
            &[],
            "AUTH_TENANT_ID",
        ),
    ];

    let refusals: Vec<Refusal<'_>> = cases
        .iter()
        .map(|(description, removed, set, setting)| Refusal {
            description: (*description).to_owned(),
            settings: removed
                .iter()
                .fold(on.clone().set_all(set.iter().copied()), |settings, name| {
                    settings.unset(name)
                }),
            setting,
        })
        .collect();
    let failures = misrefused_startups(&refusals, |_| Vec::new());
    assert!(
        failures.is_empty(),
        "{} of {} bad auth settings misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Asserts that nothing `app` printed contains any of the `(description, token)` tokens, or
/// the signature part of one.
fn assert_not_printed<'a>(app: &TestApp, tokens: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let output = app.output();
    for (description, token) in tokens {
        assert!(
            !output.contains(token),
            "{description}: the token was printed"
        );
        let [_, _, signature] = jws_parts(token);
        assert!(
            signature.is_empty() || !output.contains(signature),
            "{description}: the token's signature was printed"
        );
    }
}

/// A request and what its log line must say: description, token (`None`: no header), status,
/// `auth`, `caller_oid` (`None`: absent).
type LoggedRequest<'a> = (&'a str, Option<String>, u16, &'a str, Option<&'a str>);

#[tokio::test]
async fn auth_outcomes_are_logged_with_the_callers_oid_and_the_token_is_never_printed() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings().set("AUTH_REQUIRED_ROLE", ROLE));
    let stranger = Caller::random();
    let with_role = |caller: &Caller| {
        with(
            fixture.claims_for(Version::V1, caller),
            "roles",
            json!([ROLE]),
        )
    };
    let now = unix_now();
    let requests: Vec<LoggedRequest<'_>> = vec![
        (
            "valid",
            Some(fixture.issuer.sign(&with_role(&fixture.apim))),
            200,
            "ok",
            Some(&fixture.apim.oid),
        ),
        ("no token", None, 401, "missing", None),
        (
            "expired",
            Some(
                fixture
                    .issuer
                    .sign(&with(with_role(&fixture.apim), "exp", json!(now - 600))),
            ),
            401,
            "invalid",
            None,
        ),
        (
            "caller not allowed",
            Some(fixture.issuer.sign(&with_role(&stranger))),
            403,
            "caller_not_allowed",
            Some(&stranger.oid),
        ),
        (
            "role missing",
            Some(fixture.token(Version::V1)),
            403,
            "role_missing",
            Some(&fixture.apim.oid),
        ),
        (
            "v2, valid",
            Some(
                fixture
                    .issuer
                    .sign(&with(fixture.claims(Version::V2), "roles", json!([ROLE]))),
            ),
            200,
            "ok",
            Some(&fixture.apim.oid),
        ),
    ];

    for (description, token, status, _, _) in &requests {
        let response =
            get_with_token(&app, &token_path("dev-1", None), token.as_deref(), &[]).await;
        assert_eq!(response.status().as_u16(), *status, "{description}");
    }
    let lines = app.request_log_lines(requests.len()).await;

    assert_eq!(
        lines.len(),
        requests.len(),
        "one request line per request; stdout:\n{}",
        app.stdout()
    );
    assert_not_printed(
        &app,
        requests
            .iter()
            .filter_map(|(description, token, ..)| Some((*description, token.as_deref()?))),
    );
    for ((description, _, _, auth, caller_oid), line) in requests.iter().zip(&lines) {
        assert_eq!(
            log_text(line, "auth").as_deref(),
            Some(*auth),
            "{description}: `auth` in {line}"
        );
        assert_eq!(
            log_text(line, "caller_oid").as_deref(),
            *caller_oid,
            "{description}: `caller_oid` in {line}"
        );
    }
}

#[tokio::test]
async fn no_token_is_printed_even_at_trace_level() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings().set("RUST_LOG", "trace"));
    let now = unix_now();
    let tokens = [
        ("valid v1", fixture.token(Version::V1)),
        ("valid v2", fixture.token(Version::V2)),
        (
            "expired",
            fixture
                .issuer
                .sign(&with(fixture.claims(Version::V1), "exp", json!(now - 600))),
        ),
        (
            "caller not allowed",
            fixture
                .issuer
                .sign(&fixture.claims_for(Version::V1, &Caller::random())),
        ),
        (
            "unknown kid",
            fixture.issuer.sign_with(
                &fixture.claims(Version::V1),
                &Map::from_iter([("kid".to_owned(), json!("never-published"))]),
                Signer::Published,
            ),
        ),
    ];

    for (route, path) in both_routes() {
        for (description, token) in &tokens {
            let response = get_with_token(&app, &path, Some(token), &[]).await;
            assert!(
                [200, 401, 403].contains(&response.status().as_u16()),
                "{description}, {route}: {}",
                response.status()
            );
        }
    }
    let lines = app.request_log_lines(2 * tokens.len()).await;

    assert_eq!(lines.len(), 2 * tokens.len(), "stdout:\n{}", app.stdout());
    assert_not_printed(&app, tokens.iter().map(|(d, t)| (*d, t.as_str())));
}

#[tokio::test]
async fn without_auth_tenant_id_no_token_is_needed_and_no_auth_field_is_logged() {
    let app = TestApp::spawn(&Settings::base());

    for (description, headers) in [
        ("no Authorization", vec![]),
        (
            "a garbage bearer token",
            vec![("Authorization", "Bearer garbage")],
        ),
    ] {
        let response = app.get(&token_path("dev-1", None), &headers).await;
        assert_issued(response, description).await;
    }
    let lines = app.request_log_lines(2).await;

    assert_eq!(lines.len(), 2, "stdout:\n{}", app.stdout());
    for line in &lines {
        for field in ["auth", "caller_oid", "client_cert"] {
            assert_eq!(
                log_text(line, field),
                None,
                "`{field}` is logged only when its layer is on: {line}"
            );
        }
    }
}

#[tokio::test]
async fn the_ip_allow_list_comes_before_the_token_and_input_validation_after_it() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let valid = fixture.token(Version::V1);
    let denied = [("X-Forwarded-For", DENIED_IP)];
    let bad_device = token_path("bad%20device", None);
    let bad_ttl = format!("{LEGACY_ROUTE}?deviceid=dev-1&ttl=abc");

    let response = get_with_token(&app, &token_path("dev-1", None), Some("garbage"), &denied).await;
    assert_caller_not_allowed(response, "denied IP, invalid token").await;
    let response = get_with_token(&app, &token_path("dev-1", None), None, &denied).await;
    assert_caller_not_allowed(response, "denied IP, no token").await;
    let response = get_with_token(&app, &token_path("dev-1", None), Some(&valid), &denied).await;
    assert_caller_not_allowed(response, "denied IP, valid token").await;

    let response = get_with_token(&app, &bad_device, Some("garbage"), &[]).await;
    assert_invalid_token(response, "invalid token, invalid device id").await;
    let response = get_with_token(&app, &bad_ttl, None, &[]).await;
    assert_no_token(response, "no token, invalid ttl").await;

    let response = get_with_token(&app, &bad_device, Some(&valid), &[]).await;
    assert_problem(response, 400, "valid token, invalid device id").await;
    let response = get_with_token(&app, &bad_ttl, Some(&valid), &[]).await;
    assert_problem(response, 400, "valid token, invalid ttl").await;
}
