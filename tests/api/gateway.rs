//! Issue 22: callers behind a gateway (`GATEWAY_CALLERS`, `AUTH_CALLER_AUDIENCE`) on the real
//! binary, with the Entra ID stand-in issuing every token.
//!
//! A gateway is an API Management instance: its managed identity's token (`Authorization`) says
//! which gateway it is, by `oid`, and it forwards one fact of its kind about the caller behind it
//! — `X-Caller-Subscription` (the escaped subscription id), `X-Caller-Certificate-Thumbprint`
//! (SHA-256) or `X-Caller-Authorization` (the caller's own Entra ID token, validated again). What
//! is checked:
//! - for each kind, the forwarded caller gets exactly the devices its rules name
//!   (`subscription:`, `fwd-cert:`, `caller:`, `caller-role:`), and the rules naming the
//!   gateway's own identity do not apply; subscription ids match in any case, and with two
//!   gateways forwarding subscriptions the keys name the gateway;
//! - every refusal is the one 403 an IP denial gets, with its own reason in the log: headers from
//!   a caller that is not a gateway (also one listed by `appid` only), a delegated gateway token,
//!   a fact of another kind, none, twice (two lines, or a comma), malformed, a forwarded token
//!   that is forged, signed by an unknown key, for another audience, expired or a gateway's own;
//!   a verified token is remembered, but refused once it expires or its key is withdrawn;
//! - the log wordings (`no rule names this caller` apart from `device outside the caller's
//!   DEVICE_SCOPES`) and the audit fields (the gateway's `caller_oid`, `forwarded_kind`,
//!   `forwarded_caller`, `scope`);
//! - no forwarded token in anything printed, at any log level;
//! - each setting that could not work stops the start, naming the setting.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::stand_ins::bearer::{Fixture, with_claim};
use crate::stand_ins::issuer::{Caller, Forgery, Signer, Version, entra_claims};
use crate::support::{
    answers::{TokenFor, assert_caller_not_allowed},
    app::TestApp,
    client_certs,
    clock::unix_now,
    leaks::Secrets,
    logs::log_text,
    routes::{module_path, token_path},
    settings::Settings,
    startup::{Refusal, misrefused_startups_by_case},
};

/// The App ID URI of the app registration the callers behind API Management get tokens for:
/// another registration than the handler's own (`AUTH_AUDIENCE`).
const CALLER_AUDIENCE_URI: &str = "api://iothub-sas-callers";

/// One deployment's identities: three API Management instances, one per kind; a caller allowed
/// directly; an app listed (in `AUTH_ALLOWED_CALLERS` and `GATEWAY_CALLERS`) by its client id;
/// and the back ends behind the gateways.
struct Deployment {
    fixture: Fixture,
    by_subscription: Caller,
    by_certificate: Caller,
    by_token: Caller,
    direct: Caller,
    listed_by_app_id: Caller,
    /// The callers' app registration's client id: the `aud` of their v2 tokens.
    caller_audience_id: String,
    /// Back ends with their own Entra ID tokens: scoped by `oid`, by client id, by role.
    backend_by_oid: Caller,
    backend_by_app_id: Caller,
    backend_by_role: Caller,
    /// A client certificate API Management validated.
    certificate: Vec<u8>,
}

impl Deployment {
    fn new() -> Deployment {
        Deployment {
            fixture: Fixture::new(),
            by_subscription: Caller::random(),
            by_certificate: Caller::random(),
            by_token: Caller::random(),
            direct: Caller::random(),
            listed_by_app_id: Caller::random(),
            caller_audience_id: Caller::random().client_id,
            backend_by_oid: Caller::random(),
            backend_by_app_id: Caller::random(),
            backend_by_role: Caller::random(),
            certificate: client_certs::current("backend-7"),
        }
    }

    fn sha256(&self) -> String {
        client_certs::sha256(&self.certificate)
    }

    /// Every gateway with its own rule for `*` (which must never apply to the callers behind
    /// it), and rules for each kind of forwarded caller.
    fn settings(&self) -> Settings {
        let gateways = json!({
            self.by_subscription.oid.to_uppercase(): "subscription",
            self.by_certificate.oid.clone(): "certificate",
            self.by_token.oid.clone(): "entra",
            self.listed_by_app_id.client_id.clone(): "certificate",
        });
        let scopes = json!({
            self.by_subscription.oid.clone(): ["*"],
            self.by_certificate.oid.clone(): ["*"],
            self.by_token.oid.clone(): ["*"],
            "role:Gateway": ["*"],
            self.direct.oid.clone(): ["direct-*"],
            "subscription:Fleet A": ["fleet-a-*"],
            "subscription:Line 2,West/é": ["line-2-*"],
            format!("fwd-cert:{}", self.sha256().to_uppercase()): ["gw-01", "gw-02"],
            format!("caller:{}", self.backend_by_oid.oid.to_uppercase()): ["sensor-*"],
            format!("caller:{}", self.backend_by_app_id.client_id): ["edge-*"],
            "caller-role:Fleet.B": ["fleet-b-*"],
        });
        let allowed = [
            &self.by_subscription.oid,
            &self.by_certificate.oid,
            &self.by_token.oid,
            &self.direct.oid,
            &self.listed_by_app_id.client_id,
        ]
        .map(String::as_str)
        .join(",");
        self.fixture
            .settings()
            .set("AUTH_ALLOWED_CALLERS", allowed)
            .set("AUTH_ALLOW_DELEGATED", "true")
            .set("GATEWAY_CALLERS", gateways.to_string())
            .set(
                "AUTH_CALLER_AUDIENCE",
                format!("{CALLER_AUDIENCE_URI}, {}", self.caller_audience_id),
            )
            .set("DEVICE_SCOPES", scopes.to_string())
    }

    /// The token an API Management instance (or any caller of the handler) sends, with the role
    /// the gateways' own rules name.
    fn gateway_token(&self, gateway: &Caller) -> String {
        self.fixture
            .issuer
            .sign(&self.gateway_claims(gateway, Version::V1))
    }

    fn gateway_claims(&self, gateway: &Caller, version: Version) -> Map<String, Value> {
        with_claim(
            self.fixture.claims_for(version, gateway),
            "roles",
            json!(["Gateway"]),
        )
    }

    /// A back end's own claims for the callers' app registration.
    fn caller_claims(&self, version: Version, caller: &Caller) -> Map<String, Value> {
        let audience = match version {
            Version::V1 => CALLER_AUDIENCE_URI,
            Version::V2 => &self.caller_audience_id,
        };
        entra_claims(version, self.fixture.issuer.tenant(), audience, caller)
    }

    /// `X-Caller-Authorization`'s value for `claims`, signed by the issuer.
    fn forwarded(&self, claims: &Map<String, Value>) -> String {
        format!("Bearer {}", self.fixture.issuer.sign(claims))
    }
}

/// A header line: name and value.
type Header<'a> = (&'a str, &'a str);
/// The key that allows a request, or why it is refused.
type Verdict<'a> = Result<&'a str, &'a str>;

/// The app's request lines, one per request sent so far, read in order.
struct Lines<'a> {
    app: &'a TestApp,
    seen: usize,
}

impl Lines<'_> {
    /// The line of the request just answered.
    async fn next(&mut self) -> Value {
        self.seen += 1;
        let lines = self.app.request_log_lines(self.seen).await;
        assert!(
            lines.len() >= self.seen,
            "{} lines: {lines:#?}",
            lines.len()
        );
        lines[self.seen - 1].clone()
    }
}

/// `GET path` with `Authorization: Bearer <token>` and `headers`.
async fn get(
    app: &TestApp,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    app.get_with_token(path, Some(token), headers).await
}

/// Asserts the log line's fields: each `(field, value)`, `None` for absent.
fn assert_fields(line: &Value, fields: &[(&str, Option<&str>)], what: &str) {
    for (field, want) in fields {
        assert_eq!(
            log_text(line, field).as_deref(),
            *want,
            "{what}: `{field}` in {line}"
        );
    }
}

#[tokio::test]
async fn each_kind_of_forwarded_caller_gets_exactly_the_devices_its_rules_name() {
    let deployment = Deployment::new();
    let app = TestApp::spawn(&deployment.settings());
    let denial = app.ip_denial_body().await;
    let mut lines = Lines { app: &app, seen: 1 };
    let sha256 = deployment.sha256();

    let subscription_gateway = deployment.gateway_token(&deployment.by_subscription);
    let certificate_gateway = deployment.gateway_token(&deployment.by_certificate);
    let token_gateway = deployment.gateway_token(&deployment.by_token);
    let by_oid =
        deployment.forwarded(&deployment.caller_claims(Version::V1, &deployment.backend_by_oid));
    let by_appid =
        deployment.forwarded(&deployment.caller_claims(Version::V1, &deployment.backend_by_app_id));
    let by_azp =
        deployment.forwarded(&deployment.caller_claims(Version::V2, &deployment.backend_by_app_id));
    let by_role = deployment.forwarded(&with_claim(
        deployment.caller_claims(Version::V2, &deployment.backend_by_role),
        "roles",
        json!(["Fleet.A", "Fleet.B"]),
    ));
    let oid_key = format!("caller:{}", deployment.backend_by_oid.oid.to_uppercase());
    let app_id_key = format!("caller:{}", deployment.backend_by_app_id.client_id);
    let cert_key = format!("fwd-cert:{}", sha256.to_uppercase());
    let (s, c, t) = (
        "X-Caller-Subscription",
        "X-Caller-Certificate-Thumbprint",
        "X-Caller-Authorization",
    );
    let upper = sha256.to_uppercase();
    let unknown = "ab".repeat(32);

    // (gateway token, its header, path, kind, the forwarded caller as logged, the key that
    // allows it — or the reason it is refused)
    type Case<'a> = (&'a str, Header<'a>, String, &'a str, String, Verdict<'a>);
    let cases: Vec<Case<'_>> = vec![
        // Subscriptions: escaped ids, matched without regard to case.
        (
            &subscription_gateway,
            (s, "Fleet%20A"),
            token_path("fleet-a-1", None),
            "subscription",
            "Fleet A".into(),
            Ok("subscription:Fleet A"),
        ),
        (
            &subscription_gateway,
            (s, "fLEET%20a"),
            token_path("fleet-a-2", None),
            "subscription",
            "fLEET a".into(),
            Ok("subscription:Fleet A"),
        ),
        (
            &subscription_gateway,
            (s, "Fleet%20A"),
            module_path("fleet-a-3", "edge", None),
            "subscription",
            "Fleet A".into(),
            Ok("subscription:Fleet A"),
        ),
        (
            &subscription_gateway,
            (s, "Line%202%2CWest%2F%C3%A9"),
            token_path("line-2-x", None),
            "subscription",
            "Line 2,West/é".into(),
            Ok("subscription:Line 2,West/é"),
        ),
        (
            &subscription_gateway,
            (s, "LINE%202%2CWEST%2F%C3%89"),
            token_path("line-2-y", None),
            "subscription",
            "LINE 2,WEST/É".into(),
            Ok("subscription:Line 2,West/é"),
        ),
        (
            &subscription_gateway,
            (s, "Fleet%20A"),
            token_path("fleet-b-1", None),
            "subscription",
            "Fleet A".into(),
            Err("device outside the caller's DEVICE_SCOPES"),
        ),
        // The gateway's own rule (`*`) and role rule (`role:Gateway`) do not apply behind it.
        (
            &subscription_gateway,
            (s, "Fleet%20A"),
            token_path("direct-1", None),
            "subscription",
            "Fleet A".into(),
            Err("device outside the caller's DEVICE_SCOPES"),
        ),
        (
            &subscription_gateway,
            (s, "Fleet%20B"),
            token_path("fleet-a-1", None),
            "subscription",
            "Fleet B".into(),
            Err("no rule names this caller"),
        ),
        (
            &subscription_gateway,
            (s, "Fleet%20A%20"),
            token_path("fleet-a-1", None),
            "subscription",
            "Fleet A ".into(),
            Err("no rule names this caller"),
        ),
        // Certificates: SHA-256 in either case.
        (
            &certificate_gateway,
            (c, &sha256),
            token_path("gw-01", None),
            "certificate",
            sha256.clone(),
            Ok(&cert_key),
        ),
        (
            &certificate_gateway,
            (c, &upper),
            token_path("gw-02", None),
            "certificate",
            sha256.clone(),
            Ok(&cert_key),
        ),
        (
            &certificate_gateway,
            (c, &sha256),
            token_path("gw-03", None),
            "certificate",
            sha256.clone(),
            Err("device outside the caller's DEVICE_SCOPES"),
        ),
        (
            &certificate_gateway,
            (c, &unknown),
            token_path("gw-01", None),
            "certificate",
            unknown.clone(),
            Err("no rule names this caller"),
        ),
        // Entra ID tokens: by `oid`, by `appid` (v1) or `azp` (v2), by role.
        (
            &token_gateway,
            (t, &by_oid),
            token_path("sensor-9", None),
            "entra",
            deployment.backend_by_oid.oid.clone(),
            Ok(&oid_key),
        ),
        (
            &token_gateway,
            (t, &by_oid),
            token_path("edge-9", None),
            "entra",
            deployment.backend_by_oid.oid.clone(),
            Err("device outside the caller's DEVICE_SCOPES"),
        ),
        (
            &token_gateway,
            (t, &by_appid),
            token_path("edge-1", None),
            "entra",
            deployment.backend_by_app_id.oid.clone(),
            Ok(&app_id_key),
        ),
        (
            &token_gateway,
            (t, &by_azp),
            token_path("edge-2", None),
            "entra",
            deployment.backend_by_app_id.oid.clone(),
            Ok(&app_id_key),
        ),
        (
            &token_gateway,
            (t, &by_role),
            token_path("fleet-b-7", None),
            "entra",
            deployment.backend_by_role.oid.clone(),
            Ok("caller-role:Fleet.B"),
        ),
        (
            &token_gateway,
            (t, &by_role),
            token_path("fleet-a-7", None),
            "entra",
            deployment.backend_by_role.oid.clone(),
            Err("device outside the caller's DEVICE_SCOPES"),
        ),
    ];
    for (gateway, header, path, kind, principal, verdict) in &cases {
        let what = format!(
            "{} {} → {path}",
            header.0,
            header.1.get(..24).unwrap_or(header.1)
        );
        let response = get(&app, path, gateway, &[*header]).await;
        match verdict {
            Ok(_) => {
                assert_eq!(
                    response.status(),
                    200,
                    "{what}: {}",
                    response.text().await.unwrap_or_default()
                );
            }
            Err(_) => {
                let body = assert_caller_not_allowed(response, &what).await;
                assert_eq!(body, denial, "{what}: the same body as an IP denial");
            }
        }
        let gateway_oid = match *kind {
            "subscription" => &deployment.by_subscription.oid,
            "certificate" => &deployment.by_certificate.oid,
            _ => &deployment.by_token.oid,
        };
        let line = lines.next().await;
        assert_fields(
            &line,
            &[
                ("caller_oid", Some(gateway_oid)),
                ("auth", Some("ok")),
                ("forwarded", Some("ok")),
                ("forwarded_kind", Some(kind)),
                ("forwarded_caller", Some(principal)),
                ("scope", verdict.ok()),
                ("denied", verdict.err()),
            ],
            &what,
        );
    }

    // Without a forwarded caller, the direct caller is decided by its own rules.
    let direct = deployment.gateway_token(&deployment.direct);
    app.token(
        &token_path("direct-1", None),
        &[("Authorization", &format!("Bearer {direct}"))],
        TokenFor::Device,
    )
    .await;
    let line = lines.next().await;
    assert_fields(
        &line,
        &[
            ("caller_oid", Some(&deployment.direct.oid)),
            ("scope", Some(&deployment.direct.oid)),
            ("forwarded", None),
            ("forwarded_caller", None),
        ],
        "a direct caller",
    );
}

#[tokio::test]
async fn with_two_gateways_forwarding_subscriptions_the_keys_name_the_gateway() {
    let fixture = Fixture::new();
    let (a, b) = (Caller::random(), Caller::random());
    let settings = fixture
        .settings()
        .set("AUTH_ALLOWED_CALLERS", format!("{},{}", a.oid, b.oid))
        .set(
            "GATEWAY_CALLERS",
            json!({a.oid.clone(): "subscription", b.oid.clone(): "subscription"}).to_string(),
        )
        .set(
            "DEVICE_SCOPES",
            json!({
                format!("subscription:{}/Fleet-A", a.oid): ["a-*"],
                format!("subscription:{}/fleet-a", b.oid.to_uppercase()): ["b-*"],
            })
            .to_string(),
        );
    let app = TestApp::spawn(&settings);
    let denial = app.ip_denial_body().await;
    let mut lines = Lines { app: &app, seen: 1 };
    for (gateway, id, device, key) in [
        (
            &a,
            "Fleet-A",
            "a-1",
            Some(format!("subscription:{}/Fleet-A", a.oid)),
        ),
        (&a, "FLEET-A", "b-1", None),
        (
            &b,
            "FLEET-a",
            "b-1",
            Some(format!("subscription:{}/fleet-a", b.oid.to_uppercase())),
        ),
        (&b, "Fleet-A", "a-1", None),
    ] {
        let token = fixture
            .issuer
            .sign(&fixture.claims_for(Version::V2, gateway));
        let what = format!("{id} through {} for {device}", gateway.oid);
        let response = get(
            &app,
            &token_path(device, None),
            &token,
            &[("X-Caller-Subscription", id)],
        )
        .await;
        match &key {
            Some(_) => assert_eq!(response.status(), 200, "{what}"),
            None => {
                let body = assert_caller_not_allowed(response, &what).await;
                assert_eq!(body, denial, "{what}");
            }
        }
        let line = lines.next().await;
        assert_fields(
            &line,
            &[
                ("caller_oid", Some(&gateway.oid)),
                ("forwarded_caller", Some(id)),
                ("scope", key.as_deref()),
                (
                    "denied",
                    key.is_none()
                        .then_some("device outside the caller's DEVICE_SCOPES"),
                ),
            ],
            &what,
        );
    }
}

#[tokio::test]
async fn every_refusal_is_the_one_403_and_the_log_says_which() {
    let deployment = Deployment::new();
    let app = TestApp::spawn(&deployment.settings());
    let denial = app.ip_denial_body().await;
    let mut lines = Lines { app: &app, seen: 1 };
    let issuer = &deployment.fixture.issuer;
    let sha256 = deployment.sha256();

    let subscription_gateway = deployment.gateway_token(&deployment.by_subscription);
    let certificate_gateway = deployment.gateway_token(&deployment.by_certificate);
    let token_gateway = deployment.gateway_token(&deployment.by_token);
    let direct = deployment.gateway_token(&deployment.direct);
    // Its `appid` is in GATEWAY_CALLERS, its `oid` is not: not a gateway.
    let by_app_id = deployment.gateway_token(&deployment.listed_by_app_id);
    let delegated = issuer.sign(&with_claim(
        deployment.gateway_claims(&deployment.by_subscription, Version::V1),
        "scp",
        json!("user_impersonation"),
    ));
    let user_typed = issuer.sign(&with_claim(
        deployment.gateway_claims(&deployment.by_subscription, Version::V2),
        "idtyp",
        json!("user"),
    ));

    let backend = deployment.caller_claims(Version::V1, &deployment.backend_by_oid);
    let valid = deployment.forwarded(&backend);
    let unpublished = format!(
        "Bearer {}",
        issuer.sign_with(&backend, &Map::new(), Signer::Unpublished)
    );
    let alg_none = format!("Bearer {}", issuer.forge(Forgery::AlgNone, &backend));
    let handler_audience = deployment.forwarded(
        &deployment
            .fixture
            .claims_for(Version::V1, &deployment.backend_by_oid),
    );
    let expired = deployment.forwarded(&with_claim(
        backend.clone(),
        "exp",
        json!(unix_now() - 3_600),
    ));
    let own = deployment.forwarded(&deployment.caller_claims(Version::V1, &deployment.by_token));
    let another_gateway =
        deployment.forwarded(&deployment.caller_claims(Version::V2, &deployment.by_subscription));
    let comma = format!("{valid}, {valid}");
    let two_thumbprints = format!("{sha256}, {sha256}");

    let (s, c, t) = (
        "X-Caller-Subscription",
        "X-Caller-Certificate-Thumbprint",
        "X-Caller-Authorization",
    );
    // (what, the caller's token, its headers, the log's `forwarded`)
    let cases: Vec<(&str, &str, Vec<Header<'_>>, &str)> = vec![
        (
            "a direct caller forwarding a subscription",
            &direct,
            vec![(s, "Fleet%20A")],
            "not_a_gateway",
        ),
        (
            "a direct caller with any X-Caller- header",
            &direct,
            vec![("X-Caller-Anything", "x")],
            "not_a_gateway",
        ),
        (
            "a gateway listed by appid only",
            &by_app_id,
            vec![(c, &sha256)],
            "not_a_gateway",
        ),
        (
            "a gateway's delegated token (scp)",
            &delegated,
            vec![(s, "Fleet%20A")],
            "gateway_token_not_app_only",
        ),
        (
            "a gateway's user token (idtyp user)",
            &user_typed,
            vec![(s, "Fleet%20A")],
            "gateway_token_not_app_only",
        ),
        (
            "a second fact of another kind",
            &subscription_gateway,
            vec![(s, "Fleet%20A"), (t, &valid)],
            "other_kind",
        ),
        (
            "a fact of another kind only",
            &subscription_gateway,
            vec![(c, &sha256)],
            "other_kind",
        ),
        (
            "a token gateway with a subscription too",
            &token_gateway,
            vec![(t, &valid), (s, "Fleet%20A")],
            "other_kind",
        ),
        ("no fact", &subscription_gateway, vec![], "missing"),
        (
            "no fact but another X-Caller- header",
            &certificate_gateway,
            vec![("X-Caller-Anything", "x")],
            "other_kind",
        ),
        (
            "two subscription lines",
            &subscription_gateway,
            vec![(s, "Fleet%20A"), (s, "Fleet%20B")],
            "repeated",
        ),
        (
            "two subscriptions joined by the host",
            &subscription_gateway,
            vec![(s, "Fleet%20B, Fleet%20A")],
            "repeated",
        ),
        (
            "two thumbprints joined by the host",
            &certificate_gateway,
            vec![(c, &two_thumbprints)],
            "repeated",
        ),
        (
            "two thumbprint lines",
            &certificate_gateway,
            vec![(c, &sha256), (c, &sha256)],
            "repeated",
        ),
        (
            "two caller tokens joined by the host",
            &token_gateway,
            vec![(t, &comma)],
            "repeated",
        ),
        (
            "an unescaped subscription id",
            &subscription_gateway,
            vec![(s, "Fleet A")],
            "malformed",
        ),
        (
            "a broken escape",
            &subscription_gateway,
            vec![(s, "Fleet%2")],
            "malformed",
        ),
        (
            "an escaped character API Management refuses",
            &subscription_gateway,
            vec![(s, "Fleet%3AA")],
            "malformed",
        ),
        (
            "an empty subscription id",
            &subscription_gateway,
            vec![(s, "")],
            "malformed",
        ),
        (
            "a SHA-1 thumbprint",
            &certificate_gateway,
            vec![(c, &sha256[..40])],
            "malformed",
        ),
        (
            "a thumbprint with colons",
            &certificate_gateway,
            vec![(c, "ab:cd")],
            "malformed",
        ),
        (
            "another scheme",
            &token_gateway,
            vec![(t, "Basic dXNlcjpwYXNz")],
            "malformed",
        ),
        (
            "an empty bearer",
            &token_gateway,
            vec![(t, "Bearer ")],
            "malformed",
        ),
        (
            "a token signed by an unknown key",
            &token_gateway,
            vec![(t, &unpublished)],
            "invalid_token",
        ),
        (
            "an alg:none forgery",
            &token_gateway,
            vec![(t, &alg_none)],
            "invalid_token",
        ),
        (
            "a token for the handler's own audience",
            &token_gateway,
            vec![(t, &handler_audience)],
            "invalid_token",
        ),
        (
            "an expired token",
            &token_gateway,
            vec![(t, &expired)],
            "invalid_token",
        ),
        (
            "not a token",
            &token_gateway,
            vec![(t, "Bearer abc.def.ghi")],
            "invalid_token",
        ),
        (
            "the gateway's own token forwarded",
            &token_gateway,
            vec![(t, &own)],
            "gateway_token",
        ),
        (
            "another gateway's token forwarded",
            &token_gateway,
            vec![(t, &another_gateway)],
            "gateway_token",
        ),
    ];
    for (what, token, headers, reason) in &cases {
        let response = get(&app, &token_path("fleet-a-1", None), token, headers).await;
        let body = assert_caller_not_allowed(response, what).await;
        assert_eq!(&body, &denial, "{what}: the same body as an IP denial");
        let line = lines.next().await;
        assert_fields(&line, &[("forwarded", Some(reason)), ("scope", None)], what);
    }

    // Each valid caller of the table gets its token once its headers are right, so the refusals
    // above were the headers' doing; and its `forwarded_caller` is logged even when refused.
    let line_of_own = {
        let response = get(
            &app,
            &token_path("sensor-1", None),
            &token_gateway,
            &[(t, &own)],
        )
        .await;
        assert_eq!(response.status(), 403);
        lines.next().await
    };
    assert_fields(
        &line_of_own,
        &[
            ("forwarded_kind", Some("entra")),
            ("forwarded_caller", Some(&deployment.by_token.oid)),
        ],
        "a gateway's own token forwarded",
    );
    for (token, header) in [
        (&subscription_gateway, (s, "Fleet%20A")),
        (&certificate_gateway, (c, sha256.as_str())),
        (
            &token_gateway,
            (t, valid.replace("Bearer", "bearer").as_str()),
        ),
    ] {
        let path = match header.0 {
            "X-Caller-Subscription" => token_path("fleet-a-1", None),
            "X-Caller-Certificate-Thumbprint" => token_path("gw-01", None),
            _ => token_path("sensor-1", None),
        };
        let response = get(&app, &path, token, &[header]).await;
        assert_eq!(response.status(), 200, "{}", header.0);
        lines.next().await;
    }
}

/// Verified tokens are remembered (the RS256 check is most of a request's cost), but a
/// remembered token still expires: the gateway's own token, and the caller's it forwards, each
/// valid for a few more seconds (the five minutes of leeway all but spent), pass twice and are
/// refused once their time is up.
#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let deployment = Deployment::new();
    let app = TestApp::spawn(&deployment.settings());
    let issued_at = unix_now();
    let almost_spent = json!(issued_at - 300 + 4);
    let gateway = deployment.gateway_token(&deployment.by_token);
    let expiring_gateway = deployment.fixture.issuer.sign(&with_claim(
        deployment.gateway_claims(&deployment.by_token, Version::V1),
        "exp",
        almost_spent.clone(),
    ));
    let caller = deployment.caller_claims(Version::V2, &deployment.backend_by_oid);
    let forwarded = deployment.forwarded(&caller);
    let expiring_forwarded = deployment.forwarded(&with_claim(caller, "exp", almost_spent));
    let path = token_path("sensor-1", None);
    let requests = [
        (&expiring_gateway, &forwarded, "the gateway's token"),
        (&gateway, &expiring_forwarded, "the forwarded token"),
    ];
    for _ in 0..2 {
        for (token, value, what) in requests {
            let response = get(&app, &path, token, &[("X-Caller-Authorization", value)]).await;
            assert_eq!(response.status(), 200, "{what}, still valid");
        }
    }
    while unix_now() < issued_at + 6 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let response = get(
        &app,
        &path,
        &expiring_gateway,
        &[("X-Caller-Authorization", &forwarded)],
    )
    .await;
    assert_eq!(response.status(), 401, "the gateway's token, expired");
    let response = get(
        &app,
        &path,
        &gateway,
        &[("X-Caller-Authorization", &expiring_forwarded)],
    )
    .await;
    let body = assert_caller_not_allowed(response, "the forwarded token, expired").await;
    assert_eq!(body["status"], 403);
}

/// A remembered verification holds only while the key that made it is still published: once
/// Entra ID withdraws the key (and the handler has read the new key set), the gateway's token
/// and the forwarded token it signed are refused, though their text is what passed before.
#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_is_withdrawn() {
    let deployment = Deployment::new();
    let app = TestApp::spawn(&deployment.settings().set("AUTH_JWKS_REFETCH_SECONDS", "1"));
    let issuer = &deployment.fixture.issuer;
    let path = token_path("sensor-1", None);
    let caller = deployment.caller_claims(Version::V1, &deployment.backend_by_oid);
    let old_gateway = deployment.gateway_token(&deployment.by_token);
    let old_forwarded = deployment.forwarded(&caller);
    for _ in 0..2 {
        let response = get(
            &app,
            &path,
            &old_gateway,
            &[("X-Caller-Authorization", &old_forwarded)],
        )
        .await;
        assert_eq!(response.status(), 200, "both signed by the published key");
    }

    let old_kid = issuer.kid();
    issuer.rollover();
    issuer.withdraw(&old_kid);
    let new_gateway = deployment.gateway_token(&deployment.by_token);
    let new_forwarded = deployment.forwarded(&caller);
    // A token with the new `kid` makes the handler read the key set again (at most once a second).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let response = get(
        &app,
        &path,
        &new_gateway,
        &[("X-Caller-Authorization", &new_forwarded)],
    )
    .await;
    assert_eq!(response.status(), 200, "both signed by the new key");

    let response = get(
        &app,
        &path,
        &old_gateway,
        &[("X-Caller-Authorization", &new_forwarded)],
    )
    .await;
    assert_eq!(
        response.status(),
        401,
        "the gateway's token, its key withdrawn"
    );
    let response = get(
        &app,
        &path,
        &new_gateway,
        &[("X-Caller-Authorization", &old_forwarded)],
    )
    .await;
    assert_caller_not_allowed(response, "the forwarded token, its key withdrawn").await;
    let line = app.request_log_lines(5).await.pop().expect("a line");
    assert_fields(
        &line,
        &[("forwarded", Some("invalid_token"))],
        "withdrawn key",
    );
}

#[tokio::test]
async fn no_forwarded_token_is_printed_at_any_log_level() {
    let deployment = Deployment::new();
    let app = TestApp::spawn(&deployment.settings().set("RUST_LOG", "trace"));
    let gateway = deployment.gateway_token(&deployment.by_token);
    let backend = deployment.caller_claims(Version::V2, &deployment.backend_by_oid);
    let tokens = [
        deployment.forwarded(&backend),
        deployment.forwarded(&with_claim(
            backend.clone(),
            "exp",
            json!(unix_now() - 3_600),
        )),
        deployment.forwarded(&deployment.caller_claims(Version::V1, &deployment.by_token)),
        format!(
            "Bearer {}",
            deployment
                .fixture
                .issuer
                .sign_with(&backend, &Map::new(), Signer::Unpublished)
        ),
    ];
    let mut secrets = Secrets::default();
    for (i, value) in tokens.iter().enumerate() {
        let token = value.trim_start_matches("Bearer ");
        let [_, payload, signature] = token.split('.').collect::<Vec<_>>()[..] else {
            panic!("a JWS: {token}");
        };
        secrets.add(&format!("forwarded token {i}'s payload"), payload);
        secrets.add(&format!("forwarded token {i}'s signature"), signature);
        let _ = get(
            &app,
            &token_path("sensor-1", None),
            &gateway,
            &[("X-Caller-Authorization", value)],
        )
        .await;
        // Also where a caller that is not a gateway sends it.
        let _ = app
            .get(
                &token_path("sensor-1", None),
                &[("X-Caller-Authorization", value)],
            )
            .await;
    }
    let lines = app.request_log_lines(2 * tokens.len()).await;
    assert!(lines.len() >= 2 * tokens.len(), "{lines:#?}");
    secrets.assert_absent_from(&app.output(), "RUST_LOG=trace");
}

#[test]
fn settings_that_could_not_work_stop_the_start_naming_the_setting() {
    let tenant = Caller::random().oid;
    let (gateway, other) = (Caller::random().oid, Caller::random().oid);
    let pin = "a1b2c3d4e5f60718293a4b5c6d7e8f9001122334";
    let sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let bearer = || {
        Settings::base()
            .set("AUTH_TENANT_ID", &tenant)
            .set("AUTH_AUDIENCE", "api://iothub-sas-handler")
            .set("AUTH_ALLOWED_CALLERS", format!("{gateway},{other}"))
            .set("DEVICE_SCOPES", json!({"role:A": ["x"]}).to_string())
    };
    let gateways = |pairs: &[(&str, &str)]| {
        let object: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(oid, kind)| ((*oid).to_owned(), json!(kind)))
            .collect();
        Value::Object(object).to_string()
    };
    let subscription = gateways(&[(&gateway, "subscription")]);
    let entra = gateways(&[(&gateway, "entra")]);
    let scopes = |key: &str| json!({key: ["x"]}).to_string();
    // (what, settings, the setting named, a word the problem must contain)
    let cases: Vec<(&str, Settings, &str, &str)> = vec![
        ("GATEWAY_CALLERS not JSON", bearer().set("GATEWAY_CALLERS", "apim=entra"), "GATEWAY_CALLERS", "JSON object"),
        ("GATEWAY_CALLERS not an object", bearer().set("GATEWAY_CALLERS", r#"["entra"]"#), "GATEWAY_CALLERS", "JSON object"),
        ("GATEWAY_CALLERS empty", bearer().set("GATEWAY_CALLERS", "{}"), "GATEWAY_CALLERS", "no gateway"),
        ("a key that is not a GUID", bearer().set("GATEWAY_CALLERS", r#"{"apim": "entra"}"#), "GATEWAY_CALLERS", "GUID"),
        ("an unknown kind", bearer().set("GATEWAY_CALLERS", gateways(&[(&gateway, "key")])), "GATEWAY_CALLERS", "subscription"),
        (
            "the same gateway twice",
            bearer().set("GATEWAY_CALLERS", gateways(&[(&gateway, "entra"), (&gateway.to_uppercase(), "entra")])),
            "GATEWAY_CALLERS",
            "already names",
        ),
        (
            "a gateway not in AUTH_ALLOWED_CALLERS",
            bearer().set("AUTH_ALLOWED_CALLERS", &other).set("GATEWAY_CALLERS", &subscription),
            "GATEWAY_CALLERS",
            "AUTH_ALLOWED_CALLERS",
        ),
        (
            "no bearer layer",
            Settings::base()
                .set("CLIENT_CERT_THUMBPRINTS", pin)
                .set("DEVICE_SCOPES", scopes(&format!("cert:{pin}")))
                .set("GATEWAY_CALLERS", &subscription),
            "GATEWAY_CALLERS",
            "AUTH_TENANT_ID",
        ),
        ("no DEVICE_SCOPES", bearer().unset("DEVICE_SCOPES").set("GATEWAY_CALLERS", &subscription), "GATEWAY_CALLERS", "DEVICE_SCOPES"),
        ("an entra gateway without AUTH_CALLER_AUDIENCE", bearer().set("GATEWAY_CALLERS", &entra), "AUTH_CALLER_AUDIENCE", "is required"),
        (
            "AUTH_CALLER_AUDIENCE without an entra gateway",
            bearer().set("GATEWAY_CALLERS", &subscription).set("AUTH_CALLER_AUDIENCE", "api://callers"),
            "AUTH_CALLER_AUDIENCE",
            "no gateway",
        ),
        ("AUTH_CALLER_AUDIENCE without GATEWAY_CALLERS", bearer().set("AUTH_CALLER_AUDIENCE", "api://callers"), "AUTH_CALLER_AUDIENCE", "GATEWAY_CALLERS"),
        (
            "AUTH_CALLER_AUDIENCE equal to AUTH_AUDIENCE",
            bearer().set("GATEWAY_CALLERS", &entra).set("AUTH_CALLER_AUDIENCE", "api://iothub-sas-handler"),
            "AUTH_CALLER_AUDIENCE",
            "AUTH_AUDIENCE",
        ),
        (
            "AUTH_CALLER_AUDIENCE sharing one of AUTH_AUDIENCE",
            bearer()
                .set("AUTH_AUDIENCE", format!("api://iothub-sas-handler,{other}"))
                .set("GATEWAY_CALLERS", &entra)
                .set("AUTH_CALLER_AUDIENCE", format!("api://callers, {}", other.to_uppercase())),
            "AUTH_CALLER_AUDIENCE",
            "AUTH_AUDIENCE",
        ),
        ("a subscription key without gateways", bearer().set("DEVICE_SCOPES", scopes("subscription:Fleet A")), "DEVICE_SCOPES", "GATEWAY_CALLERS"),
        (
            "a subscription key without a subscription gateway",
            bearer().set("GATEWAY_CALLERS", &entra).set("AUTH_CALLER_AUDIENCE", "api://callers").set("DEVICE_SCOPES", scopes("subscription:Fleet A")),
            "DEVICE_SCOPES",
            "\"subscription\"",
        ),
        (
            "a fwd-cert key without a certificate gateway",
            bearer().set("GATEWAY_CALLERS", &subscription).set("DEVICE_SCOPES", scopes(&format!("fwd-cert:{sha256}"))),
            "DEVICE_SCOPES",
            "\"certificate\"",
        ),
        (
            "a caller key without an entra gateway",
            bearer().set("GATEWAY_CALLERS", &subscription).set("DEVICE_SCOPES", scopes(&format!("caller:{other}"))),
            "DEVICE_SCOPES",
            "\"entra\"",
        ),
        (
            "a caller-role key without an entra gateway",
            bearer().set("GATEWAY_CALLERS", &subscription).set("DEVICE_SCOPES", scopes("caller-role:Fleet.A")),
            "DEVICE_SCOPES",
            "\"entra\"",
        ),
        (
            "a caller key with an entra gateway and no AUTH_CALLER_AUDIENCE",
            bearer().set("GATEWAY_CALLERS", &entra).set("DEVICE_SCOPES", scopes(&format!("caller:{other}"))),
            "AUTH_CALLER_AUDIENCE",
            "is required",
        ),
        (
            "an unqualified subscription key with two subscription gateways",
            bearer()
                .set("GATEWAY_CALLERS", gateways(&[(&gateway, "subscription"), (&other, "subscription")]))
                .set("DEVICE_SCOPES", scopes("subscription:Fleet A")),
            "DEVICE_SCOPES",
            "name the gateway",
        ),
        (
            "a subscription key naming a gateway that forwards no subscriptions",
            bearer()
                .set("GATEWAY_CALLERS", gateways(&[(&gateway, "subscription"), (&other, "certificate")]))
                .set("DEVICE_SCOPES", scopes(&format!("subscription:{other}/Fleet A"))),
            "DEVICE_SCOPES",
            "does not list",
        ),
        (
            "the same subscription in both key forms",
            bearer()
                .set("GATEWAY_CALLERS", &subscription)
                .set("DEVICE_SCOPES", json!({"subscription:fleet a": ["x"], format!("subscription:{gateway}/Fleet A"): ["y"]}).to_string()),
            "DEVICE_SCOPES",
            "already names",
        ),
        (
            "a subscription id API Management would refuse",
            bearer().set("GATEWAY_CALLERS", &subscription).set("DEVICE_SCOPES", scopes("subscription:a?b")),
            "DEVICE_SCOPES",
            "subscription:ID",
        ),
        (
            "a fwd-cert key with a SHA-1 thumbprint",
            bearer().set("GATEWAY_CALLERS", gateways(&[(&gateway, "certificate")])).set("DEVICE_SCOPES", scopes(&format!("fwd-cert:{pin}"))),
            "DEVICE_SCOPES",
            "SHA-256",
        ),
        (
            "a cert key that is not pinned",
            Settings::base().set("CLIENT_CERT_THUMBPRINTS", pin).set("DEVICE_SCOPES", scopes(&format!("cert:{sha256}"))),
            "DEVICE_SCOPES",
            "CLIENT_CERT_THUMBPRINTS",
        ),
    ];
    let wanted: HashMap<String, &str> = cases
        .iter()
        .map(|(what, _, _, word)| ((*what).to_owned(), *word))
        .collect();
    let refusals: Vec<Refusal<'_>> = cases
        .into_iter()
        .map(|(what, settings, setting, _)| Refusal {
            description: what.to_owned(),
            settings,
            setting,
        })
        .collect();
    let problems = misrefused_startups_by_case(&refusals, |case, failure| {
        let word = wanted[&case.description];
        if failure.stderr.contains(word) {
            Vec::new()
        } else {
            vec![format!("the problem does not say `{word}`")]
        }
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
