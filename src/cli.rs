//! The command line: what each command takes. `main.rs` dispatches.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keeps a local mirror of your document-extraction batch results before the provider deletes them.
#[derive(Debug, Parser)]
#[command(name = "batchmirror", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
    /// Start the bundled sandboxes (all four APIs) and mirror them into ./demo-mirror.
    ///
    /// Needs no account and no network; replaces an earlier demo's ./demo-mirror.
    ///
    /// Example: batchmirror demo && ls demo-mirror/*/
    Demo,
    /// Run one provider's sandbox alone (for trying configs and benchmarks).
    ///
    /// Prints `listening on http://HOST:PORT` once ready; runs until SIGTERM/SIGINT.
    ///
    /// Example: batchmirror sandbox --provider talonic --listen 127.0.0.1:8080 --api-key k
    Sandbox(SandboxArgs),
    /// Measure mirroring against curl on the bundled sandbox: many small results, one large one,
    /// an idle pass over a big ledger and `status` over a bigger one.
    ///
    /// Example: batchmirror bench --items 2000 --skip-large
    #[cfg(feature = "sandbox")]
    Bench(crate::bench::BenchArgs),
    /// Validate the config and print it with secrets redacted.
    ///
    /// Exit code 2, with the key and the problem named, when the config is wrong.
    ///
    /// Example: BATCHMIRROR__DOWNLOAD__CONCURRENCY=4 batchmirror check-config --config ./c.toml
    CheckConfig(ConfigArg),
    /// Crash-loop the daemon against the sandbox and check the ledger invariants (test harness).
    ///
    /// Example: scripts/crashloop.sh --loops 200 --seed 7
    #[cfg(feature = "sandbox")]
    #[command(hide = true)]
    Crashloop(crate::crashloop::CrashloopArgs),
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

fn batchmirror_kinds() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::sandbox::KINDS)
}

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Which provider API to serve.
    #[arg(long, default_value = "extract_page", value_parser = batchmirror_kinds())]
    pub provider: String,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[arg(long, default_value_t = 20)]
    pub batches: usize,
    #[arg(long, default_value_t = 25)]
    pub items_per_batch: usize,
    /// Approximate size of each result, in bytes.
    #[arg(long, default_value_t = 20_000)]
    pub result_bytes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The API key clients must send.
    #[arg(long, default_value = "sandbox-key")]
    pub api_key: String,
    /// Inject this fault into a random share of result downloads (repeatable; extract_page only).
    #[arg(long = "fault", value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(crate::sandbox::ResultFault::NAMES))]
    pub faults: Vec<String>,
    /// Share of result requests given one of the --fault faults, drawn from --seed.
    #[arg(long, default_value_t = 0.1, value_parser = fault_rate)]
    pub fault_rate: f64,
}

fn fault_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}
