//! The HTTP/1 server: the port, the connection loop, and the bounded drain.
//!
//! **What it owns.** `FUNCTIONS_CUSTOMHANDLER_PORT` and the connection-level limits
//! ([`ServerSettings`]); accepting connections on the bound listener; handing each request the TCP
//! peer address (`ConnectInfo`); the request-head size and read-timeout limits, which hyper
//! enforces; and, once told to stop, draining in-flight requests for up to
//! `SHUTDOWN_GRACE_SECONDS`.
//!
//! **What it trusts.** The listener it is given (bound by `startup` to 127.0.0.1) and the router.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::limits::Limits;
use crate::settings::{Lookup, SettingError};

/// The port when `FUNCTIONS_CUSTOMHANDLER_PORT` is unset (the Functions host always sets it).
const DEFAULT_PORT: u16 = 8080;

/// Where to listen and the limits on what is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`: the port on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// Request, connection and shutdown limits.
    pub limits: Limits,
}

impl ServerSettings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT` and the limits' settings.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Self, SettingError> {
        let port = match settings.get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            None => DEFAULT_PORT,
            Some(text) => text.parse::<u16>().map_err(|_| {
                SettingError::new(
                    "FUNCTIONS_CUSTOMHANDLER_PORT",
                    "must be a port number (0-65535)",
                )
            })?,
        };
        Ok(Self {
            port,
            limits: Limits::from_lookup(settings)?,
        })
    }
}

/// Serve `router` on `listener` until `stop` completes; then stop accepting, let in-flight
/// requests finish for up to `limits.shutdown_grace`, and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    stop: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let connections = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
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
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    match tokio::time::timeout(limits.shutdown_grace, connections.shutdown()).await {
        Ok(()) => tracing::info!("drained in-flight requests"),
        Err(_) => tracing::warn!(
            grace_seconds = limits.shutdown_grace.as_secs(),
            "in-flight requests still running after SHUTDOWN_GRACE_SECONDS; stopping anyway"
        ),
    }
}
