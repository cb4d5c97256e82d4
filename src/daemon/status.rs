//! `batchmirror status`: the ledger summarised per provider and state, with the items at risk;
//! `status --items`: the items themselves, filtered ([`StatusReport::items`]).
//!
//! Reads the ledger read-only and without the lock, so it works while the daemon runs.

use std::fmt::Write;

use chrono::Utc;
use serde::Serialize;

use crate::config::Settings;
use crate::error::{ConfigError, Error};
use crate::ledger::{ItemRow, Ledger, UploadState};
use crate::model::{ItemFilter, ItemState, ProviderName, ProviderSummary};
use crate::telemetry::escape_controls;

/// Most at-risk items, and most deferred items, listed by `status`.
const AT_RISK_SHOWN: usize = 20;

/// An item whose last attempt failed and whose next one is still to come.
#[derive(Debug, Clone, Serialize)]
pub struct DeferredItem {
    pub provider: String,
    pub batch: String,
    pub item: String,
    pub next_attempt_at: Option<chrono::DateTime<Utc>>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub deadline: Option<chrono::DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AtRiskItem {
    pub provider: String,
    pub batch: String,
    pub item: String,
    pub deadline: Option<chrono::DateTime<Utc>>,
}

/// Where a provider's listing walk stands (see [`crate::model::Walk`]).
#[derive(Debug, Clone, Serialize)]
pub struct ListingStatus {
    pub provider: String,
    pub walk: i64,
    /// `running`, `failed` (resumes where it stopped on the next pass) or `complete`.
    pub state: &'static str,
    /// Pages this walk has read so far.
    pub pages: u64,
    /// The newest walk that reached the end of the listing.
    pub complete_through: Option<i64>,
    /// For providers listed by update time: the `since` of the next walk.
    pub next_since: Option<chrono::DateTime<Utc>>,
    pub updated_at: chrono::DateTime<Utc>,
    pub last_error: Option<String>,
}

/// What `status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub ledger: String,
    /// False when no pass has created the ledger yet.
    pub ledger_exists: bool,
    pub providers: Vec<ProviderSummary>,
    pub at_risk_items: Vec<AtRiskItem>,
    /// Each provider's listing walk, once one has been recorded.
    pub listings: Vec<ListingStatus>,
    /// Ready items deferred by a failed attempt, all providers.
    pub deferred: u64,
    /// The first of them, soonest next attempt first.
    pub deferred_items: Vec<DeferredItem>,
    /// Drop-folder uploads per state (submitting, waiting, accepted, delivered, failed,
    /// rejected), when `[dropfolder]` is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropfolder: Option<std::collections::BTreeMap<String, u64>>,
}

/// One item as `status --items` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedItem {
    pub provider: String,
    pub batch: String,
    pub item: String,
    /// The ledger state (`ready` for a deferred item: see `next_attempt_at`).
    pub state: &'static str,
    pub deadline: Option<chrono::DateTime<Utc>>,
    /// The result's size once mirrored.
    pub bytes: Option<u64>,
    pub attempts: u32,
    /// Set while the item waits for another attempt after a failed one.
    pub next_attempt_at: Option<chrono::DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// What `status --items` prints: how many items matched, and the first `limit` of them.
#[derive(Debug, Clone, Serialize)]
pub struct ItemsReport {
    pub ledger: String,
    pub ledger_exists: bool,
    /// `all`, a ledger state, `deferred` or `at-risk`.
    pub filter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Items matching, all of them.
    pub count: u64,
    pub limit: usize,
    pub items: Vec<ListedItem>,
}

/// Summarises the ledger named by `settings`.
pub async fn status(settings: &Settings) -> Result<StatusReport, Error> {
    let names: Vec<_> = settings
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.kind.as_str().to_owned()))
        .collect();
    let ledger_path = settings.ledger_path.display().to_string();
    if !settings.ledger_path.exists() {
        let providers = names
            .iter()
            .map(|(n, k)| ProviderSummary {
                name: n.to_string(),
                kind: k.clone(),
                items: ItemState::ALL
                    .iter()
                    .map(|s| (s.as_str().to_owned(), 0))
                    .collect(),
                ..ProviderSummary::default()
            })
            .collect();
        return Ok(StatusReport {
            ledger: ledger_path,
            ledger_exists: false,
            providers,
            at_risk_items: vec![],
            listings: vec![],
            deferred: 0,
            deferred_items: vec![],
            dropfolder: settings.dropfolder.as_ref().map(|_| upload_states(&[])),
        });
    }
    let ledger = Ledger::open_read_only(&settings.ledger_path)?;
    let now = Utc::now();
    let margin = settings.download.alert_margin;
    let providers = ledger.summary(&names, now, margin).await?;
    let at_risk_items = ledger
        .at_risk(now, margin, AT_RISK_SHOWN)
        .await?
        .into_iter()
        .map(|d| AtRiskItem {
            provider: d.provider.to_string(),
            batch: d.batch.to_string(),
            item: d.item.to_string(),
            deadline: d.deadline,
        })
        .collect();
    let configured: Vec<_> = names.iter().map(|(n, _)| n.clone()).collect();
    let mut listings = Vec::new();
    for name in &configured {
        if let Some(w) = ledger.walk(name).await? {
            listings.push(ListingStatus {
                provider: name.to_string(),
                walk: w.walk,
                state: w.state.as_str(),
                pages: w.pages,
                complete_through: w.complete_through,
                next_since: w.complete_since,
                updated_at: w.updated_at,
                last_error: w.last_error,
            });
        }
    }
    let deferred = ledger.deferred(&configured, now, AT_RISK_SHOWN).await?;
    let deferred_items = deferred
        .first
        .into_iter()
        .map(|r| DeferredItem {
            provider: r.provider,
            batch: r.batch,
            item: r.item,
            next_attempt_at: r.next_attempt_at,
            attempts: r.attempts,
            last_error: r.last_error,
            deadline: r.deadline,
        })
        .collect();
    let dropfolder = match &settings.dropfolder {
        Some(_) => Some(upload_states(&ledger.upload_counts().await?)),
        None => None,
    };
    Ok(StatusReport {
        ledger: ledger_path,
        ledger_exists: true,
        providers,
        at_risk_items,
        listings,
        deferred: deferred.count,
        deferred_items,
        dropfolder,
    })
}

pub(super) fn listed_item(r: ItemRow) -> ListedItem {
    ListedItem {
        provider: r.provider,
        batch: r.batch,
        item: r.item,
        state: r.state.as_str(),
        deadline: r.deadline,
        bytes: r.bytes,
        attempts: r.attempts,
        next_attempt_at: r.next_attempt_at,
        last_error: r.last_error,
    }
}

/// `items` as `status --items` shows them: a header, then one line per item, columns aligned. Ids
/// and errors come from providers: control characters are escaped so none can forge a line.
pub(super) fn item_table(out: &mut String, items: &[ListedItem]) {
    let now = Utc::now();
    let time = |t: Option<chrono::DateTime<Utc>>| {
        t.map_or("-".to_owned(), |t| {
            t.format("%Y-%m-%d %H:%M:%SZ").to_string()
        })
    };
    let mut rows = vec![
        [
            "provider",
            "batch",
            "item",
            "state",
            "deadline",
            "size",
            "last error",
        ]
        .map(str::to_owned),
    ];
    for i in items {
        let deferred = i.state == "ready" && i.next_attempt_at.is_some_and(|t| t > now);
        rows.push([
            escape_controls(&i.provider).into_owned(),
            escape_controls(&i.batch).into_owned(),
            escape_controls(&i.item).into_owned(),
            if deferred { "deferred" } else { i.state }.to_owned(),
            time(i.deadline),
            i.bytes
                .map_or("-".to_owned(), |b| indicatif::HumanBytes(b).to_string()),
            escape_controls(i.last_error.as_deref().unwrap_or("-")).into_owned(),
        ]);
    }
    let mut width = [0usize; 6];
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(width) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}{}", line, row[6]);
    }
}

impl ItemsReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// One line per item under a header (columns explained in `status --help`), then how many
    /// were left out by `--limit`. Ids and errors come from providers: control characters are
    /// escaped so none can forge a line.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if !self.ledger_exists {
            let _ = writeln!(out, "no ledger at {} yet: no items", self.ledger);
            return out;
        }
        item_table(&mut out, &self.items);
        let left_out = self.count.saturating_sub(self.items.len() as u64);
        if left_out > 0 {
            let _ = writeln!(
                out,
                "… {left_out} more of {} not shown (--limit {}): narrow with --state or \
                 --provider, or raise --limit",
                self.count, self.limit
            );
        } else {
            let _ = writeln!(out, "{} item(s)", self.count);
        }
        out
    }
}

/// Every upload state with its count (0 when absent).
fn upload_states(counts: &[(String, u64)]) -> std::collections::BTreeMap<String, u64> {
    UploadState::ALL
        .iter()
        .map(|s| {
            let n = counts
                .iter()
                .find(|(k, _)| k == s.as_str())
                .map_or(0, |(_, n)| *n);
            (s.as_str().to_owned(), n)
        })
        .collect()
}

impl StatusReport {
    /// `status --items`: the items of `provider` (else of every configured provider) matching
    /// `filter`, counted, and the first `limit`; at risk is `summary`'s (`download.alert_margin`).
    pub async fn items(
        settings: &Settings,
        filter: ItemFilter,
        provider: Option<&str>,
        limit: usize,
    ) -> Result<ItemsReport, Error> {
        let configured: Vec<ProviderName> =
            settings.providers.iter().map(|p| p.name.clone()).collect();
        let providers = match provider {
            None => configured,
            Some(p) => match configured.iter().find(|c| c.as_str() == p) {
                Some(c) => vec![c.clone()],
                None => {
                    let names: Vec<_> = configured.iter().map(|c| c.as_str()).collect();
                    return Err(ConfigError::invalid(
                        "--provider",
                        format!(
                            "no provider {p:?} is configured: use one of {}",
                            names.join(", ")
                        ),
                    )
                    .into());
                }
            },
        };
        let mut report = ItemsReport {
            ledger: settings.ledger_path.display().to_string(),
            ledger_exists: settings.ledger_path.exists(),
            filter: match filter {
                ItemFilter::All => "all".to_owned(),
                ItemFilter::State(s) => s.as_str().to_owned(),
                ItemFilter::Deferred => "deferred".to_owned(),
                ItemFilter::AtRisk => "at-risk".to_owned(),
            },
            provider: provider.map(str::to_owned),
            count: 0,
            limit,
            items: vec![],
        };
        if report.ledger_exists {
            let ledger = Ledger::open_read_only(&settings.ledger_path)?;
            let margin = settings.download.alert_margin;
            let listed = ledger
                .list_items(&providers, filter, Utc::now(), margin, limit)
                .await?;
            report.count = listed.count;
            report.items = listed.first.into_iter().map(listed_item).collect();
        }
        Ok(report)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A compact table for a person.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if !self.ledger_exists {
            let _ = writeln!(
                out,
                "no ledger at {} yet: run `batchmirror sync --once` or start the daemon",
                self.ledger
            );
        }
        let cols = ["pending", "ready", "mirrored", "failed", "lost", "skipped"];
        let _ = write!(out, "{:<16} {:<13}", "provider", "kind");
        for c in cols {
            let _ = write!(out, " {c:>9}");
        }
        let _ = writeln!(out, " {:>8}  last pass", "at risk");
        for p in &self.providers {
            let _ = write!(out, "{:<16} {:<13}", p.name, p.kind);
            for c in cols {
                let mut n = p.items.get(c).copied().unwrap_or(0);
                if c == "ready" {
                    n += p.items.get("downloading").copied().unwrap_or(0);
                }
                let _ = write!(out, " {n:>9}");
            }
            let last = p
                .last_pass_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_else(|| "never".into());
            let _ = writeln!(out, " {:>8}  {last}", p.at_risk);
            if let Some(e) = &p.last_error {
                let _ = writeln!(out, "  last error: {e}");
            }
            if let Some(x) = p
                .pace
                .filter(|x| x.per_minute.is_some() || x.throttles > 0 || x.waited_secs > 0.0)
            {
                let cap = x
                    .per_minute
                    .map_or("uncapped".to_owned(), |r| format!("capped at {r:.0}/min"));
                let _ = writeln!(
                    out,
                    "  pacing: {cap}; {} throttle(s) and {:.1}s waiting since start",
                    x.throttles, x.waited_secs
                );
            }
            let walk = self.listings.iter().find(|l| l.provider == p.name);
            if let Some(l) = walk.filter(|l| l.state != "complete") {
                let _ = writeln!(
                    out,
                    "  listing incomplete: walk {} {} after {} page(s); the next pass resumes there{}",
                    l.walk,
                    l.state,
                    l.pages,
                    l.last_error
                        .as_deref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
            }
        }
        if let Some(d) = &self.dropfolder {
            let parts: Vec<String> = d.iter().map(|(k, v)| format!("{v} {k}")).collect();
            let _ = writeln!(out, "\ndrop folder uploads: {}", parts.join(", "));
        }
        if self.deferred > 0 {
            let _ = writeln!(
                out,
                "\ndeferred ({} item(s) whose last attempt failed; next attempt, attempts, last error):",
                self.deferred
            );
            for i in &self.deferred_items {
                let next = i
                    .next_attempt_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                    .unwrap_or_default();
                let error = i.last_error.as_deref().unwrap_or("-");
                let _ = writeln!(
                    out,
                    "  {}/{}/{}  {next}  {}  {error}",
                    i.provider, i.batch, i.item, i.attempts
                );
            }
            let more = self
                .deferred
                .saturating_sub(self.deferred_items.len() as u64);
            if more > 0 {
                let _ = writeln!(out, "  … and {more} more");
            }
        }
        if !self.at_risk_items.is_empty() {
            let _ = writeln!(out, "\nat risk (deadline within the alert margin):");
            let now = Utc::now();
            for i in &self.at_risk_items {
                let left = i
                    .deadline
                    .map(|d| {
                        let secs = (d - now).num_seconds();
                        if secs <= 0 {
                            "past deadline".to_owned()
                        } else {
                            format!(
                                "{} left",
                                humantime::format_duration(std::time::Duration::from_secs(
                                    secs as u64
                                ))
                            )
                        }
                    })
                    .unwrap_or_default();
                let _ = writeln!(out, "  {}/{}/{}  {left}", i.provider, i.batch, i.item);
            }
        }
        out
    }
}
