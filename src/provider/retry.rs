//! Retry with capped, jittered back-off, and one rate limiter per provider, as a decorator that
//! implements [`Provider`] around any adapter.
//!
//! Every request to a provider goes through its limiter: a steady quota (governor) plus a pause
//! gate. When the server names a wait (`Retry-After`, `X-RateLimit-Reset`), the gate closes until
//! then for *all* requests to that provider, not only the one that was refused: sending more would
//! only earn more refusals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backon::BackoffBuilder;
use tokio::time::Instant;

use super::pacing::{PaceSnapshot, Pacer};
use super::{Provider, ResultBody};
use crate::config::ProviderSettings;
use crate::error::ProviderError;
use crate::model::{
    BatchId, BatchPage, DueItem, ItemPage, ListRequest, Observer, Pace, ProviderName, Submission,
    Submitted,
};

/// Longest wait we accept from a server before retrying; longer hints are capped (and the
/// watchdog, fed by progress, must outlast it: see systemd/batchmirror.service).
const MAX_SERVER_WAIT: Duration = Duration::from_secs(5 * 60);
/// How long a throttle that names no wait holds the provider's requests, before jitter (up to
/// as much again): long enough for a server's window to move, so the retries do not land inside
/// the window that refused them.
const UNNAMED_THROTTLE_PAUSE: Duration = Duration::from_secs(2);

/// How a provider's requests are retried and paced.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The user's cap (`None` = adaptive pacing alone, from the kind's documented limit).
    pub requests_per_minute: Option<u32>,
    /// The provider's published limit: the pacer's starting cap and ceiling.
    pub documented_per_minute: Option<u32>,
    /// A separate pace for job submissions, on top of the overall limiter.
    pub submits_per_minute: Option<u32>,
}

impl RetryPolicy {
    pub fn from_settings(s: &ProviderSettings) -> Self {
        Self {
            max_attempts: s.max_retries.max(1),
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            requests_per_minute: s.requests_per_minute,
            documented_per_minute: s.kind.documented_requests_per_minute(),
            submits_per_minute: s.submits_per_minute,
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// The per-provider pacing shared by every request: the adaptive cap and a server-imposed pause.
pub struct Limiter {
    pace: Pacer,
    paused_until: Mutex<Option<Instant>>,
    /// Microseconds requests spent waiting for the cap or a pause, all together.
    waited_us: std::sync::atomic::AtomicU64,
}

impl Limiter {
    /// The provider's adaptive limiter: `documented` and `user_cap` (requests per minute) as in
    /// [`Pacer::new`].
    pub fn adaptive(documented: Option<u32>, user_cap: Option<u32>) -> Self {
        Self {
            pace: Pacer::new(documented.map(f64::from), user_cap.map(f64::from), true),
            paused_until: Mutex::new(None),
            waited_us: Default::default(),
        }
    }

    /// A limiter that spaces requests evenly, one at a time, a little wider than `per_minute`
    /// asks: a burst would be refused by a server counting any 60 s window, and the margin absorbs
    /// jitter between our clock and the server's.
    pub fn evenly(per_minute: u32) -> Self {
        Self {
            pace: Pacer::new(Some(f64::from(per_minute.max(1)) / 1.05), None, false),
            paused_until: Mutex::new(None),
            waited_us: Default::default(),
        }
    }

    /// Waits until a request may be sent: no pause in force, and the cap allows it. A pause can
    /// begin while a request waits its turn under the cap (another request was refused
    /// meanwhile), so the gate is checked again after the turn, and the request waits it out.
    pub async fn acquire(&self) {
        let asked = Instant::now();
        self.wait_turn().await;
        let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.waited_us
            .fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
    }

    async fn wait_turn(&self) {
        loop {
            while let Some(at) = self.paused_until() {
                tokio::time::sleep_until(at).await;
            }
            self.pace.turn().await;
            if self.paused_until().is_none() {
                self.pace.sent();
                return;
            }
        }
    }

    /// The end of the pause in force, if one is.
    fn paused_until(&self) -> Option<Instant> {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        until.filter(|at| *at > Instant::now())
    }

    /// The provider refused for rate: the cap shrinks (see [`Pacer::throttled`]).
    pub fn throttled(&self) {
        self.pace.throttled();
    }

    /// A request was answered: the cap may grow back.
    pub fn succeeded(&self) {
        self.pace.succeeded();
    }

    /// The current cap, the throttles seen and the time requests waited.
    pub fn pace(&self) -> Pace {
        let PaceSnapshot {
            rate, throttles, ..
        } = self.pace.snapshot();
        let waited = self.waited_us.load(std::sync::atomic::Ordering::Relaxed);
        Pace {
            per_minute: rate.map(|r| r * 60.0),
            throttles,
            waited_secs: waited as f64 / 1e6,
        }
    }

    /// Starts from a cap an earlier run learned (see [`Pacer::restore`]).
    pub fn restore(&self, per_minute: f64) {
        self.pace.restore(per_minute);
    }

    /// The pacing side of one answer (`None` = a success): the cap grows back on success and
    /// shrinks on 429/503, and a wait the server named holds every request, even when the caller
    /// gives up.
    pub fn settle(&self, err: Option<&ProviderError>) {
        let Some(err) = err else {
            self.succeeded();
            return;
        };
        let throttle = matches!(err.status(), Some(429 | 503));
        if throttle {
            self.throttled();
        }
        match err.retry_after() {
            Some(wait) => self.pause_for(wait.min(MAX_SERVER_WAIT)),
            None if throttle => {
                let jitter = UNNAMED_THROTTLE_PAUSE.mul_f64(rand::random::<f64>());
                self.pause_for(UNNAMED_THROTTLE_PAUSE + jitter);
            }
            None => {}
        }
    }

    /// Holds every request to this provider until `wait` from now (the longest pause wins).
    pub fn pause_for(&self, wait: Duration) {
        let at = Instant::now() + wait;
        let mut guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|cur| cur < at) {
            *guard = Some(at);
        }
    }
}

/// How [`Observer::request`] names an answer: `ok`, the refusal's status, or `transport`.
pub fn outcome(err: Option<&ProviderError>) -> String {
    match err.map(ProviderError::status) {
        None => "ok".to_owned(),
        Some(Some(s)) => s.to_string(),
        Some(None) => "transport".to_owned(),
    }
}

/// Wraps an adapter with retries and the provider's limiter.
pub struct Retrying {
    inner: Arc<dyn Provider>,
    policy: RetryPolicy,
    limiter: Arc<Limiter>,
    /// Paces submissions (each also passes `limiter`).
    submit_limiter: Option<Limiter>,
    observer: Arc<dyn Observer>,
}

impl Retrying {
    /// `limiter` is the provider's one limiter, shared with the adapter.
    pub fn new(
        inner: Arc<dyn Provider>,
        policy: RetryPolicy,
        limiter: Arc<Limiter>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let submit_limiter = policy.submits_per_minute.map(Limiter::evenly);
        Self {
            inner,
            policy,
            limiter,
            submit_limiter,
            observer,
        }
    }

    async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut delays = self.policy.backoff();
        let mut attempt = 1u32;
        loop {
            self.limiter.acquire().await;
            let name = self.inner.name();
            let result = op().await;
            self.limiter.settle(result.as_ref().err());
            self.observer.request(name, &outcome(result.as_ref().err()));
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            let Some(backoff) = delays.next() else {
                return Err(err);
            };
            let delay = err
                .retry_after()
                .map_or(backoff, |w| w.min(MAX_SERVER_WAIT));
            tracing::warn!(
                provider = %self.inner.name(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                "{what} failed, retrying: {err}"
            );
            self.observer.retry(name);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl Provider for Retrying {
    fn name(&self) -> &ProviderName {
        self.inner.name()
    }

    async fn list_batches(&self, page: &ListRequest) -> Result<BatchPage, ProviderError> {
        self.call("listing batches", || self.inner.list_batches(page))
            .await
    }

    fn lists_since(&self) -> bool {
        self.inner.lists_since()
    }

    fn pace(&self) -> Option<Pace> {
        Some(self.limiter.pace())
    }

    fn restore_pace(&self, per_minute: f64) {
        self.limiter.restore(per_minute);
    }

    async fn batch_items(
        &self,
        batch: &BatchId,
        cursor: Option<&str>,
    ) -> Result<ItemPage, ProviderError> {
        self.call("reading a batch", || self.inner.batch_items(batch, cursor))
            .await
    }

    /// From the batch's shared answer when the adapter has one (its own request already paced),
    /// else one paced, retried request for the item.
    async fn fetch_result(&self, item: &DueItem) -> Result<ResultBody, ProviderError> {
        if let Some(body) = self.inner.fetch_from_batch(item).await {
            return Ok(body);
        }
        self.call("fetching a result", || self.inner.fetch_result(item))
            .await
    }

    fn sidecars(&self) -> Vec<String> {
        self.inner.sidecars()
    }

    async fn fetch_sidecar(
        &self,
        item: &DueItem,
        suffix: &str,
    ) -> Result<ResultBody, ProviderError> {
        self.call("fetching a sidecar", || {
            self.inner.fetch_sidecar(item, suffix)
        })
        .await
    }

    /// Retried like the rest: the idempotency key makes asking again safe.
    async fn submit(&self, file: &Submission) -> Result<Submitted, ProviderError> {
        self.call("submitting a file", || async {
            if let Some(pace) = &self.submit_limiter {
                pace.acquire().await;
            }
            self.inner.submit(file).await
        })
        .await
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
