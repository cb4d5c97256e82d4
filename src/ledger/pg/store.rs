//! [`LedgerStore`] for [`PgLedger`]: domain values in, the PostgreSQL operations of the sibling
//! files called with stored forms (names as text, timestamps as ms).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgLedger;
use super::walks::ListPage;
use crate::error::LedgerError;
use crate::ledger::queries::Outcome;
use crate::ledger::{ItemRow, LedgerStore, Listed};
use crate::model::{
    BatchId, BatchSeen, DueItem, ItemFilter, ItemId, ItemState, Pace, ProviderName,
    ProviderSummary, Published, RemoteBatch, RemoteItem, Walk,
};

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn dur_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn names(providers: &[ProviderName]) -> Vec<String> {
    providers.iter().map(|p| p.as_str().to_owned()).collect()
}

#[async_trait]
impl LedgerStore for PgLedger {
    async fn upsert_batches(
        &self,
        provider: &ProviderName,
        batches: &[RemoteBatch],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError> {
        self.upsert_batches_pg(provider.as_str(), batches, ms(now))
            .await
    }

    async fn unhandled_batches(
        &self,
        provider: &ProviderName,
    ) -> Result<Vec<BatchId>, LedgerError> {
        self.unhandled_batches_pg(provider.as_str()).await
    }

    async fn apply_item_page(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        batch_info: Option<&RemoteBatch>,
        items: &[RemoteItem],
        next_cursor: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.apply_item_page_pg(
            provider.as_str(),
            batch.as_str(),
            batch_info,
            items,
            next_cursor,
            ms(now),
        )
        .await
    }

    async fn refresh_handled(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<bool, LedgerError> {
        self.refresh_handled_pg(provider.as_str(), batch.as_str())
            .await
    }

    async fn item_cursor(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<Option<String>, LedgerError> {
        let scope = crate::ledger::queries::items_scope(batch.as_str());
        self.cursor_pg(provider.as_str(), &scope).await
    }

    async fn cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
    ) -> Result<Option<String>, LedgerError> {
        self.cursor_pg(provider.as_str(), scope).await
    }

    async fn save_cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
        cursor: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.save_cursor_pg(provider.as_str(), scope, cursor).await
    }

    async fn take_walker(&self, provider: &ProviderName) -> Result<bool, LedgerError> {
        self.take_walker_pg(provider.as_str()).await
    }

    async fn drop_walker(&self, provider: &ProviderName) -> Result<(), LedgerError> {
        self.drop_walker_pg(provider.as_str()).await
    }

    async fn walk(&self, provider: &ProviderName) -> Result<Option<Walk>, LedgerError> {
        self.walk_pg(provider.as_str()).await
    }

    async fn begin_walk(
        &self,
        provider: &ProviderName,
        early_stop: bool,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Walk, LedgerError> {
        self.begin_walk_pg(provider.as_str(), early_stop, since.map(ms), ms(now))
            .await
    }

    async fn apply_list_page(
        &self,
        provider: &ProviderName,
        walk: i64,
        batches: &[RemoteBatch],
        next: Option<&str>,
        at_end: bool,
        since_margin: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<BatchSeen>, LedgerError> {
        self.apply_list_page_pg(ListPage {
            provider: provider.as_str(),
            walk,
            batches,
            next,
            at_end,
            margin_ms: dur_ms(since_margin),
            now: ms(now),
        })
        .await
    }

    async fn complete_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        since_margin: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.complete_walk_pg(provider.as_str(), walk, dur_ms(since_margin), ms(now))
            .await
    }

    async fn fail_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.fail_walk_pg(provider.as_str(), walk, error, ms(now))
            .await
    }

    async fn claim_due(
        &self,
        providers: &[ProviderName],
        not_after: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        self.claim_due_pg(&names(providers), ms(not_after), limit, ms(Utc::now()))
            .await
    }

    async fn renew_leases(&self, items: &[DueItem]) -> Result<Vec<DueItem>, LedgerError> {
        self.renew_leases_pg(items).await
    }

    async fn mark_mirrored(
        &self,
        item: &DueItem,
        published: &Published,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.finish_pg(item, &Outcome::Mirrored(published.clone()), ms(now))
            .await
    }

    async fn mark_retry(
        &self,
        item: &DueItem,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let outcome = Outcome::Retry {
            error: error.to_owned(),
            next_attempt_at: ms(next_attempt_at),
        };
        self.finish_pg(item, &outcome, ms(Utc::now())).await
    }

    async fn mark_failed(&self, item: &DueItem, error: &str) -> Result<(), LedgerError> {
        let outcome = Outcome::Failed(error.to_owned());
        self.finish_pg(item, &outcome, ms(Utc::now())).await
    }

    async fn mark_lost(&self, item: &DueItem, error: &str) -> Result<(), LedgerError> {
        let outcome = Outcome::Lost(error.to_owned());
        self.finish_pg(item, &outcome, ms(Utc::now())).await
    }

    async fn note_error(&self, item: &DueItem, note: &str) -> Result<(), LedgerError> {
        self.note_error_pg(item, note).await
    }

    async fn release(&self, items: &[DueItem]) -> Result<(), LedgerError> {
        self.release_pg(items, ms(Utc::now())).await
    }

    async fn in_flight(&self) -> Result<Vec<DueItem>, LedgerError> {
        self.in_flight_pg().await
    }

    async fn claim_alert(&self, key: &str, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        self.claim_alert_pg(key, ms(now)).await
    }

    async fn clear_alert(&self, key: &str) -> Result<(), LedgerError> {
        self.clear_alert_pg(key).await
    }

    async fn record_pass(
        &self,
        provider: &ProviderName,
        at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let since = self
            .record_pass_pg(provider.as_str(), ms(at), error)
            .await?;
        Ok(since.and_then(DateTime::from_timestamp_millis))
    }

    async fn save_pace(&self, provider: &ProviderName, pace: Pace) -> Result<(), LedgerError> {
        self.save_pace_pg(provider.as_str(), pace).await
    }

    async fn pace(&self, provider: &ProviderName) -> Result<Option<Pace>, LedgerError> {
        self.pace_pg(provider.as_str()).await
    }

    async fn summary(
        &self,
        providers: &[(ProviderName, String)],
        now: DateTime<Utc>,
        alert_margin: std::time::Duration,
    ) -> Result<Vec<ProviderSummary>, LedgerError> {
        let providers: Vec<(String, String)> = providers
            .iter()
            .map(|(p, k)| (p.as_str().to_owned(), k.clone()))
            .collect();
        self.summary_pg(&providers, ms(now), dur_ms(alert_margin))
            .await
    }

    async fn at_risk(
        &self,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        self.at_risk_pg(ms(now).saturating_add(dur_ms(margin)), limit)
            .await
    }

    async fn unmirrored(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        let horizon = ms(now).saturating_add(dur_ms(margin));
        self.unmirrored_pg(&names(providers), (ms(now), horizon, ms(since)), limit)
            .await
    }

    async fn deferred(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        self.deferred_pg(&names(providers), ms(now), limit).await
    }

    async fn list_items(
        &self,
        providers: &[ProviderName],
        filter: ItemFilter,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        let horizon = ms(now).saturating_add(dur_ms(margin));
        self.list_items_pg(&names(providers), filter, (ms(now), horizon), limit)
            .await
    }

    async fn item(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        item: &ItemId,
    ) -> Result<Option<ItemRow>, LedgerError> {
        self.item_pg((provider.as_str(), batch.as_str(), item.as_str()))
            .await
    }

    async fn items_in_state(
        &self,
        provider: &ProviderName,
        state: ItemState,
        limit: usize,
    ) -> Result<Vec<ItemRow>, LedgerError> {
        self.items_in_state_pg(provider.as_str(), state, limit)
            .await
    }
}
