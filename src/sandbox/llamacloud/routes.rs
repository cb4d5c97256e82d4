//! The routes and wire shapes of the LlamaCloud sandbox (`providers.md` §2.2–2.4, seed 001):
//! the batch job list, job status, job items, item processing results and the parse-job result
//! routes, with Bearer auth, FastAPI-shaped errors (`{"detail": …}`, 422 validation lists),
//! offset paging with `total_size`, injected faults and the request log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use super::body::Format;
use super::{Item, ItemStatus, Job, PROJECT_ID, Shared};

type St = Arc<Shared>;
type Query = HashMap<String, String>;

const BASE: &str = "/api/v1/beta/batch-processing";
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
const JOB_TYPES: &[&str] = &["parse", "extract", "classify"];

pub(crate) fn router(shared: St) -> Router {
    let api = Router::new()
        .route(BASE, api_get(list_jobs))
        .route(&format!("{BASE}/{{job_id}}"), api_get(job_status))
        .route(&format!("{BASE}/{{job_id}}/items"), api_get(job_items))
        .route(
            &format!("{BASE}/items/{{item_id}}/processing-results"),
            api_get(processing_results),
        )
        .route(
            "/api/v1/parsing/job/{job_id}/result/{format}",
            api_get(parse_result),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_key))
        .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(shared.clone());
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn_with_state(shared, gate))
}

fn api_get<H, T>(handler: H) -> MethodRouter<St>
where
    H: axum::handler::Handler<T, St>,
    T: 'static,
{
    get(handler).fallback(|| async { detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed") })
}

/// Logs, counts per route, and answers an injected fault instead when one matches.
async fn gate(State(sh): State<St>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let index = sh.log_begin(req.method().as_str(), &path);
    count_route(&sh, &path);
    let resp = match sh.take_status_fault(&path) {
        Some((status, retry_after)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = match status.as_u16() {
                429 => "Too many requests",
                _ => status.canonical_reason().unwrap_or("Injected fault"),
            };
            let mut resp = detail(status, message);
            if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        None => next.run(req).await,
    };
    sh.log_end(index, resp.status().as_u16());
    resp
}

fn count_route(sh: &Shared, path: &str) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let segs: Vec<&str> = path.split('/').collect();
    let mut m = sh.lock();
    let s = &mut m.stats;
    match segs.as_slice() {
        ["", "api", "v1", "beta", "batch-processing"] => s.list_requests += 1,
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
        ["", "api", "v1", "beta", "batch-processing", _] => s.detail_requests += 1,
        ["", "api", "v1", "parsing", "job", id, "result", "json"] => {
            let id = decode(id);
            let key = match sh.parse_jobs.get(&id) {
                Some(&(j, i)) => (sh.jobs[j].id.clone(), sh.jobs[j].items[i].spec.id.clone()),
                None => (String::new(), id),
            };
            *s.result_requests.entry(key).or_default() += 1;
        }
        ["", "api", "v1", "parsing", "job", _, "result", _] => s.other_format_requests += 1,
        _ => {}
    }
}

async fn require_key(State(sh): State<St>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token == Some(sh.api_key.as_str()) {
        return next.run(req).await;
    }
    sh.lock().stats.unauthorized += 1;
    detail(StatusCode::UNAUTHORIZED, "Invalid API key")
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "detail": message }))).into_response()
}

fn validation_error(error: Value) -> Response {
    let body = json!({ "detail": [error] });
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

fn ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------------
// Wire shapes.

/// BatchJob: `id, job_type, project_id, status, total_items` required, the rest optional.
fn batch_job(sh: &Shared, job: &Job, now: i64) -> Value {
    let statuses: Vec<ItemStatus> = job.items.iter().map(|it| it.status(now)).collect();
    let count = |f: fn(ItemStatus) -> bool| statuses.iter().filter(|s| f(**s)).count();
    let done = count(ItemStatus::is_terminal);
    let failed = count(|s| s == ItemStatus::Failed);
    let skipped = count(|s| s == ItemStatus::Skipped);
    let total = job.items.len();
    let started = job
        .items
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| **s != ItemStatus::Pending)
        .map(|(it, _)| it.running_us)
        .min();
    let finished = job.items.iter().map(|it| it.done_us).max();
    let status = if done == total {
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
    let completed_at = (done == total).then(|| ts(finished.unwrap_or(job.created_us)));
    let updated = job
        .items
        .iter()
        .zip(&statuses)
        .map(|(it, s)| match s {
            ItemStatus::Pending => job.created_us,
            ItemStatus::Processing => it.running_us,
            _ => it.done_us,
        })
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
        "directory_id": format!("dir-{}", &job.id[job.id.len().min(4)..]),
        "effective_at": ts(job.created_us),
        "error_message": null,
        "failed_items": failed,
        "job_record_id": null,
        "processed_items": done,
        "skipped_items": skipped,
        "started_at": started.map(ts),
        "updated_at": ts(updated),
        "workflow_id": format!("batch-parse-{}", job.id),
    })
}

/// JobItem: `item_id, item_name, status` required.
fn job_item(it: &Item, now: i64) -> Value {
    let status = it.status(now);
    let has_job = matches!(
        status,
        ItemStatus::Processing | ItemStatus::Completed | ItemStatus::Failed
    );
    json!({
        "item_id": it.spec.id,
        "item_name": it.spec.name,
        "status": status.as_str(),
        "completed_at": status.is_terminal().then(|| ts(it.done_us)),
        "effective_at": ts(it.running_us),
        "error_message": (status == ItemStatus::Failed)
            .then_some("Parsing failed: the document could not be read"),
        "job_id": has_job.then_some(it.spec.parse_job_id.as_str()),
        "job_record_id": null,
        "skip_reason": (status == ItemStatus::Skipped).then_some("already_processed"),
        "started_at": (status != ItemStatus::Pending && status != ItemStatus::Skipped)
            .then(|| ts(it.running_us)),
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers.

async fn list_jobs(State(sh): State<St>, RawQuery(query): RawQuery) -> Response {
    let q = parse_query(query.as_deref());
    let (offset, limit) = match paging(&q) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let status = match enum_param(&q, "status", JOB_STATUSES) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if let Err(resp) = enum_param(&q, "job_type", JOB_TYPES) {
        return resp;
    }
    let job_type = q.get("job_type");
    let directory = q.get("directory_id");
    let now = sh.clock.now_us();
    let all: Vec<Value> = sh
        .jobs
        .iter()
        .map(|j| batch_job(&sh, j, now))
        .filter(|v| status.is_none_or(|s| v["status"] == *s))
        .filter(|v| job_type.is_none_or(|t| v["job_type"] == *t))
        .filter(|v| directory.is_none_or(|d| v["directory_id"] == *d))
        .collect();
    page_response(all, offset, limit, true)
}

async fn job_status(State(sh): State<St>, Path(job_id): Path<String>) -> Response {
    let Some(job) = sh.job(&job_id) else {
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

async fn job_items(
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
    let Some(job) = sh.job(&job_id) else {
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

async fn processing_results(
    State(sh): State<St>,
    Path(item_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let q = parse_query(query.as_deref());
    let job_type = match enum_param(&q, "job_type", JOB_TYPES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Some(&(j, i)) = sh.items.get(&item_id) else {
        return detail(StatusCode::NOT_FOUND, "Item not found");
    };
    let (job, it) = (&sh.jobs[j], &sh.jobs[j].items[i]);
    let now = sh.clock.now_us();
    let done = it.status(now) == ItemStatus::Completed;
    let results: Vec<Value> = if done && job_type.is_none_or(|t| t == "parse") {
        let pages = sh.doc(job, it, Format::Json).pages();
        vec![json!({
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
            "parameters_hash": format!("{:016x}", super::super::data::hash_ids(7, &job.id, "parse")),
            "processed_at": ts(it.done_us),
            "result_id": it.spec.parse_job_id,
            "output_metadata": { "pages": pages },
        })]
    } else {
        Vec::new()
    };
    axum::Json(json!({
        "item_id": it.spec.id,
        "item_name": it.spec.name,
        "processing_results": results,
    }))
    .into_response()
}

async fn parse_result(
    State(sh): State<St>,
    Path((parse_id, format)): Path<(String, String)>,
) -> Response {
    let format = match format.as_str() {
        "json" => Format::Json,
        "markdown" => Format::Markdown,
        "text" => Format::Text,
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    let Some(&(j, i)) = sh.parse_jobs.get(&parse_id) else {
        return detail(StatusCode::NOT_FOUND, "Job not found");
    };
    let (job, it) = (&sh.jobs[j], &sh.jobs[j].items[i]);
    let now = sh.clock.now_us();
    match it.status(now) {
        ItemStatus::Completed => {}
        ItemStatus::Failed => {
            return detail(StatusCode::BAD_REQUEST, "Job failed, no result available");
        }
        _ => return detail(StatusCode::BAD_REQUEST, "Job not completed yet"),
    }
    if now > it.done_us.saturating_add(sh.retention_us) {
        return detail(StatusCode::NOT_FOUND, "Job result not found or expired");
    }
    let doc = sh.doc(job, it, format);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, doc.len())
        .body(Body::from_stream(doc.stream(sh.result_delay)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------------------------------------
// Query parameters and pages.

fn parse_query(query: Option<&str>) -> Query {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `{items, total_size, next_page_token?}`; the token is the next offset, as a string.
fn page_response(all: Vec<Value>, offset: usize, limit: usize, with_token: bool) -> Response {
    let total = all.len();
    let items: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let next = offset.saturating_add(items.len());
    let mut body = json!({ "items": items, "total_size": total });
    if with_token {
        body["next_page_token"] = (next < total).then(|| next.to_string()).into();
    }
    axum::Json(body).into_response()
}

/// `offset` (≥ 0, default 0) and `limit` (1..=1000, default 100).
#[allow(clippy::result_large_err)]
fn paging(q: &Query) -> Result<(usize, usize), Response> {
    let offset = int_param(q, "offset", 0, 0, i64::MAX).map_err(validation_error)?;
    let limit = int_param(q, "limit", 100, 1, 1000).map_err(validation_error)?;
    Ok((offset, limit))
}

#[allow(clippy::result_large_err)]
fn enum_param<'q>(q: &'q Query, name: &str, allowed: &[&str]) -> Result<Option<&'q str>, Response> {
    let Some(raw) = q.get(name) else {
        return Ok(None);
    };
    if allowed.contains(&raw.as_str()) {
        return Ok(Some(raw.as_str()));
    }
    let expected = allowed.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>();
    let (last, rest) = expected
        .split_last()
        .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
    let expected = format!("{} or {last}", rest.join(", "));
    Err(validation_error(json!({
        "type": "enum", "loc": ["query", name], "input": raw,
        "msg": format!("Input should be {expected}"), "ctx": { "expected": expected },
    })))
}

/// An integer query parameter, or pydantic's validation error for it.
fn int_param(q: &Query, name: &str, default: usize, min: i64, max: i64) -> Result<usize, Value> {
    let Some(raw) = q.get(name) else {
        return Ok(default);
    };
    let loc = json!(["query", name]);
    let trimmed = raw.trim();
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(json!({ "type": "int_parsing", "loc": loc, "input": raw,
            "msg": "Input should be a valid integer, unable to parse string as an integer" }));
    }
    let n = trimmed
        .parse::<i64>()
        .unwrap_or(if trimmed.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        });
    if n < min {
        Err(
            json!({ "type": "greater_than_equal", "loc": loc, "input": raw, "ctx": { "ge": min },
            "msg": format!("Input should be greater than or equal to {min}") }),
        )
    } else if n > max {
        Err(
            json!({ "type": "less_than_equal", "loc": loc, "input": raw, "ctx": { "le": max },
            "msg": format!("Input should be less than or equal to {max}") }),
        )
    } else {
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
