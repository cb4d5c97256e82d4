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
    let (p50, p95, max) = spread(got.iter().map(|p| p.latency).collect());
    println!(
        "{:<30}{:<13}p50 {p50:.3} s, p95 {p95:.3} s, max {max:.3} s (completed -> published, cron never ticks)",
        format!("webhook latency, {items} items"),
        "batchmirror",
    );
    println!("  target p95 < 1 s: {}", verdict(p95 < 1.0));
    let (a50, a95, amax) = spread(got.iter().map(|p| p.answered * 1e3).collect());
    println!(
        "{:<30}{:<13}p50 {a50:.1} ms, p95 {a95:.1} ms, max {amax:.1} ms (delivery POST -> receiver's status)",
        "webhook answer", "batchmirror",
    );
    println!("  target p95 < 100 ms: {}", verdict(a95 < 100.0));
    Ok(())
}

/// p50, p95 and max of `v` (not empty).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[n / 2], v[(n * 95).div_ceil(100) - 1], v[n - 1])
}
