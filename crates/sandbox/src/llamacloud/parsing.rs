//! The legacy parse-job routes a completed batch item's `job_id` leads to (`providers.md` §2.4,
//! llama-cloud-py v0.9.0 `api.md`): `GET /api/v1/parsing/job/{job_id}` (the parse job's status,
//! which the SDK's `parsing.get_job` reads before it asks for a result) and
//! `GET /api/v1/parsing/job/{job_id}/result/{json,markdown,text}` (the streamed bodies of
//! [`super::body`]).
//!
//! Both follow the item's parse job in the world: pending until it is done, then its result, its
//! error, or its cancellation; past retention the job and its results are gone alike (404).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::super::fastapi::detail;
use super::Shared;
use super::St;
use super::body::Format;
use super::routes::PARSE_ERROR;
use super::world::{Item, ItemStatus};

fn expired(sh: &Shared, it: &Item, now: i64) -> bool {
    now > it.done_us.saturating_add(sh.retention_us)
}

/// `{id, status: PENDING|SUCCESS|ERROR|CANCELLED, error_code, error_message}`.
pub(crate) async fn parse_job(State(sh): State<St>, Path(parse_id): Path<String>) -> Response {
    let world = sh.world();
    let Some((_, it)) = world.parse_job(&parse_id) else {
        return detail(StatusCode::NOT_FOUND, "Job not found");
    };
    let now = sh.clock.now_us();
    let (status, error) = match it.status(now) {
        ItemStatus::Completed if expired(&sh, it, now) => {
            return detail(StatusCode::NOT_FOUND, "Job not found or expired");
        }
        ItemStatus::Completed => ("SUCCESS", None),
        ItemStatus::Failed => ("ERROR", Some(PARSE_ERROR)),
        ItemStatus::Cancelled => ("CANCELLED", None),
        // Skipped items have no parse job, so only pending and processing are left.
        _ => ("PENDING", None),
    };
    axum::Json(json!({
        "id": parse_id,
        "status": status,
        "error_code": error.map(|e| e.0),
        "error_message": error.map(|e| e.1),
    }))
    .into_response()
}

pub(crate) async fn parse_result(
    State(sh): State<St>,
    Path((parse_id, format)): Path<(String, String)>,
) -> Response {
    let format = match format.as_str() {
        "json" => Format::Json,
        "markdown" => Format::Markdown,
        "text" => Format::Text,
        _ => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    let world = sh.world();
    let Some((job, it)) = world.parse_job(&parse_id) else {
        return detail(StatusCode::NOT_FOUND, "Job not found");
    };
    let now = sh.clock.now_us();
    match it.status(now) {
        ItemStatus::Completed => {}
        ItemStatus::Failed => {
            return detail(StatusCode::BAD_REQUEST, "Job failed, no result available");
        }
        ItemStatus::Cancelled => {
            return detail(
                StatusCode::BAD_REQUEST,
                "Job cancelled, no result available",
            );
        }
        _ => return detail(StatusCode::BAD_REQUEST, "Job not completed yet"),
    }
    if expired(&sh, it, now) {
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
