//! The Talonic batch actions (`providers.md` §3.2, from the secondary summary):
//! `POST /v1/batches/:id/sync` forces the provider check that otherwise runs hourly; the
//! sandbox's timeline is continuous, so there is nothing to catch up and it answers the batch as
//! it is. `POST /v1/batches/:id/cancel` works only from `accumulating` or `submitted` (else 400
//! `VALIDATION_ERROR`); the unprocessed items then end `failed`, as items have no cancelled
//! status. Both answer the batch detail (the shape is NF) and honour `Idempotency-Key` for 24 h
//! (§3.3): a key seen on the same route answers what it answered then.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::errors::{enc, not_found, validation};
use super::routes::batch_detail;
use super::world::ItemStatus;
use super::{Shared, St};

/// How long an `Idempotency-Key` is remembered (2nd: 24 h).
const IDEMPOTENCY_US: i64 = 24 * 3600 * 1_000_000;

/// What a request with an `Idempotency-Key` was answered.
pub(crate) struct Answered {
    at_us: i64,
    route: String,
    status: StatusCode,
    body: Bytes,
}

/// `run`'s answer, or the one given earlier to the same key on the same route.
async fn idempotent(
    sh: &Shared,
    headers: &HeaderMap,
    route: String,
    run: impl FnOnce() -> Response,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let now = sh.clock.now_us();
    let Some(key) = key else {
        return run();
    };
    {
        let mut m = sh.lock();
        let earlier = m
            .idempotency
            .get(&key)
            .filter(|a| a.route == route && now < a.at_us.saturating_add(IDEMPOTENCY_US));
        if let Some(a) = earlier {
            let replay = (
                a.status,
                [(header::CONTENT_TYPE, "application/json")],
                a.body.clone(),
            );
            m.stats.idempotent_replays += 1;
            return replay.into_response();
        }
    }
    let (parts, body) = run().into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    // A server error is no answer worth repeating: the retry runs again.
    if !parts.status.is_server_error() {
        let answered = Answered {
            at_us: now,
            route,
            status: parts.status,
            body: body.clone(),
        };
        sh.lock().idempotency.insert(key, answered);
    }
    Response::from_parts(parts, Body::from(body))
}

/// `POST /v1/batches/:id/sync`.
pub(crate) async fn sync_batch(
    State(sh): State<St>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/batches/{}/sync", enc(&id));
    idempotent(&sh, &headers, path.clone(), || {
        let world = sh.world();
        match world.batch(&id) {
            Some(b) => batch_detail(b, sh.clock.now_us()),
            None => not_found(&sh, "batch", &path),
        }
    })
    .await
}

/// `POST /v1/batches/:id/cancel`.
pub(crate) async fn cancel_batch(
    State(sh): State<St>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/batches/{}/cancel", enc(&id));
    idempotent(&sh, &headers, path.clone(), || {
        let now = sh.clock.now_us();
        let mut world = sh.world_mut();
        let Some(b) = world.batch_mut(&id) else {
            return not_found(&sh, "batch", &path);
        };
        let (status, _) = b.status(now);
        if !matches!(status.as_str(), "accumulating" | "submitted") {
            let msg = format!(
                "Only accumulating or submitted batches can be cancelled; this batch is {status}."
            );
            return validation(&sh, &msg, &path);
        }
        let open = |s: ItemStatus| matches!(s, ItemStatus::Pending | ItemStatus::Processing);
        for it in b.items.iter_mut().filter(|it| open(it.status(now))) {
            it.cancelled_us = Some(now);
        }
        b.cancelled_us = Some(now);
        batch_detail(b, now)
    })
    .await
}
