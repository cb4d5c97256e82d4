//! Logging set-up: tracing to stderr, human text or JSON lines, filtered by `log.level` or
//! `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests, `demo`) are no-ops.
pub fn init(format: LogFormat, level: &str) {
    // The scheduler crate narrates its own life cycle at info; only its warnings matter to us.
    let quiet = ",tokio_cron_scheduler=warn";
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level}{quiet}")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info{quiet}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
