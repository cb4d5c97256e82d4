//! The PerfectParser submit (`providers.md` §4.1, §4.2): one multipart `POST /v1/extractions`
//! with `parser_id` and a `files` part, sent with the `Idempotency-Key`. A 202 names the
//! extraction and its document; `Idempotent-Replayed: true` marks the original job answered
//! again (and not charged again).
//!
//! Error bodies are kept whole, so their `code` (`INSUFFICIENT_CREDITS`, `UNSUPPORTED_FILE_TYPE`,
//! `PARSER_NOT_FOUND`, `RATE_LIMITED`) reaches the ledger and the logs.

use reqwest::multipart::{Form, Part};
use serde::Deserialize;

use super::PerfectParser;
use crate::error::{ProviderError, redact_url};
use crate::model::{BatchId, ItemId, Submission, Submitted};
use crate::provider::http;

#[derive(Deserialize)]
struct WireAccepted {
    extraction: WireJob,
}

#[derive(Deserialize)]
struct WireJob {
    extraction_id: String,
    #[serde(default)]
    documents: Vec<WireDoc>,
}

#[derive(Deserialize)]
struct WireDoc {
    document_id: String,
}

pub(super) async fn submit(
    pp: &PerfectParser,
    file: &Submission,
) -> Result<Submitted, ProviderError> {
    let Some(parser) = file.options.parser_id.as_deref().filter(|p| !p.is_empty()) else {
        return Err(ProviderError::Unsupported {
            provider: pp.name.to_string(),
            what: "submitting without a `parser_id`",
        });
    };
    let url = pp.url(&["extractions"])?;
    let bare = || {
        Part::stream_with_length(file.bytes.clone(), file.bytes.len() as u64)
            .file_name(file.file_name.clone())
    };
    // A type the guesser produced but `mime` refuses is left to the server to judge by the name.
    let part = bare()
        .mime_str(&file.content_type)
        .unwrap_or_else(|_| bare());
    let form = Form::new()
        .text("parser_id", parser.to_owned())
        .part("files", part);
    let req = pp
        .clients
        .api
        .post(url.clone())
        .header("Idempotency-Key", &file.idempotency_key)
        .multipart(form);
    let resp = pp.send(&url, req).await.map_err(http::as_status)?;
    let replayed = http::replayed(resp.headers());
    let wire: WireAccepted = http::read_json(resp, &url).await?;
    let malformed = |message: String| ProviderError::Malformed {
        url: redact_url(&url),
        message,
    };
    let job = wire.extraction;
    let batch = BatchId::parse(&job.extraction_id)
        .map_err(|e| malformed(format!("extraction {:?}: {e}", job.extraction_id)))?;
    let item = match job.documents.first() {
        Some(d) => Some(
            ItemId::parse(&d.document_id)
                .map_err(|e| malformed(format!("document {:?}: {e}", d.document_id)))?,
        ),
        None => None,
    };
    Ok(Submitted {
        batch,
        item,
        replayed,
    })
}
