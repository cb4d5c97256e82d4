//! Listing walks on the PostgreSQL ledger, as SQLite's `walks` keeps them (a page's batches and
//! the walk's new position in one transaction; the watermark moves only when a walk completes),
//! and the walker turn: one row per provider in `walkers`, so one daemon at a time walks a
//! provider's listing and any daemon takes over when the walker's turn expires. Every write to a
//! walk checks, in its transaction, that this daemon holds the turn: a walker that stalled past
//! its turn and was replaced cannot move the new walker's position ([`LedgerError::LeaseLost`]).

use super::PgLedger;
use super::listing::upsert_batch;
use super::rows::{WALK_COLUMNS, walk_row};
use crate::error::LedgerError;
use crate::model::{BatchSeen, RemoteBatch, Walk};

/// A page of a walk, as [`PgLedger::apply_list_page_pg`] takes it.
pub(super) struct ListPage<'a> {
    pub provider: &'a str,
    pub walk: i64,
    pub batches: &'a [RemoteBatch],
    pub next: Option<&'a str>,
    pub at_end: bool,
    pub margin_ms: i64,
    pub now: i64,
}

const COMPLETE: &str = "UPDATE walks SET state = 'complete', position = NULL,
        complete_through = walk, complete_since = started_at - $3, updated_at = $4,
        last_error = NULL
    WHERE provider = $1 AND walk = $2";

/// Locks the provider's walker row for the transaction and checks it is ours (expired or not:
/// until another daemon takes it, no one else walks).
async fn check_turn(
    tx: &deadpool_postgres::Transaction<'_>,
    provider: &str,
    owner: &str,
) -> Result<Result<(), LedgerError>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT owner FROM walkers WHERE provider = $1 FOR SHARE",
            &[&provider],
        )
        .await?;
    Ok(match row {
        Some(r) if r.get::<_, &str>(0) == owner => Ok(()),
        _ => Err(LedgerError::LeaseLost {
            what: format!("the walker turn of {provider}"),
        }),
    })
}

impl PgLedger {
    /// Takes or renews the walker turn; false while another daemon's turn runs.
    pub(super) async fn take_walker_pg(&self, provider: &str) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "INSERT INTO walkers (provider, owner, until)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (provider) DO UPDATE SET owner = excluded.owner,
                     until = excluded.until
                 WHERE walkers.owner = excluded.owner OR walkers.until < now()
                 RETURNING owner",
                &[&provider, &self.owner, &self.walker_secs],
            )
            .await
            .map_err(self.pg("take the walker turn"))?;
        Ok(row.is_some())
    }

    pub(super) async fn drop_walker_pg(&self, provider: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM walkers WHERE provider = $1 AND owner = $2",
                &[&provider, &self.owner],
            )
            .await
            .map_err(self.pg("give the walker turn up"))?;
        Ok(())
    }

    pub(super) async fn walk_pg(&self, provider: &str) -> Result<Option<Walk>, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {WALK_COLUMNS} FROM walks WHERE provider = $1"),
                &[&provider],
            )
            .await
            .map_err(self.pg("read a walk"))?;
        row.as_ref()
            .map(walk_row)
            .transpose()
            .map_err(|e| self.data(e))
    }

    pub(super) async fn begin_walk_pg(
        &self,
        provider: &str,
        early_stop: bool,
        since: Option<i64>,
        now: i64,
    ) -> Result<Walk, LedgerError> {
        let pg = self.pg("begin a walk");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        check_turn(&tx, provider, &self.owner)
            .await
            .map_err(&pg)??;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO walks AS w (provider, walk, state, position, early_stop, since,
                                             started_at, updated_at, pages)
                     VALUES ($1, 1, 'running', NULL, $2, $3, $4, $4, 0)
                     ON CONFLICT (provider) DO UPDATE SET
                         walk = w.walk + 1, state = 'running', position = NULL,
                         early_stop = excluded.early_stop, since = excluded.since,
                         started_at = excluded.started_at, updated_at = excluded.updated_at,
                         pages = 0, last_error = NULL
                     RETURNING {WALK_COLUMNS}"
                ),
                &[&provider, &early_stop, &since, &now],
            )
            .await
            .map_err(&pg)?;
        let walk = walk_row(&row).map_err(|e| self.data(e))?;
        tx.commit().await.map_err(&pg)?;
        Ok(walk)
    }

    /// ONE transaction: the page's batches (first seen by `walk` when new), then the walk's next
    /// position, or its completion at the end.
    pub(super) async fn apply_list_page_pg(
        &self,
        a: ListPage<'_>,
    ) -> Result<Vec<BatchSeen>, LedgerError> {
        let pg = self.pg("apply a list page");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        check_turn(&tx, a.provider, &self.owner)
            .await
            .map_err(&pg)??;
        let watermark: Option<i64> = tx
            .query_opt(
                "SELECT complete_through FROM walks WHERE provider = $1 FOR UPDATE",
                &[&a.provider],
            )
            .await
            .map_err(&pg)?
            .and_then(|r| r.get(0));
        let mut seen = Vec::with_capacity(a.batches.len());
        for b in a.batches {
            let handled = upsert_batch(&tx, a.provider, b, Some(a.walk), a.now)
                .await
                .map_err(&pg)?;
            let first: Option<i64> = tx
                .query_one(
                    "SELECT first_walk FROM batches WHERE provider = $1 AND batch_id = $2",
                    &[&a.provider, &b.id.as_str()],
                )
                .await
                .map_err(&pg)?
                .get(0);
            let within = matches!((first, watermark), (Some(f), Some(w)) if f <= w);
            seen.push(BatchSeen { handled, within });
        }
        tx.execute(
            "UPDATE walks SET position = $3, pages = pages + 1, updated_at = $4
             WHERE provider = $1 AND walk = $2",
            &[&a.provider, &a.walk, &a.next, &a.now],
        )
        .await
        .map_err(&pg)?;
        if a.at_end {
            tx.execute(COMPLETE, &[&a.provider, &a.walk, &a.margin_ms, &a.now])
                .await
                .map_err(&pg)?;
        }
        tx.commit().await.map_err(&pg)?;
        Ok(seen)
    }

    pub(super) async fn complete_walk_pg(
        &self,
        provider: &str,
        walk: i64,
        margin_ms: i64,
        now: i64,
    ) -> Result<(), LedgerError> {
        let pg = self.pg("complete a walk");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        check_turn(&tx, provider, &self.owner)
            .await
            .map_err(&pg)??;
        tx.execute(COMPLETE, &[&provider, &walk, &margin_ms, &now])
            .await
            .map_err(&pg)?;
        tx.commit().await.map_err(&pg)
    }

    pub(super) async fn fail_walk_pg(
        &self,
        provider: &str,
        walk: i64,
        error: &str,
        now: i64,
    ) -> Result<(), LedgerError> {
        let pg = self.pg("fail a walk");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        check_turn(&tx, provider, &self.owner)
            .await
            .map_err(&pg)??;
        tx.execute(
            "UPDATE walks SET state = 'failed', last_error = $3, updated_at = $4
             WHERE provider = $1 AND walk = $2",
            &[&provider, &walk, &error, &now],
        )
        .await
        .map_err(&pg)?;
        tx.commit().await.map_err(&pg)
    }
}
