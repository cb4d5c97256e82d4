//! The Talonic sandbox: a local server of the Talonic API as documented (`providers.md` §3,
//! seed 002), for `batchmirror sandbox`, demos and the tests.
//!
//! This file owns the public surface (spec, faults, stats, request log, start and stop), the
//! router and the shared state. The gate and read routes live in [`routes`], the error envelope,
//! quota and rate-limit headers in [`errors`], the batch actions (sync, cancel) in [`write`](mod@write), the
//! timeline, generated mix, ids and extraction bodies in [`world`]. Where the docs conflict the
//! sandbox serves what the docs allow and makes the rest configurable: `X-RateLimit-Reset` is
//! ISO-8601 on every response, and a 429 carries `Retry-After` only when asked. It uses nothing
//! from the client side of the crate.

mod errors;
#[cfg(test)]
mod route_tests;
mod routes;
#[cfg(test)]
mod tests;
mod world;
mod write;

pub use world::uuid;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use super::running::{Server, face};
use super::{Align, Budget, Clock, ListFault, LoggedRequest, RateLimit, RequestLog};
use errors::not_found_route;

/// The API key of [`TalonicSpec::generated`] (Talonic keys look like `tlnc_…`).
pub const DEFAULT_API_KEY: &str = "tlnc_sandbox_local";
/// The daily request quota when [`TalonicSpec::daily_limit`] is `None`.
pub const DEFAULT_DAILY_LIMIT: u64 = 100_000;

/// Everything the sandbox serves, fixed at start.
#[derive(Debug, Clone)]
pub struct TalonicSpec {
    /// The only `Authorization: Bearer` token the API accepts.
    pub api_key: String,
    /// Seeds the extraction bodies (and, in [`TalonicSpec::generated`], the mix).
    pub seed: u64,
    /// The batches, in any order (listings sort them newest first); ids must be unique, and so
    /// must document ids across batches.
    pub batches: Vec<TalonicBatch>,
    /// Simulated seconds per real second for item progress (1.0 = real time).
    pub time_scale: f64,
    /// How long documents and extractions stay after an item is processed (undocumented); after
    /// it both answer 404 `not_found`.
    pub retention: Duration,
    /// Delay before the first byte of each extraction body (headers go out at once).
    pub result_delay: Duration,
    /// Requests per key per UTC day (wall clock) before 429 `rate_limited`; `None` means
    /// [`DEFAULT_DAILY_LIMIT`]. [`TalonicSandbox::set_rate_limit`] replaces it while running.
    pub daily_limit: Option<u64>,
    /// Whether a quota 429 also carries `Retry-After` (the seed says so, the error-codes page says
    /// the API never sends it). `X-RateLimit-Reset` is always sent.
    pub quota_retry_after: bool,
}

/// One batch of the spec.
#[derive(Debug, Clone)]
pub struct TalonicBatch {
    /// Batch UUID as the API shows it.
    pub id: String,
    /// How long ago (simulated) the batch started accumulating, relative to the sandbox start.
    pub created_ago: Duration,
    /// Inference provider shown: "anthropic" or "bedrock".
    pub provider: String,
    /// The items, in submission order.
    pub items: Vec<TalonicItem>,
    /// Serve this status verbatim instead of the timeline's (to test clients against values the
    /// docs do not list). Items and documents still follow the timeline.
    pub status_override: Option<String>,
}

/// One item of a batch, with its document.
#[derive(Debug, Clone)]
pub struct TalonicItem {
    /// Item UUID.
    pub id: String,
    /// The associated document's UUID (`GET /v1/documents/:id`).
    pub document_id: String,
    /// `document_filename`.
    pub filename: Option<String>,
    /// Simulated seconds from sandbox start until the item is processed; negative = in the past.
    pub finishes_at: f64,
    /// What the item ends as.
    pub outcome: ItemOutcome,
    /// Approximate size of the extraction body (the exact one is [`TalonicSandbox::expected`]'s).
    pub result_bytes: usize,
}

/// The terminal state of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    /// `completed`: the document gets a `latest_extraction_id`.
    Completed,
    /// `failed` with an `error_message`; the document keeps `latest_extraction_id: null`.
    Failed,
}

/// A failure injected with [`TalonicSandbox::push_fault`]: the next request whose raw path starts
/// with `path_prefix` is answered with `status` and the Talonic error envelope. FIFO among the
/// faults that match. A 2xx `status` serves the request normally and applies only `reset_in`
/// (the last request of a spent window). Build with [`TalonicFault::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct TalonicFault {
    pub path_prefix: String,
    pub status: u16,
    /// The envelope's `code`; `None` picks the documented one for the status (`rate_limited`,
    /// `unauthorized`, `not_found`, `VALIDATION_ERROR`, `INTERNAL_ERROR`, …).
    pub code: Option<String>,
    /// The envelope's `retryable`; `None` = true for 408/429/5xx, false otherwise.
    pub retryable: Option<bool>,
    /// Sent verbatim as `Retry-After` when present.
    pub retry_after: Option<String>,
    /// When present, `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` = now + this (ISO-8601,
    /// milliseconds); otherwise the ordinary quota headers.
    pub reset_in: Option<Duration>,
    /// Use the draft site's `{status, code, message}` shape instead of the full envelope.
    pub draft: bool,
}

impl TalonicFault {
    pub fn new(path_prefix: &str, status: u16) -> Self {
        Self {
            path_prefix: path_prefix.to_owned(),
            status,
            code: None,
            retryable: None,
            retry_after: None,
            reset_in: None,
            draft: false,
        }
    }
}

/// Counters, snapshot by [`TalonicSandbox::stats`]; route counters count every request to the
/// route, whatever its answer.
#[derive(Debug, Clone, Default)]
pub struct TalonicStats {
    /// `GET /v1/batches`.
    pub list_requests: u64,
    /// `GET /v1/batches/:id`.
    pub detail_requests: u64,
    /// `GET /v1/documents/:id`, per document id.
    pub document_requests: HashMap<String, u64>,
    /// `GET /v1/extractions/:id`, per extraction id.
    pub extraction_requests: HashMap<String, u64>,
    /// Extraction bodies served (200), per (batch id, item id).
    pub extraction_downloads: HashMap<(String, String), u64>,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Requests answered 429 because the key's budget was spent (injected faults not included).
    pub rate_limited: u64,
    /// `POST /v1/batches/:id/sync`.
    pub sync_requests: u64,
    /// `POST /v1/batches/:id/cancel`.
    pub cancel_requests: u64,
    /// POSTs answered from an earlier answer because of their `Idempotency-Key`.
    pub idempotent_replays: u64,
}

/// A running Talonic sandbox. Dropping it also stops the listener, without waiting.
pub struct TalonicSandbox {
    shared: Arc<Shared>,
    server: Server,
}

face!(TalonicSandbox);

impl TalonicSandbox {
    /// Binds the API on `listen` (port 0 = any free port).
    pub async fn start(spec: TalonicSpec, listen: SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(spec));
        let server = Server::start(listen, router(shared.clone())).await?;
        Ok(Self { shared, server })
    }

    /// Queues a fault; see [`TalonicFault`] for which request consumes it.
    pub fn push_fault(&self, fault: TalonicFault) {
        self.shared.lock().faults.push_back(fault);
    }

    pub fn stats(&self) -> TalonicStats {
        self.shared.lock().stats.clone()
    }

    /// sha256 (lowercase hex) and length of the extraction body this item serves once completed;
    /// `None` for unknown or failed items.
    pub fn expected(&self, batch: &str, item: &str) -> Option<(String, u64)> {
        let world = self.shared.world();
        let (b, it) = world.item(batch, item)?;
        it.will_complete()
            .then(|| it.extraction(self.shared.seed, &b.id).digest())
    }

    /// While set, every `GET /v1/batches` with a non-empty `cursor` (a page past the first) is
    /// answered with `fault`; first pages are served normally. None clears it.
    pub fn set_list_fault(&self, fault: Option<ListFault>) {
        self.shared.lock().list_fault = fault;
    }

    /// Every request received, in order of arrival.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.entries()
    }

    /// Replaces the key's budget (the documented one is per UTC day: the spec's `daily_limit`);
    /// None = unlimited, and then no `X-RateLimit-*` headers. Over it: 429 `rate_limited` with
    /// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` at the window's end (ISO-8601, ms), and
    /// `Retry-After` only if the spec's `quota_retry_after` says so. Windows lie on the clock
    /// grid (a day window is the UTC day); the key starts a fresh one.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.lock().rate.set(limit);
    }
}

/// The router: the read routes of [`routes`] and the writes of [`write`](mod@write), all behind the gate
/// (faults, key, quota, rate-limit headers).
fn router(shared: St) -> Router {
    Router::new()
        // An Express-style server has no 405: another method is a route it does not have.
        .route(
            "/v1/batches",
            get(routes::list_batches).fallback(not_found_route),
        )
        .route(
            "/v1/batches/{id}",
            get(routes::get_batch).fallback(not_found_route),
        )
        .route(
            "/v1/batches/{id}/sync",
            post(write::sync_batch).fallback(not_found_route),
        )
        .route(
            "/v1/batches/{id}/cancel",
            post(write::cancel_batch).fallback(not_found_route),
        )
        .route(
            "/v1/documents/{id}",
            get(routes::get_document).fallback(not_found_route),
        )
        .route(
            "/v1/extractions/{id}",
            get(routes::get_extraction).fallback(not_found_route),
        )
        .fallback(not_found_route)
        .layer(middleware::from_fn_with_state(shared.clone(), routes::gate))
        .with_state(shared)
}

/// The shared state as the handlers take it.
pub(crate) type St = Arc<Shared>;

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) seed: u64,
    pub(crate) retention_us: i64,
    pub(crate) result_delay: Duration,
    pub(crate) quota_retry_after: bool,
    pub(crate) clock: Clock,
    /// Locked before [`Shared::lock`] whenever both are held; never across an `.await`.
    world: RwLock<world::World>,
    mutable: Mutex<Mutable>,
}

#[derive(Default)]
pub(crate) struct Mutable {
    pub(crate) stats: TalonicStats,
    pub(crate) faults: VecDeque<TalonicFault>,
    pub(crate) log: RequestLog,
    /// The key's budget: the daily quota unless [`TalonicSandbox::set_rate_limit`] replaced it.
    pub(crate) rate: Budget,
    pub(crate) request_seq: u64,
    /// What answers list pages past the first ([`TalonicSandbox::set_list_fault`]).
    pub(crate) list_fault: Option<ListFault>,
    /// `Idempotency-Key` → the answer it got, for the batch actions of [`write`](mod@write).
    pub(crate) idempotency: HashMap<String, write::Answered>,
}

impl Shared {
    fn new(spec: TalonicSpec) -> Self {
        let clock = Clock::new(spec.time_scale);
        let world = world::World::new(&spec.batches, &clock);
        let daily = spec.daily_limit.unwrap_or(DEFAULT_DAILY_LIMIT);
        let daily = RateLimit::new(
            u32::try_from(daily).unwrap_or(u32::MAX),
            Duration::from_secs(86_400),
        );
        Self {
            api_key: spec.api_key,
            seed: spec.seed,
            retention_us: i64::try_from(spec.retention.as_micros()).unwrap_or(i64::MAX / 4),
            result_delay: spec.result_delay,
            quota_retry_after: spec.quota_retry_after,
            clock,
            world: RwLock::new(world),
            mutable: Mutex::new(Mutable {
                rate: Budget::new(Some(daily), Align::Clock),
                ..Mutable::default()
            }),
        }
    }

    pub(crate) fn world(&self) -> RwLockReadGuard<'_, world::World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn world_mut(&self) -> RwLockWriteGuard<'_, world::World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters, queue and log; never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.mutable.lock().unwrap_or_else(|e| e.into_inner())
    }
}
