//! The PostgreSQL ledger's reports (summary, at-risk, unmirrored, deferred and `status --items`
//! listings, single rows), and the small per-provider records: pass results, pacing, alerts
//! fired. Same filters and orders as SQLite's `reads` and `report`.

use std::collections::BTreeMap;

use tokio_postgres::types::ToSql;

use super::PgLedger;
use super::rows::{DUE_COLUMNS, ITEM_COLUMNS, due_item, from_ms, item_row, limit};
use crate::error::LedgerError;
use crate::ledger::{ItemRow, Listed};
use crate::model::{DueItem, ItemFilter, ItemState, Pace, ProviderSummary};

const NOT_FINAL: &str = "('pending', 'ready', 'downloading')";
/// Due but not mirrored as a pass ends at `$2` (`$3` = now + margin, `$4` = the drain's start).
const UNMIRRORED: &str = "(state = 'ready' AND next_attempt_at > $2)
     OR (state IN ('ready', 'downloading') AND deadline <= $3)
     OR (state IN ('failed', 'lost') AND updated_at >= $4)";
const DEFERRED: &str = "state = 'ready' AND next_attempt_at > $2";
const DEFERRED_ORDER: &str = "next_attempt_at, provider, batch_id, item_id";
const BY_DEADLINE: &str = "deadline ASC NULLS FIRST, provider, batch_id, item_id";

/// The filter, order and arguments of `status --items` (`$2`… are the arguments).
fn item_listing(filter: ItemFilter, now: i64, horizon: i64) -> (String, &'static str, Vec<i64>) {
    match filter {
        ItemFilter::All => ("true".to_owned(), "provider, batch_id, item_id", vec![]),
        // A fixed word of ItemState, not input: safe to write into the statement.
        ItemFilter::State(s) => (format!("state = '{}'", s.as_str()), BY_DEADLINE, vec![]),
        ItemFilter::Deferred => (DEFERRED.to_owned(), DEFERRED_ORDER, vec![now]),
        ItemFilter::AtRisk => (
            format!("state IN {NOT_FINAL} AND deadline <= $2"),
            BY_DEADLINE,
            vec![horizon],
        ),
    }
}

impl PgLedger {
    /// Rows of `providers` matching `filter` (`$1` = the providers, `$2`… = `args`), counted,
    /// and the first `max` in `order`.
    pub(super) async fn listed_pg(
        &self,
        providers: &[String],
        filter: &str,
        args: &[i64],
        order: &str,
        max: usize,
    ) -> Result<Listed, LedgerError> {
        let pg = self.pg("list items");
        let client = self.client().await?;
        let scope = format!("provider = ANY($1::text[]) AND ({filter})");
        let mut bound: Vec<&(dyn ToSql + Sync)> = vec![&providers];
        bound.extend(args.iter().map(|a| a as &(dyn ToSql + Sync)));
        let count: i64 = client
            .query_one(&format!("SELECT COUNT(*) FROM items WHERE {scope}"), &bound)
            .await
            .map_err(&pg)?
            .get(0);
        let lim = limit(max);
        bound.push(&lim);
        let rows = client
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM items WHERE {scope}
                     ORDER BY {order} LIMIT ${}",
                    bound.len()
                ),
                &bound,
            )
            .await
            .map_err(&pg)?;
        Ok(Listed {
            count: u64::try_from(count).unwrap_or(0),
            first: self.item_rows(&rows)?,
        })
    }

    fn item_rows(&self, rows: &[tokio_postgres::Row]) -> Result<Vec<ItemRow>, LedgerError> {
        rows.iter()
            .map(|r| item_row(r).map_err(|e| self.data(e)))
            .collect()
    }

    pub(super) async fn unmirrored_pg(
        &self,
        providers: &[String],
        (now, horizon, since): (i64, i64, i64),
        max: usize,
    ) -> Result<Listed, LedgerError> {
        let order = "deadline ASC NULLS LAST, provider, batch_id, item_id";
        self.listed_pg(providers, UNMIRRORED, &[now, horizon, since], order, max)
            .await
    }

    pub(super) async fn deferred_pg(
        &self,
        providers: &[String],
        now: i64,
        max: usize,
    ) -> Result<Listed, LedgerError> {
        self.listed_pg(providers, DEFERRED, &[now], DEFERRED_ORDER, max)
            .await
    }

    pub(super) async fn list_items_pg(
        &self,
        providers: &[String],
        filter: ItemFilter,
        (now, horizon): (i64, i64),
        max: usize,
    ) -> Result<Listed, LedgerError> {
        let (filter, order, args) = item_listing(filter, now, horizon);
        self.listed_pg(providers, &filter, &args, order, max).await
    }

    pub(super) async fn summary_pg(
        &self,
        providers: &[(String, String)],
        now: i64,
        margin_ms: i64,
    ) -> Result<Vec<ProviderSummary>, LedgerError> {
        let pg = self.pg("summarise");
        let client = self.client().await?;
        let horizon = now.saturating_add(margin_ms);
        let mut out = Vec::with_capacity(providers.len());
        for (name, kind) in providers {
            let mut items: BTreeMap<String, u64> = ItemState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect();
            let rows = client
                .query(
                    "SELECT state, COUNT(*) FROM items WHERE provider = $1 GROUP BY state",
                    &[name],
                )
                .await
                .map_err(&pg)?;
            for r in rows {
                let n: i64 = r.get(1);
                items.insert(r.get(0), u64::try_from(n).unwrap_or(0));
            }
            let risk = client
                .query_one(
                    &format!(
                        "SELECT COUNT(*) FILTER (WHERE deadline <= $2), MIN(deadline) FROM items
                         WHERE provider = $1 AND state IN {NOT_FINAL} AND deadline IS NOT NULL"
                    ),
                    &[name, &horizon],
                )
                .await
                .map_err(&pg)?;
            let (at_risk, earliest): (i64, Option<i64>) = (risk.get(0), risk.get(1));
            let pass = client
                .query_opt(
                    "SELECT last_pass_at, last_error FROM provider_state WHERE provider = $1",
                    &[name],
                )
                .await
                .map_err(&pg)?;
            let (last_pass_at, last_error): (Option<i64>, Option<String>) =
                pass.map(|r| (r.get(0), r.get(1))).unwrap_or_default();
            out.push(ProviderSummary {
                name: name.clone(),
                kind: kind.clone(),
                items,
                at_risk: u64::try_from(at_risk).unwrap_or(0),
                last_pass_at: last_pass_at
                    .map(from_ms)
                    .transpose()
                    .map_err(|e| self.data(e))?,
                last_error,
                oldest_unmirrored_deadline_secs: earliest.map(|d| (d - now).div_euclid(1000)),
                pace: self.pace_pg(name).await?,
            });
        }
        Ok(out)
    }

    pub(super) async fn at_risk_pg(
        &self,
        horizon: i64,
        max: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DUE_COLUMNS} FROM items
                     WHERE state IN {NOT_FINAL} AND deadline <= $1 ORDER BY deadline LIMIT $2"
                ),
                &[&horizon, &limit(max)],
            )
            .await
            .map_err(self.pg("list items at risk"))?;
        rows.iter()
            .map(|r| due_item(r).map_err(|e| self.data(e)))
            .collect()
    }

    pub(super) async fn item_pg(
        &self,
        (p, b, i): (&str, &str, &str),
    ) -> Result<Option<ItemRow>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM items
                     WHERE provider = $1 AND batch_id = $2 AND item_id = $3"
                ),
                &[&p, &b, &i],
            )
            .await
            .map_err(self.pg("read an item"))?;
        Ok(self.item_rows(&rows)?.into_iter().next())
    }

    pub(super) async fn items_in_state_pg(
        &self,
        provider: &str,
        state: ItemState,
        max: usize,
    ) -> Result<Vec<ItemRow>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM items WHERE provider = $1 AND state = $2
                     ORDER BY deadline ASC NULLS FIRST, batch_id, item_id LIMIT $3"
                ),
                &[&provider, &state.as_str(), &limit(max)],
            )
            .await
            .map_err(self.pg("list items in a state"))?;
        self.item_rows(&rows)
    }

    pub(super) async fn record_pass_pg(
        &self,
        provider: &str,
        at: i64,
        error: Option<&str>,
    ) -> Result<Option<i64>, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO provider_state AS s (provider, last_pass_at, last_error, failing_since)
                 VALUES ($1, $2::bigint, $3::text,
                         CASE WHEN $3::text IS NULL THEN NULL ELSE $2::bigint END)
                 ON CONFLICT (provider) DO UPDATE SET
                     last_pass_at = excluded.last_pass_at,
                     last_error = excluded.last_error,
                     failing_since = CASE WHEN excluded.last_error IS NULL THEN NULL
                                          ELSE COALESCE(s.failing_since, excluded.last_pass_at)
                                     END
                 RETURNING failing_since",
                &[&provider, &at, &error],
            )
            .await
            .map_err(self.pg("record a pass"))?;
        Ok(row.get(0))
    }

    pub(super) async fn save_pace_pg(&self, provider: &str, pace: Pace) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO provider_state (provider, pace_per_min, throttles, waited_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (provider) DO UPDATE SET pace_per_min = excluded.pace_per_min,
                     throttles = excluded.throttles, waited_ms = excluded.waited_ms",
                &[
                    &provider,
                    &pace.per_minute,
                    &i64::try_from(pace.throttles).unwrap_or(i64::MAX),
                    &((pace.waited_secs * 1000.0) as i64),
                ],
            )
            .await
            .map_err(self.pg("save a pace"))?;
        Ok(())
    }

    pub(super) async fn pace_pg(&self, provider: &str) -> Result<Option<Pace>, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT pace_per_min, throttles, waited_ms FROM provider_state
                 WHERE provider = $1",
                &[&provider],
            )
            .await
            .map_err(self.pg("read a pace"))?;
        Ok(row.and_then(|r| {
            let (per_minute, throttles, waited): (Option<f64>, Option<i64>, Option<i64>) =
                (r.get(0), r.get(1), r.get(2));
            Some(Pace {
                per_minute,
                throttles: u64::try_from(throttles?).unwrap_or(0),
                waited_secs: waited? as f64 / 1000.0,
            })
        }))
    }

    pub(super) async fn claim_alert_pg(&self, key: &str, now: i64) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO alerts_fired (key, fired_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&key, &now],
            )
            .await
            .map_err(self.pg("claim an alert"))?;
        Ok(n == 1)
    }

    pub(super) async fn clear_alert_pg(&self, key: &str) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM alerts_fired WHERE key = $1", &[&key])
            .await
            .map_err(self.pg("clear an alert"))?;
        Ok(())
    }
}
