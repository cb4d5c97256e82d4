//! `batchmirror bench`: the figures of the performance targets, measured against the in-process
//! extract.page sandbox over loopback.
//!
//! It owns the runs and the table: many small results and one large one mirrored by a real
//! `batchmirror sync --once` child and fetched by `curl` (the yardstick), an idle pass over a big
//! ledger, `status` over a bigger one, `verify` over many mirrored files, and the push latency
//! of the webhook receiver. [`measure`] samples the children, [`setup`] writes their accounts
//! and configs, [`idle`] holds the two ledger-size runs, `verify` the verify run, [`webhook`]
//! the webhook run (PerfectParser sandbox).

mod fill;
mod first;
mod idle;
pub mod measure;
mod setup;
mod verify;
mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::LedgerError;
use batchmirror_sandbox::Sandbox;
use measure::Measured;

/// Options of `batchmirror bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Results in the many-small run (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
    /// Approximate size of each small result, in bytes.
    #[arg(long, default_value_t = 20_000)]
    pub size: usize,
    /// Size of the single large result, in bytes (0 skips it).
    #[arg(long, default_value_t = 1_000_000_000)]
    pub large: usize,
    /// Downloads at once, for batchmirror and for curl alike.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Skip the large-result run.
    #[arg(long)]
    pub skip_large: bool,
    /// Rounds of the many-small run, batchmirror and curl taking turns; each tool's best round
    /// counts. File creation speed depends on the filesystem's recent history (ext4 skips inodes
    /// freed in the last minutes), so one round can be one tool's bad luck.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Skip curl, even when it is installed.
    #[arg(long)]
    pub skip_curl: bool,
    /// Fresh small results in the first-pass run, at the shipped defaults (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub first_items: usize,
    /// Mirrored items in the ledger of the idle-pass run (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub idle_items: u64,
    /// Items in the ledger of the `status` run (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub status_items: u64,
    /// Mirrored files (of --size bytes) `batchmirror verify` re-hashes in the verify run,
    /// generated straight on disk and in the ledger (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub verify_items: u64,
    /// Also time a cold verify, after dropping the kernel's page cache (root only; it slows
    /// everything else on the machine for a while).
    #[arg(long)]
    pub verify_cold: bool,
    /// Documents in the webhook-latency run, completing one every 250 ms (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub webhook_items: usize,
    /// Working directory; a new one under the system temp dir by default. It must be on the disk
    /// you care about (on tmpfs, fsync is free).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the sandbox: {0}")]
    Sandbox(std::io::Error),
    #[error(transparent)]
    Mirror(#[from] crate::error::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A measured run did not do its whole job, so its figures would mean nothing.
    #[error("{what}: {problem}")]
    Failed { what: String, problem: String },
}

impl BenchError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Runs every benchmark the options ask for, printing the table as it goes.
pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("batchmirror-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find", Path::new("self"), e))?;
    let curl = if args.skip_curl { None } else { find_curl() };
    println!("working directory: {}", dir.display());
    if curl.is_none() && !args.skip_curl {
        println!("curl is not installed: the curl rows and ratios are skipped");
    }
    println!(
        "{:<30}{:<13}{:>9}{:>10}{:>9}{:>13}{:>8}{:>15}",
        "run", "tool", "wall s", "items/s", "MB/s", "peak RSS MB", "CPU s", "sandbox CPU s"
    );
    let result = async {
        if args.items > 0 {
            let label = format!(
                "{} x {:.1} kB, conc {}",
                args.items,
                args.size as f64 / 1e3,
                args.concurrency
            );
            let mut rounds = Vec::new();
            for round in 0..args.rounds.max(1) {
                let at = dir.join(format!("small-{round}"));
                let c = compare(
                    &exe,
                    curl.as_deref(),
                    &at,
                    args,
                    args.items,
                    args.size,
                    &label,
                );
                rounds.push(c.await?);
            }
            if let Some(ratio) = Comparison::best_ratio(&rounds) {
                println!(
                    "  batchmirror/(curl + sync -f) wall time, best of each x{ratio:.2} \
                     (target <= 1.00): {}",
                    verdict(ratio <= 1.0)
                );
            }
        }
        if args.large > 0 && !args.skip_large {
            let label = format!("1 x {:.1} MB", args.large as f64 / 1e6);
            let c = compare(
                &exe,
                curl.as_deref(),
                &dir.join("large"),
                args,
                1,
                args.large,
                &label,
            )
            .await?;
            if let Some(ratio) = c.wall_ratio() {
                println!(
                    "  batchmirror/(curl + sync -f) throughput x{:.2} (target >= 0.90): {}",
                    1.0 / ratio,
                    verdict(1.0 / ratio >= 0.9)
                );
            }
            let rss = c.mirror.peak_rss as f64 / 1e6;
            println!(
                "  batchmirror peak RSS {rss:.1} MB (target < 64 MB): {}",
                verdict(rss < 64.0)
            );
        }
        if args.first_items > 0 {
            first::first_pass(&exe, &dir.join("first"), args.first_items).await?;
        }
        if args.idle_items > 0 {
            idle::idle_pass(&exe, &dir.join("idle"), args.idle_items).await?;
        }
        if args.status_items > 0 {
            idle::status(&exe, &dir.join("status"), args.status_items).await?;
        }
        if args.verify_items > 0 {
            let at = dir.join("verify");
            verify::verify(&exe, &at, args.verify_items, args.size, args.verify_cold).await?;
        }
        if args.webhook_items > 0 {
            webhook::latency(&dir.join("webhook"), args.webhook_items).await?;
        }
        Ok(())
    }
    .await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// `curl` on the PATH, if any.
fn find_curl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("curl"))
        .find(|p| p.is_file())
}

/// One batchmirror run and, when curl is there, one curl run over the same results.
struct Comparison {
    mirror: Measured,
    curl: Option<Measured>,
}

impl Comparison {
    fn wall_ratio(&self) -> Option<f64> {
        Self::best_ratio(std::slice::from_ref(self))
    }

    /// batchmirror's best wall time over curl's best, across rounds.
    fn best_ratio(rounds: &[Comparison]) -> Option<f64> {
        let best = |walls: Vec<Duration>| walls.into_iter().min();
        let mirror = best(rounds.iter().map(|c| c.mirror.wall).collect())?;
        let curl = best(
            rounds
                .iter()
                .filter_map(|c| Some(c.curl.as_ref()?.wall))
                .collect(),
        )?;
        Some(mirror.as_secs_f64() / curl.as_secs_f64().max(1e-9))
    }
}

/// API requests and object-store GETs the sandbox has answered so far.
fn requests(stats: &batchmirror_sandbox::Stats) -> (u64, u64) {
    let results: u64 = stats.result_requests.values().sum();
    (
        stats.list_requests + stats.detail_requests + results,
        stats.store_requests,
    )
}

async fn compare(
    exe: &Path,
    curl: Option<&Path>,
    dir: &Path,
    args: &BenchArgs,
    items: usize,
    size: usize,
    label: &str,
) -> Result<Comparison, BenchError> {
    let spec = setup::account(items, size);
    let ids = setup::ids(&spec);
    let sandbox = Sandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(BenchError::Sandbox)?;
    let base = sandbox.base_url();
    let bytes = setup::expected_bytes(&sandbox, &ids);

    let inst = setup::instance(&dir.join("batchmirror"), &base, Some(args.concurrency))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("sync")
        .arg("--once")
        .arg("--config")
        .arg(&inst.config);
    let before = sandbox.stats();
    let mirror = measured("batchmirror sync --once", cmd, &inst.dir).await?;
    let (got, files) =
        measure::tree_size(&inst.mirror).map_err(|e| BenchError::io("read", &inst.mirror, e))?;
    check("batchmirror sync --once", got, files, bytes, items)?;
    row(label, "batchmirror", &mirror, items, bytes);
    let ((api, store), (api_before, store_before)) =
        (requests(&sandbox.stats()), requests(&before));
    let (api, store) = (api - api_before, store - store_before);
    println!(
        "{:<30}{:<13}{api} API requests ({:.2} per item), {store} object-store GETs",
        "",
        "",
        api as f64 / items as f64
    );

    let curl_run = match curl {
        None => None,
        Some(curl) => {
            let cdir = dir.join("curl");
            let out = cdir.join("out");
            std::fs::create_dir_all(&out).map_err(|e| BenchError::io("create", &out, e))?;
            let mut cmd = tokio::process::Command::new(curl);
            cmd.args(["--silent", "--show-error", "--fail", "--create-dirs"]);
            if items == 1 {
                let (b, i) = &ids[0];
                cmd.arg("-H").arg(format!("X-API-KEY: {}", setup::KEY));
                cmd.arg("-o").arg(out.join("result.json"));
                cmd.arg(format!("{base}/v1/batches/{b}/items/{i}/result"));
            } else {
                let cfg = cdir.join("urls.cfg");
                setup::curl_config(&cfg, &base, &ids, &out)?;
                cmd.arg("--parallel")
                    .arg("--parallel-max")
                    .arg(args.concurrency.to_string());
                cmd.arg("--config").arg(&cfg);
            }
            let fetched = measured("curl", cmd, &cdir).await?;
            // curl leaves its files in the page cache; `sync -f` makes the same bytes durable,
            // which batchmirror does before it reports a result mirrored.
            let mut sync = tokio::process::Command::new("sync");
            sync.arg("-f").arg(&out);
            let synced = measured("sync -f", sync, &cdir).await?;
            let m = fetched.then(&synced);
            let (got, files) =
                measure::tree_size(&out).map_err(|e| BenchError::io("read", &out, e))?;
            check("curl", got, files, bytes, items)?;
            row("", "curl+sync -f", &m, items, bytes);
            Some(m)
        }
    };
    sandbox.stop().await;
    Ok(Comparison {
        mirror,
        curl: curl_run,
    })
}

/// Runs a child with its output in `dir/<stdout|stderr>.log`; a failed exit is an error.
async fn measured(
    what: &str,
    mut cmd: tokio::process::Command,
    dir: &Path,
) -> Result<Measured, BenchError> {
    let open = |name: &str| {
        let p = dir.join(name);
        std::fs::File::create(&p).map_err(|e| BenchError::io("create", &p, e))
    };
    cmd.stdout(open("stdout.log")?).stderr(open("stderr.log")?);
    let m = measure::run_child(cmd)
        .await
        .map_err(|e| BenchError::io("run", Path::new(what), e))?;
    if !m.status.success() {
        let log = dir.join("stderr.log");
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(BenchError::Failed {
            what: what.to_owned(),
            problem: format!("exited with {} ({tail})", m.status),
        });
    }
    Ok(m)
}

/// The run must have written every result, byte for byte in total, or its figures are void.
fn check(what: &str, got: u64, files: u64, bytes: u64, items: usize) -> Result<(), BenchError> {
    if got == bytes && files == items as u64 {
        Ok(())
    } else {
        Err(BenchError::Failed {
            what: what.to_owned(),
            problem: format!("wrote {files} files of {got} bytes, expected {items} of {bytes}"),
        })
    }
}

fn row(label: &str, tool: &str, m: &Measured, items: usize, bytes: u64) {
    let secs = m.wall.as_secs_f64().max(1e-9);
    println!(
        "{:<30}{:<13}{:>9.2}{:>10.1}{:>9.1}{:>13.1}{:>8.2}{:>15.2}",
        label,
        tool,
        secs,
        items as f64 / secs,
        bytes as f64 / 1e6 / secs,
        m.peak_rss as f64 / 1e6,
        m.cpu.as_secs_f64(),
        m.host_cpu.as_secs_f64()
    );
}

/// Milliseconds, for the one-line runs.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
