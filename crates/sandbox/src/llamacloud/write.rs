//! The two writing routes of LlamaCloud batch processing (`providers.md` §2.2):
//! `POST /api/v1/beta/batch-processing` creates a parse job over a directory or explicit
//! `item_ids` (exactly one of them, FastAPI 422 otherwise; no idempotency header, as the SDK
//! sends none), and `POST …/{job_id}/cancel` stops a job, its unfinished items ending
//! `cancelled`. A job's `webhook_configurations` are handed to [`super::webhooks`].
//!
//! Where the docs are silent the sandbox chooses: a directory holds the files of the latest job
//! that ran over it (unknown directory: 404); `item_ids` may name any file; only parse jobs are
//! run (another `parameters.type` is a 422); cancelling a cancelled job answers the same again,
//! cancelling a finished one is a 400 (not a 409, which the SDK would retry).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::super::fastapi::{
    body_errors, body_object, detail, field_error, opt_string, string_list,
};
use super::super::seeded::SplitMix;
use super::St;
use super::routes::batch_job;
use super::world::{Item, ItemStatus, Job, World, uuid_like};
use super::{ItemSpec, Outcome};

/// Simulated delay from creation until the first item runs, and each item's run time.
const START_US: i64 = 300_000;
const RUN_US: i64 = 1_200_000;
/// Items start one after another, this far apart (simulated).
const STAGGER_US: i64 = 100_000;
/// Size of the JSON result of an item of a created job.
const RESULT_BYTES: usize = 4000;

/// What a create request asks for.
enum Source {
    Directory(String),
    Items(Vec<String>),
}

fn parse_create(raw: &[u8]) -> Result<Source, Box<Response>> {
    let body = body_object(raw)?;
    let mut errors = Vec::new();
    check_job_config(&body, &mut errors);
    let directory = opt_string(&body, "directory_id", usize::MAX, &mut errors);
    let items = string_list(&body, "item_ids", &mut errors);
    for name in ["page_size", "continue_as_new_threshold"] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_i64() || v.is_u64() => {}
            Some(v) => errors.push(field_error(
                "int_type",
                json!(["body", name]),
                "Input should be a valid integer",
                v,
            )),
        }
    }
    let source = match (directory, items) {
        (Some(d), None) => Some(Source::Directory(d)),
        (None, Some(ids)) => Some(Source::Items(ids)),
        _ => None,
    };
    if source.is_none() && errors.is_empty() {
        let msg = "Value error, exactly one of directory_id or item_ids must be given";
        let mut e = field_error("value_error", json!(["body"]), msg, &Value::Object(body));
        e["ctx"] = json!({ "error": "exactly one of directory_id or item_ids must be given" });
        errors.push(e);
    }
    body_errors(errors)?;
    source.ok_or_else(|| Box::new(detail(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request")))
}

/// `job_config` is required and must be a parse job configuration.
fn check_job_config(body: &Map<String, Value>, errors: &mut Vec<Value>) {
    let loc = json!(["body", "job_config"]);
    let config = match body.get("job_config") {
        None => {
            let whole = Value::Object(body.clone());
            return errors.push(field_error("missing", loc, "Field required", &whole));
        }
        Some(Value::Object(config)) => config,
        Some(other) => {
            let msg = "Input should be a valid dictionary or object to extract fields from";
            return errors.push(field_error("model_attributes_type", loc, msg, other));
        }
    };
    let kind = config.get("parameters").and_then(|p| p.get("type"));
    if let Some(kind) = kind.filter(|k| k.as_str() != Some("parse")) {
        let msg = "Value error, the sandbox runs parse jobs only";
        let loc = json!(["body", "job_config", "parameters", "type"]);
        errors.push(field_error("value_error", loc, msg, kind));
    }
}

/// `POST /api/v1/beta/batch-processing`.
pub(crate) async fn create_job(State(sh): State<St>, raw: Bytes) -> Response {
    let source = match parse_create(&raw) {
        Ok(source) => source,
        Err(resp) => return *resp,
    };
    let mut world = sh.world_mut();
    let (directory_id, files) = match source {
        Source::Directory(id) => match world.directory(&id) {
            Some(files) => (Some(id), files),
            None => return detail(StatusCode::NOT_FOUND, "Directory not found"),
        },
        Source::Items(ids) => {
            let mut files: Vec<(String, String)> = Vec::with_capacity(ids.len());
            for id in ids {
                if !files.iter().any(|(f, _)| *f == id) {
                    let name = world.item_name(&id).unwrap_or(&id).to_owned();
                    files.push((id, name));
                }
            }
            (None, files)
        }
    };
    let now = sh.clock.now_us();
    let mut rng = SplitMix::new(rand::random());
    let id = fresh(&world, || format!("bjb-{:020x}", rng.next_u64()));
    let start_us = sh.clock.at_us(0.0);
    let items = files
        .into_iter()
        .enumerate()
        .map(|(i, (item_id, name))| {
            let running = now + START_US + STAGGER_US * i as i64;
            let done = running + RUN_US;
            let spec = ItemSpec {
                id: item_id,
                name,
                parse_job_id: fresh(&world, || uuid_like(&mut rng)),
                finishes_at: (done - start_us) as f64 / 1e6,
                outcome: Outcome::Completed,
                result_bytes: RESULT_BYTES,
            };
            Item::new(spec, running, done)
        })
        .collect();
    world.insert(Job {
        id: id.clone(),
        created_us: now,
        directory_id,
        cancelled_us: None,
        items,
    });
    sh.lock().stats.jobs_created += 1;
    super::webhooks::register(&sh, &id, &raw);
    match world.job(&id) {
        Some(job) => axum::Json(batch_job(&sh, job, now)).into_response(),
        None => detail(StatusCode::INTERNAL_SERVER_ERROR, "Job not stored"),
    }
}

/// An id `make` draws that nothing in the world has yet.
fn fresh(world: &World, mut make: impl FnMut() -> String) -> String {
    loop {
        let id = make();
        if !world.knows(&id) {
            return id;
        }
    }
}

/// `POST /api/v1/beta/batch-processing/{job_id}/cancel` with an optional `{reason}`.
pub(crate) async fn cancel_job(
    State(sh): State<St>,
    Path(job_id): Path<String>,
    raw: Bytes,
) -> Response {
    if !raw.iter().all(u8::is_ascii_whitespace) {
        let body = match body_object(&raw) {
            Ok(body) => body,
            Err(resp) => return *resp,
        };
        let mut errors = Vec::new();
        opt_string(&body, "reason", usize::MAX, &mut errors);
        if let Err(resp) = body_errors(errors) {
            return *resp;
        }
    }
    let now = sh.clock.now_us();
    let mut world = sh.world_mut();
    let Some(job) = world.job_mut(&job_id) else {
        return detail(StatusCode::NOT_FOUND, "Batch job not found");
    };
    if job.cancelled_us.is_none() {
        let open = |it: &Item| !it.status(now).is_terminal();
        if !job.items.iter().any(open) {
            let all_failed = !job.items.is_empty()
                && job
                    .items
                    .iter()
                    .all(|it| it.status(now) == ItemStatus::Failed);
            let status = if all_failed { "failed" } else { "completed" };
            let msg = format!("Cannot cancel a batch job in status {status}");
            return detail(StatusCode::BAD_REQUEST, &msg);
        }
        for it in job.items.iter_mut().filter(|it| open(it)) {
            it.cancelled_us = Some(now);
        }
        job.cancelled_us = Some(now);
    }
    let processed = job
        .items
        .iter()
        .filter(|it| it.status(now).is_terminal() && it.status(now) != ItemStatus::Cancelled)
        .count();
    axum::Json(json!({
        "job_id": job.id,
        "message": "Batch job cancelled",
        "processed_items": processed,
        "status": "cancelled",
    }))
    .into_response()
}
