//! Logging set-up: tracing to stderr, human text or JSON lines, filtered by `log.level` or
//! `RUST_LOG`. Under systemd (stderr connected to the journal) lines carry no timestamp of their
//! own: the journal adds one. Text lines escape every control character in a message or field
//! value: file names, ids and server messages are untrusted, and a newline or an escape sequence
//! in one must not forge a log line or recolour a terminal (JSON lines escape them already).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{FormatFields, Writer};

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
        (LogFormat::Text, true) => builder
            .fmt_fields(escaped_fields())
            .without_time()
            .with_ansi(false)
            .try_init(),
        (LogFormat::Text, false) => builder.fmt_fields(escaped_fields()).try_init(),
    };
}

/// The text format's fields (`message`, then `name=value`, space-separated) with every value
/// escaped by [`escape_controls`].
fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w: &mut Writer<'_>, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        match field.name() {
            "message" => write!(w, "{text}"),
            name => write!(w, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// `s` with control characters (newlines, escape sequences, C1 controls) and the bidirectional
/// overrides that can reorder a terminal line written as Rust escapes; everything else as is.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert_eq!(escape_controls("report é.pdf"), "report é.pdf");
        assert_eq!(
            escape_controls("a\nb\r\x1b[31mc\u{202e}d"),
            "a\\nb\\r\\u{1b}[31mc\\u{202e}d"
        );
    }

    /// A crafted file name can neither start a line of its own nor carry an escape sequence.
    #[test]
    fn a_crafted_name_cannot_forge_a_log_line() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buf = buf.clone();
            move || Sink(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .without_time()
            .fmt_fields(escaped_fields())
            .finish();
        let name = "x.pdf\nERROR batchmirror: LOST item=everything\x1b[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(file = %name, "submitted {name}");
        });
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("submitted x.pdf\\nERROR"), "{out:?}");
        assert!(out.contains("file=x.pdf\\nERROR"), "{out:?}");
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
