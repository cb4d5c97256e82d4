//! What `batchmirror verify` asks of the ledger: the providers and batches to check, paged by key
//! (never every row at once), the rows of one batch, and the two repairs: a mirrored item whose file
//! is missing or corrupt goes back to `ready` for a fresh fetch, or, past its deadline, to `lost`.
//!
//! Batches are paged on their primary key `(provider, batch_id)` and a batch's items are read
//! through the items' primary key prefix, so memory is bounded by the largest batch, not by the
//! ledger. Both repairs change a row only while it is still `mirrored`, so a repair never undoes
//! what someone else recorded meanwhile.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

use super::Ledger;
use super::queries::limit_i64;
use super::rows::{ms, ts};
use crate::error::LedgerError;
use crate::model::ItemState;

type SqlResult<T> = rusqlite::Result<T>;

/// One page of a provider's batches after a batch id (`''` before the first: ids are never
/// empty), on the batches' primary key.
const BATCH_PAGE: &str = "SELECT batch_id FROM batches WHERE provider = ?1 AND batch_id > ?2
     ORDER BY batch_id LIMIT ?3";
/// A batch's items, on the items' primary key prefix.
const BATCH_ITEMS: &str = "SELECT item_id, state, deadline, bytes, sha256, path FROM items
     WHERE provider = ?1 AND batch_id = ?2 ORDER BY item_id";

/// One item of a batch as verify sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyRow {
    pub item: String,
    pub state: ItemState,
    pub deadline: Option<DateTime<Utc>>,
    /// Size, digest and relative path recorded when the item was mirrored.
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub path: Option<String>,
}

impl Ledger {
    /// Every provider the ledger holds batches of, in name order.
    pub async fn verify_providers(&self) -> Result<Vec<String>, LedgerError> {
        self.run(|c| {
            c.prepare_cached("SELECT DISTINCT provider FROM batches ORDER BY provider")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
    }

    /// Up to `limit` batch ids of `provider` after `after` (exclusive), in id order: one page of a
    /// keyset walk over the batches.
    pub async fn verify_batches(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        let (provider, after) = (provider.to_owned(), after.unwrap_or_default().to_owned());
        self.run(move |c| {
            c.prepare_cached(BATCH_PAGE)?
                .query_map(params![provider, after, limit_i64(limit)], |r| r.get(0))?
                .collect()
        })
        .await
    }

    /// Every item row of one batch, in item id order.
    pub async fn verify_items(
        &self,
        provider: &str,
        batch: &str,
    ) -> Result<Vec<VerifyRow>, LedgerError> {
        let (provider, batch) = (provider.to_owned(), batch.to_owned());
        self.run(move |c| batch_items(c, &provider, &batch)).await
    }

    /// How many items are mirrored, all providers or those named: the files verify will hash.
    pub async fn count_mirrored(&self, providers: &[String]) -> Result<u64, LedgerError> {
        let providers = serde_json::to_string(providers).unwrap_or_else(|_| "[]".into());
        self.run(move |c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM items WHERE state = 'mirrored'
                 AND provider IN (SELECT value FROM json_each(?1))",
            )?
            .query_row([providers], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// A mirrored item whose file is missing or corrupt goes back to `ready` for a fresh fetch:
    /// no attempts counted, no retry wait, its recorded size/digest/path cleared, `note` as its
    /// last error; its batch is no longer handled, so a pass reads it again. Returns false (and
    /// changes nothing) when the row is not `mirrored` any more.
    pub async fn requeue_mirrored(
        &self,
        provider: &str,
        batch: &str,
        item: &str,
        note: &str,
    ) -> Result<bool, LedgerError> {
        let args = [provider, batch, item, note].map(str::to_owned);
        let now = ms(Utc::now());
        self.run(move |c| {
            let [p, b, i, note] = &args;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE items SET state = 'ready', attempts = 0, next_attempt_at = NULL,
                     bytes = NULL, sha256 = NULL, path = NULL, last_error = ?4, updated_at = ?5
                 WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3 AND state = 'mirrored'",
                params![p, b, i, note, now],
            )? == 1;
            if changed {
                tx.execute(
                    "UPDATE batches SET handled = 0 WHERE provider = ?1 AND batch_id = ?2",
                    params![p, b],
                )?;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    /// A mirrored item whose file is missing or corrupt after the provider's deadline: `lost`, with
    /// `note` as its last error; its recorded size and digest stay (what was had), its path goes
    /// (there is no file). Returns false (and changes nothing) when the row is not `mirrored`.
    pub async fn mark_lost_mirrored(
        &self,
        provider: &str,
        batch: &str,
        item: &str,
        note: &str,
    ) -> Result<bool, LedgerError> {
        let args = [provider, batch, item, note].map(str::to_owned);
        let now = ms(Utc::now());
        self.run(move |c| {
            let [p, b, i, note] = &args;
            let changed = c.execute(
                "UPDATE items SET state = 'lost', path = NULL, last_error = ?4, updated_at = ?5
                 WHERE provider = ?1 AND batch_id = ?2 AND item_id = ?3 AND state = 'mirrored'",
                params![p, b, i, note, now],
            )?;
            Ok(changed == 1)
        })
        .await
    }
}

fn batch_items(c: &Connection, provider: &str, batch: &str) -> SqlResult<Vec<VerifyRow>> {
    c.prepare_cached(BATCH_ITEMS)?
        .query_map([provider, batch], |r| {
            let state: String = r.get(1)?;
            let bytes: Option<i64> = r.get(3)?;
            Ok(VerifyRow {
                item: r.get(0)?,
                state: ItemState::parse(&state).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        format!("unknown item state {state:?}").into(),
                    )
                })?,
                deadline: ts(r, 2)?,
                bytes: bytes.and_then(|b| u64::try_from(b).ok()),
                sha256: r.get(4)?,
                path: r.get(5)?,
            })
        })?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paged reads use the primary keys, never a scan of the whole items table.
    #[test]
    fn batch_pages_and_batch_items_search_the_primary_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.sqlite3")).unwrap();
        let conn = ledger.inner.conn.lock().unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            // The parameters stay unbound: the plan does not depend on their values.
            let mut rows = stmt.raw_query();
            let mut lines = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                lines.push(row.get::<_, String>(3).unwrap());
            }
            lines.join("; ")
        };
        let items = plan(BATCH_ITEMS);
        assert!(
            items.contains("USING INDEX sqlite_autoindex_items_1 (provider=? AND batch_id=?)"),
            "{items}"
        );
        let batches = plan(BATCH_PAGE);
        assert!(
            batches.contains("sqlite_autoindex_batches_1 (provider=? AND batch_id>?)"),
            "{batches}"
        );
        assert!(!batches.contains("TEMP B-TREE"), "{batches}");
    }
}
