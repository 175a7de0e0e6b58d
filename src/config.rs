//! Settings: the one place that reads the environment, and assembles each layer's settings.
//!
//! **What it owns.** Reading the process environment once, at start-up ([`Config::from_env`]),
//! and calling each layer's own parser in turn: the caller layers ([`CallerSettings`]), token
//! lifetimes ([`TokenLifetimes`]), the server ([`ServerSettings`]), the key source ([`KeySource`])
//! per-caller scoping ([`Scopes`]) and the log filter; and, when any of them makes https calls, `SSL_CERT_FILE`
//! ([`https_roots`]). Each layer defines its settings' names, defaults and rules; this module
//! defines none. It also publishes the list of every setting the handler reads ([`SETTINGS`],
//! [`PLATFORM_SETTINGS`], [`SEED_SETTINGS`]), checked here against what the parsers ask for.
//!
//! **What it trusts.** Nothing it reads. A missing or malformed setting is a [`SettingError`]
//! naming it, and the process stops before it binds a port; no error carries a key's value.
//!
//! It reads through a lookup function ([`Config::from_lookup`]) so unit tests never touch the
//! process environment.

use crate::caller::CallerSettings;
use crate::https_roots;
use crate::params::TokenLifetimes;
use crate::scope::{Layers, Scopes};
use crate::secrets::KeySource;
use crate::server::ServerSettings;
use crate::settings::{Lookup, SettingError};
use crate::telemetry;

/// The whole configuration, parsed: each layer's settings.
#[derive(Debug)]
pub struct Config {
    /// The caller layers: allow list, `X-Forwarded-For` depth, client certificate, bearer token.
    pub callers: CallerSettings,
    /// Token lifetimes.
    pub lifetimes: TokenLifetimes,
    /// The port and the limits.
    pub server: ServerSettings,
    /// Where the signing key comes from, in which signing mode.
    pub key_source: KeySource,
    /// `DEVICE_SCOPES`: which devices each caller may get tokens for; `None`: any device.
    pub scopes: Option<Scopes>,
    /// `RUST_LOG`: the log filter.
    pub log_filter: String,
}

/// Every app setting an operator sets (or may set) for this handler, as the README documents
/// them. The platform's own variables that the handler also reads (`FUNCTIONS_CUSTOMHANDLER_PORT`,
/// `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` via the SDK, `WEBSITE_SITE_NAME`, `SSL_CERT_FILE`,
/// `RUST_LOG`) and the seed's fallback names are in [`PLATFORM_SETTINGS`] and [`SEED_SETTINGS`].
/// A unit test checks that these lists are exactly what [`Config::from_lookup`] asks for.
pub const SETTINGS: &[&str] = &[
    "IOTHUB_HOSTNAME",
    "IOTHUB_POLICY_NAME",
    "IOTHUB_POLICY_KEY",
    "SIGNING_MODE",
    "ENROLLMENT_GROUP_KEY",
    "ENROLLMENT_GROUP_KEY_SECRET",
    "DPS_ID_SCOPE",
    "DEVICE_SCOPES",
    "ALLOWED_IPS",
    "XFF_DEPTH",
    "TOKEN_TTL_SECONDS",
    "TOKEN_MAX_TTL_SECONDS",
    "KEYVAULT_URI",
    "IOTHUB_POLICY_KEY_SECRET",
    "KEYVAULT_REFRESH_SECONDS",
    "KEYVAULT_MAX_KEY_AGE_SECONDS",
    "AZURE_CLIENT_ID",
    "AUTH_TENANT_ID",
    "AUTH_AUDIENCE",
    "AUTH_ALLOWED_CALLERS",
    "AUTH_REQUIRED_ROLE",
    "AUTH_ALLOW_DELEGATED",
    "AUTH_OPENID_CONFIG_URL",
    "AUTH_JWKS_REFETCH_SECONDS",
    "GATEWAY_CALLERS",
    "AUTH_CALLER_AUDIENCE",
    "CLIENT_CERT_THUMBPRINTS",
    "MAX_URL_BYTES",
    "MAX_REQUEST_HEADER_BYTES",
    "MAX_BODY_BYTES",
    "REQUEST_HEADER_TIMEOUT_SECONDS",
    "MAX_CONCURRENT_REQUESTS",
    "SHUTDOWN_GRACE_SECONDS",
];

/// Variables set by the platform or the process environment rather than by the operator.
pub const PLATFORM_SETTINGS: &[&str] = &[
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "IDENTITY_ENDPOINT",
    "WEBSITE_SITE_NAME",
    "SSL_CERT_FILE",
    "RUST_LOG",
];

/// The seed function's setting names, read when the new name is unset.
pub const SEED_SETTINGS: &[&str] = &["iothubhostname", "keyname", "keyvalue", "allowedip"];

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the configuration through `lookup` (a setting's name → its value, if set).
    /// An empty or all-whitespace value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let settings = Lookup::new(&lookup);
        let callers = CallerSettings::from_lookup(&settings)?;
        let scopes = Scopes::from_lookup(
            &settings,
            Layers {
                bearer: callers.bearer.is_some(),
                client_cert: callers.client_cert.as_ref(),
                gateways: callers.gateways.as_ref(),
            },
        )?;
        let config = Self {
            callers,
            lifetimes: TokenLifetimes::from_lookup(&settings)?,
            server: ServerSettings::from_lookup(&settings)?,
            key_source: KeySource::from_lookup(&settings)?,
            scopes,
            log_filter: telemetry::filter_from_lookup(&settings),
        };
        if config.uses_https() {
            https_roots::check_from_lookup(&settings)?;
        }
        Ok(config)
    }

    /// Whether any layer makes https calls (Key Vault, the token issuer's keys): then
    /// `SSL_CERT_FILE`, if set, decides what they trust.
    fn uses_https(&self) -> bool {
        matches!(self.key_source, KeySource::KeyVault(_)) || self.callers.bearer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_ip::XffDepth;
    use crate::limits::Limits;
    use crate::secrets::secret_value::SecretUse;
    use crate::telemetry::DEFAULT_LOG_FILTER;
    use std::collections::HashMap;
    use std::time::Duration;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=";
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn config(pairs: &[(&str, &str)]) -> Result<Config, SettingError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("IOTHUB_HOSTNAME", "contoso.azure-devices.net"),
            ("IOTHUB_POLICY_NAME", "device"),
            ("IOTHUB_POLICY_KEY", KEY),
            ("ALLOWED_IPS", "10.0.0.1"),
        ]
    }

    fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs: Vec<_> = base()
            .into_iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .collect();
        pairs.extend(overrides.iter().filter(|(_, v)| !v.is_empty()));
        pairs
    }

    fn setting_of(pairs: &[(&str, &str)]) -> &'static str {
        config(pairs)
            .expect_err("configuration should be refused")
            .setting
    }

    #[test]
    fn defaults_apply() {
        let config = config(&base()).expect("base configuration is valid");
        assert_eq!(config.callers.xff_depth, XffDepth::default());
        assert_eq!(config.lifetimes.default.seconds(), 3_600);
        assert_eq!(config.lifetimes.max.seconds(), 86_400);
        assert_eq!(config.server.port, 8080);
        assert_eq!(config.log_filter, DEFAULT_LOG_FILTER);
        assert!(matches!(config.key_source, KeySource::Static(_)));
        assert_eq!(config.server.limits, Limits::default());
        assert!(config.callers.bearer.is_none() && config.callers.client_cert.is_none());
    }

    #[test]
    fn the_bearer_layer_is_complete_when_on() {
        let config = config(&with(&[
            ("AUTH_TENANT_ID", "72F988BF-86F1-41AF-91AB-2D7CD011DB47"),
            (
                "AUTH_AUDIENCE",
                "api://sas, 11111111-2222-3333-4444-555555555555",
            ),
            ("AUTH_ALLOWED_CALLERS", "apim-oid"),
        ]))
        .expect("valid bearer settings");
        let bearer = config.callers.bearer.expect("layer on");
        assert_eq!(bearer.tenant_id, TENANT);
        assert_eq!(bearer.audiences.len(), 2);
        assert_eq!(
            bearer.openid_config_url,
            format!(
                "https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"
            )
        );
        assert_eq!(bearer.jwks_refetch, Duration::from_secs(60));
    }

    /// Every name `from_lookup` asks for, with every layer configured, is in exactly one of the
    /// published lists, and every listed name is asked for.
    #[test]
    fn the_published_setting_lists_are_what_the_handler_reads() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let config = Config::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            // Unset new names so the seed fallbacks are asked for too; Key Vault on; all layers on.
            match name {
                "iothubhostname" => Some("h.azure-devices.net".into()),
                "keyname" => Some("device".into()),
                "allowedip" => Some("10.0.0.1".into()),
                "KEYVAULT_URI" => Some("https://kv.vault.azure.net/".into()),
                "IOTHUB_POLICY_KEY_SECRET" => Some("s".into()),
                "AUTH_TENANT_ID" => Some(TENANT.into()),
                "AUTH_AUDIENCE" | "AUTH_ALLOWED_CALLERS" => Some("x".into()),
                "CLIENT_CERT_THUMBPRINTS" => Some("ab".repeat(20)),
                _ => None,
            }
        });
        assert!(config.is_ok(), "{config:?}");
        let asked = asked.into_inner();
        let published: std::collections::BTreeSet<String> = SETTINGS
            .iter()
            .chain(PLATFORM_SETTINGS)
            .chain(SEED_SETTINGS)
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(asked, published);
        assert_eq!(
            published.len(),
            SETTINGS.len() + PLATFORM_SETTINGS.len() + SEED_SETTINGS.len(),
            "no name is in two lists"
        );
    }

    #[test]
    fn seed_names_are_fallbacks() {
        let config = config(&[
            ("iothubhostname", "seed.azure-devices.net"),
            ("keyname", "device"),
            ("keyvalue", KEY),
            ("allowedip", "10.0.0.9"),
        ])
        .expect("seed names work");
        assert!(
            config
                .callers
                .allow_list
                .contains("10.0.0.9".parse().expect("ip"))
        );
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases: &[(&[(&'static str, &'static str)], &str)] = &[
            (&[("IOTHUB_HOSTNAME", "")], "IOTHUB_HOSTNAME"),
            (
                &[("IOTHUB_HOSTNAME", "https://x.azure-devices.net")],
                "IOTHUB_HOSTNAME",
            ),
            (&[("IOTHUB_POLICY_NAME", "")], "IOTHUB_POLICY_NAME"),
            (&[("IOTHUB_POLICY_NAME", "my policy")], "IOTHUB_POLICY_NAME"),
            (&[("IOTHUB_POLICY_KEY", "")], "IOTHUB_POLICY_KEY"),
            (&[("IOTHUB_POLICY_KEY", "not-base64!")], "IOTHUB_POLICY_KEY"),
            (&[("ALLOWED_IPS", "")], "ALLOWED_IPS"),
            (&[("ALLOWED_IPS", "10.0.0.1/8")], "ALLOWED_IPS"),
            (&[("XFF_DEPTH", "0")], "XFF_DEPTH"),
            (&[("XFF_DEPTH", "one")], "XFF_DEPTH"),
            (&[("TOKEN_TTL_SECONDS", "59")], "TOKEN_TTL_SECONDS"),
            (&[("TOKEN_TTL_SECONDS", "90000")], "TOKEN_TTL_SECONDS"),
            (
                &[("TOKEN_MAX_TTL_SECONDS", "31536001")],
                "TOKEN_MAX_TTL_SECONDS",
            ),
            (
                &[("FUNCTIONS_CUSTOMHANDLER_PORT", "http")],
                "FUNCTIONS_CUSTOMHANDLER_PORT",
            ),
            (
                &[("IOTHUB_POLICY_KEY", ""), ("keyvalue", "%%%")],
                "keyvalue",
            ),
            (
                &[("MAX_REQUEST_HEADER_BYTES", "4096")],
                "MAX_REQUEST_HEADER_BYTES",
            ),
            (&[("MAX_URL_BYTES", "lots")], "MAX_URL_BYTES"),
            (&[("MAX_BODY_BYTES", "-1")], "MAX_BODY_BYTES"),
            (
                &[("REQUEST_HEADER_TIMEOUT_SECONDS", "0")],
                "REQUEST_HEADER_TIMEOUT_SECONDS",
            ),
            (
                &[("MAX_CONCURRENT_REQUESTS", "0")],
                "MAX_CONCURRENT_REQUESTS",
            ),
            (
                &[("SHUTDOWN_GRACE_SECONDS", "121")],
                "SHUTDOWN_GRACE_SECONDS",
            ),
        ];
        for (overrides, want) in cases {
            assert_eq!(
                setting_of(&with(overrides)),
                *want,
                "overrides {overrides:?}"
            );
        }
    }

    #[test]
    fn a_bad_key_is_never_echoed() {
        let error = config(&with(&[("IOTHUB_POLICY_KEY", "s3cr3t-not-base64!")]))
            .expect_err("bad key refused");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }

    #[test]
    fn key_vault_replaces_the_key_setting() {
        let mut pairs = with(&[("IOTHUB_POLICY_KEY", "")]);
        pairs.push(("KEYVAULT_URI", "https://contoso-kv.vault.azure.net/"));
        pairs.push(("IOTHUB_POLICY_KEY_SECRET", "iothub-device-policy"));
        let config = config(&pairs).expect("Key Vault configuration is valid");
        let KeySource::KeyVault(kv) = config.key_source else {
            panic!("expected Key Vault");
        };
        assert_eq!(kv.refresh, Duration::from_secs(300));
        let SecretUse::HubPolicy { hub, .. } = &kv.secret_use else {
            panic!("expected a hub policy secret");
        };
        assert_eq!(
            hub.as_ref().map(|hub| hub.as_str()),
            Some("contoso.azure-devices.net")
        );

        let mut both = base();
        both.push(("KEYVAULT_URI", "https://contoso-kv.vault.azure.net/"));
        both.push(("IOTHUB_POLICY_KEY_SECRET", "s"));
        assert_eq!(setting_of(&both), "IOTHUB_POLICY_KEY");

        let mut http = with(&[("IOTHUB_POLICY_KEY", "")]);
        http.push(("KEYVAULT_URI", "http://kv.example/"));
        http.push(("IOTHUB_POLICY_KEY_SECRET", "s"));
        assert_eq!(setting_of(&http), "KEYVAULT_URI");

        let mut no_secret = with(&[("IOTHUB_POLICY_KEY", "")]);
        no_secret.push(("KEYVAULT_URI", "https://kv.example/"));
        assert_eq!(setting_of(&no_secret), "IOTHUB_POLICY_KEY_SECRET");
    }
}
