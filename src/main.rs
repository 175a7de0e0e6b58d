//! `handler`: the process the Functions host starts. Reads the settings, starts logging, serves
//! until SIGTERM or Ctrl+C. A bad setting stops it before the port is bound, with one stderr line
//! naming the setting and a non-zero exit code.

use std::process::ExitCode;

/// musl's own allocator costs twice the CPU per request under load (docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use iothub_sas_handler::config::Config;
use iothub_sas_handler::startup::Application;
use iothub_sas_handler::telemetry;

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = telemetry::init(&config.log_filter) {
        eprintln!("configuration error: RUST_LOG: {error}");
        return ExitCode::FAILURE;
    }
    // One thread does everything. Chosen by measurement (docs/benchmarks.md, "Runtime flavour"):
    // a request costs ~10 µs of CPU, so one core serves far more than the Functions host forwards
    // to an instance; on 1 vCPU (Consumption) the multi-thread runtime only adds wake-ups between
    // threads, and on 2 vCPUs it spent more CPU per request for no more throughput. Fewer threads
    // also mean less memory and no dependence on how many CPUs the sandbox reports.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("startup error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let port = config.port;
    let served = runtime.block_on(async move {
        let app = Application::build(config).await?;
        tracing::info!(address = %app.local_addr()?, "listening");
        app.run_until_stopped(shutdown_signal()).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("startup error: cannot serve on 127.0.0.1:{port}: {error}");
            ExitCode::FAILURE
        }
    }
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
