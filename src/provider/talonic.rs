//! The Talonic adapter (`providers.md` §3, seed 002): cursor-paged `GET /v1/batches`, the batch
//! detail `GET /v1/batches/:id` with every item at once, and results through the item's document:
//! `GET /v1/documents/:document_id` → `latest_extraction_id` → `GET /v1/extractions/:id`.
//!
//! It owns the Talonic error envelope (`{statusCode, code, error, message, retryable, …}` and the
//! draft `{status, code, message}`): the server's `retryable` is carried into
//! [`ProviderError::Status`], codes are matched case-insensitively, and every response's
//! `X-RateLimit-*` headers feed the provider's limiter. Retention is undocumented, so an item's
//! deadline is its `processed_at` (or the batch's `completed_at`) plus the configured retention.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{self, Clients, KeyStyle};
use super::retry::Limiter;
use super::wire::{self, convert_entries, timestamp};
use super::{AdapterContext, Provider, ResultBody};
use crate::config::Secret;
use crate::error::{ProviderError, redact_url};
use crate::model::{
    BatchId, BatchPage, BatchStatus, DueItem, ItemId, ItemPage, ListRequest, ProviderName,
    RemoteBatch, RemoteItem, RemoteStatus,
};

/// The largest listing page we ask for (the docs give no bound; the config caps at 100 too).
const MAX_PAGE: u32 = 100;
/// How much of an error body is read, and how much of it is kept for the ledger.
const MAX_ERROR_READ: usize = 64 * 1024;
const MAX_ERROR_KEPT: usize = 2048;

pub struct Talonic {
    name: ProviderName,
    base: url::Url,
    key: Secret,
    clients: Clients,
    limiter: Arc<Limiter>,
    page_size: u32,
    retention: Duration,
}

impl Talonic {
    pub fn new(ctx: &AdapterContext) -> Self {
        let settings = &ctx.settings;
        Self {
            name: settings.name.clone(),
            base: settings.base_url.clone(),
            key: settings.api_key.clone(),
            clients: ctx.clients.clone(),
            limiter: ctx.limiter.clone(),
            page_size: settings.page_size.clamp(1, MAX_PAGE),
            retention: settings.retention,
        }
    }

    /// Sends an authenticated GET; every answer's rate headers reach the limiter first.
    async fn get(&self, url: &url::Url) -> Result<reqwest::Response, ProviderError> {
        let req = self.clients.api.get(url.clone());
        let resp = http::send_keyed(req, url, &self.key, KeyStyle::Bearer).await?;
        let now = SystemTime::now();
        http::observe_rate_headers(&self.limiter, resp.headers(), now);
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(status_error(resp, url, now).await)
    }

    fn batch(w: WireBatch) -> Result<(RemoteBatch, Option<DateTime<Utc>>), String> {
        let id = BatchId::parse(&w.id).map_err(|e| format!("batch {:?}: {e}", w.id))?;
        let status = match w.status.to_ascii_lowercase().as_str() {
            "accumulating" => BatchStatus::Pending,
            "submitted" => BatchStatus::Running,
            "completed" => BatchStatus::Completed,
            "failed" => BatchStatus::Failed,
            "cancelled" | "canceled" => BatchStatus::Cancelled,
            _ => {
                return Err(format!(
                    "batch {id}: unknown status {:?} (Talonic documents accumulating, submitted, \
                     completed, failed and cancelled); not mirrored until understood",
                    w.status
                ));
            }
        };
        let batch = RemoteBatch {
            id,
            status,
            total_items: w.item_count,
            created_at: w.created_at.as_deref().and_then(timestamp),
            expires_at: None,
        };
        Ok((batch, w.completed_at.as_deref().and_then(timestamp)))
    }

    fn item(
        w: WireItem,
        completed: Option<DateTime<Utc>>,
        retention: Duration,
    ) -> Result<RemoteItem, String> {
        let id = ItemId::parse(&w.id).map_err(|e| format!("item {:?}: {e}", w.id))?;
        let status = match w.status.to_ascii_lowercase().as_str() {
            "pending" => RemoteStatus::Pending,
            "processing" => RemoteStatus::Running,
            "completed" => RemoteStatus::Succeeded,
            "failed" => RemoteStatus::Failed,
            _ => RemoteStatus::Unrecognized,
        };
        let document = w.document_id.filter(|d| !d.is_empty());
        if document.is_none() && status == RemoteStatus::Succeeded {
            return Err(format!(
                "item {id}: completed without a document_id, so its result cannot be found"
            ));
        }
        // Retention is undocumented: count the configured retention from processing.
        let retention = chrono::Duration::from_std(retention).ok();
        let deadline = w
            .processed_at
            .as_deref()
            .and_then(timestamp)
            .or(completed)
            .zip(retention)
            .map(|(t, r)| t + r);
        Ok(RemoteItem {
            id,
            status,
            deadline,
            error: if status == RemoteStatus::Unrecognized {
                Some(wire::unrecognized(&w.status))
            } else {
                w.error_message.filter(|m| !m.is_empty())
            },
            locator: document,
        })
    }

    /// `GET` on a document or extraction of an item listed completed: 404/410 mean it is gone.
    async fn get_result_part(&self, url: &url::Url) -> Result<reqwest::Response, ProviderError> {
        match self.get(url).await {
            Err(ProviderError::Status {
                url, status, body, ..
            }) if status == 404 || status == 410 => Err(ProviderError::Gone { url, status, body }),
            other => other,
        }
    }
}

/// Maps a refused response to the error the retry rule understands, honouring the envelope.
async fn status_error(resp: reqwest::Response, url: &url::Url, now: SystemTime) -> ProviderError {
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = match http::read_limited(resp, url, MAX_ERROR_READ).await {
        Ok(bytes) => bytes,
        Err(e) => format!("(body unreadable: {e})").into_bytes(),
    };
    let envelope = serde_json::from_slice::<Envelope>(&raw).ok();
    let code = envelope
        .as_ref()
        .and_then(|e| e.code.as_deref())
        .map(str::to_ascii_lowercase);
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || code.as_deref().is_some_and(|c| {
            matches!(
                c,
                "rate_limited" | "rate_limit_exceeded" | "too_many_requests" | "quota_exceeded"
            )
        });
    // A throttling code on another status still names its wait in the rate headers.
    let hint_status = if rate_limited {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        status
    };
    // `X-RateLimit-Reset` is the daily window's end: it names the wait only when the window is
    // spent. A refusal with quota left (a burst limit) backs off instead of sleeping till midnight.
    let remaining = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let retry_after = if headers.contains_key("retry-after") || remaining.is_none_or(|r| r == 0) {
        http::wait_hint(hint_status, &headers, now)
    } else {
        None
    };
    let by_code = code.as_deref().and_then(|c| match c {
        _ if rate_limited => Some(true),
        "internal_error" | "internal_server_error" | "service_unavailable" | "timeout" => {
            Some(true)
        }
        "unauthorized" | "forbidden" | "insufficient_scope" | "not_found" | "validation_error"
        | "bad_request" => Some(false),
        _ => None,
    });
    // The provider's own word wins, then what its code means, then the status (in is_retryable).
    let retryable = envelope
        .as_ref()
        .and_then(|e| e.retryable)
        .or(by_code)
        .or(rate_limited.then_some(true));
    let mut body = match &envelope {
        Some(e) if e.code.is_some() || e.message.is_some() => format!(
            "{}: {}{}",
            e.code.as_deref().unwrap_or("error"),
            e.message.as_deref().or(e.error.as_deref()).unwrap_or(""),
            e.request_id
                .as_deref()
                .map(|id| format!(" (request {id})"))
                .unwrap_or_default()
        ),
        _ => String::from_utf8_lossy(&raw).trim().to_owned(),
    };
    let mut cut = body.len().min(MAX_ERROR_KEPT);
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body.truncate(cut);
    ProviderError::Status {
        url: redact_url(url),
        status: status.as_u16(),
        body,
        retry_after,
        retryable,
    }
}

/// `<base>/v1/<segments…>`, each segment percent-encoded; `.` and `..` are refused because URL
/// parsers resolve them away and the request would address another resource.
fn url_at(base: &url::Url, segments: &[&str]) -> Result<url::Url, ProviderError> {
    wire::path_url(base, "v1", segments)
}

/// Both published error shapes: `{statusCode, code, error, message, retryable, request_id, …}`
/// and the draft `{status, code, message}`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct WireList {
    data: Vec<serde_json::Value>,
    #[serde(default)]
    pagination: Option<WirePagination>,
}

#[derive(Deserialize)]
struct WirePagination {
    #[serde(default)]
    has_more: Option<bool>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct WireBatch {
    id: String,
    status: String,
    #[serde(default)]
    item_count: Option<u64>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
}

#[derive(Deserialize)]
struct WireDetail {
    #[serde(flatten)]
    batch: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireItem {
    id: String,
    status: String,
    #[serde(default)]
    document_id: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    processed_at: Option<String>,
}

#[derive(Deserialize)]
struct WireDocument {
    #[serde(default)]
    latest_extraction_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[async_trait]
impl Provider for Talonic {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    async fn list_batches(&self, page: &ListRequest) -> Result<BatchPage, ProviderError> {
        let cursor = page.cursor.as_deref();
        let mut url = url_at(&self.base, &["batches"])?;
        url.query_pairs_mut()
            .append_pair("limit", &self.page_size.to_string());
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let wire: WireList = http::read_json(self.get(&url).await?, &url).await?;
        let (batches, rejected) =
            convert_entries::<WireBatch, _>(wire.data, "id", |w| Self::batch(w).map(|(b, _)| b));
        // Go on while the server says there is more and names where; a missing `has_more` with a
        // cursor is taken as "more".
        let next_cursor = wire
            .pagination
            .filter(|p| p.has_more != Some(false))
            .and_then(|p| p.next_cursor)
            .filter(|c| !c.is_empty());
        Ok(BatchPage {
            batches,
            rejected,
            next_cursor,
        })
    }

    async fn batch_items(
        &self,
        batch: &BatchId,
        _cursor: Option<&str>,
    ) -> Result<ItemPage, ProviderError> {
        let url = url_at(&self.base, &["batches", batch.as_str()])?;
        let wire: WireDetail = http::read_json(self.get(&url).await?, &url).await?;
        let mut rejected = Vec::new();
        let parsed = serde_json::from_value::<WireBatch>(serde_json::Value::Object(wire.batch))
            .map_err(|e| format!("batch {batch}: {e}"))
            .and_then(Self::batch);
        // An unknown batch status is reported; its items (whose statuses we know) still count.
        let (info, completed) = match parsed {
            Ok((info, completed)) => (Some(info), completed),
            Err(e) => {
                rejected.push(e);
                (None, None)
            }
        };
        if let Some(info) = info.as_ref().filter(|i| i.id != *batch) {
            return Err(ProviderError::Malformed {
                url: redact_url(&url),
                message: format!("asked for batch {batch}, got {}", info.id),
            });
        }
        let (items, bad) = convert_entries::<WireItem, _>(wire.items, "id", |w| {
            Self::item(w, completed, self.retention)
        });
        rejected.extend(bad);
        Ok(ItemPage {
            batch: info,
            items,
            rejected,
            next_cursor: None,
            has_more: false,
            feed_cursor: false,
        })
    }

    async fn fetch_result(&self, due: &DueItem) -> Result<ResultBody, ProviderError> {
        let Some(document) = due.locator.as_deref() else {
            return Err(ProviderError::Malformed {
                url: String::new(),
                message: format!(
                    "item {} has no document_id to fetch its result by",
                    due.item
                ),
            });
        };
        let doc_url = url_at(&self.base, &["documents", document])?;
        let resp = self.get_result_part(&doc_url).await?;
        let doc: WireDocument = http::read_json(resp, &doc_url).await?;
        let Some(extraction) = doc.latest_extraction_id.filter(|e| !e.is_empty()) else {
            return Err(ProviderError::NotReady {
                url: redact_url(&doc_url),
                body: format!(
                    "document {document} (status {}) has no latest_extraction_id yet",
                    doc.status.as_deref().unwrap_or("unknown")
                ),
            });
        };
        let url = url_at(&self.base, &["extractions", &extraction])?;
        let resp = self.get_result_part(&url).await?;
        Ok(http::body_of(resp, &url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_ids_and_refuse_dot_segments() {
        let base = url::Url::parse("http://h/api").unwrap();
        let u = url_at(&base, &["documents", "a/b?c"]).unwrap();
        assert_eq!(u.as_str(), "http://h/api/v1/documents/a%2Fb%3Fc");
        assert!(matches!(
            url_at(&base, &["documents", ".."]),
            Err(ProviderError::UnaddressableId { .. })
        ));
    }

    #[test]
    fn statuses_map_and_unknown_ones_are_refused_with_a_reason() {
        let w = |status: &str| WireBatch {
            id: "b".into(),
            status: status.into(),
            item_count: Some(1),
            created_at: None,
            completed_at: None,
        };
        let cases = [
            ("accumulating", BatchStatus::Pending),
            ("SUBMITTED", BatchStatus::Running),
        ];
        for (wire, want) in cases {
            assert_eq!(Talonic::batch(w(wire)).unwrap().0.status, want);
        }
        let err = Talonic::batch(w("archived")).unwrap_err();
        assert!(err.contains("unknown status \"archived\""), "{err}");
        let item = Talonic::item(
            WireItem {
                id: "i".into(),
                status: "completed".into(),
                document_id: Some("d".into()),
                error_message: None,
                processed_at: Some("2024-10-01T14:10:00.000Z".into()),
            },
            None,
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(item.status, RemoteStatus::Succeeded);
        assert_eq!(item.locator.as_deref(), Some("d"));
        assert_eq!(
            item.deadline.unwrap().to_rfc3339(),
            "2024-10-01T15:10:00+00:00"
        );
    }
}
