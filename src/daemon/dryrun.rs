//! `sync --once --dry-run`: list every provider and plan the pass, then say what it would fetch
//! and what it would lose, without fetching or writing anything.
//!
//! The listing writes rows, so it runs against a throwaway copy of the ledger in a temporary
//! directory ([`crate::ledger::snapshot_into`]), never the real one: the real ledger is only read
//! (without its lock, so a dry run works while the daemon runs). Nothing of a real pass's other
//! side effects happens: no start-up recovery, no preflight write probes, no downloads, no drop
//! folder, no alerts; nothing is created under `storage.root`. The listing requests themselves
//! do go to the providers: that is the "list" of "list and plan".

use std::fmt::Write;

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::pass::listing_error;
use super::status::{ListedItem, item_table, listed_item};
use crate::config::Settings;
use crate::error::{Error, LedgerError, ProviderError};
use crate::ledger::{Ledger, Plan, snapshot_into};
use crate::model::{ProviderName, no_observer};
use crate::provider;
use crate::sync::{self, ListError};
use crate::telemetry::escape_controls;

/// Items listed per section (would fetch, would lose); the rest are counted, as `status --items`
/// does by default.
const SHOWN: usize = 1000;

/// One provider's listing in the dry run.
#[derive(Debug, Clone, Serialize)]
pub struct DryListing {
    pub provider: String,
    /// Why the listing did not finish, if it did not.
    pub error: Option<String>,
    /// Entries the provider answered that the adapter refused.
    pub refused: usize,
    pub batches: u64,
    pub items: u64,
}

impl DryListing {
    fn failed(&self) -> bool {
        self.error.is_some() || self.refused > 0
    }
}

/// What a dry run found: the listing of each provider and the plan of the pass.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The real ledger the plan started from (only read).
    pub ledger: String,
    /// False when no pass has created the ledger yet: the plan starts from an empty one.
    pub ledger_exists: bool,
    pub listings: Vec<DryListing>,
    /// Items the pass would fetch, all of them, and the first [`SHOWN`], earliest deadline first.
    pub would_fetch: u64,
    /// The known sizes of all of them summed (listings rarely carry a size).
    pub would_fetch_bytes: u64,
    pub fetch: Vec<ListedItem>,
    /// Items not mirrored whose deadline has passed, and the first [`SHOWN`].
    pub would_lose: u64,
    pub lose: Vec<ListedItem>,
    /// Not finished at the provider yet.
    pub not_ready: u64,
    /// Waiting for their next attempt after a failed one: not fetched this pass.
    pub deferred: u64,
    /// Marked lost by earlier passes (they reported it then).
    pub lost_before: u64,
}

/// Lists every provider into a copy of the ledger and reads the plan back; the copy is deleted
/// before returning. `cancel` stops the listings (each then reports "cancelled").
pub async fn dry_run(settings: &Settings, cancel: &CancellationToken) -> Result<DryRun, Error> {
    let real = settings.ledger_path.clone();
    let ledger_exists = real.exists();
    let dir = tempfile::Builder::new()
        .prefix("batchmirror-dry-run-")
        .tempdir()
        .map_err(|source| LedgerError::Io {
            path: std::env::temp_dir(),
            action: "create a directory for the dry run's copy of the ledger",
            source,
        })?;
    let copy_path = dir.path().join("ledger.db");
    let copy = {
        let (real, copy_path) = (real.clone(), copy_path.clone());
        tokio::task::spawn_blocking(move || {
            snapshot_into(&real, &copy_path)?;
            Ledger::open(&copy_path)
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))??
    };
    let planned = plan(settings, &copy, cancel).await;
    // The copy's connection closes before its directory goes.
    drop(copy);
    if let Err(e) = dir.close() {
        tracing::warn!(path = %copy_path.display(), "could not delete the dry run's ledger copy: {e}");
    }
    let (listings, plan) = planned?;
    Ok(DryRun {
        ledger: real.display().to_string(),
        ledger_exists,
        listings,
        would_fetch: plan.fetch.count,
        would_fetch_bytes: plan.fetch_bytes,
        fetch: plan.fetch.first.into_iter().map(listed_item).collect(),
        would_lose: plan.lose.count,
        lose: plan.lose.first.into_iter().map(listed_item).collect(),
        not_ready: plan.not_ready,
        deferred: plan.deferred,
        lost_before: plan.lost_before,
    })
}

/// The listing phase of [`super::Mirror::pass`] on `copy`, then the plan.
async fn plan(
    settings: &Settings,
    copy: &Ledger,
    cancel: &CancellationToken,
) -> Result<(Vec<DryListing>, Plan), Error> {
    // No observer: a dry run raises no alerts and moves no metrics.
    let providers = settings
        .providers
        .iter()
        .map(|p| provider::build(p, &settings.download, no_observer()))
        .collect::<Result<Vec<_>, _>>()?;
    // The pace a provider taught earlier runs holds for a dry run's requests too.
    for p in &providers {
        if let Some(per_minute) = copy.pace(p.name()).await?.and_then(|x| x.per_minute) {
            p.restore_pace(per_minute);
        }
    }
    let observer = no_observer();
    let listed = futures_util::future::join_all(providers.iter().map(|p| {
        let observer = observer.clone();
        async move {
            let result = tokio::select! {
                r = sync::list_provider(p.as_ref(), copy, observer.as_ref()) => r,
                () = cancel.cancelled() => Err(ListError::Provider(ProviderError::Cancelled)),
            };
            (p.name().clone(), result)
        }
    }))
    .await;
    let mut listings = Vec::with_capacity(listed.len());
    for (name, result) in listed {
        let (error, report) = match result {
            Ok(r) => (None, r),
            Err(ListError::Other(e)) => return Err(e),
            Err(ListError::Provider(e)) => {
                (Some(listing_error(settings, &name, &e)), Default::default())
            }
        };
        listings.push(DryListing {
            provider: name.to_string(),
            error,
            refused: report.rejected.len(),
            batches: report.batches,
            items: report.items,
        });
    }
    let names: Vec<ProviderName> = providers.iter().map(|p| p.name().clone()).collect();
    let plan = copy.plan(&names, Utc::now(), SHOWN).await?;
    Ok((listings, plan))
}

impl DryRun {
    /// Providers whose listing failed or refused entries.
    pub fn listing_errors(&self) -> usize {
        self.listings.iter().filter(|l| l.failed()).count()
    }

    /// 0 when every listing succeeded and nothing would be lost, else 1: the part of
    /// `sync --once`'s rule a plan can know before any download.
    pub fn exit_code(&self) -> i32 {
        if self.would_lose == 0 && self.listing_errors() == 0 {
            0
        } else {
            1
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The header, each listing, the items to fetch and to lose (the first [`SHOWN`] of each),
    /// then the totals line.
    pub fn render_text(&self) -> String {
        let mut out = String::from("dry run: nothing was fetched or written; ");
        if self.ledger_exists {
            let _ = writeln!(out, "planned on a copy of the ledger {}", self.ledger);
        } else {
            let _ = writeln!(
                out,
                "no ledger at {} yet: planned from an empty one",
                self.ledger
            );
        }
        for l in &self.listings {
            let provider = escape_controls(&l.provider);
            match &l.error {
                Some(e) => {
                    let _ = writeln!(out, "listing {provider}: FAILED: {}", escape_controls(e));
                }
                None => {
                    let _ = write!(
                        out,
                        "listing {provider}: ok, {} batch(es), {} item(s)",
                        l.batches, l.items
                    );
                    if l.refused > 0 {
                        let _ = write!(out, ", {} entries refused (see the log)", l.refused);
                    }
                    out.push('\n');
                }
            }
        }
        section(
            &mut out,
            "would fetch (earliest deadline first)",
            &self.fetch,
            self.would_fetch,
        );
        section(
            &mut out,
            "would lose (not mirrored, past the deadline: the provider may have deleted them)",
            &self.lose,
            self.would_lose,
        );
        let _ = write!(
            out,
            "would fetch {} ({:.1} MB known), would lose {}, not ready {}, listing errors {}",
            self.would_fetch,
            self.would_fetch_bytes as f64 / 1e6,
            self.would_lose,
            self.not_ready,
            self.listing_errors()
        );
        if self.deferred > 0 {
            let _ = write!(out, ", deferred {}", self.deferred);
        }
        if self.lost_before > 0 {
            let _ = write!(out, ", lost in earlier passes {}", self.lost_before);
        }
        out.push('\n');
        out
    }
}

/// A titled table of `items` and how many of `count` it leaves out; nothing when `count` is 0.
fn section(out: &mut String, title: &str, items: &[ListedItem], count: u64) {
    if count == 0 {
        return;
    }
    let _ = writeln!(out, "{title}:");
    item_table(out, items);
    let more = count.saturating_sub(items.len() as u64);
    if more > 0 {
        let _ = writeln!(out, "… and {more} more");
    }
}
