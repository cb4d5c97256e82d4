//! Query parameters and offset pages of the LlamaCloud sandbox (`providers.md` §2.3): `offset`
//! and `limit` with FastAPI's bounds and 422s, enum filters, and `{items, total_size}` pages.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::fastapi::{int_param, validation_error};

pub(crate) type Query = std::collections::HashMap<String, String>;

/// `{items, total_size, next_page_token?}`; the token is the next offset, as a string.
pub(crate) fn page_response(
    all: Vec<Value>,
    offset: usize,
    limit: usize,
    with_token: bool,
) -> Response {
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
pub(crate) fn paging(q: &Query) -> Result<(usize, usize), Response> {
    let offset = int_param(q, "offset", 0, 0, i64::MAX).map_err(validation_error)?;
    let limit = int_param(q, "limit", 100, 1, 1000).map_err(validation_error)?;
    Ok((offset, limit))
}

#[allow(clippy::result_large_err)]
pub(crate) fn enum_param<'q>(
    q: &'q Query,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'q str>, Response> {
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
