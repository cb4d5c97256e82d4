//! The Talonic routes as documented: `GET /v1/batches` (cursor pagination), `GET /v1/batches/:id`
//! (fields per seed 002), `GET /v1/documents/:id` and `GET /v1/extractions/:id`, behind Bearer
//! auth and a per-key daily quota, with the error envelope `{statusCode, code, error, message,
//! retryable, request_id, timestamp, path}` and `X-RateLimit-Limit/Remaining/Reset` (ISO-8601)
//! on every response. Injected faults, route counters and the request log live in the gate.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use super::errors::{
    enc, envelope, fault_response, not_found, rate_headers, rate_limited, ts, validation,
};
use super::world::{Batch, Item, ItemStatus};
use super::{Shared, St, TalonicFault};

const BATCH_STATUSES: [&str; 5] = [
    "accumulating",
    "submitted",
    "completed",
    "failed",
    "cancelled",
];

/// Logs and counts the request, then: an injected fault, else 401 without the key, else 429 when
/// the key's budget is spent, else the route. Every answer gets the rate-limit headers.
pub(super) async fn gate(State(sh): State<St>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let index = sh.lock().log.begin(req.method().as_str(), &path);
    count_route(&sh, req.method(), &path);
    let fault = {
        let mut m = sh.lock();
        let found = m
            .faults
            .iter()
            .position(|f| path.starts_with(&f.path_prefix));
        found.and_then(|i| m.faults.remove(i))
    };
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.trim() == sh.api_key
        });
    let refused_by_fault = fault.as_ref().filter(|f| !(200..300).contains(&f.status));
    // Only a request that reaches the quota counts against it; the rest only read it.
    let verdict = {
        let mut m = sh.lock();
        match refused_by_fault.is_none() && authorized {
            true => m.rate.take(&sh.api_key),
            false => m.rate.peek(&sh.api_key),
        }
    };
    let mut mark = verdict.map(|v| v.mark()).unwrap_or_default();
    let mut quota_reset: Option<Duration> = None;
    let resp = if let Some(f) = refused_by_fault {
        quota_reset = f.reset_in;
        fault_response(&sh, f, &path)
    } else if !authorized {
        sh.lock().stats.unauthorized += 1;
        let msg = "Missing or invalid API key.";
        envelope(
            &sh,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            msg,
            false,
            &path,
        )
    } else if let Some(v) = verdict.filter(|v| !v.allowed) {
        sh.lock().stats.rate_limited += 1;
        let (resp, retry_at) = rate_limited(&sh, &v, &path);
        mark = v.refused(retry_at);
        resp
    } else {
        // A 2xx "fault" is served normally, with only its rate-limit headers.
        quota_reset = fault.and_then(|f| f.reset_in);
        next.run(req).await
    };
    let mut resp = resp;
    rate_headers(resp.headers_mut(), verdict.as_ref(), quota_reset);
    sh.lock().log.end(index, resp.status().as_u16(), mark);
    resp
}

fn count_route(sh: &Shared, method: &Method, path: &str) {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let segs: Vec<&str> = path.split('/').collect();
    let mut m = sh.lock();
    if method == Method::POST {
        match segs.as_slice() {
            ["", "v1", "batches", b, "sync"] if !b.is_empty() => m.stats.sync_requests += 1,
            ["", "v1", "batches", b, "cancel"] if !b.is_empty() => m.stats.cancel_requests += 1,
            _ => {}
        }
        return;
    }
    if method != Method::GET {
        return;
    }
    match segs.as_slice() {
        ["", "v1", "batches"] => m.stats.list_requests += 1,
        ["", "v1", "batches", b] if !b.is_empty() => m.stats.detail_requests += 1,
        ["", "v1", "documents", d] if !d.is_empty() => {
            *m.stats.document_requests.entry(decode(d)).or_default() += 1;
        }
        ["", "v1", "extractions", e] if !e.is_empty() => {
            *m.stats.extraction_requests.entry(decode(e)).or_default() += 1;
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes.

fn batch_json(b: &Batch, now: i64) -> serde_json::Map<String, Value> {
    let (status, completed) = b.status(now);
    let count = |s: ItemStatus| b.items.iter().filter(|it| it.status(now) == s).count();
    let submitted = b.submitted_us();
    let error =
        (status == "failed").then_some("The provider batch ended with every request errored.");
    let v = json!({
        "id": b.id,
        "status": status,
        "provider": b.provider,
        "item_count": b.items.len(),
        "succeeded_count": count(ItemStatus::Completed),
        "errored_count": count(ItemStatus::Failed),
        "expired_count": 0,
        "submitted_at": (now >= submitted).then(|| ts(submitted)),
        "completed_at": completed.map(ts),
        "error_message": error,
        "created_at": ts(b.created_us),
        "updated_at": ts(b.updated_us(now)),
        "links": { "self": format!("/v1/batches/{}", enc(&b.id)) },
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

fn item_json(b: &Batch, it: &Item, now: i64) -> Value {
    let status = it.status(now);
    let terminal = matches!(status, ItemStatus::Completed | ItemStatus::Failed);
    json!({
        "id": it.id,
        "document_id": it.document_id,
        "document_filename": it.filename,
        "custom_id": (now >= b.submitted_us()).then_some(&it.custom_id),
        "status": status.as_str(),
        "error_message": (status == ItemStatus::Failed)
            .then_some(if it.cancelled_us.is_some() {
            "The batch was cancelled before this item was processed."
        } else {
            "Extraction failed: the provider returned an invalid response."
        }),
        "created_at": ts(b.created_us),
        "processed_at": terminal.then(|| ts(it.finished_us())),
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers.

pub(super) async fn list_batches(State(sh): State<St>, RawQuery(query): RawQuery) -> Response {
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let page = list_page(&sh, &q);
    let cursor = q.get("cursor").filter(|c| !c.is_empty());
    let Some(fault) = cursor.and_then(|_| sh.lock().list_fault.clone()) else {
        return page;
    };
    let path = "/v1/batches";
    let status = |s| fault_response(&sh, &TalonicFault::new(path, s), path);
    let reject = || validation(&sh, INVALID_CURSOR, path);
    super::super::list_faults::answer(&fault, page, status, reject).await
}

const INVALID_CURSOR: &str = "cursor is invalid or expired";

fn list_page(sh: &Shared, q: &HashMap<String, String>) -> Response {
    let path = "/v1/batches";
    let limit = match q.get("limit").map(|l| l.trim().parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return validation(sh, "limit must be an integer between 1 and 100", path),
    };
    let after = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => match decode_cursor(raw) {
            Some(key) => Some(key),
            None => return validation(sh, INVALID_CURSOR, path),
        },
    };
    let status = q.get("status").filter(|s| !s.is_empty());
    if status.is_some_and(|s| !BATCH_STATUSES.contains(&s.as_str())) {
        let msg = format!("status must be one of {}", BATCH_STATUSES.join(", "));
        return validation(sh, &msg, path);
    }
    let now = sh.clock.now_us();
    let world = sh.world();
    let matching: Vec<&Batch> = world
        .batches
        .iter()
        .filter(|b| status.is_none_or(|s| b.status(now).0 == *s))
        .collect();
    let rest: Vec<&Batch> = matching
        .iter()
        .copied()
        .filter(|b| {
            after.as_ref().is_none_or(|(t, id)| {
                b.created_us < *t || (b.created_us == *t && b.id.as_str() > id.as_str())
            })
        })
        .collect();
    let page = &rest[..rest.len().min(limit)];
    let has_more = rest.len() > limit;
    let next_cursor = has_more
        .then(|| page.last().map(|b| encode_cursor(b.created_us, &b.id)))
        .flatten();
    let body = json!({
        "data": page.iter().map(|b| batch_json(b, now)).collect::<Vec<_>>(),
        "pagination": {
            "total": matching.len(),
            "limit": limit,
            "has_more": has_more,
            "next_cursor": next_cursor,
        },
    });
    axum::Json(body).into_response()
}

pub(super) async fn get_batch(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let path = format!("/v1/batches/{}", enc(&id));
    let world = sh.world();
    let Some(b) = world.batch(&id) else {
        return not_found(&sh, "batch", &path);
    };
    batch_detail(b, sh.clock.now_us())
}

/// The batch with its `items[]`, as `GET /v1/batches/:id` shows it.
pub(crate) fn batch_detail(b: &Batch, now: i64) -> Response {
    let mut body = batch_json(b, now);
    let items = b.items.iter().map(|it| item_json(b, it, now)).collect();
    body.insert("items".into(), Value::Array(items));
    axum::Json(Value::Object(body)).into_response()
}

/// Whether the item's document and extraction are past retention.
fn expired(sh: &Shared, it: &Item, now: i64) -> bool {
    let done = it.finished_us();
    now >= done && now > done.saturating_add(sh.retention_us)
}

pub(super) async fn get_document(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let path = format!("/v1/documents/{}", enc(&id));
    let now = sh.clock.now_us();
    let world = sh.world();
    let Some((b, it)) = world.document(&id).filter(|(_, it)| !expired(&sh, it, now)) else {
        return not_found(&sh, "document", &path);
    };
    let status = it.status(now);
    let done = status == ItemStatus::Completed;
    let updated = if now >= it.finished_us() {
        it.finished_us()
    } else {
        b.created_us
    };
    let body = json!({
        "id": it.document_id,
        "filename": it.filename,
        "status": status.as_str(),
        "processing_mode": "batch",
        "batch_id": b.id,
        "latest_extraction_id": done.then_some(&it.extraction_id),
        "error_message": (status == ItemStatus::Failed).then_some("Extraction failed."),
        "created_at": ts(b.created_us),
        "updated_at": ts(updated),
    });
    axum::Json(body).into_response()
}

pub(super) async fn get_extraction(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let path = format!("/v1/extractions/{}", enc(&id));
    let now = sh.clock.now_us();
    let world = sh.world();
    let found = world
        .extraction(&id)
        .filter(|(_, it)| it.status(now) == ItemStatus::Completed && !expired(&sh, it, now));
    let Some((b, it)) = found else {
        return not_found(&sh, "extraction", &path);
    };
    let body = it.extraction(sh.seed, &b.id);
    *sh.lock()
        .stats
        .extraction_downloads
        .entry((b.id.clone(), it.id.clone()))
        .or_default() += 1;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from_stream(body.stream(sh.result_delay)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Opaque to clients: base64url of `c1:<created micros>:<id>`, the last row's position.
fn encode_cursor(micros: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("c1:{micros}:{id}"))
}

fn decode_cursor(raw: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (micros, id) = text.strip_prefix("c1:")?.split_once(':')?;
    Some((micros.parse().ok()?, id.to_owned()))
}
