//! The LlamaCloud sandbox: a local server of the v1 beta batch-processing API and the legacy
//! parse-result routes, built from `providers.md` §2 and seed 001, never from the client.
//!
//! This file owns the public surface (spec, faults, stats, request log, start and stop), the
//! router and the state the handlers share. The timeline, its indexes and the generated mix live
//! in [`world`], the gate, read routes and wire shapes in [`routes`], the parse-job routes in
//! [`parsing`], job creation and cancellation in [`write`](mod@write), query parameters and offset pages in
//! [`query`], the streamed result bodies in [`body`], the jobs' `webhook_configurations` and
//! their deliveries in [`webhooks`].
//! Nothing from the client side of the crate is used here.

mod body;
mod parsing;
mod query;
#[cfg(test)]
mod route_tests;
mod routes;
#[cfg(test)]
mod tests;
mod webhooks;
mod world;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::running::{Server, face};
use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};

use super::fastapi::{api_get, detail, method_not_allowed};
use super::{Budget, Clock, ListFault, LoggedRequest, RateLimit, RequestLog};
pub use webhooks::LlamaWebhookDelivery;
use world::{Item, Job, World};

/// The API key of [`LlamaSpec::generated`].
pub const DEFAULT_API_KEY: &str = "llx-sandbox-local";
/// The project every job of the sandbox belongs to (the `project_id` of BatchJob).
pub const PROJECT_ID: &str = "5d3b0e9c-8f0a-4c47-9d52-3f1a0c7b2e61";

/// Everything the sandbox serves, fixed at start.
#[derive(Debug, Clone)]
pub struct LlamaSpec {
    /// The only Bearer token the API accepts.
    pub api_key: String,
    /// Seeds the result bodies.
    pub seed: u64,
    /// The batch jobs; ids must be unique, and so must item ids and parse job ids.
    pub jobs: Vec<JobSpec>,
    /// Simulated seconds per real second (1.0 = real time).
    pub time_scale: f64,
    /// How long parse results stay readable after the item completed (NF; the parse cache is 48 h
    /// per a secondary source). After it, the result routes answer 404.
    pub retention: Duration,
    /// Delay before the first byte of each result body.
    pub result_delay: Duration,
}

/// One batch job (always a parse job).
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The `bjb-…` id.
    pub id: String,
    /// How long ago (simulated) the job was created, relative to the sandbox start.
    pub created_ago: Duration,
    pub items: Vec<ItemSpec>,
}

/// One item (a directory file) of a job.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    /// The item id (`item_id`).
    pub id: String,
    /// The file name (`item_name`).
    pub name: String,
    /// The parse job id behind the item (`JobItem.job_id`); distinct from every item id.
    pub parse_job_id: String,
    /// Simulated seconds from start until the item finishes; negative = finished that long ago.
    pub finishes_at: f64,
    pub outcome: Outcome,
    /// Approximate size of the JSON result (exact size: [`LlamaSandbox::expected`]).
    pub result_bytes: usize,
}

/// How an item ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    /// `skipped` with `skip_reason: already_processed`; it has no parse job.
    Skipped,
}

/// A failure injected with [`LlamaSandbox::push_fault`].
#[derive(Debug, Clone)]
pub enum Fault {
    /// The next request whose raw path starts with `path_prefix` answers `status` with
    /// `{"detail": …}` and, when given, `Retry-After` verbatim. Consumed once, FIFO.
    Status {
        path_prefix: String,
        status: u16,
        retry_after: Option<String>,
    },
    /// From now on the job's `status` field is this raw string in every response (API drift: a
    /// status the published enum does not have). Never consumed.
    JobStatus { job: String, status: String },
}

/// Counters; a route counter counts every request to it, whatever the answer.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// `GET /api/v1/beta/batch-processing`.
    pub list_requests: u64,
    /// `GET /api/v1/beta/batch-processing/{job_id}`.
    pub detail_requests: u64,
    /// `GET /api/v1/beta/batch-processing/{job_id}/items`.
    pub items_requests: u64,
    /// `GET …/items/{item_id}/processing-results`.
    pub processing_results_requests: u64,
    /// `GET /api/v1/parsing/job/{id}/result/json` per (batch job id, item id); unknown parse ids
    /// are counted under ("", parse id).
    pub result_requests: HashMap<(String, String), u64>,
    /// `…/result/markdown` and `…/result/text` requests.
    pub other_format_requests: u64,
    /// `GET /api/v1/parsing/job/{job_id}` (the parse job's status).
    pub parse_job_requests: u64,
    /// `POST /api/v1/beta/batch-processing` that created a job.
    pub jobs_created: u64,
    /// `POST /api/v1/beta/batch-processing/{job_id}/cancel`, any answer.
    pub cancel_requests: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Requests refused with 429 by the rate limit ([`LlamaSandbox::set_rate_limit`]; injected
    /// faults not included).
    pub rate_limited: u64,
}

/// A running LlamaCloud sandbox. Dropping it stops the listener without waiting.
pub struct LlamaSandbox {
    shared: Arc<Shared>,
    server: Server,
}

face!(LlamaSandbox);

impl LlamaSandbox {
    /// Binds the API on `listen` (port 0 = any free port).
    pub async fn start(spec: LlamaSpec, listen: SocketAddr) -> std::io::Result<LlamaSandbox> {
        let shared = Arc::new(Shared::new(spec));
        let server = Server::start(listen, router(shared.clone())).await?;
        Ok(LlamaSandbox { shared, server })
    }

    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// sha256 (lowercase hex) and length of the item's JSON result; None if it has none.
    pub fn expected(&self, job: &str, item: &str) -> Option<(String, u64)> {
        let world = self.shared.world();
        let (j, it) = world.item(job, item)?;
        (it.spec.outcome == Outcome::Completed && it.cancelled_us.is_none())
            .then(|| self.shared.doc(j, it, body::Format::Json).digest())
    }

    /// While set, every `GET /api/v1/beta/batch-processing` with `offset` > 0 is answered with
    /// `fault` (the first page, offset 0 or absent, is served normally); None clears it.
    pub fn set_list_fault(&self, fault: Option<ListFault>) {
        self.shared.lock().list_fault = fault;
    }

    /// Every request received, in order of arrival.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.entries()
    }

    /// Limits the requests each key may make (None = unlimited, the default: the only documented
    /// limits are on upload routes the sandbox does not serve). A request over it is answered 429
    /// `{"detail":"Too many requests"}` with `retry-after-ms` and `retry-after` until the window
    /// ends. Windows lie on the clock grid; every key starts a fresh one.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.lock().rate.set(limit);
    }
}

/// The router: the batch-processing routes of [`routes`] and [`write`](mod@write) and the parse-job routes
/// of [`parsing`], behind the Bearer check (matched routes only) and the gate, which sees every
/// request before routing.
fn router(shared: St) -> Router {
    use routes::BASE;
    let api = Router::new()
        .route(
            BASE,
            get(routes::list_jobs)
                .post(write::create_job)
                .fallback(method_not_allowed),
        )
        .route(&format!("{BASE}/{{job_id}}"), api_get(routes::job_status))
        .route(
            &format!("{BASE}/{{job_id}}/cancel"),
            post(write::cancel_job).fallback(method_not_allowed),
        )
        .route(
            &format!("{BASE}/{{job_id}}/items"),
            api_get(routes::job_items),
        )
        .route(
            &format!("{BASE}/items/{{item_id}}/processing-results"),
            api_get(routes::processing_results),
        )
        .route("/api/v1/parsing/job/{job_id}", api_get(parsing::parse_job))
        .route(
            "/api/v1/parsing/job/{job_id}/result/{format}",
            api_get(parsing::parse_result),
        )
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            routes::require_key,
        ))
        .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(shared.clone());
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn_with_state(shared, routes::gate))
}

/// The shared state as the handlers take it.
pub(crate) type St = Arc<Shared>;

pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) seed: u64,
    pub(crate) retention_us: i64,
    pub(crate) result_delay: Duration,
    pub(crate) clock: Clock,
    /// Locked before [`Shared::lock`] whenever both are held; never across an `.await`.
    world: RwLock<World>,
    mutable: Mutex<Mutable>,
    /// The jobs' `webhook_configurations` and their deliveries (a leaf lock).
    pub(crate) webhooks: webhooks::Registry,
}

#[derive(Default)]
pub(crate) struct Mutable {
    pub(crate) stats: Stats,
    pub(crate) faults: Vec<Fault>,
    pub(crate) log: RequestLog,
    /// The per-key budget ([`LlamaSandbox::set_rate_limit`]).
    pub(crate) rate: Budget,
    /// What answers list pages past the first ([`LlamaSandbox::set_list_fault`]).
    pub(crate) list_fault: Option<ListFault>,
}

impl Shared {
    fn new(spec: LlamaSpec) -> Shared {
        let clock = Clock::new(spec.time_scale);
        let world = World::new(spec.jobs, &clock);
        Shared {
            api_key: spec.api_key,
            seed: spec.seed,
            retention_us: i64::try_from(spec.retention.as_micros()).unwrap_or(i64::MAX / 4),
            result_delay: spec.result_delay,
            clock,
            world: RwLock::new(world),
            mutable: Mutex::new(Mutable::default()),
            webhooks: webhooks::Registry::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.mutable.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn world(&self) -> RwLockReadGuard<'_, World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn world_mut(&self) -> RwLockWriteGuard<'_, World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn doc(&self, job: &Job, it: &Item, format: body::Format) -> body::Doc {
        body::Doc::new(
            self.seed,
            &job.id,
            &it.spec.id,
            it.spec.result_bytes,
            format,
        )
    }

    /// Removes the first one-shot status fault matching `path`.
    pub(crate) fn take_status_fault(&self, path: &str) -> Option<(u16, Option<String>)> {
        let mut m = self.lock();
        let index = m.faults.iter().position(
            |f| matches!(f, Fault::Status { path_prefix, .. } if path.starts_with(path_prefix.as_str())),
        )?;
        match m.faults.remove(index) {
            Fault::Status {
                status,
                retry_after,
                ..
            } => Some((status, retry_after)),
            Fault::JobStatus { .. } => None,
        }
    }

    /// The raw status a [`Fault::JobStatus`] imposes on `job`, if any (the latest wins).
    pub(crate) fn status_override(&self, job: &str) -> Option<String> {
        self.lock().faults.iter().rev().find_map(|f| match f {
            Fault::JobStatus { job: j, status } if j == job => Some(status.clone()),
            _ => None,
        })
    }
}
