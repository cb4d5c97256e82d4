//! `batchmirror demo`: starts a bundled sandbox on loopback for each provider in
//! `config/demo.toml` (one per supported API), mirrors them all into `./demo-mirror` pass by pass
//! while their running batches finish, and sums up; then shows webhooks mirroring documents
//! within a second of completing under an hourly schedule.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config;
use crate::daemon::Mirror;
use crate::error::Error;
use batchmirror_sandbox::{self as sandbox, Generated};

/// The demo's config, embedded so `demo` needs no file.
const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");
/// Longest the demo waits for the sandbox's running batch to finish.
const DEMO_TIME_LIMIT: Duration = Duration::from_secs(60);

/// What the demo did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub mirrored: u64,
    pub lost: u64,
    pub failed: u64,
    pub skipped: u64,
    pub bytes: u64,
    pub passes: u32,
    pub elapsed: Duration,
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mirrored {} / lost {} / failed {} / {:.1} MB in {:.1}s ({} passes; {} items failed at the provider, nothing to mirror)",
            self.mirrored,
            self.lost,
            self.failed,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.passes,
            self.skipped
        )
    }
}

/// Runs the demo in `dir` (the mirror goes to `dir/demo-mirror`, replacing an earlier demo's).
pub async fn demo(dir: &Path, cancel: CancellationToken) -> Result<DemoSummary, Error> {
    let mut settings = config::load_str(DEMO_CONFIG, "config/demo.toml", &HashMap::new())?;
    let root = dir.join("demo-mirror");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|source| Error::Local {
            action: "cannot remove the previous demo at",
            path: root.clone(),
            hint: "remove it by hand, or run the demo from another directory",
            source,
        })?;
        println!("removed the previous demo's {}", root.display());
    }
    settings.storage_root = root.clone();
    settings.ledger_path = root.join(".batchmirror").join("ledger.sqlite3");
    super::demo_drop::rebase(&mut settings, &root);
    // One generated sandbox account per configured provider, each on its own loopback port.
    let mut sandboxes = Vec::new();
    for p in &mut settings.providers {
        let kind = p.kind.as_str();
        // extract.page gets the big account (three listing pages); the others a small one each,
        // so PerfectParser's documented 150 requests/min is enough for the whole demo.
        let big = kind == "extract_page";
        let generated = Generated {
            batches: if big { 30 } else { 5 },
            items_per_batch: if big { 10 } else { 6 },
            result_bytes: 16 * 1024,
            seed: 7,
            api_key: p.api_key.expose().to_owned(),
            faults: Vec::new(),
            fault_rate: 0.0,
        };
        let sandbox = sandbox::start_generated(kind, &generated, ([127, 0, 0, 1], 0).into())
            .await
            .map_err(|e| Error::Sandbox {
                kind: kind.to_owned(),
                reason: format!("cannot start: {e}"),
            })?;
        p.base_url = sandbox.base_url().parse().map_err(|e| Error::Sandbox {
            kind: kind.to_owned(),
            reason: format!("its base URL {:?} does not parse: {e}", sandbox.base_url()),
        })?;
        println!(
            "{kind} sandbox for provider {:?} listening on {}",
            p.name.as_str(),
            sandbox.base_url()
        );
        sandboxes.push(sandbox);
    }
    println!("mirroring into {}", root.display());
    println!(
        "each sandbox account has one batch already past its retention: its items are reported \
         LOST below, exactly as for a real account; one batch per account is still running"
    );
    let names: Vec<_> = settings
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.kind.as_str().to_owned()))
        .collect();
    let mirror = Mirror::open(settings).await?;
    let started = Instant::now();
    let mut summary = DemoSummary::default();
    let mut dropped = super::demo_drop::DemoDrop::start(&mirror, &cancel)?;
    loop {
        if let Some(d) = &dropped {
            d.trigger.set_running(true);
        }
        let pass = mirror.pass(&cancel).await;
        if let Some(d) = &dropped {
            d.trigger.set_running(false);
        }
        let pass = pass?;
        if let Some((name, Err(e))) = pass
            .providers
            .iter()
            .map(|p| (&p.name, &p.listing))
            .find(|(_, l)| l.is_err())
        {
            return Err(Error::Sandbox {
                kind: name.clone(),
                reason: format!("the demo could not list it: {e}"),
            });
        }
        summary.passes += 1;
        summary.bytes += pass.download.bytes;
        let s = mirror
            .ledger()
            .summary(&names, chrono::Utc::now(), Duration::ZERO)
            .await?;
        let count = |k: &str| {
            s.iter()
                .map(|p| p.items.get(k).copied().unwrap_or(0))
                .sum::<u64>()
        };
        let total: u64 = s.iter().flat_map(|p| p.items.values()).sum();
        summary.mirrored = count("mirrored");
        summary.lost = count("lost");
        summary.failed = count("failed");
        summary.skipped = count("skipped");
        let waiting = count("pending") + count("ready") + count("downloading");
        println!(
            "pass {}: {}/{} mirrored, {} lost (expired at the provider), {} still running there, {:.1} MB so far",
            summary.passes,
            summary.mirrored,
            total,
            summary.lost,
            waiting,
            summary.bytes as f64 / 1e6
        );
        // Give the drop folder a moment to copy the result once its job is mirrored.
        let returned = dropped.as_mut().is_none_or(|d| d.check());
        if (waiting == 0 && returned)
            || cancel.is_cancelled()
            || started.elapsed() > DEMO_TIME_LIMIT
        {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = cancel.cancelled() => break,
        }
    }
    summary.elapsed = started.elapsed();
    if let Some(d) = dropped {
        if d.arrived.is_none() {
            println!("drop folder: the dropped document's result did not come back in time");
        }
        d.finish().await?;
    }
    for s in sandboxes {
        s.stop().await;
    }
    // The mirror above is done: its locks go before the webhook part starts its own daemon.
    drop(mirror);
    if !cancel.is_cancelled() {
        show_push(&root.join("webhook-demo")).await;
    }
    Ok(summary)
}

/// Webhooks: `run` on an hourly schedule mirrors documents within a second of their completion,
/// because the sandbox pushes a signed event. Best effort: the mirror above is the demo's result.
async fn show_push(dir: &Path) {
    println!(
        "webhooks: `run` with an hourly schedule, PerfectParser pushing signed events for 3 \
         documents completing in the next 2 s ({})",
        dir.display()
    );
    match super::push::mirror_by_webhook(dir, 3, 1.0, 0.5, "0 0 * * * *").await {
        Ok(got) => {
            for p in got {
                println!(
                    "  {}: mirrored {:.2} s after it completed (next cron tick: up to an hour)",
                    p.id, p.latency
                );
            }
        }
        Err(e) => println!("  the webhook part of the demo did not finish: {e}"),
    }
}
