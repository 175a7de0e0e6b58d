//! Logs: JSON lines on stdout, one per event. The per-request line is written in the same format
//! by [`request_log`](crate::request_log), without going through `tracing`'s formatter; the filter
//! installed here still decides whether it is written.
//!
//! **What it owns.** The `RUST_LOG` setting and its default, installing the subscriber, and
//! [`error_chain`], the one way an error and its causes are written into a log line or a start-up
//! message.
//!
//! **Why stdout.** The Functions host turns each stdout line of a custom handler into an
//! Information log (and each stderr line into an Error), and both reach Application Insights. So
//! everything goes to stdout with its level inside the JSON; stderr is kept for the one line that
//! explains why the process could not start (or why it stopped).
//!
//! **What it trusts.** The callers of `tracing` macros to pass only safe fields: no event in this
//! crate records a key, a token, a URI or a header.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::settings::Lookup;

/// Our events at `info`; the SDK's per-request HTTP lines only when something is wrong.
pub const DEFAULT_LOG_FILTER: &str = "info,typespec_client_core=warn,azure_core=warn";

/// `RUST_LOG`, or [`DEFAULT_LOG_FILTER`]. Checked when installed by [`init`].
pub fn filter_from_lookup(settings: &Lookup<'_>) -> String {
    settings
        .get("RUST_LOG")
        .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned())
}

/// Install the global JSON subscriber with `filter` (an `EnvFilter` directive such as `info`).
pub fn init(filter: &str) -> Result<(), String> {
    json_lines(filter, std::io::stdout)?
        .try_init()
        .map_err(|e| e.to_string())
}

/// The subscriber [`init`] installs, writing its JSON lines to `writer`: one object per event,
/// its fields beside `timestamp`, `level` and `message`, then `target`; no spans.
pub fn json_lines<W>(
    filter: &str,
    writer: W,
) -> Result<impl tracing::Subscriber + Send + Sync + 'static, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    Ok(tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish())
}

/// An error and all its causes, outermost first: the SDKs' `Display` shows only the outermost
/// message, which is rarely the one that explains the failure.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // The SDK often repeats its cause inside its own message; say each thing once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_chain_includes_every_cause_once() {
        let inner = std::io::Error::other("connection refused");
        let outer = azure_core::Error::with_error(
            azure_core::error::ErrorKind::Io,
            inner,
            "failed to execute request",
        );
        let text = error_chain(&outer);
        assert!(text.contains("failed to execute request"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert_eq!(text.matches("connection refused").count(), 1, "{text}");
    }
}
