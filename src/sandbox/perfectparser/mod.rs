//! The PerfectParser sandbox: a faithful local server of the documented extractions API
//! (`providers.md` §4, seed 004), for `batchmirror sandbox`, demos and the tests.
//!
//! This file owns the public surface (spec, faults, stats, start and stop) and the state the
//! handlers share, including the per-key request quota behind the `X-RateLimit-*` headers. The
//! routes live in [`routes`], the account and parser routes in [`account`], submissions
//! (`POST /v1/extractions`: validation, credits, idempotency) in [`submit`], the timeline,
//! generated mix and bodies in [`world`], exports in [`export`] and [`xlsx`]. It uses nothing
//! from the client side: the client must never pass a test because both sides share a bug.

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
mod world;
mod xlsx;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use super::{Clock, ListFault, LoggedRequest, Served, bind};

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
    /// Requests per key per window (documented: 150 per minute).
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
    server: Served,
}

impl PerfectSandbox {
    /// Binds the API on `listen` (port 0 = any free port).
    pub async fn start(spec: PerfectSpec, listen: SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(spec));
        let server = bind(listen).await?.serve(routes::router(shared.clone()));
        Ok(PerfectSandbox { shared, server })
    }

    /// `http://HOST:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.server.url().to_owned()
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
        self.shared.lock().log.clone()
    }

    /// Stops the listener, letting in-flight responses finish for a short grace period.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) seed: u64,
    pub(crate) retention_us: i64,
    pub(crate) result_delay: Duration,
    pub(crate) limit: u32,
    pub(crate) window: Duration,
    pub(crate) submit_limit: u32,
    pub(crate) submit_window: Duration,
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
}

#[derive(Default)]
pub(crate) struct Mutable {
    pub(crate) stats: PerfectStats,
    pub(crate) faults: VecDeque<PerfectFault>,
    /// What answers list pages past the first ([`PerfectSandbox::set_list_fault`]).
    pub(crate) list_fault: Option<ListFault>,
    pub(crate) log: Vec<LoggedRequest>,
    /// Per-key fixed windows.
    windows: HashMap<String, Window>,
    /// Per-key fixed windows of `POST /v1/extractions`.
    submit_windows: HashMap<String, Window>,
}

struct Window {
    start: Instant,
    used: u32,
    /// Unix seconds, rounded up: the window is over by then.
    reset: u64,
}

/// The quota's verdict on one request, and the headers every response carries.
pub(crate) struct Quota {
    pub(crate) allowed: bool,
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    pub(crate) reset: u64,
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
            limit: spec.requests_per_minute.max(1),
            window: spec.window.max(Duration::from_millis(100)),
            submit_limit: spec.submits_per_minute.max(1),
            submit_window: spec.submit_window.max(Duration::from_millis(100)),
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
            mutable: Mutex::new(Mutable::default()),
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

    /// Counts one request against `key`'s window when `take` (else only reads it). A refused
    /// request is not counted.
    pub(crate) fn quota(&self, key: &str, take: bool) -> Quota {
        let mut m = self.lock();
        let q = tick(&mut m.windows, key, self.limit, self.window, take);
        if take && !q.allowed {
            m.stats.rate_limited += 1;
        }
        q
    }

    /// The same for the submit window of `POST /v1/extractions` (always counts).
    pub(crate) fn submit_quota(&self, key: &str) -> Quota {
        let mut m = self.lock();
        let q = tick(
            &mut m.submit_windows,
            key,
            self.submit_limit,
            self.submit_window,
            true,
        );
        if !q.allowed {
            m.stats.submit_rate_limited += 1;
        }
        q
    }

    pub(crate) fn log_begin(&self, method: &str, path: &str) -> usize {
        let mut m = self.lock();
        m.log.push(LoggedRequest {
            at: Instant::now(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: 0,
        });
        m.log.len() - 1
    }

    pub(crate) fn log_end(&self, index: usize, status: u16) {
        if let Some(entry) = self.lock().log.get_mut(index) {
            entry.status = status;
        }
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

/// One request against `key`'s fixed window in `windows`, counted when `take` and allowed.
fn tick(
    windows: &mut HashMap<String, Window>,
    key: &str,
    limit: u32,
    window: Duration,
    take: bool,
) -> Quota {
    let now = Instant::now();
    let w = windows.entry(key.to_owned()).or_insert(Window {
        start: now,
        used: 0,
        reset: 0,
    });
    if w.reset == 0 || now.duration_since(w.start) >= window {
        let end = SystemTime::now() + window;
        let end = end
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        *w = Window {
            start: now,
            used: 0,
            reset: end.as_secs() + u64::from(end.subsec_nanos() > 0),
        };
    }
    let allowed = w.used < limit;
    if take && allowed {
        w.used += 1;
    }
    Quota {
        allowed,
        limit,
        remaining: limit - w.used.min(limit),
        reset: w.reset,
    }
}
