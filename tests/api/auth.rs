//! The bearer-token layer (issue 5): with `AUTH_TENANT_ID` set, each request must carry an
//! Entra ID access token, as API Management's managed identity sends it, from an allowed caller.
//!
//! The tokens come from an independent issuer (`stand_ins::issuer`, oauth2-mock-server over
//! HTTPS), which the handler finds through `AUTH_OPENID_CONFIG_URL` and trusts through
//! `SSL_CERT_FILE`. What is checked, through the spawned binary only:
//! - valid v1 and v2 tokens get a SAS token on both routes; the caller is matched by `oid`, or
//!   by `appid` (v1) / `azp` (v2); `exp`/`nbf` have five minutes of leeway;
//! - no bearer token → 401 `WWW-Authenticate: Bearer`; any invalid token → 401
//!   `Bearer error="invalid_token"` with one body whatever failed — `aud` or `iss` as an array
//!   and a user's delegated token (`scp`) included; `AUTH_ALLOW_DELEGATED=true` lets the latter
//!   through;
//! - a valid token from a caller not allowed, or without the required role → the 403 an IP
//!   denial gets;
//! - a new signing key at the issuer is picked up without a restart, unknown `kid`s re-fetch
//!   the key set at most once per `AUTH_JWKS_REFETCH_SECONDS`, and no key set → 503;
//! - the order IP → token → input; the log fields `auth` and `caller_oid`, and never the token.
//!
//! Bad `AUTH_*` settings are in `bad_settings`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stand_ins::bearer::{AUDIENCE_URI, Fixture, ROLE, with_claim};
use crate::stand_ins::issuer::{Caller, Forgery, Signer, Version, v1_issuer, v2_issuer};
use crate::support::{
    answers::{
        assert_caller_not_allowed, assert_invalid_token, assert_issued, assert_no_token,
        assert_problem, assert_unavailable, challenge, media_type,
    },
    app::TestApp,
    clock::unix_now,
    leaks::Secrets,
    logs::log_text,
    routes::{LEGACY_ROUTE, both_routes, token_path},
    settings::{DENIED_IP, Settings},
    tls::client_trusting,
    waiting::wait_until,
};

/// `header.payload.signature` → the three parts.
fn jws_parts(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    [parts[0], parts[1], parts[2]]
}

#[tokio::test]
async fn a_valid_v1_token_from_api_management_gets_a_sas_token_on_both_routes() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let token = fixture.token(Version::V1);

    for (route, path) in both_routes() {
        let response = app.get_with_token(&path, Some(&token), &[]).await;
        assert_issued(response, &format!("v1 token, {route}")).await;
    }
}

#[tokio::test]
async fn a_valid_v2_token_gets_a_sas_token_on_both_routes() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let token = fixture.token(Version::V2);

    for (route, path) in both_routes() {
        let response = app.get_with_token(&path, Some(&token), &[]).await;
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
        let response = app
            .get_with_token(&token_path("dev-1", None), Some(&token), &[])
            .await;
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
            with_claim(fixture.claims(Version::V1), "exp", json!(now - 120)),
        ),
        (
            "valid in two minutes",
            with_claim(fixture.claims(Version::V1), "nbf", json!(now + 120)),
        ),
    ];

    for (description, claims) in cases {
        let token = fixture.issuer.sign(&claims);
        let response = app
            .get_with_token(&token_path("dev-1", None), Some(&token), &[])
            .await;
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

/// The claims a token carries, decoded from its payload (to check that the issuer signed what it
/// was given).
fn payload(token: &str) -> Value {
    let [_, payload, _] = jws_parts(token);
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .expect("a JWS payload is base64url");
    serde_json::from_slice(&json).expect("a JWT payload is JSON")
}

/// `claims` as a signed-in user's delegated token for the same app: a `scp` claim (and the
/// user's `name`), as Entra issues when the app calls on the user's behalf.
fn delegated(claims: Map<String, Value>) -> Map<String, Value> {
    with_claim(
        with_claim(claims, "scp", json!("user_impersonation")),
        "name",
        json!("A Signed-In User"),
    )
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
            with_claim(
                with_claim(v1(), "exp", json!(now - 600)),
                "nbf",
                json!(now - 4200),
            ),
        ),
        (
            "valid only in ten minutes".into(),
            with_claim(v1(), "nbf", json!(now + 600)),
        ),
        ("without exp".into(), with_claim(v1(), "exp", Value::Null)),
        (
            "exp not a number".into(),
            with_claim(v1(), "exp", json!((now + 3600).to_string())),
        ),
        (
            "for another audience".into(),
            with_claim(v1(), "aud", json!("api://some-other-api")),
        ),
        (
            "audience differing in case".into(),
            with_claim(v1(), "aud", json!(AUDIENCE_URI.to_uppercase())),
        ),
        (
            "audience with a trailing slash".into(),
            with_claim(v1(), "aud", json!(format!("{AUDIENCE_URI}/"))),
        ),
        ("without aud".into(), with_claim(v1(), "aud", Value::Null)),
        (
            "v1 issuer of another tenant".into(),
            with_claim(v1(), "iss", json!(v1_issuer(&other_tenant))),
        ),
        (
            "v2 issuer of another tenant".into(),
            with_claim(v2(), "iss", json!(v2_issuer(&other_tenant))),
        ),
        (
            "v1 issuer without its trailing slash".into(),
            with_claim(
                v1(),
                "iss",
                json!(v1_issuer(tenant).trim_end_matches('/').to_owned()),
            ),
        ),
        (
            "v2 issuer with a trailing slash".into(),
            with_claim(v2(), "iss", json!(format!("{}/", v2_issuer(tenant)))),
        ),
        (
            "the issuer stand-in's own URL as issuer".into(),
            with_claim(v1(), "iss", json!(issuer.base_url())),
        ),
        ("without iss".into(), with_claim(v1(), "iss", Value::Null)),
        // `aud` and `iss` are single strings: an array is refused even when it holds only an
        // accepted value (the JWT crate alone would accept one).
        (
            "aud an array holding only the accepted audience".into(),
            with_claim(v1(), "aud", json!([AUDIENCE_URI])),
        ),
        (
            "aud an array holding the accepted audience and another".into(),
            with_claim(v1(), "aud", json!([AUDIENCE_URI, "api://some-other-api"])),
        ),
        (
            "iss an array holding the tenant's v1 issuer".into(),
            with_claim(v1(), "iss", json!([v1_issuer(tenant)])),
        ),
        (
            "iss an array holding the tenant's v2 issuer".into(),
            with_claim(v2(), "iss", json!([v2_issuer(tenant)])),
        ),
        // A signed-in user's delegated token (`scp`) from the allowed app: only app-only tokens
        // pass unless AUTH_ALLOW_DELEGATED=true.
        ("a v1 delegated token (scp)".into(), delegated(v1())),
        ("a v2 delegated token (scp)".into(), delegated(v2())),
    ];
    let mut tokens: Vec<(String, String)> = cases
        .into_iter()
        .map(|(description, claims)| {
            let token = issuer.sign(&claims);
            // The issuer must have signed the claims as given: arrays as arrays, `scp` kept.
            for claim in ["aud", "iss", "scp"] {
                if let Some(given) = claims.get(claim).filter(|v| !v.is_null()) {
                    assert_eq!(&payload(&token)[claim], given, "{description}: `{claim}`");
                }
            }
            (description, token)
        })
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
            let response = app.get_with_token(&path, Some(token), &[]).await;
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
    let response = app
        .get_with_token(&both_routes()[0].1, Some(&fixture.token(Version::V1)), &[])
        .await;
    assert_issued(response, "a valid token after the invalid ones").await;
}

#[tokio::test]
async fn a_users_delegated_token_passes_only_with_auth_allow_delegated_true() {
    let fixture = Fixture::new();
    let path = token_path("dev-1", None);
    let app_only = fixture.token(Version::V1);
    let delegated_tokens = [Version::V1, Version::V2]
        .map(|version| fixture.issuer.sign(&delegated(fixture.claims(version))));
    let aud_array = fixture.issuer.sign(&with_claim(
        fixture.claims(Version::V1),
        "aud",
        json!([AUDIENCE_URI]),
    ));

    for (setting, allowed) in [(None, false), (Some("false"), false), (Some("true"), true)] {
        let settings = match setting {
            Some(value) => fixture.settings().set("AUTH_ALLOW_DELEGATED", value),
            None => fixture.settings(),
        };
        let app = TestApp::spawn(&settings);
        for (version, token) in ["v1", "v2"].iter().zip(&delegated_tokens) {
            let context = format!("{version} delegated token, AUTH_ALLOW_DELEGATED={setting:?}");
            let response = app.get_with_token(&path, Some(token), &[]).await;
            if allowed {
                assert_issued(response, &context).await;
            } else {
                assert_invalid_token(response, &context).await;
            }
        }
        // Whatever the setting: an app-only token passes, an `aud` array does not.
        let context = format!("AUTH_ALLOW_DELEGATED={setting:?}");
        let response = app.get_with_token(&path, Some(&app_only), &[]).await;
        assert_issued(response, &format!("app-only token, {context}")).await;
        let response = app.get_with_token(&path, Some(&aud_array), &[]).await;
        assert_invalid_token(response, &format!("aud array, {context}")).await;
        let lines = app.request_log_lines(4).await;
        let auth: Vec<Option<String>> = lines.iter().map(|l| log_text(l, "auth")).collect();
        let delegated = if allowed { "ok" } else { "invalid" };
        assert_eq!(
            auth,
            [delegated, delegated, "ok", "invalid"].map(|a| Some(a.to_owned())),
            "{context}: the `auth` log field"
        );
        assert_not_printed(
            &app,
            [
                ("v1 delegated", delegated_tokens[0].as_str()),
                ("v2 delegated", &delegated_tokens[1]),
            ],
        );
    }
}

#[tokio::test]
async fn a_valid_token_from_a_caller_not_in_the_list_gets_the_403_an_ip_denial_gets() {
    let fixture = Fixture::new();
    let app = TestApp::spawn(&fixture.settings());
    let ip_denial = app.ip_denial_body().await;
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
                let response = app.get_with_token(&path, Some(&token), &[]).await;
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
    let ip_denial = app.ip_denial_body().await;
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
            let claims = with_claim(
                fixture.claims(Version::V1),
                "roles",
                roles.clone().unwrap_or(Value::Null),
            );
            let token = fixture.issuer.sign(&claims);
            let context = format!("{description}, {route}");
            let response = app.get_with_token(&path, Some(&token), &[]).await;
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
        app.get_with_token(&path, Some(&old_token), &[]).await,
        "the first key",
    )
    .await;
    let fetches_before = fixture.issuer.requests("/jwks");

    fixture.issuer.rollover();
    let new_token = fixture.token(Version::V1);
    // The handler re-fetches for an unknown kid at most once a second here; by the time that
    // second has passed since its last fetch, the new key must be found.
    wait_until(
        Duration::from_secs(5),
        "a token signed with the new key to be accepted",
        || async {
            let response = app.get_with_token(&path, Some(&new_token), &[]).await;
            response.status() == 200
        },
    )
    .await;

    assert!(
        fixture.issuer.requests("/jwks") > fetches_before,
        "the key set was fetched again"
    );
    assert_issued(
        app.get_with_token(&path, Some(&old_token), &[]).await,
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
        app.get_with_token(&path, Some(&fixture.token(Version::V1)), &[])
            .await,
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
        let response = app.get_with_token(&path, Some(&token), &[]).await;
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
        let response = app
            .get_with_token(
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
        let response = app.get_with_token(&path, Some(&token), &[]).await;
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

    let response = app.get_with_token(&path, Some(&token), &[]).await;
    assert_unavailable(response, "issuer answering 503").await;

    fixture.issuer.set_outage(false);
    wait_until(
        Duration::from_secs(10),
        "tokens to be accepted once the issuer is back",
        || async { app.get_with_token(&path, Some(&token), &[]).await.status() == 200 },
    )
    .await;
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
    let client = client_trusting(fixture.issuer.ca_pem())
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

    let response = app
        .get_with_token(
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

/// Asserts that nothing `app` printed contains any of the `(description, token)` tokens, or
/// the signature part of one.
fn assert_not_printed<'a>(app: &TestApp, tokens: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let mut secrets = Secrets::default();
    for (description, token) in tokens {
        secrets.add(&format!("{description} token"), token);
        let [_, _, signature] = jws_parts(token);
        secrets.add(&format!("{description} token's signature"), signature);
    }
    secrets.assert_absent_from(&app.output(), "bearer tokens");
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
        with_claim(
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
            Some(fixture.issuer.sign(&with_claim(
                with_role(&fixture.apim),
                "exp",
                json!(now - 600),
            ))),
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
            Some(fixture.issuer.sign(&with_claim(
                fixture.claims(Version::V2),
                "roles",
                json!([ROLE]),
            ))),
            200,
            "ok",
            Some(&fixture.apim.oid),
        ),
    ];

    for (description, token, status, _, _) in &requests {
        let response = app
            .get_with_token(&token_path("dev-1", None), token.as_deref(), &[])
            .await;
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
            fixture.issuer.sign(&with_claim(
                fixture.claims(Version::V1),
                "exp",
                json!(now - 600),
            )),
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
            let response = app.get_with_token(&path, Some(token), &[]).await;
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

    let response = app
        .get_with_token(&token_path("dev-1", None), Some("garbage"), &denied)
        .await;
    assert_caller_not_allowed(response, "denied IP, invalid token").await;
    let response = app
        .get_with_token(&token_path("dev-1", None), None, &denied)
        .await;
    assert_caller_not_allowed(response, "denied IP, no token").await;
    let response = app
        .get_with_token(&token_path("dev-1", None), Some(&valid), &denied)
        .await;
    assert_caller_not_allowed(response, "denied IP, valid token").await;

    let response = app.get_with_token(&bad_device, Some("garbage"), &[]).await;
    assert_invalid_token(response, "invalid token, invalid device id").await;
    let response = app.get_with_token(&bad_ttl, None, &[]).await;
    assert_no_token(response, "no token, invalid ttl").await;

    let response = app.get_with_token(&bad_device, Some(&valid), &[]).await;
    assert_problem(response, 400, "valid token, invalid device id").await;
    let response = app.get_with_token(&bad_ttl, Some(&valid), &[]).await;
    assert_problem(response, 400, "valid token, invalid ttl").await;
}
