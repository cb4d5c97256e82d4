//! The `verify` run: a ledger of mirrored items and their files generated directly (no HTTP),
//! then `batchmirror verify` timed over them as a child process, files/s and MB/s.

use std::path::Path;

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::setup::{self, PROVIDER};
use super::{BenchError, fill, measured, ms};
use crate::ledger::Ledger;

/// Items per generated batch (and so per directory).
const PER_BATCH: u64 = 1000;

/// Writes `items` mirrored results of `size` bytes and their ledger rows under `dir`, then times
/// `batchmirror verify` over them: with `cold`, once after asking the kernel to drop its page
/// cache (when it lets us: the disk-bound figure); then warm (the hashing-bound figure).
pub async fn verify(
    exe: &Path,
    dir: &Path,
    items: u64,
    size: usize,
    cold: bool,
) -> Result<(), BenchError> {
    let inst = setup::instance(dir, "http://127.0.0.1:9", None)?;
    let batches = items.div_ceil(PER_BATCH);
    let total = batches * PER_BATCH;
    let mut body = format!("{{\"pad\":\"{}", "x".repeat(size.saturating_sub(10)));
    body.push_str("\"}");
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    {
        Ledger::open(&inst.ledger)?;
        let sizes = (body.len() as u64, sha.as_str());
        fill::generate_mirrored(
            &inst.ledger,
            PROVIDER,
            (batches, PER_BATCH),
            sizes,
            Utc::now(),
        )
        .map_err(|e| BenchError::Failed {
            what: "generating the verify ledger".into(),
            problem: e.to_string(),
        })?;
    }
    let root = inst.mirror.join(PROVIDER);
    tokio::task::spawn_blocking(move || write_files(&root, batches, body.as_bytes()))
        .await
        .map_err(|e| BenchError::Failed {
            what: "writing the verify files".into(),
            problem: e.to_string(),
        })??;
    let runs: &[&str] = if cold { &["cold", "warm"] } else { &["warm"] };
    for &run in runs {
        if run == "cold" && std::fs::write("/proc/sys/vm/drop_caches", "3").is_err() {
            println!("verify: cannot drop the page cache (not root?): the cold run is skipped");
            continue;
        }
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["verify", "--json", "--config"]).arg(&inst.config);
        let m = measured("batchmirror verify", cmd, &inst.dir).await?;
        let out = std::fs::read_to_string(inst.dir.join("stdout.log")).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let (checked, bytes) = (
            json["files_checked"].as_u64(),
            json["bytes_checked"].as_u64().unwrap_or(0),
        );
        if checked != Some(total) || !m.status.success() {
            return Err(BenchError::Failed {
                what: format!("verify over {total} files"),
                problem: format!("checked {checked:?}, exit {:?}", m.status.code()),
            });
        }
        let secs = m.wall.as_secs_f64();
        println!(
            "{:<30}{:<13}wall {:.2} s, {:.0} files/s, {:.0} MB/s, CPU {:.0} ms, peak RSS {:.1} MB",
            format!("verify {run}, {total} files"),
            "verify",
            secs,
            total as f64 / secs,
            bytes as f64 / 1e6 / secs,
            ms(m.cpu),
            m.peak_rss as f64 / 1e6
        );
    }
    yardstick(&inst.mirror, &inst.dir, total).await
}

/// The same files hashed by coreutils' `sha256sum` (as many processes at once as verify uses
/// threads), for what "at disk speed" means on this machine: run right after the warm verify, so
/// both meet the same page cache.
async fn yardstick(mirror: &Path, dir: &Path, total: u64) -> Result<(), BenchError> {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get().clamp(2, 8));
    // The path goes in as "$1", never spliced into the script.
    let script = format!(
        "find \"$1\" -type f -name '*.json' -print0 | xargs -0 -P {threads} -n 1000 sha256sum"
    );
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", &script, "sh"]).arg(mirror);
    let m = measured("sha256sum", cmd, dir).await?;
    let lines = std::fs::read_to_string(dir.join("stdout.log"))
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    if !m.status.success() || lines != total {
        println!("verify: the sha256sum yardstick did not run ({lines} files hashed); skipped");
        return Ok(());
    }
    let secs = m.wall.as_secs_f64();
    println!(
        "{:<30}{:<13}wall {:.2} s, {:.0} files/s (find | xargs -P {threads} sha256sum)",
        format!("verify warm, {total} files"),
        "sha256sum",
        secs,
        total as f64 / secs,
    );
    Ok(())
}

fn write_files(root: &Path, batches: u64, body: &[u8]) -> Result<(), BenchError> {
    for b in 0..batches {
        let dir = root.join(format!("batch_{b:07}"));
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
        for i in 0..PER_BATCH {
            let file = dir.join(format!("item_{i:06}.json"));
            std::fs::write(&file, body).map_err(|e| BenchError::io("write", &file, e))?;
        }
    }
    // On disk before the cold run drops the cache (dirty pages cannot be dropped).
    rustix::fs::sync();
    Ok(())
}
