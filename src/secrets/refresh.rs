//! Keeping the key fresh: the one task that reads the secret and publishes the signer.
//!
//! **What it owns.** The refresh schedule: read the secret, publish the signer, sleep
//! `KEYVAULT_REFRESH_SECONDS`; after a failure retry after a capped, jittered exponential back-off
//! ([`backoff`]), withdraw the key if Key Vault's answer says the operator withdrew it, else keep
//! the last good key (which the key handle stops using once it outlives
//! `KEYVAULT_MAX_KEY_AGE_SECONDS`), and say what each read came to in one key event line
//! ([`key_events`](crate::secrets::key_events): the only place that maps the loop's [`Event`]s to
//! lines), naming the secret and, when each hub has its own secret, the hub. It runs as one task per secret, so at most one read
//! of a secret is ever in flight whatever the request load, and it is the only writer of that
//! secret's [`KeyPublisher`].
//!
//! **What it trusts.** [`VaultSecret::fetch`] to bound each read; the clock (Tokio's, so tests run
//! the schedule under paused time).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::secrets::handle::Withdrawal;
use crate::secrets::key_events::KeyLog;
use crate::secrets::key_vault::{FetchError, VaultSecret};
use crate::secrets::{IssuingKey, KeyPublisher};

/// First retry delay after a failed fetch; it doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between retries (or the refresh interval, if shorter).
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Keep the key fresh forever: fetch, publish, sleep `refresh`. After a failure, retry after a
/// capped, jittered exponential back-off; meanwhile Key Vault's answer decides what is signed:
/// - a **withdrawal** (404, 403: the secret deleted, disabled, or the app's access removed)
///   stops issuance at once — one error line names it — until a read succeeds again;
/// - an **outage** (anything else) keeps the last good key while its last successful read is
///   younger than `KEYVAULT_MAX_KEY_AGE_SECONDS`; one error line says when it ages out.
///
/// Every outcome is one key event line ([`key_events`](crate::secrets::key_events)). Runs as one
/// task, so at most one fetch is ever in flight.
pub async fn keep_fresh(vault: VaultSecret, publisher: KeyPublisher) {
    let refresh = vault.refresh();
    let vault = &vault;
    let mut log = KeyLog::new(vault.max_key_age());
    refresh_loop(
        || async move { vault.fetch().await },
        &publisher,
        FetchError::withdrawal,
        |event| {
            let next_read_in = match event {
                Event::Loaded { .. } => refresh,
                Event::Withdrawn { failures, .. } | Event::Failed { failures, .. } => {
                    backoff(failures, refresh, fastrand::f64())
                }
            };
            log.line(&event, Instant::now(), next_read_in)
                .write(vault.name(), vault.hub());
            next_read_in
        },
    )
    .await;
}

/// What a fetch came to, for the policy that logs it ([`key_events`](crate::secrets::key_events))
/// and chooses the next delay.
#[derive(Debug)]
pub enum Event<'a, E> {
    /// A key was read and published.
    Loaded {
        /// The key read.
        key: &'a IssuingKey,
        /// Why the key had been withdrawn, when a withdrawal ends here.
        resumed: Option<Withdrawal>,
    },
    /// Key Vault withdrew the key.
    Withdrawn {
        /// Reads failed in a row, this one included.
        failures: u32,
        /// Key Vault's answer.
        error: &'a E,
        /// What the answer means.
        withdrawal: Withdrawal,
        /// Whether the key was not withdrawn (for this reason) before.
        first: bool,
    },
    /// A transient failure.
    Failed {
        /// Reads failed in a row, this one included.
        failures: u32,
        /// Why the read failed.
        error: &'a E,
        /// How long ago the key still in use was read, if there is one.
        key_age: Option<Duration>,
    },
}

/// The loop itself, with the fetch, the classification and the policy injected so it can be
/// tested under paused Tokio time. `on_event` returns the delay before the next attempt.
async fn refresh_loop<F, Fut, E>(
    mut fetch: F,
    publisher: &KeyPublisher,
    withdrawal: impl Fn(&E) -> Option<Withdrawal>,
    mut on_event: impl FnMut(Event<'_, E>) -> Duration,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<IssuingKey, E>>,
{
    let mut failures = 0u32;
    loop {
        let delay = match fetch().await {
            Ok(key) => {
                let resumed = publisher.withdrawn();
                let delay = on_event(Event::Loaded { key: &key, resumed });
                publisher.publish(key);
                failures = 0;
                delay
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                match withdrawal(&error) {
                    Some(withdrawal) => {
                        let first = publisher.withdrawn() != Some(withdrawal);
                        publisher.withdraw(withdrawal);
                        on_event(Event::Withdrawn {
                            failures,
                            error: &error,
                            withdrawal,
                            first,
                        })
                    }
                    None => on_event(Event::Failed {
                        failures,
                        error: &error,
                        key_age: publisher.key_age(),
                    }),
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::{Signer, SigningKey, TokenSigner};
    use crate::secrets::KeyHandle;
    use crate::secrets::handle::Unavailable;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

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

    fn signer() -> IssuingKey {
        let key = SigningKey::from_base64("c2VjcmV0").expect("valid base64");
        IssuingKey {
            signer: TokenSigner::HubPolicy(Signer::new("p", &key)),
            version: None,
            own_hub: None,
        }
    }

    /// Paused time: the schedule is checked on Tokio's clock, instantly and exactly.
    #[tokio::test(start_paused = true)]
    async fn failures_back_off_then_refresh_resumes_and_the_last_key_stays() {
        let (publisher, handle) = KeyHandle::empty(Duration::from_secs(5), None);
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
                |_| None,
                |event| match event {
                    Event::Loaded { .. } => Duration::from_secs(300),
                    Event::Failed {
                        failures, key_age, ..
                    } => {
                        assert!(key_age.is_some(), "the first key was already published");
                        backoff(failures, Duration::from_secs(300), 1.0)
                    }
                    Event::Withdrawn { .. } => panic!("nothing is classified as withdrawn"),
                },
            )
            .await;
        });
        tokio::time::sleep(Duration::from_secs(300 + 1 + 2 + 4 + 1)).await;
        assert!(handle.current().await.is_ok());
        let calls = calls.lock().expect("no poisoned lock").clone();
        let secs: Vec<u64> = calls.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 300, 301, 303, 307]);
        task.abort();
    }

    /// A withdrawal stops issuance at the read that sees it, is reported once however many reads
    /// repeat it, and ends with the first successful read.
    #[tokio::test(start_paused = true)]
    async fn a_withdrawal_stops_issuance_once_and_a_good_read_resumes_it() {
        let (publisher, handle) = KeyHandle::empty(Duration::from_secs(5), None);
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&attempts);
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let task = tokio::spawn(async move {
            refresh_loop(
                move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    // 0 loads, 1–3 are 403s, 4 loads again.
                    async move {
                        if (1..=3).contains(&n) {
                            Err(403)
                        } else {
                            Ok(signer())
                        }
                    }
                },
                &publisher,
                |status: &u16| (*status == 403).then_some(Withdrawal::Forbidden),
                move |event| {
                    let mut seen = seen.lock().expect("no poisoned lock");
                    match event {
                        Event::Loaded { resumed, .. } => {
                            seen.push(format!("loaded resumed={resumed:?}"));
                        }
                        Event::Withdrawn { first, .. } => {
                            seen.push(format!("withdrawn first={first}"))
                        }
                        Event::Failed { .. } => seen.push("failed".to_owned()),
                    }
                    Duration::from_secs(10)
                },
            )
            .await;
        });
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(
            handle.current().await.err(),
            Some(Unavailable::Withdrawn(Withdrawal::Forbidden)),
            "withdrawn at the first read that said so"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            handle.current().await.is_ok(),
            "issuing again after a good read"
        );
        assert_eq!(
            *events.lock().expect("no poisoned lock"),
            [
                "loaded resumed=None",
                "withdrawn first=true",
                "withdrawn first=false",
                "withdrawn first=false",
                "loaded resumed=Some(Forbidden)",
            ]
        );
        task.abort();
    }
}
