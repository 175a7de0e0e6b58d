//! The current signing key, shared between the request path (many readers) and the one task that
//! supplies keys (one writer).
//!
//! **What it owns.** [`KeyHandle`], the request path's only access to key material, and
//! [`IssuingKey`], what it hands out: the prepared signer and, for a Key Vault key, the secret
//! version it came from. Reading it is a memory read: no I/O, no await when a key is known. Before
//! the first key is known, a request waits for it up to a bound and then gives up (the caller
//! answers 503 with `Retry-After`).
//!
//! **When a known key is not used.** Key Vault's answer is the operator's intent: a secret that
//! was deleted, disabled or made unreadable for the app *withdraws* the key ([`Withdrawal`]) until a
//! read succeeds again. An outage keeps the last good key, but only while its last successful read
//! is younger than `KEYVAULT_MAX_KEY_AGE_SECONDS`. Either way requests get 503 ([`Unavailable`]).
//!
//! **Why a `watch` channel.** It holds the newest value, readers borrow it under a short read lock
//! and clone an `Arc` out, the writer replaces it atomically, and waiting for the first value is
//! built in (`wait_for`). Rotation is one `send` from the refresh task; no reader ever sees a
//! half-updated signer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::hubs::Hubs;
use crate::sas::TokenSigner;

/// A key ready to sign with.
#[derive(Debug)]
pub struct IssuingKey {
    /// The prepared signer.
    pub signer: TokenSigner,
    /// The Key Vault secret version it was read from; `None` for a key in app settings.
    pub version: Option<Arc<str>>,
    /// The one hub this key signs for, when no setting names the hubs and a connection-string
    /// secret names it: the key carries its hub, prepared for choosing.
    pub own_hub: Option<Hubs>,
}

/// How long a request waits for the first key before it is answered 503.
pub const FIRST_KEY_WAIT: Duration = Duration::from_secs(5);

/// Why Key Vault's answer withdrew the key: an operator's decision, not an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// 404: the secret does not exist (deleted, or never created under that name).
    NotFound,
    /// 403: the secret is disabled, or the app's access to it was removed.
    Forbidden,
}

impl Withdrawal {
    /// What the operator did, for the log line.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NotFound => "Key Vault answered 404: the secret does not exist (deleted?)",
            Self::Forbidden => {
                "Key Vault answered 403: the secret is disabled, or the app's access to it was removed"
            }
        }
    }
}

/// Why no key can sign right now. Every one is a 503 for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No read has produced a key yet (within the first-key wait).
    NotLoaded,
    /// Key Vault's last answer withdrew the key.
    Withdrawn(Withdrawal),
    /// The last successful read is older than `KEYVAULT_MAX_KEY_AGE_SECONDS`.
    TooOld,
}

impl Unavailable {
    /// The log line's `key` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotLoaded => "not_loaded",
            Self::Withdrawn(Withdrawal::NotFound) => "withdrawn_not_found",
            Self::Withdrawn(Withdrawal::Forbidden) => "withdrawn_forbidden",
            Self::TooOld => "too_old",
        }
    }
}

/// What the channel holds.
#[derive(Debug, Clone)]
enum KeyState {
    /// Nothing has been read yet.
    Pending,
    /// A key, and when it was last read successfully.
    Ready {
        key: Arc<IssuingKey>,
        read_at: Instant,
    },
    /// Key Vault's last answer withdrew the key.
    Withdrawn(Withdrawal),
}

/// Read side: cheap to clone, one per request path.
#[derive(Debug, Clone)]
pub struct KeyHandle {
    current: watch::Receiver<KeyState>,
    first_key_wait: Duration,
    /// `KEYVAULT_MAX_KEY_AGE_SECONDS`; `None`: no limit.
    max_age: Option<Duration>,
}

/// Write side: held by whatever supplies keys (the Key Vault refresh task).
#[derive(Debug)]
pub struct KeyPublisher {
    current: watch::Sender<KeyState>,
}

impl KeyHandle {
    /// A key known at start-up that never changes (a key in app settings).
    pub fn fixed(key: IssuingKey) -> Self {
        let (sender, current) = watch::channel(KeyState::Ready {
            key: Arc::new(key),
            read_at: Instant::now(),
        });
        // Keep the value alive: with every sender gone, `borrow` still works, and `wait_for`
        // returns at once because the value is already present.
        drop(sender);
        Self {
            current,
            first_key_wait: FIRST_KEY_WAIT,
            max_age: None,
        }
    }

    /// An empty handle and the publisher that will fill it; requests wait up to
    /// `first_key_wait` for the first key, and a key whose last successful read is older than
    /// `max_age` is not used.
    pub fn empty(first_key_wait: Duration, max_age: Option<Duration>) -> (KeyPublisher, Self) {
        let (sender, current) = watch::channel(KeyState::Pending);
        (
            KeyPublisher { current: sender },
            Self {
                current,
                first_key_wait,
                max_age,
            },
        )
    }

    /// The current key; before the first read has answered, waits for it up to the bound.
    pub async fn current(&self) -> Result<Arc<IssuingKey>, Unavailable> {
        if let Some(known) = self.known() {
            return known;
        }
        let mut receiver = self.current.clone();
        let answered = receiver.wait_for(|state| !matches!(state, KeyState::Pending));
        // Timed out, or the publisher is gone without ever publishing: not loaded.
        let _ = tokio::time::timeout(self.first_key_wait, answered).await;
        self.known().unwrap_or(Err(Unavailable::NotLoaded))
    }

    /// The answer from memory, unless nothing has been read yet.
    fn known(&self) -> Option<Result<Arc<IssuingKey>, Unavailable>> {
        match &*self.current.borrow() {
            KeyState::Pending => None,
            KeyState::Withdrawn(withdrawal) => Some(Err(Unavailable::Withdrawn(*withdrawal))),
            KeyState::Ready { key, read_at } => {
                Some(if self.max_age.is_some_and(|max| read_at.elapsed() > max) {
                    Err(Unavailable::TooOld)
                } else {
                    Ok(Arc::clone(key))
                })
            }
        }
    }
}

impl KeyPublisher {
    /// Make `key`, read just now, the key every following request signs with.
    pub fn publish(&self, key: IssuingKey) {
        self.current.send_replace(KeyState::Ready {
            key: Arc::new(key),
            read_at: Instant::now(),
        });
    }

    /// Stop issuing until a read succeeds again.
    pub fn withdraw(&self, withdrawal: Withdrawal) {
        self.current.send_replace(KeyState::Withdrawn(withdrawal));
    }

    /// Whether a key is being used (published and not withdrawn).
    pub fn has_key(&self) -> bool {
        matches!(*self.current.borrow(), KeyState::Ready { .. })
    }

    /// How long ago the key in use was read; `None` without one.
    pub fn key_age(&self) -> Option<Duration> {
        match &*self.current.borrow() {
            KeyState::Ready { read_at, .. } => Some(read_at.elapsed()),
            _ => None,
        }
    }

    /// Whether the last answer withdrew the key, and why.
    pub fn withdrawn(&self) -> Option<Withdrawal> {
        match &*self.current.borrow() {
            KeyState::Withdrawn(withdrawal) => Some(*withdrawal),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::{Signer, SigningKey};

    fn signer() -> IssuingKey {
        let key = SigningKey::from_base64("c2VjcmV0").expect("valid base64");
        IssuingKey {
            signer: TokenSigner::HubPolicy(Signer::new("p", &key)),
            version: None,
            own_hub: None,
        }
    }

    #[tokio::test]
    async fn a_fixed_key_is_always_there() {
        assert!(KeyHandle::fixed(signer()).current().await.is_ok());
    }

    /// Paused time: the wait is measured on Tokio's clock, so this runs instantly.
    #[tokio::test(start_paused = true)]
    async fn without_a_key_a_request_gives_up_after_the_bound() {
        let (_publisher, handle) = KeyHandle::empty(Duration::from_secs(5), None);
        let started = tokio::time::Instant::now();
        assert_eq!(handle.current().await.err(), Some(Unavailable::NotLoaded));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_the_first_key_as_soon_as_it_arrives() {
        let (publisher, handle) = KeyHandle::empty(Duration::from_secs(5), None);
        let waiter = tokio::spawn(async move { handle.current().await.is_ok() });
        tokio::time::sleep(Duration::from_secs(1)).await;
        publisher.publish(signer());
        assert!(waiter.await.expect("waiter finishes"));
        assert!(publisher.has_key());
    }

    #[tokio::test(start_paused = true)]
    async fn a_withdrawn_key_is_refused_at_once_until_a_read_succeeds() {
        let (publisher, handle) = KeyHandle::empty(Duration::from_secs(5), None);
        publisher.publish(signer());
        publisher.withdraw(Withdrawal::Forbidden);
        let started = tokio::time::Instant::now();
        assert_eq!(
            handle.current().await.err(),
            Some(Unavailable::Withdrawn(Withdrawal::Forbidden))
        );
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait: the answer is known"
        );
        assert!(!publisher.has_key());
        publisher.publish(signer());
        assert!(handle.current().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_older_than_the_maximum_age_is_not_used() {
        let max = Duration::from_secs(100);
        let (publisher, handle) = KeyHandle::empty(Duration::from_secs(5), Some(max));
        publisher.publish(signer());
        tokio::time::advance(max).await;
        assert!(
            handle.current().await.is_ok(),
            "exactly the maximum age is still fine"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(handle.current().await.err(), Some(Unavailable::TooOld));
        assert_eq!(publisher.key_age(), Some(max + Duration::from_secs(1)));
        publisher.publish(signer());
        assert!(handle.current().await.is_ok(), "a new read resets the age");
    }
}
