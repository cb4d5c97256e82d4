//! The Talonic error envelope (`providers.md` §3.3: `{statusCode, code, error, message,
//! retryable, request_id, timestamp, path}`, with the documented lowercase codes), injected
//! status faults in it, the quota's 429 (the per-key budget of [`crate::rate`]: by default
//! the UTC day) and the `X-RateLimit-Limit/Remaining/Reset` headers (Reset in ISO-8601) every
//! answer carries.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;

use super::super::rate::Verdict;
use super::St;
use super::{Shared, TalonicFault};

/// `X-RateLimit-Limit/Remaining/Reset` from the key's budget; Reset is ISO-8601 (the error-codes
/// page) in milliseconds, the window's end (the next UTC midnight for the daily quota) unless a
/// fault names its own. Without a limit there is nothing to describe, so no headers.
pub(crate) fn rate_headers(
    headers: &mut HeaderMap,
    verdict: Option<&Verdict>,
    fault_reset: Option<Duration>,
) {
    if let Some(v) = verdict {
        insert(headers, "x-ratelimit-limit", &v.limit.to_string());
    }
    let (remaining, reset) = match (fault_reset, verdict) {
        (Some(d), _) => (
            0,
            Utc::now() + chrono::Duration::from_std(d).unwrap_or_default(),
        ),
        (None, Some(v)) => (v.remaining, DateTime::<Utc>::from(v.reset)),
        (None, None) => return,
    };
    insert(headers, "x-ratelimit-remaining", &remaining.to_string());
    insert(headers, "x-ratelimit-reset", &iso(reset));
}

/// The quota's 429: the envelope with `rate_limited` and `retryable: true`, plus `Retry-After`
/// (whole seconds, rounded up) when the spec asks for it; the reset is the wait it names either
/// way, and the instant it lets the client back.
pub(crate) fn rate_limited(sh: &Shared, v: &Verdict, path: &str) -> (Response, Instant) {
    let msg = "Too many requests. Daily request limit reached.";
    let status = StatusCode::TOO_MANY_REQUESTS;
    let mut resp = envelope(sh, status, "rate_limited", msg, true, path);
    if sh.quota_retry_after {
        insert(
            resp.headers_mut(),
            "retry-after",
            &v.retry_after_secs().to_string(),
        );
    }
    (resp, v.instant_at(v.reset))
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
