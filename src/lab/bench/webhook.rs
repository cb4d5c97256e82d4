//! Push latency: [`super::super::push`]'s rig with a schedule that never ticks, documents
//! completing one every 250 ms after the start pass; p50, p95 and max from "completed" at the
//! sandbox to the file published, beside the target (p95 < 1 s).

use std::path::Path;

use super::{BenchError, verdict};

/// Seconds after the sandbox starts when the first document completes (the start pass is over).
const FIRST: f64 = 2.0;
/// Seconds between completions.
const STEP: f64 = 0.25;

/// Mirrors `items` documents driven by webhooks alone and prints the latency figures.
pub async fn latency(dir: &Path, items: usize) -> Result<(), BenchError> {
    let got = super::super::push::mirror_by_webhook(dir, items, FIRST, STEP, "0 0 0 1 1 *")
        .await
        .map_err(|problem| BenchError::Failed {
            what: "webhook latency".to_owned(),
            problem,
        })?;
    let mut latencies: Vec<f64> = got.into_iter().map(|(_, s)| s).collect();
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    let p95 = latencies[(n * 95).div_ceil(100) - 1];
    println!(
        "{:<30}{:<13}p50 {:.3} s, p95 {p95:.3} s, max {:.3} s (completed -> published, cron never ticks)",
        format!("webhook latency, {items} items"),
        "batchmirror",
        latencies[n / 2],
        latencies[n - 1],
    );
    println!("  target p95 < 1 s: {}", verdict(p95 < 1.0));
    Ok(())
}
