//! What listings write to the PostgreSQL ledger: batch upserts, `handled`, and the saved cursors
//! (item pages are `pages`). Same rules as SQLite's `queries`.

use deadpool_postgres::Transaction;

use super::PgLedger;
use crate::error::LedgerError;
use crate::model::{BatchId, RemoteBatch};

type PgResult<T> = Result<T, tokio_postgres::Error>;

const UPSERT_BATCH: &str = "
INSERT INTO batches (provider, batch_id, status, terminal, total_items, expires_at, created_at,
                     handled, seen_at, first_walk)
VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8, $9)
ON CONFLICT (provider, batch_id) DO UPDATE SET
    first_walk = COALESCE(batches.first_walk, excluded.first_walk),
    handled = CASE WHEN batches.status = excluded.status
                    AND (excluded.total_items IS NULL
                         OR excluded.total_items IS NOT DISTINCT FROM batches.total_items)
              THEN batches.handled ELSE false END,
    status = excluded.status,
    terminal = excluded.terminal,
    total_items = COALESCE(excluded.total_items, batches.total_items),
    expires_at = COALESCE(excluded.expires_at, batches.expires_at),
    created_at = COALESCE(excluded.created_at, batches.created_at),
    seen_at = excluded.seen_at";

/// Upserts one batch; whether it was handled before and stays handled. `walk` becomes its
/// `first_walk` when it has none.
pub(super) async fn upsert_batch(
    tx: &Transaction<'_>,
    provider: &str,
    b: &RemoteBatch,
    walk: Option<i64>,
    now: i64,
) -> PgResult<bool> {
    let batch = b.id.as_str();
    let before = tx
        .query_opt(
            "SELECT status, handled, total_items FROM batches
             WHERE provider = $1 AND batch_id = $2 FOR UPDATE",
            &[&provider, &batch],
        )
        .await?;
    let total = b.total_items.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let still_handled = before.is_some_and(|r| {
        let (status, handled, old_total): (&str, bool, Option<i64>) =
            (r.get(0), r.get(1), r.get(2));
        handled && status == b.status.as_str() && (total.is_none() || total == old_total)
    });
    let st = tx.prepare_cached(UPSERT_BATCH).await?;
    tx.execute(
        &st,
        &[
            &provider,
            &batch,
            &b.status.as_str(),
            &b.status.is_terminal(),
            &total,
            &b.expires_at.map(|t| t.timestamp_millis()),
            &b.created_at.map(|t| t.timestamp_millis()),
            &now,
            &walk,
        ],
    )
    .await?;
    Ok(still_handled)
}

pub(super) async fn save_cursor_in(
    tx: &Transaction<'_>,
    provider: &str,
    scope: &str,
    c: &str,
) -> PgResult<()> {
    tx.execute(
        "INSERT INTO cursors (provider, scope, cursor) VALUES ($1, $2, $3)
         ON CONFLICT (provider, scope) DO UPDATE SET cursor = excluded.cursor",
        &[&provider, &scope, &c],
    )
    .await
    .map(drop)
}

impl PgLedger {
    pub(super) async fn upsert_batches_pg(
        &self,
        provider: &str,
        batches: &[RemoteBatch],
        now: i64,
    ) -> Result<Vec<bool>, LedgerError> {
        let pg = self.pg("upsert batches");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            out.push(
                upsert_batch(&tx, provider, b, None, now)
                    .await
                    .map_err(&pg)?,
            );
        }
        tx.commit().await.map_err(&pg)?;
        Ok(out)
    }

    pub(super) async fn unhandled_batches_pg(
        &self,
        provider: &str,
    ) -> Result<Vec<BatchId>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT batch_id FROM batches WHERE provider = $1 AND NOT handled
                 ORDER BY batch_id",
                &[&provider],
            )
            .await
            .map_err(self.pg("list unhandled batches"))?;
        rows.iter()
            .map(|r| BatchId::parse(r.get(0)).map_err(|e| self.data(e)))
            .collect()
    }

    pub(super) async fn refresh_handled_pg(
        &self,
        provider: &str,
        batch: &str,
    ) -> Result<bool, LedgerError> {
        let pg = self.pg("refresh a batch's handled flag");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        let Some(info) = tx
            .query_opt(
                "SELECT terminal, total_items FROM batches
                 WHERE provider = $1 AND batch_id = $2 FOR UPDATE",
                &[&provider, &batch],
            )
            .await
            .map_err(&pg)?
        else {
            return Ok(false);
        };
        let (terminal, total): (bool, Option<i64>) = (info.get(0), info.get(1));
        let counts = tx
            .query_one(
                "SELECT COUNT(*),
                        COUNT(*) FILTER (WHERE state IN ('pending', 'ready', 'downloading'))
                 FROM items WHERE provider = $1 AND batch_id = $2",
                &[&provider, &batch],
            )
            .await
            .map_err(&pg)?;
        let (rows, open): (i64, i64) = (counts.get(0), counts.get(1));
        let handled = terminal && open == 0 && total.is_none_or(|t| rows >= t);
        tx.execute(
            "UPDATE batches SET handled = $3 WHERE provider = $1 AND batch_id = $2",
            &[&provider, &batch, &handled],
        )
        .await
        .map_err(&pg)?;
        tx.commit().await.map_err(&pg)?;
        Ok(handled)
    }

    pub(super) async fn cursor_pg(
        &self,
        provider: &str,
        scope: &str,
    ) -> Result<Option<String>, LedgerError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT cursor FROM cursors WHERE provider = $1 AND scope = $2",
                &[&provider, &scope],
            )
            .await
            .map_err(self.pg("read a cursor"))?
            .map(|r| r.get(0)))
    }

    pub(super) async fn save_cursor_pg(
        &self,
        provider: &str,
        scope: &str,
        cursor: Option<&str>,
    ) -> Result<(), LedgerError> {
        let pg = self.pg("save a cursor");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        match cursor {
            Some(c) => save_cursor_in(&tx, provider, scope, c).await.map_err(&pg)?,
            None => {
                tx.execute(
                    "DELETE FROM cursors WHERE provider = $1 AND scope = $2",
                    &[&provider, &scope],
                )
                .await
                .map_err(&pg)?;
            }
        }
        tx.commit().await.map_err(&pg)
    }
}
