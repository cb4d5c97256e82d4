//! PostgreSQL rows ↔ domain values: ids re-validated on the way out, timestamps as BIGINT ms
//! since the epoch (as in SQLite), and the row shapes `DueItem`, `ItemRow` and `Walk`.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::ledger::ItemRow;
use crate::model::{BatchId, DueItem, ItemId, ItemState, ProviderName, Walk, WalkState};

/// A row that does not decode, as a message naming the column.
pub(super) type Decoded<T> = Result<T, String>;

pub(super) fn from_ms(v: i64) -> Decoded<DateTime<Utc>> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| format!("timestamp {v} ms out of range"))
}

pub(super) fn opt_ts(v: Option<i64>) -> Decoded<Option<DateTime<Utc>>> {
    v.map(from_ms).transpose()
}

fn count(v: i64, col: &str) -> Decoded<u32> {
    u32::try_from(v).map_err(|_| format!("{col} {v} out of range"))
}

/// The columns [`due_item`] decodes, in order.
pub(super) const DUE_COLUMNS: &str = "provider, batch_id, item_id, deadline, attempts, locator";

pub(super) fn due_item(r: &Row) -> Decoded<DueItem> {
    Ok(DueItem {
        provider: ProviderName::parse(r.get(0))?,
        batch: BatchId::parse(r.get(1))?,
        item: ItemId::parse(r.get(2))?,
        deadline: opt_ts(r.get(3))?,
        attempts: count(r.get(4), "attempts")?,
        locator: r.get(5),
    })
}

/// The columns [`item_row`] decodes, in order.
pub(super) const ITEM_COLUMNS: &str = "provider, batch_id, item_id, remote_status, state, \
     deadline, attempts, next_attempt_at, bytes, sha256, path, last_error";

pub(super) fn item_row(r: &Row) -> Decoded<ItemRow> {
    let state: &str = r.get(4);
    let bytes: Option<i64> = r.get(8);
    Ok(ItemRow {
        provider: r.get(0),
        batch: r.get(1),
        item: r.get(2),
        remote_status: r.get(3),
        state: parse_state(state)?,
        deadline: opt_ts(r.get(5))?,
        attempts: count(r.get(6), "attempts")?,
        next_attempt_at: opt_ts(r.get(7))?,
        bytes: bytes
            .map(|b| u64::try_from(b).map_err(|_| format!("bytes {b} out of range")))
            .transpose()?,
        sha256: r.get(9),
        path: r.get(10),
        last_error: r.get(11),
    })
}

pub(super) fn parse_state(s: &str) -> Decoded<ItemState> {
    ItemState::parse(s).ok_or_else(|| format!("unknown item state {s:?}"))
}

/// The columns [`walk_row`] decodes, in order.
pub(super) const WALK_COLUMNS: &str = "walk, state, position, early_stop, since, \
     complete_through, complete_since, started_at, updated_at, pages, last_error";

pub(super) fn walk_row(r: &Row) -> Decoded<Walk> {
    let state: &str = r.get(1);
    Ok(Walk {
        walk: r.get(0),
        state: WalkState::parse(state).ok_or_else(|| format!("unknown walk state {state:?}"))?,
        position: r.get(2),
        early_stop: r.get(3),
        since: opt_ts(r.get(4))?,
        complete_through: r.get(5),
        complete_since: opt_ts(r.get(6))?,
        started_at: from_ms(r.get(7))?,
        updated_at: from_ms(r.get(8))?,
        pages: r.get::<_, i64>(9).max(0) as u64,
        last_error: r.get(10),
    })
}

/// A `usize` limit as a BIGINT.
pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
