//! `POST /v1/extractions` (`providers.md` §4.2, seed 004): a multipart `parser_id` and 1–50
//! `files`, validated (parser, count, type, pages), charged at submit (1 page = 1 credit, 402
//! when the balance is short, nothing created), and added to the world as a new extraction whose
//! documents complete over a few simulated seconds. An `Idempotency-Key` seen in the last 24 h
//! answers the original job with `Idempotent-Replayed: true` and no second charge.
//!
//! The submit window (20 a minute) is checked by the gate in [`super::routes`], before this runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::routes::error;
use super::world::{Document, Extraction, Upload};
use super::{DocOutcome, Shared};

/// Files per submission (documented: 1–50).
const MAX_FILES: usize = 50;
/// How long an `Idempotency-Key` is remembered (documented: 24 h).
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bytes per page of the deterministic page count.
const BYTES_PER_PAGE: usize = 50_000;
/// Simulated microseconds a submitted document stays `queued`.
const QUEUED_US: i64 = 300_000;

/// Accepted extensions and the MIME type served as the document's `file_type`.
const TYPES: [(&str, &str); 7] = [
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("webp", "image/webp"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
];

/// Credits and idempotency keys; locked before the world (see [`Shared`]).
pub(crate) struct Ledger {
    pub(crate) balance: u64,
    pub(crate) charged: u64,
    /// Numbers the next submitted extraction.
    next: u64,
    /// Idempotency key → (first seen, the 202 body answered then).
    keys: HashMap<String, (Instant, Value)>,
}

impl Ledger {
    pub(crate) fn new(balance: u64) -> Ledger {
        Ledger {
            balance,
            charged: 0,
            next: 1,
            keys: HashMap::new(),
        }
    }
}

/// One `files` part.
struct File {
    filename: String,
    bytes: Bytes,
}

/// The form, or the 400 its reading deserves (answered only if the key is not a replay).
type Form = Result<(Option<String>, Vec<File>), Refusal>;

/// An error answer, kept small until it is sent.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: String) -> Refusal {
        Refusal {
            status,
            code,
            message,
        }
    }

    fn invalid(message: String) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

pub(crate) async fn submit(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let form = match multipart {
        Ok(mp) => read_form(mp).await,
        Err(e) => Err(Refusal::invalid(format!(
            "expected a multipart/form-data body: {e}"
        ))),
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let mut ledger = sh.submit.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = &key
        && let Some((at, body)) = ledger.keys.get(k)
        && at.elapsed() < IDEMPOTENCY_TTL
    {
        let body = body.clone();
        drop(ledger);
        sh.lock().stats.replays += 1;
        let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return resp;
    }
    let (parser, files) = match form {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let files = match validate(&sh, parser.as_deref(), files) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let parser = parser.unwrap_or_default();
    let pages: u64 = files.iter().map(|(_, p, _)| u64::from(*p)).sum();
    if pages > ledger.balance {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "INSUFFICIENT_CREDITS",
            &format!(
                "{pages} pages need {pages} credits; {} available",
                ledger.balance
            ),
        );
    }
    ledger.balance -= pages;
    ledger.charged += pages;
    let (id, number) = loop {
        let n = ledger.next;
        ledger.next += 1;
        let id = format!("ext_sub{n:06}");
        if sh.world().extraction(&id).is_none() {
            break (id, n);
        }
    };
    let created_us = sh.clock.now_us();
    let documents: Vec<Document> = files
        .into_iter()
        .enumerate()
        .map(|(j, (f, pages, file_type))| {
            let sha = Sha256::digest(&f.bytes);
            let spread = u64::from_be_bytes(sha[..8].try_into().unwrap_or_default()) % 2001;
            let done_us = created_us + 1_000_000 + 1_000 * spread as i64;
            Document {
                id: format!("doc_sub{number:06}_{j:04}"),
                filename: f.filename,
                running_us: created_us + QUEUED_US,
                done_us,
                outcome: DocOutcome::Completed,
                result_bytes: 0,
                page_count: pages,
                upload: Some(Upload {
                    sha256: hex::encode(sha),
                    size: f.bytes.len() as u64,
                    file_type,
                }),
            }
        })
        .collect();
    let extraction = Extraction::new(&id, &parser, created_us, documents);
    let body = accepted(&extraction, ledger.balance);
    sh.insert(extraction);
    if let Some(k) = key {
        ledger.keys.insert(k, (Instant::now(), body.clone()));
    }
    drop(ledger);
    {
        let mut m = sh.lock();
        m.stats.submissions += 1;
        m.stats.credits_charged += pages;
    }
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// Reads `parser_id` and the `files` parts (others are ignored).
async fn read_form(mut mp: Multipart) -> Form {
    let bad = |e: axum::extract::multipart::MultipartError| {
        Refusal::invalid(format!("malformed multipart body: {e}"))
    };
    let (mut parser, mut files) = (None, Vec::new());
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        match field.name() {
            Some("parser_id") => parser = Some(field.text().await.map_err(bad)?.trim().to_owned()),
            Some("files" | "files[]") => {
                let filename = field.file_name().unwrap_or("").to_owned();
                let bytes = field.bytes().await.map_err(bad)?;
                files.push(File { filename, bytes });
            }
            _ => {}
        }
    }
    Ok((parser, files))
}

/// Checks the parser, the count and each file: (file, pages, MIME type) per file.
fn validate(
    sh: &Shared,
    parser: Option<&str>,
    files: Vec<File>,
) -> Result<Vec<(File, u32, &'static str)>, Refusal> {
    let parser = parser.filter(|p| !p.is_empty());
    let Some(parser) = parser else {
        return Err(Refusal::invalid("parser_id is required".into()));
    };
    if sh.parser_name(parser).is_none() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "PARSER_NOT_FOUND",
            format!("Parser {parser:?} not found"),
        ));
    }
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(Refusal::invalid(format!(
            "files: between 1 and {MAX_FILES} files required, got {}",
            files.len()
        )));
    }
    files
        .into_iter()
        .map(|f| {
            if f.filename.is_empty() {
                return Err(Refusal::invalid("every file needs a filename".into()));
            }
            let ext = f
                .filename
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            let Some((_, mime)) = TYPES.iter().find(|(e, _)| *e == ext) else {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED_FILE_TYPE",
                    format!(
                        "{:?}: supported types are PDF, PNG, JPG, JPEG, WebP and TIFF",
                        f.filename
                    ),
                ));
            };
            if f.bytes.is_empty() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "PAGE_COUNT_FAILED",
                    format!(
                        "{:?}: could not count the pages of an empty file",
                        f.filename
                    ),
                ));
            }
            let pages = u32::try_from(1 + f.bytes.len() / BYTES_PER_PAGE).unwrap_or(u32::MAX);
            Ok((f, pages, *mime))
        })
        .collect()
}

/// The documented 202 body of a new extraction.
fn accepted(e: &Extraction, credits_remaining: u64) -> Value {
    let documents: Vec<Value> = e
        .documents
        .iter()
        .map(|d| {
            json!({
                "document_id": d.id, "filename": d.filename, "page_count": d.page_count,
                "credits_used": d.page_count, "status": "queued",
            })
        })
        .collect();
    json!({
        "extraction": {
            "extraction_id": e.id, "parser_id": e.parser_id, "status": "queued",
            "file_count": e.documents.len(), "page_count": e.page_count(),
            "credits_used": e.page_count(), "credits_remaining": credits_remaining,
            "documents": documents,
        }
    })
}
