//! `POST /v1/batches` (`providers.md` §1.2, §1.6): a batch of uploaded files, with the optional
//! `Idempotency-Key` (the same key within 24 h returns the same batch), the documented 404/409
//! bodies, a 402 once the quota set by `Sandbox::set_quota` is used up, and FastAPI 422s.
//!
//! The new batch joins [`super::world::World`] like a spec batch: one item per file, `pending`,
//! then `running`, then `succeeded` a second or two (simulated) later, with an inline result
//! made from the uploaded bytes by [`super::uploads::result_body`].
//!
//! `POST /v1/batches/{batch_id}/cancel` (§1.2, E6) stops any batch, created or from the spec.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Shared;
use super::routes::batch_resource;
use super::uploads::result_body;
use super::world::{Batch, Item};
use crate::fastapi::{body_errors, body_object, detail, field_error, opt_string, string_list};

type St = Arc<Shared>;

/// An `Idempotency-Key` is honoured for 24 h [D E1 old copy].
const IDEMPOTENCY_US: i64 = 24 * 3600 * 1_000_000;
/// Simulated delay from creation until the first item runs, and each item's run time.
const START_US: i64 = 300_000;
const RUN_US: i64 = 1_200_000;
/// Items start one after another, this far apart (simulated).
const STAGGER_US: i64 = 100_000;

struct Request {
    file_ids: Vec<String>,
    engine: Option<String>,
    options: Map<String, Value>,
    metadata: Option<Value>,
}

fn parse(raw: &[u8]) -> Result<Request, Box<Response>> {
    let body = body_object(raw)?;
    let mut errors = Vec::new();
    let file_ids = string_list(&body, "file_ids", &mut errors);
    // Required, so unlike an optional list neither absent nor null will do.
    let loc = json!(["body", "file_ids"]);
    match body.get("file_ids") {
        None => errors.push(field_error(
            "missing",
            loc,
            "Field required",
            &Value::Object(body.clone()),
        )),
        Some(Value::Null) => errors.push(field_error(
            "list_type",
            loc,
            "Input should be a valid list",
            &Value::Null,
        )),
        Some(_) => {}
    }
    let engine = opt_string(&body, "engine", usize::MAX, &mut errors);
    let mut object = |name: &str| match body.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(other) => {
            errors.push(field_error(
                "dict_type",
                json!(["body", name]),
                "Input should be a valid dictionary",
                other,
            ));
            None
        }
    };
    let options = object("options").unwrap_or_default();
    let metadata = object("metadata").map(Value::Object);
    body_errors(errors)?;
    Ok(Request {
        file_ids: file_ids.unwrap_or_default(),
        engine,
        options,
        metadata,
    })
}

/// The distinct ids among `ids` that `bad` picks, in request order.
fn offending(ids: &[String], bad: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if bad(id) && !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// `POST /v1/batches`.
pub(crate) async fn create_batch(State(sh): State<St>, headers: HeaderMap, raw: Bytes) -> Response {
    let (response, delay) = create_now(&sh, &headers, &raw);
    // The batch exists from here on, whatever becomes of the client waiting for this answer.
    tokio::time::sleep(delay).await;
    response
}

/// Creates the batch (or answers the replay or the refusal), and says how long to hold the answer.
fn create_now(sh: &St, headers: &HeaderMap, raw: &Bytes) -> (Response, std::time::Duration) {
    let no_delay = std::time::Duration::ZERO;
    let req = match parse(raw) {
        Ok(req) => req,
        Err(resp) => return (*resp, no_delay),
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    // Lock order: the world, then the counters (as every reader does).
    let mut world = sh.world_mut();
    let mut guard = sh.lock();
    let m = &mut *guard;
    let now = sh.clock.now_us();
    if let Some(key) = &key {
        let earlier = m
            .uploads
            .idempotency
            .get(key)
            .filter(|(_, at)| now < at.saturating_add(IDEMPOTENCY_US))
            .map(|(id, _)| id.clone());
        if let Some(b) = earlier.as_deref().and_then(|id| world.batch(id)) {
            m.stats.idempotent_replays += 1;
            return (
                axum::Json(batch_resource(sh, b, now)).into_response(),
                no_delay,
            );
        }
    }
    let files = &m.uploads.files;
    let missing = offending(&req.file_ids, |id| {
        files.get(id).is_none_or(|f| now >= f.expires_us)
    });
    if !missing.is_empty() {
        let body = json!({ "error": "file_not_found", "file_ids": missing });
        return (
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response(),
            no_delay,
        );
    }
    let not_uploaded = offending(&req.file_ids, |id| {
        files.get(id).is_some_and(|f| f.stored.is_none())
    });
    if !not_uploaded.is_empty() {
        let body = json!({ "error": "file_not_uploaded", "file_ids": not_uploaded });
        return (
            (StatusCode::CONFLICT, axum::Json(body)).into_response(),
            no_delay,
        );
    }
    match &mut m.uploads.quota {
        Some(0) => {
            return (
                detail(StatusCode::PAYMENT_REQUIRED, "Quota exceeded"),
                no_delay,
            );
        }
        Some(left) => *left -= 1,
        None => {}
    }
    let id = loop {
        let id = format!("batch_{:016x}", rand::random::<u64>());
        if world.batch(&id).is_none() {
            break id;
        }
    };
    let items = req
        .file_ids
        .iter()
        .enumerate()
        .map(|(position, file_id)| {
            let input = files[file_id].stored.as_ref().map(|(b, _)| b.clone());
            let running = now + START_US + STAGGER_US * position as i64;
            Item::uploaded(
                format!("item_{:016x}", rand::random::<u64>()),
                position,
                file_id.clone(),
                running,
                running + RUN_US,
                result_body(&input.unwrap_or_default()),
            )
        })
        .collect();
    let engine = req.engine.unwrap_or_else(|| "standard".to_owned());
    let batch = Batch::created(id.clone(), now, items, engine, req.options, req.metadata);
    world.insert(batch);
    if let Some(key) = key {
        m.uploads.idempotency.insert(key, (id.clone(), now));
    }
    m.stats.batches_created += 1;
    let delay = m.uploads.answer_delay;
    drop(guard);
    match world.batch(&id) {
        Some(b) => (
            axum::Json(batch_resource(sh, b, now)).into_response(),
            delay,
        ),
        None => (
            detail(StatusCode::INTERNAL_SERVER_ERROR, "Batch not stored"),
            no_delay,
        ),
    }
}

/// `POST /v1/batches/{batch_id}/cancel` [D E6]: 200 `BatchResource` (no `items`). Which states
/// can be cancelled is NF: a pending or running batch is cancelled (its unfinished items end
/// `cancelled`), a cancelled one is answered again unchanged, and a finished one is refused with
/// 409 in the service's own `{"error", "status"}` form (as `result_not_ready` is).
pub(crate) async fn cancel_batch(State(sh): State<St>, Path(batch_id): Path<String>) -> Response {
    let now = sh.clock.now_us();
    let mut world = sh.world_mut();
    let Some(b) = world.batch_mut(&batch_id) else {
        return detail(StatusCode::NOT_FOUND, "Batch not found");
    };
    if b.cancelled_us.is_none() {
        let open = |it: &Item| !it.status(now).is_terminal();
        if !b.items.iter().any(open) {
            let status = batch_resource(&sh, b, now).status();
            let body = json!({ "error": "batch_not_cancellable", "status": status });
            return (StatusCode::CONFLICT, axum::Json(body)).into_response();
        }
        for it in b.items.iter_mut().filter(|it| open(it)) {
            it.cancelled_us = Some(now);
        }
        b.cancelled_us = Some(now);
    }
    axum::Json(batch_resource(&sh, b, now)).into_response()
}
