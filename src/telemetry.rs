//! Logging set-up: tracing to stderr, human text or JSON lines, filtered by `log.level` or
//! `RUST_LOG`, or by the command line's `-v`/`-q`, which win over both; a config reload changes
//! the level ([`set_level`]) only when the config chose it. Under systemd (stderr
//! connected to the journal) lines carry no timestamp of their own: the journal adds one. Text
//! lines escape every control character in a message or field value: file names, ids and server
//! messages are untrusted, and a newline or an escape sequence in one must not forge a log line
//! or recolour a terminal (JSON lines escape them already).
//!
//! Colours only for a person at a terminal who has not set `NO_COLOR` (<https://no-color.org>).
//! While a progress bar is drawn on stderr ([`print_through`]), each line is printed through it
//! (bar cleared, line written, bar redrawn), so a log line never shares a line with the bar.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::sync::{OnceLock, RwLock};

use indicatif::ProgressBar;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

use crate::config::LogFormat;

/// Which log lines are kept: an `EnvFilter` directive and who chose it.
#[derive(Debug, Clone, Copy)]
pub enum Level<'a> {
    /// `log.level` of the config (or a command's own default); `RUST_LOG` wins over it.
    Config(&'a str),
    /// `-v`/`-q` on the command line: wins over `RUST_LOG` and the config.
    Cli(&'a str),
}

/// The progress bar log lines are printed through, while one is drawn.
static BAR: RwLock<Option<ProgressBar>> = RwLock::new(None);

/// Installs the global subscriber once; later calls (tests, `demo`) are no-ops.
pub fn init(format: LogFormat, level: Level<'_>) {
    let from_env = match level {
        Level::Config(_) => EnvFilter::try_from_default_env().ok(),
        Level::Cli(_) => None,
    };
    let pinned_by = match level {
        Level::Cli(_) => Some("-v/-q on the command line"),
        Level::Config(_) => from_env.as_ref().map(|_| "RUST_LOG"),
    };
    let (Level::Config(directive) | Level::Cli(directive)) = level;
    let filter = from_env
        .or_else(|| filter_for(directive).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("info{QUIET}")));
    let (filter, handle) = reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(|| ThroughBar)
        .with_ansi(ansi(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match (format, under_journal()) {
        (LogFormat::Json, _) => registry.with(lines.json()).try_init(),
        (LogFormat::Text, true) => registry
            .with(
                lines
                    .fmt_fields(escaped_fields())
                    .without_time()
                    .with_ansi(false),
            )
            .try_init(),
        (LogFormat::Text, false) => registry.with(lines.fmt_fields(escaped_fields())).try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(Filter { handle, pinned_by });
    }
}

/// The scheduler crate narrates its own life cycle at info; only its warnings matter to us.
const QUIET: &str = ",tokio_cron_scheduler=warn";

fn filter_for(directive: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(format!("{directive}{QUIET}")).map_err(|e| e.to_string())
}

/// The installed filter, for a config reload to change.
struct Filter {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// Who chose the level, when it was not the config: a reload must not override them.
    pinned_by: Option<&'static str>,
}

static FILTER: OnceLock<Filter> = OnceLock::new();

/// What [`set_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `-v`/`-q` or `RUST_LOG` chose the level, and they win over the config (named here).
    PinnedBy(&'static str),
    /// No subscriber of ours is installed (a library user's own, or none).
    NotOurs,
}

/// Sets the log filter to `directive` (a validated `log.level`), unless the command line or
/// `RUST_LOG` chose it.
pub fn set_level(directive: &str) -> Result<LevelChange, String> {
    let Some(filter) = FILTER.get() else {
        return Ok(LevelChange::NotOurs);
    };
    if let Some(who) = filter.pinned_by {
        return Ok(LevelChange::PinnedBy(who));
    }
    let fresh = filter_for(directive)?;
    filter.handle.reload(fresh).map_err(|e| e.to_string())?;
    Ok(LevelChange::Applied)
}

/// Colours for a terminal only (never in files, pipes or cron mail), and never when `NO_COLOR`
/// is set to anything but the empty string (that convention's rule).
fn ansi(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Log lines go through `bar` from now on (`None`: straight to stderr again). The bar must draw
/// on stderr, where the lines go.
pub fn print_through(bar: Option<ProgressBar>) {
    *BAR.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = bar;
}

/// stderr, or stderr with the bar out of the way while a line is written.
struct ThroughBar;

impl Write for ThroughBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        write_line(bar.as_ref(), &mut std::io::stderr().lock(), buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One formatted log line (the subscriber writes each in one `write_all`) into `out`, with
/// `bar` cleared from the terminal meanwhile.
fn write_line(bar: Option<&ProgressBar>, out: &mut dyn Write, line: &[u8]) -> std::io::Result<()> {
    match bar.filter(|b| !b.is_finished()) {
        Some(b) => b.suspend(|| out.write_all(line)),
        None => out.write_all(line),
    }
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

    #[test]
    fn colours_only_at_a_terminal_without_no_color() {
        assert!(ansi(true, None));
        assert!(
            ansi(true, Some("".into())),
            "an empty NO_COLOR does not count"
        );
        assert!(!ansi(true, Some("1".into())));
        assert!(!ansi(false, None));
    }

    /// What the terminal saw, in order: the bar's text, its clearing, and the log line.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn push(&self, what: String) {
            self.0.lock().unwrap().push(what);
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("up {n}"));
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("bar {s}"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("bar {s}"));
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("clear".into());
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl std::io::Write for Screen {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.push(format!("log {}", String::from_utf8_lossy(b)));
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A line written while the bar is drawn lands on a cleared line, and the bar comes back
    /// after it, on a line of its own.
    #[test]
    fn a_log_line_never_shares_a_line_with_the_progress_bar() {
        let screen = Screen::default();
        let target = indicatif::ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let bar = ProgressBar::with_draw_target(Some(10), target);
        bar.set_style(indicatif::ProgressStyle::with_template("{pos}/{len} results").unwrap());
        bar.set_position(3);
        bar.tick();
        write_line(Some(&bar), &mut screen.clone(), b"WARN something\n").unwrap();
        let seen = screen.0.lock().unwrap().clone();
        let log = seen.iter().position(|e| e.starts_with("log ")).unwrap();
        let drawn = seen[..log].iter().rposition(|e| e.contains("3/10 results"));
        let cleared = seen[..log].iter().rposition(|e| e == "clear");
        assert!(drawn.is_some(), "the bar was drawn first: {seen:?}");
        assert!(
            cleared > drawn,
            "the bar is cleared before the line: {seen:?}"
        );
        assert!(
            seen[log + 1..].iter().any(|e| e.contains("3/10 results")),
            "the bar is drawn again after the line: {seen:?}"
        );
        let mut plain = Vec::new();
        write_line(None, &mut plain, b"x\n").unwrap();
        assert_eq!(plain, b"x\n", "without a bar the line goes straight out");
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
