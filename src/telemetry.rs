//! Logs: JSON lines on stdout, one per event. The per-request line is written in the same format
//! by [`request_log`](crate::request_log), without going through `tracing`'s formatter; the filter
//! installed here still decides whether it is written.
//!
//! **Why stdout.** The Functions host turns each stdout line of a custom handler into an
//! Information log (and each stderr line into an Error), and both reach Application Insights. So
//! everything goes to stdout with its level inside the JSON; stderr is kept for the one line that
//! explains why the process could not start.
//!
//! **What it trusts.** The callers of `tracing` macros to pass only safe fields: no event in this
//! crate records a key, a token, a URI or a header.

use tracing_subscriber::EnvFilter;

/// Install the global JSON subscriber with `filter` (an `EnvFilter` directive such as `info`).
pub fn init(filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init()
        .map_err(|e| e.to_string())
}
