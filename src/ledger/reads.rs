//! The ledger's read-only queries: cursors, open batches, in-flight rows, the status summary,
//! at-risk items and row listings. Each takes the connection [`Ledger`](super::Ledger) lends it
//! inside `spawn_blocking`; none writes, so all of them also work on a read-only ledger.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::ItemRow;
use super::queries::{NOT_FINAL, limit_i64};
use super::rows::{ITEM_COLUMNS, due_item, from_ms, item_row};
use crate::model::{BatchId, DueItem, ItemState, ProviderSummary};

type Result<T> = rusqlite::Result<T>;

/// Ids of the provider's batches not (yet) handled.
pub(crate) fn unhandled_batches(conn: &Connection, provider: &str) -> Result<Vec<BatchId>> {
    conn.prepare_cached(
        "SELECT batch_id FROM batches WHERE provider = ?1 AND handled = 0 ORDER BY batch_id",
    )?
    .query_map([provider], |r| {
        let s: String = r.get(0)?;
        BatchId::parse(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
    })?
    .collect()
}

pub(crate) fn cursor(conn: &Connection, provider: &str, scope: &str) -> Result<Option<String>> {
    conn.prepare_cached("SELECT cursor FROM cursors WHERE provider = ?1 AND scope = ?2")?
        .query_row(params![provider, scope], |r| r.get(0))
        .optional()
}

pub(crate) fn in_flight(conn: &Connection) -> Result<Vec<DueItem>> {
    conn.prepare_cached(
        "SELECT provider, batch_id, item_id, deadline, attempts, locator FROM items
         WHERE state = 'downloading' ORDER BY deadline IS NULL, deadline",
    )?
    .query_map([], due_item)?
    .collect()
}

pub(crate) fn summary(
    conn: &Connection,
    providers: &[(String, String)],
    now: i64,
    margin_ms: i64,
) -> Result<Vec<ProviderSummary>> {
    let horizon = now.saturating_add(margin_ms);
    let mut out = Vec::with_capacity(providers.len());
    for (name, kind) in providers {
        let mut items: BTreeMap<String, u64> = ItemState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        let mut counts = conn.prepare_cached(
            "SELECT state, COUNT(*) FROM items WHERE provider = ?1 GROUP BY state",
        )?;
        let rows = counts.query_map([name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (state, n) = row?;
            items.insert(state, u64::try_from(n).unwrap_or(0));
        }
        let (at_risk, earliest): (i64, Option<i64>) = conn
            .prepare_cached(&format!(
                "SELECT COALESCE(SUM(deadline <= ?2), 0), MIN(deadline) FROM items
                 WHERE provider = ?1 AND state IN {NOT_FINAL} AND deadline IS NOT NULL"
            ))?
            .query_row(params![name, horizon], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let pass: Option<(Option<i64>, Option<String>)> = conn
            .prepare_cached(
                "SELECT last_pass_at, last_error FROM provider_state WHERE provider = ?1",
            )?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (last_pass_at, last_error) = pass.unwrap_or_default();
        out.push(ProviderSummary {
            name: name.clone(),
            kind: kind.clone(),
            items,
            at_risk: u64::try_from(at_risk).unwrap_or(0),
            last_pass_at: last_pass_at.map(|v| from_ms(1, v)).transpose()?,
            last_error,
            oldest_unmirrored_deadline_secs: earliest.map(|d| (d - now).div_euclid(1000)),
            pace: super::pace::read(conn, name)?,
        });
    }
    Ok(out)
}

pub(crate) fn at_risk(conn: &Connection, horizon: i64, limit: usize) -> Result<Vec<DueItem>> {
    conn.prepare_cached(&format!(
        "SELECT provider, batch_id, item_id, deadline, attempts, locator FROM items
         WHERE state IN {NOT_FINAL} AND deadline <= ?1 ORDER BY deadline LIMIT ?2"
    ))?
    .query_map(params![horizon, limit_i64(limit)], due_item)?
    .collect()
}

pub(crate) fn item(
    conn: &Connection,
    provider: &str,
    batch: &str,
    item: &str,
) -> Result<Option<ItemRow>> {
    conn.prepare_cached(&format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3"
    ))?
    .query_row(params![provider, batch, item], item_row)
    .optional()
}

pub(crate) fn items_in_state(
    conn: &Connection,
    provider: &str,
    state: ItemState,
    limit: usize,
) -> Result<Vec<ItemRow>> {
    conn.prepare_cached(&format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE provider = ?1 AND state = ?2
         ORDER BY deadline, batch_id, item_id LIMIT ?3"
    ))?
    .query_map(
        params![provider, state.as_str(), limit_i64(limit)],
        item_row,
    )?
    .collect()
}

/// `PRAGMA quick_check`'s lines: exactly `["ok"]` for a sound file.
pub(crate) fn quick_check(conn: &Connection) -> Result<Vec<String>> {
    conn.prepare("PRAGMA quick_check")?
        .query_map([], |r| r.get(0))?
        .collect()
}
