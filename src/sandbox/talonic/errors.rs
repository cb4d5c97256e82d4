//! The Talonic error envelope (`providers.md` §3.3: `{statusCode, code, error, message,
//! retryable, request_id, timestamp, path}`, with the documented lowercase codes), injected
//! status faults in it, the per-key daily quota (UTC day, wall clock) and the
//! `X-RateLimit-Limit/Remaining/Reset` headers (Reset in ISO-8601) every answer carries.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;

use super::routes::St;
use super::{Shared, TalonicFault};

/// Counts one request against the key's daily quota (UTC day, wall clock); false when spent.
pub(crate) fn take_quota(sh: &Shared) -> bool {
    let day = Utc::now().timestamp().div_euclid(86_400);
    let mut m = sh.lock();
    if m.quota_day != day {
        m.quota_day = day;
        m.quota_used = 0;
    }
    if m.quota_used >= sh.daily_limit {
        return false;
    }
    m.quota_used += 1;
    true
}

pub(crate) fn until_midnight() -> Duration {
    let now = Utc::now().timestamp_millis();
    let next = (now.div_euclid(86_400_000) + 1) * 86_400_000;
    Duration::from_millis((next - now) as u64)
}

/// `X-RateLimit-Limit/Remaining/Reset`; Reset is ISO-8601 (the error-codes page), the next UTC
/// midnight unless a fault names its own.
pub(crate) fn rate_headers(sh: &Shared, headers: &mut HeaderMap, fault_reset: Option<Duration>) {
    let used = sh.lock().quota_used;
    let (remaining, reset) = match fault_reset {
        Some(d) => (
            0,
            Utc::now() + chrono::Duration::from_std(d).unwrap_or_default(),
        ),
        None => (
            sh.daily_limit.saturating_sub(used),
            Utc::now() + chrono::Duration::from_std(until_midnight()).unwrap_or_default(),
        ),
    };
    insert(headers, "x-ratelimit-limit", &sh.daily_limit.to_string());
    insert(headers, "x-ratelimit-remaining", &remaining.to_string());
    insert(headers, "x-ratelimit-reset", &iso(reset));
}

pub(crate) fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

pub(crate) fn fault_response(sh: &Shared, f: &TalonicFault, path: &str) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = f
        .code
        .clone()
        .unwrap_or_else(|| default_code(status).to_owned());
    let retryable = f
        .retryable
        .unwrap_or(matches!(status.as_u16(), 408 | 429) || status.is_server_error());
    let message = match status.as_u16() {
        429 => "Too many requests. Retry after the period indicated in the rate-limit headers.",
        _ => status.canonical_reason().unwrap_or("Injected fault"),
    };
    let mut resp = if f.draft {
        let body = json!({ "status": status.as_u16(), "code": code, "message": message });
        (status, axum::Json(body)).into_response()
    } else {
        envelope(sh, status, &code, message, retryable, path)
    };
    if let Some(v) = &f.retry_after {
        insert(resp.headers_mut(), "retry-after", v);
    }
    resp
}

fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "VALIDATION_ERROR",
        401 => "unauthorized",
        403 => "insufficient_scope",
        404 => "not_found",
        429 => "rate_limited",
        503 => "SERVICE_UNAVAILABLE",
        _ => "INTERNAL_ERROR",
    }
}

/// The documented error envelope.
pub(crate) fn envelope(
    sh: &Shared,
    status: StatusCode,
    code: &str,
    message: &str,
    retryable: bool,
    path: &str,
) -> Response {
    let seq = {
        let mut m = sh.lock();
        m.request_seq += 1;
        m.request_seq
    };
    let body = json!({
        "statusCode": status.as_u16(),
        "code": code,
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
        "retryable": retryable,
        "request_id": format!("req_{:016x}", sh.seed.rotate_left(17) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        "timestamp": iso(Utc::now()),
        "path": path,
    });
    (status, axum::Json(body)).into_response()
}

pub(crate) async fn not_found_route(State(sh): State<St>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let msg = format!("Cannot {} {path}", req.method());
    envelope(&sh, StatusCode::NOT_FOUND, "not_found", &msg, false, &path)
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn ts(us: i64) -> String {
    iso(DateTime::from_timestamp_micros(us).unwrap_or_default())
}

pub(crate) fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub(crate) fn not_found(sh: &Shared, what: &str, path: &str) -> Response {
    let msg = format!("No {what} with this ID exists for your organization.");
    envelope(sh, StatusCode::NOT_FOUND, "not_found", &msg, false, path)
}

pub(crate) fn validation(sh: &Shared, msg: &str, path: &str) -> Response {
    envelope(
        sh,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        msg,
        false,
        path,
    )
}
