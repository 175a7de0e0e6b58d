//! The client-certificate layer (issue 5): with `CLIENT_CERT_THUMBPRINTS` set, each request
//! must carry `X-ARR-ClientCert` (base64 of the DER certificate, as App Service forwards the one
//! presented in the TLS handshake, unchecked) — exactly one such header line — with a certificate
//! that parses, is within its validity period, and whose SHA-1 or SHA-256 thumbprint is listed.
//! Anything else, two header lines included, gets the caller-not-allowed 403. The check runs
//! after the IP allow list and before the bearer token.
//!
//! The certificates and their thumbprints come from `support::client_certs` (rcgen, and
//! aws-lc-rs rather than the hash crates the handler uses). Malformed thumbprint lists are in
//! `bad_settings`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::stand_ins::bearer::Fixture;
use crate::stand_ins::issuer::Version;
use crate::support::{
    answers::{
        assert_caller_not_allowed, assert_invalid_token, assert_issued, assert_no_token,
        assert_problem,
    },
    app::TestApp,
    client_certs::{CLIENT_CERT_HEADER, certificate, current, forwarded, sha1, sha256},
    leaks::Secrets,
    logs::log_text,
    routes::{both_routes, token_path},
    settings::{DENIED_IP, Settings},
};

#[tokio::test]
async fn listed_certificates_get_a_sas_token_by_sha1_or_sha256_thumbprint_in_either_case() {
    let by_sha1 = current("client by SHA-1");
    let by_sha256 = current("client by SHA-256");
    let lists = [
        (
            "SHA-1 upper, SHA-256 lower",
            format!("{},{}", sha1(&by_sha1).to_uppercase(), sha256(&by_sha256)),
        ),
        (
            "SHA-1 lower, SHA-256 upper, spaces",
            format!(
                " {} , {} ",
                sha1(&by_sha1),
                sha256(&by_sha256).to_uppercase()
            ),
        ),
    ];

    for (list_description, list) in &lists {
        let app = TestApp::spawn(&Settings::base().set("CLIENT_CERT_THUMBPRINTS", list));
        for (route, path) in both_routes() {
            for (description, der) in [("SHA-1 listed", &by_sha1), ("SHA-256 listed", &by_sha256)] {
                let response = app.get_with_cert(&path, Some(&forwarded(der)), &[]).await;
                assert_issued(
                    response,
                    &format!("{description} ({list_description}), {route}"),
                )
                .await;
            }
        }
        let lines = app.request_log_lines(4).await;
        assert_eq!(lines.len(), 4, "stdout:\n{}", app.stdout());
        for line in &lines {
            assert_eq!(
                log_text(line, "client_cert").as_deref(),
                Some("ok"),
                "a listed certificate is logged as ok: {line}"
            );
        }
    }
}

/// One request that must be refused: the header value (`None`: no header), and the
/// `client_cert` log value (`None`: any value but "ok").
struct Refused {
    description: &'static str,
    header: Option<String>,
    logged: Option<&'static str>,
}

#[tokio::test]
async fn unusable_certificates_get_the_403_an_ip_denial_gets_on_both_routes() {
    let listed = current("listed");
    let expired = certificate("expired", (2020, 1, 1), (2021, 1, 1));
    let not_yet_valid = certificate("not yet valid", (2040, 1, 1), (2045, 1, 1));
    let unlisted = current("unlisted");
    let list = [&listed, &expired, &not_yet_valid]
        .iter()
        .map(|der| sha256(der))
        .collect::<Vec<_>>()
        .join(",");
    let app = TestApp::spawn(&Settings::base().set("CLIENT_CERT_THUMBPRINTS", &list));
    let ip_denial = app.ip_denial_body().await;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        forwarded(&listed)
    );
    let cases = [
        Refused {
            description: "no certificate",
            header: None,
            logged: Some("missing"),
        },
        Refused {
            description: "expired (listed)",
            header: Some(forwarded(&expired)),
            logged: Some("expired"),
        },
        Refused {
            description: "not yet valid (listed)",
            header: Some(forwarded(&not_yet_valid)),
            logged: None,
        },
        Refused {
            description: "valid but unlisted",
            header: Some(forwarded(&unlisted)),
            logged: Some("unknown_thumbprint"),
        },
        Refused {
            description: "not base64",
            header: Some("not base64 at all!".to_owned()),
            logged: Some("unparsable"),
        },
        Refused {
            description: "base64 of random bytes",
            header: Some(
                STANDARD.encode((0..200_u8).map(|b| b.wrapping_mul(37)).collect::<Vec<_>>()),
            ),
            logged: Some("unparsable"),
        },
        Refused {
            description: "truncated DER of a listed certificate",
            header: Some(forwarded(&listed[..listed.len() / 2])),
            logged: Some("unparsable"),
        },
        Refused {
            description: "PEM text instead of DER, base64",
            header: Some(STANDARD.encode(pem.as_bytes())),
            logged: Some("unparsable"),
        },
        Refused {
            description: "empty header",
            header: Some(String::new()),
            logged: None,
        },
    ];

    for (route, path) in both_routes() {
        for case in &cases {
            let context = format!("{}, {route}", case.description);
            let response = app.get_with_cert(&path, case.header.as_deref(), &[]).await;
            let body = assert_caller_not_allowed(response, &context).await;
            assert_eq!(body, ip_denial, "{context}: the same body as an IP denial");
        }
    }
    let response = app
        .get_with_cert(&token_path("dev-1", None), Some(&forwarded(&listed)), &[])
        .await;
    assert_issued(response, "the listed certificate still works").await;

    // The IP denial, then each case on each route, then the listed certificate.
    let expected = 1 + 2 * cases.len() + 1;
    let lines = app.request_log_lines(expected).await;
    assert_eq!(lines.len(), expected, "stdout:\n{}", app.stdout());
    let per_route = &lines[1..=cases.len()];
    for (case, line) in cases.iter().zip(per_route) {
        let logged = log_text(line, "client_cert");
        match case.logged {
            Some(value) => assert_eq!(
                logged.as_deref(),
                Some(value),
                "{}: `client_cert` in {line}",
                case.description
            ),
            None => assert!(
                logged.as_deref().is_some_and(|v| v != "ok"),
                "{}: `client_cert` must be logged, and not as ok: {line}",
                case.description
            ),
        }
    }
    assert_eq!(
        log_text(&lines[expected - 1], "client_cert").as_deref(),
        Some("ok")
    );
}

/// One request of the layer-order test: description, from a denied IP, certificate header,
/// `Authorization` header, path, expected status.
type Step<'a> = (
    &'a str,
    bool,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    u16,
);

#[tokio::test]
async fn the_certificate_is_checked_after_the_ip_and_before_the_token() {
    let fixture = Fixture::new();
    let listed = current("API Management");
    let list = sha1(&listed);
    let app = TestApp::spawn(&fixture.settings().set("CLIENT_CERT_THUMBPRINTS", &list));
    let cert = forwarded(&listed);
    let unlisted = forwarded(&current("stranger"));
    let token = fixture.token(Version::V1);
    let path = token_path("dev-1", None);
    let bad_device = token_path("bad%20device", None);
    let denied = [("X-Forwarded-For", DENIED_IP)];
    let with_token = |t: &str| format!("Bearer {t}");

    let valid_bearer = with_token(&token);
    let garbage_bearer = with_token("garbage");
    let steps: Vec<Step<'_>> = vec![
        (
            "denied IP, no cert, invalid token",
            true,
            None,
            Some(&garbage_bearer),
            &path,
            403,
        ),
        (
            "denied IP, valid cert and token",
            true,
            Some(&cert),
            Some(&valid_bearer),
            &path,
            403,
        ),
        ("no cert, no token", false, None, None, &path, 403),
        (
            "no cert, valid token",
            false,
            None,
            Some(&valid_bearer),
            &path,
            403,
        ),
        (
            "unlisted cert, valid token",
            false,
            Some(&unlisted),
            Some(&valid_bearer),
            &path,
            403,
        ),
        ("valid cert, no token", false, Some(&cert), None, &path, 401),
        (
            "valid cert, invalid token",
            false,
            Some(&cert),
            Some(&garbage_bearer),
            &path,
            401,
        ),
        (
            "valid cert, invalid token, invalid device",
            false,
            Some(&cert),
            Some(&garbage_bearer),
            &bad_device,
            401,
        ),
        (
            "valid cert and token, invalid device",
            false,
            Some(&cert),
            Some(&valid_bearer),
            &bad_device,
            400,
        ),
        (
            "valid cert and token",
            false,
            Some(&cert),
            Some(&valid_bearer),
            &path,
            200,
        ),
    ];

    for (description, from_denied_ip, cert, authorization, path, status) in &steps {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if *from_denied_ip {
            headers.extend_from_slice(&denied);
        }
        if let Some(cert) = cert {
            headers.push((CLIENT_CERT_HEADER, cert));
        }
        if let Some(authorization) = authorization {
            headers.push(("Authorization", authorization));
        }
        let response = app.get(path, &headers).await;
        match status {
            403 => {
                assert_caller_not_allowed(response, description).await;
            }
            401 if authorization.is_none() => {
                assert_no_token(response, description).await;
            }
            401 => {
                assert_invalid_token(response, description).await;
            }
            400 => {
                assert_problem(response, 400, description).await;
            }
            _ => assert_issued(response, description).await,
        }
    }

    let lines = app.request_log_lines(steps.len()).await;
    assert_eq!(lines.len(), steps.len(), "stdout:\n{}", app.stdout());
    // From the first allowed-IP step on, both layers report; the token layer only once the
    // certificate passed.
    let expected: [(&str, Option<&str>); 8] = [
        ("missing", None),
        ("missing", None),
        ("unknown_thumbprint", None),
        ("ok", Some("missing")),
        ("ok", Some("invalid")),
        ("ok", Some("invalid")),
        ("ok", Some("ok")),
        ("ok", Some("ok")),
    ];
    for ((step, line), (client_cert, auth)) in steps[2..].iter().zip(&lines[2..]).zip(expected) {
        assert_eq!(
            log_text(line, "client_cert").as_deref(),
            Some(client_cert),
            "{}: `client_cert` in {line}",
            step.0
        );
        if let Some(auth) = auth {
            assert_eq!(
                log_text(line, "auth").as_deref(),
                Some(auth),
                "{}: `auth` in {line}",
                step.0
            );
        }
    }
    Secrets::default()
        .with("bearer token", &token)
        .assert_absent_from(&app.output(), "layer order");
}

#[tokio::test]
async fn two_client_certificate_headers_get_the_403_an_ip_denial_gets_even_when_both_are_listed() {
    // The platform writes one X-ARR-ClientCert; a second came from someone else, and no rule
    // could say which of the two to trust.
    let listed = current("listed");
    let other_listed = current("also listed");
    let list = format!("{},{}", sha256(&listed), sha256(&other_listed));
    let app = TestApp::spawn(&Settings::base().set("CLIENT_CERT_THUMBPRINTS", &list));
    let ip_denial = app.ip_denial_body().await;
    let cert = forwarded(&listed);
    let other = forwarded(&other_listed);
    let unlisted = forwarded(&current("stranger"));
    let cases: [(&str, [&str; 2]); 4] = [
        ("the same listed certificate twice", [&cert, &cert]),
        ("two listed certificates", [&cert, &other]),
        ("a listed one, then an unlisted one", [&cert, &unlisted]),
        (
            "an unparsable one, then a listed one",
            ["not base64!", &cert],
        ),
    ];

    for (route, path) in both_routes() {
        for (description, [first, second]) in &cases {
            let context = format!("{description}, {route}");
            let headers = [(CLIENT_CERT_HEADER, *first), (CLIENT_CERT_HEADER, *second)];
            let response = app.get(&path, &headers).await;
            let body = assert_caller_not_allowed(response, &context).await;
            assert_eq!(body, ip_denial, "{context}: the same body as an IP denial");
        }
    }
    let response = app
        .get_with_cert(&token_path("dev-1", None), Some(&cert), &[])
        .await;
    assert_issued(response, "one listed certificate").await;

    // The IP denial, then each case on each route, then the single certificate.
    let expected = 1 + 2 * cases.len() + 1;
    let lines = app.request_log_lines(expected).await;
    assert_eq!(lines.len(), expected, "stdout:\n{}", app.stdout());
    for line in &lines[1..expected - 1] {
        assert_eq!(
            log_text(line, "client_cert").as_deref(),
            Some("repeated"),
            "two header lines are logged as repeated: {line}"
        );
    }
    assert_eq!(
        log_text(&lines[expected - 1], "client_cert").as_deref(),
        Some("ok")
    );
}
