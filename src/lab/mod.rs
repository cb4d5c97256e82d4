//! The harnesses around the daemon (feature `sandbox`): `demo`, `sandbox`, `bench` and the hidden
//! `crashloop`, each run against the bundled sandboxes of `batchmirror-sandbox`.
//!
//! They depend on the daemon and never the reverse: nothing outside this module names it except
//! the one [`LabCommand`] seam that `cli.rs` flattens into the command line.
//!
//! - [`demo`](mod@demo): every sandbox started on loopback and mirrored into `./demo-mirror`.
//! - [`bench`](mod@bench): the performance figures of the targets, against curl.
//! - [`crashloop`]: SIGKILL-and-restart checks of the ledger invariants.
//! - `push`: the webhook rig `demo` and `bench` share (PerfectParser sandbox pushing to `run`).

pub mod bench;
pub mod crashloop;
mod demo;
mod demo_drop;
mod push;

pub use demo::{DemoSummary, demo};

use std::net::SocketAddr;

/// The commands that need the sandboxes.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
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
    Bench(bench::BenchArgs),
    /// Crash-loop the daemon against the sandbox and check the ledger invariants (test harness).
    ///
    /// Example: scripts/crashloop.sh --loops 200 --seed 7
    #[command(hide = true)]
    Crashloop(crashloop::CrashloopArgs),
}

fn batchmirror_kinds() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(batchmirror_sandbox::KINDS)
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
          value_parser = clap::builder::PossibleValuesParser::new(batchmirror_sandbox::ResultFault::NAMES))]
    pub faults: Vec<String>,
    /// Share of result requests given one of the --fault faults, drawn from --seed.
    #[arg(long, default_value_t = 0.1, value_parser = fault_rate)]
    pub fault_rate: f64,
}

impl SandboxArgs {
    /// The generated account these options describe.
    pub fn generated(&self) -> batchmirror_sandbox::Generated {
        batchmirror_sandbox::Generated {
            batches: self.batches,
            items_per_batch: self.items_per_batch,
            result_bytes: self.result_bytes,
            seed: self.seed,
            api_key: self.api_key.clone(),
            faults: self
                .faults
                .iter()
                .filter_map(|n| batchmirror_sandbox::ResultFault::named(n))
                .collect(),
            fault_rate: self.fault_rate,
        }
    }
}

fn fault_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}
