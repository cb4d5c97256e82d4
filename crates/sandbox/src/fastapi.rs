//! The FastAPI conventions both FastAPI services of the sandbox (extract.page and LlamaCloud)
//! answer in: `{"detail": "..."}` errors, pydantic 422 lists for query and body validation, and
//! query strings where the last value of a repeated key wins. It owns those shapes, so the two
//! sandboxes cannot drift apart on them.

use std::collections::HashMap;

use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Map, Value, json};

/// A GET route that answers other methods 405 `{"detail":"Method Not Allowed"}`, as FastAPI does
/// before any dependency runs.
pub(crate) fn api_get<H, T, S>(handler: H) -> MethodRouter<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    get(handler).fallback(method_not_allowed)
}

/// FastAPI's 405.
pub(crate) async fn method_not_allowed() -> Response {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// `{"detail": message}` with `status`, FastAPI's `HTTPException`.
pub(crate) fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "detail": message }))).into_response()
}

/// An injected `status` as the service answers it: the reason phrase as `detail` (`too_many` for
/// a 429), and `Retry-After` verbatim when given.
pub(crate) fn status_detail(status: u16, retry_after: Option<String>, too_many: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match status.as_u16() {
        429 => too_many,
        _ => status.canonical_reason().unwrap_or("Injected fault"),
    };
    let mut resp = detail(status, message);
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, value);
    }
    resp
}

/// A 422 with one pydantic error.
pub(crate) fn validation_error(error: Value) -> Response {
    let body = json!({ "detail": [error] });
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

/// A 422 for a query parameter a validator refused with `error`.
pub(crate) fn query_value_error(name: &str, raw: &str, error: &str) -> Response {
    validation_error(json!({
        "type": "value_error", "loc": ["query", name], "input": raw,
        "msg": format!("Value error, {error}"), "ctx": { "error": error }
    }))
}

/// The last value wins for a repeated key, as in FastAPI.
pub(crate) fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// An integer query parameter, or pydantic's validation error for it.
pub(crate) fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    min: i64,
    max: i64,
) -> Result<usize, Value> {
    let Some(raw) = q.get(name) else {
        return Ok(default);
    };
    let loc = json!(["query", name]);
    let trimmed = raw.trim();
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    let error = if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        json!({ "type": "int_parsing", "loc": loc, "input": raw,
                "msg": "Input should be a valid integer, unable to parse string as an integer" })
    } else {
        // All digits: an overflow is simply out of range on its side.
        let n = trimmed
            .parse::<i64>()
            .unwrap_or(if trimmed.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            });
        if n < min {
            json!({ "type": "greater_than_equal", "loc": loc, "input": raw, "ctx": { "ge": min },
                    "msg": format!("Input should be greater than or equal to {min}") })
        } else if n > max {
            json!({ "type": "less_than_equal", "loc": loc, "input": raw, "ctx": { "le": max },
                    "msg": format!("Input should be less than or equal to {max}") })
        } else {
            return Ok(n as usize);
        }
    };
    Err(error)
}

// ---------------------------------------------------------------------------------------------
// Body validation.

pub(crate) fn field_error(kind: &str, loc: Value, msg: &str, input: &Value) -> Value {
    json!({ "type": kind, "loc": loc, "msg": msg, "input": input })
}

/// The JSON object of a request body, or its 422.
pub(crate) fn body_object(raw: &[u8]) -> Result<Map<String, Value>, Box<Response>> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Box::new(validation_error(field_error(
            "model_attributes_type",
            json!(["body"]),
            "Input should be a valid dictionary or object to extract fields from",
            &other,
        )))),
        Err(err) => Err(Box::new(validation_error(json!({
            "type": "json_invalid", "loc": ["body", err.column().saturating_sub(1)], "msg": "JSON decode error",
            "input": {}, "ctx": { "error": err.to_string() }
        })))),
    }
}

/// An optional string field of at most `max` characters.
pub(crate) fn opt_string(
    body: &Map<String, Value>,
    name: &str,
    max: usize,
    errors: &mut Vec<Value>,
) -> Option<String> {
    match body.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= max => Some(s.clone()),
        Some(v @ Value::String(_)) => {
            let msg = format!("String should have at most {max} characters");
            let mut e = field_error("string_too_long", json!(["body", name]), &msg, v);
            e["ctx"] = json!({ "max_length": max });
            errors.push(e);
            None
        }
        Some(v) => {
            let msg = "Input should be a valid string";
            errors.push(field_error("string_type", json!(["body", name]), msg, v));
            None
        }
    }
}

/// An optional list of strings with at least one entry; `None` when absent or null.
pub(crate) fn string_list(
    body: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<Value>,
) -> Option<Vec<String>> {
    let loc = json!(["body", name]);
    match body.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) if ids.is_empty() => {
            let msg = "List should have at least 1 item after validation, not 0";
            let mut e = field_error("too_short", loc, msg, &json!([]));
            e["ctx"] = json!({ "field_type": "List", "min_length": 1, "actual_length": 0 });
            errors.push(e);
            None
        }
        Some(Value::Array(ids)) => {
            let mut out = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                match id {
                    Value::String(s) => out.push(s.clone()),
                    other => errors.push(field_error(
                        "string_type",
                        json!(["body", name, i]),
                        "Input should be a valid string",
                        other,
                    )),
                }
            }
            Some(out)
        }
        Some(other) => {
            errors.push(field_error(
                "list_type",
                loc,
                "Input should be a valid list",
                other,
            ));
            None
        }
    }
}

/// The 422 of the body errors collected, if any.
pub(crate) fn body_errors(errors: Vec<Value>) -> Result<(), Box<Response>> {
    if errors.is_empty() {
        return Ok(());
    }
    let body = json!({ "detail": errors });
    Err(Box::new(
        (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response(),
    ))
}
