//! The ledger's writing SQL: one synchronous function per domain operation that changes rows
//! (listing upserts, cursors, claims and download outcomes, pass records), each taking the
//! connection [`Ledger`](super::Ledger) lends it inside `spawn_blocking`. Multi-row changes run in
//! one `IMMEDIATE` transaction. Reads live in [`super::reads`], row decoding in [`super::rows`]; the
//! item-state merge rule is the pure [`merged_state`].

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::rows::{due_item, ms, opt_ms};
use crate::model::{DueItem, ItemState, Published, RemoteBatch, RemoteItem, RemoteStatus};

type Result<T> = rusqlite::Result<T>;

/// SQL list of the states that may still change (the complement of `ItemState::is_final`).
pub(crate) const NOT_FINAL: &str = "('pending', 'ready', 'downloading')";

/// The cursor scope of a batch's item change feed.
pub(crate) fn items_scope(batch: &str) -> String {
    format!("items:{batch}")
}

/// A `usize` limit as SQLite's `LIMIT` integer.
pub(crate) fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// The state an item ends in when a listing reports `remote` for it and the ledger holds `old`.
///
/// New items take the remote status's initial state. Final and `Downloading` items keep theirs (a
/// listing never regresses a mirrored or lost item, nor steals a claimed one). `Pending` follows the
/// provider; `Ready` stays ready unless the provider now says there is nothing to mirror.
pub(crate) fn merged_state(old: Option<ItemState>, remote: RemoteStatus) -> ItemState {
    let fresh = remote.initial_state();
    match old {
        None | Some(ItemState::Pending) => fresh,
        Some(ItemState::Ready) if fresh == ItemState::Skipped => ItemState::Skipped,
        Some(
            s @ (ItemState::Ready
            | ItemState::Downloading
            | ItemState::Mirrored
            | ItemState::Failed
            | ItemState::Lost
            | ItemState::Skipped),
        ) => s,
    }
}

const UPSERT_BATCH: &str = "
INSERT INTO batches (provider, batch_id, status, terminal, total_items, expires_at, created_at,
                     handled, seen_at, first_walk)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9)
ON CONFLICT (provider, batch_id) DO UPDATE SET
    first_walk = COALESCE(batches.first_walk, excluded.first_walk),
    handled = CASE WHEN batches.status = excluded.status
                    AND (excluded.total_items IS NULL OR excluded.total_items IS batches.total_items)
              THEN batches.handled ELSE 0 END,
    status = excluded.status,
    terminal = excluded.terminal,
    total_items = COALESCE(excluded.total_items, batches.total_items),
    expires_at = COALESCE(excluded.expires_at, batches.expires_at),
    created_at = COALESCE(excluded.created_at, batches.created_at),
    seen_at = excluded.seen_at";

/// Upserts one batch keyed by (`provider`, `batch`); returns whether it was handled before and
/// stays handled (status and known total unchanged). `walk` is the listing walk that sees it, kept
/// as its `first_walk` when it has none yet (`None` when it is not seen by a listing).
pub(crate) fn upsert_batch(
    tx: &Transaction<'_>,
    provider: &str,
    batch: &str,
    b: &RemoteBatch,
    walk: Option<i64>,
    now: i64,
) -> Result<bool> {
    let before: Option<(String, bool, Option<i64>)> = tx
        .prepare_cached(
            "SELECT status, handled, total_items FROM batches WHERE provider = ?1 AND batch_id = ?2",
        )?
        .query_row(params![provider, batch], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let total = b.total_items.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let still_handled = before.is_some_and(|(status, handled, old_total)| {
        handled && status == b.status.as_str() && (total.is_none() || total == old_total)
    });
    tx.prepare_cached(UPSERT_BATCH)?.execute(params![
        provider,
        batch,
        b.status.as_str(),
        b.status.is_terminal(),
        total,
        opt_ms(b.expires_at),
        opt_ms(b.created_at),
        now,
        walk,
    ])?;
    Ok(still_handled)
}

pub(crate) fn upsert_batches(
    conn: &mut Connection,
    provider: &str,
    batches: &[RemoteBatch],
    now: i64,
) -> Result<Vec<bool>> {
    let tx = immediate(conn)?;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        out.push(upsert_batch(&tx, provider, b.id.as_str(), b, None, now)?);
    }
    tx.commit()?;
    Ok(out)
}

fn save_cursor_in(tx: &Transaction<'_>, provider: &str, scope: &str, cursor: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO cursors (provider, scope, cursor) VALUES (?1, ?2, ?3)
         ON CONFLICT (provider, scope) DO UPDATE SET cursor = excluded.cursor",
    )?
    .execute(params![provider, scope, cursor])?;
    Ok(())
}

/// Saves (`Some`) or clears (`None`) a cursor on its own.
pub(crate) fn save_cursor(
    conn: &mut Connection,
    provider: &str,
    scope: &str,
    cursor: Option<&str>,
) -> Result<()> {
    let tx = immediate(conn)?;
    match cursor {
        Some(c) => save_cursor_in(&tx, provider, scope, c)?,
        None => {
            tx.execute(
                "DELETE FROM cursors WHERE provider = ?1 AND scope = ?2",
                params![provider, scope],
            )?;
        }
    }
    tx.commit()
}

pub(crate) struct ItemPageArgs<'a> {
    pub provider: &'a str,
    pub batch: &'a str,
    pub batch_info: Option<&'a RemoteBatch>,
    pub items: &'a [RemoteItem],
    pub next_cursor: Option<&'a str>,
    pub now: i64,
}

/// Batch update, item upserts and the page's cursor, in one transaction (invariant 4).
pub(crate) fn apply_item_page(conn: &mut Connection, a: ItemPageArgs<'_>) -> Result<()> {
    let tx = immediate(conn)?;
    match a.batch_info {
        Some(b) => {
            upsert_batch(&tx, a.provider, a.batch, b, None, a.now)?;
        }
        None => {
            // Items need their batch row; one we have not listed yet is recorded as not finished.
            tx.prepare_cached(
                "INSERT OR IGNORE INTO batches (provider, batch_id, status, terminal, seen_at)
                 VALUES (?1, ?2, 'pending', 0, ?3)",
            )?
            .execute(params![a.provider, a.batch, a.now])?;
        }
    }
    for it in a.items {
        let id = it.id.as_str();
        let old: Option<String> = tx
            .prepare_cached(
                "SELECT state FROM items WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3",
            )?
            .query_row(params![a.provider, a.batch, id], |r| r.get(0))
            .optional()?;
        let old_state = match old {
            Some(s) => Some(ItemState::parse(&s).ok_or_else(|| bad_state(&s))?),
            None => None,
        };
        let state = merged_state(old_state, it.status);
        let error = if state == ItemState::Skipped || it.status == RemoteStatus::Unrecognized {
            it.error.as_deref()
        } else {
            None
        };
        let args = params![
            a.provider,
            a.batch,
            id,
            it.status.as_str(),
            state.as_str(),
            opt_ms(it.deadline),
            error,
            a.now,
            it.locator,
        ];
        if old_state.is_none() {
            tx.prepare_cached(
                "INSERT INTO items (provider, batch_id, item_id, remote_status, state, deadline,
                                    attempts, next_attempt_at, last_error, updated_at, locator)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, ?7, ?8, ?9)",
            )?
            .execute(args)?;
        } else {
            tx.prepare_cached(
                "UPDATE items SET remote_status = ?4, state = ?5, deadline = COALESCE(?6, deadline),
                                  last_error = COALESCE(?7, last_error), updated_at = ?8,
                                  locator = COALESCE(?9, locator)
                 WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3",
            )?
            .execute(args)?;
        }
    }
    if let Some(c) = a.next_cursor {
        save_cursor_in(&tx, a.provider, &items_scope(a.batch), c)?;
    }
    tx.commit()
}

fn bad_state(s: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unknown item state {s:?}").into(),
    )
}

pub(crate) fn refresh_handled(conn: &mut Connection, provider: &str, batch: &str) -> Result<bool> {
    let tx = immediate(conn)?;
    let info: Option<(bool, Option<i64>)> = tx
        .query_row(
            "SELECT terminal, total_items FROM batches WHERE provider = ?1 AND batch_id = ?2",
            params![provider, batch],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((terminal, total)) = info else {
        return Ok(false);
    };
    let (rows, open): (i64, i64) = tx.query_row(
        &format!(
            "SELECT COUNT(*), COALESCE(SUM(state IN {NOT_FINAL}), 0)
             FROM items WHERE provider = ?1 AND batch_id = ?2"
        ),
        params![provider, batch],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let handled = terminal && open == 0 && total.is_none_or(|t| rows >= t);
    tx.execute(
        "UPDATE batches SET handled = ?3 WHERE provider = ?1 AND batch_id = ?2",
        params![provider, batch, handled],
    )?;
    tx.commit()?;
    Ok(handled)
}

/// The two claim statements: items with a deadline in deadline order, then those without one.
/// `?1` = not_after, `?2` = limit, `?3…` = provider names when `n_providers > 0`.
pub(crate) fn claim_sql(with_deadline: bool, n_providers: usize) -> String {
    let (deadline, order) = if with_deadline {
        ("deadline IS NOT NULL", "deadline")
    } else {
        ("deadline IS NULL", "next_attempt_at")
    };
    let providers = if n_providers == 0 {
        String::new()
    } else {
        let marks: Vec<String> = (0..n_providers).map(|i| format!("?{}", i + 3)).collect();
        format!(" AND provider IN ({})", marks.join(", "))
    };
    format!(
        "SELECT provider, batch_id, item_id, deadline, attempts, locator FROM items
         WHERE state = 'ready' AND {deadline}
           AND (next_attempt_at IS NULL OR next_attempt_at <= ?1){providers}
         ORDER BY {order} LIMIT ?2"
    )
}

pub(crate) fn claim_due(
    conn: &mut Connection,
    providers: &[String],
    not_after: i64,
    limit: usize,
    now: i64,
) -> Result<Vec<DueItem>> {
    let tx = immediate(conn)?;
    let mut out: Vec<DueItem> = Vec::new();
    for with_deadline in [true, false] {
        let remaining = limit.saturating_sub(out.len());
        if remaining == 0 {
            break;
        }
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(2 + providers.len());
        let remaining = limit_i64(remaining);
        args.push(&not_after);
        args.push(&remaining);
        args.extend(providers.iter().map(|p| p as &dyn rusqlite::ToSql));
        let mut stmt = tx.prepare_cached(&claim_sql(with_deadline, providers.len()))?;
        let rows = stmt.query_map(&args[..], due_item)?;
        for row in rows {
            out.push(row?);
        }
    }
    {
        let mut mark = tx.prepare_cached(
            "UPDATE items SET state = 'downloading', updated_at = ?4
             WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3 AND state = 'ready'",
        )?;
        for d in &out {
            mark.execute(params![
                d.provider.as_str(),
                d.batch.as_str(),
                d.item.as_str(),
                now
            ])?;
        }
    }
    tx.commit()?;
    Ok(out)
}

/// How a claimed item ends (or goes back): the state written and the columns it sets.
pub(crate) enum Outcome {
    Mirrored(Published),
    Retry { error: String, next_attempt_at: i64 },
    Failed(String),
    Lost(String),
}

/// Records an outcome on an item that is not final yet; a final item is left as it is (a listing
/// or a second worker can never undo a mirrored or lost row). Returns whether a row changed.
pub(crate) fn finish(
    conn: &Connection,
    item: &DueItem,
    outcome: &Outcome,
    now: i64,
) -> Result<bool> {
    let key = format!("provider = ?1 AND batch_id = ?2 AND item_id = ?3 AND state IN {NOT_FINAL}");
    let (p, b, i) = (
        item.provider.as_str(),
        item.batch.as_str(),
        item.item.as_str(),
    );
    let changed = match outcome {
        Outcome::Mirrored(pb) => conn
            .prepare_cached(&format!(
                "UPDATE items SET state = 'mirrored', bytes = ?4, sha256 = ?5, path = ?6,
                              last_error = NULL, next_attempt_at = NULL, updated_at = ?7
             WHERE {key}"
            ))?
            .execute(params![
                p,
                b,
                i,
                i64::try_from(pb.bytes).unwrap_or(i64::MAX),
                pb.sha256,
                pb.rel_path,
                now
            ])?,
        Outcome::Retry {
            error,
            next_attempt_at,
        } => conn
            .prepare_cached(&format!(
                "UPDATE items SET state = 'ready', attempts = attempts + 1, last_error = ?4,
                              next_attempt_at = ?5, updated_at = ?6
             WHERE {key}"
            ))?
            .execute(params![p, b, i, error, *next_attempt_at, now])?,
        Outcome::Failed(error) => end(conn, &key, (p, b, i), "failed", error, now)?,
        Outcome::Lost(error) => end(conn, &key, (p, b, i), "lost", error, now)?,
    };
    Ok(changed > 0)
}

/// Several outcomes in one IMMEDIATE transaction (one commit); whether each changed a row.
pub(crate) fn finish_all(
    conn: &mut Connection,
    ops: &[(&DueItem, &Outcome, i64)],
) -> Result<Vec<bool>> {
    let tx = immediate(conn)?;
    let mut changed = Vec::with_capacity(ops.len());
    for (item, outcome, now) in ops {
        changed.push(finish(&tx, item, outcome, *now)?);
    }
    tx.commit()?;
    Ok(changed)
}

/// A final failure: `state`, one more attempt, the error, no further attempt time.
fn end(
    conn: &Connection,
    key: &str,
    (p, b, i): (&str, &str, &str),
    state: &str,
    error: &str,
    now: i64,
) -> Result<usize> {
    conn.prepare_cached(&format!(
        "UPDATE items SET state = ?4, attempts = attempts + 1, last_error = ?5,
                          next_attempt_at = NULL, updated_at = ?6
         WHERE {key}"
    ))?
    .execute(params![p, b, i, state, error, now])
}

pub(crate) fn release(conn: &mut Connection, items: &[DueItem], now: i64) -> Result<()> {
    let tx = immediate(conn)?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE items SET state = 'ready', updated_at = ?4
             WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3 AND state = 'downloading'",
        )?;
        for d in items {
            stmt.execute(params![
                d.provider.as_str(),
                d.batch.as_str(),
                d.item.as_str(),
                now
            ])?;
        }
    }
    tx.commit()
}

pub(crate) fn record_pass(
    conn: &Connection,
    provider: &str,
    at: i64,
    error: Option<&str>,
) -> Result<Option<i64>> {
    conn.prepare_cached(
        "INSERT INTO provider_state (provider, last_pass_at, last_error, failing_since)
         VALUES (?1, ?2, ?3, CASE WHEN ?3 IS NULL THEN NULL ELSE ?2 END)
         ON CONFLICT (provider) DO UPDATE SET
             last_pass_at = excluded.last_pass_at,
             last_error = excluded.last_error,
             failing_since = CASE WHEN excluded.last_error IS NULL THEN NULL
                                  ELSE COALESCE(provider_state.failing_since, excluded.last_pass_at)
                             END
         RETURNING failing_since",
    )?
    .query_row(params![provider, at, error], |r| r.get(0))
}

/// `EXPLAIN QUERY PLAN` detail lines of both claim statements (all providers).
pub(crate) fn explain_claim(conn: &Connection) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for with_deadline in [true, false] {
        let sql = format!("EXPLAIN QUERY PLAN {}", claim_sql(with_deadline, 0));
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![0i64, 1i64], |r| r.get::<_, String>(3))?;
        for row in rows {
            lines.push(row?);
        }
    }
    Ok(lines)
}

/// The wall clock in stored form, for operations whose API takes no `now`.
pub(crate) fn now_ms() -> i64 {
    ms(chrono::Utc::now())
}

/// Sets `last_error` on one item, whatever its state.
pub(crate) fn note_error(conn: &mut Connection, item: &DueItem, note: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE items SET last_error = ?4 WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3",
    )?
    .execute(params![
        item.provider.as_str(),
        item.batch.as_str(),
        item.item.as_str(),
        note
    ])?;
    Ok(())
}

pub(crate) fn claim_alert(conn: &mut Connection, key: &str, now: i64) -> Result<bool> {
    let n = conn
        .prepare_cached("INSERT OR IGNORE INTO alerts_fired (key, fired_at) VALUES (?1, ?2)")?
        .execute(params![key, now])?;
    Ok(n == 1)
}

pub(crate) fn clear_alert(conn: &mut Connection, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM alerts_fired WHERE key = ?1")?
        .execute(params![key])?;
    Ok(())
}
