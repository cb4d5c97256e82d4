//! An item page on the PostgreSQL ledger: the batch, every item by the shared merge rule
//! ([`merged_state`]) and the page's cursor in ONE transaction (invariant 4), in a few set-based
//! statements (one read that locks the page's existing rows, one insert, one update) rather than
//! a round trip per item.

use std::collections::HashMap;

use super::PgLedger;
use super::listing::{save_cursor_in, upsert_batch};
use super::rows::parse_state;
use crate::error::LedgerError;
use crate::ledger::queries::{items_scope, merged_state};
use crate::model::{ItemState, RemoteBatch, RemoteItem, RemoteStatus};

/// One item's row as the page leaves it (a page listing an id twice folds into one, as applying
/// its rows one by one would: the last status, the latest non-empty deadline, error, locator).
struct Merged<'a> {
    id: &'a str,
    remote_status: &'static str,
    state: ItemState,
    deadline: Option<i64>,
    error: Option<&'a str>,
    locator: Option<&'a str>,
}

/// The error a listing records: the provider's own, for an item skipped or unrecognized.
fn kept_error(state: ItemState, it: &RemoteItem) -> Option<&str> {
    (state == ItemState::Skipped || it.status == RemoteStatus::Unrecognized)
        .then_some(it.error.as_deref())
        .flatten()
}

/// Folds the page onto the rows it had (`old`), in page order.
fn merge<'a>(items: &'a [RemoteItem], old: &HashMap<String, ItemState>) -> Vec<Merged<'a>> {
    let mut out: Vec<Merged<'a>> = Vec::with_capacity(items.len());
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for it in items {
        let id = it.id.as_str();
        let deadline = it.deadline.map(|t| t.timestamp_millis());
        match at.get(id) {
            Some(&i) => {
                let m = &mut out[i];
                m.state = merged_state(Some(m.state), it.status);
                m.remote_status = it.status.as_str();
                m.deadline = deadline.or(m.deadline);
                m.error = kept_error(m.state, it).or(m.error);
                m.locator = it.locator.as_deref().or(m.locator);
            }
            None => {
                let state = merged_state(old.get(id).copied(), it.status);
                at.insert(id, out.len());
                out.push(Merged {
                    id,
                    remote_status: it.status.as_str(),
                    state,
                    deadline,
                    error: kept_error(state, it),
                    locator: it.locator.as_deref(),
                });
            }
        }
    }
    out
}

const INSERT: &str = "
INSERT INTO items (provider, batch_id, item_id, remote_status, state, deadline, attempts,
                   next_attempt_at, last_error, updated_at, locator)
SELECT $1, $2, u.id, u.rs, u.st, u.dl, 0, NULL, u.err, $3, u.loc
FROM unnest($4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[])
     AS u(id, rs, st, dl, err, loc)
ON CONFLICT (provider, batch_id, item_id) DO NOTHING";

const UPDATE: &str = "
UPDATE items SET remote_status = u.rs, state = u.st, deadline = COALESCE(u.dl, items.deadline),
                 last_error = COALESCE(u.err, items.last_error), updated_at = $3,
                 locator = COALESCE(u.loc, items.locator)
FROM unnest($4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[])
     AS u(id, rs, st, dl, err, loc)
WHERE items.provider = $1 AND items.batch_id = $2 AND items.item_id = u.id";

impl PgLedger {
    /// ONE transaction: the batch (or a `pending` row for one not listed yet), the items by the
    /// merge rule, then the cursor.
    pub(super) async fn apply_item_page_pg(
        &self,
        provider: &str,
        batch: &str,
        batch_info: Option<&RemoteBatch>,
        items: &[RemoteItem],
        next_cursor: Option<&str>,
        now: i64,
    ) -> Result<(), LedgerError> {
        let pg = self.pg("apply an item page");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        match batch_info {
            Some(b) => {
                upsert_batch(&tx, provider, b, None, now)
                    .await
                    .map_err(&pg)?;
            }
            None => {
                tx.execute(
                    "INSERT INTO batches (provider, batch_id, status, terminal, seen_at)
                     VALUES ($1, $2, 'pending', false, $3) ON CONFLICT DO NOTHING",
                    &[&provider, &batch, &now],
                )
                .await
                .map_err(&pg)?;
            }
        }
        let ids: Vec<&str> = items.iter().map(|it| it.id.as_str()).collect();
        let read = tx
            .prepare_cached(
                "SELECT item_id, state FROM items
                 WHERE provider = $1 AND batch_id = $2 AND item_id = ANY($3::text[])
                 ORDER BY item_id COLLATE \"C\" FOR UPDATE",
            )
            .await
            .map_err(&pg)?;
        let (insert, update) = (
            tx.prepare_cached(INSERT).await.map_err(&pg)?,
            tx.prepare_cached(UPDATE).await.map_err(&pg)?,
        );
        // Twice at most: rows another daemon inserted between our read and our insert are read
        // (and locked) on the second round, then merged like any other existing row.
        for round in 0..2 {
            let mut old = HashMap::new();
            for r in tx
                .query(&read, &[&provider, &batch, &ids])
                .await
                .map_err(&pg)?
            {
                let state = parse_state(r.get(1)).map_err(|e| self.data(e))?;
                old.insert(r.get::<_, String>(0), state);
            }
            let merged = merge(items, &old);
            let (new, known): (Vec<&Merged>, Vec<&Merged>) =
                merged.iter().partition(|m| !old.contains_key(m.id));
            if !known.is_empty() {
                let cols = columns(&known);
                tx.execute(&update, &args(&provider, &batch, &now, &cols))
                    .await
                    .map_err(&pg)?;
            }
            let inserted = if new.is_empty() {
                0
            } else {
                let cols = columns(&new);
                tx.execute(&insert, &args(&provider, &batch, &now, &cols))
                    .await
                    .map_err(&pg)?
            };
            if inserted == new.len() as u64 {
                break;
            }
            if round == 1 {
                return Err(self.data(format!(
                    "item page of {provider}/{batch}: rows kept appearing while it was written"
                )));
            }
        }
        if let Some(c) = next_cursor {
            save_cursor_in(&tx, provider, &items_scope(batch), c)
                .await
                .map_err(&pg)?;
        }
        tx.commit().await.map_err(&pg)
    }
}

/// The page's rows as column arrays, for `unnest`.
type Columns<'a> = (
    Vec<&'a str>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<Option<i64>>,
    Vec<Option<&'a str>>,
    Vec<Option<&'a str>>,
);

fn columns<'a>(rows: &[&Merged<'a>]) -> Columns<'a> {
    (
        rows.iter().map(|m| m.id).collect(),
        rows.iter().map(|m| m.remote_status).collect(),
        rows.iter().map(|m| m.state.as_str()).collect(),
        rows.iter().map(|m| m.deadline).collect(),
        rows.iter().map(|m| m.error).collect(),
        rows.iter().map(|m| m.locator).collect(),
    )
}

fn args<'a>(
    provider: &'a &'a str,
    batch: &'a &'a str,
    now: &'a i64,
    c: &'a Columns<'a>,
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 9] {
    [provider, batch, now, &c.0, &c.1, &c.2, &c.3, &c.4, &c.5]
}
