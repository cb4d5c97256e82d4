//! The download queue: claims ready items earliest-deadline-first from the ledger, runs at most
//! `download.concurrency` fetches at once, streams each body into storage, and records the outcome.
//!
//! The queue is the ledger itself: claiming marks rows `downloading` in one transaction, so a crash
//! leaves exactly the in-flight rows behind for start-up recovery. On shutdown no new item is
//! claimed; in-flight fetches get `drain_timeout` to finish, the rest are aborted and released.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::DownloadSettings;
use crate::error::{LedgerError, ProviderError};
use crate::ledger::Ledger;
use crate::model::{DueItem, Observer, ProviderName};
use crate::provider::{Provider, speed};
use crate::storage::{Storage, WriteError};
use futures_util::StreamExt;

#[cfg(test)]
#[path = "download_tests.rs"]
mod tests;

/// Attempts after which a body that keeps arriving malformed fails the item.
const MAX_MALFORMED_ATTEMPTS: u32 = 3;

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
        Self {
            ledger,
            storage,
            providers: Arc::new(providers),
            settings,
            observer,
        }
    }

    /// Downloads every item that is ready and due by `not_after`, then returns. Each item is tried
    /// at most once per drain (a retry is scheduled after `not_after`).
    pub async fn drain(
        &self,
        not_after: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<DownloadReport, LedgerError> {
        let names: Vec<ProviderName> = self.providers.keys().cloned().collect();
        let mut report = DownloadReport::default();
        let mut tasks = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, DueItem> = HashMap::new();
        let limit = self.settings.concurrency.max(1);
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
                    let claimed = self.ledger.claim_due(&names, not_after, free).await?;
                    // Retries are scheduled after `not_after`, so a short claim means the queue
                    // is empty.
                    exhausted = claimed.len() < free;
                    queued.extend(claimed);
                }
                let Some(item) = queued.pop_front() else {
                    break;
                };
                self.warn_if_at_risk(&item);
                let this = self.clone();
                let it = item.clone();
                let handle = tasks.spawn(async move { this.fetch_one(&it).await });
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

    /// Waits up to `drain_timeout` for in-flight fetches, then aborts and releases the rest.
    async fn stop(
        &self,
        tasks: &mut JoinSet<Result<Outcome, LedgerError>>,
        in_flight: &mut HashMap<tokio::task::Id, DueItem>,
        report: &mut DownloadReport,
    ) -> Result<(), LedgerError> {
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
        report.interrupted += left.len() as u64;
        if !left.is_empty() {
            tracing::warn!(
                count = left.len(),
                "downloads interrupted by shutdown; they resume on the next start"
            );
            self.ledger.release(&left).await?;
        }
        Ok(())
    }

    fn warn_if_at_risk(&self, item: &DueItem) {
        let Some(deadline) = item.deadline else {
            return;
        };
        let left = deadline - Utc::now();
        let margin = chrono::Duration::from_std(self.settings.alert_margin).unwrap_or_default();
        if left >= margin {
            return;
        }
        let (p, b, i) = (&item.provider, &item.batch, &item.item);
        let deadline = deadline.to_rfc3339();
        match left.to_std() {
            Ok(left) => tracing::warn!(
                provider = %p, batch = %b, item = %i, deadline,
                "item at risk: {} left before the provider deletes it",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ),
            Err(_) => tracing::warn!(
                provider = %p, batch = %b, item = %i, deadline,
                "item past its deadline: trying anyway, the provider may still have it"
            ),
        }
    }

    async fn fetch_one(&self, item: &DueItem) -> Result<Outcome, LedgerError> {
        let Some(provider) = self.providers.get(&item.provider) else {
            // Rows of a provider no longer configured are not claimed; this is defensive.
            self.ledger.release(std::slice::from_ref(item)).await?;
            return Ok(Outcome::Retrying);
        };
        // Sidecars first: the result file appearing is what marks the whole item complete, for
        // start-up recovery too.
        let mut sidecar_notes = Vec::new();
        for suffix in provider.sidecars() {
            let rel = match Storage::sidecar_path(&item.provider, &item.batch, &item.item, &suffix)
            {
                Ok(rel) => rel,
                Err(e) => return self.record(item, ItemError::Disk(e.to_string())).await,
            };
            let body = provider.fetch_sidecar(item, &suffix).await;
            let validate = self.settings.validate_json && suffix.ends_with("json");
            match self.fetch_to(&rel, body, validate).await {
                Ok(_) => {}
                // A sidecar the provider no longer has (or refuses) must not cost the result
                // itself: say so, keep it on the item, and go on.
                Err(ItemError::Provider(e)) if !e.is_retryable() => {
                    tracing::warn!(provider = %item.provider, batch = %item.batch, item = %item.item, "sidecar {suffix} not mirrored: {e}");
                    sidecar_notes.push(format!("sidecar {suffix}: {e}"));
                }
                Err(e) => return self.record(item, e).await,
            }
        }
        let rel = Storage::item_path(&item.provider, &item.batch, &item.item);
        let body = provider.fetch_result(item).await;
        match self.fetch_to(&rel, body, self.settings.validate_json).await {
            Ok(published) => {
                self.ledger
                    .mark_mirrored(item, &published, Utc::now())
                    .await?;
                if !sidecar_notes.is_empty() {
                    self.ledger
                        .note_error(item, &sidecar_notes.join("; "))
                        .await?;
                }
                self.observer.mirrored(&item.provider, published.bytes);
                tracing::debug!(provider = %item.provider, batch = %item.batch, item = %item.item, bytes = published.bytes, "mirrored");
                Ok(Outcome::Mirrored(published.bytes))
            }
            Err(e) => self.record(item, e).await,
        }
    }

    /// Streams one body into `rel`, enforcing the cap and, if asked, that it is JSON.
    async fn fetch_to(
        &self,
        rel: &std::path::Path,
        body: Result<crate::provider::ResultBody, ProviderError>,
        validate_json: bool,
    ) -> Result<crate::model::Published, ItemError> {
        let body = body.map_err(ItemError::Provider)?;
        let cap = self.settings.max_body_bytes;
        if let Some(n) = body.content_length.filter(|n| *n > cap) {
            return Err(ItemError::TooLarge(format!(
                "{}: announced {n} bytes, cap is {cap}",
                body.url
            )));
        }
        let observer = self.observer.clone();
        let s = &self.settings;
        let stream = speed::guard(
            body.stream,
            body.url.clone(),
            s.low_speed_limit,
            s.low_speed_time,
        )
        .inspect(move |_| observer.progress());
        self.storage
            .write_atomic(rel, stream, cap, validate_json)
            .await
            .map_err(|e| match e {
                WriteError::Body(e) => ItemError::Provider(e),
                WriteError::TooLarge { cap } => {
                    ItemError::TooLarge(format!("{}: body exceeds the {cap}-byte cap", body.url))
                }
                WriteError::InvalidJson(m) => {
                    ItemError::Malformed(format!("{}: not valid JSON: {m}", body.url))
                }
                WriteError::Storage(e) if e.is_disk_full() => {
                    self.observer.disk_full(&e.to_string());
                    ItemError::DiskFull(e.to_string())
                }
                WriteError::Storage(e) => ItemError::Disk(e.to_string()),
            })
    }

    async fn record(&self, item: &DueItem, error: ItemError) -> Result<Outcome, LedgerError> {
        let (p, b, i) = (&item.provider, &item.batch, &item.item);
        match error {
            ItemError::Provider(ProviderError::NotReady { body, .. }) => {
                // Listed as done but not servable yet: try again on the next pass.
                tracing::info!(provider = %p, batch = %b, item = %i, "result not ready yet: {body}");
                let next = Utc::now() + chrono::Duration::milliseconds(1);
                self.ledger
                    .mark_retry(item, &format!("not ready yet: {body}"), next)
                    .await?;
                Ok(Outcome::NotReady)
            }
            ItemError::Provider(e @ ProviderError::Gone { .. }) => {
                tracing::error!(provider = %p, batch = %b, item = %i, "LOST: the provider no longer has this result: {e}");
                self.ledger.mark_lost(item, &e.to_string()).await?;
                self.observer.lost(item, &e.to_string());
                Ok(Outcome::Lost)
            }
            ItemError::Provider(e) if e.is_retryable() => {
                self.retry_later(item, &e.to_string()).await
            }
            ItemError::Malformed(m) if item.attempts + 1 < MAX_MALFORMED_ATTEMPTS => {
                self.retry_later(item, &m).await
            }
            ItemError::DiskFull(m) => {
                tracing::warn!(provider = %p, batch = %b, item = %i, "not written, the disk is full: {m}");
                self.ledger.release(std::slice::from_ref(item)).await?;
                Ok(Outcome::DiskFull)
            }
            ItemError::Disk(m) => {
                tracing::error!(provider = %p, batch = %b, item = %i, "cannot write the result: {m}");
                self.retry_later(item, &m).await
            }
            ItemError::Provider(e) => self.fail(item, &e.to_string()).await,
            ItemError::Malformed(m) | ItemError::TooLarge(m) => self.fail(item, &m).await,
        }
    }

    async fn retry_later(&self, item: &DueItem, error: &str) -> Result<Outcome, LedgerError> {
        let wait = item_backoff(item.attempts);
        tracing::warn!(
            provider = %item.provider, batch = %item.batch, item = %item.item,
            attempt = item.attempts + 1,
            "download failed, retrying in {}: {error}",
            humantime::format_duration(Duration::from_secs(wait.as_secs()))
        );
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        self.ledger.mark_retry(item, error, next).await?;
        Ok(Outcome::Retrying)
    }

    async fn fail(&self, item: &DueItem, error: &str) -> Result<Outcome, LedgerError> {
        tracing::error!(provider = %item.provider, batch = %item.batch, item = %item.item, "download failed for good: {error}");
        self.ledger.mark_failed(item, error).await?;
        Ok(Outcome::Failed)
    }
}

/// Why one item's download did not publish.
enum ItemError {
    Provider(ProviderError),
    Malformed(String),
    TooLarge(String),
    Disk(String),
    /// ENOSPC: not the item's fault, so it costs no attempt.
    DiskFull(String),
}

/// Item-level back-off between passes: grows with the attempts, capped at an hour, jittered.
fn item_backoff(attempts: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(30))
        .with_max_delay(Duration::from_secs(3600))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.min(16) as usize)
        .unwrap_or(Duration::from_secs(3600))
}
