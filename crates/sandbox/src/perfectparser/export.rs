//! Exports of the PerfectParser sandbox (`providers.md` §4.2, P1):
//! `GET /v1/extractions/:id/export` (the documents completed so far) and
//! `GET /v1/extractions/:id/documents/:document_id/export`, in JSON, CSV or XLSX (the parameter
//! name is NF; `?format=` is assumed), made of the parser fields of [`super::world::fields`].

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::routes::{FORMATS, expired, invalid, not_found, parse_query};
use super::world::{DocStatus, Document, Extraction, fields};
use super::{Shared, St};

const COLUMNS: [&str; 5] = ["document_id", "filename", "field", "value", "confidence"];

fn rows(seed: u64, e: &Extraction, docs: &[&Document]) -> Vec<[String; 5]> {
    docs.iter()
        .flat_map(|d| {
            fields(seed, e, d)
                .into_iter()
                .map(|(f, v, c)| [d.id.clone(), d.filename.clone(), f.to_owned(), v, c])
        })
        .collect()
}

/// The export of completed documents of one extraction in `format`: (content type, bytes).
pub(crate) fn export(
    seed: u64,
    e: &Extraction,
    docs: &[&Document],
    format: &str,
) -> (&'static str, Vec<u8>) {
    match format {
        "csv" => {
            let cell = |s: &str| {
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_owned()
                }
            };
            let mut out = COLUMNS.join(",") + "\r\n";
            for r in rows(seed, e, docs) {
                out += &r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
                out += "\r\n";
            }
            ("text/csv; charset=utf-8", out.into_bytes())
        }
        "xlsx" => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            super::xlsx::workbook(&COLUMNS, &rows(seed, e, docs)),
        ),
        _ => {
            let documents: Vec<serde_json::Value> = docs
                .iter()
                .map(|d| {
                    let data: serde_json::Map<String, serde_json::Value> = fields(seed, e, d)
                        .into_iter()
                        .map(|(f, v, _)| (f.to_owned(), json!(v)))
                        .collect();
                    json!({ "document_id": d.id, "filename": d.filename, "data": data })
                })
                .collect();
            let body = json!({
                "extraction_id": e.id,
                "parser_id": e.parser_id,
                "documents": documents,
            });
            ("application/json", body.to_string().into_bytes())
        }
    }
}

/// The `format` asked for (json by default), or its 400.
#[allow(clippy::result_large_err)]
fn export_format(query: Option<&str>) -> Result<String, Response> {
    let format = parse_query(query)
        .remove("format")
        .unwrap_or_else(|| "json".to_owned());
    if FORMATS.contains(&format.as_str()) {
        Ok(format)
    } else {
        Err(invalid(&format!(
            "unknown format {format:?}: use json, csv or xlsx"
        )))
    }
}

/// The export file of `docs`, named `<name>.<format>`.
fn export_file(
    sh: &Shared,
    e: &Extraction,
    docs: &[&Document],
    name: &str,
    format: &str,
) -> Response {
    let (content_type, bytes) = export(sh.seed, e, docs, format);
    let name = format!("{name}.{format}");
    let disposition = format!("attachment; filename=\"{}\"", name.replace('"', ""));
    let mut resp = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

pub(crate) async fn export_doc(
    State(sh): State<St>,
    Path((id, doc)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    export_answer(&sh, &id, Some(&doc), query.as_deref())
}

pub(crate) async fn export_extraction(
    State(sh): State<St>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    export_answer(&sh, &id, None, query.as_deref())
}

/// The export of one document, or of an extraction's documents completed so far and still
/// kept (as `/results` gives them while a job runs).
fn export_answer(sh: &Shared, id: &str, doc: Option<&str>, query: Option<&str>) -> Response {
    let format = match export_format(query) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let world = sh.world();
    let now = sh.clock.now_us();
    let Some(doc) = doc else {
        let Some(e) = world.extraction(id) else {
            return not_found("Extraction");
        };
        let docs: Vec<&Document> = e
            .documents
            .iter()
            .filter(|d| d.status(now) == DocStatus::Completed && !expired(sh, d, now))
            .collect();
        if docs.is_empty() {
            let msg = format!("extraction is {}: no document to export", e.status(now));
            return invalid(&msg);
        }
        return export_file(sh, e, &docs, &e.id, &format);
    };
    let Some((e, d)) = world.document(id, doc) else {
        return not_found("Document");
    };
    match d.status(now) {
        DocStatus::Completed if expired(sh, d, now) => not_found("Document"),
        DocStatus::Completed => export_file(sh, e, &[d], &d.id, &format),
        other => invalid(&format!(
            "document is {}: nothing to export yet",
            other.as_str()
        )),
    }
}
