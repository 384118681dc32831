//! Log output: text or JSON lines through tracing-subscriber, levels from
//! RUST_LOG.

use super::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Per-call completion events are at DEBUG
/// (`RUST_LOG=softmaxd=debug` shows one per call), failures at INFO and above.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
