//! The PerfectParser routes as documented (`providers.md` §4.2): extraction listing with opaque
//! cursors and filters, submission ([`super::submit`]), status, results, one document, document
//! exports and credits, behind `X-API-Key` auth, the per-key quota and the submit window, with
//! `{"error":{"code","message"}}` errors, named envelopes, injected faults and the request log.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::world::{Data, DocStatus, Document, DocumentBody, Extraction, ts};
use super::{DEFAULT_PARSER_NAME, PerfectFault, Shared, St};

/// Export formats the API offers.
pub(crate) const FORMATS: [&str; 3] = ["json", "csv", "xlsx"];
const STATUSES: [&str; 6] = [
    "queued",
    "pending",
    "processing",
    "completed",
    "failed",
    "partial",
];

/// Largest accepted request body (submissions carry up to 50 files).
pub(super) const MAX_BODY: usize = 256 << 20;

/// Logs and counts the request, checks the key and the quota, serves an injected fault if one
/// matches, and puts the rate-limit headers on every answer.
pub(super) async fn gate(State(sh): State<St>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let index = sh.lock().log.begin(req.method().as_str(), &path);
    let submitting = req.method() == Method::POST && path == "/v1/extractions";
    count_route(&sh, req.method(), &path, req.uri().query());
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let authorized = key == sh.api_key;
    let counted = sh.quota(&key, authorized);
    let mut mark = counted.map(|v| v.mark()).unwrap_or_default();
    let mut quota = counted;
    if authorized && submitting && counted.is_none_or(|q| q.allowed) {
        // The tighter window of the route; its headers describe it.
        quota = sh.submit_quota(&key).or(counted);
    }
    let mut resp = match quota.filter(|q| !q.allowed) {
        _ if !authorized => {
            sh.lock().stats.unauthorized += 1;
            error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Missing or invalid API key",
            )
        }
        Some(refused) => {
            // The reset is named in whole seconds: that is when the client may come back.
            mark.retry_at = Some(refused.reset_at());
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                &format!(
                    "Rate limit of {} requests per window exceeded",
                    refused.limit
                ),
            )
        }
        None => match sh.take_fault(&path) {
            Some(PerfectFault::Status { status, code, .. }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                error(status, &code, "Injected fault")
            }
            Some(PerfectFault::Raw { status, body, .. }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
            }
            None => next.run(req).await,
        },
    };
    if let Some(q) = quota {
        let h = resp.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", q.limit.to_string()),
            ("x-ratelimit-remaining", q.remaining.to_string()),
            ("x-ratelimit-reset", q.reset_unix_secs().to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    sh.lock().log.end(index, resp.status().as_u16(), mark);
    resp
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn count_route(sh: &Shared, method: &Method, path: &str, query: Option<&str>) {
    let segs: Vec<&str> = path.split('/').collect();
    let mut m = sh.lock();
    match segs.as_slice() {
        _ if method != Method::GET => {}
        ["", "v1", "extractions"] => m.stats.list_requests += 1,
        ["", "v1", "credits"] => m.stats.credits_requests += 1,
        ["", "v1", "me"] => m.stats.me_requests += 1,
        ["", "v1", "extractions", e] => *m.stats.status_requests.entry(decode(e)).or_default() += 1,
        ["", "v1", "extractions", _, "results"] => m.stats.results_requests += 1,
        ["", "v1", "extractions", e, "documents", d] => {
            *m.stats
                .document_requests
                .entry((decode(e), decode(d)))
                .or_default() += 1;
        }
        ["", "v1", "extractions", e, "documents", d, "export"] => {
            let format = parse_query(query).remove("format").unwrap_or_default();
            *m.stats
                .export_requests
                .entry((decode(e), decode(d), format))
                .or_default() += 1;
        }
        ["", "v1", "extractions", e, "export"] => {
            let format = parse_query(query).remove("format").unwrap_or_default();
            *m.stats
                .export_requests
                .entry((decode(e), String::new(), format))
                .or_default() += 1;
        }
        _ => {}
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        &format!("{what} not found"),
    )
}

pub(crate) fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", message)
}

pub(crate) fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The list entry of an extraction (also the head of its status and results).
fn summary(sh: &Shared, e: &Extraction, now: i64) -> serde_json::Map<String, Value> {
    let mut counts = [0u64; 3]; // completed, failed, processing (queued included)
    for d in &e.documents {
        match d.status(now) {
            DocStatus::Completed => counts[0] += 1,
            DocStatus::Failed => counts[1] += 1,
            DocStatus::Queued | DocStatus::Processing => counts[2] += 1,
        }
    }
    let v = json!({
        "extraction_id": e.id,
        "parser_id": e.parser_id,
        "parser_name": sh.parser_name(&e.parser_id)
            .unwrap_or_else(|| DEFAULT_PARSER_NAME.to_owned()),
        "status": e.status(now),
        "file_count": e.documents.len(),
        "page_count": e.page_count(),
        "credits_used": e.page_count(),
        "created_at": ts(e.created_us),
        "updated_at": ts(e.updated_us(now)),
        "completed_at": e.completed_us(now).map(ts),
        "document_summary": {
            "total": e.documents.len(), "completed": counts[0],
            "failed": counts[1], "processing": counts[2],
        },
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

pub(super) async fn list(State(sh): State<St>, RawQuery(query): RawQuery) -> Response {
    let q = parse_query(query.as_deref());
    let page = list_page(&sh, &q);
    let cursor = q.get("cursor").filter(|c| !c.is_empty());
    let Some(fault) = cursor.and_then(|_| sh.lock().list_fault.clone()) else {
        return page;
    };
    let status = |s: u16| {
        let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match s {
            503 => "SERVICE_UNAVAILABLE",
            _ => "INTERNAL_ERROR",
        };
        error(
            status,
            code,
            status.canonical_reason().unwrap_or("Server error"),
        )
    };
    let reject = || invalid(INVALID_CURSOR);
    super::super::list_faults::answer(&fault, page, status, reject).await
}

const INVALID_CURSOR: &str = "invalid cursor";

fn list_page(sh: &Shared, q: &HashMap<String, String>) -> Response {
    let limit = match q.get("limit").map(|l| l.trim().parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return invalid("limit must be an integer between 1 and 100"),
    };
    let status = q.get("status").filter(|s| !s.is_empty());
    if let Some(s) = status
        && !STATUSES.contains(&s.as_str())
    {
        return invalid(&format!(
            "unknown status {s:?}: use one of {}",
            STATUSES.join(", ")
        ));
    }
    let since = match q.get("since").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.timestamp_micros()),
            Err(_) => return invalid("since must be an ISO-8601 timestamp"),
        },
    };
    let after = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => match decode_cursor(raw) {
            Some(k) => Some(k),
            None => return invalid(INVALID_CURSOR),
        },
    };
    let parser = q.get("parser_id").filter(|p| !p.is_empty());
    let now = sh.clock.now_us();
    let world = sh.world();
    let mut page: Vec<&Extraction> = world
        .extractions
        .iter()
        .filter(|e| {
            after.as_ref().is_none_or(|(t, id)| {
                e.created_us < *t || (e.created_us == *t && e.id.as_str() > id.as_str())
            })
        })
        .filter(|e| parser.is_none_or(|p| *p == e.parser_id))
        .filter(|e| status.is_none_or(|s| *s == e.status(now)))
        .filter(|e| since.is_none_or(|t| e.updated_us(now) > t))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = more
        .then(|| page.last().map(|e| encode_cursor(e.created_us, &e.id)))
        .flatten();
    let body = json!({
        "extractions": page.iter().map(|e| summary(sh, e, now)).collect::<Vec<_>>(),
        "pagination": { "limit": limit, "has_next_page": more, "next_cursor": next_cursor },
    });
    axum::Json(body).into_response()
}

pub(super) async fn status(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let world = sh.world();
    let Some(e) = world.extraction(&id) else {
        return not_found("Extraction");
    };
    let now = sh.clock.now_us();
    let mut head = summary(&sh, e, now);
    let docs: Vec<Value> = e
        .documents
        .iter()
        .map(|d| {
            json!({
                "document_id": d.id, "filename": d.filename, "status": d.status(now).as_str(),
                "page_count": d.page_count, "credits_used": d.page_count,
                "error_message": d.error_message(now), "created_at": ts(e.created_us),
                "updated_at": ts(d.updated_us(e.created_us, now)),
            })
        })
        .collect();
    head.insert("documents".into(), Value::Array(docs));
    axum::Json(json!({ "extraction": head })).into_response()
}

/// All documents with their data so far (finished ones only carry `extracted_data`).
pub(super) async fn results(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let world = sh.world();
    let Some(e) = world.extraction(&id) else {
        return not_found("Extraction");
    };
    let now = sh.clock.now_us();
    let head = Value::Object(summary(&sh, e, now)).to_string();
    let mut out = head.as_bytes()[..head.len() - 1].to_vec();
    out.extend_from_slice(b",\"documents\":[");
    for (i, d) in e.documents.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let gone = expired(&sh, d, now);
        let body = DocumentBody::new(sh.seed, e, d, now);
        let meta = json!({
            "document_id": d.id, "filename": d.filename, "status": d.status(now).as_str(),
            "page_count": d.page_count, "credits_used": d.page_count,
            "confidence": (d.status(now) == DocStatus::Completed).then(|| d.confidence(sh.seed, &e.id)),
            "processing_time_ms": d.status(now).is_terminal().then(|| d.processing_ms(sh.seed, &e.id)),
            "error_message": d.error_message(now),
        })
        .to_string();
        out.extend_from_slice(&meta.as_bytes()[..meta.len() - 1]);
        out.extend_from_slice(b",\"extracted_data\":");
        if gone {
            out.extend_from_slice(b"null");
        } else {
            out.extend_from_slice(&body.data_bytes());
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    let mut body = b"{\"extraction\":".to_vec();
    body.extend_from_slice(&out);
    body.push(b'}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) async fn document(
    State(sh): State<St>,
    Path((id, doc)): Path<(String, String)>,
) -> Response {
    let world = sh.world();
    let Some((e, d)) = world.document(&id, &doc) else {
        return not_found("Document");
    };
    let now = sh.clock.now_us();
    if d.status(now) == DocStatus::Completed && expired(&sh, d, now) {
        return not_found("Document");
    }
    let body = DocumentBody::new(sh.seed, e, d, now);
    let len = body.len();
    let DocumentBody { head, data, tail } = body;
    let delay = if data.is_some() {
        sh.result_delay
    } else {
        std::time::Duration::ZERO
    };
    let middle = match data {
        Some(Data::Layout(l)) => l.stream(delay).boxed(),
        Some(Data::Inline(b)) => futures_util::stream::iter([Ok(b)]).boxed(),
        None => futures_util::stream::empty().boxed(),
    };
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(head)])
        .chain(middle)
        .chain(futures_util::stream::iter([Ok(tail)]));
    sh.lock()
        .stats
        .document_downloads
        .entry((e.id.clone(), d.id.clone()))
        .and_modify(|n| *n += 1)
        .or_insert(1);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Whether a document's data is past retention.
pub(crate) fn expired(sh: &Shared, d: &Document, now: i64) -> bool {
    now > d.done_us.saturating_add(sh.retention_us)
}

/// Opaque to clients: base64url of `e1:<created micros>:<id>`, the last row's position.
fn encode_cursor(micros: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("e1:{micros}:{id}"))
}

fn decode_cursor(raw: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (micros, id) = text.strip_prefix("e1:")?.split_once(':')?;
    Some((micros.parse().ok()?, id.to_owned()))
}
