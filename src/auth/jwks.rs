//! The token issuer's signing keys (JWKS), fetched over https and cached in memory.
//!
//! **What it owns.** The metadata → `jwks_uri` → key set fetch, the cache, and how often the
//! network may be asked: at start-up, every [`PERIODIC_REFRESH`] (so keys Entra ID withdraws stop
//! being accepted), and when a token names an unknown `kid` — at most once per
//! `AUTH_JWKS_REFETCH_SECONDS`, however many such tokens arrive (they are attacker-controlled).
//! One fetch at a time; concurrent requests wait for it, bounded by [`FETCH_TIMEOUT`].
//!
//! **What it trusts.** The metadata URL (configuration, https only), the `jwks_uri` it names
//! (https only) and TLS with the system roots or `SSL_CERT_FILE`. Only RSA signing keys are kept.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::telemetry::error_chain;

/// The longest a metadata + key-set fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the whole key set is re-read even when no unknown `kid` asks for it.
pub const PERIODIC_REFRESH: Duration = Duration::from_secs(3600);

/// Keys by `kid`.
type KeyMap = HashMap<String, Arc<DecodingKey>>;

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct Jwks(Arc<Inner>);

struct Inner {
    http: reqwest::Client,
    metadata_url: String,
    min_refetch: Duration,
    /// Read on every request under a short std lock; replaced whole by a fetch.
    keys: RwLock<Arc<KeyMap>>,
    /// Held for the duration of a fetch (single flight); remembers when the last one started.
    last_fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("metadata_url", &self.0.metadata_url)
            .finish_non_exhaustive()
    }
}

/// No key set could be obtained at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUnavailable;

impl Jwks {
    /// A cache for the issuer described at `metadata_url`; nothing is fetched yet.
    pub fn new(metadata_url: String, min_refetch: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .build()?;
        Ok(Self(Arc::new(Inner {
            http,
            metadata_url,
            min_refetch,
            keys: RwLock::new(Arc::new(KeyMap::new())),
            last_fetch: Mutex::new(None),
        })))
    }

    /// The key for `kid`: from memory, or — if unknown and the last fetch is old enough — after
    /// one re-fetch. `Ok(None)`: no such key. `Err`: there are no keys at all.
    pub async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>, KeysUnavailable> {
        if let Some(key) = self.cached(kid) {
            return Ok(Some(key));
        }
        {
            let mut last_fetch = self.0.last_fetch.lock().await;
            // Someone else may have fetched while we waited for the lock.
            if let Some(key) = self.cached(kid) {
                return Ok(Some(key));
            }
            let due = last_fetch.is_none_or(|at| at.elapsed() >= self.0.min_refetch);
            if due {
                *last_fetch = Some(Instant::now());
                self.fetch_and_store().await;
            }
        }
        match self.cached(kid) {
            Some(key) => Ok(Some(key)),
            None if self.snapshot().is_empty() => Err(KeysUnavailable),
            None => Ok(None),
        }
    }

    /// Fetch now (start-up and the periodic refresh), after any fetch already under way.
    pub async fn refresh(&self) {
        let mut last_fetch = self.0.last_fetch.lock().await;
        *last_fetch = Some(Instant::now());
        self.fetch_and_store().await;
    }

    /// Keep the key set fresh: fetch now, then every [`PERIODIC_REFRESH`].
    pub async fn keep_fresh(self) {
        loop {
            self.refresh().await;
            tokio::time::sleep(PERIODIC_REFRESH).await;
        }
    }

    /// The key for `kid` in the key set held now, without fetching: how a remembered
    /// verification checks that its key has not been withdrawn or replaced since.
    pub fn current(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.cached(kid)
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.snapshot().get(kid).cloned()
    }

    fn snapshot(&self) -> Arc<KeyMap> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc: the value is whole.
        Arc::clone(&self.0.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    async fn fetch_and_store(&self) {
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(Ok(keys)) => {
                tracing::info!(
                    keys = keys.len(),
                    metadata = self.0.metadata_url.as_str(),
                    "token signing keys loaded"
                );
                *self.0.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
            Ok(Err(error)) => tracing::warn!(
                metadata = self.0.metadata_url.as_str(),
                error = error.as_str(),
                "could not load token signing keys; keeping the previous ones"
            ),
            Err(_) => tracing::warn!(
                metadata = self.0.metadata_url.as_str(),
                "token signing keys: no answer within {FETCH_TIMEOUT:?}; keeping the previous ones"
            ),
        }
    }

    async fn fetch(&self) -> Result<KeyMap, String> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            jwks_uri: String,
        }
        let metadata: Metadata = self.get_json(&self.0.metadata_url).await?;
        if !metadata.jwks_uri.starts_with("https://") {
            return Err("the metadata's jwks_uri is not https".to_owned());
        }
        let set: JwkSet = self.get_json(&metadata.jwks_uri).await?;
        let keys: KeyMap = set
            .keys
            .iter()
            .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::RSA(_)))
            .filter(|jwk| !matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature))
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, Arc::new(key)))
            })
            .collect();
        if keys.is_empty() {
            return Err("the key set holds no RSA signing keys".to_owned());
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .0
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        response
            .json::<T>()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))
    }
}
