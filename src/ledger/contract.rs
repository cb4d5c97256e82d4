//! The ledger contract: [`LedgerStore`], the domain operations the orchestrators (sync, the
//! downloader, the daemon, alerts) perform on the ledger, independent of where it lives. SQLite
//! ([`Ledger`](super::Ledger), one daemon) and PostgreSQL ([`super::pg::PgLedger`], several
//! daemons) implement it (`contract_sqlite`: the delegation to the inherent methods); one shared
//! test suite (`tests/ledger_contract.rs`) holds both to the same semantics.
//!
//! Coordination between daemons is part of the contract, not bolted on: a claim takes a lease on
//! each item (owner and expiry, held inside the backend), [`LedgerStore::renew_leases`] extends
//! them while the downloads run, and an outcome (`mark_*`) is recorded only by the lease's owner:
//! anyone else gets [`LedgerError::LeaseLost`] (the new owner records it). Listings have one
//! walker per provider at a time ([`LedgerStore::take_walker`]). On SQLite the ledger's exclusive
//! lock already makes this daemon the only one, so leases and walker turns always hold, and
//! `in_flight` (this daemon's claims) is every Downloading row; on PostgreSQL a dead daemon's
//! claims are not settled by start-up recovery but claimed again once their lease expires.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ItemRow, Listed};
use crate::error::LedgerError;
use crate::model::{
    BatchId, BatchSeen, DueItem, ItemFilter, ItemId, ItemState, Pace, ProviderName,
    ProviderSummary, Published, RemoteBatch, RemoteItem, Walk,
};

/// The ledger's domain operations; see [`Ledger`](super::Ledger)'s methods of the same names for
/// each one's exact semantics, which every implementation keeps.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    // --- Listings: batches, item pages, cursors.

    /// Upserts listed batches; per batch, whether it was handled before and stays handled.
    async fn upsert_batches(
        &self,
        provider: &ProviderName,
        batches: &[RemoteBatch],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError>;

    /// The provider's batches not handled yet.
    async fn unhandled_batches(&self, provider: &ProviderName)
    -> Result<Vec<BatchId>, LedgerError>;

    /// ONE transaction: the batch, the page's items, then `next_cursor` (invariant 4).
    async fn apply_item_page(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        batch_info: Option<&RemoteBatch>,
        items: &[RemoteItem],
        next_cursor: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Recomputes and stores whether the batch is handled.
    async fn refresh_handled(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<bool, LedgerError>;

    /// The saved cursor of a batch's item feed.
    async fn item_cursor(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<Option<String>, LedgerError>;

    /// A listing cursor by scope.
    async fn cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
    ) -> Result<Option<String>, LedgerError>;

    /// Saves (or clears) a cursor on its own.
    async fn save_cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
        cursor: Option<&str>,
    ) -> Result<(), LedgerError>;

    // --- Listing walks, one walker per provider at a time.

    /// Takes (or keeps) the provider's walker turn: true when this daemon is the walker until
    /// its turn expires (renewed by calling again), false while another daemon's turn runs.
    /// The walk operations below write only for the turn's holder; a daemon whose turn was
    /// taken over gets [`LedgerError::LeaseLost`].
    async fn take_walker(&self, provider: &ProviderName) -> Result<bool, LedgerError>;

    /// Gives the walker turn up early (a pass finished), so another daemon need not wait for it
    /// to expire.
    async fn drop_walker(&self, provider: &ProviderName) -> Result<(), LedgerError>;

    /// The provider's walk as last recorded.
    async fn walk(&self, provider: &ProviderName) -> Result<Option<Walk>, LedgerError>;

    /// Starts the provider's next walk from the head of its listing.
    async fn begin_walk(
        &self,
        provider: &ProviderName,
        early_stop: bool,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Walk, LedgerError>;

    /// ONE transaction: a listed page's batches and the walk's next position.
    #[allow(clippy::too_many_arguments)]
    async fn apply_list_page(
        &self,
        provider: &ProviderName,
        walk: i64,
        batches: &[RemoteBatch],
        next: Option<&str>,
        at_end: bool,
        since_margin: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<BatchSeen>, LedgerError>;

    /// Marks `walk` complete without a further page.
    async fn complete_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        since_margin: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Marks `walk` failed at its saved position.
    async fn fail_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    // --- Downloads: claims under a lease, and their outcomes.

    /// Claims up to `limit` due items, earliest deadline first, each under this daemon's lease
    /// (items whose lease expired are due again: their daemon died).
    async fn claim_due(
        &self,
        providers: &[ProviderName],
        not_after: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError>;

    /// Extends this daemon's leases on `items`; returns those it no longer holds (taken over by
    /// another daemon after expiring, or no longer downloading): their downloads should stop.
    async fn renew_leases(&self, items: &[DueItem]) -> Result<Vec<DueItem>, LedgerError>;

    /// A durable publish: Mirrored with bytes, sha256 and path. Refused with
    /// [`LedgerError::LeaseLost`] when another daemon holds the item now.
    async fn mark_mirrored(
        &self,
        item: &DueItem,
        published: &Published,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Back to Ready, attempts+1, last_error, next_attempt_at.
    async fn mark_retry(
        &self,
        item: &DueItem,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// A permanent error: Failed.
    async fn mark_failed(&self, item: &DueItem, error: &str) -> Result<(), LedgerError>;

    /// The result is gone: Lost.
    async fn mark_lost(&self, item: &DueItem, error: &str) -> Result<(), LedgerError>;

    /// A note on an item, its state unchanged.
    async fn note_error(&self, item: &DueItem, note: &str) -> Result<(), LedgerError>;

    /// Back to Ready without counting an attempt; only this daemon's claims change.
    async fn release(&self, items: &[DueItem]) -> Result<(), LedgerError>;

    /// Claims a crash of this daemon left Downloading, for start-up recovery.
    async fn in_flight(&self) -> Result<Vec<DueItem>, LedgerError>;

    // --- Alerts, passes and pacing.

    /// True the first time only: each event alerts once.
    async fn claim_alert(&self, key: &str, now: DateTime<Utc>) -> Result<bool, LedgerError>;

    /// Forgets an alert key.
    async fn clear_alert(&self, key: &str) -> Result<(), LedgerError>;

    /// Records a pass's end; returns since when the provider has been failing.
    async fn record_pass(
        &self,
        provider: &ProviderName,
        at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, LedgerError>;

    /// Records the provider's pace after a pass.
    async fn save_pace(&self, provider: &ProviderName, pace: Pace) -> Result<(), LedgerError>;

    /// The pace last recorded.
    async fn pace(&self, provider: &ProviderName) -> Result<Option<Pace>, LedgerError>;

    // --- Reports.

    /// Per-provider counts and figures for `status`.
    async fn summary(
        &self,
        providers: &[(ProviderName, String)],
        now: DateTime<Utc>,
        alert_margin: std::time::Duration,
    ) -> Result<Vec<ProviderSummary>, LedgerError>;

    /// Non-final items within `margin` of their deadline, earliest first.
    async fn at_risk(
        &self,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError>;

    /// Items a pass leaves due but not mirrored.
    async fn unmirrored(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError>;

    /// Ready items deferred past `now`.
    async fn deferred(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Listed, LedgerError>;

    /// `status --items`.
    async fn list_items(
        &self,
        providers: &[ProviderName],
        filter: ItemFilter,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Listed, LedgerError>;

    /// One item's row.
    async fn item(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        item: &ItemId,
    ) -> Result<Option<ItemRow>, LedgerError>;

    /// Items of a provider in a state, earliest deadline first.
    async fn items_in_state(
        &self,
        provider: &ProviderName,
        state: ItemState,
        limit: usize,
    ) -> Result<Vec<ItemRow>, LedgerError>;
}
