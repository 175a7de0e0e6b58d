//! The current signing key, shared between the request path (many readers) and the one task that
//! supplies keys (one writer).
//!
//! **What it owns.** [`KeyHandle`], the request path's only access to key material, and
//! [`IssuingKey`], what it hands out: the prepared signer and, for a Key Vault key, the secret
//! version it came from. Reading it is a memory read: no I/O, no await when a key is known. Before
//! the first key is known, a request waits for it up to a bound and then gives up (the caller
//! answers 503 with `Retry-After`).
//!
//! **Why a `watch` channel.** It holds the newest value, readers borrow it under a short read lock
//! and clone an `Arc` out, the writer replaces it atomically, and waiting for the first value is
//! built in (`wait_for`). Rotation is one `send` from the refresh task; no reader ever sees a
//! half-updated signer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::sas::TokenSigner;

/// A key ready to sign with.
#[derive(Debug)]
pub struct IssuingKey {
    /// The prepared signer.
    pub signer: TokenSigner,
    /// The Key Vault secret version it was read from; `None` for a key in app settings.
    pub version: Option<Arc<str>>,
}

/// How long a request waits for the first key before it is answered 503.
pub const FIRST_KEY_WAIT: Duration = Duration::from_secs(5);

/// Read side: cheap to clone, one per request path.
#[derive(Debug, Clone)]
pub struct KeyHandle {
    current: watch::Receiver<Option<Arc<IssuingKey>>>,
    first_key_wait: Duration,
}

/// Write side: held by whatever supplies keys (the Key Vault refresh task).
#[derive(Debug)]
pub struct KeyPublisher {
    current: watch::Sender<Option<Arc<IssuingKey>>>,
}

impl KeyHandle {
    /// A key known at start-up that never changes (a key in app settings).
    pub fn fixed(key: IssuingKey) -> Self {
        let (sender, current) = watch::channel(Some(Arc::new(key)));
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
    pub async fn current(&self) -> Option<Arc<IssuingKey>> {
        if let Some(signer) = self.current.borrow().as_ref() {
            return Some(Arc::clone(signer));
        }
        let mut receiver = self.current.clone();
        let waited = tokio::time::timeout(self.first_key_wait, receiver.wait_for(Option::is_some));
        match waited.await {
            Ok(Ok(key)) => key.clone(),
            // Timed out, or the publisher is gone without ever publishing.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

impl KeyPublisher {
    /// Make `key` the key every following request signs with.
    pub fn publish(&self, key: IssuingKey) {
        self.current.send_replace(Some(Arc::new(key)));
    }

    /// Whether any key has been published yet.
    pub fn has_key(&self) -> bool {
        self.current.borrow().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::{Signer, SigningKey};

    fn signer() -> IssuingKey {
        let key = SigningKey::from_base64("c2VjcmV0").expect("valid base64");
        IssuingKey {
            signer: TokenSigner::HubPolicy(Signer::new("h.example", "p", &key)),
            version: None,
        }
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
