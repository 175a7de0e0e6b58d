//! Each bad setting stops the binary before it binds: a non-zero exit, exactly one stderr line
//! `configuration error: <SETTING>: <problem>` naming the setting it read, and never a key.

use crate::support::{
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
    [KEY, BAD_KEY, "secretvalue"]
        .into_iter()
        .filter(|secret| output.contains(secret))
        .map(|secret| format!("echoed the key value {secret:?}"))
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
