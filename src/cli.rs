//! The command line: what each command takes. `main.rs` dispatches.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::config::LogFormat;
use crate::model::ItemFilter;

/// Keeps a local mirror of your document-extraction batch results before the provider deletes them.
#[derive(Debug, Parser)]
#[command(name = "batchmirror", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags, taken by every command; each one given wins over `[log]`, its
/// `BATCHMIRROR__LOG__…` variables and `RUST_LOG`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// More log detail: -v debug, -vv trace.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "quiet", help_heading = "Logging")]
    pub verbose: u8,
    /// Warnings and errors only.
    #[arg(short, long, global = true, help_heading = "Logging")]
    pub quiet: bool,
    /// Log lines as text or as JSON, one object a line (like log.format).
    #[arg(long, global = true, value_name = "FORMAT", help_heading = "Logging")]
    pub log_format: Option<LogFormatArg>,
}

/// `--log-format`'s values, those of `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl LogArgs {
    /// The filter `-v`/`-q` ask for, if either was given.
    pub fn level(&self) -> Option<&'static str> {
        match (self.quiet, self.verbose) {
            (true, _) => Some("warn"),
            (false, 0) => None,
            (false, 1) => Some("debug"),
            (false, _) => Some("trace"),
        }
    }

    /// `--log-format`, else `configured`.
    pub fn format(&self, configured: LogFormat) -> LogFormat {
        match self.log_format {
            Some(LogFormatArg::Text) => LogFormat::Text,
            Some(LogFormatArg::Json) => LogFormat::Json,
            None => configured,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: a pass at start, then one per `schedule.cron` tick, until SIGTERM/SIGINT.
    ///
    /// Example: batchmirror run --config /etc/batchmirror/config.toml
    Run(ConfigArg),
    /// One full pass (list every provider, download every ready item), then exit.
    ///
    /// Exit codes: 0 every due item mirrored; 1 any item due but not mirrored at the end (deferred
    /// after its in-pass retries, failed, lost, at risk) or a provider unreachable, with the
    /// summary naming the first few and their last errors; 2 bad config.
    ///
    /// With --dry-run: list every provider and plan the pass, then print what it would fetch and
    /// what it would lose, without fetching or writing anything (the listing runs against a
    /// throwaway copy of the ledger; safe while the daemon runs). Exit codes: 0 every listing
    /// succeeded and nothing would be lost; 1 a listing failed or some item not mirrored is past
    /// its deadline; 2 bad config.
    ///
    /// Example (cron): batchmirror sync --once --config /etc/batchmirror/config.toml
    /// Example (look first): batchmirror sync --once --dry-run --config ./c.toml
    Sync {
        /// Run exactly one pass (the only mode; kept explicit for cron lines).
        #[arg(long)]
        once: bool,
        /// List and plan only: print what would be fetched (and lost); fetch and write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON (listings, counts and the items).
        #[arg(long, requires = "dry_run")]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Summarise the ledger: items per provider and state, items at risk, last pass; with
    /// --items, list the items themselves.
    ///
    /// Safe while the daemon runs (it reads the ledger without locking it).
    ///
    /// The summary's columns count items per ledger state: pending (not finished at the provider
    /// yet), ready (finished there, waiting for or being downloaded, deferred ones included),
    /// mirrored (on disk), failed (a permanent error, e.g. 404 or a body over the cap), lost (the
    /// provider answered 410: gone for good), skipped (the provider failed or cancelled the item,
    /// so there was never a result to mirror; not an error of ours), at risk (not mirrored, deadline
    /// within download.alert_margin or past).
    ///
    /// --items prints one line per item: provider, batch, item (the ids), state (the ledger state,
    /// or deferred for a ready item waiting for its next attempt after a failed one), deadline
    /// (when the provider deletes the result; - if unknown), size (of the mirrored result) and last
    /// error (the latest failure, if any). Then how many --limit left out.
    ///
    /// Examples:
    ///   batchmirror status --config /etc/batchmirror/config.toml --json | jq .providers
    ///   batchmirror status --items --state lost --provider acme
    #[command(verbatim_doc_comment)]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table (with --items: count, limit and the items).
        #[arg(long)]
        json: bool,
        /// List the items themselves, not only counts.
        #[arg(long)]
        items: bool,
        /// With --items: only items in this state: pending, ready, downloading, mirrored,
        /// failed, lost, skipped, deferred or at-risk.
        #[arg(long, requires = "items", value_parser = parse_filter, value_name = "STATE")]
        state: Option<ItemFilter>,
        /// With --items: only this provider's items (its configured name).
        #[arg(long, requires = "items", value_name = "NAME")]
        provider: Option<String>,
        /// With --items: at most this many lines; the rest are counted, not listed.
        #[arg(long, requires = "items", default_value_t = 1000)]
        limit: usize,
    },
    /// Re-hash every mirrored result against the ledger's size and sha256, and report missing
    /// and corrupt results, files the ledger does not know and stray .part files.
    ///
    /// Sidecars (`<item>@<suffix>`) are accepted beside a mirrored item, not hashed (the ledger
    /// records no digest for them) and not required. Without --repair it reads the ledger without
    /// locking it, so it runs beside a daemon (whose in-flight files it skips). --repair takes the
    /// writer's locks (not beside a daemon), moves corrupt files into
    /// `<storage.root>/.batchmirror-quarantine`, re-queues missing and corrupt items the provider
    /// still retains (the next `sync --once` or daemon pass fetches them), marks those past their
    /// deadline lost, and removes stray .part files; unknown files are never touched.
    ///
    /// Exit codes: 0 the mirror matches the ledger; 1 anything found (repaired or not); 2 bad
    /// config or usage (an unknown --provider).
    ///
    /// Examples:
    ///   batchmirror verify --config /etc/batchmirror/config.toml
    ///   batchmirror verify --provider acme --json | jq .counts
    ///   batchmirror verify --repair && batchmirror sync --once
    #[command(verbatim_doc_comment)]
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this provider's items and directory (its configured name).
        #[arg(long, value_name = "NAME")]
        provider: Option<String>,
        /// Re-queue missing and corrupt items (lost when past their deadline), remove stray .part
        /// files.
        #[arg(long)]
        repair: bool,
        /// Print one JSON object: counts and the findings.
        #[arg(long)]
        json: bool,
    },
    /// The commands that run against the bundled sandboxes (`demo`, `sandbox`, `bench`).
    #[cfg(feature = "sandbox")]
    #[command(flatten)]
    Lab(crate::lab::LabCommand),
    /// Validate the config and print it with secrets redacted.
    ///
    /// Exit code 2, with the key and the problem named, when the config is wrong.
    ///
    /// Example: BATCHMIRROR__DOWNLOAD__CONCURRENCY=4 batchmirror check-config --config ./c.toml
    CheckConfig(ConfigArg),
    /// Print the man page (roff), generated from these definitions; with DIR, write it and one
    /// page per subcommand (batchmirror-status.1, …) there instead.
    ///
    /// Example: batchmirror man /usr/local/share/man/man1
    Man {
        /// An existing directory to write `batchmirror.1` and `batchmirror-<command>.1` into.
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script.
    ///
    /// Example: batchmirror completions bash > /etc/bash_completion.d/batchmirror
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file (TOML); every key can be overridden by BATCHMIRROR__SECTION__KEY.
    #[arg(
        long,
        short,
        env = "BATCHMIRROR_CONFIG",
        default_value = "/etc/batchmirror/config.toml"
    )]
    pub config: PathBuf,
}

/// `--state`'s value, one of [`ItemFilter::WORDS`].
fn parse_filter(s: &str) -> Result<ItemFilter, String> {
    ItemFilter::parse(s).ok_or_else(|| format!("use one of {}", ItemFilter::WORDS.join(", ")))
}
