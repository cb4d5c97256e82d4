//! [`LedgerStore`] for the SQLite [`Ledger`]: each operation is the inherent method of the same
//! name, unchanged.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::contract::LedgerStore;
use super::{ItemRow, Ledger, Listed};
use crate::error::LedgerError;
use crate::model::{
    BatchId, BatchSeen, DueItem, ItemFilter, ItemId, ItemState, Pace, ProviderName,
    ProviderSummary, Published, RemoteBatch, RemoteItem, Walk,
};

/// SQLite: every operation is the inherent method of the same name. The ledger's exclusive lock
/// makes this the only daemon, so the walker turn is always ours and no lease is ever lost.
#[async_trait]
impl LedgerStore for Ledger {
    async fn upsert_batches(
        &self,
        provider: &ProviderName,
        batches: &[RemoteBatch],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError> {
        Ledger::upsert_batches(self, provider, batches, now).await
    }

    async fn unhandled_batches(
        &self,
        provider: &ProviderName,
    ) -> Result<Vec<BatchId>, LedgerError> {
        Ledger::unhandled_batches(self, provider).await
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
        Ledger::apply_item_page(self, provider, batch, batch_info, items, next_cursor, now).await
    }

    async fn refresh_handled(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<bool, LedgerError> {
        Ledger::refresh_handled(self, provider, batch).await
    }

    async fn item_cursor(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<Option<String>, LedgerError> {
        Ledger::item_cursor(self, provider, batch).await
    }

    async fn cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
    ) -> Result<Option<String>, LedgerError> {
        Ledger::cursor(self, provider, scope).await
    }

    async fn save_cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
        cursor: Option<&str>,
    ) -> Result<(), LedgerError> {
        Ledger::save_cursor(self, provider, scope, cursor).await
    }

    async fn take_walker(&self, _provider: &ProviderName) -> Result<bool, LedgerError> {
        Ok(true)
    }

    async fn drop_walker(&self, _provider: &ProviderName) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn walk(&self, provider: &ProviderName) -> Result<Option<Walk>, LedgerError> {
        Ledger::walk(self, provider).await
    }

    async fn begin_walk(
        &self,
        provider: &ProviderName,
        early_stop: bool,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Walk, LedgerError> {
        Ledger::begin_walk(self, provider, early_stop, since, now).await
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
        Ledger::apply_list_page(
            self,
            provider,
            walk,
            batches,
            next,
            at_end,
            since_margin,
            now,
        )
        .await
    }

    async fn complete_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        since_margin: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        Ledger::complete_walk(self, provider, walk, since_margin, now).await
    }

    async fn fail_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        Ledger::fail_walk(self, provider, walk, error, now).await
    }

    async fn claim_due(
        &self,
        providers: &[ProviderName],
        not_after: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        Ledger::claim_due(self, providers, not_after, limit).await
    }

    async fn renew_leases(&self, _items: &[DueItem]) -> Result<Vec<DueItem>, LedgerError> {
        Ok(Vec::new())
    }

    async fn mark_mirrored(
        &self,
        item: &DueItem,
        published: &Published,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        Ledger::mark_mirrored(self, item, published, now).await
    }

    async fn mark_retry(
        &self,
        item: &DueItem,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        Ledger::mark_retry(self, item, error, next_attempt_at).await
    }

    async fn mark_failed(&self, item: &DueItem, error: &str) -> Result<(), LedgerError> {
        Ledger::mark_failed(self, item, error).await
    }

    async fn mark_lost(&self, item: &DueItem, error: &str) -> Result<(), LedgerError> {
        Ledger::mark_lost(self, item, error).await
    }

    async fn note_error(&self, item: &DueItem, note: &str) -> Result<(), LedgerError> {
        Ledger::note_error(self, item, note).await
    }

    async fn release(&self, items: &[DueItem]) -> Result<(), LedgerError> {
        Ledger::release(self, items).await
    }

    async fn in_flight(&self) -> Result<Vec<DueItem>, LedgerError> {
        Ledger::in_flight(self).await
    }

    async fn claim_alert(&self, key: &str, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        Ledger::claim_alert(self, key, now).await
    }

    async fn clear_alert(&self, key: &str) -> Result<(), LedgerError> {
        Ledger::clear_alert(self, key).await
    }

    async fn record_pass(
        &self,
        provider: &ProviderName,
        at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        Ledger::record_pass(self, provider, at, error).await
    }

    async fn save_pace(&self, provider: &ProviderName, pace: Pace) -> Result<(), LedgerError> {
        Ledger::save_pace(self, provider, pace).await
    }

    async fn pace(&self, provider: &ProviderName) -> Result<Option<Pace>, LedgerError> {
        Ledger::pace(self, provider).await
    }

    async fn summary(
        &self,
        providers: &[(ProviderName, String)],
        now: DateTime<Utc>,
        alert_margin: std::time::Duration,
    ) -> Result<Vec<ProviderSummary>, LedgerError> {
        Ledger::summary(self, providers, now, alert_margin).await
    }

    async fn at_risk(
        &self,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        Ledger::at_risk(self, now, margin, limit).await
    }

    async fn unmirrored(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        Ledger::unmirrored(self, providers, now, since, margin, limit).await
    }

    async fn deferred(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        Ledger::deferred(self, providers, now, limit).await
    }

    async fn list_items(
        &self,
        providers: &[ProviderName],
        filter: ItemFilter,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError> {
        Ledger::list_items(self, providers, filter, now, margin, limit).await
    }

    async fn item(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        item: &ItemId,
    ) -> Result<Option<ItemRow>, LedgerError> {
        Ledger::item(self, provider, batch, item).await
    }

    async fn items_in_state(
        &self,
        provider: &ProviderName,
        state: ItemState,
        limit: usize,
    ) -> Result<Vec<ItemRow>, LedgerError> {
        Ledger::items_in_state(self, provider, state, limit).await
    }
}
