//! The signing key from Azure Key Vault, read with the Function App's managed identity and
//! refreshed in the background.
//!
//! **What it owns.** Its settings ([`KeyVaultSettings`]: `KEYVAULT_URI`,
//! `KEYVAULT_REFRESH_SECONDS`, `KEYVAULT_MAX_KEY_AGE_SECONDS`, `AZURE_CLIENT_ID`, and the
//! platform's `IDENTITY_ENDPOINT` and `WEBSITE_SITE_NAME`; each secret's name is a [`SecretSpec`]),
//! one credential and one `SecretClient` for the process lifetime, shared by every secret read (the
//! SDK caches the identity token and the vault's authentication challenge per client:
//! [`VaultClient`]), and one read of one secret ([`VaultSecret::fetch`]), which the refresh loop
//! ([`refresh`](crate::secrets::refresh)) runs on its schedule — one loop per secret, so with one
//! secret per hub each hub's key is refreshed, withdrawn and aged on its own. What the value may
//! be is [`secret_value`](crate::secrets::secret_value)'s.
//!
//! **What it trusts.** The identity endpoint (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, set by the
//! platform) or, off Azure, the developer's `az login`; the vault's TLS certificate through the
//! system roots (or `SSL_CERT_FILE`). Not the secret's value: it is parsed, and a malformed value is
//! a failed fetch that keeps the last good key. Key Vault's answers are the operator's intent:
//! [`FetchError::withdrawal`] tells a decision (the secret deleted, disabled, or its access
//! removed) from an outage. The value is never logged; the secret's name and
//! version are.
//!
//! **Load on the vault.** The request path never calls Key Vault. Each secret's refresh loop reads it
//! once per `KEYVAULT_REFRESH_SECONDS`, plus retries after failures with capped exponential back-off
//! and jitter, however many requests arrive — Key Vault's throttling limits are per vault and shared
//! with everything else that uses it. The SDK's own retry policy is turned off (it can spend about a
//! minute on one failing call) and every fetch is bounded by [`FETCH_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{
    AzureCliCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use zeroize::Zeroizing;

use crate::hubs::Hubs;
use crate::secrets::IssuingKey;
use crate::secrets::handle::Withdrawal;
use crate::secrets::secret_value::{Overridden, SecretFormatError, SecretUse};
use crate::settings::{Lookup, SettingError};
use crate::telemetry::error_chain;

/// The setting that turns Key Vault mode on.
pub const KEYVAULT_URI: &str = "KEYVAULT_URI";
/// Default `KEYVAULT_REFRESH_SECONDS`.
const DEFAULT_REFRESH_SECONDS: u64 = 300;
/// Re-reading a secret more often than every 10 s buys nothing and eats the vault's shared quota.
const MIN_REFRESH_SECONDS: u64 = 10;
/// How old the last successful read may be before issuance stops.
pub const KEYVAULT_MAX_KEY_AGE_SECONDS: &str = "KEYVAULT_MAX_KEY_AGE_SECONDS";
/// A day: an outage of Key Vault (or of the identity endpoint) is bridged for that long.
const DEFAULT_MAX_KEY_AGE_SECONDS: u64 = 86_400;
/// A year.
const MAX_MAX_KEY_AGE_SECONDS: u64 = 31_536_000;

/// How to reach the vault, and how often its secrets are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultSettings {
    /// `KEYVAULT_URI`, e.g. `https://contoso-kv.vault.azure.net/`.
    pub vault_uri: String,
    /// `KEYVAULT_REFRESH_SECONDS`: how often the secret is re-read.
    pub refresh: Duration,
    /// `KEYVAULT_MAX_KEY_AGE_SECONDS`: how old the last successful read may be before issuance
    /// stops; `None` (the setting is 0): no limit.
    pub max_key_age: Option<Duration>,
    /// `AZURE_CLIENT_ID`: a user-assigned identity to use instead of the system-assigned one.
    pub client_id: Option<String>,
    /// Whether the platform provides an App Service managed identity (`IDENTITY_ENDPOINT`); when
    /// not, the developer's Azure CLI login is used.
    pub managed_identity: bool,
}

/// One secret that holds a key, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The secret's name.
    pub name: String,
    /// The setting that named it (`IOTHUB_POLICY_KEY_SECRET`, `IOTHUB_POLICY_KEY_SECRETS` or
    /// `ENROLLMENT_GROUP_KEY_SECRET`).
    pub setting: &'static str,
    /// What the secret holds, and the settings that complete it.
    pub secret_use: SecretUse,
    /// The hub whose key it is (canonical name), when there is one secret per hub: for log lines.
    pub hub: Option<String>,
}

/// Whether `name` is a Key Vault secret name: 1–127 letters, digits and dashes.
pub fn is_secret_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What a secret-name setting must be.
pub const SECRET_NAME_RULE: &str =
    "must be a Key Vault secret name: 1-127 letters, digits and dashes";

impl KeyVaultSettings {
    /// `KEYVAULT_URI` (required) and the settings of reading from it.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Self, SettingError> {
        let vault_uri = settings
            .get(KEYVAULT_URI)
            .ok_or_else(|| SettingError::new(KEYVAULT_URI, "is required"))?;
        check_vault_uri(&vault_uri)?;
        let refresh = Duration::from_secs(settings.number(
            "KEYVAULT_REFRESH_SECONDS",
            DEFAULT_REFRESH_SECONDS,
            MIN_REFRESH_SECONDS,
            86_400,
        )?);
        let max_key_age = match settings.number(
            KEYVAULT_MAX_KEY_AGE_SECONDS,
            DEFAULT_MAX_KEY_AGE_SECONDS,
            0,
            MAX_MAX_KEY_AGE_SECONDS,
        )? {
            0 => None,
            // A limit shorter than two refreshes would stop issuance after one missed read.
            seconds if seconds < 2 * refresh.as_secs() => {
                return Err(SettingError::new(
                    KEYVAULT_MAX_KEY_AGE_SECONDS,
                    format!(
                        "must be 0 (no limit) or at least twice KEYVAULT_REFRESH_SECONDS ({} s)",
                        2 * refresh.as_secs()
                    ),
                ));
            }
            seconds => Some(Duration::from_secs(seconds)),
        };
        let managed_identity = settings.is_set("IDENTITY_ENDPOINT");
        // On Azure without a managed identity nothing could ever read the vault: say so now
        // rather than fail every fetch. `WEBSITE_SITE_NAME` is set by App Service on every plan;
        // the host's other marker, `CONTAINER_NAME`, is also set by ordinary container runtimes,
        // so it is not used.
        let on_azure = settings.is_set("WEBSITE_SITE_NAME");
        if on_azure && !managed_identity {
            return Err(SettingError::new(
                KEYVAULT_URI,
                "needs the Function App's managed identity, but IDENTITY_ENDPOINT is not set: turn on the identity",
            ));
        }
        Ok(Self {
            vault_uri,
            refresh,
            max_key_age,
            client_id: settings.get("AZURE_CLIENT_ID"),
            managed_identity,
        })
    }
}

fn check_vault_uri(uri: &str) -> Result<(), SettingError> {
    let host = uri
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(host) if !host.is_empty() && !host.contains('@') => Ok(()),
        _ => Err(SettingError::new(
            KEYVAULT_URI,
            "must be an https URL like https://contoso-kv.vault.azure.net/",
        )),
    }
}

/// The longest one secret read may take, identity token included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A secret read that did not produce a key. The text names the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("no answer from Key Vault within {0:?}")]
    TimedOut(Duration),
    /// The SDK failed: identity, network, TLS, HTTP status. The whole cause chain.
    #[error("{description}")]
    Sdk {
        /// Key Vault's HTTP status, when Key Vault itself answered with an error.
        status: Option<u16>,
        /// The status, the service error code and the cause chain.
        description: String,
    },
    /// The secret exists but holds no usable key.
    #[error("the secret's value is not usable: {0}")]
    BadValue(#[from] SecretFormatError),
}

impl FetchError {
    /// Whether Key Vault's answer was an operator's decision that withdraws the key: 404 (the
    /// secret is gone) or 403 (disabled, or the app's access removed). Matched on the status, as
    /// Key Vault documents it; the inner error codes that tell the 403s apart are only reported in
    /// public issues (docs/azure-behaviour.md §10). Identity failures come back as credential errors, not
    /// as Key Vault's answer, so they never withdraw the key. Everything else — no answer, a
    /// connection or TLS error, 429, 5xx, an identity failure, an unusable value — is treated as
    /// transient: the last good key stays, within `KEYVAULT_MAX_KEY_AGE_SECONDS`.
    pub fn withdrawal(&self) -> Option<Withdrawal> {
        match self {
            Self::Sdk {
                status: Some(404), ..
            } => Some(Withdrawal::NotFound),
            Self::Sdk {
                status: Some(403), ..
            } => Some(Withdrawal::Forbidden),
            _ => None,
        }
    }

    fn sdk(error: &azure_core::Error) -> Self {
        let status = match error.kind() {
            azure_core::error::ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
            _ => None,
        };
        Self::Sdk {
            status,
            description: describe_sdk_error(error),
        }
    }
}

/// The one Key Vault client every secret is read with: one credential, one `SecretClient`.
#[derive(Clone)]
pub struct VaultClient {
    client: Arc<SecretClient>,
    settings: Arc<KeyVaultSettings>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl VaultClient {
    /// Build the credential and the secret client, once. Fails only on a malformed vault URI or
    /// identity configuration (`IDENTITY_ENDPOINT`); nothing is fetched yet.
    pub fn new(settings: KeyVaultSettings) -> azure_core::Result<Self> {
        let credential = credential(&settings)?;
        let options = SecretClientOptions {
            client_options: no_sdk_retries(),
            ..SecretClientOptions::default()
        };
        let client = SecretClient::new(&settings.vault_uri, credential, Some(options))?;
        Ok(Self {
            client: Arc::new(client),
            settings: Arc::new(settings),
        })
    }

    /// One secret, read through this client.
    pub fn secret(&self, spec: SecretSpec) -> VaultSecret {
        VaultSecret {
            vault: self.clone(),
            spec,
            warned_version: std::sync::Mutex::new(None),
        }
    }
}

/// One vault secret a key comes from.
pub struct VaultSecret {
    vault: VaultClient,
    spec: SecretSpec,
    /// The secret version whose override warnings were last logged.
    warned_version: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecret")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl VaultSecret {
    /// Read the secret once and turn it into a key, tagged with the secret's version.
    pub async fn fetch(&self) -> Result<IssuingKey, FetchError> {
        let read = self.vault.client.get_secret(&self.spec.name, None);
        let response = tokio::time::timeout(FETCH_TIMEOUT, read)
            .await
            .map_err(|_| FetchError::TimedOut(FETCH_TIMEOUT))?
            .map_err(|e| FetchError::sdk(&e))?;
        let secret = response.into_model().map_err(|e| FetchError::sdk(&e))?;
        let version = secret
            .id
            .as_deref()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or("unknown");
        let value = Zeroizing::new(secret.value.unwrap_or_default());
        let parsed = self.spec.secret_use.signer(&value)?;
        self.warn_once_per_version(version, &parsed.overridden);
        Ok(IssuingKey {
            signer: parsed.signer,
            version: Some(Arc::from(version)),
            own_hub: parsed.own_hub.as_ref().map(Hubs::only),
        })
    }

    /// Say which settings override a different connection-string part — once per secret
    /// version, not at every refresh.
    fn warn_once_per_version(&self, version: &str, overridden: &[Overridden]) {
        let mut warned = self
            .warned_version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned.as_deref() == Some(version) {
            return;
        }
        *warned = Some(version.to_owned());
        for Overridden { setting, part } in overridden {
            tracing::warn!(
                secret = self.name(),
                hub = self.hub(),
                key_version = version,
                "{setting} differs from the connection string's {part}; {setting} is used"
            );
        }
    }

    /// The secret's name, for log lines.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The hub whose key this is, when each hub has its own secret: for log lines.
    pub fn hub(&self) -> Option<&str> {
        self.spec.hub.as_deref()
    }

    /// How often the secret is re-read.
    pub fn refresh(&self) -> Duration {
        self.vault.settings.refresh
    }

    /// `KEYVAULT_MAX_KEY_AGE_SECONDS`, if any.
    pub fn max_key_age(&self) -> Option<Duration> {
        self.vault.settings.max_key_age
    }
}

/// The managed identity on Azure (system-assigned, or `AZURE_CLIENT_ID`'s user-assigned one);
/// the developer's Azure CLI login elsewhere.
fn credential(settings: &KeyVaultSettings) -> azure_core::Result<Arc<dyn TokenCredential>> {
    if settings.managed_identity {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
            client_options: no_sdk_retries(),
        };
        let credential: Arc<dyn TokenCredential> = ManagedIdentityCredential::new(Some(options))?;
        Ok(credential)
    } else {
        tracing::info!(
            "IDENTITY_ENDPOINT is not set: using the Azure CLI login (`az login`) for Key Vault"
        );
        let credential: Arc<dyn TokenCredential> = AzureCliCredential::new(None)?;
        Ok(credential)
    }
}

/// Client options with the SDK's retry policy off: the refresh loop owns retries and back-off.
fn no_sdk_retries() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    }
}

/// An SDK error for the log: the HTTP status and service error code when there is a response (a
/// gateway's 503 or 429 may have an empty body), then the whole cause chain.
fn describe_sdk_error(error: &azure_core::Error) -> String {
    let chain = error_chain(error);
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => format!(
            "HTTP {status} ({}): {chain}",
            error_code.as_deref().unwrap_or("no error code")
        ),
        _ => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_uris_must_be_https_with_a_host() {
        assert!(check_vault_uri("https://contoso-kv.vault.azure.net/").is_ok());
        for bad in [
            "http://kv.example/",
            "https://",
            "https:///x",
            "https://u@kv.example/",
            "kv",
        ] {
            assert_eq!(
                check_vault_uri(bad).map_err(|e| e.setting),
                Err(KEYVAULT_URI),
                "{bad}"
            );
        }
    }
}
