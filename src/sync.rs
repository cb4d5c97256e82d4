//! One listing pass over one provider: a resumable walk over the batch listing into ledger rows,
//! then each batch not yet fully handled through its item feed.
//!
//! The walk is kept in the ledger (see [`crate::model::Walk`]): each page's rows commit together
//! with the walk's new position, so a walk cut short by a failing page or a crash resumes where it
//! stopped on the next pass, and reads to the end; only a walk that reached the end moves the
//! watermark. Batches are listed newest first, so a walk may stop early at a page whose batches are
//! all handled and were first seen at or below the watermark: every older batch was listed by then.
//! Early stop is off for a resumed walk, for the first walk, and after the provider refused a saved
//! position (the walk starts again from the head and reads to the end). A provider that filters its
//! listing by update time is walked `since` the start of the last complete walk instead, and `since`
//! never advances past a walk that failed. Batches still open in the ledger but not reached are read
//! directly, so an old long-running batch is never forgotten.
//!
//! A batch a webhook named is read the same way by id alone ([`refresh_named`]), without the
//! walk; one the provider will not answer for sends the pass back to the walk.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use crate::error::{Error, ProviderError};
use crate::ledger::Ledger;
use crate::model::{BatchId, ListRequest, Observer, RemoteBatch, RemoteStatus, Walk, WalkState};
use crate::provider::Provider;

/// Most item pages read for one batch in one pass; a feed longer than this resumes next pass.
const MAX_ITEM_PAGES: usize = 10_000;

/// How far before the start of the last complete walk a `since` listing reaches: our clock and the
/// provider's may disagree, and listing a batch twice costs nothing.
const SINCE_MARGIN: Duration = Duration::from_secs(10 * 60);

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
    /// The number of the last walk this pass made.
    pub walk: i64,
    /// The pass first finished a walk an earlier pass had left incomplete.
    pub resumed: bool,
    /// The provider refused the saved position, so the walk started again from the head.
    pub restarted: bool,
    /// Only batches named by webhooks were read, by id: the listing was not walked.
    pub by_id: bool,
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

/// Lists one provider into the ledger: finishes an incomplete walk first, then walks from the head.
pub async fn list_provider(
    provider: &dyn Provider,
    ledger: &Ledger,
    observer: &dyn Observer,
) -> Result<ListReport, ListError> {
    let name = provider.name().clone();
    let mut report = ListReport::default();
    let mut visited: HashSet<BatchId> = HashSet::new();
    let mut walk = match ledger.walk(&name).await? {
        Some(w) if w.state != WalkState::Complete => {
            tracing::warn!(
                provider = %name, walk = w.walk, pages_read = w.pages,
                "resuming a listing walk left incomplete ({}): reading on to the end",
                w.last_error.as_deref().unwrap_or("interrupted")
            );
            report.resumed = true;
            w
        }
        prior => head_walk(provider, ledger, prior.as_ref()).await?,
    };
    let mut early_stop = walk.early_stop && !report.resumed;
    loop {
        let from_head = walk.position.is_none();
        let walked = walk_listing(
            provider,
            ledger,
            observer,
            &mut walk,
            early_stop,
            &mut visited,
            &mut report,
        )
        .await;
        match walked {
            // The resumed walk covered the listing as it was when it began; what was added since
            // sits at the head, so walk from there too (it stops at the first page of known ones).
            Ok(()) if report.resumed && !from_head => {
                let prior = ledger.walk(&name).await?;
                walk = head_walk(provider, ledger, prior.as_ref()).await?;
                early_stop = walk.early_stop;
            }
            Ok(()) => break,
            Err(ListError::Provider(e))
                if !from_head && e.is_refused_request() && !report.restarted =>
            {
                tracing::warn!(
                    provider = %name, walk = walk.walk,
                    "the provider refused the saved listing position; listing again from the head, to the end: {e}"
                );
                report.restarted = true;
                walk = ledger
                    .begin_walk(&name, false, walk.since, Utc::now())
                    .await?;
                early_stop = false;
            }
            Err(e) => {
                if let ListError::Provider(pe) = &e
                    && !matches!(pe, ProviderError::Cancelled)
                {
                    ledger
                        .fail_walk(&name, walk.walk, &pe.to_string(), Utc::now())
                        .await?;
                }
                return Err(e);
            }
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

/// Starts a walk from the head: it may stop early once a walk has completed, and lists `since`
/// the last complete walk's start where the provider can filter by that.
async fn head_walk(
    provider: &dyn Provider,
    ledger: &Ledger,
    prior: Option<&Walk>,
) -> Result<Walk, ListError> {
    let complete = prior.filter(|w| w.complete_through.is_some());
    let (early_stop, since) = if provider.lists_since() {
        (false, complete.and_then(|w| w.complete_since))
    } else {
        (complete.is_some(), None)
    };
    Ok(ledger
        .begin_walk(provider.name(), early_stop, since, Utc::now())
        .await?)
}

/// Reads the listing from `walk`'s position until its end (or an early stop), committing each
/// page's rows with the walk's next position.
async fn walk_listing(
    provider: &dyn Provider,
    ledger: &Ledger,
    observer: &dyn Observer,
    walk: &mut Walk,
    early_stop: bool,
    visited: &mut HashSet<BatchId>,
    report: &mut ListReport,
) -> Result<(), ListError> {
    let name = provider.name().clone();
    report.walk = walk.walk;
    loop {
        let request = ListRequest {
            cursor: walk.position.clone(),
            since: walk.since,
        };
        let page = provider.list_batches(&request).await?;
        observer.progress();
        report.pages += 1;
        report.batches += page.batches.len() as u64;
        note_rejected(name.as_str(), None, &page.rejected, report);
        if page.next_cursor.is_some() && page.next_cursor == walk.position {
            // Following it would read the same page forever; the walk cannot go on.
            return Err(ListError::Provider(ProviderError::Malformed {
                url: format!("{name} batch listing"),
                message: "the page after this cursor named the same cursor again".into(),
            }));
        }
        // A page of refused entries still moves the walk on: later pages may be fine. An empty
        // page ends it whatever cursor it names.
        let answered = !page.batches.is_empty() || !page.rejected.is_empty();
        let next = page.next_cursor.clone().filter(|_| answered);
        let at_end = next.is_none();
        let seen = ledger
            .apply_list_page(
                &name,
                walk.walk,
                &page.batches,
                next.as_deref(),
                at_end,
                SINCE_MARGIN,
                Utc::now(),
            )
            .await?;
        walk.position = next;
        for (batch, seen) in page.batches.iter().zip(&seen) {
            visited.insert(batch.id.clone());
            if !seen.handled {
                sync_batch(provider, ledger, batch, report).await?;
                observer.progress();
            }
        }
        if at_end {
            return Ok(());
        }
        let known = !page.batches.is_empty()
            && page.rejected.is_empty()
            && seen.iter().all(|s| s.handled && s.within);
        if early_stop && known {
            ledger
                .complete_walk(&name, walk.walk, SINCE_MARGIN, Utc::now())
                .await?;
            report.stopped_early = true;
            return Ok(());
        }
    }
}

/// Reads the batches `named` by webhooks by id, each as a listed batch is read (detail and item
/// feed, upserted into the ledger), without walking the listing. When the provider does not
/// answer for one (404 for an id it does not know, any other refusal or failure), the provider
/// is listed instead, as a pass without names would: the walk finds whatever the event meant.
pub async fn refresh_named(
    provider: &dyn Provider,
    ledger: &Ledger,
    observer: &dyn Observer,
    named: &[BatchId],
) -> Result<ListReport, ListError> {
    let name = provider.name();
    let mut report = ListReport {
        by_id: true,
        ..ListReport::default()
    };
    for id in named {
        match read_batch(provider, ledger, id, &mut report).await {
            Ok(()) => observer.progress(),
            Err(ListError::Provider(e)) if !matches!(e, ProviderError::Cancelled) => {
                tracing::warn!(
                    provider = %name, batch = %id,
                    "a batch named by a webhook could not be read ({e}): listing the provider instead"
                );
                let mut listed = list_provider(provider, ledger, observer).await?;
                listed.batches_read += report.batches_read;
                listed.items += report.items;
                listed.rejected.append(&mut report.rejected);
                return Ok(listed);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// [`read_batch`] for a listing pass: one batch the provider refuses (gone, hostile id, 4xx)
/// is reported and must not stop the others.
async fn sync_batch(
    provider: &dyn Provider,
    ledger: &Ledger,
    batch: &RemoteBatch,
    report: &mut ListReport,
) -> Result<(), ListError> {
    match read_batch(provider, ledger, &batch.id, report).await {
        Err(ListError::Provider(e))
            if !e.is_retryable() && !matches!(e, ProviderError::Cancelled) =>
        {
            let name = provider.name();
            tracing::error!(provider = %name, batch = %batch.id, "cannot read this batch's items: {e}");
            report.rejected.push(format!("batch {}: {e}", batch.id));
            Ok(())
        }
        other => other,
    }
}

/// Reads a batch's item feed from its saved cursor and stores every page with its cursor.
async fn read_batch(
    provider: &dyn Provider,
    ledger: &Ledger,
    batch: &BatchId,
    report: &mut ListReport,
) -> Result<(), ListError> {
    let name = provider.name();
    let mut cursor = ledger.item_cursor(name, batch).await?;
    report.batches_read += 1;
    for _ in 0..MAX_ITEM_PAGES {
        let page = provider.batch_items(batch, cursor.as_deref()).await?;
        report.items += page.items.len() as u64;
        note_rejected(name.as_str(), Some(batch), &page.rejected, report);
        // Unknown status words are kept on their items (pending, polled again) and reported here.
        let unrecognized: Vec<String> = page
            .items
            .iter()
            .filter(|i| i.status == RemoteStatus::Unrecognized)
            .map(|i| format!("item {}: {}", i.id, i.error.as_deref().unwrap_or("")))
            .collect();
        note_rejected(name.as_str(), Some(batch), &unrecognized, report);
        let next = page
            .next_cursor
            .as_deref()
            .filter(|n| Some(*n) != cursor.as_deref());
        // Only a change-feed cursor is worth keeping; a page cursor is good for this pass only.
        let keep = next.filter(|_| page.feed_cursor);
        ledger
            .apply_item_page(
                name,
                batch,
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
    ledger.refresh_handled(name, batch).await?;
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
        async fn list_batches(&self, _: &ListRequest) -> Result<BatchPage, ProviderError> {
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
