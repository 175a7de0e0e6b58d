//! Issue 13: per-caller scoping (`DEVICE_SCOPES`) on the real binary.
//!
//! Callers are told apart as the layers establish them: bearer tokens from the issuer stand-in
//! (the caller's `oid`, its `appid` in v1 tokens or `azp` in v2, and its `roles`) and client
//! certificates (SHA-1 or SHA-256 thumbprint, any case). Each caller may get tokens for the union
//! of the rules that match it — exact ids, `prefix*`, `*` — and for nothing else: a device outside
//! that union, or a caller no rule names, gets the same 403 as a caller outside `ALLOWED_IPS`
//! (the log tells the two apart). The
//! id checked is the device's, also for a module token, and the registration's for a DPS token.
//! The log line names the key that allowed a token, or why it was refused.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::stand_ins::bearer::Fixture;
use crate::stand_ins::issuer::{Caller, Version};
use crate::support::{
    answers::{TokenFor, assert_caller_not_allowed},
    app::TestApp,
    client_certs::{self, CLIENT_CERT_HEADER},
    logs::log_text,
    routes::{module_path, registration_path, token_path},
    settings::Settings,
    startup::{Refusal, misrefused_startups},
    waiting::poll,
};

/// Three callers the bearer layer allows: one scoped by object id, one by client id, one by role.
struct Callers {
    fixture: Fixture,
    by_oid: Caller,
    by_client_id: Caller,
    by_role: Caller,
    unscoped: Caller,
}

impl Callers {
    fn new() -> Callers {
        Callers {
            fixture: Fixture::new(),
            by_oid: Caller::random(),
            by_client_id: Caller::random(),
            by_role: Caller::random(),
            unscoped: Caller::random(),
        }
    }

    /// The bearer layer allowing all four callers, and `scopes`.
    fn settings(&self, scopes: &str) -> Settings {
        let allowed = [
            &self.by_oid,
            &self.by_client_id,
            &self.by_role,
            &self.unscoped,
        ]
        .map(|caller| caller.oid.clone())
        .join(",");
        self.fixture
            .settings()
            .set("AUTH_ALLOWED_CALLERS", allowed)
            .set("DEVICE_SCOPES", scopes)
    }

    /// A valid `version` token for `caller` with `roles`.
    fn token(&self, version: Version, caller: &Caller, roles: &[&str]) -> String {
        let mut claims: Map<String, Value> = self.fixture.claims_for(version, caller);
        if !roles.is_empty() {
            claims.insert("roles".to_owned(), json!(roles));
        }
        self.fixture.issuer.sign(&claims)
    }
}

/// Asserts the handler issues a token at `path` for `authorization`, and that its log line
/// names `scope` as the key that allowed it.
async fn assert_allowed(app: &TestApp, path: &str, bearer: &str, subject: TokenFor, scope: &str) {
    let header = format!("Bearer {bearer}");
    let answer = app
        .token(path, &[("Authorization", &header)], subject)
        .await;
    // The line of this answer: the same expiry and the same ids (two answers in one second
    // share an expiry), polled for, since a log line may arrive after its answer.
    let wanted: Vec<(&str, &str)> = [
        ("expires_on", "expiresOn"),
        ("device_id", "deviceId"),
        ("module_id", "moduleId"),
        ("registration_id", "registrationId"),
    ]
    .into_iter()
    .filter_map(|(field, member)| answer.body[member].as_str().map(|value| (field, value)))
    .collect();
    let line = poll(Duration::from_secs(5), || async {
        app.request_log_lines(1)
            .await
            .into_iter()
            .rev()
            .find(|line| {
                wanted
                    .iter()
                    .all(|(field, value)| log_text(line, field).as_deref() == Some(*value))
            })
    })
    .await
    .unwrap_or_else(|| panic!("{path}: no audit line with {wanted:?}"));
    assert_eq!(
        log_text(&line, "scope").as_deref(),
        Some(scope),
        "{path}: {line}"
    );
}

/// Asserts `path` is refused with the 403 every refused caller gets.
async fn assert_refused(app: &TestApp, path: &str, bearer: &str, denial: &Value, what: &str) {
    let response = app.get_with_token(path, Some(bearer), &[]).await;
    let body = assert_caller_not_allowed(response, what).await;
    assert_eq!(&body, denial, "{what}: the same body as an IP denial");
}

#[tokio::test]
async fn bearer_callers_get_tokens_for_the_union_of_their_rules_and_nothing_else() {
    let callers = Callers::new();
    let scopes = json!({
        callers.by_oid.oid.to_uppercase(): ["sensor-17", "line-2-*"],
        callers.by_client_id.client_id.clone(): ["gw-01"],
        "role:Fleet.A": ["fleet-a-*"],
        "role:Fleet.B": ["fleet-b-1"],
    })
    .to_string();
    let app = TestApp::spawn(&callers.settings(&scopes));
    let denial = app.ip_denial_body().await;
    let oid_key = callers.by_oid.oid.to_uppercase();

    let by_oid = callers.token(Version::V1, &callers.by_oid, &[]);
    let one_role = callers.token(Version::V1, &callers.by_role, &["Fleet.A"]);
    let two_roles = callers.token(Version::V2, &callers.by_role, &["Fleet.A", "Fleet.B"]);
    let unscoped = callers.token(Version::V1, &callers.unscoped, &["Other"]);
    let client_id = &callers.by_client_id.client_id;
    let by_client_id = [Version::V1, Version::V2]
        .map(|version| callers.token(version, &callers.by_client_id, &[]));
    // (caller's token, path, what it is for, the key that allows it, or None: refused)
    let cases: Vec<(&str, String, TokenFor, Option<&str>)> = vec![
        // By object id (the key in upper case: GUIDs match in any case), exact and prefix.
        (
            &by_oid,
            token_path("sensor-17", None),
            TokenFor::Device,
            Some(&oid_key),
        ),
        (
            &by_oid,
            token_path("line-2-x", None),
            TokenFor::Device,
            Some(&oid_key),
        ),
        (
            &by_oid,
            token_path("line-2-", None),
            TokenFor::Device,
            Some(&oid_key),
        ),
        (
            &by_oid,
            token_path("sensor-170", None),
            TokenFor::Device,
            None,
        ),
        (
            &by_oid,
            token_path("sensor-1", None),
            TokenFor::Device,
            None,
        ),
        (
            &by_oid,
            token_path("line-3-x", None),
            TokenFor::Device,
            None,
        ),
        (
            &by_oid,
            token_path("Line-2-x", None),
            TokenFor::Device,
            None,
        ),
        (&by_oid, token_path("gw-01", None), TokenFor::Device, None),
        (
            &by_oid,
            token_path("fleet-a-1", None),
            TokenFor::Device,
            None,
        ),
        // A module token is scoped by its device's id.
        (
            &by_oid,
            module_path("sensor-17", "edge", None),
            TokenFor::Module,
            Some(&oid_key),
        ),
        (
            &by_oid,
            module_path("sensor-18", "edge", None),
            TokenFor::Module,
            None,
        ),
        // By client id: `appid` in a v1 token, `azp` in a v2 token.
        (
            &by_client_id[0],
            token_path("gw-01", None),
            TokenFor::Device,
            Some(client_id),
        ),
        (
            &by_client_id[1],
            token_path("gw-01", None),
            TokenFor::Device,
            Some(client_id),
        ),
        (
            &by_client_id[1],
            token_path("gw-02", None),
            TokenFor::Device,
            None,
        ),
        // By role; with two roles, the union of both rules.
        (
            &one_role,
            token_path("fleet-a-9", None),
            TokenFor::Device,
            Some("role:Fleet.A"),
        ),
        (
            &one_role,
            token_path("fleet-b-1", None),
            TokenFor::Device,
            None,
        ),
        (
            &two_roles,
            token_path("fleet-a-9", None),
            TokenFor::Device,
            Some("role:Fleet.A"),
        ),
        (
            &two_roles,
            token_path("fleet-b-1", None),
            TokenFor::Device,
            Some("role:Fleet.B"),
        ),
        (
            &two_roles,
            token_path("fleet-b-2", None),
            TokenFor::Device,
            None,
        ),
        // A caller the bearer layer allows but no rule names gets nothing.
        (
            &unscoped,
            token_path("sensor-17", None),
            TokenFor::Device,
            None,
        ),
    ];
    for (bearer, path, subject, scope) in &cases {
        match scope {
            Some(scope) => assert_allowed(&app, path, bearer, *subject, scope).await,
            None => assert_refused(&app, path, bearer, &denial, path).await,
        }
    }

    let lines = app.request_log_lines(1).await;
    for (caller, why) in [
        (
            &callers.by_oid.oid,
            "device outside the caller's DEVICE_SCOPES",
        ),
        (&callers.unscoped.oid, "no rule names this caller"),
    ] {
        assert!(
            lines.iter().any(|line| {
                log_text(line, "caller_oid").as_deref() == Some(caller)
                    && log_text(line, "denied").as_deref() == Some(why)
            }),
            "a refusal says why in the log ({why}): {lines:#?}"
        );
    }
}

#[tokio::test]
async fn a_registration_token_is_scoped_by_the_registration_id() {
    let callers = Callers::new();
    let settings = callers
        .settings(&json!({"role:Provisioning": ["line-7-*"]}).to_string())
        .unset("IOTHUB_POLICY_NAME")
        .unset("IOTHUB_POLICY_KEY")
        .set("SIGNING_MODE", "enrollment-group")
        .set(
            "ENROLLMENT_GROUP_KEY",
            "Zm9yLXRlc3RzLWdyb3VwLWtleS0wMTIzNDU2Nzg5",
        )
        .set("DPS_ID_SCOPE", "0ne00000A0A");
    let app = TestApp::spawn(&settings);
    let denial = app.ip_denial_body().await;
    let token = callers.token(Version::V1, &callers.by_role, &["Provisioning"]);
    assert_allowed(
        &app,
        &registration_path("line-7-reg", None),
        &token,
        TokenFor::Registration,
        "role:Provisioning",
    )
    .await;
    assert_allowed(
        &app,
        &token_path("line-7-dev", None),
        &token,
        TokenFor::Device,
        "role:Provisioning",
    )
    .await;
    assert_refused(
        &app,
        &registration_path("line-8-reg", None),
        &token,
        &denial,
        "registration outside",
    )
    .await;
}

#[tokio::test]
async fn certificate_callers_are_matched_by_either_thumbprint_in_any_case() {
    let first = client_certs::current("gateway-1");
    let second = client_certs::current("gateway-2");
    let third = client_certs::current("gateway-3");
    // Each rule's thumbprint is pinned in its own form (a rule for a thumbprint the layer does
    // not pin is refused at start): the first by SHA-1, the second by SHA-256.
    let pins = [
        client_certs::sha1(&first),
        client_certs::sha256(&second),
        client_certs::sha1(&third),
    ]
    .join(",");
    let scopes = json!({
        format!("cert:{}", client_certs::sha1(&first).to_uppercase()): ["gw-01"],
        format!("cert:{}", client_certs::sha256(&second)): ["gw-02", "gw-2*"],
    })
    .to_string();
    let app = TestApp::spawn(
        &Settings::base()
            .set("CLIENT_CERT_THUMBPRINTS", pins)
            .set("DEVICE_SCOPES", &scopes),
    );
    let denial = app.ip_denial_body().await;
    for (der, path, allowed) in [
        (&first, token_path("gw-01", None), true),
        (&first, token_path("gw-02", None), false),
        (&second, token_path("gw-02", None), true),
        (&second, token_path("gw-2x", None), true),
        (&second, token_path("gw-01", None), false),
        (&third, token_path("gw-01", None), false),
    ] {
        let header = client_certs::forwarded(der);
        if allowed {
            app.token(&path, &[(CLIENT_CERT_HEADER, &header)], TokenFor::Device)
                .await;
        } else {
            let response = app.get_with_cert(&path, Some(&header), &[]).await;
            let body = assert_caller_not_allowed(response, &path).await;
            assert_eq!(body, denial, "{path}: the same body as an IP denial");
        }
    }
}

#[test]
fn scopes_that_cannot_mean_what_they_say_stop_the_start_naming_device_scopes() {
    let bearer = Fixture::new();
    let on = || bearer.settings();
    let sha1 = "a1b2c3d4e5f60718293a4b5c6d7e8f9001122334";
    let refusals = [
        ("not JSON", on().set("DEVICE_SCOPES", "role:A=x")),
        ("not an object", on().set("DEVICE_SCOPES", r#"["x"]"#)),
        (
            "an empty pattern",
            on().set("DEVICE_SCOPES", r#"{"role:A": [""]}"#),
        ),
        (
            "a star in the middle",
            on().set("DEVICE_SCOPES", r#"{"role:A": ["a*b"]}"#),
        ),
        (
            "a star first",
            on().set("DEVICE_SCOPES", r#"{"role:A": ["*a"]}"#),
        ),
        (
            "an unknown key form",
            on().set("DEVICE_SCOPES", r#"{"fleet-a": ["x"]}"#),
        ),
        (
            "a repeated key",
            on().set("DEVICE_SCOPES", r#"{"role:A": ["x"], "role:A": ["y"]}"#),
        ),
        (
            "an empty list",
            on().set("DEVICE_SCOPES", r#"{"role:A": []}"#),
        ),
        (
            "a certificate key without the certificate layer",
            on().set("DEVICE_SCOPES", format!(r#"{{"cert:{sha1}": ["x"]}}"#)),
        ),
        (
            "no layer that tells callers apart",
            Settings::base().set("DEVICE_SCOPES", r#"{"role:A": ["x"]}"#),
        ),
        (
            "a role key without the bearer layer",
            Settings::base()
                .set("CLIENT_CERT_THUMBPRINTS", sha1)
                .set("DEVICE_SCOPES", r#"{"role:A": ["x"]}"#),
        ),
    ];
    let cases: Vec<Refusal<'_>> = refusals
        .into_iter()
        .map(|(description, settings)| Refusal {
            description: description.to_owned(),
            settings,
            setting: "DEVICE_SCOPES",
        })
        .collect();
    let problems = misrefused_startups(&cases, |_| Vec::new());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
