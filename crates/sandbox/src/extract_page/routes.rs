//! The extract.page API as published (`providers.md` §1, OpenAPI seeds 000 and 003):
//! `GET /v1/batches`, `GET /v1/batches/{batch_id}` (with the item change feed) and
//! `GET /v1/batches/{batch_id}/items/{item_id}/result`, with `X-API-KEY` auth, FastAPI-shaped
//! 422s, opaque base64 cursors, injected faults, the rate limit's 429 with `Retry-After` and the
//! request log. The gate and the key check here front every route, the write routes
//! (`POST /v1/files`, `GET /v1/files/{id}`, `POST /v1/batches`, cancel) too, which are handled
//! in [`super::uploads`] and [`super::batches`]; the router that wires them is the parent's.
//!
//! It owns the wire shapes and the cursor formats; the timeline comes from [`super::world`] and
//! the bodies from [`crate::body`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};

use super::faults::fault_response;
use super::world::{Batch, Item, ItemStatus};
use super::{Delivery, Fault, Shared, object_store};
use crate::Mark;
use crate::fastapi::{detail, int_param, parse_query, query_value_error, validation_error};

type St = Arc<Shared>;

/// Logs the request, counts it per route, and answers an injected fault, an outage or the rate
/// limit instead when one applies.
pub(super) async fn gate(State(sh): State<St>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let index = sh.lock().log.begin(req.method().as_str(), &path);
    count_route(&sh, req.method().as_str(), &path);
    let fault = sh.take_fault(|f| match f {
        Fault::Status { path_prefix, .. } => path.starts_with(path_prefix.as_str()),
        _ => false,
    });
    let mut mark = Mark::default();
    let resp = match fault {
        Some(Fault::Status {
            status,
            retry_after,
            ..
        }) => fault_response(status, retry_after),
        _ if sh.in_outage(&path) => fault_response(503, None),
        _ => match over_limit(&sh, &req, &mut mark) {
            Some(refusal) => refusal,
            None => next.run(req).await,
        },
    };
    sh.lock().log.end(index, resp.status().as_u16(), mark);
    resp
}

/// Counts a request that carries the key against its budget; over it, the 429 with
/// `Retry-After`. Requests without the key are left to the 401 of [`require_key`].
fn over_limit(sh: &Shared, req: &Request, mark: &mut Mark) -> Option<Response> {
    let given = req.headers().get("x-api-key")?;
    if given.as_bytes() != sh.api_key.as_bytes() {
        return None;
    }
    let mut m = sh.lock();
    let verdict = m.rate.refuse(&sh.api_key, mark)?;
    m.stats.rate_limited += 1;
    let (retry_after, at) = verdict.retry_after(m.retry_after_form);
    *mark = verdict.refused(at);
    Some(fault_response(429, Some(retry_after)))
}

fn count_route(sh: &Shared, method: &str, path: &str) {
    let segs: Vec<&str> = path.split('/').collect();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut m = sh.lock();
    if method == "POST" {
        if let ["", "v1", "batches", b, "cancel"] = segs.as_slice()
            && !b.is_empty()
        {
            m.stats.cancel_requests += 1;
        }
        return;
    }
    if !matches!(method, "GET" | "HEAD") {
        return;
    }
    match segs.as_slice() {
        ["", "v1", "batches"] => m.stats.list_requests += 1,
        ["", "v1", "batches", b] if !b.is_empty() => m.stats.detail_requests += 1,
        ["", "v1", "batches", b, "items", i, "result"] if !b.is_empty() && !i.is_empty() => {
            *m.stats
                .result_requests
                .entry((decode(b), decode(i)))
                .or_default() += 1;
        }
        _ => {}
    }
}

pub(super) async fn require_key(State(sh): State<St>, req: Request, next: Next) -> Response {
    let given = req.headers().get("x-api-key").map(HeaderValue::as_bytes);
    // Other methods fall through to the 405, which FastAPI answers before any dependency.
    let gated = match req.method().as_str() {
        "GET" | "HEAD" => true,
        "POST" => {
            let path = req.uri().path();
            // The only other POST route is `/v1/batches/{batch_id}/cancel`.
            matches!(path, "/v1/files" | "/v1/batches")
                || (path.ends_with("/cancel") && path.split('/').count() == 5)
        }
        _ => false,
    };
    if !gated || given == Some(sh.api_key.as_bytes()) {
        return next.run(req).await;
    }
    sh.lock().stats.unauthorized += 1;
    detail(StatusCode::UNAUTHORIZED, "Invalid or missing API key")
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (BatchResource, BatchItemResource, BatchListResponse).

#[derive(Serialize, Default)]
struct Counts {
    pending: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
}

#[derive(Serialize)]
pub(super) struct BatchResource<'a> {
    object: &'static str,
    id: &'a str,
    status: &'static str,
    counts: Counts,
    total_items: usize,
    engine: &'a str,
    options: &'a serde_json::Map<String, Value>,
    metadata: Option<&'a Value>,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    expires_at: String,
}

#[derive(Serialize)]
struct BatchList<'a> {
    object: &'static str,
    data: Vec<BatchResource<'a>>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct BatchDetail<'a> {
    #[serde(flatten)]
    batch: BatchResource<'a>,
    items: Vec<ItemResource<'a>>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct ItemResource<'a> {
    object: &'static str,
    id: &'a str,
    batch_id: &'a str,
    file_id: &'a str,
    position: usize,
    status: &'static str,
    attempts: u32,
    updated_at: String,
    page_count: Option<u64>,
    started_at: Option<String>,
    completed_at: Option<String>,
    result_url: Option<String>,
    error: Option<Value>,
}

impl BatchResource<'_> {
    pub(super) fn status(&self) -> &'static str {
        self.status
    }
}

pub(super) fn ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn batch_resource<'a>(sh: &Shared, b: &'a Batch, now: i64) -> BatchResource<'a> {
    let mut counts = Counts::default();
    let mut started: Option<i64> = None;
    let mut last_done = b.created_us;
    for it in &b.items {
        let status = it.status(now);
        match status {
            ItemStatus::Pending => counts.pending += 1,
            ItemStatus::Running => counts.running += 1,
            ItemStatus::Succeeded => counts.succeeded += 1,
            ItemStatus::Failed => counts.failed += 1,
            ItemStatus::Cancelled => counts.cancelled += 1,
        }
        if it.started(now) {
            started = Some(started.map_or(it.running_us, |s| s.min(it.running_us)));
        }
        last_done = last_done.max(it.finished_us(now).unwrap_or(it.done_us));
    }
    let total = b.items.len() as u64;
    let terminal = counts.succeeded + counts.failed + counts.cancelled == total;
    let status = if b.cancelled_us.is_some() {
        "cancelled"
    } else if terminal {
        match (counts.succeeded, counts.failed) {
            (_, 0) => "completed",
            (0, _) => "failed",
            _ => "partially_failed",
        }
    } else if counts.pending == total {
        "pending"
    } else {
        "running"
    };
    let completed = terminal.then_some(last_done);
    BatchResource {
        object: "batch",
        id: &b.id,
        status,
        counts,
        total_items: b.items.len(),
        engine: &b.engine,
        options: &b.options,
        metadata: b.metadata.as_ref(),
        created_at: ts(b.created_us),
        started_at: started.map(ts),
        completed_at: completed.map(ts),
        expires_at: ts(completed
            .unwrap_or(b.created_us)
            .saturating_add(sh.retention_us)),
    }
}

fn item_resource<'a>(sh: &Shared, b: &'a Batch, it: &'a Item, now: i64) -> ItemResource<'a> {
    let status = it.status(now);
    ItemResource {
        object: "batch_item",
        id: &it.id,
        batch_id: &b.id,
        file_id: &it.file_id,
        position: it.position,
        status: status.as_str(),
        attempts: it.attempts(now),
        updated_at: ts(it.updated_us(b.created_us, now)),
        page_count: (status == ItemStatus::Succeeded).then(|| sh.result_pages(&b.id, it)),
        started_at: it.started(now).then(|| ts(it.running_us)),
        completed_at: it.finished_us(now).map(ts),
        result_url: None,
        error: match (status, it.error) {
            (ItemStatus::Failed, Some((code, message))) => {
                Some(json!({ "code": code, "message": message }))
            }
            _ => None,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

pub(super) async fn list_batches(State(sh): State<St>, RawQuery(query): RawQuery) -> Response {
    let q = parse_query(query.as_deref());
    let page = list_page(&sh, &q);
    let cursor = q.get("cursor").filter(|c| !c.is_empty());
    let Some(fault) = cursor.and_then(|_| sh.lock().list_fault.clone()) else {
        return page;
    };
    let reject = || invalid_cursor(cursor.map_or("", String::as_str));
    crate::list_faults::answer(&fault, page, |s| fault_response(s, None), reject).await
}

fn list_page(sh: &Shared, q: &HashMap<String, String>) -> Response {
    let limit = match int_param(q, "limit", 50, 1, 200) {
        Ok(v) => v,
        Err(error) => return validation_error(error),
    };
    let after = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => match decode_cursor('b', raw) {
            Some(key) => Some(key),
            None => return invalid_cursor(raw),
        },
    };
    let status = q.get("status").filter(|s| !s.is_empty());
    let now = sh.clock.now_us();
    // World::batches is already in listing order: created_at descending, then id ascending.
    let world = sh.world();
    let mut page = world
        .batches
        .iter()
        .filter(|b| {
            after.as_ref().is_none_or(|(t, id)| {
                b.created_us < *t || (b.created_us == *t && b.id.as_str() > id.as_str())
            })
        })
        .map(|b| (b, batch_resource(sh, b, now)))
        .filter(|(_, r)| status.is_none_or(|s| r.status == s.as_str()))
        .take(limit + 1)
        .collect::<Vec<_>>();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = if more {
        page.last()
            .map(|(b, _)| encode_cursor('b', b.created_us, &b.id))
    } else {
        None
    };
    let list = BatchList {
        object: "list",
        data: page.into_iter().map(|(_, r)| r).collect(),
        next_cursor,
    };
    axum::Json(list).into_response()
}

pub(super) async fn get_batch(
    State(sh): State<St>,
    Path(batch_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let q = parse_query(query.as_deref());
    let limit = match int_param(&q, "limit", 100, 1, 500) {
        Ok(v) => v,
        Err(error) => return validation_error(error),
    };
    let passed = q.get("cursor").filter(|c| !c.is_empty());
    let after = match passed {
        None => None,
        Some(raw) => match decode_cursor('i', raw) {
            Some(key) => Some(key),
            None => return invalid_cursor(raw),
        },
    };
    let world = sh.world();
    let Some(b) = world.batch(&batch_id) else {
        return detail(StatusCode::NOT_FOUND, "Batch not found");
    };
    let now = sh.clock.now_us();
    // The change feed: ascending (updated_at, id), strictly after the cursor's position.
    let mut changed: Vec<(i64, &Item)> = b
        .items
        .iter()
        .map(|it| (it.updated_us(b.created_us, now), it))
        .filter(|(u, it)| {
            after
                .as_ref()
                .is_none_or(|(t, id)| *u > *t || (*u == *t && it.id.as_str() > id.as_str()))
        })
        .collect();
    changed.sort_by(|(ua, a), (ub, b)| ua.cmp(ub).then_with(|| a.id.cmp(&b.id)));
    changed.truncate(limit);
    let next_cursor = match changed.last() {
        Some((u, it)) => Some(encode_cursor('i', *u, &it.id)),
        None => passed.cloned(),
    };
    let items = changed
        .iter()
        .map(|(_, it)| item_resource(&sh, b, it, now))
        .collect();
    let body = BatchDetail {
        batch: batch_resource(&sh, b, now),
        items,
        next_cursor,
    };
    axum::Json(body).into_response()
}

pub(super) async fn get_result(
    State(sh): State<St>,
    Path((batch_id, item_id)): Path<(String, String)>,
) -> Response {
    let world = sh.world();
    let Some((b, it)) = world.item(&batch_id, &item_id) else {
        return detail(StatusCode::NOT_FOUND, "Batch or item not found");
    };
    let not_ready_once = sh
        .take_fault(|f| {
            matches!(f, Fault::NotReadyOnce { batch, item } if *batch == batch_id && *item == item_id)
        })
        .is_some();
    let now = sh.clock.now_us();
    let status = if not_ready_once {
        ItemStatus::Running
    } else {
        it.status(now)
    };
    if status != ItemStatus::Succeeded {
        let body = json!({ "error": "result_not_ready", "status": status.as_str() });
        return (StatusCode::CONFLICT, axum::Json(body)).into_response();
    }
    if now > it.done_us.saturating_add(sh.retention_us) {
        return detail(StatusCode::GONE, "Result expired");
    }
    let redirected = it.delivery == Delivery::Redirect;
    if let Some(fault) = sh.api_result_fault(&b.id, &it.id, redirected) {
        return super::faults::respond(&sh, &b.id, it, &fault);
    }
    match it.delivery {
        Delivery::Inline => {
            sh.charge_result();
            sh.result_response(&b.id, it)
        }
        Delivery::Redirect => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, object_store::presign(&sh, &b.id, &it.id))
            .header(header::CONTENT_LENGTH, 0)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

// ---------------------------------------------------------------------------------------------
// Query parameters and cursors.

fn invalid_cursor(raw: &str) -> Response {
    query_value_error("cursor", raw, "invalid cursor")
}

/// Opaque to clients: base64url of `<kind>1:<micros>:<id>`, the position key of the last row.
fn encode_cursor(kind: char, micros: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}1:{micros}:{id}"))
}

fn decode_cursor(kind: char, raw: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix(kind)?.strip_prefix("1:")?;
    let (micros, id) = rest.split_once(':')?;
    Some((micros.parse().ok()?, id.to_owned()))
}
