//! Start-up: from a [`Config`] to a bound listener and a running server.
//!
//! **What it owns.** Binding `127.0.0.1:{port}` (IPv4 loopback: the Functions host calls
//! `http://127.0.0.1:<port>` and never anything else), turning the key source into a
//! [`KeyHandle`], and the HTTP/1 server loop: the TCP peer address for each request, the
//! connection limits (request head size, head read timeout) and the bounded drain on shutdown.
//! `main` and the tests run this same code; tests pass port 0 and read [`Application::local_addr`].

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::auth::bearer::BearerAuth;
use crate::config::{Config, KeySource};
use crate::limits::{Limits, RequestLimits};
use crate::routes::{AppState, RequestPolicy, router};
use crate::secrets::key_vault::{VaultSecret, keep_fresh};
use crate::secrets::{FIRST_KEY_WAIT, KeyHandle};

/// A bound, not yet serving, application.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    limits: Limits,
}

impl Application {
    /// Bind the port and prepare the state; in Key Vault mode, start the key refresh task.
    /// Fails only if the port cannot be bound or the Key Vault client cannot be built.
    pub async fn build(config: Config) -> std::io::Result<Self> {
        if config.allow_list.allows_everyone() {
            tracing::warn!(
                "ALLOWED_IPS is `*`: every caller is allowed; restrict it to API Management's addresses in production"
            );
        }
        let keys = match config.key_source {
            KeySource::Static(signer) => KeyHandle::fixed(signer),
            KeySource::KeyVault(settings) => {
                let vault = VaultSecret::new(settings).map_err(|e| {
                    std::io::Error::other(format!("cannot set up the Key Vault client: {e}"))
                })?;
                let (publisher, keys) = KeyHandle::empty(FIRST_KEY_WAIT);
                // The port opens at once; the first fetch runs concurrently and requests that
                // arrive before it completes wait for it (up to FIRST_KEY_WAIT).
                tokio::spawn(keep_fresh(vault, publisher));
                keys
            }
        };
        let bearer = match &config.bearer {
            None => None,
            Some(settings) => {
                let bearer = BearerAuth::new(settings).map_err(|e| {
                    std::io::Error::other(format!("cannot set up bearer-token checks: {e}"))
                })?;
                // Load the issuer's keys now, so the first request does not wait for them.
                tokio::spawn(bearer.jwks().clone().keep_fresh());
                Some(bearer)
            }
        };
        let state = AppState::new(RequestPolicy {
            allow_list: config.allow_list,
            xff_depth: config.xff_depth,
            default_ttl: config.default_ttl,
            max_ttl: config.max_ttl,
            keys,
            client_cert: config.client_cert,
            bearer,
        });
        let router = router(state, RequestLimits::new(&config.limits));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        Ok(Self {
            listener,
            router,
            limits: config.limits,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes; then stop accepting, let in-flight requests finish for
    /// up to `SHUTDOWN_GRACE_SECONDS`, and return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(self.limits.max_header_bytes);
        let connections = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off briefly, keep serving.
                        tracing::warn!(error = %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Small responses: send them now rather than waiting to coalesce.
            let _ = stream.set_nodelay(true);
            let router = self.router.clone();
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request)
                });
            let connection =
                connections.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        match tokio::time::timeout(self.limits.shutdown_grace, connections.shutdown()).await {
            Ok(()) => tracing::info!("drained in-flight requests"),
            Err(_) => tracing::warn!(
                grace_seconds = self.limits.shutdown_grace.as_secs(),
                "in-flight requests still running after SHUTDOWN_GRACE_SECONDS; stopping anyway"
            ),
        }
        Ok(())
    }
}
