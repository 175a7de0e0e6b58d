//! Who the caller is: X-Forwarded-For entry forms (an unbracketed IPv6 entry is one address,
//! never address:port), entries spread over several lines, spoofed entries left of `XFF_DEPTH`,
//! IPv6 and IPv4-mapped addresses, CIDR ranges, `*` and the ranges that amount to it (a warning
//! at start), and the TCP peer when there is no X-Forwarded-For at all. Every request asks for a valid device, so the
//! status says only whether the caller was allowed.

use crate::support::{
    answers::assert_problem,
    app::TestApp,
    logs::{json_lines, log_text},
    settings::Settings,
};

/// Allow list for the depth-1 app. 127.0.0.1 (the TCP peer) is on it, so a 403 also shows
/// that a bad X-Forwarded-For is never replaced by the peer address.
const DEPTH_ONE_ALLOWED: &str =
    "127.0.0.1,203.0.113.7,198.51.100.0/24,2001:db8:1::/48,2001:db8:2::5,10.0.0.1";

/// Allow list for the depth-2 app; 127.0.0.1 is on it for the same reason.
const DEPTH_TWO_ALLOWED: &str = "127.0.0.1,10.0.0.1,2001:db8::/32";

fn depth_one_app() -> TestApp {
    TestApp::spawn(
        &Settings::base()
            .set("ALLOWED_IPS", DEPTH_ONE_ALLOWED)
            .set("XFF_DEPTH", "1"),
    )
}

fn depth_two_app() -> TestApp {
    TestApp::spawn(
        &Settings::base()
            .set("ALLOWED_IPS", DEPTH_TWO_ALLOWED)
            .set("XFF_DEPTH", "2"),
    )
}

/// Sends each case's X-Forwarded-For lines and asserts 200 or a 403 problem.
async fn assert_cases(app: &TestApp, cases: &[(&str, &[&str], u16)]) {
    for (description, lines, expected) in cases {
        let response = app.get_with_xff(lines).await;

        let context = format!("{description} (X-Forwarded-For lines {lines:?})");
        if *expected == 200 {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(status, 200, "{context}: {body}");
        } else {
            assert_problem(response, *expected, &context).await;
        }
    }
}

#[tokio::test]
async fn every_xff_entry_form_is_read_and_matched_against_the_allow_list() {
    let app = depth_one_app();

    assert_cases(
        &app,
        &[
            ("allowed IPv4", &["203.0.113.7"], 200),
            ("allowed IPv4 with port", &["203.0.113.7:5678"], 200),
            ("IPv4 next to an allowed one", &["203.0.113.8"], 403),
            ("IPv4 inside an allowed CIDR", &["198.51.100.200"], 200),
            (
                "IPv4 with port inside an allowed CIDR",
                &["198.51.100.1:1"],
                200,
            ),
            ("IPv4 just outside an allowed CIDR", &["198.51.101.0"], 403),
            (
                "bracketed IPv6 inside an allowed CIDR",
                &["[2001:db8:1::9]"],
                200,
            ),
            ("bracketed IPv6 with port", &["[2001:db8:1::9]:443"], 200),
            (
                "bare IPv6 inside an allowed CIDR",
                &["2001:db8:1:ffff::1"],
                200,
            ),
            ("allowed single IPv6", &["2001:db8:2::5"], 200),
            (
                "IPv6 next to an allowed single one",
                &["2001:db8:2::6"],
                403,
            ),
            (
                "bracketed IPv6 outside every CIDR",
                &["[2001:db8:3::1]:443"],
                403,
            ),
            (
                "IPv4-mapped IPv6 of an allowed IPv4",
                &["::ffff:203.0.113.7"],
                200,
            ),
            (
                "bracketed IPv4-mapped IPv6 with port inside an IPv4 CIDR",
                &["[::ffff:198.51.100.3]:80"],
                200,
            ),
            (
                "IPv4-mapped IPv6 of a denied IPv4",
                &["::ffff:203.0.113.8"],
                403,
            ),
            ("whitespace around the entry", &["   203.0.113.7  "], 200),
            (
                "whitespace after the comma",
                &["6.6.6.6,   203.0.113.7:1"],
                200,
            ),
            ("loopback the allow list holds", &["127.0.0.1:9"], 200),
        ],
    )
    .await;
}

#[tokio::test]
async fn spoofed_entry_left_of_depth_is_denied() {
    let app = depth_one_app();

    assert_cases(
        &app,
        &[
            (
                "allowed entry left of the caller",
                &["10.0.0.1, 203.0.113.9:1234"],
                403,
            ),
            (
                "allowed entry left of a denied IPv6 caller",
                &["203.0.113.7, [2001:db8:3::1]:1"],
                403,
            ),
            (
                "many allowed entries left of the caller",
                &["203.0.113.7, 10.0.0.1, 127.0.0.1, 6.6.6.6"],
                403,
            ),
            (
                "allowed entry on an earlier header line",
                &["10.0.0.1", "203.0.113.9"],
                403,
            ),
            (
                "allowed entry followed by an empty element and a denied one",
                &["10.0.0.1,,203.0.113.9"],
                403,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn entries_are_counted_across_all_header_lines_in_order() {
    let app = depth_one_app();

    assert_cases(
        &app,
        &[
            (
                "caller on the last of two lines",
                &["6.6.6.6", "203.0.113.7"],
                200,
            ),
            (
                "caller on the last of three lines",
                &["6.6.6.6, 7.7.7.7", "8.8.8.8", "203.0.113.7:80"],
                200,
            ),
            (
                "denied caller on the last line",
                &["203.0.113.7", "6.6.6.6"],
                403,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn empty_list_elements_are_ignored() {
    let app = depth_one_app();

    assert_cases(
        &app,
        &[
            ("trailing comma", &["203.0.113.7,"], 200),
            ("trailing comma and spaces", &["203.0.113.7 , ,  "], 200),
            ("leading commas", &[",,203.0.113.7"], 200),
            (
                "empty element after a denied entry",
                &["6.6.6.6, 203.0.113.7, ,"],
                200,
            ),
            ("a later line of only commas", &["203.0.113.7", ", ,"], 200),
        ],
    )
    .await;
}

#[tokio::test]
async fn unparsable_or_missing_selected_entry_is_denied_not_replaced_by_the_peer() {
    let app = depth_one_app();

    assert_cases(
        &app,
        &[
            ("garbage", &["garbage"], 403),
            ("the word unknown", &["unknown"], 403),
            (
                "garbage right of an allowed entry",
                &["203.0.113.7, garbage"],
                403,
            ),
            ("IPv4 with a non-numeric port", &["203.0.113.7:http"], 403),
            ("IPv4 with CIDR suffix", &["203.0.113.7/32"], 403),
            ("IPv4 with five octets", &["203.0.113.7.1"], 403),
            ("IPv4 octet over 255", &["203.0.113.256"], 403),
            ("unclosed IPv6 bracket", &["[2001:db8:1::9"], 403),
            (
                "IPv6 bracket with junk after it",
                &["[2001:db8:1::9]x"],
                403,
            ),
            ("empty brackets", &["[]"], 403),
            ("host name", &["localhost"], 403),
            ("an empty header line", &[""], 403),
            ("only commas and spaces", &[" , , "], 403),
        ],
    )
    .await;
}

#[tokio::test]
async fn depth_two_selects_the_second_entry_from_the_right() {
    let app = depth_two_app();

    assert_cases(
        &app,
        &[
            (
                "spoof, allowed, front end",
                &["6.6.6.6, 10.0.0.1, 172.16.0.10:49828"],
                200,
            ),
            (
                "allowed, front end",
                &["10.0.0.1:5555, 172.16.0.10:49828"],
                200,
            ),
            (
                "allowed IPv6 caller, front end",
                &["[2001:db8::1]:443, 172.16.0.10"],
                200,
            ),
            (
                "caller and front end on two lines",
                &["6.6.6.6, 10.0.0.1", "172.16.0.10:1"],
                200,
            ),
            (
                "allowed spoof left of a denied caller",
                &["10.0.0.1, 6.6.6.6, 172.16.0.10"],
                403,
            ),
            (
                "allowed entry in the front end's place",
                &["6.6.6.6, 10.0.0.1"],
                403,
            ),
            ("fewer entries than the depth", &["10.0.0.1"], 403),
            (
                "fewer non-empty entries than the depth",
                &["10.0.0.1, ,"],
                403,
            ),
            (
                "unparsable caller entry",
                &["10.0.0.1, nonsense, 172.16.0.10"],
                403,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn depth_sixteen_selects_the_sixteenth_entry_from_the_right() {
    let app = TestApp::spawn(
        &Settings::base()
            .set("ALLOWED_IPS", "127.0.0.1,10.0.0.1")
            .set("XFF_DEPTH", "16"),
    );
    let proxies: Vec<String> = (1..=15).map(|i| format!("172.16.0.{i}")).collect();
    let sixteen = format!("6.6.6.6, 10.0.0.1, {}", proxies.join(", "));
    let fifteen = proxies.join(", ");
    let shifted = format!("10.0.0.1, 6.6.6.6, {}", proxies.join(", "));

    assert_cases(
        &app,
        &[
            (
                "allowed caller sixteenth from the right",
                &[sixteen.as_str()],
                200,
            ),
            ("only fifteen entries", &[fifteen.as_str()], 403),
            (
                "allowed entry seventeenth from the right",
                &[shifted.as_str()],
                403,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn without_xff_the_tcp_peer_is_the_caller() {
    for (description, allowed, expected) in [
        ("peer address listed", "127.0.0.1", 200),
        ("peer inside a listed CIDR", "10.0.0.0/8,127.0.0.0/8", 200),
        ("peer listed as IPv4-mapped IPv6", "::ffff:127.0.0.1", 200),
        (
            "empty entries around the peer address",
            "10.0.0.1,,127.0.0.1,",
            200,
        ),
        ("peer not listed", "10.0.0.1,::1", 403),
    ] {
        let app = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", allowed));

        let response = app.get_sas_token("dev-1", None).await;

        let context = format!("{description} (ALLOWED_IPS={allowed})");
        if expected == 200 {
            assert_eq!(response.status().as_u16(), 200, "{context}");
        } else {
            assert_problem(response, expected, &context).await;
        }
    }
}

#[tokio::test]
async fn star_allows_every_caller_and_warns_at_start() {
    let app = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", "*"));

    assert_cases(
        &app,
        &[
            ("no X-Forwarded-For", &[], 200),
            ("any IPv4", &["6.6.6.6"], 200),
            ("any IPv6", &["[2001:db8:ffff::1]:443"], 200),
        ],
    )
    .await;
    let output = app.output();
    let warned = output.lines().any(
        |line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(entry) => entry["level"]
                .as_str()
                .is_some_and(|level| level.eq_ignore_ascii_case("warn")),
            Err(_) => line.to_ascii_lowercase().contains("warn"),
        },
    );
    assert!(
        warned,
        "ALLOWED_IPS=* must log a warning at start; output:\n{output}"
    );
}

#[tokio::test]
async fn denied_answer_reveals_neither_the_allow_list_nor_the_caller() {
    let app = TestApp::spawn(
        &Settings::base().set("ALLOWED_IPS", "10.1.2.3,192.0.2.0/24,2001:db8:abcd::/48"),
    );

    for (description, xff) in [
        ("IPv4 caller", "198.18.7.9"),
        ("IPv6 caller", "[2001:db8:9999::77]:443"),
        ("spoofed allowed entry", "10.1.2.3, 198.18.7.9"),
    ] {
        let response = app.get_with_xff(&[xff]).await;

        let (headers, body) = assert_problem(response, 403, description).await;
        let everything = format!("{headers:?}{body}");
        for secret in [
            "10.1.2.3",
            "192.0.2.0",
            "2001:db8:abcd",
            "198.18.7.9",
            "2001:db8:9999",
        ] {
            assert!(
                !everything.contains(secret),
                "{description}: the 403 reveals {secret}: {everything}"
            );
        }
    }
    let response = app.get_sas_token("dev-1", None).await;
    let (headers, body) = assert_problem(response, 403, "TCP peer not allowed").await;
    assert!(
        !format!("{headers:?}{body}").contains("127.0.0.1"),
        "the 403 reveals the peer address: {body}"
    );
}

#[tokio::test]
async fn an_unbracketed_ipv6_entry_is_one_address_never_an_address_and_a_port() {
    // `2001:db8::5:443` is the address 2001:db8::5:443; read as 2001:db8::5 on port 443, an
    // entry that merely ends in a number would pass for a listed address.
    let listed_without_port =
        TestApp::spawn(&Settings::base().set("ALLOWED_IPS", "2001:db8::5,1.2.3.4"));
    assert_cases(
        &listed_without_port,
        &[
            (
                "a bare IPv6 address with a port-like tail",
                &["2001:db8::5:443"],
                403,
            ),
            ("the bare listed address", &["2001:db8::5"], 200),
            (
                "the listed address bracketed, with a port",
                &["[2001:db8::5]:443"],
                200,
            ),
            ("the listed address bracketed", &["[2001:db8::5]"], 200),
            ("two `::`: no address at all", &["2001:db8::5::443"], 403),
            (
                "a port after the bracket without a colon",
                &["[2001:db8::5]443"],
                403,
            ),
            (
                "IPv4-mapped with a port-like tail",
                &["::ffff:1.2.3.4:80"],
                403,
            ),
            ("IPv4-mapped, bare", &["::ffff:1.2.3.4"], 200),
        ],
    )
    .await;
    let listed_with_tail = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", "2001:db8::5:443"));
    assert_cases(
        &listed_with_tail,
        &[
            (
                "the listed address, written bare",
                &["2001:db8::5:443"],
                200,
            ),
            ("another address on port 443", &["[2001:db8::5]:443"], 403),
            ("another address, bare", &["2001:db8::5"], 403),
        ],
    )
    .await;

    // The log says how each entry was read: one address, or none.
    let lines = listed_without_port.request_log_lines(8).await;
    let read: Vec<(Option<String>, Option<String>)> = lines
        .iter()
        .map(|line| (log_text(line, "caller_ip"), log_text(line, "denied")))
        .collect();
    let denied_as_unlisted = Some("caller not in ALLOWED_IPS".to_owned());
    let unparsable = Some("x-forwarded-for entry is not an address".to_owned());
    assert_eq!(
        read[0],
        (Some("2001:db8::5:443".to_owned()), denied_as_unlisted),
        "{lines:?}"
    );
    for at in [4, 5, 6] {
        assert_eq!(
            read[at],
            (None, unparsable.clone()),
            "entry {at}: {lines:?}"
        );
    }
}

/// `Some(who)` when `app` logged the whole-family warning for `who`; `None` without it.
fn whole_family_warning(app: &TestApp) -> Option<String> {
    json_lines(&app.stdout()).iter().find_map(|line| {
        let message = line["message"].as_str()?;
        let who = message.strip_prefix("ALLOWED_IPS allows ")?;
        let (who, _) = who.split_once(", as `*` would;")?;
        (line["level"] == "WARN").then(|| who.to_owned())
    })
}

#[tokio::test]
async fn ranges_that_amount_to_a_whole_address_family_warn_as_star_does() {
    // (ALLOWED_IPS, the warning's "who" or no warning, an IPv4 caller allowed, an IPv6 caller
    // allowed): the warning says what the list does.
    let cases: [(&str, Option<&str>, bool, bool); 9] = [
        ("0.0.0.0/0", Some("every IPv4 caller"), true, false),
        ("::/0", Some("every IPv6 caller"), false, true),
        ("::ffff:0.0.0.0/96", Some("every IPv4 caller"), true, false),
        (
            "0.0.0.0/1,128.0.0.0/1",
            Some("every IPv4 caller"),
            true,
            false,
        ),
        (
            "0.0.0.0/1, 128.0.0.0/2, 192.0.0.0/2",
            Some("every IPv4 caller"),
            true,
            false,
        ),
        ("::/1,8000::/1", Some("every IPv6 caller"), false, true),
        ("0.0.0.0/0,::/0", Some("every caller"), true, true),
        ("0.0.0.0/1", None, true, false),
        ("10.0.0.0/8,::/1", None, false, true),
    ];

    for (allowed, warning, ipv4, ipv6) in cases {
        let app = TestApp::spawn(&Settings::base().set("ALLOWED_IPS", allowed));

        let context = format!("ALLOWED_IPS={allowed:?}");
        assert_eq!(
            whole_family_warning(&app).as_deref(),
            warning,
            "{context}: the start-up warning\n{}",
            app.stdout()
        );
        let expected = |allowed: bool| if allowed { 200 } else { 403 };
        assert_cases(
            &app,
            &[
                ("an IPv4 caller", &["6.6.6.6"], expected(ipv4)),
                (
                    "an IPv6 caller",
                    &["[2001:db8:ffff::1]:443"],
                    expected(ipv6),
                ),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn on_azure_an_allow_list_without_loopback_starts_and_the_peer_is_not_a_caller() {
    // The loopback entries are refused on Azure (`bad_settings`); everything else starts.
    let app = TestApp::spawn(
        &Settings::base()
            .set("ALLOWED_IPS", "10.0.0.1,2001:db8::/32")
            .set("WEBSITE_SITE_NAME", "iothub-sas-prod"),
    );

    assert_cases(
        &app,
        &[
            ("the listed caller", &["10.0.0.1:5555"], 200),
            ("a listed IPv6 caller", &["[2001:db8::7]:443"], 200),
            ("no X-Forwarded-For: the loopback peer", &[], 403),
        ],
    )
    .await;
}
