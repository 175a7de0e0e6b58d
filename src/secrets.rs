//! The current signing key, shared between the request path (many readers) and the one task that
//! supplies keys (one writer).
//!
//! **What it owns.** Where the key comes from ([`KeySource`]: the settings `IOTHUB_HOSTNAME`,
//! `IOTHUB_POLICY_NAME`, `IOTHUB_POLICY_KEY` and the seed function's names for them, or Key Vault)
//! and [`KeyHandle`], the request path's only access to key material. Reading it is a
//! memory read: no I/O, no await when a key is known. Before the first key is known, a request
//! waits for it up to a bound and then gives up (the caller answers 503 with `Retry-After`).
//!
//! **Why a `watch` channel.** It holds the newest value, readers borrow it under a short read lock
//! and clone an `Arc` out, the writer replaces it atomically, and waiting for the first value is
//! built in (`wait_for`). Rotation is one `send` from the refresh task; no reader ever sees a
//! half-updated signer.

pub mod key_vault;
pub mod refresh;
pub mod secret_value;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::sas::{HubName, PolicyName, Signer, SigningKey};
use crate::secrets::key_vault::KeyVaultSettings;
use crate::settings::{Lookup, Name, SettingError};

/// `IOTHUB_HOSTNAME`, the seed's `iothubhostname`.
pub const IOTHUB_HOSTNAME: Name = Name::with_seed("IOTHUB_HOSTNAME", "iothubhostname");
/// `IOTHUB_POLICY_NAME`, the seed's `keyname`.
pub const IOTHUB_POLICY_NAME: Name = Name::with_seed("IOTHUB_POLICY_NAME", "keyname");
/// `IOTHUB_POLICY_KEY`, the seed's `keyvalue`.
pub const IOTHUB_POLICY_KEY: Name = Name::with_seed("IOTHUB_POLICY_KEY", "keyvalue");

/// Where the IoT Hub policy key comes from.
#[derive(Debug)]
pub enum KeySource {
    /// `IOTHUB_POLICY_KEY` in app settings: the signer is ready at start-up.
    Static(Signer),
    /// `KEYVAULT_URI`: the key is read from Key Vault with the app's managed identity.
    KeyVault(KeyVaultSettings),
}

impl KeySource {
    /// The key in app settings, or — when `KEYVAULT_URI` is set — the Key Vault secret that holds
    /// it (and then the key setting must be unset).
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Self, SettingError> {
        let hub = settings
            .optional(&IOTHUB_HOSTNAME)
            .map(|(setting, hub)| {
                HubName::parse(&hub).map_err(|e| SettingError::new(setting, e.to_string()))
            })
            .transpose()?;
        let policy = settings
            .optional(&IOTHUB_POLICY_NAME)
            .map(|(setting, name)| {
                PolicyName::parse(&name).map_err(|e| SettingError::new(setting, e.to_string()))
            })
            .transpose()?;
        if !settings.is_set(key_vault::KEYVAULT_URI) {
            let hub = hub.ok_or_else(|| IOTHUB_HOSTNAME.missing())?;
            let policy = policy.ok_or_else(|| IOTHUB_POLICY_NAME.missing())?;
            let (setting, key) = settings.required(&IOTHUB_POLICY_KEY)?;
            let key = SigningKey::from_base64(&key)
                .map_err(|e| SettingError::new(setting, e.to_string()))?;
            return Ok(Self::Static(Signer::new(
                hub.as_str(),
                policy.as_str(),
                &key,
            )));
        }
        if let Some((setting, _)) = settings.optional(&IOTHUB_POLICY_KEY) {
            return Err(SettingError::new(
                setting,
                "must be unset when KEYVAULT_URI is set (the key comes from Key Vault)",
            ));
        }
        KeyVaultSettings::from_lookup(settings, hub, policy).map(Self::KeyVault)
    }
}

/// How long a request waits for the first key before it is answered 503.
pub const FIRST_KEY_WAIT: Duration = Duration::from_secs(5);

/// Read side: cheap to clone, one per request path.
#[derive(Debug, Clone)]
pub struct KeyHandle {
    current: watch::Receiver<Option<Arc<Signer>>>,
    first_key_wait: Duration,
}

/// Write side: held by whatever supplies keys (the Key Vault refresh task).
#[derive(Debug)]
pub struct KeyPublisher {
    current: watch::Sender<Option<Arc<Signer>>>,
}

impl KeyHandle {
    /// A key known at start-up that never changes (`IOTHUB_POLICY_KEY`).
    pub fn fixed(signer: Signer) -> Self {
        let (sender, current) = watch::channel(Some(Arc::new(signer)));
        // Keep the value alive: with every sender gone, `borrow` still works, and `wait_for`
        // returns at once because the value is already present.
        drop(sender);
        Self {
            current,
            first_key_wait: FIRST_KEY_WAIT,
        }
    }

    /// An empty handle and the publisher that will fill it; requests wait up to
    /// `first_key_wait` for the first key.
    pub fn empty(first_key_wait: Duration) -> (KeyPublisher, Self) {
        let (sender, current) = watch::channel(None);
        (
            KeyPublisher { current: sender },
            Self {
                current,
                first_key_wait,
            },
        )
    }

    /// The current signer; before the first key is known, waits for it up to the bound.
    /// `None` means no key is available (yet).
    pub async fn current(&self) -> Option<Arc<Signer>> {
        if let Some(signer) = self.current.borrow().as_ref() {
            return Some(Arc::clone(signer));
        }
        let mut receiver = self.current.clone();
        let waited = tokio::time::timeout(self.first_key_wait, receiver.wait_for(Option::is_some));
        match waited.await {
            Ok(Ok(signer)) => signer.clone(),
            // Timed out, or the publisher is gone without ever publishing.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

impl KeyPublisher {
    /// Make `signer` the key every following request signs with.
    pub fn publish(&self, signer: Signer) {
        self.current.send_replace(Some(Arc::new(signer)));
    }

    /// Whether any key has been published yet.
    pub fn has_key(&self) -> bool {
        self.current.borrow().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::SigningKey;

    fn signer() -> Signer {
        let key = SigningKey::from_base64("c2VjcmV0").expect("valid base64");
        Signer::new("h.example", "p", &key)
    }

    #[tokio::test]
    async fn a_fixed_key_is_always_there() {
        assert!(KeyHandle::fixed(signer()).current().await.is_some());
    }

    /// Paused time: the wait is measured on Tokio's clock, so this runs instantly.
    #[tokio::test(start_paused = true)]
    async fn without_a_key_a_request_gives_up_after_the_bound() {
        let (_publisher, handle) = KeyHandle::empty(Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        assert!(handle.current().await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_the_first_key_as_soon_as_it_arrives() {
        let (publisher, handle) = KeyHandle::empty(Duration::from_secs(5));
        let waiter = tokio::spawn(async move { handle.current().await.is_some() });
        tokio::time::sleep(Duration::from_secs(1)).await;
        publisher.publish(signer());
        assert!(waiter.await.expect("waiter finishes"));
        assert!(publisher.has_key());
    }
}
