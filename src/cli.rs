//! The command line: what each command takes. `main.rs` dispatches.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::config::LogFormat;

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
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Warnings and errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log lines as text or as JSON, one object a line (like log.format).
    #[arg(long, global = true, value_name = "FORMAT")]
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
    /// Example (cron): batchmirror sync --once --config /etc/batchmirror/config.toml
    Sync {
        /// Run exactly one pass (the only mode; kept explicit for cron lines).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Summarise the ledger: items per provider and state, items at risk, last pass.
    ///
    /// Safe while the daemon runs (it reads the ledger without locking it).
    ///
    /// Example: batchmirror status --config /etc/batchmirror/config.toml --json | jq .providers
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object instead of a table.
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
