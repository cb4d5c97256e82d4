//! The extract.page submit flow (`providers.md` §1.1, §1.2, §1.6): `POST /v1/files` registers the
//! file, the bytes go by presigned `PUT` to the object store (credential-free client), and
//! `POST /v1/batches` with the `Idempotency-Key` makes it a one-item batch.
//!
//! A retry runs the whole flow again: a fresh file and upload URL, the same key. Only the batch
//! create is charged, and the key makes a repeated create return the first batch.

use serde::Deserialize;
use serde_json::{Value, json};

use super::ExtractPage;
use crate::error::{ProviderError, redact_url};
use crate::model::{BatchId, Submission, Submitted};
use crate::provider::http;

#[derive(Deserialize)]
struct WireFile {
    id: String,
    upload: WireUpload,
}

#[derive(Deserialize)]
struct WireUpload {
    url: String,
    #[serde(default)]
    method: Option<String>,
}

#[derive(Deserialize)]
struct WireCreated {
    id: String,
}

pub(super) async fn submit(
    ep: &ExtractPage,
    file: &Submission,
) -> Result<Submitted, ProviderError> {
    // Checked before anything is sent: a bad option would fail the same way on every retry.
    let options = match file.options.options_json.as_deref() {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => {
                return Err(ProviderError::Unsupported {
                    provider: ep.name.to_string(),
                    what: "batch `options` that are not a JSON object",
                });
            }
        },
    };

    let files_url = ep.url(&["files"])?;
    let body = json!({
        "size_bytes": file.bytes.len(),
        "filename": file.file_name,
        "content_type": file.content_type,
    });
    let resp = post_json(ep, &files_url, &body, None).await?;
    let created: WireFile = http::read_json(resp, &files_url).await?;
    let upload = url::Url::parse(&created.upload.url).map_err(|e| ProviderError::Malformed {
        url: redact_url(&files_url),
        message: format!("file {:?}: bad upload.url: {e}", created.id),
    })?;
    if let Some(m) = created.upload.method.as_deref()
        && !m.eq_ignore_ascii_case("PUT")
    {
        return Err(ProviderError::Malformed {
            url: redact_url(&files_url),
            message: format!("file {:?}: upload method {m:?}, expected PUT", created.id),
        });
    }
    put_upload(ep, upload, file).await?;

    let batches_url = ep.url(&["batches"])?;
    let mut body = json!({ "file_ids": [created.id] });
    if let Some(engine) = &file.options.engine {
        body["engine"] = json!(engine);
    }
    if let Some(options) = options {
        body["options"] = options;
    }
    let resp = post_json(ep, &batches_url, &body, Some(&file.idempotency_key)).await?;
    // The docs name no replay marker (the same key just returns the same batch); the header
    // PerfectParser uses is honoured should the API ever send it.
    let replayed = http::replayed(resp.headers());
    let batch: WireCreated = http::read_json(resp, &batches_url).await?;
    let batch = BatchId::parse(&batch.id).map_err(|e| ProviderError::Malformed {
        url: redact_url(&batches_url),
        message: format!("batch {:?}: {e}", batch.id),
    })?;
    Ok(Submitted {
        batch,
        item: None,
        replayed,
    })
}

/// A JSON `POST` with the key (and the idempotency key, when given).
async fn post_json(
    ep: &ExtractPage,
    url: &url::Url,
    body: &Value,
    idempotency_key: Option<&str>,
) -> Result<reqwest::Response, ProviderError> {
    let mut req = ep
        .clients
        .api
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = http::send_keyed(req, url, &ep.key, super::KEY).await?;
    http::check_status(resp, url).await.map_err(http::as_status)
}

/// The `PUT` of the bytes, on the credential-free client: the presigned URL is its own credential.
async fn put_upload(
    ep: &ExtractPage,
    url: url::Url,
    file: &Submission,
) -> Result<(), ProviderError> {
    http::presigned_scheme(&url, "upload")?;
    let resp = ep
        .clients
        .presigned
        .put(url.clone())
        .header(reqwest::header::CONTENT_LENGTH, file.bytes.len())
        .body(file.bytes.clone())
        .send()
        .await
        .map_err(|e| http::transport(&url, e))?;
    // A refusal from the store is about this upload URL: the retried flow asks for a fresh one.
    let resp = http::check_status(resp, &url)
        .await
        .map_err(|e| http::store_refusal(http::as_status(e), "upload"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(ProviderError::Redirect {
            url: redact_url(&url),
            message: format!(
                "the object store answered the upload with {}",
                resp.status()
            ),
        })
    }
}
