//! The first pass over a large account: a `batchmirror sync --once` child, at the shipped
//! defaults (concurrency included), listing and mirroring many small results in batches of 200.
//! Small bodies keep the disk out of the way, so the figure is the cost per item: items per
//! second, CPU per item, requests per item.

use std::path::Path;

use super::setup;
use super::{BenchError, check, measured, requests, verdict};
use batchmirror_sandbox::Sandbox;

/// Items per batch, as in the 100,000 items in 500 batches.
const PER_BATCH: usize = 200;
/// Bytes per result: a small JSON document.
const BYTES: usize = 600;

/// Mirrors `items` fresh results in one pass and prints the per-item figures beside the targets.
pub async fn first_pass(exe: &Path, dir: &Path, items: usize) -> Result<(), BenchError> {
    let spec = setup::account_in(items, BYTES, PER_BATCH);
    let ids = setup::ids(&spec);
    let sandbox = Sandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(BenchError::Sandbox)?;
    let bytes = setup::expected_bytes(&sandbox, &ids);
    let inst = setup::instance(dir, &sandbox.base_url(), None)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("sync")
        .arg("--once")
        .arg("--config")
        .arg(&inst.config);
    let m = measured("batchmirror sync --once (first pass)", cmd, &inst.dir).await?;
    let (got, files) = super::measure::tree_size(&inst.mirror)
        .map_err(|e| BenchError::io("read", &inst.mirror, e))?;
    check(
        "batchmirror sync --once (first pass)",
        got,
        files,
        bytes,
        items,
    )?;
    let (api, _) = requests(&sandbox.stats());
    sandbox.stop().await;
    let per_s = items as f64 / m.wall.as_secs_f64().max(1e-9);
    let cpu_ms = m.cpu.as_secs_f64() * 1e3 / items as f64;
    let label = format!("first pass, {items} items");
    println!(
        "{label:<30}{:<13}{} batches, wall {:.2} s, {per_s:.0} items/s, {cpu_ms:.3} ms CPU/item (sandbox {:.3}), \
         peak RSS {:.1} MB, {:.2} API requests/item",
        "batchmirror",
        items.div_ceil(PER_BATCH),
        m.wall.as_secs_f64(),
        m.host_cpu.as_secs_f64() * 1e3 / items as f64,
        m.peak_rss as f64 / 1e6,
        api as f64 / items as f64,
    );
    println!(
        "  target >= 2000 items/s: {}; target < 0.3 ms CPU/item: {}",
        verdict(per_s >= 2000.0),
        verdict(cpu_ms < 0.3)
    );
    Ok(())
}
