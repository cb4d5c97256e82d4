//! One claimed item, start to end: its sidecars staged, its result streamed and published with
//! them, a transient failure retried within the pass, and the outcome recorded in the ledger.
//!
//! In-pass retries are short, capped, jittered and bounded in total ([`IN_PASS_BUDGET`]), never
//! sleep past the item's deadline, and only follow what [`ProviderError::is_retryable`] calls
//! transient. What is still failing after them is deferred to a later pass with the item-level
//! back-off; `409 not ready` is left for the next pass at once.

use std::time::Duration;

use backon::BackoffBuilder;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Downloader, Outcome};
use crate::error::{LedgerError, ProviderError};
use crate::model::{DueItem, Published};
use crate::provider::{Provider, ResultBody, speed};
use crate::storage::{Staged, Storage, WriteError};

/// A body still malformed at this count (this pass's malformed reads plus the item's attempts in
/// earlier passes) fails the item: a result that is always broken must end, not loop.
const MAX_MALFORMED_READS: u32 = 3;
/// Attempts of one item within a pass, the first included.
const ATTEMPTS_IN_PASS: usize = 3;
/// Back-off between in-pass attempts: from this, doubling, jittered…
const IN_PASS_MIN_DELAY: Duration = Duration::from_millis(500);
/// …capped here.
const IN_PASS_MAX_DELAY: Duration = Duration::from_secs(4);
/// No in-pass attempt starts later than this after the item's first one. A body the low-speed
/// guard abandons (15 s by default) gets one more try, not two, so a pass holding such an item
/// still ends in about 30 s.
const IN_PASS_BUDGET: Duration = Duration::from_secs(20);

/// Why one attempt at an item did not publish.
#[derive(Debug)]
pub(super) enum ItemError {
    Provider(ProviderError),
    /// The body arrived but is not JSON: a `ProviderError::Malformed`, counted separately because
    /// a body that is always broken must end the item.
    Malformed(ProviderError),
    TooLarge(String),
    Disk(String),
    /// ENOSPC: not the item's fault, so it costs no attempt.
    DiskFull(String),
}

impl ItemError {
    /// Worth another attempt within the pass: decided by the one retry rule.
    fn transient(&self) -> bool {
        match self {
            Self::Provider(e) | Self::Malformed(e) => e.is_retryable(),
            Self::TooLarge(_) | Self::Disk(_) | Self::DiskFull(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Provider(e) => e.retry_after(),
            _ => None,
        }
    }
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Provider(e) | Self::Malformed(e) => e.fmt(f),
            Self::TooLarge(m) | Self::Disk(m) | Self::DiskFull(m) => f.write_str(m),
        }
    }
}

/// What a successful attempt leaves: the published result, and the sidecars it went without.
struct Landed {
    published: Published,
    notes: Vec<String>,
}

pub(super) fn in_pass_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(IN_PASS_MIN_DELAY)
        .with_max_delay(IN_PASS_MAX_DELAY)
        .with_jitter()
        .with_max_times(ATTEMPTS_IN_PASS - 1)
        .build()
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

impl Downloader {
    pub(super) async fn fetch_one(
        &self,
        item: &DueItem,
        cancel: &CancellationToken,
    ) -> Result<Outcome, LedgerError> {
        let Some(provider) = self.providers.get(&item.provider).cloned() else {
            // Rows of a provider no longer configured are not claimed; this is defensive.
            self.ledger.release(std::slice::from_ref(item)).await?;
            return Ok(Outcome::Retrying);
        };
        let p = &item.provider;
        let started = Instant::now();
        let mut delays = in_pass_backoff();
        let mut malformed = 0;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match self.attempt(provider.as_ref(), item).await {
                Ok(landed) => return self.mirrored(item, landed).await,
                Err(e) => e,
            };
            if matches!(error, ItemError::Malformed(_)) {
                malformed += 1;
            }
            let reads = item.attempts + malformed;
            let Some(wait) = self.in_pass_wait(item, &error, started, reads, &mut delays) else {
                return self.record(item, error, reads).await;
            };
            tracing::warn!(
                attempt,
                "download failed, trying again in {} within this pass: {error}",
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
            );
            self.observer.retry(p);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return self.record(item, error, reads).await,
            }
        }
    }

    /// How long to wait before trying `item` again in this pass, or `None` to stop trying.
    fn in_pass_wait(
        &self,
        item: &DueItem,
        error: &ItemError,
        started: Instant,
        malformed_reads: u32,
        delays: &mut impl Iterator<Item = Duration>,
    ) -> Option<Duration> {
        if !error.transient() {
            return None;
        }
        if matches!(error, ItemError::Malformed(_)) && malformed_reads >= MAX_MALFORMED_READS {
            return None;
        }
        let backoff = delays.next()?;
        let wait = error.retry_after().unwrap_or(backoff);
        if started.elapsed() + wait > IN_PASS_BUDGET {
            return None;
        }
        // Never sleep past the deadline: after it the provider may delete the result.
        let left = item
            .deadline
            .and_then(|d| (d - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO);
        Some(if item.deadline.is_some() {
            wait.min(left)
        } else {
            wait
        })
    }

    /// One try: stage every sidecar, then stream the result and publish it with them.
    async fn attempt(&self, provider: &dyn Provider, item: &DueItem) -> Result<Landed, ItemError> {
        let cap = self.settings.max_body_bytes;
        let mut staged: Vec<Staged> = Vec::new();
        let mut notes = Vec::new();
        for suffix in provider.sidecars() {
            let rel = Storage::sidecar_path(&item.provider, &item.batch, &item.item, &suffix)
                .map_err(|e| ItemError::Disk(e.to_string()))?;
            let validate = self.settings.validate_json && suffix.ends_with("json");
            let one = async {
                let slot = self.transfer_slot().await;
                let body = provider.fetch_sidecar(item, &suffix).await;
                let (stream, url) = self.guarded(body, slot)?;
                let staged = self.storage.stage(&rel, stream, cap, validate).await;
                staged.map_err(|e| self.write_error(url, e))
            };
            match one.await {
                Ok(s) => staged.push(s),
                // A sidecar the provider no longer has (or refuses) must not cost the result
                // itself: say so, keep it on the item, and go on.
                Err(ItemError::Provider(e)) if !e.is_retryable() => {
                    tracing::warn!("sidecar {suffix} not mirrored: {e}");
                    notes.push(format!("sidecar {suffix}: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        let rel = Storage::item_path(&item.provider, &item.batch, &item.item);
        let slot = self.transfer_slot().await;
        let (stream, url) = self.guarded(provider.fetch_result(item).await, slot)?;
        let validate = self.settings.validate_json;
        let published = self
            .storage
            .write_atomic(&rel, stream, cap, validate, staged)
            .await
            .map_err(|e| self.write_error(url, e))?;
        Ok(Landed { published, notes })
    }

    /// Waits for a transfer slot (see `Downloader::transfers`).
    async fn transfer_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.transfers
            .clone()
            .acquire_owned()
            .await
            .expect("the transfer semaphore is never closed")
    }

    /// The body as a stream held to the cap it announced and to the low-speed guard, with the
    /// (redacted) URL it comes from. The transfer `slot` is given back when the body ends (or
    /// is dropped), before storage makes it durable.
    fn guarded(
        &self,
        body: Result<ResultBody, ProviderError>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<
        (
            impl futures_util::Stream<Item = Result<bytes::Bytes, ProviderError>> + Unpin + use<>,
            String,
        ),
        ItemError,
    > {
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
        let mut slot = Some(slot);
        let release = futures_util::stream::poll_fn(move |_| {
            slot.take();
            std::task::Poll::Ready(None)
        });
        Ok((stream.chain(release), body.url))
    }

    fn write_error(&self, url: String, e: WriteError<ProviderError>) -> ItemError {
        match e {
            WriteError::Body(e) => ItemError::Provider(e),
            WriteError::TooLarge { cap } => {
                ItemError::TooLarge(format!("{url}: body exceeds the {cap}-byte cap"))
            }
            WriteError::InvalidJson(message) => ItemError::Malformed(ProviderError::Malformed {
                url,
                message: format!("not valid JSON: {message}"),
            }),
            WriteError::Storage(e) if e.is_disk_full() => {
                self.observer.disk_full(&e.to_string());
                ItemError::DiskFull(e.to_string())
            }
            WriteError::Storage(e) => ItemError::Disk(e.to_string()),
        }
    }

    async fn mirrored(&self, item: &DueItem, landed: Landed) -> Result<Outcome, LedgerError> {
        let Landed { published, notes } = landed;
        self.ledger
            .mark_mirrored(item, &published, Utc::now())
            .await?;
        if !notes.is_empty() {
            self.ledger.note_error(item, &notes.join("; ")).await?;
        }
        self.observer.mirrored(&item.provider, published.bytes);
        tracing::debug!(bytes = published.bytes, "mirrored");
        Ok(Outcome::Mirrored(published.bytes))
    }

    /// Records why the pass is done with `item`; `malformed_reads` counts bodies that were not
    /// JSON, this pass and before.
    async fn record(
        &self,
        item: &DueItem,
        error: ItemError,
        malformed_reads: u32,
    ) -> Result<Outcome, LedgerError> {
        match error {
            ItemError::Provider(ProviderError::NotReady { body, .. }) => {
                // Listed as done but not servable yet: try again on the next pass.
                tracing::info!("result not ready yet: {body}");
                let next = Utc::now() + chrono::Duration::milliseconds(1);
                self.ledger
                    .mark_retry(item, &format!("not ready yet: {body}"), next)
                    .await?;
                Ok(Outcome::NotReady)
            }
            ItemError::Provider(e @ ProviderError::Gone { .. }) => {
                tracing::error!("LOST: the provider no longer has this result: {e}");
                self.discard_sidecars(item).await;
                self.ledger.mark_lost(item, &e.to_string()).await?;
                self.observer.lost(item, &e.to_string());
                Ok(Outcome::Lost)
            }
            ItemError::Malformed(e) if malformed_reads >= MAX_MALFORMED_READS => {
                self.fail(item, &e.to_string()).await
            }
            ItemError::DiskFull(m) => {
                tracing::warn!("not written, the disk is full: {m}");
                self.ledger.release(std::slice::from_ref(item)).await?;
                Ok(Outcome::DiskFull)
            }
            ItemError::Disk(m) => {
                tracing::error!("cannot write the result: {m}");
                self.retry_later(item, &m).await
            }
            e if e.transient() => self.retry_later(item, &e.to_string()).await,
            e => self.fail(item, &e.to_string()).await,
        }
    }

    async fn retry_later(&self, item: &DueItem, error: &str) -> Result<Outcome, LedgerError> {
        let wait = item_backoff(item.attempts);
        tracing::warn!(
            attempt = item.attempts + 1,
            "download deferred to a later pass, next attempt in {}: {error}",
            humantime::format_duration(Duration::from_secs(wait.as_secs()))
        );
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        self.ledger.mark_retry(item, error, next).await?;
        Ok(Outcome::Retrying)
    }

    async fn fail(&self, item: &DueItem, error: &str) -> Result<Outcome, LedgerError> {
        tracing::error!("download failed for good: {error}");
        self.discard_sidecars(item).await;
        self.ledger.mark_failed(item, error).await?;
        Ok(Outcome::Failed)
    }
}
