//! Claims and outcomes on the PostgreSQL ledger. A claim takes each item under this daemon's
//! lease (`FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on nor share a row); an
//! item whose lease expired (its daemon died or stalled) is due again; an outcome is written
//! only while this daemon still owns the lease, so a daemon whose item was taken over can never
//! overwrite the new owner's result ([`LedgerError::LeaseLost`]).
//!
//! Statements that lock several rows lock them in key order (bytewise: `COLLATE "C"`, as Rust
//! sorts strings), as an item page does (`pages`), so no two transactions can each hold a row
//! the other waits for.

use super::PgLedger;
use super::rows::{DUE_COLUMNS, due_item, limit, parse_state};
use crate::error::LedgerError;
use crate::ledger::queries::Outcome;
use crate::model::DueItem;

/// Ready and due by `$1`, or leased with the lease expired; earliest deadline first, then (no
/// deadline) soonest attempt, as SQLite's two claim statements order them.
const CLAIM: &str = "
UPDATE items SET state = 'downloading', lease_owner = $2,
                 lease_until = now() + make_interval(secs => $3), updated_at = $4
WHERE id IN (
    SELECT id FROM items
    WHERE ((state = 'ready' AND (next_attempt_at IS NULL OR next_attempt_at <= $1))
           OR (state = 'downloading' AND lease_until < now()))
      AND (cardinality($6::text[]) = 0 OR provider = ANY($6::text[]))
    ORDER BY deadline ASC NULLS LAST, next_attempt_at ASC NULLS FIRST
    LIMIT $5
    FOR UPDATE SKIP LOCKED)
RETURNING provider, batch_id, item_id, deadline, attempts, locator, next_attempt_at";

/// Which rows an outcome may change: this item, not final, leased by us (`$4` in each form).
const OWNED: &str = "provider = $1 AND batch_id = $2 AND item_id = $3
    AND state IN ('pending', 'ready', 'downloading') AND lease_owner = $4";

fn key(d: &DueItem) -> (&str, &str, &str) {
    (d.provider.as_str(), d.batch.as_str(), d.item.as_str())
}

fn shown(d: &DueItem) -> String {
    format!("item {}/{}/{}", d.provider, d.batch, d.item)
}

impl PgLedger {
    pub(super) async fn claim_due_pg(
        &self,
        providers: &[String],
        not_after: i64,
        max: usize,
        now: i64,
    ) -> Result<Vec<DueItem>, LedgerError> {
        let pg = self.pg("claim due items");
        let client = self.client().await?;
        let st = client.prepare_cached(CLAIM).await.map_err(&pg)?;
        let rows = client
            .query(
                &st,
                &[
                    &not_after,
                    &self.owner,
                    &self.lease_secs,
                    &now,
                    &limit(max),
                    &providers,
                ],
            )
            .await
            .map_err(&pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let next: Option<i64> = r.get(6);
            out.push((due_item(r).map_err(|e| self.data(e))?, next));
        }
        // RETURNING keeps no order: deadlines first, earliest first; then soonest attempt.
        out.sort_by_key(|(d, next)| (d.deadline.is_none(), d.deadline, next.is_some(), *next));
        Ok(out.into_iter().map(|(d, _)| d).collect())
    }

    /// Extends our leases on `items`; returns those we no longer hold.
    pub(super) async fn renew_leases_pg(
        &self,
        items: &[DueItem],
    ) -> Result<Vec<DueItem>, LedgerError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (mut p, mut b, mut i) = (Vec::new(), Vec::new(), Vec::new());
        for d in items {
            let (kp, kb, ki) = key(d);
            p.push(kp);
            b.push(kb);
            i.push(ki);
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE items SET lease_until = now() + make_interval(secs => $5)
                 WHERE id IN (
                     SELECT id FROM items
                     WHERE (provider, batch_id, item_id) IN
                           (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))
                       AND state = 'downloading' AND lease_owner = $4
                     ORDER BY provider COLLATE \"C\", batch_id COLLATE \"C\", item_id COLLATE \"C\"
                     FOR UPDATE)
                 RETURNING provider, batch_id, item_id",
                &[&p, &b, &i, &self.owner, &self.lease_secs],
            )
            .await
            .map_err(self.pg("renew leases"))?;
        let held: std::collections::HashSet<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        Ok(items
            .iter()
            .filter(|d| !held.contains(&key(d)))
            .cloned()
            .collect())
    }

    /// Records an outcome while we hold the lease. A final (or unknown) row is left as it is
    /// with a warning, as SQLite does; a row another daemon holds now is refused.
    pub(super) async fn finish_pg(
        &self,
        item: &DueItem,
        outcome: &Outcome,
        now: i64,
    ) -> Result<(), LedgerError> {
        let pg = self.pg("record an outcome");
        let client = self.client().await?;
        let (p, b, i) = key(item);
        let owner = self.owner.as_str();
        let cleared = "lease_owner = NULL, lease_until = NULL";
        let changed = match outcome {
            Outcome::Mirrored(pb) => {
                let sql = format!(
                    "UPDATE items SET state = 'mirrored', bytes = $5, sha256 = $6, path = $7,
                         last_error = NULL, next_attempt_at = NULL, updated_at = $8, {cleared}
                     WHERE {OWNED}"
                );
                let bytes = i64::try_from(pb.bytes).unwrap_or(i64::MAX);
                let st = client.prepare_cached(&sql).await.map_err(&pg)?;
                client
                    .execute(
                        &st,
                        &[&p, &b, &i, &owner, &bytes, &pb.sha256, &pb.rel_path, &now],
                    )
                    .await
            }
            Outcome::Retry {
                error,
                next_attempt_at,
            } => {
                let sql = format!(
                    "UPDATE items SET state = 'ready', attempts = attempts + 1, last_error = $5,
                         next_attempt_at = $6, updated_at = $7, {cleared}
                     WHERE {OWNED}"
                );
                let st = client.prepare_cached(&sql).await.map_err(&pg)?;
                client
                    .execute(&st, &[&p, &b, &i, &owner, error, next_attempt_at, &now])
                    .await
            }
            Outcome::Failed(error) | Outcome::Lost(error) => {
                let state = if matches!(outcome, Outcome::Lost(_)) {
                    "lost"
                } else {
                    "failed"
                };
                let sql = format!(
                    "UPDATE items SET state = $5, attempts = attempts + 1, last_error = $6,
                         next_attempt_at = NULL, updated_at = $7, {cleared}
                     WHERE {OWNED}"
                );
                let st = client.prepare_cached(&sql).await.map_err(&pg)?;
                client
                    .execute(&st, &[&p, &b, &i, &owner, &state, error, &now])
                    .await
            }
        }
        .map_err(&pg)?;
        if changed > 0 {
            return Ok(());
        }
        let row = client
            .query_opt(
                "SELECT state FROM items WHERE provider = $1 AND batch_id = $2 AND item_id = $3",
                &[&p, &b, &i],
            )
            .await
            .map_err(&pg)?;
        let state = row
            .map(|r| parse_state(r.get(0)))
            .transpose()
            .map_err(|e| self.data(e))?;
        match state {
            Some(s) if !s.is_final() => Err(LedgerError::LeaseLost { what: shown(item) }),
            _ => {
                tracing::warn!(provider = %item.provider, batch = %item.batch, item = %item.item,
                    "ledger left an item as it was: it is unknown or already final");
                Ok(())
            }
        }
    }

    /// Our claims among `items` back to Ready, no attempt counted.
    pub(super) async fn release_pg(&self, items: &[DueItem], now: i64) -> Result<(), LedgerError> {
        let pg = self.pg("release claims");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&pg)?;
        let st = tx
            .prepare_cached(
                "UPDATE items SET state = 'ready', updated_at = $5, lease_owner = NULL,
                                  lease_until = NULL
                 WHERE provider = $1 AND batch_id = $2 AND item_id = $3
                   AND state = 'downloading' AND lease_owner = $4",
            )
            .await
            .map_err(&pg)?;
        let mut sorted: Vec<&DueItem> = items.iter().collect();
        sorted.sort_by(|x, y| key(x).cmp(&key(y)));
        for d in sorted {
            let (p, b, i) = key(d);
            tx.execute(&st, &[&p, &b, &i, &self.owner, &now])
                .await
                .map_err(&pg)?;
        }
        tx.commit().await.map_err(&pg)
    }

    /// Our own claims still Downloading. Another daemon's (a crashed one's included) are not
    /// ours to settle: they become due again when their lease expires.
    pub(super) async fn in_flight_pg(&self) -> Result<Vec<DueItem>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DUE_COLUMNS} FROM items
                     WHERE state = 'downloading' AND lease_owner = $1
                     ORDER BY deadline ASC NULLS LAST"
                ),
                &[&self.owner],
            )
            .await
            .map_err(self.pg("list in-flight items"))?;
        rows.iter()
            .map(|r| due_item(r).map_err(|e| self.data(e)))
            .collect()
    }

    pub(super) async fn note_error_pg(
        &self,
        item: &DueItem,
        note: &str,
    ) -> Result<(), LedgerError> {
        let (p, b, i) = key(item);
        let client = self.client().await?;
        client
            .execute(
                "UPDATE items SET last_error = $4
                 WHERE provider = $1 AND batch_id = $2 AND item_id = $3",
                &[&p, &b, &i, &note],
            )
            .await
            .map_err(self.pg("note an error"))?;
        Ok(())
    }
}
