//! Settings: the only place that reads the environment.
//!
//! **What it owns.** Every app setting's name, default and rule, and the seed function's lower-case
//! names as fallbacks (`iothubhostname`, `keyname`, `keyvalue`, `allowedip`), so existing app
//! settings keep working. Settings are read once, at start-up, into types; anything missing or
//! malformed is a [`ConfigError`] naming the setting, and the process stops before it binds a port.
//!
//! **What it trusts.** Nothing it reads. It never puts a key's value into an error message.
//!
//! It reads through a lookup function ([`Config::from_lookup`]) so unit tests never touch the
//! process environment.

use std::time::Duration;

use crate::allow_list::AllowList;
use crate::auth::bearer::BearerSettings;
use crate::auth::client_cert::Thumbprints;
use crate::client_ip::XffDepth;
use crate::limits::Limits;
use crate::params::Ttl;
use crate::sas::{Signer, SigningKey};

/// The whole configuration, parsed.
#[derive(Debug)]
pub struct Config {
    /// Where the signing key comes from.
    pub key_source: KeySource,
    /// `ALLOWED_IPS`: who may ask for tokens.
    pub allow_list: AllowList,
    /// `XFF_DEPTH`: which `X-Forwarded-For` entry from the right is the caller.
    pub xff_depth: XffDepth,
    /// `TOKEN_TTL_SECONDS`: lifetime when the request names none.
    pub default_ttl: Ttl,
    /// `TOKEN_MAX_TTL_SECONDS`: the longest lifetime a request may ask for.
    pub max_ttl: Ttl,
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`: the port on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// `RUST_LOG`: the log filter.
    pub log_filter: String,
    /// Request, connection and shutdown limits.
    pub limits: Limits,
    /// `AUTH_*`: the bearer-token layer, when `AUTH_TENANT_ID` is set.
    pub bearer: Option<BearerSettings>,
    /// `CLIENT_CERT_THUMBPRINTS`: the client-certificate layer, when set.
    pub client_cert: Option<Thumbprints>,
}

/// Where the IoT Hub policy key comes from.
#[derive(Debug)]
pub enum KeySource {
    /// `IOTHUB_POLICY_KEY` in app settings: the signer is ready at start-up.
    Static(Signer),
    /// `KEYVAULT_URI`: the key is read from Key Vault with the app's managed identity.
    KeyVault(KeyVaultSettings),
}

/// How to reach the secret that holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultSettings {
    /// `KEYVAULT_URI`, e.g. `https://contoso-kv.vault.azure.net/`.
    pub vault_uri: String,
    /// `IOTHUB_POLICY_KEY_SECRET`: the secret's name.
    pub secret_name: String,
    /// `KEYVAULT_REFRESH_SECONDS`: how often the secret is re-read.
    pub refresh: Duration,
    /// `AZURE_CLIENT_ID`: a user-assigned identity to use instead of the system-assigned one.
    pub client_id: Option<String>,
    /// `IOTHUB_HOSTNAME`, when set; otherwise it must come from a connection-string secret.
    pub hub: Option<String>,
    /// `IOTHUB_POLICY_NAME`, when set; otherwise it must come from a connection-string secret.
    pub policy_name: Option<String>,
    /// Whether the platform provides an App Service managed identity (`IDENTITY_ENDPOINT`); when
    /// not, the developer's Azure CLI login is used.
    pub managed_identity: bool,
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
    "ALLOWED_IPS",
    "XFF_DEPTH",
    "TOKEN_TTL_SECONDS",
    "TOKEN_MAX_TTL_SECONDS",
    "KEYVAULT_URI",
    "IOTHUB_POLICY_KEY_SECRET",
    "KEYVAULT_REFRESH_SECONDS",
    "AZURE_CLIENT_ID",
    "AUTH_TENANT_ID",
    "AUTH_AUDIENCE",
    "AUTH_ALLOWED_CALLERS",
    "AUTH_REQUIRED_ROLE",
    "AUTH_OPENID_CONFIG_URL",
    "AUTH_JWKS_REFETCH_SECONDS",
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

/// A setting that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The setting's name, as the operator would look for it.
    pub setting: &'static str,
    /// What is wrong with it. Never contains a secret's value.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

/// Default for `XFF_DEPTH`'s absence is 1; the rest of the defaults live here.
const DEFAULT_TTL_SECONDS: u32 = 3_600;
const DEFAULT_MAX_TTL_SECONDS: u32 = 86_400;
/// The longest `TOKEN_MAX_TTL_SECONDS` accepted: a year. Device credentials should be short-lived;
/// SDKs misbehave with very long expiries.
const MAX_MAX_TTL_SECONDS: u32 = 31_536_000;
const DEFAULT_PORT: u16 = 8080;
/// Our events at `info`; the SDK's per-request HTTP lines only when something is wrong.
const DEFAULT_LOG_FILTER: &str = "info,typespec_client_core=warn,azure_core=warn";
const DEFAULT_REFRESH_SECONDS: u64 = 300;
/// Re-reading a secret more often than every 10 s buys nothing and eats the vault's shared quota.
const MIN_REFRESH_SECONDS: u64 = 10;

/// A setting and the seed function's older name for it.
struct Name {
    current: &'static str,
    seed: Option<&'static str>,
}

const IOTHUB_HOSTNAME: Name = Name {
    current: "IOTHUB_HOSTNAME",
    seed: Some("iothubhostname"),
};
const IOTHUB_POLICY_NAME: Name = Name {
    current: "IOTHUB_POLICY_NAME",
    seed: Some("keyname"),
};
const IOTHUB_POLICY_KEY: Name = Name {
    current: "IOTHUB_POLICY_KEY",
    seed: Some("keyvalue"),
};
const ALLOWED_IPS: Name = Name {
    current: "ALLOWED_IPS",
    seed: Some("allowedip"),
};

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the configuration through `lookup` (a setting's name → its value, if set).
    /// An empty or all-whitespace value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Settings(&lookup);

        let allow_list = {
            let (setting, text) = settings.required(&ALLOWED_IPS)?;
            AllowList::parse(&text).map_err(|e| ConfigError::new(setting, e.to_string()))?
        };
        let xff_depth = match settings.get("XFF_DEPTH") {
            None => XffDepth::default(),
            Some(text) => text
                .parse::<u8>()
                .ok()
                .and_then(XffDepth::new)
                .ok_or_else(|| {
                    ConfigError::new(
                        "XFF_DEPTH",
                        format!("must be a whole number from 1 to {}", XffDepth::MAX),
                    )
                })?,
        };
        let max_ttl = {
            let seconds = settings.number(
                "TOKEN_MAX_TTL_SECONDS",
                DEFAULT_MAX_TTL_SECONDS,
                Ttl::MIN,
                MAX_MAX_TTL_SECONDS,
            )?;
            Ttl::bound(seconds).expect("bounded below by Ttl::MIN")
        };
        let default_ttl = {
            let seconds = settings.number(
                "TOKEN_TTL_SECONDS",
                DEFAULT_TTL_SECONDS,
                Ttl::MIN,
                max_ttl.seconds(),
            )?;
            Ttl::bound(seconds).expect("bounded below by Ttl::MIN")
        };
        let port = match settings.get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            None => DEFAULT_PORT,
            Some(text) => text.parse::<u16>().map_err(|_| {
                ConfigError::new(
                    "FUNCTIONS_CUSTOMHANDLER_PORT",
                    "must be a port number (0-65535)",
                )
            })?,
        };
        let key_source = key_source(&settings)?;
        let log_filter = settings
            .get("RUST_LOG")
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());

        let limits = limits(&settings)?;
        let bearer = bearer(&settings)?;
        let client_cert = settings
            .get("CLIENT_CERT_THUMBPRINTS")
            .map(|text| {
                Thumbprints::parse(&text)
                    .map_err(|e| ConfigError::new("CLIENT_CERT_THUMBPRINTS", e.to_string()))
            })
            .transpose()?;

        Ok(Self {
            key_source,
            allow_list,
            xff_depth,
            default_ttl,
            max_ttl,
            port,
            log_filter,
            limits,
            bearer,
            client_cert,
        })
    }
}

/// The bearer-token layer: on when `AUTH_TENANT_ID` is set, and then complete or refused.
fn bearer(settings: &Settings<'_>) -> Result<Option<BearerSettings>, ConfigError> {
    let Some(tenant_id) = settings.get("AUTH_TENANT_ID") else {
        for dependent in [
            "AUTH_AUDIENCE",
            "AUTH_ALLOWED_CALLERS",
            "AUTH_REQUIRED_ROLE",
        ] {
            if settings.get(dependent).is_some() {
                return Err(ConfigError::new(
                    "AUTH_TENANT_ID",
                    format!("is required when {dependent} is set"),
                ));
            }
        }
        return Ok(None);
    };
    let tenant_id = tenant_id.trim().to_ascii_lowercase();
    if !is_guid(&tenant_id) {
        return Err(ConfigError::new(
            "AUTH_TENANT_ID",
            "must be the tenant's id (a GUID), as it appears in the token's issuer",
        ));
    }
    let list = |setting: &'static str| -> Result<Vec<String>, ConfigError> {
        let items: Vec<String> = settings
            .get(setting)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        if items.is_empty() {
            Err(ConfigError::new(
                setting,
                "is required when AUTH_TENANT_ID is set (a comma-separated list)",
            ))
        } else {
            Ok(items)
        }
    };
    let audiences = list("AUTH_AUDIENCE")?;
    let allowed_callers = list("AUTH_ALLOWED_CALLERS")?;
    let openid_config_url = settings.get("AUTH_OPENID_CONFIG_URL").unwrap_or_else(|| {
        format!(
            "https://login.microsoftonline.com/{tenant_id}/v2.0/.well-known/openid-configuration"
        )
    });
    if !openid_config_url.starts_with("https://") || openid_config_url.len() <= "https://".len() {
        return Err(ConfigError::new(
            "AUTH_OPENID_CONFIG_URL",
            "must be an https URL",
        ));
    }
    let jwks_refetch =
        Duration::from_secs(settings.number("AUTH_JWKS_REFETCH_SECONDS", 60, 1, 3_600)?);
    Ok(Some(BearerSettings {
        tenant_id,
        audiences,
        allowed_callers,
        required_role: settings
            .get("AUTH_REQUIRED_ROLE")
            .map(|r| r.trim().to_owned()),
        openid_config_url,
        jwks_refetch,
    }))
}

/// `8-4-4-4-12` hex digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn limits(settings: &Settings<'_>) -> Result<Limits, ConfigError> {
    let default = Limits::default();
    Ok(Limits {
        // Below 8 KiB ordinary forwarded requests (certificates, bearer tokens) would not fit.
        max_header_bytes: settings.number(
            "MAX_REQUEST_HEADER_BYTES",
            default.max_header_bytes,
            8 * 1024,
            1024 * 1024,
        )?,
        max_url_bytes: settings.number("MAX_URL_BYTES", default.max_url_bytes, 256, 64 * 1024)?,
        max_body_bytes: settings.number(
            "MAX_BODY_BYTES",
            default.max_body_bytes,
            0,
            1024 * 1024,
        )?,
        header_read_timeout: Duration::from_secs(settings.number(
            "REQUEST_HEADER_TIMEOUT_SECONDS",
            default.header_read_timeout.as_secs(),
            1,
            300,
        )?),
        max_concurrent_requests: settings.number(
            "MAX_CONCURRENT_REQUESTS",
            default.max_concurrent_requests,
            1,
            65_536,
        )?,
        shutdown_grace: Duration::from_secs(settings.number(
            "SHUTDOWN_GRACE_SECONDS",
            default.shutdown_grace.as_secs(),
            0,
            120,
        )?),
    })
}

fn key_source(settings: &Settings<'_>) -> Result<KeySource, ConfigError> {
    let hub = settings
        .optional(&IOTHUB_HOSTNAME)
        .map(|(setting, hub)| check_hub(setting, &hub).map(|()| hub))
        .transpose()?;
    let policy_name = settings
        .optional(&IOTHUB_POLICY_NAME)
        .map(|(setting, name)| check_policy_name(setting, &name).map(|()| name))
        .transpose()?;

    let Some(vault_uri) = settings.get("KEYVAULT_URI") else {
        let hub = hub.ok_or_else(|| missing(&IOTHUB_HOSTNAME))?;
        let policy_name = policy_name.ok_or_else(|| missing(&IOTHUB_POLICY_NAME))?;
        let (setting, key) = settings.required(&IOTHUB_POLICY_KEY)?;
        let key =
            SigningKey::from_base64(&key).map_err(|e| ConfigError::new(setting, e.to_string()))?;
        return Ok(KeySource::Static(Signer::new(&hub, &policy_name, &key)));
    };

    if let Some((setting, _)) = settings.optional(&IOTHUB_POLICY_KEY) {
        return Err(ConfigError::new(
            setting,
            "must be unset when KEYVAULT_URI is set (the key comes from Key Vault)",
        ));
    }
    check_vault_uri(&vault_uri)?;
    let secret_name = settings.get("IOTHUB_POLICY_KEY_SECRET").ok_or_else(|| {
        ConfigError::new(
            "IOTHUB_POLICY_KEY_SECRET",
            "is required when KEYVAULT_URI is set",
        )
    })?;
    if !is_secret_name(&secret_name) {
        return Err(ConfigError::new(
            "IOTHUB_POLICY_KEY_SECRET",
            "must be a Key Vault secret name: 1-127 letters, digits and dashes",
        ));
    }
    let refresh = Duration::from_secs(settings.number(
        "KEYVAULT_REFRESH_SECONDS",
        DEFAULT_REFRESH_SECONDS,
        MIN_REFRESH_SECONDS,
        86_400,
    )?);
    let managed_identity = settings.get("IDENTITY_ENDPOINT").is_some();
    // On Azure without a managed identity nothing could ever read the vault: say so now rather
    // than fail every fetch. `WEBSITE_SITE_NAME` is set by App Service on every plan; the host's
    // other marker, `CONTAINER_NAME`, is also set by ordinary container runtimes, so it is not used.
    let on_azure = settings.get("WEBSITE_SITE_NAME").is_some();
    if on_azure && !managed_identity {
        return Err(ConfigError::new(
            "KEYVAULT_URI",
            "needs the Function App's managed identity, but IDENTITY_ENDPOINT is not set: turn on the identity",
        ));
    }
    // rustls loads only this file's roots when it is set; a missing file would leave no roots.
    if let Some(path) = settings.get("SSL_CERT_FILE")
        && !std::path::Path::new(&path).is_file()
    {
        return Err(ConfigError::new(
            "SSL_CERT_FILE",
            "is set but is not a readable file",
        ));
    }
    Ok(KeySource::KeyVault(KeyVaultSettings {
        vault_uri,
        secret_name,
        refresh,
        client_id: settings.get("AZURE_CLIENT_ID"),
        hub,
        policy_name,
        managed_identity,
    }))
}

/// `IOTHUB_HOSTNAME` must be a bare DNS name: `contoso.azure-devices.net`, not a URL.
pub(crate) fn check_hub(setting: &'static str, hub: &str) -> Result<(), ConfigError> {
    let is_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if hub.len() <= 253 && hub.split('.').all(is_label) {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            "must be a host name like contoso.azure-devices.net (no scheme, port or path)",
        ))
    }
}

/// A policy name is printable ASCII without spaces (IoT Hub's own names are `iothubowner`,
/// `device`, …); it is percent-encoded into the token either way.
pub(crate) fn check_policy_name(setting: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.len() <= 256 && name.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            "must be a shared access policy name (printable ASCII, no spaces)",
        ))
    }
}

fn check_vault_uri(uri: &str) -> Result<(), ConfigError> {
    let host = uri
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(host) if !host.is_empty() && !host.contains('@') => Ok(()),
        _ => Err(ConfigError::new(
            "KEYVAULT_URI",
            "must be an https URL like https://contoso-kv.vault.azure.net/",
        )),
    }
}

fn is_secret_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn missing(name: &Name) -> ConfigError {
    let problem = match name.seed {
        Some(seed) => format!("is required (or the seed function's `{seed}`)"),
        None => "is required".to_owned(),
    };
    ConfigError::new(name.current, problem)
}

/// The lookup, with empty values treated as unset.
struct Settings<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Settings<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value and the name it was found under: the current name first, then the seed's.
    fn optional(&self, name: &Name) -> Option<(&'static str, String)> {
        let current = self.get(name.current).map(|v| (name.current, v));
        current.or_else(|| name.seed.and_then(|seed| self.get(seed).map(|v| (seed, v))))
    }

    fn required(&self, name: &Name) -> Result<(&'static str, String), ConfigError> {
        self.optional(name).ok_or_else(|| missing(name))
    }

    /// A whole number in `[min, max]`, or `default` when unset.
    fn number<T>(&self, setting: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(text) = self.get(setting) else {
            return Ok(default);
        };
        text.trim()
            .parse::<T>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ConfigError::new(
                    setting,
                    format!("must be a whole number from {min} to {max}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=";
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
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
        assert_eq!(config.xff_depth, XffDepth::default());
        assert_eq!(config.default_ttl.seconds(), 3_600);
        assert_eq!(config.max_ttl.seconds(), 86_400);
        assert_eq!(config.port, 8080);
        assert_eq!(config.log_filter, DEFAULT_LOG_FILTER);
        assert!(matches!(config.key_source, KeySource::Static(_)));
        assert_eq!(config.limits, Limits::default());
        assert!(config.bearer.is_none() && config.client_cert.is_none());
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
        let bearer = config.bearer.expect("layer on");
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
        assert!(config.allow_list.contains("10.0.0.9".parse().expect("ip")));
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
        assert_eq!(kv.hub.as_deref(), Some("contoso.azure-devices.net"));

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
