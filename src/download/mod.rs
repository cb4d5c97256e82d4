//! The download queue: claims ready items earliest-deadline-first from the ledger, runs at most
//! `download.concurrency` fetches at once, streams each body into storage, and records the outcome.
//!
//! The queue is the ledger itself: claiming marks rows `downloading` in one transaction, so a crash
//! leaves exactly the in-flight rows behind for start-up recovery. On shutdown no new item is
//! claimed; in-flight fetches get `drain_timeout` to finish, the rest are aborted, and each of
//! those is adopted if its result was published before the abort landed, else released.
//! What one item goes through (sidecars, in-pass retries, the outcome) is [`fetch`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::DownloadSettings;
use crate::error::{Error, LedgerError};
use crate::ledger::Ledger;
use crate::model::{DueItem, Observer, ProviderName};
use crate::provider::Provider;
use crate::storage::Storage;

mod fetch;
#[cfg(test)]
mod tests;

/// What one drain of the queue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadReport {
    pub mirrored: u64,
    pub bytes: u64,
    pub not_ready: u64,
    pub retrying: u64,
    pub failed: u64,
    pub lost: u64,
    /// Items handed back unfinished because of shutdown.
    pub interrupted: u64,
    /// Items handed back, without counting an attempt, because the disk was full; downloads pause
    /// for the rest of the pass and resume on the next one.
    pub paused: u64,
}

impl DownloadReport {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Mirrored(b) => {
                self.mirrored += 1;
                self.bytes += b;
            }
            Outcome::NotReady => self.not_ready += 1,
            Outcome::Retrying => self.retrying += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Lost => self.lost += 1,
            Outcome::DiskFull => self.paused += 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Mirrored(u64),
    NotReady,
    Retrying,
    Failed,
    Lost,
    DiskFull,
}

/// Bounded workers over the ledger's due items.
#[derive(Clone)]
pub struct Downloader {
    ledger: Ledger,
    storage: Arc<Storage>,
    providers: Arc<HashMap<ProviderName, Arc<dyn Provider>>>,
    settings: DownloadSettings,
    observer: Arc<dyn Observer>,
    /// One permit per transfer: `download.concurrency` requests and bodies at once. An item
    /// whose body is in gives its permit back while storage makes it durable, so the next
    /// transfer starts instead of waiting for the disk, and commits gather into groups.
    transfers: Arc<tokio::sync::Semaphore>,
}

/// Items claimed at once per transfer slot: the ones beyond the transfers are results being made
/// durable (or waiting for a slot), so a transfer slot never waits for the disk.
const CLAIMED_PER_TRANSFER: usize = 4;

/// The most rows a daemon with `concurrency` transfers holds claimed (`downloading`) at once:
/// what a crash can leave to release and fetch again.
pub fn claimed_at_most(concurrency: usize) -> usize {
    concurrency.max(1) * CLAIMED_PER_TRANSFER
}

/// The fewest free slots worth a claim: a quarter of the `limit` window, so the other three
/// quarters (three rows per transfer slot) keep the transfers fed meanwhile.
fn claim_batch(limit: usize) -> usize {
    (limit / CLAIMED_PER_TRANSFER).max(1)
}

impl Downloader {
    pub fn new(
        ledger: Ledger,
        storage: Arc<Storage>,
        providers: &[Arc<dyn Provider>],
        settings: DownloadSettings,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let providers = providers
            .iter()
            .map(|p| (p.name().clone(), p.clone()))
            .collect();
        let transfers = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
        Self {
            ledger,
            storage,
            providers: Arc::new(providers),
            settings,
            observer,
            transfers,
        }
    }

    /// Downloads every item that is ready and due by `not_after`, then returns. Each item is
    /// claimed at most once per drain: its in-pass retries happen inside that claim, and what
    /// still fails is scheduled after `not_after`.
    pub async fn drain(
        &self,
        not_after: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<DownloadReport, Error> {
        let names: Vec<ProviderName> = self.providers.keys().cloned().collect();
        let mut report = DownloadReport::default();
        let mut tasks = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, DueItem> = HashMap::new();
        let limit = claimed_at_most(self.settings.concurrency);
        let mut exhausted = false;
        // Claimed but not started yet. A claim takes every free slot at once: slots freed while
        // the previous claim was committing are claimed together, so commits stay fewer than
        // items, and claimed rows (running or waiting here) never exceed `limit`. A crash
        // releases waiting rows like any in-flight row (they have no file).
        let mut queued: VecDeque<DueItem> = VecDeque::new();
        loop {
            while !cancel.is_cancelled() && tasks.len() < limit {
                if queued.is_empty() {
                    if exhausted {
                        break;
                    }
                    let free = limit - tasks.len();
                    // A claim is a durable commit (a WAL fsync): gather freed slots until a
                    // quarter of the window is free, while three quarters still keep every
                    // transfer busy. Claiming each freed slot at once cost a fsync per few items.
                    if free < claim_batch(limit) {
                        break;
                    }
                    let claimed = self.ledger.claim_due(&names, not_after, free).await?;
                    // Retries are scheduled after `not_after`, so a short claim means the queue
                    // is empty.
                    exhausted = claimed.len() < free;
                    queued.extend(claimed);
                }
                let Some(item) = queued.pop_front() else {
                    break;
                };
                let span = item_span(&item);
                span.in_scope(|| self.warn_if_at_risk(&item));
                let (this, it, stop) = (self.clone(), item.clone(), cancel.clone());
                let fetch = async move { this.fetch_one(&it, &stop).await };
                let handle = tasks.spawn(fetch.instrument(span));
                in_flight.insert(handle.id(), item);
            }
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                Some(joined) = tasks.join_next_with_id() => {
                    // Everything else already finished is settled too, so the next claim fills
                    // every slot they freed in one commit.
                    let mut next = Some(joined);
                    while let Some(joined) = next {
                        self.settle(joined, &mut in_flight, &mut report, &mut exhausted, &mut queued)
                            .await?;
                        next = tasks.try_join_next_with_id();
                    }
                }
                () = cancel.cancelled() => {
                    self.stop(&mut tasks, &mut in_flight, &mut report).await?;
                    break;
                }
            }
        }
        if !queued.is_empty() {
            let unstarted: Vec<DueItem> = queued.into_iter().collect();
            self.ledger.release(&unstarted).await?;
        }
        Ok(report)
    }

    /// Records one finished fetch; a task that died has its row released.
    async fn settle(
        &self,
        joined: Result<(tokio::task::Id, Result<Outcome, LedgerError>), tokio::task::JoinError>,
        in_flight: &mut HashMap<tokio::task::Id, DueItem>,
        report: &mut DownloadReport,
        exhausted: &mut bool,
        queued: &mut VecDeque<DueItem>,
    ) -> Result<(), LedgerError> {
        match joined {
            Ok((id, outcome)) => {
                in_flight.remove(&id);
                let outcome = outcome?;
                if matches!(outcome, Outcome::DiskFull) && !*exhausted {
                    // Every other write would fail the same way: stop claiming until the next
                    // pass, and keep the attempts for when there is room again.
                    *exhausted = true;
                    let unstarted: Vec<DueItem> = queued.drain(..).collect();
                    self.ledger.release(&unstarted).await?;
                    tracing::error!("disk full: downloads paused until the next pass");
                }
                report.add(outcome);
            }
            Err(e) => {
                if let Some(item) = in_flight.remove(&e.id()) {
                    tracing::error!(provider = %item.provider, batch = %item.batch, item = %item.item, "download task failed: {e}");
                    self.ledger.release(&[item]).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits up to `drain_timeout` for in-flight fetches, then aborts the rest and settles their
    /// rows as start-up recovery would.
    async fn stop(
        &self,
        tasks: &mut JoinSet<Result<Outcome, LedgerError>>,
        in_flight: &mut HashMap<tokio::task::Id, DueItem>,
        report: &mut DownloadReport,
    ) -> Result<(), Error> {
        if !tasks.is_empty() {
            tracing::info!(
                in_flight = tasks.len(),
                "stopping: waiting up to {:?} for downloads in flight",
                self.settings.drain_timeout
            );
        }
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
                Ok(Some(Ok((id, outcome)))) => {
                    in_flight.remove(&id);
                    report.add(outcome?);
                }
                Ok(Some(Err(e))) => {
                    if let Some(item) = in_flight.remove(&e.id()) {
                        self.ledger.release(&[item]).await?;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        let left: Vec<DueItem> = in_flight.drain().map(|(_, v)| v).collect();
        if left.is_empty() {
            return Ok(());
        }
        // An aborted task may have been inside its publish, which runs on to the end on the
        // blocking pool: wait for it, or its result would be released and fetched again.
        self.storage.quiesce().await;
        let released = self.settle_interrupted(left).await?;
        report.interrupted += released;
        if released > 0 {
            tracing::warn!(
                count = released,
                "downloads interrupted by shutdown; they resume on the next start"
            );
        }
        Ok(())
    }

    /// Rows claimed but not finished (a crash, an abort): a result on disk means its publish
    /// completed (the result is renamed last, after its sidecars, only once everything is
    /// durable), so the item is mirrored; otherwise any sidecar it published is removed and the
    /// row is ready again. Returns how many were released.
    pub async fn settle_interrupted(&self, items: Vec<DueItem>) -> Result<u64, Error> {
        let mut released = Vec::new();
        for item in items {
            let settle = async {
                let rel = Storage::item_path(&item.provider, &item.batch, &item.item);
                if !self.storage.exists(&rel) {
                    self.discard_sidecars(&item).await;
                    return Ok::<_, Error>(false);
                }
                let published = self.storage.digest(&rel).await?;
                tracing::info!("adopted a result published just before the interruption");
                self.ledger
                    .mark_mirrored(&item, &published, Utc::now())
                    .await?;
                Ok(true)
            };
            if !settle.instrument(item_span(&item)).await? {
                released.push(item);
            }
        }
        if !released.is_empty() {
            self.ledger.release(&released).await?;
        }
        Ok(released.len() as u64)
    }

    /// Removes the item's published sidecars: they may only exist beside its result.
    async fn discard_sidecars(&self, item: &DueItem) {
        let Some(provider) = self.providers.get(&item.provider) else {
            return;
        };
        let rels: Vec<_> = provider
            .sidecars()
            .iter()
            .filter_map(|s| Storage::sidecar_path(&item.provider, &item.batch, &item.item, s).ok())
            .collect();
        if rels.is_empty() {
            return;
        }
        let storage = self.storage.clone();
        let removed = tokio::task::spawn_blocking(move || storage.remove_published(&rels)).await;
        match removed {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(removed = n, "removed sidecars left without their result")
            }
            Ok(Err(e)) => {
                tracing::error!("cannot remove sidecars left without their result: {e}")
            }
            Err(e) => tracing::error!("sidecar clean-up task failed: {e}"),
        }
    }

    /// Runs inside the item's span.
    fn warn_if_at_risk(&self, item: &DueItem) {
        let Some(deadline) = item.deadline else {
            return;
        };
        let left = deadline - Utc::now();
        let margin = chrono::Duration::from_std(self.settings.alert_margin).unwrap_or_default();
        if left >= margin {
            return;
        }
        let deadline = deadline.to_rfc3339();
        match left.to_std() {
            Ok(left) => tracing::warn!(
                deadline,
                "item at risk: {} left before the provider deletes it",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ),
            Err(_) => tracing::warn!(
                deadline,
                "item past its deadline: trying anyway, the provider may still have it"
            ),
        }
    }
}

/// The span every log line about one item is written in: its provider, batch and id are said
/// once, here, not at each event.
fn item_span(item: &DueItem) -> tracing::Span {
    tracing::info_span!("item", provider = %item.provider, batch = %item.batch, item = %item.item)
}
