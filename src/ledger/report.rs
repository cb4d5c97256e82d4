//! The ledger's read side for reports: per-provider summaries, items at risk, single rows and
//! row listings (`status`, metrics, alerts, tests), and the on-demand integrity check.

use chrono::{DateTime, Utc};

use super::rows::ms;
use super::{ItemRow, Ledger, duration_ms, reads};
use crate::error::LedgerError;
use crate::model::{BatchId, DueItem, ItemId, ItemState, ProviderName, ProviderSummary};

impl Ledger {
    /// Per provider (in the order given, kind alongside): counts per ItemState name (every state
    /// present), at_risk = non-final items with deadline <= now + `alert_margin` (passed ones
    /// included), seconds from now to the earliest non-final deadline (negative once passed; floor),
    /// last_pass_at and last_error.
    pub async fn summary(
        &self,
        providers: &[(ProviderName, String)],
        now: DateTime<Utc>,
        alert_margin: std::time::Duration,
    ) -> Result<Vec<ProviderSummary>, LedgerError> {
        let providers: Vec<(String, String)> = providers
            .iter()
            .map(|(p, k)| (p.as_str().to_owned(), k.clone()))
            .collect();
        let margin = duration_ms(alert_margin);
        self.run(move |c| reads::summary(c, &providers, ms(now), margin))
            .await
    }

    /// Non-final items whose deadline is within `margin` of now (or passed), earliest first, at
    /// most `limit`.
    pub async fn at_risk(
        &self,
        now: DateTime<Utc>,
        margin: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        let horizon = ms(now).saturating_add(duration_ms(margin));
        self.run(move |c| reads::at_risk(c, horizon, limit)).await
    }

    /// One item's row, for tests and diagnostics.
    pub async fn item(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        item: &ItemId,
    ) -> Result<Option<ItemRow>, LedgerError> {
        let (p, b, i) = (
            provider.as_str().to_owned(),
            batch.as_str().to_owned(),
            item.as_str().to_owned(),
        );
        self.run(move |c| reads::item(c, &p, &b, &i)).await
    }

    /// Items of a provider in a state (earliest deadline first), for tests and status listings.
    pub async fn items_in_state(
        &self,
        provider: &ProviderName,
        state: ItemState,
        limit: usize,
    ) -> Result<Vec<ItemRow>, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| reads::items_in_state(c, &provider, state, limit))
            .await
    }

    /// `PRAGMA quick_check` on demand (opening already runs it): `["ok"]` when the file is sound,
    /// else SQLite's findings. Works on a read-only ledger.
    pub async fn quick_check(&self) -> Result<Vec<String>, LedgerError> {
        self.run(|c| reads::quick_check(c)).await
    }
}
