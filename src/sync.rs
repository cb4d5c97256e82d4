//! One listing pass over one provider: batch pages into ledger rows, then each batch not yet fully
//! handled through its item feed.
//!
//! Listing stops early at a page whose batches are all terminal and fully handled: batches are
//! listed newest first, so later pages only hold older, handled ones. Batches still open in the
//! ledger but not reached before stopping are read directly, so an old long-running batch is never
//! forgotten. A cursor is saved only together with the rows of its page.

use std::collections::HashSet;

use chrono::Utc;

use crate::error::{Error, ProviderError};
use crate::ledger::Ledger;
use crate::model::{BatchId, Observer, RemoteBatch, RemoteStatus};
use crate::provider::Provider;

/// Most item pages read for one batch in one pass; a feed longer than this resumes next pass.
const MAX_ITEM_PAGES: usize = 10_000;

/// What one listing pass saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReport {
    pub pages: u64,
    pub batches: u64,
    pub batches_read: u64,
    pub items: u64,
    /// Entries the adapter refused, with reasons (also logged).
    pub rejected: Vec<String>,
    pub stopped_early: bool,
}

/// Why a listing pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Other(#[from] Error),
}

impl From<crate::error::LedgerError> for ListError {
    fn from(e: crate::error::LedgerError) -> Self {
        Self::Other(e.into())
    }
}

/// Lists one provider into the ledger.
pub async fn list_provider(
    provider: &dyn Provider,
    ledger: &Ledger,
    observer: &dyn Observer,
) -> Result<ListReport, ListError> {
    let name = provider.name().clone();
    let mut report = ListReport::default();
    let mut visited: HashSet<BatchId> = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = provider.list_batches(cursor.as_deref()).await?;
        observer.progress();
        report.pages += 1;
        report.batches += page.batches.len() as u64;
        note_rejected(&name.to_string(), None, &page.rejected, &mut report);
        let handled = ledger
            .upsert_batches(&name, &page.batches, Utc::now())
            .await?;
        for (batch, was_handled) in page.batches.iter().zip(&handled) {
            visited.insert(batch.id.clone());
            if !was_handled {
                sync_batch(provider, ledger, batch, &mut report).await?;
                observer.progress();
            }
        }
        let answered = !page.batches.is_empty() || !page.rejected.is_empty();
        if !page.batches.is_empty() && page.rejected.is_empty() && handled.iter().all(|h| *h) {
            report.stopped_early = true;
            break;
        }
        match page.next_cursor {
            // A page of refused entries still moves the listing on: later pages may be fine.
            Some(next) if answered && cursor.as_deref() != Some(&next) => cursor = Some(next),
            _ => break,
        }
    }
    // Open batches the listing did not reach (it stopped early, or the provider stopped listing
    // them) are read directly.
    for id in ledger.unhandled_batches(&name).await? {
        if visited.contains(&id) {
            continue;
        }
        let known = RemoteBatch {
            id,
            status: crate::model::BatchStatus::Running,
            total_items: None,
            created_at: None,
            expires_at: None,
        };
        sync_batch(provider, ledger, &known, &mut report).await?;
        observer.progress();
    }
    Ok(report)
}

/// Reads a batch's item feed from its saved cursor and stores every page with its cursor.
async fn sync_batch(
    provider: &dyn Provider,
    ledger: &Ledger,
    batch: &RemoteBatch,
    report: &mut ListReport,
) -> Result<(), ListError> {
    let name = provider.name();
    let mut cursor = ledger.item_cursor(name, &batch.id).await?;
    report.batches_read += 1;
    for _ in 0..MAX_ITEM_PAGES {
        let page = match provider.batch_items(&batch.id, cursor.as_deref()).await {
            Ok(p) => p,
            Err(e) if !e.is_retryable() && !matches!(e, ProviderError::Cancelled) => {
                // One batch the provider refuses (gone, hostile id, 4xx) must not stop the others.
                tracing::error!(provider = %name, batch = %batch.id, "cannot read this batch's items: {e}");
                report.rejected.push(format!("batch {}: {e}", batch.id));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        report.items += page.items.len() as u64;
        note_rejected(name.as_str(), Some(&batch.id), &page.rejected, report);
        // Unknown status words are kept on their items (pending, polled again) and reported here.
        let unrecognized: Vec<String> = page
            .items
            .iter()
            .filter(|i| i.status == RemoteStatus::Unrecognized)
            .map(|i| format!("item {}: {}", i.id, i.error.as_deref().unwrap_or("")))
            .collect();
        note_rejected(name.as_str(), Some(&batch.id), &unrecognized, report);
        let next = page
            .next_cursor
            .as_deref()
            .filter(|n| Some(*n) != cursor.as_deref());
        // Only a change-feed cursor is worth keeping; a page cursor is good for this pass only.
        let keep = next.filter(|_| page.feed_cursor);
        ledger
            .apply_item_page(
                name,
                &batch.id,
                page.batch.as_ref(),
                &page.items,
                keep,
                Utc::now(),
            )
            .await?;
        let progressed = next.is_some() && (!page.items.is_empty() || !page.rejected.is_empty());
        if !(page.has_more && progressed) {
            break;
        }
        cursor = page.next_cursor;
    }
    ledger.refresh_handled(name, &batch.id).await?;
    Ok(())
}

fn note_rejected(
    provider: &str,
    batch: Option<&BatchId>,
    rejected: &[String],
    report: &mut ListReport,
) {
    for r in rejected {
        match batch {
            Some(b) => tracing::error!(provider, batch = %b, "entry refused: {r}"),
            None => tracing::error!(provider, "entry refused: {r}"),
        }
        report.rejected.push(r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        BatchPage, BatchStatus, DueItem, ItemId, ItemPage, ItemState, ProviderName, RemoteItem,
    };
    use crate::provider::ResultBody;

    /// One terminal batch with one item whose status word nobody knows.
    struct Odd(ProviderName);

    #[async_trait::async_trait]
    impl Provider for Odd {
        fn name(&self) -> &ProviderName {
            &self.0
        }
        async fn list_batches(&self, _: Option<&str>) -> Result<BatchPage, ProviderError> {
            Ok(BatchPage {
                batches: vec![batch()],
                rejected: vec![],
                next_cursor: None,
            })
        }
        async fn batch_items(
            &self,
            _: &BatchId,
            _: Option<&str>,
        ) -> Result<ItemPage, ProviderError> {
            Ok(ItemPage {
                batch: Some(batch()),
                items: vec![RemoteItem {
                    id: ItemId::parse("i1").unwrap(),
                    status: RemoteStatus::Unrecognized,
                    deadline: None,
                    error: Some(crate::provider::wire::unrecognized("frobbed")),
                    locator: None,
                }],
                rejected: vec![],
                next_cursor: None,
                has_more: false,
                feed_cursor: false,
            })
        }
        async fn fetch_result(&self, _: &DueItem) -> Result<ResultBody, ProviderError> {
            unreachable!("nothing is ready")
        }
    }

    fn batch() -> RemoteBatch {
        RemoteBatch {
            id: BatchId::parse("b1").unwrap(),
            status: BatchStatus::Completed,
            total_items: Some(1),
            created_at: None,
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn an_unknown_item_status_is_reported_kept_pending_and_its_batch_not_closed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.sqlite3")).unwrap();
        let p = ProviderName::parse("odd").unwrap();
        let provider = Odd(p.clone());
        let nothing = crate::model::no_observer();
        let report = list_provider(&provider, &ledger, nothing.as_ref())
            .await
            .unwrap();
        assert_eq!(report.rejected.len(), 1, "{report:?}");
        assert!(report.rejected[0].contains("frobbed"));
        let row = ledger
            .item(
                &p,
                &BatchId::parse("b1").unwrap(),
                &ItemId::parse("i1").unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, ItemState::Pending);
        assert!(row.last_error.unwrap().contains("frobbed"));
        // The batch stays open, so the next pass looks at the item again.
        assert_eq!(
            ledger.unhandled_batches(&p).await.unwrap(),
            vec![BatchId::parse("b1").unwrap()]
        );
    }
}
