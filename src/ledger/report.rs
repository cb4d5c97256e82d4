//! The ledger's read side for reports: per-provider summaries, items at risk, the items a pass
//! leaves due but not mirrored and the deferred ones, single rows and row listings (`status`,
//! metrics, alerts, pass reports, tests), and the on-demand integrity check.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ToSql};

use super::queries::limit_i64;
use super::rows::{ITEM_COLUMNS, item_row, ms};
use super::{ItemRow, Ledger, duration_ms, reads};
use crate::error::LedgerError;
use crate::model::{BatchId, DueItem, ItemId, ItemState, ProviderName, ProviderSummary};

/// How many rows a listing matched, and the first of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listed {
    pub count: u64,
    pub first: Vec<ItemRow>,
}

/// Rows of the named providers matching `filter`, counted, and the first `limit` in `order`.
/// In `filter`, `?1` is the providers (a JSON array) and `?2`… are `args`.
fn listed(
    conn: &Connection,
    providers: &[String],
    filter: &str,
    args: &[i64],
    order: &str,
    limit: usize,
) -> rusqlite::Result<Listed> {
    let names = serde_json::to_string(providers).unwrap_or_else(|_| "[]".into());
    let scope = format!("provider IN (SELECT value FROM json_each(?1)) AND ({filter})");
    let limit = limit_i64(limit);
    let mut bound: Vec<&dyn ToSql> = vec![&names];
    bound.extend(args.iter().map(|a| a as &dyn ToSql));
    let count: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM items WHERE {scope}"))?
        .query_row(&bound[..], |r| r.get(0))?;
    let at = bound.len() + 1;
    bound.push(&limit);
    let first = conn
        .prepare_cached(&format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE {scope} ORDER BY {order} LIMIT ?{at}"
        ))?
        .query_map(&bound[..], item_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Listed {
        count: u64::try_from(count).unwrap_or(0),
        first,
    })
}

/// Due but not mirrored as a pass ends at `?2`: deferred (ready, its next attempt still to
/// come), due and within the alert margin of its deadline or past it (`?3` = now + margin), or
/// ended failed or lost since the drain began (`?4`).
const UNMIRRORED: &str = "(state = 'ready' AND next_attempt_at > ?2)
     OR (state IN ('ready', 'downloading') AND deadline <= ?3)
     OR (state IN ('failed', 'lost') AND updated_at >= ?4)";

/// Ready items whose next attempt is after `?2`.
const DEFERRED: &str = "state = 'ready' AND next_attempt_at > ?2";

impl Ledger {
    /// Per provider (in the order given, kind alongside): counts per ItemState name (every state
    /// present), at_risk = non-final items with deadline <= now + `alert_margin` (passed ones
    /// included), seconds from now to the earliest non-final deadline (negative once passed; floor),
    /// last_pass_at and last_error.
    pub async fn summary(
        &self,
        providers: &[(ProviderName, String)],
        now: DateTime<Utc>,
        alert_margin: std::time::Duration,
    ) -> Result<Vec<ProviderSummary>, LedgerError> {
        let providers: Vec<(String, String)> = providers
            .iter()
            .map(|(p, k)| (p.as_str().to_owned(), k.clone()))
            .collect();
        let margin = duration_ms(alert_margin);
        self.run(move |c| reads::summary(c, &providers, ms(now), margin))
            .await
    }

    /// Non-final items whose deadline is within `margin` of now (or passed), earliest first, at
    /// most `limit`.
    pub async fn at_risk(
        &self,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        let horizon = ms(now).saturating_add(duration_ms(margin));
        self.run(move |c| reads::at_risk(c, horizon, limit)).await
    }

    /// Items of `providers` that a pass ending `now` leaves due but not mirrored: deferred to a
    /// later attempt, ready and within `margin` of their deadline (or past it), or failed or lost
    /// at or after `since` (the drain's start; earlier endings were reported by their own pass).
    /// Counted, and the first `limit` earliest deadline first.
    pub async fn unmirrored(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        let providers: Vec<String> = providers.iter().map(|p| p.as_str().to_owned()).collect();
        let horizon = ms(now).saturating_add(duration_ms(margin));
        let (now, since) = (ms(now), ms(since));
        self.run(move |c| {
            let order = "deadline IS NULL, deadline, provider, batch_id, item_id";
            listed(
                c,
                &providers,
                UNMIRRORED,
                &[now, horizon, since],
                order,
                limit,
            )
        })
        .await
    }

    /// Ready items of `providers` whose next attempt is after `now` (deferred by a failed
    /// attempt), counted, and the first `limit` soonest attempt first.
    pub async fn deferred(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        let providers: Vec<String> = providers.iter().map(|p| p.as_str().to_owned()).collect();
        let now = ms(now);
        self.run(move |c| {
            let order = "next_attempt_at, provider, batch_id, item_id";
            listed(c, &providers, DEFERRED, &[now], order, limit)
        })
        .await
    }

    /// One item's row, for tests and diagnostics.
    pub async fn item(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        item: &ItemId,
    ) -> Result<Option<ItemRow>, LedgerError> {
        let (p, b, i) = (
            provider.as_str().to_owned(),
            batch.as_str().to_owned(),
            item.as_str().to_owned(),
        );
        self.run(move |c| reads::item(c, &p, &b, &i)).await
    }

    /// Items of a provider in a state (earliest deadline first), for tests and status listings.
    pub async fn items_in_state(
        &self,
        provider: &ProviderName,
        state: ItemState,
        limit: usize,
    ) -> Result<Vec<ItemRow>, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| reads::items_in_state(c, &provider, state, limit))
            .await
    }

    /// `PRAGMA quick_check` on demand (opening already runs it): `["ok"]` when the file is sound,
    /// else SQLite's findings. Works on a read-only ledger.
    pub async fn quick_check(&self) -> Result<Vec<String>, LedgerError> {
        self.run(|c| reads::quick_check(c)).await
    }
}
