//! Each bad setting stops the binary before it binds: a non-zero exit, exactly one stderr line
//! `configuration error: <SETTING>: <problem>` naming the setting it read, and never a key.
//! The core settings, then the bearer-token layer's (`AUTH_*`), then the client-certificate
//! layer's (`CLIENT_CERT_THUMBPRINTS`); then settings that would be silently ignored because
//! what reads them is off, trust files no https client could use, Key Vault timings, loopback
//! allow-list entries on Azure, and the host-bits hint (whose line must also say, or never say,
//! certain things).

use crate::stand_ins::bearer::AUDIENCE_URI;
use crate::support::{
    client_certs::{current, sha1, sha256},
    leaks::Secrets,
    settings::{KEY, Settings},
    startup::{Refusal, StartupFailure, misrefused_startups, misrefused_startups_by_case},
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
        (
            "AUTH_ALLOW_DELEGATED neither true nor false",
            &[],
            &[("AUTH_ALLOW_DELEGATED", "yes")],
            "AUTH_ALLOW_DELEGATED",
        ),
        (
            "AUTH_ALLOW_DELEGATED in capitals",
            &[],
            &[("AUTH_ALLOW_DELEGATED", "TRUE")],
            "AUTH_ALLOW_DELEGATED",
        ),
        (
            "AUTH_ALLOW_DELEGATED as a number",
            &[],
            &[("AUTH_ALLOW_DELEGATED", "1")],
            "AUTH_ALLOW_DELEGATED",
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

/// A start-up that must be refused naming `setting`, whose one stderr line must also contain
/// each of `mentions` and none of `never`.
struct Worded {
    description: String,
    settings: Settings,
    setting: &'static str,
    mentions: Vec<String>,
    never: Vec<&'static str>,
}

impl Worded {
    fn new(description: impl Into<String>, settings: Settings, setting: &'static str) -> Worded {
        Worded {
            description: description.into(),
            settings,
            setting,
            mentions: Vec::new(),
            never: Vec::new(),
        }
    }

    fn mentioning(mut self, text: impl Into<String>) -> Worded {
        self.mentions.push(text.into());
        self
    }

    fn never_mentioning(mut self, text: &'static str) -> Worded {
        self.never.push(text);
        self
    }
}

/// Starts each case side by side; one report line per case that was not refused as it must be.
fn misworded(cases: &[Worded]) -> Vec<String> {
    let refusals: Vec<Refusal<'_>> = cases
        .iter()
        .map(|case| Refusal {
            description: case.description.clone(),
            settings: case.settings.clone(),
            setting: case.setting,
        })
        .collect();
    misrefused_startups_by_case(&refusals, |refusal, failure| {
        let case = cases
            .iter()
            .find(|case| case.description == refusal.description)
            .expect("every refusal comes from a case");
        let mut problems: Vec<String> = case
            .mentions
            .iter()
            .filter(|text| !failure.stderr.contains(text.as_str()))
            .map(|text| format!("does not mention {text:?}"))
            .collect();
        problems.extend(
            case.never
                .iter()
                .filter(|text| failure.stderr.contains(*text))
                .map(|text| format!("mentions {text:?}")),
        );
        problems.extend(echoed_keys(failure));
        problems
    })
}

/// The bearer layer on, with the default issuer (nothing is fetched before the settings pass).
fn bearer_on() -> Settings {
    Settings::base()
        .set("AUTH_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")
        .set("AUTH_AUDIENCE", AUDIENCE_URI)
        .set(
            "AUTH_ALLOWED_CALLERS",
            "6a1f1d8e-0000-4000-8000-000000000001",
        )
}

/// Key Vault mode; the settings are refused before any client is built, so nothing is reached.
fn key_vault_on() -> Settings {
    Settings::key_vault("iothub-device-policy")
        .set("KEYVAULT_URI", "https://contoso-kv.vault.azure.net/")
}

#[test]
fn a_setting_that_only_another_setting_turns_on_stops_the_binary_when_that_one_is_unset() {
    // Each would be silently ignored: the layer or key source that reads it is off.
    let mut cases = Vec::new();
    for dependent in [
        (
            "AUTH_OPENID_CONFIG_URL",
            "https://127.0.0.1:9/.well-known/openid-configuration",
        ),
        ("AUTH_JWKS_REFETCH_SECONDS", "30"),
        ("AUTH_ALLOW_DELEGATED", "true"),
    ] {
        let (name, value) = dependent;
        cases.push(
            Worded::new(
                format!("{name} without AUTH_TENANT_ID"),
                Settings::base().set(name, value),
                "AUTH_TENANT_ID",
            )
            .mentioning(format!("is required when {name} is set")),
        );
    }
    for (name, value) in [
        ("KEYVAULT_REFRESH_SECONDS", "60"),
        ("KEYVAULT_MAX_KEY_AGE_SECONDS", "3600"),
        ("IOTHUB_POLICY_KEY_SECRET", "iothub-device-policy"),
    ] {
        cases.push(
            Worded::new(
                format!("{name} without KEYVAULT_URI"),
                Settings::base().set(name, value),
                name,
            )
            .mentioning("KEYVAULT_URI"),
        );
    }
    // The same rule in enrollment-group mode.
    cases.push(
        Worded::new(
            "KEYVAULT_MAX_KEY_AGE_SECONDS without KEYVAULT_URI, enrollment-group mode",
            Settings::none()
                .set("SIGNING_MODE", "enrollment-group")
                .set("IOTHUB_HOSTNAME", "demo-hub.azure-devices.net")
                .set("ENROLLMENT_GROUP_KEY", KEY)
                .set("ALLOWED_IPS", "127.0.0.1")
                .set("KEYVAULT_MAX_KEY_AGE_SECONDS", "3600"),
            "KEYVAULT_MAX_KEY_AGE_SECONDS",
        )
        .mentioning("KEYVAULT_URI"),
    );

    let report = misworded(&cases);
    assert!(
        report.is_empty(),
        "{} of {} settings that would be ignored misbehaved:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
}

#[test]
fn a_trust_file_the_bearer_layer_cannot_use_stops_the_binary_naming_ssl_cert_file() {
    // With only the bearer layer on (no Key Vault), SSL_CERT_FILE alone decides what its https
    // client trusts: a file it cannot use would leave it trusting nothing, or failing later.
    let dir = std::env::temp_dir().join(format!("bad-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("the temp dir is writable");
        path.display().to_string()
    };
    let missing = dir.join("missing.pem").display().to_string();
    let empty = write("empty.pem", "");
    let not_pem = write(
        "not-pem.txt",
        "these are not the roots you are looking for\n",
    );
    let garbage = write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let cases: Vec<Worded> = [
        (
            "a missing file",
            &missing,
            "is set but is not a readable file",
        ),
        (
            "a directory",
            &dir.display().to_string(),
            "is set but is not a readable file",
        ),
        ("an empty file", &empty, "holds no PEM certificate"),
        ("a file without PEM", &not_pem, "holds no PEM certificate"),
        (
            "a malformed PEM certificate",
            &garbage,
            "holds a malformed PEM certificate",
        ),
    ]
    .into_iter()
    .map(|(description, path, problem)| {
        Worded::new(
            format!("SSL_CERT_FILE: {description}, bearer layer only"),
            bearer_on().set("SSL_CERT_FILE", path.as_str()),
            "SSL_CERT_FILE",
        )
        .mentioning(problem)
    })
    .collect();

    let report = misworded(&cases);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        report.is_empty(),
        "{} of {} unusable trust files misbehaved:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
}

#[test]
fn a_max_key_age_that_one_missed_refresh_would_exceed_stops_the_binary_naming_it() {
    let cases: Vec<Worded> = [
        ("below twice the default refresh (300 s)", None, "599"),
        ("below twice a 10 s refresh", Some("10"), "19"),
        ("equal to the refresh", Some("60"), "60"),
        ("above a year", None, "31536001"),
        ("not a number", None, "a day"),
        ("negative", None, "-1"),
    ]
    .into_iter()
    .map(|(description, refresh, max_age)| {
        let settings = key_vault_on().set("KEYVAULT_MAX_KEY_AGE_SECONDS", max_age);
        let settings = match refresh {
            Some(seconds) => settings.set("KEYVAULT_REFRESH_SECONDS", seconds),
            None => settings,
        };
        Worded::new(
            format!("KEYVAULT_MAX_KEY_AGE_SECONDS={max_age:?}: {description}"),
            settings,
            "KEYVAULT_MAX_KEY_AGE_SECONDS",
        )
    })
    .chain([Worded::new(
        "KEYVAULT_REFRESH_SECONDS below its 10 s minimum",
        key_vault_on().set("KEYVAULT_REFRESH_SECONDS", "9"),
        "KEYVAULT_REFRESH_SECONDS",
    )])
    .collect();

    let report = misworded(&cases);
    assert!(
        report.is_empty(),
        "{} of {} bad Key Vault timings misbehaved:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
}

#[test]
fn on_azure_a_loopback_allow_list_entry_stops_the_binary_naming_allowed_ips() {
    // With WEBSITE_SITE_NAME set every caller arrives through X-Forwarded-For, never from
    // loopback: such an entry can only be the local example copied across.
    let cases: Vec<Worded> = [
        ("ALLOWED_IPS", "127.0.0.1", "127.0.0.1"),
        ("ALLOWED_IPS", "::1", "::1"),
        ("ALLOWED_IPS", "127.0.0.0/8", "127.0.0.0/8"),
        ("ALLOWED_IPS", "127.1.2.3", "127.1.2.3"),
        ("ALLOWED_IPS", "::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("ALLOWED_IPS", "10.0.0.1, 127.0.0.1", "127.0.0.1"),
        ("allowedip", "127.0.0.1", "127.0.0.1"),
    ]
    .into_iter()
    .map(|(setting, list, entry)| {
        let settings = Settings::base()
            .unset("ALLOWED_IPS")
            .set(setting, list)
            .set("WEBSITE_SITE_NAME", "iothub-sas-prod");
        Worded::new(format!("{setting}={list:?} on Azure"), settings, setting)
            .mentioning(format!("`{entry}` is a loopback address"))
            .mentioning("WEBSITE_SITE_NAME")
    })
    .collect();

    let report = misworded(&cases);
    assert!(
        report.is_empty(),
        "{} of {} loopback allow lists on Azure misbehaved:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
}

#[test]
fn a_host_bits_hint_never_suggests_a_whole_address_family() {
    // A typo of one address must not be "corrected" into allowing everyone.
    let cases: Vec<Worded> = ["10.0.0.1/0", "2001:db8::1/0", "::ffff:10.0.0.1/96"]
        .into_iter()
        .map(|entry| {
            Worded::new(
                format!("{entry:?}"),
                Settings::base().set("ALLOWED_IPS", entry),
                "ALLOWED_IPS",
            )
            .mentioning(format!("`{entry}` has host bits set"))
            .never_mentioning("did you mean")
            .never_mentioning("`0.0.0.0/0`")
            .never_mentioning("`::/0`")
        })
        .chain([
            Worded::new(
                "\"10.0.0.1/8\" still gets its hint",
                Settings::base().set("ALLOWED_IPS", "10.0.0.1/8"),
                "ALLOWED_IPS",
            )
            .mentioning("did you mean `10.0.0.0/8`?"),
            Worded::new(
                "\"128.0.0.1/1\" still gets its hint",
                Settings::base().set("ALLOWED_IPS", "128.0.0.1/1"),
                "ALLOWED_IPS",
            )
            .mentioning("did you mean `128.0.0.0/1`?"),
        ])
        .collect();

    let report = misworded(&cases);
    assert!(
        report.is_empty(),
        "{} of {} host-bits refusals misbehaved:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
}
