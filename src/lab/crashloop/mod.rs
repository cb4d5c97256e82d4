//! The crash-loop harness (issue 7): the real daemon binary, killed with SIGKILL at seeded random
//! moments over and over against the extract.page sandbox, then left to finish, then checked
//! against the ledger invariants (DESIGN.md, "Ledger invariants" 1 and 2).
//!
//! This module owns the loop (spawn, seeded delay, kill, look) and the options; [`world`] the
//! account, [`observe`] the looks after each kill and how a second publish is caught, [`verdict`]
//! the final checks. `batchmirror crashloop` (hidden) and `scripts/crashloop.sh` run it; so does a
//! short version in `tests/crashloop.rs`.

mod observe;
#[cfg(test)]
mod tests;
mod verdict;
mod world;

pub use observe::KillStats;
pub use verdict::CrashloopVerdict;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::process::{Child, Command};

use crate::config::toml_str;
use batchmirror_sandbox::Sandbox;
use observe::{Snapshot, Tracker};
use world::World;

/// The longest the final, uninterrupted pass may take.
const FINAL_PASS_TIMEOUT: Duration = Duration::from_secs(600);
/// Share of the items the loops alone could mirror at most (see [`paced_result_delay`]).
const LOOPS_SHARE: f64 = 0.75;

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct CrashloopOptions {
    /// The `batchmirror` binary to run as the daemon.
    pub daemon: PathBuf,
    pub loops: u32,
    /// Seeds the account, the kill delays and the daemon mode of each loop.
    pub seed: u64,
    /// Items in the sandbox account (about 1 in 40 fails at the provider and has no result).
    pub items: usize,
    /// Average result size in bytes (each is between half and one and a half times it).
    pub item_bytes: usize,
    /// `download.concurrency` of the daemon.
    pub concurrency: usize,
    /// Each daemon is killed after a delay drawn uniformly from `[0, max_life]`.
    pub max_life: Duration,
    /// How long the sandbox holds each result body back; None paces it (see
    /// [`paced_result_delay`]).
    pub result_delay: Option<Duration>,
    /// Where the temporary mirror and ledger go (a fresh directory is made inside).
    pub work_root: PathBuf,
    /// Keep the directory even when the loop passes.
    pub keep: bool,
}

impl CrashloopOptions {
    /// The defaults of `scripts/crashloop.sh`: 200 loops over 3000 items of ~20 KB.
    pub fn new(daemon: PathBuf, seed: u64) -> CrashloopOptions {
        CrashloopOptions {
            daemon,
            loops: 200,
            seed,
            items: 3000,
            item_bytes: 20_000,
            concurrency: 8,
            max_life: Duration::from_millis(400),
            result_delay: None,
            work_root: std::env::temp_dir(),
            keep: false,
        }
    }
}

/// `batchmirror crashloop` (hidden from `--help`: it is a test harness, not a user command).
#[derive(Debug, clap::Args)]
pub struct CrashloopArgs {
    /// Kill-and-restart cycles before the final uninterrupted pass.
    #[arg(long, default_value_t = 200)]
    pub loops: u32,
    /// Seed of the account and of the kill schedule (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value_t = 3000)]
    pub items: usize,
    /// Average result size in bytes.
    #[arg(long, default_value_t = 20_000)]
    pub item_bytes: usize,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Longest a daemon lives before its SIGKILL, e.g. "400ms".
    #[arg(long, default_value = "400ms", value_parser = humantime::parse_duration)]
    pub max_life: Duration,
    /// Delay of each result body, e.g. "50ms" (default: paced to the loops).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub result_delay: Option<Duration>,
    /// Directory for the temporary mirror and ledger (default: the system temp dir).
    #[arg(long)]
    pub work_root: Option<PathBuf>,
    /// Keep the mirror, ledger and daemon log even when the loop passes.
    #[arg(long)]
    pub keep: bool,
}

impl CrashloopArgs {
    pub fn into_options(self, daemon: PathBuf) -> CrashloopOptions {
        let seed = self.seed.unwrap_or_else(rand::random);
        let mut o = CrashloopOptions::new(daemon, seed);
        o.loops = self.loops;
        o.items = self.items;
        o.item_bytes = self.item_bytes;
        o.concurrency = self.concurrency;
        o.max_life = self.max_life;
        o.result_delay = self.result_delay;
        o.keep = self.keep;
        if let Some(root) = self.work_root {
            o.work_root = root;
        }
        o
    }
}

/// Why the harness itself could not run (a broken invariant is a FAIL verdict, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CrashloopError {
    #[error("crashloop: {action} {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("crashloop: the sandbox did not start: {0}")]
    Sandbox(#[source] std::io::Error),
    #[error("crashloop: the final pass did not finish within {0:?}")]
    FinalPassTimeout(Duration),
    #[error("crashloop: {0}")]
    Invalid(String),
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CrashloopError {
    let path = path.to_owned();
    move |source| CrashloopError::Io {
        path,
        action,
        source,
    }
}

/// A result delay slow enough that the loops alone could mirror at most [`LOOPS_SHARE`] of the
/// items, whatever the machine's speed: a daemon mirrors at most `concurrency` items per delay,
/// and the daemons live `loops × max_life / 2` in all on average. So kills keep landing mid-work
/// up to the last loop, and the final pass has work left to finish.
pub fn paced_result_delay(o: &CrashloopOptions) -> Duration {
    let alive = o.max_life.as_secs_f64() / 2.0 * f64::from(o.loops);
    let items = (o.items as f64 * LOOPS_SHARE).max(1.0);
    Duration::from_secs_f64(o.concurrency as f64 * alive / items).max(Duration::from_millis(1))
}

/// Runs the whole loop and judges it; see the module doc.
pub async fn crashloop(opts: CrashloopOptions) -> Result<CrashloopVerdict, CrashloopError> {
    if opts.items == 0 || opts.concurrency == 0 || opts.max_life.is_zero() {
        return Err(CrashloopError::Invalid(
            "items, concurrency and max_life must be above zero".to_owned(),
        ));
    }
    let begun = Instant::now();
    let result_delay = opts
        .result_delay
        .unwrap_or_else(|| paced_result_delay(&opts));
    // Late items finish while about the first four fifths of the loops run.
    let late = opts.max_life.mul_f64(f64::from(opts.loops) / 2.0 * 0.8);
    let spec = world::spec(opts.seed, opts.items, opts.item_bytes, result_delay, late);
    let all_finished = tokio::time::Instant::now() + late + Duration::from_secs(1);
    let sandbox = Sandbox::start(spec.clone(), ([127, 0, 0, 1], 0).into())
        .await
        .map_err(CrashloopError::Sandbox)?;
    let world = Arc::new(World::new(&spec, &sandbox));
    let dir = make_work_dir(&opts)?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        config_text(&dir, &sandbox.base_url(), opts.concurrency),
    )
    .map_err(io(&config, "write"))?;
    let log = dir.join("daemon.log");

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let claimed = crate::download::claimed_at_most(opts.concurrency);
    let mut tracker = Tracker::new(&world, claimed);
    for at in 0..opts.loops {
        // Mostly the long-running daemon; every few loops a `sync --once`, whose own end (exit
        // code included) is part of the contract too.
        let once = rng.random_ratio(1, 4);
        let life = Duration::from_micros(rng.random_range(0..=micros(opts.max_life)));
        let started = chrono::Utc::now();
        let mut child = spawn(&opts.daemon, once, &config, &log)?;
        let killed = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(io(&opts.daemon, "wait for"))?;
                tracker.stats.exited_early += 1;
                if !once || !status.success() {
                    tracker.problem(format!("loop {at}: the daemon exited on its own: {status}"));
                }
                false
            }
            () = tokio::time::sleep(life) => {
                // SIGKILL: nothing of the daemon runs after this, not even its drop handlers.
                child.start_kill().map_err(io(&opts.daemon, "kill"))?;
                child.wait().await.map_err(io(&opts.daemon, "wait for"))?;
                true
            }
        };
        let snap = look(&world, &dir, &tracker).await?;
        tracker.observe(&world, &snap, at, started, killed);
    }

    // The final pass must find every item finished, or what it leaves pending would count lost.
    tokio::time::sleep_until(all_finished).await;
    let started = chrono::Utc::now();
    let mut last = spawn(&opts.daemon, true, &config, &log)?;
    let status = tokio::time::timeout(FINAL_PASS_TIMEOUT, last.wait())
        .await
        .map_err(|_| CrashloopError::FinalPassTimeout(FINAL_PASS_TIMEOUT))?
        .map_err(io(&opts.daemon, "wait for"))?;
    let mut snap = look(&world, &dir, &tracker).await?;
    tracker.observe(&world, &snap, opts.loops, started, false);
    // The verdict re-hashes every final file, not only the ones first seen in this look.
    snap.digests = scan(&world, &dir, Default::default()).await?.digests;
    let served = sandbox.stats();
    sandbox.stop().await;
    let mut verdict = verdict::judge(verdict::Outcome {
        seed: opts.seed,
        loops: opts.loops,
        claimed,
        world: &world,
        tracker,
        last: &snap,
        served: &served,
        final_exit: status.code(),
        result_delay,
        elapsed: begun.elapsed(),
    });
    if verdict.passed() && !opts.keep {
        std::fs::remove_dir_all(&dir).map_err(io(&dir, "remove"))?;
    } else {
        verdict.work_dir = Some(dir);
    }
    Ok(verdict)
}

/// A fresh directory under `work_root`, named after the seed.
fn make_work_dir(opts: &CrashloopOptions) -> Result<PathBuf, CrashloopError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = opts.work_root.join(format!(
        "batchmirror-crashloop-{}-{}-{nanos}",
        opts.seed,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(io(&dir, "create"))?;
    dir.canonicalize().map_err(io(&dir, "resolve"))
}

fn config_text(dir: &Path, base_url: &str, concurrency: usize) -> String {
    let ledger = dir.join("ledger.sqlite3");
    let mirror = dir.join("mirror");
    format!(
        r#"[ledger]
path = {ledger}
[storage]
root = {mirror}
# Once a year: `run` makes its start-up pass and then only waits for the kill.
[schedule]
cron = "0 0 0 1 1 *"
[download]
concurrency = {concurrency}
[log]
level = "info"
[[provider]]
name = "{provider}"
kind = "extract_page"
base_url = {base_url}
api_key = "{key}"
page_size = 200
"#,
        ledger = toml_str(&ledger.to_string_lossy()),
        mirror = toml_str(&mirror.to_string_lossy()),
        base_url = toml_str(base_url),
        provider = world::PROVIDER,
        key = world::API_KEY,
    )
}

/// Starts `<daemon> run` or `<daemon> sync --once`, its logs appended to `log`.
fn spawn(daemon: &Path, once: bool, config: &Path, log: &Path) -> Result<Child, CrashloopError> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(log, "open"))?;
    let mut cmd = Command::new(daemon);
    if once {
        cmd.args(["sync", "--once"]);
    } else {
        cmd.arg("run");
    }
    cmd.arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // The environment must not reconfigure the daemon under test.
        .env_remove("BATCHMIRROR_CONFIG")
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BATCHMIRROR__") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().map_err(io(daemon, "start"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Walks the mirror on the blocking pool, hashing the files `known` does not list as they are.
async fn scan(
    world: &Arc<World>,
    dir: &Path,
    known: HashMap<usize, observe::FileId>,
) -> Result<Snapshot, CrashloopError> {
    let root = dir.join("mirror");
    let (w, r) = (world.clone(), root.clone());
    tokio::task::spawn_blocking(move || observe::scan_mirror(&w, &r, &known))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|scanned| scanned)
        .map_err(io(&root, "scan"))
}

/// Looks at the mirror and the ledger while no daemon runs.
async fn look(
    world: &Arc<World>,
    dir: &Path,
    tracker: &Tracker,
) -> Result<Snapshot, CrashloopError> {
    let mut snap = scan(world, dir, tracker.known_files()).await?;
    match observe::read_ledger(world, &dir.join("ledger.sqlite3")).await {
        Ok(view) => snap.ledger = view,
        Err(e) => snap.ledger_error = Some(e.to_string()),
    }
    Ok(snap)
}
