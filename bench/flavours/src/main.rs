//! `handler-flavour`: the handler exactly as `src/main.rs` runs it, except that the tokio runtime
//! is chosen at start-up by `BENCH_RUNTIME`:
//! - `current`: the current-thread runtime (everything on the main thread);
//! - `multi`: the multi-thread runtime, `TOKIO_WORKER_THREADS` workers (default: one per CPU the
//!   process may run on).
//!
//! The allocator is the C library's malloc (musl's, in the static build; the shipped handler
//! uses mimalloc there instead), or mimalloc with the `mimalloc` feature.
//!
//! Benchmark-only: the shipped binary has one runtime, chosen from these measurements.

use std::process::ExitCode;

use iothub_sas_handler::config::Config;
use iothub_sas_handler::startup::{Application, StartupError};
use iothub_sas_handler::telemetry;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env().map_err(StartupError::from)?;
    telemetry::init(&config.log_filter).map_err(StartupError::LogFilter)?;
    let flavour = std::env::var("BENCH_RUNTIME").unwrap_or_default();
    let mut builder = match flavour.as_str() {
        "current" => tokio::runtime::Builder::new_current_thread(),
        "multi" => tokio::runtime::Builder::new_multi_thread(),
        _ => return Err("configuration error: BENCH_RUNTIME: expected `current` or `multi`".into()),
    };
    let runtime = builder.enable_all().build().map_err(StartupError::Runtime)?;
    runtime.block_on(async move {
        let app = Application::build(config).await?;
        tracing::info!(address = %app.local_addr()?, "listening");
        app.run_until_stopped(shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {},
    }
}
