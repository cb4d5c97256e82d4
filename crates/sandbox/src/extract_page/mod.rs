//! The extract.page sandbox: a faithful local server of the extract.page batch API, plus the
//! object store its results redirect to, built from `providers.md` §1 and the OpenAPI seeds.
//!
//! This file owns the public surface (spec, faults, stats, request log, rate limit, start and
//! stop), the two routers, and the state shared by both listeners. The read routes and wire
//! shapes live in [`routes`], `POST /v1/files` and the presigned PUT in [`uploads`],
//! `POST /v1/batches` and cancel in [`batches`], presigned URLs and the store's handlers in
//! [`object_store`], the batch timeline and the generated mix in [`world`], and the result faults
//! and their seeded mix in [`faults`]. The result bodies are the crate's [`crate::body`].

mod batches;
mod faults;
mod object_store;
mod routes;
mod uploads;
mod world;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod upload_tests;

pub use faults::{FaultMix, ResultFault, RetryAfter};

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};

use crate::body::Layout;
use crate::fastapi::{api_get, detail, method_not_allowed};
use crate::running::{Server, face};
use crate::{Budget, Clock, ListFault, LoggedRequest, RateLimit, RequestLog, RetryAfterForm, bind};

/// The API key of [`SandboxSpec::generated`]; `batchmirror sandbox --api-key` overrides it.
pub const DEFAULT_API_KEY: &str = "sk_sandbox_local";

/// Everything the sandbox serves, fixed at start.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The only value of `X-API-KEY` the API accepts.
    pub api_key: String,
    /// Seeds the result bodies (and, in [`SandboxSpec::generated`], the mix).
    pub seed: u64,
    /// The batches, in any order (listings sort them); ids must be unique.
    pub batches: Vec<BatchSpec>,
    /// Simulated seconds per real second for item progress (1.0 = real time).
    pub time_scale: f64,
    /// Result retention after item completion (documented: 3 days). After it, result → 410.
    pub retention: Duration,
    /// Lifetime of presigned object-store URLs (default 300 s), in real time as S3 counts it.
    pub presign_ttl: Duration,
    /// Optional delay before each result body is sent (for tests that need downloads in flight).
    /// The status line and headers go out at once; the first body byte waits this long.
    pub result_delay: Duration,
}

/// One batch of the spec.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// The batch id as the API shows it (may be any string; routes take it percent-encoded).
    pub id: String,
    /// How long ago (simulated) the batch was created, relative to the sandbox start.
    pub created_ago: Duration,
    /// The items, in position order.
    pub items: Vec<ItemSpec>,
}

/// One item of a batch.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    /// The item id (may be any string; routes take it percent-encoded).
    pub id: String,
    /// Simulated seconds from sandbox start until the item finishes; negative = finished that long ago.
    pub finishes_at: f64,
    /// What the item ends as.
    pub outcome: Outcome,
    /// Approximate size of the result body (the exact size is [`Sandbox::expected`]'s).
    pub result_bytes: usize,
    /// How the result endpoint serves it.
    pub delivery: Delivery,
}

/// The terminal state of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The item ends `succeeded` and has a result.
    Succeeded,
    /// The item ends `failed` with an `error`; its result endpoint answers 409.
    Failed,
}

/// How the result endpoint serves a succeeded item (the docs allow both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// 200 `application/json` with the body.
    Inline,
    /// 302 with `Location` = a presigned object-store URL.
    Redirect,
}

/// A failure injected with [`Sandbox::push_fault`].
#[derive(Debug, Clone)]
pub enum Fault {
    /// The next API request whose path starts with `path_prefix` (e.g. "/v1/batches" or "/" for
    /// any) is answered with `status`, an optional `Retry-After` header value verbatim, and a JSON
    /// body `{"detail": "..."}`. Faults are consumed in FIFO order, one per matching request.
    /// They apply to the API listener only (see [`Fault::StoreStatus`] for the object store).
    Status {
        /// Matched against the raw (still percent-encoded) request path.
        path_prefix: String,
        /// The status code to answer with.
        status: u16,
        /// Sent verbatim as `Retry-After` when present.
        retry_after: Option<String>,
    },
    /// The next result request for this item answers 409 result_not_ready (as if not yet succeeded).
    NotReadyOnce {
        /// Batch id (decoded).
        batch: String,
        /// Item id (decoded).
        item: String,
    },
    /// The next object-store request is answered with `status` and an S3-style XML error.
    StoreStatus {
        /// The status code to answer with.
        status: u16,
    },
    /// The next download of this item's result goes wrong as `fault` says. It is consumed by the
    /// request that serves the body: the API result endpoint for an inline item, the object store
    /// for a redirected one (statuses and redirect loops always by the API result endpoint).
    Result {
        /// Batch id (decoded).
        batch: String,
        /// Item id (decoded).
        item: String,
        fault: ResultFault,
    },
}

/// Counters, snapshot by [`Sandbox::stats`]. Route counters count every request to the route,
/// whatever its answer (injected faults and 401 included).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// `GET /v1/batches` requests.
    pub list_requests: u64,
    /// `GET /v1/batches/{id}` requests.
    pub detail_requests: u64,
    /// Result-endpoint requests per (batch id, item id), any outcome.
    pub result_requests: HashMap<(String, String), u64>,
    /// Object-store GETs that returned the body (200), per (batch id, item id).
    pub store_downloads: HashMap<(String, String), u64>,
    /// Every object-store request.
    pub store_requests: u64,
    /// Object-store requests that carried X-API-KEY, Authorization, Cookie or Referer (must stay 0).
    pub store_requests_with_credentials: u64,
    /// API requests answered 401.
    pub unauthorized: u64,
    /// `POST /v1/files` answered 200.
    pub files_created: u64,
    /// Presigned PUTs that stored the bytes (200).
    pub uploads: u64,
    /// `POST /v1/batches` that created a new batch.
    pub batches_created: u64,
    /// `POST /v1/batches` answered with an earlier batch because of its `Idempotency-Key`.
    pub idempotent_replays: u64,
    /// `POST /v1/batches/{id}/cancel` requests.
    pub cancel_requests: u64,
    /// API requests refused with 429 by the rate limit ([`Sandbox::set_rate_limit`]; injected
    /// faults not included).
    pub rate_limited: u64,
}

/// A running sandbox. Dropping it also stops the listeners, without waiting.
pub struct Sandbox {
    shared: Arc<Shared>,
    /// The API listener, then the object store's.
    server: Server,
}

face!(Sandbox);

impl Sandbox {
    /// Binds the API on `listen` (port 0 = any) and a second loopback listener for the object store.
    pub async fn start(spec: SandboxSpec, listen: SocketAddr) -> std::io::Result<Sandbox> {
        // The store's address is part of every redirect, so it is bound first.
        let store = bind((Ipv4Addr::LOCALHOST, 0).into()).await?;
        let api = bind(listen).await?;
        let shared = Arc::new(Shared::new(spec, store.url.clone(), api.url.clone()));
        let store = store.serve(store_router(shared.clone()));
        let server = Server::of(api.serve(api_router(shared.clone())), vec![store]);
        tracing::debug!(
            base_url = server.url(),
            store_url = shared.store_url,
            "sandbox started"
        );
        Ok(Sandbox { shared, server })
    }

    /// `http://127.0.0.1:PORT` of the object store, without a trailing slash.
    pub fn object_store_url(&self) -> String {
        self.shared.store_url.clone()
    }

    /// Queues a fault; see [`Fault`] for which request consumes it.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// sha256 (lowercase hex) and length of the result body this item serves, None if no result.
    /// An item that will succeed later already has its (future) body; a failed or cancelled
    /// item has none.
    /// Items of batches created with `POST /v1/batches` are included.
    pub fn expected(&self, batch: &str, item: &str) -> Option<(String, u64)> {
        let world = self.shared.world();
        let (_, it) = world.item(batch, item)?;
        if !it.will_succeed() {
            return None;
        }
        Some(self.shared.result_digest(batch, it))
    }

    /// Allows `n_batches` more batches to be created with `POST /v1/batches` (replacing any
    /// earlier quota; idempotent replays are free); after that it answers 402
    /// `{"detail":"Quota exceeded"}`. Unlimited until first called.
    pub fn set_quota(&self, n_batches: u64) {
        self.shared.lock().uploads.quota = Some(n_batches);
    }

    /// The largest `size_bytes` `POST /v1/files` accepts (default 100 MiB); above it, 413.
    pub fn set_max_upload_bytes(&self, n: u64) {
        self.shared.lock().uploads.max_upload_bytes = n;
    }

    /// Makes `POST /v1/batches` create the batch at once but hold its answer this long (a client
    /// killed meanwhile has a job it never heard of).
    pub fn set_create_answer_delay(&self, delay: Duration) {
        self.shared.lock().uploads.answer_delay = delay;
    }

    /// Every API and object-store request received, in order of arrival.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.entries()
    }

    /// Limits the API requests each key may make (None = unlimited, the default: extract.page
    /// documents no limit). A request over it is answered 429 `{"detail":"Rate limit exceeded"}`
    /// with `Retry-After` until the window ends ([`Sandbox::set_retry_after_form`]). Windows lie
    /// on the clock grid; the object store is never counted. Every key starts a fresh window.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared.lock().rate.set(limit);
    }

    /// How a rate-limit 429 writes `Retry-After` (default: delay-seconds).
    pub fn set_retry_after_form(&self, form: RetryAfterForm) {
        self.shared.lock().retry_after_form = form;
    }
}

/// The API router: the routes of [`routes`], [`uploads`] and [`batches`] behind the key check
/// (like a FastAPI security dependency, only matched routes ask for the key), all behind the
/// gate, which sees every request before routing.
fn api_router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(
            "/v1/batches",
            get(routes::list_batches)
                .post(batches::create_batch)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/files",
            post(uploads::create_file).fallback(method_not_allowed),
        )
        .route("/v1/files/{file_id}", api_get(uploads::get_file))
        .route("/v1/batches/{batch_id}", api_get(routes::get_batch))
        .route(
            "/v1/batches/{batch_id}/cancel",
            post(batches::cancel_batch).fallback(method_not_allowed),
        )
        .route(
            "/v1/batches/{batch_id}/items/{item_id}/result",
            api_get(routes::get_result),
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

/// The object store's router: presigned result GETs, the redirect loop, presigned upload PUTs,
/// behind the store's own gate.
fn store_router(shared: Arc<Shared>) -> Router {
    let store = Router::new()
        .route("/results/{batch}/{item}", get(object_store::get_object))
        .route("/loop/{batch}/{item}", get(object_store::redirect_back))
        .route(
            "/uploads/{file_id}",
            put(uploads::put_object).layer(DefaultBodyLimit::disable()),
        )
        .fallback(|| async { object_store::no_such_key() })
        .with_state(shared.clone());
    Router::new()
        .fallback_service(store)
        .layer(middleware::from_fn_with_state(shared, object_store::gate))
}

/// What the handlers of both listeners share.
pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) seed: u64,
    pub(crate) retention_us: i64,
    pub(crate) presign_ttl: Duration,
    pub(crate) result_delay: Duration,
    pub(crate) clock: Clock,
    /// Locked before [`Shared::lock`] whenever both are held.
    world: RwLock<world::World>,
    /// Keys the presigned URLs; random per sandbox so URLs never outlive it.
    pub(crate) secret: [u8; 32],
    pub(crate) store_url: String,
    /// `http://HOST:PORT` of the API, where the store's redirect loop points back to.
    pub(crate) api_url: String,
    mutable: Mutex<Mutable>,
}

#[derive(Default)]
pub(crate) struct Mutable {
    pub(crate) stats: Stats,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) log: RequestLog,
    /// The per-key API budget ([`Sandbox::set_rate_limit`]).
    pub(crate) rate: Budget,
    pub(crate) retry_after_form: RetryAfterForm,
    pub(crate) uploads: uploads::Uploads,
    /// What API paths answered 503 contain while set ([`Sandbox::set_outage`]).
    pub(crate) outage: Option<String>,
    /// Simulated time each served result costs ([`Sandbox::set_result_cost`]).
    pub(crate) result_cost: Duration,
    pub(crate) mix: Option<faults::MixState>,
    /// What answers list pages past the first ([`Sandbox::set_list_fault`]).
    pub(crate) list_fault: Option<ListFault>,
    /// The last gzip bomb built: (decoded size, compressed bytes); building one is costly.
    pub(crate) bomb: Option<(u64, bytes::Bytes)>,
}

impl Shared {
    fn new(spec: SandboxSpec, store_url: String, api_url: String) -> Shared {
        let clock = Clock::new(spec.time_scale);
        let world = world::World::new(&spec.batches, &clock);
        Shared {
            api_key: spec.api_key,
            seed: spec.seed,
            retention_us: i64::try_from(spec.retention.as_micros()).unwrap_or(i64::MAX / 4),
            presign_ttl: spec.presign_ttl,
            result_delay: spec.result_delay,
            clock,
            world: RwLock::new(world),
            secret: rand::random(),
            store_url,
            api_url,
            mutable: Mutex::new(Mutable::default()),
        }
    }

    /// The counters, queue and log; never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        // A panicking handler must not take the whole sandbox down with a poisoned lock.
        self.mutable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The batches; never held across an `.await`.
    pub(crate) fn world(&self) -> RwLockReadGuard<'_, world::World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The batches for adding one; take it before [`Shared::lock`] when both are needed.
    pub(crate) fn world_mut(&self) -> RwLockWriteGuard<'_, world::World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn layout(&self, batch: &str, item: &world::Item) -> Layout {
        Layout::new(self.seed, batch, &item.id, item.result_bytes)
    }

    /// sha256 (lowercase hex) and length of the item's result body.
    pub(crate) fn result_digest(&self, batch: &str, item: &world::Item) -> (String, u64) {
        match &item.body {
            Some(body) => (uploads::sha256_hex(body), body.len() as u64),
            None => self.layout(batch, item).digest(),
        }
    }

    /// 200 `application/json` with the item's result body (after `result_delay`).
    pub(crate) fn result_response(
        &self,
        batch: &str,
        item: &world::Item,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let builder = axum::http::Response::builder()
            .status(axum::http::StatusCode::OK)
            .header(axum::http::header::CONTENT_TYPE, "application/json");
        let built = match &item.body {
            Some(body) => {
                let (body, delay) = (body.clone(), self.result_delay);
                let stream = futures_util::stream::once(async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::io::Error>(body)
                });
                builder
                    .header(axum::http::header::CONTENT_LENGTH, item.result_bytes)
                    .body(axum::body::Body::from_stream(stream))
            }
            None => {
                let layout = self.layout(batch, item);
                builder
                    .header(axum::http::header::CONTENT_LENGTH, layout.len())
                    .body(axum::body::Body::from_stream(
                        layout.stream(self.result_delay),
                    ))
            }
        };
        built.unwrap_or_else(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }

    /// Pages of the item's result (its `page_count`).
    pub(crate) fn result_pages(&self, batch: &str, item: &world::Item) -> u64 {
        match &item.body {
            Some(_) => item.body_pages,
            None => self.layout(batch, item).pages(),
        }
    }

    /// The object-store URL that redirects back to this item's API result URL (a redirect loop).
    pub(crate) fn loop_url(&self, batch: &str, item: &str) -> String {
        format!("{}{}", self.store_url, object_store::loop_path(batch, item))
    }

    /// Removes and returns the first queued fault `pick` accepts (FIFO among matching ones).
    pub(crate) fn take_fault(&self, pick: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut m = self.lock();
        let index = m.faults.iter().position(pick)?;
        m.faults.remove(index)
    }
}
