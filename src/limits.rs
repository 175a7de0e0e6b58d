//! Resource limits: what one request, one slow client or a flood of requests may cost.
//!
//! **What it owns.** The limit values (each an app setting with a safe default, read by
//! [`Limits::from_lookup`]) and the check of the
//! per-request ones, [`RequestLimits::admit`], which the router's one middleware runs before any
//! handler:
//! - URL longer than `MAX_URL_BYTES` → 414;
//! - a declared body longer than `MAX_BODY_BYTES` (default 0: these are GET routes) → 413;
//! - more than `MAX_CONCURRENT_REQUESTS` in flight → 503 with `Retry-After`, at once, instead of
//!   queueing without bound.
//!
//! The connection-level limits are applied by the HTTP server, [`crate::server`]: request head
//! larger than `MAX_REQUEST_HEADER_BYTES` → 431 (answered by hyper itself), request head not
//! received within `REQUEST_HEADER_TIMEOUT_SECONDS` → connection closed, and
//! `SHUTDOWN_GRACE_SECONDS` bounds the drain on SIGTERM/SIGINT.
//!
//! **What it trusts.** Nothing from the request; the `Content-Length` it reads is only compared.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, header};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::ApiError;
use crate::settings::{Lookup, SettingError};

/// The limits, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_REQUEST_HEADER_BYTES`: the request line plus headers.
    pub max_header_bytes: usize,
    /// `MAX_URL_BYTES`: path plus query.
    pub max_url_bytes: usize,
    /// `MAX_BODY_BYTES`: a declared `Content-Length` above this is refused.
    pub max_body_bytes: u64,
    /// `REQUEST_HEADER_TIMEOUT_SECONDS`: time to receive a request's head.
    pub header_read_timeout: Duration,
    /// `MAX_CONCURRENT_REQUESTS`: requests in flight before new ones get 503.
    pub max_concurrent_requests: usize,
    /// `SHUTDOWN_GRACE_SECONDS`: how long in-flight requests may finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// Defaults sized for this service: the Functions host forwards headers such as
    /// `X-ARR-ClientCert` and a bearer token, so 32 KiB of head; App Service itself refuses URLs
    /// over 8 KiB; the routes are GETs, so no body.
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_url_bytes: 8 * 1024,
            max_body_bytes: 0,
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_requests: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// `MAX_REQUEST_HEADER_BYTES`, `MAX_URL_BYTES`, `MAX_BODY_BYTES`,
    /// `REQUEST_HEADER_TIMEOUT_SECONDS`, `MAX_CONCURRENT_REQUESTS`, `SHUTDOWN_GRACE_SECONDS`; each
    /// defaults to [`Limits::default`] and must lie within its range.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Self, SettingError> {
        let default = Self::default();
        Ok(Self {
            // Below 8 KiB ordinary forwarded requests (certificates, bearer tokens) would not fit.
            max_header_bytes: settings.number(
                "MAX_REQUEST_HEADER_BYTES",
                default.max_header_bytes,
                8 * 1024,
                1024 * 1024,
            )?,
            max_url_bytes: settings.number(
                "MAX_URL_BYTES",
                default.max_url_bytes,
                256,
                64 * 1024,
            )?,
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
}

/// The per-request limits and the in-flight permits.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    max_url_bytes: usize,
    max_body_bytes: u64,
    in_flight: Arc<Semaphore>,
}

impl RequestLimits {
    /// The per-request part of `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_url_bytes: limits.max_url_bytes,
            max_body_bytes: limits.max_body_bytes,
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        }
    }
}

impl RequestLimits {
    /// Admit `request`, or say which limit it breaks: an over-long URL (414), a declared or
    /// chunked body over the cap (413), or the concurrency cap reached (503). The permit must be
    /// held until the response is ready; it frees its slot when dropped.
    pub fn admit<B>(&self, request: &Request<B>) -> Result<SemaphorePermit<'_>, ApiError> {
        let uri = request.uri();
        let url_len = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
        if url_len > self.max_url_bytes {
            return Err(ApiError::UriTooLong);
        }
        let declared_body = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
        match declared_body {
            // hyper has already refused a malformed Content-Length; be strict anyway.
            Some(None) => return Err(ApiError::PayloadTooLarge),
            Some(Some(len)) if len > self.max_body_bytes => return Err(ApiError::PayloadTooLarge),
            _ => {}
        }
        // A chunked body has no declared length: with no body allowed, refuse it up front.
        if self.max_body_bytes == 0 && request.headers().contains_key(header::TRANSFER_ENCODING) {
            return Err(ApiError::PayloadTooLarge);
        }
        self.in_flight
            .try_acquire()
            .map_err(|_| ApiError::Overloaded)
    }
}
