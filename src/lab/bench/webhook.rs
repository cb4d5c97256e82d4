//! Push latency: the daemon (`run`, in-process) with a schedule that never ticks, a PerfectParser
//! sandbox whose webhook (registered through its `/v1/webhooks` API) points at the daemon's
//! receiver, and documents completing one every 250 ms after the start pass. Each document's
//! time from "completed" at the sandbox to its file published in the mirror is measured by
//! watching the mirror; p50, p95 and max are printed beside the target (p95 < 1 s).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use batchmirror_sandbox::perfectparser::{
    DocOutcome, DocumentSpec, ExtractionSpec, PerfectSandbox, PerfectSpec, WEBHOOK_EVENTS,
};
use tokio_util::sync::CancellationToken;

use super::{BenchError, verdict};
use crate::config;

const KEY: &str = "pp_live_bench";
/// Seconds after the sandbox starts when the first document completes (the start pass is over).
const FIRST: f64 = 2.0;
/// Seconds between completions.
const STEP: f64 = 0.25;

fn failed(problem: impl Into<String>) -> BenchError {
    BenchError::Failed {
        what: "webhook latency".to_owned(),
        problem: problem.into(),
    }
}

/// Mirrors `items` documents driven by webhooks alone and prints the latency figures.
pub async fn latency(dir: &Path, items: usize) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
    let documents = (0..items)
        .map(|k| DocumentSpec {
            id: format!("doc_{k:05}"),
            filename: format!("doc_{k:05}.pdf"),
            finishes_at: FIRST + STEP * k as f64,
            outcome: DocOutcome::Completed,
            result_bytes: 4000,
            page_count: 1,
        })
        .collect();
    let extraction = ExtractionSpec {
        id: "ext_bench".to_owned(),
        parser_id: "prs_invoices".to_owned(),
        created_ago: Duration::from_secs(10),
        documents,
        status_override: None,
    };
    let sandbox = PerfectSandbox::start(
        PerfectSpec::new(KEY, vec![extraction]),
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .map_err(BenchError::Sandbox)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BenchError::io("find a free port in", dir, e))?
        .port();
    let asked = serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/hooks/pp"),
        "events": WEBHOOK_EVENTS,
    });
    let created = reqwest::Client::new()
        .post(format!("{}/v1/webhooks", sandbox.base_url()))
        .header("X-API-Key", KEY)
        .header("content-type", "application/json")
        .body(asked.to_string())
        .send()
        .await
        .map_err(|e| failed(format!("cannot register the webhook: {e}")))?
        .bytes()
        .await
        .map_err(|e| failed(format!("cannot read the webhook: {e}")))?;
    let created: serde_json::Value =
        serde_json::from_slice(&created).map_err(|e| failed(e.to_string()))?;
    let secret = created["webhook"]["signing_secret"]
        .as_str()
        .ok_or_else(|| failed("no signing_secret in the created webhook"))?;
    let text = format!(
        "[ledger]\npath = {ledger}\n[storage]\nroot = {root}\n[schedule]\ncron = \"0 0 0 1 1 *\"\n\
         [webhook]\nlisten = \"127.0.0.1:{port}\"\n[[provider]]\nname = \"pp\"\n\
         kind = \"perfectparser\"\nbase_url = \"{base}\"\napi_key = \"{KEY}\"\n\
         webhook_secret = \"{secret}\"\n",
        ledger = config::toml_str(&dir.join("ledger.sqlite3").to_string_lossy()),
        root = config::toml_str(&dir.join("mirror").to_string_lossy()),
        base = sandbox.base_url(),
    );
    let settings = config::load_str(&text, "bench", &HashMap::new())
        .map_err(|e| failed(format!("the bench config does not load: {e}")))?;
    let token = CancellationToken::new();
    let daemon = tokio::spawn(crate::daemon::run(settings, token.clone()));
    let root = dir.join("mirror");
    let mut seen: HashMap<String, i64> = HashMap::new();
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_secs_f64(STEP * items as f64);
    while seen.len() < items && Instant::now() < deadline {
        let now = chrono::Utc::now().timestamp_micros();
        for f in files_under(&root) {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".part") {
                continue;
            }
            if let Some(id) = name.split('.').next().filter(|id| id.starts_with("doc_")) {
                seen.entry(id.to_owned()).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    token.cancel();
    let stopped = daemon.await;
    let deliveries = sandbox.webhook_deliveries();
    sandbox.stop().await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(failed(format!("the daemon task failed: {e}"))),
    }
    if seen.len() < items {
        return Err(failed(format!(
            "{} of {items} documents mirrored",
            seen.len()
        )));
    }
    let mut latencies: Vec<f64> = deliveries
        .iter()
        .filter(|d| d.event == WEBHOOK_EVENTS[0])
        .filter_map(|d| {
            let published = seen.get(d.document_id.as_deref()?)?;
            Some((published - d.completed_us) as f64 / 1e6)
        })
        .collect();
    if latencies.len() < items {
        return Err(failed(format!(
            "{} of {items} documents were delivered",
            latencies.len()
        )));
    }
    latencies.sort_by(f64::total_cmp);
    let p95 = latencies[(items * 95).div_ceil(100) - 1];
    println!(
        "{:<30}{:<13}p50 {:.3} s, p95 {p95:.3} s, max {:.3} s (completed -> published, cron never ticks)",
        format!("webhook latency, {items} items"),
        "batchmirror",
        latencies[items / 2],
        latencies[items - 1],
    );
    println!("  target p95 < 1 s: {}", verdict(p95 < 1.0));
    Ok(())
}

/// Every file under `root`, recursively (none while it does not exist yet).
fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
