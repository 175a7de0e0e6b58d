//! `handler`: the process the Functions host starts. Reads the settings, starts logging, serves
//! until SIGTERM or Ctrl+C. A bad setting stops it before the port is bound, with one stderr line
//! naming the setting and a non-zero exit code.

use std::process::ExitCode;

/// musl's own allocator costs twice the CPU per request under load (docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use iothub_sas_handler::config::Config;
use iothub_sas_handler::startup::{Application, StartupError};
use iothub_sas_handler::tasks::TaskFailure;
use iothub_sas_handler::telemetry;

fn main() -> ExitCode {
    match run() {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // Why it stopped was logged as it happened; stderr says it once more for the host.
        Ok(Err(stopped)) => {
            eprintln!("stopped: {stopped}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Start, then serve until stopped. `Err`: the process could not start; `Ok(Err)`: a background
/// task stopped (tasks.rs explains why the process must then exit non-zero).
fn run() -> Result<Result<(), TaskFailure>, StartupError> {
    let config = Config::from_env()?;
    telemetry::init(&config.log_filter).map_err(StartupError::LogFilter)?;
    // One thread does everything. Chosen by measurement (docs/benchmarks.md, "Runtime flavour"):
    // a request costs ~10 µs of CPU, so one core serves far more than the Functions host forwards
    // to an instance; on 1 vCPU (Consumption) the multi-thread runtime only adds wake-ups between
    // threads, and on 2 vCPUs it spent more CPU per request for no more throughput. Fewer threads
    // also mean less memory and no dependence on how many CPUs the sandbox reports.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)?;
    runtime.block_on(async move {
        let app = Application::build(config).await?;
        if let Ok(address) = app.local_addr() {
            tracing::info!(address = %address, "listening");
        }
        Ok(app.run_until_stopped(shutdown_signal()).await)
    })
}

/// Completes on Ctrl+C (SIGINT) or SIGTERM. The Functions host itself kills the process outright,
/// so nothing may depend on this running; `func start`, `make run` and process managers do send
/// these signals.
async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed we simply never stop on Ctrl+C.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
