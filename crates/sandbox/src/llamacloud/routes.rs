//! The routes and wire shapes of the LlamaCloud sandbox (`providers.md` §2.2–2.4, seed 001):
//! the gate, Bearer auth, injected faults, the rate limit's 429 (`retry-after-ms` and
//! `retry-after`, as the Stainless SDK reads them), route counters and the request log, and the
//! read routes of batch processing (job list, job status, job items, item processing results) with
//! FastAPI-shaped errors (`{"detail": …}`, 422 validation lists) and offset paging with
//! `total_size`. Job creation and cancellation are in [`super::write`], the parse-job routes in
//! [`super::parsing`].

use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::fastapi::{self, detail, parse_query, query_value_error};
use super::super::{Mark, list_faults};
use super::body::Format;
use super::query::{Query, enum_param, page_response, paging};
use super::world::{Item, ItemStatus, Job};
use super::{PROJECT_ID, Shared, St};

pub(crate) const BASE: &str = "/api/v1/beta/batch-processing";
const JOB_STATUSES: &[&str] = &[
    "pending",
    "running",
    "dispatched",
    "completed",
    "failed",
    "cancelled",
];
const ITEM_STATUSES: &[&str] = &[
    "pending",
    "processing",
    "completed",
    "failed",
    "skipped",
    "cancelled",
];
pub(crate) const JOB_TYPES: &[&str] = &["parse", "extract", "classify"];
/// How a failed item's parse job failed (`JobItem.error_message`, the parse job's error).
pub(crate) const PARSE_ERROR: (&str, &str) = (
    "DOCUMENT_UNREADABLE",
    "Parsing failed: the document could not be read",
);

fn status_detail(status: u16, retry_after: Option<String>) -> Response {
    fastapi::status_detail(status, retry_after, "Too many requests")
}

/// Logs, counts per route, and answers an injected fault or the rate limit instead when one
/// applies.
pub(super) async fn gate(State(sh): State<St>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let index = sh.lock().log.begin(req.method().as_str(), &path);
    count_route(&sh, req.method(), &path);
    let mut mark = Mark::default();
    let resp = match sh.take_status_fault(&path) {
        Some((status, retry_after)) => status_detail(status, retry_after),
        None => match over_limit(&sh, &req, &mut mark) {
            Some(refusal) => refusal,
            None => next.run(req).await,
        },
    };
    sh.lock().log.end(index, resp.status().as_u16(), mark);
    resp
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Counts an authenticated request against the key's budget; over it, a 429 with both waits the
/// Stainless SDK reads: `retry-after-ms` (first, exact) and `retry-after` (whole seconds).
/// Requests without the key are left to the 401 of [`require_key`].
fn over_limit(sh: &Shared, req: &Request, mark: &mut Mark) -> Option<Response> {
    if bearer(req) != Some(sh.api_key.as_str()) {
        return None;
    }
    let verdict = {
        let mut m = sh.lock();
        let verdict = m.rate.refuse(&sh.api_key, mark)?;
        m.stats.rate_limited += 1;
        verdict
    };
    let ms = verdict.retry_after_ms();
    *mark = verdict.refused(verdict.after(Duration::from_millis(ms)));
    let mut resp = status_detail(429, Some(verdict.retry_after_secs().to_string()));
    if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
        resp.headers_mut().insert("retry-after-ms", v);
    }
    Some(resp)
}

fn count_route(sh: &Shared, method: &Method, path: &str) {
    let segs: Vec<&str> = path.split('/').collect();
    // The result counter is keyed by the batch job and item behind the parse job: read the
    // world before the counters, in the lock order.
    let result_key = match segs.as_slice() {
        ["", "api", "v1", "parsing", "job", id, "result", "json"] => {
            let id = percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned();
            let world = sh.world();
            Some(match world.parse_job(&id) {
                Some((job, it)) => (job.id.clone(), it.spec.id.clone()),
                None => (String::new(), id),
            })
        }
        _ => None,
    };
    let mut m = sh.lock();
    let s = &mut m.stats;
    let get = method == Method::GET;
    match segs.as_slice() {
        ["", "api", "v1", "beta", "batch-processing"] if get => s.list_requests += 1,
        [
            "",
            "api",
            "v1",
            "beta",
            "batch-processing",
            "items",
            _,
            "processing-results",
        ] => s.processing_results_requests += 1,
        ["", "api", "v1", "beta", "batch-processing", _, "items"] => s.items_requests += 1,
        ["", "api", "v1", "beta", "batch-processing", _, "cancel"] if method == Method::POST => {
            s.cancel_requests += 1;
        }
        ["", "api", "v1", "beta", "batch-processing", _] => s.detail_requests += 1,
        ["", "api", "v1", "parsing", "job", _] => s.parse_job_requests += 1,
        ["", "api", "v1", "parsing", "job", _, "result", "json"] => {
            if let Some(key) = result_key {
                *s.result_requests.entry(key).or_default() += 1;
            }
        }
        ["", "api", "v1", "parsing", "job", _, "result", _] => s.other_format_requests += 1,
        _ => {}
    }
}

pub(super) async fn require_key(State(sh): State<St>, req: Request, next: Next) -> Response {
    if bearer(&req) == Some(sh.api_key.as_str()) {
        return next.run(req).await;
    }
    sh.lock().stats.unauthorized += 1;
    detail(StatusCode::UNAUTHORIZED, "Invalid API key")
}

pub(crate) fn ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------------
// Wire shapes.

/// BatchJob: `id, job_type, project_id, status, total_items` required, the rest optional.
pub(crate) fn batch_job(sh: &Shared, job: &Job, now: i64) -> Value {
    let statuses: Vec<ItemStatus> = job.items.iter().map(|it| it.status(now)).collect();
    let count = |f: fn(ItemStatus) -> bool| statuses.iter().filter(|s| f(**s)).count();
    let done = count(ItemStatus::is_terminal);
    let failed = count(|s| s == ItemStatus::Failed);
    let skipped = count(|s| s == ItemStatus::Skipped);
    let cancelled = count(|s| s == ItemStatus::Cancelled);
    let total = job.items.len();
    let started = job
        .items
        .iter()
        .filter(|it| it.has_parse_job(now))
        .map(|it| it.running_us)
        .min();
    let status = if job.cancelled_us.is_some() {
        "cancelled"
    } else if done == total {
        if total > 0 && failed == total {
            "failed"
        } else {
            "completed"
        }
    } else if started.is_some() {
        "running"
    } else {
        "dispatched"
    };
    let finished = job.items.iter().filter_map(|it| it.finished_us(now)).max();
    let completed_at =
        (done == total).then(|| ts(finished.or(job.cancelled_us).unwrap_or(job.created_us)));
    let updated = job
        .items
        .iter()
        .map(|it| it.updated_us(job.created_us, now))
        .chain(job.cancelled_us)
        .max()
        .unwrap_or(job.created_us);
    let status = sh
        .status_override(&job.id)
        .unwrap_or_else(|| status.to_owned());
    json!({
        "id": job.id,
        "job_type": "parse",
        "project_id": PROJECT_ID,
        "status": status,
        "total_items": total,
        "completed_at": completed_at,
        "created_at": ts(job.created_us),
        "directory_id": job.directory_id,
        "effective_at": ts(job.created_us),
        "error_message": null,
        "failed_items": failed,
        "job_record_id": null,
        // Items the job got through; the ones a cancel caught were not processed.
        "processed_items": done - cancelled,
        "skipped_items": skipped,
        "started_at": started.map(ts),
        "updated_at": ts(updated),
        "workflow_id": format!("batch-parse-{}", job.id),
    })
}

/// JobItem: `item_id, item_name, status` required.
fn job_item(it: &Item, now: i64) -> Value {
    let status = it.status(now);
    let has_job = it.has_parse_job(now);
    json!({
        "item_id": it.spec.id,
        "item_name": it.spec.name,
        "status": status.as_str(),
        "completed_at": it.finished_us(now).map(ts),
        "effective_at": ts(it.running_us),
        "error_message": (status == ItemStatus::Failed).then_some(PARSE_ERROR.1),
        "job_id": has_job.then_some(it.spec.parse_job_id.as_str()),
        "job_record_id": null,
        "skip_reason": (status == ItemStatus::Skipped).then_some("already_processed"),
        "started_at": has_job.then(|| ts(it.running_us)),
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers.

pub(super) async fn list_jobs(State(sh): State<St>, RawQuery(query): RawQuery) -> Response {
    let q = parse_query(query.as_deref());
    let page = list_page(&sh, &q);
    // Only a page past the first can fail: the SDK's walk asks for offset 0 first.
    let raw_offset = q.get("offset").map(String::as_str).unwrap_or("");
    let later = raw_offset.trim().parse::<u64>().is_ok_and(|o| o > 0);
    let fault = if later {
        sh.lock().list_fault.clone()
    } else {
        None
    };
    match fault {
        None => page,
        Some(fault) => {
            let reject = || query_value_error("offset", raw_offset, "offset is out of range");
            list_faults::answer(&fault, page, |s| status_detail(s, None), reject).await
        }
    }
}

fn list_page(sh: &Shared, q: &Query) -> Response {
    let (offset, limit) = match paging(q) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let status = match enum_param(q, "status", JOB_STATUSES) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if let Err(resp) = enum_param(q, "job_type", JOB_TYPES) {
        return resp;
    }
    let job_type = q.get("job_type");
    let directory = q.get("directory_id");
    let now = sh.clock.now_us();
    let world = sh.world();
    let all: Vec<Value> = world
        .jobs
        .iter()
        .map(|j| batch_job(sh, j, now))
        .filter(|v| status.is_none_or(|s| v["status"] == *s))
        .filter(|v| job_type.is_none_or(|t| v["job_type"] == *t))
        .filter(|v| directory.is_none_or(|d| v["directory_id"] == *d))
        .collect();
    page_response(all, offset, limit, true)
}

pub(super) async fn job_status(State(sh): State<St>, Path(job_id): Path<String>) -> Response {
    let world = sh.world();
    let Some(job) = world.job(&job_id) else {
        return detail(StatusCode::NOT_FOUND, "Batch job not found");
    };
    let now = sh.clock.now_us();
    let done = job
        .items
        .iter()
        .filter(|it| it.status(now).is_terminal())
        .count();
    let progress = if job.items.is_empty() {
        100.0
    } else {
        done as f64 * 100.0 / job.items.len() as f64
    };
    axum::Json(json!({ "job": batch_job(&sh, job, now), "progress_percentage": progress }))
        .into_response()
}

pub(super) async fn job_items(
    State(sh): State<St>,
    Path(job_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let q = parse_query(query.as_deref());
    let (offset, limit) = match paging(&q) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let status = match enum_param(&q, "status", ITEM_STATUSES) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let world = sh.world();
    let Some(job) = world.job(&job_id) else {
        return detail(StatusCode::NOT_FOUND, "Batch job not found");
    };
    let now = sh.clock.now_us();
    let all: Vec<Value> = job
        .items
        .iter()
        .filter(|it| status.is_none_or(|s| it.status(now).as_str() == s))
        .map(|it| job_item(it, now))
        .collect();
    page_response(all, offset, limit, false)
}

/// One processing result per job that completed the item (a file can be run by several jobs).
pub(super) async fn processing_results(
    State(sh): State<St>,
    Path(item_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let q = parse_query(query.as_deref());
    let job_type = match enum_param(&q, "job_type", JOB_TYPES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let world = sh.world();
    let Some(name) = world.item_name(&item_id) else {
        return detail(StatusCode::NOT_FOUND, "Item not found");
    };
    let now = sh.clock.now_us();
    let results: Vec<Value> = world
        .runs(&item_id)
        .filter(|(_, it)| it.status(now) == ItemStatus::Completed)
        .filter(|_| job_type.is_none_or(|t| t == "parse"))
        .map(|(job, it)| processing_result(&sh, job, it))
        .collect();
    axum::Json(json!({
        "item_id": item_id,
        "item_name": name,
        "processing_results": results,
    }))
    .into_response()
}

fn processing_result(sh: &Shared, job: &Job, it: &Item) -> Value {
    let pages = sh.doc(job, it, Format::Json).pages();
    json!({
        "item_id": it.spec.id,
        "job_config": {
            "job_name": "parse_raw_file_job",
            "partitions": {},
            "parameters": { "type": "parse", "lang": "en", "fast_mode": true },
            "project_id": PROJECT_ID,
        },
        "job_type": "parse",
        "output_s3_path": format!(
            "s3://llama-parse-outputs/{PROJECT_ID}/{}/{}.json", job.id, it.spec.parse_job_id
        ),
        "parameters_hash": format!("{:016x}", super::super::seeded::hash_ids(7, &job.id, "parse")),
        "processed_at": ts(it.done_us),
        "result_id": it.spec.parse_job_id,
        "output_metadata": { "pages": pages },
    })
}
