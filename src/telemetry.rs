//! Logging set-up: tracing to stderr, human text or JSON lines, filtered by `log.level` or
//! `RUST_LOG`. Under systemd (stderr connected to the journal) lines carry no timestamp of their
//! own: the journal adds one.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests, `demo`) are no-ops.
pub fn init(format: LogFormat, level: &str) {
    // The scheduler crate narrates its own life cycle at info; only its warnings matter to us.
    let quiet = ",tokio_cron_scheduler=warn";
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level}{quiet}")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info{quiet}")));
    // Colours only for a person at a terminal; never in files, pipes or cron mail.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match (format, under_journal()) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}

/// True when stderr is the systemd journal: systemd sets `JOURNAL_STREAM` to the device and inode
/// of the stream it connected, which we compare with our stderr's.
fn under_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
