//! The push rig `bench` and `demo` share: the daemon (`run`, in-process) on schedule `cron`, a
//! PerfectParser sandbox whose webhook (registered through its `/v1/webhooks` API, as a user
//! would) points at the daemon's receiver, and documents completing one every `step` seconds from
//! `first` on. It watches the mirror and returns, per document, the seconds from "completed" at
//! the sandbox to its file published.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batchmirror_sandbox::perfectparser::{
    DocOutcome, DocumentSpec, ExtractionSpec, PerfectSandbox, PerfectSpec, WEBHOOK_EVENTS,
};
use tokio_util::sync::CancellationToken;

use crate::config;

const KEY: &str = "pp_live_push_rig";

/// One document mirrored because of a webhook.
pub(crate) struct Pushed {
    pub id: String,
    /// Seconds from "completed" at the sandbox to the file published.
    pub latency: f64,
    /// Seconds the receiver took to answer the delivery.
    pub answered: f64,
}

/// Mirrors `items` documents under `dir` while the daemon runs on `cron`, in completion order,
/// or why the run did not finish.
pub(crate) async fn mirror_by_webhook(
    dir: &Path,
    items: usize,
    first: f64,
    step: f64,
    cron: &str,
) -> Result<Vec<Pushed>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let documents = (0..items)
        .map(|k| DocumentSpec {
            id: format!("doc_{k:05}"),
            filename: format!("doc_{k:05}.pdf"),
            finishes_at: first + step * k as f64,
            outcome: DocOutcome::Completed,
            result_bytes: 4000,
            page_count: 1,
        })
        .collect();
    let extraction = ExtractionSpec {
        id: "ext_push".to_owned(),
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
    .map_err(|e| format!("cannot start the PerfectParser sandbox: {e}"))?;
    let result = drive(&sandbox, dir, items, first + step * items as f64, cron).await;
    sandbox.stop().await;
    result
}

async fn drive(
    sandbox: &PerfectSandbox,
    dir: &Path,
    items: usize,
    last_at: f64,
    cron: &str,
) -> Result<Vec<Pushed>, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))?
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
        .map_err(|e| format!("cannot register the webhook: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("cannot read the webhook: {e}"))?;
    let created: serde_json::Value =
        serde_json::from_slice(&created).map_err(|e| format!("the webhook: {e}"))?;
    let secret = created["webhook"]["signing_secret"]
        .as_str()
        .ok_or("no signing_secret in the created webhook")?;
    let text = format!(
        "[ledger]\npath = {ledger}\n[storage]\nroot = {root}\n[schedule]\ncron = {cron}\n\
         [webhook]\nlisten = \"127.0.0.1:{port}\"\n[[provider]]\nname = \"pp\"\n\
         kind = \"perfectparser\"\nbase_url = \"{base}\"\napi_key = \"{KEY}\"\n\
         webhook_secret = \"{secret}\"\n",
        ledger = config::toml_str(&dir.join("ledger.sqlite3").to_string_lossy()),
        root = config::toml_str(&dir.join("mirror").to_string_lossy()),
        cron = config::toml_str(cron),
        base = sandbox.base_url(),
    );
    let settings = config::load_str(&text, "push rig", &HashMap::new())
        .map_err(|e| format!("the rig's config does not load: {e}"))?;
    let token = CancellationToken::new();
    let daemon = tokio::spawn(crate::daemon::run(settings, token.clone()));
    let root = dir.join("mirror");
    let mut seen: HashMap<String, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_secs_f64(last_at);
    while seen.len() < items && Instant::now() < deadline && !daemon.is_finished() {
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
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("the daemon stopped: {e}")),
        Err(e) => return Err(format!("the daemon task failed: {e}")),
    }
    if seen.len() < items {
        return Err(format!("{} of {items} documents mirrored", seen.len()));
    }
    let deliveries = sandbox.webhook_deliveries();
    let latencies: Vec<Pushed> = deliveries
        .iter()
        .filter(|d| d.event == WEBHOOK_EVENTS[0])
        .filter_map(|d| {
            let id = d.document_id.clone()?;
            let published = seen.get(&id)?;
            Some(Pushed {
                latency: (published - d.completed_us) as f64 / 1e6,
                answered: d.answered_in?.as_secs_f64(),
                id,
            })
        })
        .collect();
    if latencies.len() < items {
        return Err(format!(
            "{} of {items} documents were delivered",
            latencies.len()
        ));
    }
    Ok(latencies)
}

/// Every file under `root`, recursively (none while it does not exist yet).
fn files_under(root: &Path) -> Vec<PathBuf> {
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
