//! Keeping the key fresh: the one task that reads the secret and publishes the signer.
//!
//! **What it owns.** The refresh schedule: read the secret, publish the signer, sleep
//! `KEYVAULT_REFRESH_SECONDS`; after a failure keep the last good key, log, and retry after a
//! capped, jittered exponential back-off ([`backoff`]). It runs as one task, so at most one read is
//! ever in flight whatever the request load, and it is the only writer of the [`KeyPublisher`].
//!
//! **What it trusts.** [`VaultSecret::fetch`] to bound each read; the clock (Tokio's, so tests run
//! the schedule under paused time).

use std::future::Future;
use std::time::Duration;

use crate::secrets::key_vault::VaultSecret;
use crate::secrets::{IssuingKey, KeyPublisher};

/// First retry delay after a failed fetch; it doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between retries (or the refresh interval, if shorter).
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Keep the key fresh forever: fetch, publish, sleep `refresh`; on failure keep the last good key,
/// log, and retry after a capped, jittered exponential back-off. Runs as one task, so at most one
/// fetch is ever in flight.
pub async fn keep_fresh(vault: VaultSecret, publisher: KeyPublisher) {
    let refresh = vault.refresh();
    let vault = &vault;
    refresh_loop(
        || async move {
            let fetched = vault.fetch().await;
            if let Ok(key) = &fetched {
                tracing::info!(
                    secret = vault.name(),
                    version = key.version.as_deref().unwrap_or("unknown"),
                    signing_mode = key.signer.mode().as_str(),
                    "signing key loaded from Key Vault"
                );
            }
            fetched
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
    Fut: Future<Output = Result<IssuingKey, E>>,
{
    let mut failures = 0u32;
    loop {
        let delay = match fetch().await {
            Ok(key) => {
                publisher.publish(key);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::{Signer, SigningKey, TokenSigner};
    use crate::secrets::KeyHandle;
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
            signer: TokenSigner::HubPolicy(Signer::new("h.example", "p", &key)),
            version: None,
        }
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
