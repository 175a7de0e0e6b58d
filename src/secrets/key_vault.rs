//! The signing key from Azure Key Vault, read with the Function App's managed identity and
//! refreshed in the background.
//!
//! **What it owns.** One credential and one `SecretClient` for the process lifetime (the SDK caches
//! the identity token and the vault's authentication challenge per client), the refresh loop that
//! is the only writer of the [`KeyPublisher`], and the secret's format (a base64 key or an IoT Hub
//! connection string).
//!
//! **What it trusts.** The identity endpoint (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, set by the
//! platform) or, off Azure, the developer's `az login`; the vault's TLS certificate through the
//! system roots (or `SSL_CERT_FILE`). Not the secret's value: it is parsed, and a malformed value is
//! a failed fetch that keeps the last good key. The value is never logged; the secret's name and
//! version are.
//!
//! **Load on the vault.** The request path never calls Key Vault. The loop reads the secret once
//! per `KEYVAULT_REFRESH_SECONDS`, plus retries after failures with capped exponential back-off and
//! jitter, however many requests arrive — Key Vault's throttling limits are per vault and shared
//! with everything else that uses it. The SDK's own retry policy is turned off (it can spend about a
//! minute on one failing call) and every fetch is bounded by [`FETCH_TIMEOUT`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{
    AzureCliCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use zeroize::Zeroizing;

use crate::config::{self, KeyVaultSettings};
use crate::sas::{Signer, SigningKey};
use crate::secrets::KeyPublisher;

/// The longest one secret read may take, identity token included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failed fetch; it doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between retries (or the refresh interval, if shorter).
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// A secret read that did not produce a key. The text names the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("no answer from Key Vault within {0:?}")]
    TimedOut(Duration),
    /// The SDK failed: identity, network, TLS, HTTP status. The whole cause chain.
    #[error("{0}")]
    Sdk(String),
    /// The secret exists but holds no usable key.
    #[error("the secret's value is not usable: {0}")]
    BadValue(#[from] SecretFormatError),
}

/// Why a secret's value is not a key. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// The secret has no value.
    #[error("the secret has no value")]
    Empty,
    /// A bare key that is not base64.
    #[error("it is neither base64 nor an IoT Hub connection string")]
    NotBase64,
    /// A connection string without one of its parts.
    #[error("the connection string has no {0}")]
    MissingPart(&'static str),
    /// A connection-string part that is malformed.
    #[error("the connection string's {0} is malformed")]
    BadPart(&'static str),
    /// A bare key, but the host or policy name is configured nowhere.
    #[error("the secret holds a bare key, so {0} must be set")]
    NeedsSetting(&'static str),
}

/// The vault secret the key comes from, and how to reach it.
pub struct VaultSecret {
    client: SecretClient,
    settings: KeyVaultSettings,
}

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecret")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl VaultSecret {
    /// Build the credential and the secret client, once. Fails only on a malformed vault URI or
    /// identity configuration; nothing is fetched yet.
    pub fn new(settings: KeyVaultSettings) -> Result<Self, String> {
        let credential = credential(&settings).map_err(|e| error_chain(&e))?;
        let options = SecretClientOptions {
            client_options: no_sdk_retries(),
            ..SecretClientOptions::default()
        };
        let client = SecretClient::new(&settings.vault_uri, credential, Some(options))
            .map_err(|e| error_chain(&e))?;
        Ok(Self { client, settings })
    }

    /// Read the secret once and turn it into a signer. Returns the signer and the secret's version.
    pub async fn fetch(&self) -> Result<(Signer, String), FetchError> {
        let read = self.client.get_secret(&self.settings.secret_name, None);
        let response = tokio::time::timeout(FETCH_TIMEOUT, read)
            .await
            .map_err(|_| FetchError::TimedOut(FETCH_TIMEOUT))?
            .map_err(|e| FetchError::Sdk(describe_sdk_error(&e)))?;
        let secret = response
            .into_model()
            .map_err(|e| FetchError::Sdk(describe_sdk_error(&e)))?;
        let version = secret
            .id
            .as_deref()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or("unknown")
            .to_owned();
        let value = Zeroizing::new(secret.value.unwrap_or_default());
        let signer = parse_secret(
            &value,
            self.settings.hub.as_deref(),
            self.settings.policy_name.as_deref(),
        )?;
        Ok((signer, version))
    }

    /// The secret's name, for log lines.
    pub fn name(&self) -> &str {
        &self.settings.secret_name
    }

    /// How often the secret is re-read.
    pub fn refresh(&self) -> Duration {
        self.settings.refresh
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

/// Keep the key fresh forever: fetch, publish, sleep `refresh`; on failure keep the last good key,
/// log, and retry after a capped, jittered exponential back-off. Runs as one task, so at most one
/// fetch is ever in flight.
pub async fn keep_fresh(vault: VaultSecret, publisher: KeyPublisher) {
    let refresh = vault.refresh();
    let vault = &vault;
    refresh_loop(
        || async move {
            let fetched = vault.fetch().await;
            if let Ok((_, version)) = &fetched {
                tracing::info!(
                    secret = vault.name(),
                    version = version.as_str(),
                    "signing key loaded from Key Vault"
                );
            }
            fetched.map(|(signer, _)| signer)
        },
        &publisher,
        refresh,
        |failures, error, has_key| {
            let retry_in = backoff(failures, refresh, fastrand::f64());
            if has_key {
                tracing::warn!(
                    secret = vault.name(),
                    failures,
                    retry_in_ms = retry_in.as_millis() as u64,
                    error = %error,
                    "Key Vault read failed; still signing with the last good key"
                );
            } else {
                tracing::error!(
                    secret = vault.name(),
                    failures,
                    retry_in_ms = retry_in.as_millis() as u64,
                    error = %error,
                    "Key Vault read failed; no signing key yet, token requests get 503"
                );
            }
            retry_in
        },
    )
    .await;
}

/// The loop itself, with the fetch and the failure policy injected so it can be tested under
/// paused Tokio time. `on_failure(consecutive_failures, error, has_key)` returns the delay before
/// the next attempt.
async fn refresh_loop<F, Fut, E>(
    mut fetch: F,
    publisher: &KeyPublisher,
    refresh: Duration,
    mut on_failure: impl FnMut(u32, &E, bool) -> Duration,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Signer, E>>,
{
    let mut failures = 0u32;
    loop {
        let delay = match fetch().await {
            Ok(signer) => {
                publisher.publish(signer);
                failures = 0;
                refresh
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                on_failure(failures, &error, publisher.has_key())
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// The delay after the `failures`-th consecutive failure: `BACKOFF_BASE · 2^(failures-1)`, capped
/// at the smaller of `BACKOFF_CAP` and `refresh`, then scaled by a jitter in `[0.5, 1.0]`
/// (`unit` is uniform in `[0, 1)`), so that many instances do not retry in step.
pub fn backoff(failures: u32, refresh: Duration, unit: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = BACKOFF_CAP.min(refresh);
    let delay = BACKOFF_BASE.saturating_mul(1 << exponent).min(ceiling);
    delay.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

/// Turn a secret's value into a signer: an IoT Hub connection string
/// (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`), whose host and policy apply unless set
/// explicitly, or a bare base64 key, which needs both set.
pub fn parse_secret(
    value: &str,
    hub: Option<&str>,
    policy: Option<&str>,
) -> Result<Signer, SecretFormatError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretFormatError::Empty);
    }
    if !value.contains(';') && !value.contains("HostName=") {
        let key = SigningKey::from_base64(value).map_err(|_| SecretFormatError::NotBase64)?;
        let hub = hub.ok_or(SecretFormatError::NeedsSetting("IOTHUB_HOSTNAME"))?;
        let policy = policy.ok_or(SecretFormatError::NeedsSetting("IOTHUB_POLICY_NAME"))?;
        return Ok(Signer::new(hub, policy, &key));
    }
    let mut host_name = None;
    let mut key_name = None;
    let mut key = None;
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, part_value) = part
            .split_once('=')
            .ok_or(SecretFormatError::BadPart("syntax"))?;
        match name.trim() {
            "HostName" => host_name = Some(part_value.trim()),
            "SharedAccessKeyName" => key_name = Some(part_value.trim()),
            "SharedAccessKey" => key = Some(part_value.trim()),
            _ => {}
        }
    }
    let key = key.ok_or(SecretFormatError::MissingPart("SharedAccessKey"))?;
    let key =
        SigningKey::from_base64(key).map_err(|_| SecretFormatError::BadPart("SharedAccessKey"))?;
    let hub = match hub {
        Some(hub) => hub,
        None => {
            let host = host_name.ok_or(SecretFormatError::MissingPart("HostName"))?;
            config::check_hub("HostName", host)
                .map_err(|_| SecretFormatError::BadPart("HostName"))?;
            host
        }
    };
    let policy = match policy {
        Some(policy) => policy,
        None => {
            let name = key_name.ok_or(SecretFormatError::MissingPart("SharedAccessKeyName"))?;
            config::check_policy_name("SharedAccessKeyName", name)
                .map_err(|_| SecretFormatError::BadPart("SharedAccessKeyName"))?;
            name
        }
    };
    Ok(Signer::new(hub, policy, &key))
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

/// An error and all its causes, outermost first: the SDK's `Display` shows only the outermost
/// message, which is rarely the one that explains the failure.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // The SDK often repeats its cause inside its own message; say each thing once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DeviceId;
    use crate::secrets::KeyHandle;
    use std::sync::atomic::{AtomicU32, Ordering};

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=";

    fn token(signer: &Signer) -> String {
        signer
            .sign(&DeviceId::parse("d").expect("valid id"), 1)
            .token
    }

    #[test]
    fn a_connection_string_supplies_host_and_policy() {
        let value = format!(
            "HostName=cs-hub.azure-devices.net;SharedAccessKeyName=registryRead;SharedAccessKey={KEY}"
        );
        let signer = parse_secret(&value, None, None).expect("valid connection string");
        let token = token(&signer);
        assert!(
            token.contains("sr=cs-hub.azure-devices.net%2Fdevices%2Fd"),
            "{token}"
        );
        assert!(token.ends_with("&skn=registryRead"), "{token}");

        let explicit = parse_secret(&value, Some("mine.azure-devices.net"), Some("device"))
            .expect("explicit settings win");
        let token = super::tests::token(&explicit);
        assert!(token.contains("sr=mine.azure-devices.net"), "{token}");
        assert!(token.ends_with("&skn=device"), "{token}");
    }

    #[test]
    fn a_bare_key_needs_host_and_policy_settings() {
        assert!(parse_secret(KEY, Some("h.example"), Some("p")).is_ok());
        assert_eq!(
            parse_secret(KEY, None, Some("p")).err(),
            Some(SecretFormatError::NeedsSetting("IOTHUB_HOSTNAME"))
        );
    }

    #[test]
    fn malformed_values_are_refused_without_echoing_them() {
        let cases = [
            ("", SecretFormatError::Empty),
            ("sup3r-s3cret!", SecretFormatError::NotBase64),
            (
                "HostName=h.example;SharedAccessKeyName=p",
                SecretFormatError::MissingPart("SharedAccessKey"),
            ),
            (
                "HostName=h.example;SharedAccessKeyName=p;SharedAccessKey=sup3r!",
                SecretFormatError::BadPart("SharedAccessKey"),
            ),
            (
                &*format!("SharedAccessKeyName=p;SharedAccessKey={KEY}"),
                SecretFormatError::MissingPart("HostName"),
            ),
            (
                &*format!("HostName=https://x;SharedAccessKeyName=p;SharedAccessKey={KEY}"),
                SecretFormatError::BadPart("HostName"),
            ),
            (
                &*format!("HostName=h.example;DeviceId=d;SharedAccessKey={KEY}"),
                SecretFormatError::MissingPart("SharedAccessKeyName"),
            ),
            (
                "HostName=h.example;garbage",
                SecretFormatError::BadPart("syntax"),
            ),
        ];
        for (value, want) in cases {
            let got = parse_secret(value, None, None).err();
            assert_eq!(got.as_ref(), Some(&want), "value {value:?}");
            let text = want.to_string();
            assert!(!text.contains("sup3r") && !text.contains(KEY), "{text}");
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let refresh = Duration::from_secs(300);
        assert_eq!(backoff(1, refresh, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, refresh, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, refresh, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, refresh, 1.0), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX, refresh, 1.0), BACKOFF_CAP);
        assert_eq!(backoff(3, refresh, 0.0), Duration::from_secs(2));
        // Never longer than the refresh interval itself.
        assert_eq!(
            backoff(30, Duration::from_secs(10), 1.0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn the_error_chain_includes_every_cause() {
        let inner = std::io::Error::other("connection refused");
        let outer = azure_core::Error::with_error(
            azure_core::error::ErrorKind::Io,
            inner,
            "failed to execute request",
        );
        let text = error_chain(&outer);
        assert!(text.contains("failed to execute request"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }

    fn signer() -> Signer {
        parse_secret(KEY, Some("h.example"), Some("p")).expect("valid key")
    }

    /// Paused time: the schedule is checked on Tokio's clock, instantly and exactly.
    #[tokio::test(start_paused = true)]
    async fn failures_back_off_then_refresh_resumes_and_the_last_key_stays() {
        let (publisher, handle) = KeyHandle::empty(Duration::from_secs(5));
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&attempts);
        let started = tokio::time::Instant::now();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            refresh_loop(
                move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    log.lock()
                        .expect("no poisoned lock")
                        .push(started.elapsed());
                    // Attempt 0 succeeds, 1–3 fail, 4 succeeds.
                    async move {
                        if (1..=3).contains(&n) {
                            Err("vault down")
                        } else {
                            Ok(signer())
                        }
                    }
                },
                &publisher,
                Duration::from_secs(300),
                |failures, _error, has_key| {
                    assert!(has_key, "the first key was already published");
                    backoff(failures, Duration::from_secs(300), 1.0)
                },
            )
            .await;
        });
        tokio::time::sleep(Duration::from_secs(300 + 1 + 2 + 4 + 1)).await;
        assert!(handle.current().await.is_some());
        let calls = calls.lock().expect("no poisoned lock").clone();
        let secs: Vec<u64> = calls.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 300, 301, 303, 307]);
        task.abort();
    }
}
