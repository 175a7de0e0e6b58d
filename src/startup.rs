//! Start-up: from a [`Config`] to a bound listener, prepared layers and running background tasks.
//!
//! **What it owns.** Binding `127.0.0.1:{port}` (IPv4 loopback: the Functions host calls
//! `http://127.0.0.1:<port>` and never anything else); preparing each layer from its settings
//! (the caller layers, the key source); starting the background tasks the layers need and owning
//! them ([`BackgroundTasks`]); and [`StartupError`], every reason the process can fail to start,
//! each naming what failed. `main` and the tests run this same code; tests pass port 0 and read
//! [`Application::local_addr`].

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use tokio::net::TcpListener;

use crate::caller::Callers;
use crate::config::Config;
use crate::hubs::Hubs;
use crate::issuance::TokenService;
use crate::limits::{Limits, RequestLimits};
use crate::routes::{AppState, Route, router};
use crate::sas::SigningMode;
use crate::secrets::key_vault::VaultClient;
use crate::secrets::refresh::keep_fresh;
use crate::secrets::{FIRST_KEY_WAIT, KeyHandle, KeySlot, Keys};
use crate::server;
use crate::settings::SettingError;
use crate::tasks::{BackgroundTasks, TaskFailure};
use crate::telemetry::error_chain;

/// Why the process could not start. Each message says what failed; none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is missing or malformed.
    #[error("configuration error: {0}")]
    Setting(#[from] SettingError),
    /// `RUST_LOG` is not a valid filter.
    #[error("configuration error: RUST_LOG: {0}")]
    LogFilter(String),
    /// The async runtime could not be created.
    #[error("startup error: cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The port could not be bound.
    #[error(
        "startup error: cannot listen on 127.0.0.1:{port} (FUNCTIONS_CUSTOMHANDLER_PORT): {source}"
    )]
    Listen {
        /// The port asked for.
        port: u16,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The Key Vault credential or client could not be built.
    #[error(
        "startup error: cannot set up the Key Vault client (KEYVAULT_URI, IDENTITY_ENDPOINT): {}",
        error_chain(.0)
    )]
    KeyVaultClient(azure_core::Error),
    /// The bearer-token layer's https client could not be built.
    #[error(
        "startup error: cannot set up the bearer-token layer's https client (AUTH_OPENID_CONFIG_URL, SSL_CERT_FILE): {}",
        error_chain(.0)
    )]
    TokenIssuerClient(reqwest::Error),
}

/// How many case-overlap warnings are written before one line counts the rest.
const MAX_CASE_WARNINGS: usize = 20;

/// A bound, not yet serving, application.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tasks: BackgroundTasks,
}

impl Application {
    /// Prepare the layers, start their background tasks and bind the port.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        if config.callers.allow_list.allows_everyone() {
            tracing::warn!(
                "ALLOWED_IPS is `*`: every caller is allowed; restrict it to API Management's addresses in production"
            );
        } else if let Some(who) = config.callers.allow_list.covers_a_whole_family() {
            tracing::warn!(
                "ALLOWED_IPS allows {who}, as `*` would; restrict it to API Management's addresses in production"
            );
        }
        let mut tasks = BackgroundTasks::default();
        let source = config.key_source;
        let mode = source.mode;
        let signs_registrations = source.signs_registrations();
        let hub_names: Vec<String> = source.hubs.as_ref().map_or_else(
            || vec![String::new()],
            |list| {
                list.hubs
                    .iter()
                    .map(|hub| hub.canonical().into_owned())
                    .collect()
            },
        );
        if let (SigningMode::HubPolicy, Some(scopes)) = (mode, &config.scopes) {
            let hubs: Vec<&str> = hub_names.iter().map(String::as_str).collect();
            let overlaps = scopes.case_overlaps(&hubs);
            for overlap in overlaps.iter().take(MAX_CASE_WARNINGS) {
                tracing::warn!("{overlap}");
            }
            if overlaps.len() > MAX_CASE_WARNINGS {
                tracing::warn!(
                    "DEVICE_SCOPES: {} more pairs of keys name device ids that differ only in letter case",
                    overlaps.len() - MAX_CASE_WARNINGS
                );
            }
        }
        if let Some(vault) = &source.vault
            && vault.max_key_age.is_none()
        {
            tracing::warn!(
                "KEYVAULT_MAX_KEY_AGE_SECONDS is 0: during a Key Vault outage the last good key signs for ever"
            );
        }
        let client = source
            .vault
            .map(VaultClient::new)
            .transpose()
            .map_err(StartupError::KeyVaultClient)?;
        let mut handles = Vec::with_capacity(source.keys.len());
        for slot in source.keys {
            let handle = match slot {
                KeySlot::Static(key) => KeyHandle::fixed(key),
                KeySlot::Secret(spec) => {
                    let Some(client) = &client else {
                        unreachable!("a secret is only configured with KEYVAULT_URI");
                    };
                    let name = match &spec.hub {
                        Some(hub) => format!("Key Vault key refresh ({hub})"),
                        None => "Key Vault key refresh".to_owned(),
                    };
                    let vault = client.secret(spec);
                    let (publisher, keys) = KeyHandle::empty(FIRST_KEY_WAIT, vault.max_key_age());
                    // The port opens at once; the first fetch runs concurrently and requests that
                    // arrive before it completes wait for it (up to FIRST_KEY_WAIT).
                    tasks.spawn(name, keep_fresh(vault, publisher));
                    keys
                }
            };
            handles.push(handle);
        }
        let hubs = source.hubs.as_ref().map(Hubs::new);
        let callers = Callers::new(config.callers).map_err(StartupError::TokenIssuerClient)?;
        if let Some(jwks) = callers.token_signing_keys() {
            // Load the issuer's keys now, so the first request does not wait for them.
            tasks.spawn("token issuer key refresh", jwks.clone().keep_fresh());
        }
        let served: Vec<Route> = Route::ALL
            .into_iter()
            .filter(|route| *route != Route::RegistrationToken || signs_registrations)
            .collect();
        let service = TokenService::new(
            callers,
            config.lifetimes,
            mode,
            config.scopes,
            hubs,
            Keys::new(handles),
            source.registrations,
        );
        let router = router(
            AppState::new(service),
            RequestLimits::new(&config.server.limits),
            &served,
        );
        let port = config.server.port;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| StartupError::Listen { port, source })?;
        Ok(Self {
            listener,
            router,
            limits: config.server.limits,
            tasks,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Run `task` beside the server as one of its own: if it returns or panics, the server
    /// stops as [`run_until_stopped`](Self::run_until_stopped) describes.
    pub fn spawn_background(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(name, task);
    }

    /// Serve until `shutdown` completes — `Ok` — or a background task stops — `Err`, after an
    /// error log line naming it. Either way the server then stops accepting and lets in-flight
    /// requests finish for up to `SHUTDOWN_GRACE_SECONDS`.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TaskFailure> {
        let mut failure = None;
        let stop = async {
            tokio::select! {
                () = shutdown => {},
                stopped = self.tasks.failure() => {
                    tracing::error!(task = stopped.task.as_str(), how = stopped.how, "{stopped}");
                    failure = Some(stopped);
                }
            }
        };
        server::serve(self.listener, self.router, &self.limits, stop).await;
        failure.map_or(Ok(()), Err)
    }
}
