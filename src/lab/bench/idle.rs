//! The two ledger-size runs: an idle pass over a ledger of many mirrored items (list requests per
//! provider, CPU), and `status` over a ledger of a million rows (wall time).

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::measure::{self, Measured};
use super::setup::{self, PROVIDER};
use super::{BenchError, fill, measured, ms, verdict};
use crate::daemon::Mirror;
use crate::ledger::Ledger;
use crate::model::no_observer;
use batchmirror_sandbox::Sandbox;

/// Bytes of each result in the idle account; never fetched, only listed.
const IDLE_RESULT_BYTES: usize = 200;
/// Passes measured in process; the first one also opens the connections.
const IDLE_PASSES: usize = 3;
/// `status` runs; the best and the worst are printed.
const STATUS_RUNS: usize = 5;

/// Lists an account of `items` finished results into a fresh ledger with the real listing code,
/// marks them mirrored (as a finished `sync --once` would leave them, without downloading them),
/// then measures passes over it: in process (the daemon's steady state) and as `sync --once`.
pub async fn idle_pass(exe: &Path, dir: &Path, items: u64) -> Result<(), BenchError> {
    let spec = setup::account(items as usize, IDLE_RESULT_BYTES);
    let sandbox = Sandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(BenchError::Sandbox)?;
    let inst = setup::instance(dir, &sandbox.base_url(), None)?;
    let settings = crate::config::load(&inst.config).map_err(crate::error::Error::from)?;
    {
        let ledger = Ledger::open(&inst.ledger)?;
        let provider =
            crate::provider::build(&settings.providers[0], &settings.download, no_observer())
                .map_err(crate::error::Error::from)?;
        crate::sync::list_provider(provider.as_ref(), &ledger, no_observer().as_ref())
            .await
            .map_err(|e| BenchError::Failed {
                what: "listing the idle account".into(),
                problem: e.to_string(),
            })?;
        let marked = fill::mark_all_mirrored(
            &inst.ledger,
            PROVIDER,
            IDLE_RESULT_BYTES as u64,
            &"0".repeat(64),
            Utc::now(),
        )
        .map_err(|e| ledger_fill_error("marking the idle ledger mirrored", &e))?;
        if marked != items {
            return Err(BenchError::Failed {
                what: "idle ledger".into(),
                problem: format!("{marked} items marked mirrored, expected {items}"),
            });
        }
    }
    let label = format!("idle pass, {items} mirrored");
    {
        let mirror = Mirror::open(settings).await?;
        let cancel = CancellationToken::new();
        for n in 1..=IDLE_PASSES {
            let lists_before = sandbox.stats().list_requests;
            let detail_before = sandbox.stats().detail_requests;
            let before = measure::thread_cpu();
            let started = std::time::Instant::now();
            let report = mirror.pass(&cancel).await?;
            let wall = started.elapsed();
            let cpu = measure::cpu_between(&before, &measure::thread_cpu());
            let stats = sandbox.stats();
            let lists = stats.list_requests - lists_before;
            let details = stats.detail_requests - detail_before;
            if report.download.mirrored + report.download.failed > 0 {
                return Err(BenchError::Failed {
                    what: label,
                    problem: format!("the pass was not idle: {:?}", report.download),
                });
            }
            println!(
                "{label:<30}{:<13}pass {n}: {lists} list + {details} batch request(s), CPU {:.1} ms (incl. sandbox), wall {:.1} ms{}",
                "in process",
                ms(cpu),
                ms(wall),
                if n == IDLE_PASSES {
                    format!(
                        "; target <= 2 lists and < 50 ms CPU: {}",
                        verdict(lists <= 2 && cpu < Duration::from_millis(50))
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    let lists_before = sandbox.stats().list_requests;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("sync")
        .arg("--once")
        .arg("--config")
        .arg(&inst.config);
    let m = measured("batchmirror sync --once (idle)", cmd, &inst.dir).await?;
    let lists = sandbox.stats().list_requests - lists_before;
    one_line(
        "",
        "sync --once",
        &m,
        &format!(
            "{lists} list request(s); whole process incl. start-up; \
             target < 50 ms CPU and < 32 MB: {}",
            verdict(m.cpu < Duration::from_millis(50) && m.peak_rss < 32_000_000)
        ),
    );
    sandbox.stop().await;
    Ok(())
}

/// Generates a ledger of `items` rows straight in SQL, then times `batchmirror status` on it.
pub async fn status(exe: &Path, dir: &Path, items: u64) -> Result<(), BenchError> {
    let inst = setup::instance(dir, "http://127.0.0.1:9", None)?;
    let per_batch = 1000u64;
    let batches = items.div_ceil(per_batch);
    {
        Ledger::open(&inst.ledger)?;
        fill::generate(&inst.ledger, PROVIDER, batches, per_batch, Utc::now())
            .map_err(|e| ledger_fill_error("generating the status ledger", &e))?;
    }
    let total = batches * per_batch;
    let label = format!("status, {total} items");
    let mut runs = Vec::with_capacity(STATUS_RUNS);
    for _ in 0..STATUS_RUNS {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("status")
            .arg("--json")
            .arg("--config")
            .arg(&inst.config);
        runs.push(measured("batchmirror status", cmd, &inst.dir).await?);
    }
    // The answer must be the ledger's: the generated mix has k % 200 == 7 failed and
    // k % 50 == 3 ready, the rest mirrored.
    let out = std::fs::read_to_string(inst.dir.join("stdout.log")).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let count = |m: u64, r: u64| total / m + u64::from(total % m > r);
    let failed = count(200, 7);
    let mirrored = total - failed - count(50, 3);
    let got = json["providers"][0]["items"]["mirrored"].as_u64();
    if got != Some(mirrored) {
        return Err(BenchError::Failed {
            what: label,
            problem: format!("status said {got:?} mirrored, the ledger holds {mirrored}"),
        });
    }
    runs.sort_by_key(|m| m.wall);
    let best = &runs[0];
    let worst = &runs[runs.len() - 1];
    one_line(
        &label,
        "status",
        best,
        &format!(
            "best of {STATUS_RUNS} (worst {:.0} ms); target < 100 ms: {}",
            ms(worst.wall),
            verdict(best.wall < Duration::from_millis(100))
        ),
    );
    Ok(())
}

fn one_line(label: &str, tool: &str, m: &Measured, note: &str) {
    println!(
        "{label:<30}{tool:<13}wall {:.1} ms, CPU {:.0} ms, peak RSS {:.1} MB; {note}",
        ms(m.wall),
        ms(m.cpu),
        m.peak_rss as f64 / 1e6
    );
}

fn ledger_fill_error(what: &str, e: &rusqlite::Error) -> BenchError {
    BenchError::Failed {
        what: what.into(),
        problem: e.to_string(),
    }
}
