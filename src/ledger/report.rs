//! The ledger's read side for reports: per-provider summaries, items at risk, the items a pass
//! leaves due but not mirrored and the deferred ones, single rows and row listings (`status`,
//! metrics, alerts, pass reports, tests), the item listings of `status --items`, and the
//! on-demand integrity check.
//!
//! Every listing is a count and a first page, both served by an index (`status` over a ledger of
//! a million items must stay fast): the primary key for all items, `items_provider_state` or
//! `items_due` for one state and the at-risk items, `items_deferred` for the deferred ones.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ToSql};

use super::queries::{NOT_FINAL, limit_i64};
use super::rows::{ITEM_COLUMNS, item_row, ms};
use super::{ItemRow, Ledger, duration_ms, reads};
use crate::error::LedgerError;
use crate::model::{
    BatchId, DueItem, ItemFilter, ItemId, ItemState, ProviderName, ProviderSummary,
};

/// How many rows a listing matched, and the first of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listed {
    pub count: u64,
    pub first: Vec<ItemRow>,
}

/// Rows of the named providers matching `filter`, counted, and the first `limit` in `order`.
/// In `filter`, `?1` is the providers (a JSON array) and `?2`… are `args`.
pub(super) fn listed(
    conn: &Connection,
    providers: &[String],
    filter: &str,
    args: &[i64],
    order: &str,
    limit: usize,
) -> rusqlite::Result<Listed> {
    let names = serde_json::to_string(providers).unwrap_or_else(|_| "[]".into());
    let limit = limit_i64(limit);
    let mut bound: Vec<&dyn ToSql> = vec![&names];
    bound.extend(args.iter().map(|a| a as &dyn ToSql));
    let (count_sql, first_sql) = listed_sql(filter, order, bound.len() + 1);
    let count: i64 = conn
        .prepare_cached(&count_sql)?
        .query_row(&bound[..], |r| r.get(0))?;
    bound.push(&limit);
    let first = conn
        .prepare_cached(&first_sql)?
        .query_map(&bound[..], item_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Listed {
        count: u64::try_from(count).unwrap_or(0),
        first,
    })
}

/// The count and first-page statements of [`listed`]; the limit is parameter `?{limit_at}`.
fn listed_sql(filter: &str, order: &str, limit_at: usize) -> (String, String) {
    let scope = format!("provider IN (SELECT value FROM json_each(?1)) AND ({filter})");
    (
        format!("SELECT COUNT(*) FROM items WHERE {scope}"),
        format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE {scope} ORDER BY {order} LIMIT ?{limit_at}"
        ),
    )
}

/// The filter, order and arguments for [`listed`] of `status --items`; `now` and `horizon`
/// (now + the alert margin) in ms.
fn item_listing(filter: ItemFilter, now: i64, horizon: i64) -> (String, &'static str, Vec<i64>) {
    let by_deadline = "deadline, provider, batch_id, item_id";
    match filter {
        ItemFilter::All => ("1".to_owned(), "provider, batch_id, item_id", vec![]),
        // A fixed word of ItemState, not input: safe to write into the statement.
        ItemFilter::State(s) => (format!("state = '{}'", s.as_str()), by_deadline, vec![]),
        ItemFilter::Deferred => (DEFERRED.to_owned(), DEFERRED_ORDER, vec![now]),
        // `summary`'s at-risk: not final, deadline at or before now + the alert margin.
        ItemFilter::AtRisk => (
            format!("state IN {NOT_FINAL} AND deadline <= ?2"),
            by_deadline,
            vec![horizon],
        ),
    }
}

/// Due but not mirrored as a pass ends at `?2`: deferred (ready, its next attempt still to
/// come), due and within the alert margin of its deadline or past it (`?3` = now + margin), or
/// ended failed or lost since the drain began (`?4`).
const UNMIRRORED: &str = "(state = 'ready' AND next_attempt_at > ?2)
     OR (state IN ('ready', 'downloading') AND deadline <= ?3)
     OR (state IN ('failed', 'lost') AND updated_at >= ?4)";

/// Ready items whose next attempt is after `?2`.
const DEFERRED: &str = "state = 'ready' AND next_attempt_at > ?2";
/// Soonest next attempt first.
const DEFERRED_ORDER: &str = "next_attempt_at, provider, batch_id, item_id";

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
        self.run(move |c| listed(c, &providers, DEFERRED, &[now], DEFERRED_ORDER, limit))
            .await
    }

    /// Items of `providers` matching `filter` (`status --items`), counted, and the first
    /// `limit`: soonest deadline first (deferred: soonest next attempt), every item in key order.
    /// At risk means within `margin` of its deadline at `now`, or past it.
    pub async fn list_items(
        &self,
        providers: &[ProviderName],
        filter: ItemFilter,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        let providers: Vec<String> = providers.iter().map(|p| p.as_str().to_owned()).collect();
        let horizon = ms(now).saturating_add(duration_ms(margin));
        let (filter, order, args) = item_listing(filter, ms(now), horizon);
        self.run(move |c| listed(c, &providers, &filter, &args, order, limit))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each listing of `status --items` (and the deferred one) finds its rows through an index,
    /// counted and paged, never by reading the whole table.
    #[tokio::test]
    async fn every_item_listing_searches_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
        let listing = |filter, key| {
            let (filter, order, _) = item_listing(filter, 0, 0);
            (filter, order, key)
        };
        // What the index search must be keyed on (`|`: any of, the planner picks by the table's
        // statistics), so only matching rows are read.
        let listings = [
            listing(ItemFilter::All, "(provider=?)"),
            listing(ItemFilter::State(ItemState::Lost), "state=?"),
            listing(ItemFilter::State(ItemState::Mirrored), "state=?"),
            listing(ItemFilter::AtRisk, "deadline<?"),
            listing(ItemFilter::Deferred, "items_deferred|state=?"),
        ];
        for (filter, order, key) in listings {
            let (count, first) = listed_sql(&filter, order, 3);
            for sql in [count, first] {
                let plan: Vec<String> = ledger
                    .run(move |c| {
                        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                        let unbound = vec![rusqlite::types::Null; st.parameter_count()];
                        st.query_map(rusqlite::params_from_iter(unbound), |r| {
                            r.get::<_, String>(3)
                        })?
                        .collect()
                    })
                    .await
                    .unwrap();
                assert!(
                    plan.iter().any(|l| l.starts_with("SEARCH items USING")
                        && key.split('|').any(|k| l.contains(k))),
                    "{filter}: {plan:?}"
                );
                assert!(
                    !plan.iter().any(|l| l.starts_with("SCAN items")),
                    "{filter}: {plan:?}"
                );
            }
        }
    }
}
