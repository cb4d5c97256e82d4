//! Uploads, the first half of the documented submit flow (`providers.md` §1.1, §1.2):
//! `POST /v1/files` registers a file and hands out a presigned `PUT` URL on the object store,
//! the `PUT` stores the bytes (its length must match the declared `size_bytes`), and
//! `GET /v1/files/{file_id}` shows `status:"uploaded"` and the `sha256` afterwards.
//!
//! It owns the file records, the upload knobs (size cap, batch quota), the idempotency keys of
//! [`super::batches`], and the result body an uploaded file turns into.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Shared;
use super::object_store::{presign_url, s3_error, upload_path, verify};
use super::routes::ts;
use crate::fastapi::{body_object, detail, field_error, opt_string};

type St = Arc<Shared>;

/// Documented default of the upload cap (the real one is NF); see `Sandbox::set_max_upload_bytes`.
const DEFAULT_MAX_UPLOAD: u64 = 100 * 1024 * 1024;
/// Inputs expire 3 days after creation [D E1 current].
const FILE_TTL_US: i64 = 3 * 24 * 3600 * 1_000_000;
/// Bytes of `page_content` per chunk of a result made from an upload.
const CONTENT_PER_CHUNK: usize = 1900;
const CHUNKS_PER_PAGE: usize = 3;

/// The upload state, kept in [`super::Mutable`].
pub(crate) struct Uploads {
    pub(crate) files: HashMap<String, FileRecord>,
    /// `Idempotency-Key` → (batch id, simulated time of the first create).
    pub(crate) idempotency: HashMap<String, (String, i64)>,
    /// Batches `POST /v1/batches` may still create; None = unlimited.
    pub(crate) quota: Option<u64>,
    pub(crate) max_upload_bytes: u64,
    /// How long `POST /v1/batches` holds its answer after creating the batch.
    pub(crate) answer_delay: std::time::Duration,
}

impl Default for Uploads {
    fn default() -> Self {
        Uploads {
            files: HashMap::new(),
            idempotency: HashMap::new(),
            quota: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD,
            answer_delay: std::time::Duration::ZERO,
        }
    }
}

/// One file of `POST /v1/files`.
pub(crate) struct FileRecord {
    pub(crate) id: String,
    pub(crate) size_bytes: u64,
    pub(crate) filename: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) created_us: i64,
    /// Simulated; past it the file is gone (404 on submit).
    pub(crate) expires_us: i64,
    /// The stored bytes and their sha256, once a PUT succeeded.
    pub(crate) stored: Option<(Bytes, String)>,
}

impl FileRecord {
    fn resource(&self, upload: Option<(String, String)>) -> Value {
        let mut v = json!({
            "object": "file",
            "id": self.id,
            "customer_id": "cus_sandbox",
            "status": if self.stored.is_some() { "uploaded" } else { "pending_upload" },
            "size_bytes": self.size_bytes,
            "created_at": ts(self.created_us),
            "expires_at": ts(self.expires_us),
        });
        let map = v.as_object_mut().expect("an object");
        if let Some((url, expires_at)) = upload {
            map.insert(
                "upload".into(),
                json!({ "method": "PUT", "url": url, "expires_at": expires_at }),
            );
        }
        if let Some(name) = &self.filename {
            map.insert("filename".into(), json!(name));
        }
        if let Some(ct) = &self.content_type {
            map.insert("content_type".into(), json!(ct));
        }
        if let Some((_, sha)) = &self.stored {
            map.insert("sha256".into(), json!(sha));
        }
        v
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The result an uploaded file turns into, and its page count: the documented schema, with each
/// chunk's `page_content` a slice of the input (read as UTF-8, lossily) and `input_sha256`.
pub(crate) fn result_body(input: &[u8]) -> (Bytes, u64) {
    let text = String::from_utf8_lossy(input);
    let mut pieces = Vec::new();
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(CONTENT_PER_CHUNK);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    if pieces.is_empty() {
        pieces.push("");
    }
    let chunks: Vec<Value> = pieces
        .iter()
        .enumerate()
        .map(|(i, content)| {
            let top = 72.0 + 220.0 * (i % CHUNKS_PER_PAGE) as f64;
            json!({
                "page_content": content,
                "page_no": i / CHUNKS_PER_PAGE + 1,
                "bbox": [72.0, top, 540.0, top + 200.0],
                "chunk_type": "text",
            })
        })
        .collect();
    let pages = pieces.len().div_ceil(CHUNKS_PER_PAGE) as u64;
    let body = json!({ "chunks": chunks, "input_sha256": sha256_hex(input) });
    (Bytes::from(body.to_string()), pages)
}

fn size_field(body: &Map<String, Value>, errors: &mut Vec<Value>) -> Option<u64> {
    let loc = json!(["body", "size_bytes"]);
    let Some(v) = body.get("size_bytes") else {
        errors.push(field_error(
            "missing",
            loc,
            "Field required",
            &Value::Object(body.clone()),
        ));
        return None;
    };
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let Some(n) = n else {
        let msg = "Input should be a valid integer";
        errors.push(field_error("int_type", loc, msg, v));
        return None;
    };
    if n <= 0 {
        let mut e = field_error("greater_than", loc, "Input should be greater than 0", v);
        e["ctx"] = json!({ "gt": 0 });
        errors.push(e);
        return None;
    }
    Some(n as u64)
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// `POST /v1/files`.
pub(crate) async fn create_file(State(sh): State<St>, raw: Bytes) -> Response {
    let body = match body_object(&raw) {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    let mut errors = Vec::new();
    let size = size_field(&body, &mut errors);
    let filename = opt_string(&body, "filename", 512, &mut errors);
    let content_type = opt_string(&body, "content_type", 128, &mut errors);
    let Some(size_bytes) = size.filter(|_| errors.is_empty()) else {
        let body = json!({ "detail": errors });
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    };
    let max = sh.lock().uploads.max_upload_bytes;
    if size_bytes > max {
        let message = format!("size_bytes exceeds the upload limit of {max} bytes");
        return detail(StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    let now = sh.clock.now_us();
    let id = format!("file_{:016x}", rand::random::<u64>());
    let record = FileRecord {
        id: id.clone(),
        size_bytes,
        filename,
        content_type,
        created_us: now,
        expires_us: now.saturating_add(FILE_TTL_US),
        stored: None,
    };
    let url = presign_url(&sh, "PUT", &upload_path(&id));
    let ttl_us = i64::try_from(sh.presign_ttl.as_micros()).unwrap_or(i64::MAX / 4);
    let upload_expires = ts(chrono::Utc::now().timestamp_micros().saturating_add(ttl_us));
    let resource = record.resource(Some((url, upload_expires)));
    let mut m = sh.lock();
    m.uploads.files.insert(id, record);
    m.stats.files_created += 1;
    axum::Json(resource).into_response()
}

/// `GET /v1/files/{file_id}`.
pub(crate) async fn get_file(State(sh): State<St>, Path(file_id): Path<String>) -> Response {
    let now = sh.clock.now_us();
    let m = sh.lock();
    match m.uploads.files.get(&file_id).filter(|f| now < f.expires_us) {
        Some(f) => axum::Json(f.resource(None)).into_response(),
        None => detail(StatusCode::NOT_FOUND, "File not found"),
    }
}

/// `PUT /uploads/{file_id}` on the object store, presigned by `POST /v1/files`.
pub(crate) async fn put_object(
    State(sh): State<St>,
    Path(file_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(denied) = verify(&sh, "PUT", &upload_path(&file_id), query.as_deref()) {
        return denied;
    }
    let declared = sh.lock().uploads.files.get(&file_id).map(|f| f.size_bytes);
    let Some(size) = declared else {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist.",
        );
    };
    let too_large = || {
        s3_error(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            "Your proposed upload exceeds the declared size_bytes.",
        )
    };
    let incomplete = || {
        s3_error(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            "You did not provide the number of bytes declared in size_bytes.",
        )
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match content_length {
        Some(n) if n > size => return too_large(),
        Some(n) if n < size => return incomplete(),
        _ => {}
    }
    let limit = usize::try_from(size.saturating_add(1)).unwrap_or(usize::MAX);
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return too_large();
    };
    if (bytes.len() as u64) != size {
        return if (bytes.len() as u64) > size {
            too_large()
        } else {
            incomplete()
        };
    }
    let sha = sha256_hex(&bytes);
    let mut m = sh.lock();
    let Some(file) = m.uploads.files.get_mut(&file_id) else {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist.",
        );
    };
    file.stored = Some((bytes, sha.clone()));
    m.stats.uploads += 1;
    (
        StatusCode::OK,
        [(header::ETAG, format!("\"{}\"", &sha[..32]))],
    )
        .into_response()
}
