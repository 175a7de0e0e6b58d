//! Each bad setting stops the binary before it binds: a non-zero exit, exactly one stderr line
//! `configuration error: <SETTING>: <problem>` naming the setting it read, and never a key.
//! The core settings, then the bearer-token layer's (`AUTH_*`), then the client-certificate
//! layer's (`CLIENT_CERT_THUMBPRINTS`).

use crate::stand_ins::bearer::AUDIENCE_URI;
use crate::support::{
    client_certs::{current, sha1, sha256},
    leaks::Secrets,
    settings::{KEY, Settings},
    startup::{Refusal, StartupFailure, misrefused_startups},
};

/// A malformed key with a recognisable tail, so an echo of it is easy to spot.
const BAD_KEY: &str = "not-base64!!secretvalue";

/// One misconfiguration: settings removed from and set on top of the valid base settings, and
/// the setting name the stderr line must carry.
struct Case {
    description: &'static str,
    removed: &'static [&'static str],
    set: &'static [(&'static str, &'static str)],
    setting: &'static str,
}

impl Case {
    /// The base settings with this case's settings set and removed.
    fn settings(&self) -> Settings {
        let set = Settings::base().set_all(self.set.iter().copied());
        self.removed
            .iter()
            .fold(set, |settings, name| settings.unset(name))
    }
}

const fn case(
    description: &'static str,
    removed: &'static [&'static str],
    set: &'static [(&'static str, &'static str)],
    setting: &'static str,
) -> Case {
    Case {
        description,
        removed,
        set,
        setting,
    }
}

const CASES: &[Case] = &[
    // Required settings.
    case(
        "IOTHUB_HOSTNAME missing",
        &["IOTHUB_HOSTNAME"],
        &[],
        "IOTHUB_HOSTNAME",
    ),
    case(
        "IOTHUB_POLICY_NAME missing",
        &["IOTHUB_POLICY_NAME"],
        &[],
        "IOTHUB_POLICY_NAME",
    ),
    case(
        "IOTHUB_POLICY_KEY missing",
        &["IOTHUB_POLICY_KEY"],
        &[],
        "IOTHUB_POLICY_KEY",
    ),
    case("ALLOWED_IPS missing", &["ALLOWED_IPS"], &[], "ALLOWED_IPS"),
    case(
        "IOTHUB_HOSTNAME empty",
        &[],
        &[("IOTHUB_HOSTNAME", "")],
        "IOTHUB_HOSTNAME",
    ),
    case(
        "ALLOWED_IPS empty",
        &[],
        &[("ALLOWED_IPS", "")],
        "ALLOWED_IPS",
    ),
    // Hostname.
    case(
        "hostname with a scheme",
        &[],
        &[("IOTHUB_HOSTNAME", "https://contoso.azure-devices.net")],
        "IOTHUB_HOSTNAME",
    ),
    case(
        "hostname with a space",
        &[],
        &[("IOTHUB_HOSTNAME", "contoso .azure-devices.net")],
        "IOTHUB_HOSTNAME",
    ),
    case(
        "hostname with a path",
        &[],
        &[("IOTHUB_HOSTNAME", "contoso.azure-devices.net/devices")],
        "IOTHUB_HOSTNAME",
    ),
    // Key.
    case(
        "key not base64",
        &[],
        &[("IOTHUB_POLICY_KEY", BAD_KEY)],
        "IOTHUB_POLICY_KEY",
    ),
    case(
        "key empty",
        &[],
        &[("IOTHUB_POLICY_KEY", "")],
        "IOTHUB_POLICY_KEY",
    ),
    case(
        "key only spaces",
        &[],
        &[("IOTHUB_POLICY_KEY", "   ")],
        "IOTHUB_POLICY_KEY",
    ),
    // Allow list.
    case(
        "prefix over 32",
        &[],
        &[("ALLOWED_IPS", "10.0.0.0/33")],
        "ALLOWED_IPS",
    ),
    case(
        "prefix not a number",
        &[],
        &[("ALLOWED_IPS", "10.0.0.0/abc")],
        "ALLOWED_IPS",
    ),
    case(
        "empty prefix",
        &[],
        &[("ALLOWED_IPS", "10.0.0.0/")],
        "ALLOWED_IPS",
    ),
    case(
        "IPv4 CIDR with host bits set",
        &[],
        &[("ALLOWED_IPS", "10.0.0.1/8")],
        "ALLOWED_IPS",
    ),
    case(
        "IPv6 CIDR with host bits set",
        &[],
        &[("ALLOWED_IPS", "2001:db8::1/32")],
        "ALLOWED_IPS",
    ),
    case(
        "octet over 255",
        &[],
        &[("ALLOWED_IPS", "300.1.1.1")],
        "ALLOWED_IPS",
    ),
    case(
        "not an address",
        &[],
        &[("ALLOWED_IPS", "not-an-ip")],
        "ALLOWED_IPS",
    ),
    case(
        "one bad entry among good ones",
        &[],
        &[("ALLOWED_IPS", "10.0.0.1,bogus,::1")],
        "ALLOWED_IPS",
    ),
    case(
        "only empty entries",
        &[],
        &[("ALLOWED_IPS", ",,")],
        "ALLOWED_IPS",
    ),
    // XFF_DEPTH.
    case("XFF_DEPTH zero", &[], &[("XFF_DEPTH", "0")], "XFF_DEPTH"),
    case(
        "XFF_DEPTH not a number",
        &[],
        &[("XFF_DEPTH", "abc")],
        "XFF_DEPTH",
    ),
    case(
        "XFF_DEPTH over 16",
        &[],
        &[("XFF_DEPTH", "17")],
        "XFF_DEPTH",
    ),
    case(
        "XFF_DEPTH negative",
        &[],
        &[("XFF_DEPTH", "-1")],
        "XFF_DEPTH",
    ),
    // Lifetimes.
    case(
        "TTL below 60",
        &[],
        &[("TOKEN_TTL_SECONDS", "59")],
        "TOKEN_TTL_SECONDS",
    ),
    case(
        "TTL not a number",
        &[],
        &[("TOKEN_TTL_SECONDS", "abc")],
        "TOKEN_TTL_SECONDS",
    ),
    case(
        "TTL above the default maximum",
        &[],
        &[("TOKEN_TTL_SECONDS", "86401")],
        "TOKEN_TTL_SECONDS",
    ),
    case(
        "TTL above a configured maximum",
        &[],
        &[
            ("TOKEN_TTL_SECONDS", "7200"),
            ("TOKEN_MAX_TTL_SECONDS", "3600"),
        ],
        "TOKEN_TTL_SECONDS",
    ),
    case(
        "maximum TTL above a year",
        &[],
        &[("TOKEN_MAX_TTL_SECONDS", "31536001")],
        "TOKEN_MAX_TTL_SECONDS",
    ),
    case(
        "maximum TTL not a number",
        &[],
        &[("TOKEN_MAX_TTL_SECONDS", "lots")],
        "TOKEN_MAX_TTL_SECONDS",
    ),
    // Port.
    case(
        "port not a number",
        &[],
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", "http")],
        "FUNCTIONS_CUSTOMHANDLER_PORT",
    ),
    case(
        "port over 65535",
        &[],
        &[("FUNCTIONS_CUSTOMHANDLER_PORT", "70000")],
        "FUNCTIONS_CUSTOMHANDLER_PORT",
    ),
    // Seed names: the error names the setting actually read.
    case(
        "seed keyvalue not base64",
        &["IOTHUB_POLICY_KEY"],
        &[("keyvalue", BAD_KEY)],
        "keyvalue",
    ),
    case(
        "seed allowedip with host bits set",
        &["ALLOWED_IPS"],
        &[("allowedip", "10.0.0.1/8")],
        "allowedip",
    ),
    case(
        "seed iothubhostname with a scheme",
        &["IOTHUB_HOSTNAME"],
        &[("iothubhostname", "https://contoso.azure-devices.net")],
        "iothubhostname",
    ),
    case(
        "upper-case and seed hostname both empty",
        &[],
        &[("IOTHUB_HOSTNAME", ""), ("iothubhostname", "")],
        "IOTHUB_HOSTNAME",
    ),
    case(
        "empty upper-case key falls back to a bad seed keyvalue",
        &[],
        &[("IOTHUB_POLICY_KEY", ""), ("keyvalue", BAD_KEY)],
        "keyvalue",
    ),
];

/// A start-up line that echoes a key value, however malformed, is wrong.
fn echoed_keys(failure: &StartupFailure) -> Vec<String> {
    let output = format!("{}{}", failure.stdout, failure.stderr);
    Secrets::default()
        .with("policy key", KEY)
        .with("malformed key", BAD_KEY)
        .with("malformed key's tail", "secretvalue")
        .found_in(&output)
        .into_iter()
        .map(|found| format!("echoed {found}"))
        .collect()
}

#[test]
fn every_bad_setting_stops_startup_with_one_line_naming_it() {
    let cases: Vec<Refusal<'_>> = CASES
        .iter()
        .map(|case| Refusal {
            description: case.description.to_owned(),
            settings: case.settings(),
            setting: case.setting,
        })
        .collect();
    let report = misrefused_startups(&cases, echoed_keys);
    assert!(
        report.is_empty(),
        "{} of {} bad settings misbehaved:\n{}",
        report.len(),
        CASES.len(),
        report.join("\n")
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

#[test]
fn malformed_thumbprint_settings_stop_the_binary_naming_the_setting() {
    let sha1_hex = sha1(&current("any"));
    let sha256_hex = sha256(&current("any"));
    let cases: Vec<(&str, String)> = vec![
        ("only commas", " , ,".to_owned()),
        ("too short", "abc123".to_owned()),
        ("39 hex digits", sha1_hex[..39].to_owned()),
        ("41 hex digits", format!("{sha1_hex}a")),
        ("63 hex digits", sha256_hex[..63].to_owned()),
        ("65 hex digits", format!("{sha256_hex}a")),
        ("48 hex digits", format!("{sha1_hex}01234567")),
        ("40 characters, not hex", "z".repeat(40)),
        ("a good one and a bad one", format!("{sha1_hex},xyz")),
    ];

    let refusals: Vec<Refusal<'_>> = cases
        .iter()
        .map(|(description, value)| Refusal {
            description: format!("{description} ({value:?})"),
            settings: Settings::base().set("CLIENT_CERT_THUMBPRINTS", value),
            setting: "CLIENT_CERT_THUMBPRINTS",
        })
        .collect();
    let failures = misrefused_startups(&refusals, |_| Vec::new());
    assert!(
        failures.is_empty(),
        "{} of {} malformed thumbprint lists misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
