//! Start-up: from a [`Config`] to a bound listener and a running server.
//!
//! **What it owns.** Binding `127.0.0.1:{port}` (IPv4 loopback: the Functions host calls
//! `http://127.0.0.1:<port>` and never anything else), turning the key source into a
//! [`KeyHandle`], and serving with the TCP peer address available to handlers. `main` and the
//! tests run this same code; tests pass port 0 and read [`Application::local_addr`].

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::config::{Config, KeySource};
use crate::routes::{AppState, router};
use crate::secrets::key_vault::{VaultSecret, keep_fresh};
use crate::secrets::{FIRST_KEY_WAIT, KeyHandle};

/// A bound, not yet serving, application.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Bind the port and prepare the state. Fails only if the port cannot be bound.
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
        let state = AppState::new(
            config.allow_list,
            config.xff_depth,
            config.default_ttl,
            config.max_ttl,
            keys,
        );
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        Ok(Self { listener, state })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes, then let in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
