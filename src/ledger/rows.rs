//! Conversions between SQLite columns and domain values: timestamps as INTEGER milliseconds since
//! the Unix epoch, ids re-validated on the way out, and the row shapes [`DueItem`] and
//! [`ItemRow`].

use chrono::{DateTime, Utc};
use rusqlite::Row;
use rusqlite::types::Type;

use super::ItemRow;
use crate::model::{BatchId, DueItem, ItemId, ItemState, ProviderName};

/// A timestamp as stored: milliseconds since the Unix epoch.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

fn conversion(col: usize, ty: Type, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, ty, message.into())
}

/// A stored timestamp back as a `DateTime`; out-of-range values are a conversion error.
pub(crate) fn from_ms(col: usize, v: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| conversion(col, Type::Integer, format!("timestamp {v} ms out of range")))
}

pub(crate) fn ts(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    row.get::<_, Option<i64>>(col)?
        .map(|v| from_ms(col, v))
        .transpose()
}

pub(crate) fn parsed<T>(
    row: &Row<'_>,
    col: usize,
    parse: fn(&str) -> Result<T, String>,
) -> rusqlite::Result<T> {
    let s: String = row.get(col)?;
    parse(&s).map_err(|e| conversion(col, Type::Text, e))
}

fn attempts(row: &Row<'_>, col: usize) -> rusqlite::Result<u32> {
    let n: i64 = row.get(col)?;
    u32::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(col, n))
}

/// Decodes `provider, batch_id, item_id, deadline, attempts, locator`.
pub(crate) fn due_item(row: &Row<'_>) -> rusqlite::Result<DueItem> {
    Ok(DueItem {
        provider: parsed(row, 0, ProviderName::parse)?,
        batch: parsed(row, 1, BatchId::parse)?,
        item: parsed(row, 2, ItemId::parse)?,
        deadline: ts(row, 3)?,
        attempts: attempts(row, 4)?,
        locator: row.get(5)?,
    })
}

/// The columns [`item_row`] decodes, in order.
pub(crate) const ITEM_COLUMNS: &str = "provider, batch_id, item_id, remote_status, state, deadline, \
     attempts, next_attempt_at, bytes, sha256, path, last_error";

pub(crate) fn item_row(row: &Row<'_>) -> rusqlite::Result<ItemRow> {
    let state: String = row.get(4)?;
    let bytes: Option<i64> = row.get(8)?;
    Ok(ItemRow {
        provider: row.get(0)?,
        batch: row.get(1)?,
        item: row.get(2)?,
        remote_status: row.get(3)?,
        state: ItemState::parse(&state)
            .ok_or_else(|| conversion(4, Type::Text, format!("unknown item state {state:?}")))?,
        deadline: ts(row, 5)?,
        attempts: attempts(row, 6)?,
        next_attempt_at: ts(row, 7)?,
        bytes: bytes
            .map(|b| u64::try_from(b).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(8, b)))
            .transpose()?,
        sha256: row.get(9)?,
        path: row.get(10)?,
        last_error: row.get(11)?,
    })
}
