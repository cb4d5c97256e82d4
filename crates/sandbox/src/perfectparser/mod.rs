//! The PerfectParser sandbox: a faithful local server of the documented extractions API
//! (`providers.md` §4, seed 004), for `batchmirror sandbox`, demos and the tests.
//!
//! This file owns the public surface (spec, faults, stats, start and stop), the router and the
//! state the handlers share, including the per-key quota and submit window behind the
//! `X-RateLimit-*` headers (budgets of [`super::rate`], windows opening at a key's first request).
//! The gate and read routes live in [`routes`], the account and parser routes in [`account`],
//! submissions (`POST /v1/extractions`: validation, credits, idempotency) in [`submit`], the
//! timeline, generated mix, parser fields and bodies in [`world`], exports in [`export`] and
//! [`xlsx`], webhooks and their signed deliveries in [`webhooks`]. It uses nothing from the
//! client side: the client must never pass a test because both sides share a bug.

mod account;
mod export;
#[cfg(test)]
mod route_tests;
mod routes;
mod submit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_submit;
#[cfg(test)]
mod webhook_tests;
mod webhooks;
mod world;
mod xlsx;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};

use super::rate::Verdict;
use super::running::{Server, face};
use super::{Align, Budget, Clock, ListFault, LoggedRequest, RateLimit, RequestLog};
pub use webhooks::{EVENTS as WEBHOOK_EVENTS, WebhookDelivery};

/// The API key of [`PerfectSpec::generated`] (`pp_live_` is the only documented prefix).
pub const DEFAULT_API_KEY: &str = "pp_live_sandbox_local";

/// Everything the sandbox serves, fixed at start.
#[derive(Debug, Clone)]
pub struct PerfectSpec {
    /// The only `X-API-Key` the API accepts.
    pub api_key: String,
    /// Seeds the bodies (and, in [`PerfectSpec::generated`], the mix).
    pub seed: u64,
    /// The extractions, in any order (listings sort them newest first); ids must be unique.
    pub extractions: Vec<ExtractionSpec>,
    /// Simulated seconds per real second for document progress (1.0 = real time).
    pub time_scale: f64,
    /// How long a completed document stays readable (undocumented); after it, 404.
    pub retention: Duration,
    /// Delay before the first byte of each document body (for tests needing downloads in flight).
    pub result_delay: Duration,
    /// Requests per key per window (documented: 150 per minute);
    /// [`PerfectSandbox::set_rate_limit`] replaces it while running.
    pub requests_per_minute: u32,
    /// Length of the quota window (documented: one minute; tests shorten it).
    pub window: Duration,
    /// Credits available to submissions at start (1 page = 1 credit, charged at submit).
    pub credits: u64,
    /// Parser ids `POST /v1/extractions` accepts; any other is 404 `PARSER_NOT_FOUND`.
    pub parsers: Vec<String>,
    /// Submissions per key per submit window (documented: 20 per minute), on top of the quota.
    pub submits_per_minute: u32,
    /// Length of the submit window (documented: one minute; tests shorten it).
    pub submit_window: Duration,
}

impl PerfectSpec {
    /// A spec with the documented defaults (150 requests a minute, 7-day retention, real time).
    pub fn new(api_key: &str, extractions: Vec<ExtractionSpec>) -> Self {
        PerfectSpec {
            api_key: api_key.to_owned(),
            seed: 0,
            extractions,
            time_scale: 1.0,
            retention: Duration::from_secs(7 * 24 * 3600),
            result_delay: Duration::ZERO,
            requests_per_minute: 150,
            window: Duration::from_secs(60),
            credits: DEFAULT_CREDITS,
            parsers: vec![DEFAULT_PARSER.to_owned()],
            submits_per_minute: 20,
            submit_window: Duration::from_secs(60),
        }
    }

    /// The credit balance submissions draw on.
    pub fn with_credits(mut self, credits: u64) -> Self {
        self.credits = credits;
        self
    }

    /// The parser ids submissions may name (replaces the default set).
    pub fn with_parsers(mut self, parsers: &[&str]) -> Self {
        self.parsers = parsers.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// `limit` submissions per key per `window` on `POST /v1/extractions`.
    pub fn with_submit_limit(mut self, limit: u32, window: Duration) -> Self {
        self.submits_per_minute = limit;
        self.submit_window = window;
        self
    }
}

/// The parser id submissions accept by default.
pub const DEFAULT_PARSER: &str = "prs_sandbox_invoice";
/// The name shown for extractions whose parser the sandbox does not hold (and the default
/// parser's).
pub(crate) const DEFAULT_PARSER_NAME: &str = "Invoices";
/// The default credit balance: generous enough never to matter unless a test lowers it.
pub const DEFAULT_CREDITS: u64 = 1_000_000;

/// One extraction (a job over one or more documents).
#[derive(Debug, Clone)]
pub struct ExtractionSpec {
    /// `ext_…` (any string; routes take it percent-encoded).
    pub id: String,
    /// `prs_…`.
    pub parser_id: String,
    /// How long ago (simulated) it was submitted, relative to the sandbox start.
    pub created_ago: Duration,
    pub documents: Vec<DocumentSpec>,
    /// Served verbatim instead of the status derived from the documents (robustness tests).
    pub status_override: Option<String>,
}

/// One document of an extraction.
#[derive(Debug, Clone)]
pub struct DocumentSpec {
    /// `doc_…` (any string).
    pub id: String,
    pub filename: String,
    /// Simulated seconds from start until it finishes; negative = finished that long ago.
    pub finishes_at: f64,
    pub outcome: DocOutcome,
    /// Approximate size of `extracted_data` (the exact body is [`PerfectSandbox::expected`]'s).
    pub result_bytes: usize,
    pub page_count: u32,
}

/// How a document ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocOutcome {
    Completed,
    Failed,
}

/// A failure injected with [`PerfectSandbox::push_fault`]; consumed FIFO, one per matching
/// request (matched on the raw path), after authentication and the quota.
#[derive(Debug, Clone)]
pub enum PerfectFault {
    /// Answer `status` with `{"error":{"code":code,"message":…}}`.
    Status {
        path_prefix: String,
        status: u16,
        code: String,
    },
    /// Answer `status` with this body verbatim as `text/plain` (undocumented error shapes).
    Raw {
        path_prefix: String,
        status: u16,
        body: String,
    },
}

/// Counters, snapshot by [`PerfectSandbox::stats`]. Route counters count every request to the
/// route, whatever its answer.
#[derive(Debug, Clone, Default)]
pub struct PerfectStats {
    /// `GET /v1/extractions`.
    pub list_requests: u64,
    /// `GET /v1/extractions/:id`, per extraction id.
    pub status_requests: HashMap<String, u64>,
    /// `GET /v1/extractions/:id/results`.
    pub results_requests: u64,
    /// `GET /v1/extractions/:id/documents/:document_id`, per (extraction, document).
    pub document_requests: HashMap<(String, String), u64>,
    /// Document bodies served with 200, per (extraction, document).
    pub document_downloads: HashMap<(String, String), u64>,
    /// Export requests per (extraction, document, format as asked); the document is empty for
    /// the export of a whole extraction.
    pub export_requests: HashMap<(String, String, String), u64>,
    /// `GET /v1/credits`.
    pub credits_requests: u64,
    /// `GET /v1/me`.
    pub me_requests: u64,
    /// Requests refused with 429 because the key's quota was spent.
    pub rate_limited: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Extractions created by `POST /v1/extractions` (replays excluded).
    pub submissions: u64,
    /// Submissions answered with the original job because their `Idempotency-Key` was known.
    pub replays: u64,
    /// Submissions refused with 429 by the submit window (not counted in `rate_limited`).
    pub submit_rate_limited: u64,
    /// Credits charged by submissions.
    pub credits_charged: u64,
}

/// A running sandbox. Dropping it also stops the listener, without waiting.
pub struct PerfectSandbox {
    shared: Arc<Shared>,
    server: Server,
}

face!(PerfectSandbox);

impl PerfectSandbox {
    /// Binds the API on `listen` (port 0 = any free port).
    pub async fn start(spec: PerfectSpec, listen: SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(spec));
        let server = Server::start(listen, router(shared.clone())).await?;
        Ok(PerfectSandbox { shared, server })
    }

    pub fn push_fault(&self, fault: PerfectFault) {
        self.shared.lock().faults.push_back(fault);
    }

    pub fn stats(&self) -> PerfectStats {
        self.shared.lock().stats.clone()
    }

    /// sha256 (lowercase hex) and length of the body `GET …/documents/:document_id` serves once
    /// the document is completed; None if it never completes or the ids do not pair. Submitted
    /// extractions count too: their `extracted_data` carries the uploaded file's sha256.
    pub fn expected(&self, extraction: &str, document: &str) -> Option<(String, u64)> {
        let world = self.shared.world();
        let (e, d) = world.document(extraction, document)?;
        if d.outcome != DocOutcome::Completed {
            return None;
        }
        Some(world::DocumentBody::new(self.shared.seed, e, d, d.done_us).digest())
    }

    /// sha256 and length of a completed document's `extracted_data` value, the bytes both
    /// `GET …/documents/:document_id` and each entry of `GET …/results` carry for it; None as
    /// for [`PerfectSandbox::expected`].
    pub fn expected_data(&self, extraction: &str, document: &str) -> Option<(String, u64)> {
        let world = self.shared.world();
        let (e, d) = world.document(extraction, document)?;
        if d.outcome != DocOutcome::Completed {
            return None;
        }
        let data = world::DocumentBody::new(self.shared.seed, e, d, d.done_us).data_bytes();
        Some((
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)),
            data.len() as u64,
        ))
    }

    /// sha256 and length of a completed document's export in `format` (json, csv, xlsx).
    pub fn expected_export(
        &self,
        extraction: &str,
        document: &str,
        format: &str,
    ) -> Option<(String, u64)> {
        let world = self.shared.world();
        let (e, d) = world.document(extraction, document)?;
        if d.outcome != DocOutcome::Completed || !routes::FORMATS.contains(&format) {
            return None;
        }
        let (_, bytes) = export::export(self.shared.seed, e, &[d], format);
        Some((
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            bytes.len() as u64,
        ))
    }

    /// While set, every `GET /v1/extractions` with a non-empty `cursor` (a page past the first,
    /// with or without `since`) is answered with `fault`; first pages are served normally. None
    /// clears it.
    pub fn set_list_fault(&self, fault: Option<ListFault>) {
        self.shared.lock().list_fault = fault;
    }

    /// Every request received, in order of arrival.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.entries()
    }

    /// Replaces the key's quota (the spec's `requests_per_minute` per `window`); None =
    /// unlimited, and then no `X-RateLimit-*` headers. Over it: 429 `RATE_LIMITED` with
    /// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` (Unix seconds, rounded up). A window
    /// opens at the key's first request after the last one ended; the key starts a fresh one.
    /// The submit window of `POST /v1/extractions` stays as the spec set it.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.lock().rate.set(limit);
    }
}

/// The router: the reads of [`routes`], submission ([`submit`]), exports ([`export`]), credits
/// and parsers ([`account`]), all behind the gate (key, quota, submit window, faults).
fn router(shared: St) -> Router {
    let api = Router::new()
        .route("/v1/extractions", get(routes::list).post(submit::submit))
        .route("/v1/extractions/{id}", get(routes::status))
        .route("/v1/extractions/{id}/results", get(routes::results))
        .route(
            "/v1/extractions/{id}/export",
            get(export::export_extraction),
        )
        .route(
            "/v1/extractions/{id}/documents/{doc}",
            get(routes::document),
        )
        .route(
            "/v1/extractions/{id}/documents/{doc}/export",
            get(export::export_doc),
        )
        .route("/v1/credits", get(account::credits))
        .route("/v1/me", get(account::me))
        .route("/v1/parsers", post(account::create_parser))
        .route("/v1/parsers/{id}", get(account::get_parser))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::patch)
                .delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/test", post(webhooks::test))
        .fallback(|| async {
            routes::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "No such route")
        })
        .layer(DefaultBodyLimit::max(routes::MAX_BODY))
        .with_state(shared.clone());
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn_with_state(shared, routes::gate))
}

/// The shared state as the handlers take it.
pub(crate) type St = Arc<Shared>;

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) seed: u64,
    pub(crate) retention_us: i64,
    pub(crate) result_delay: Duration,
    /// Leaf lock: nothing else is locked while it is held.
    parsers: RwLock<Vec<account::Parser>>,
    /// Pages of the spec's extractions (charged before the start).
    pub(crate) spec_pages: u64,
    pub(crate) clock: Clock,
    /// The spec's extractions plus the submitted ones. Lock order: `submit`, then `world`, then
    /// `mutable`; never hold a guard across an `.await`.
    world: RwLock<world::World>,
    pub(crate) submit: Mutex<submit::Ledger>,
    mutable: Mutex<Mutable>,
    /// `/v1/webhooks` and their deliveries (a leaf lock).
    pub(crate) webhooks: webhooks::Registry,
}

#[derive(Default)]
pub(crate) struct Mutable {
    pub(crate) stats: PerfectStats,
    pub(crate) faults: VecDeque<PerfectFault>,
    /// What answers list pages past the first ([`PerfectSandbox::set_list_fault`]).
    pub(crate) list_fault: Option<ListFault>,
    pub(crate) log: RequestLog,
    /// The per-key quota ([`PerfectSandbox::set_rate_limit`]).
    rate: Budget,
    /// The per-key windows of `POST /v1/extractions`.
    submit_rate: Budget,
}

impl Shared {
    fn new(spec: PerfectSpec) -> Shared {
        let clock = Clock::new(spec.time_scale);
        let world = world::World::new(&spec.extractions, &clock);
        let spec_pages = world.extractions.iter().map(|e| e.page_count()).sum();
        let start_us = clock.at_us(0.0);
        Shared {
            api_key: spec.api_key,
            seed: spec.seed,
            retention_us: i64::try_from(spec.retention.as_micros()).unwrap_or(i64::MAX / 4),
            result_delay: spec.result_delay,
            parsers: RwLock::new(
                spec.parsers
                    .iter()
                    .map(|id| account::Parser::seeded(id, start_us))
                    .collect(),
            ),
            spec_pages,
            clock,
            world: RwLock::new(world),
            submit: Mutex::new(submit::Ledger::new(spec.credits)),
            mutable: Mutex::new(Mutable {
                rate: quota(spec.requests_per_minute, spec.window),
                submit_rate: quota(spec.submits_per_minute, spec.submit_window),
                ..Mutable::default()
            }),
            webhooks: webhooks::Registry::default(),
        }
    }

    /// The world, for reading; drop the guard before any `.await`.
    pub(crate) fn world(&self) -> RwLockReadGuard<'_, world::World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The parsers submissions may name; hold it only briefly (a leaf lock).
    pub(crate) fn parsers(&self) -> RwLockReadGuard<'_, Vec<account::Parser>> {
        self.parsers.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn parsers_mut(&self) -> RwLockWriteGuard<'_, Vec<account::Parser>> {
        self.parsers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of parser `id`, if the sandbox holds it.
    pub(crate) fn parser_name(&self, id: &str) -> Option<String> {
        self.parsers()
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.clone())
    }

    pub(crate) fn insert(&self, extraction: world::Extraction) {
        self.world
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(extraction);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.mutable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request against `key`'s quota when `take` (else only reads it). A refused
    /// request is not counted. None when no limit is set.
    pub(crate) fn quota(&self, key: &str, take: bool) -> Option<Verdict> {
        let mut m = self.lock();
        let verdict = match take {
            true => m.rate.take(key),
            false => m.rate.peek(key),
        };
        if take && verdict.is_some_and(|v| !v.allowed) {
            m.stats.rate_limited += 1;
        }
        verdict
    }

    /// The same for the submit window of `POST /v1/extractions` (always counts).
    pub(crate) fn submit_quota(&self, key: &str) -> Option<Verdict> {
        let mut m = self.lock();
        let verdict = m.submit_rate.take(key);
        if verdict.is_some_and(|v| !v.allowed) {
            m.stats.submit_rate_limited += 1;
        }
        verdict
    }

    pub(crate) fn take_fault(&self, path: &str) -> Option<PerfectFault> {
        let mut m = self.lock();
        let index = m.faults.iter().position(|f| match f {
            PerfectFault::Status { path_prefix, .. } | PerfectFault::Raw { path_prefix, .. } => {
                path.starts_with(path_prefix.as_str())
            }
        })?;
        m.faults.remove(index)
    }
}

/// A per-key window of `limit` requests (at least 1) per `window` (at least 100 ms), opening at
/// the key's first request.
fn quota(limit: u32, window: Duration) -> Budget {
    let limit = RateLimit::new(limit.max(1), window.max(Duration::from_millis(100)));
    Budget::new(Some(limit), Align::FirstRequest)
}
