//! The PerfectParser adapter (`providers.md` §4): extraction listing, extraction status with its
//! `documents[]`, results and per-document exports as sidecars. A document's result is its
//! `extracted_data` ([`bulk`] says why), read for the whole extraction from one
//! `GET /v1/extractions/:id/results` where it can be, and from
//! `GET /v1/extractions/:id/documents/:document_id` for what that answer leaves out: the quota
//! of 150 requests a minute is spent per extraction, not per document.
//!
//! Every response's `X-RateLimit-Remaining`/`X-RateLimit-Reset` feed both the shared limiter (via
//! [`http::observe_rate_headers`]) and a local [`Budget`] that counts requests still in flight, so
//! concurrent downloads stop *before* the server would refuse one. Wire types are private and
//! parsed entry by entry: one malformed entry is rejected with a reason, the rest goes on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{self, Clients, KeyStyle};
use super::retry::Limiter;
use super::wire::{self, convert_entries, timestamp};
use super::{AdapterContext, Provider, ResultBody, retry};
use crate::config::Secret;
use crate::error::{ProviderError, redact_url};
use crate::model::{
    BatchId, BatchPage, BatchStatus, DueItem, ItemId, ItemPage, ListRequest, Observer,
    ProviderName, RemoteBatch, RemoteItem, RemoteStatus, Submission, Submitted,
};

mod budget;
mod bulk;
mod submit;

use budget::Budget;

/// The documented maximum of `limit` on `GET /v1/extractions`.
const MAX_PAGE: u32 = 100;

pub struct PerfectParser {
    name: ProviderName,
    base: url::Url,
    key: Secret,
    clients: Clients,
    page_size: u32,
    retention: Duration,
    exports: Vec<String>,
    limiter: Arc<Limiter>,
    observer: Arc<dyn Observer>,
    budget: Budget,
    bulk: bulk::BulkCache,
}

impl PerfectParser {
    pub fn new(ctx: &AdapterContext) -> Self {
        let settings = &ctx.settings;
        let mut base = settings.base_url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Self {
            name: settings.name.clone(),
            base,
            key: settings.api_key.clone(),
            clients: ctx.clients.clone(),
            page_size: settings.page_size.clamp(1, MAX_PAGE),
            retention: settings.retention,
            exports: settings.options.export_formats.clone(),
            limiter: ctx.limiter.clone(),
            observer: ctx.observer.clone(),
            budget: Budget::default(),
            bulk: bulk::BulkCache::default(),
        }
    }

    /// `<base>/v1/<segments…>`, each segment percent-encoded; `.`/`..` are refused (a URL parser
    /// would resolve them away and address another resource).
    fn url(&self, segments: &[&str]) -> Result<url::Url, ProviderError> {
        wire::path_url(&self.base, "v1", segments)
    }

    /// One GET with the key, paced by the budget; rate headers are observed on every answer.
    async fn get(&self, url: &url::Url) -> Result<reqwest::Response, ProviderError> {
        self.send(url, self.clients.api.get(url.clone())).await
    }

    /// Sends `req` (to `url`) with the key, paced by the budget; rate headers are observed on
    /// every answer.
    async fn send(
        &self,
        url: &url::Url,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        let ticket = self.budget.acquire().await;
        let resp = http::send_keyed(req, url, &self.key, KeyStyle::Header("X-API-Key")).await?;
        let now = SystemTime::now();
        http::observe_rate_headers(&self.limiter, resp.headers(), now);
        self.budget
            .observe(ticket, resp.status().as_u16(), resp.headers(), now);
        let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
        match http::check_status(resp, url).await {
            // Every answer carries X-RateLimit-Reset: only on a 429 does it name a wait (a 503
            // would otherwise hold every request until the quota window ends).
            Err(ProviderError::Status {
                url,
                status,
                body,
                retryable,
                ..
            }) if status != 429 && !retry_after => Err(ProviderError::Status {
                url,
                status,
                body,
                retry_after: None,
                retryable,
            }),
            other => other,
        }
    }

    /// A result or export GET: a 404 `RESOURCE_NOT_FOUND` for a listed document means it is gone.
    async fn get_document(&self, url: &url::Url) -> Result<reqwest::Response, ProviderError> {
        match self.get(url).await {
            Ok(resp) => Ok(resp),
            Err(ProviderError::Status {
                status: 404,
                body,
                url,
                ..
            }) if error_code(&body)
                .is_some_and(|c| c.eq_ignore_ascii_case("RESOURCE_NOT_FOUND")) =>
            {
                Err(ProviderError::Gone {
                    url,
                    status: 404,
                    body,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// One `/results` request. It is made outside the retry wrapper (which cannot tell which
    /// documents will come from memory), so it passes the limiter here; a failure only means
    /// asking document by document, so it is logged, not returned.
    async fn read_results(&self, url: &url::Url, ext: &BatchId) -> Vec<(ItemId, bytes::Bytes)> {
        self.limiter.acquire().await;
        let answer = match self.get(url).await {
            Ok(resp) => http::read_limited(resp, url, http::MAX_LISTING_BYTES).await,
            Err(e) => Err(e),
        };
        self.limiter.settle(answer.as_ref().err());
        let outcome = retry::outcome(answer.as_ref().err());
        self.observer.request(&self.name, &outcome);
        match answer.map_err(|e| e.to_string()) {
            Ok(body) => bulk::parse_results(&body, ext).unwrap_or_else(|e| {
                tracing::warn!(provider = %self.name, extraction = %ext,
                    "results of the extraction unusable, fetching its documents one by one: {e}");
                Vec::new()
            }),
            Err(e) => {
                tracing::warn!(provider = %self.name, extraction = %ext,
                    "results of the extraction failed, fetching its documents one by one: {e}");
                Vec::new()
            }
        }
    }

    fn batch(&self, w: &WireExtraction) -> Result<RemoteBatch, String> {
        let id = BatchId::parse(&w.extraction_id)
            .map_err(|e| format!("extraction {:?}: {e}", w.extraction_id))?;
        let status = match w.status.as_str() {
            "queued" | "pending" => BatchStatus::Pending,
            "processing" => BatchStatus::Running,
            // `partial`: some documents failed; what succeeded is mirrored, nothing else will come.
            "completed" | "partial" => BatchStatus::Completed,
            "failed" => BatchStatus::Failed,
            "cancelled" | "canceled" => BatchStatus::Cancelled,
            other => {
                return Err(format!(
                    "extraction {id}: unknown status {other:?} (expected queued, pending, \
                     processing, completed, failed or partial); skipped until it changes"
                ));
            }
        };
        let total = w
            .file_count
            .or_else(|| w.document_summary.as_ref().and_then(|s| s.total));
        Ok(RemoteBatch {
            id,
            status,
            total_items: total,
            created_at: w.created_at.as_deref().and_then(timestamp),
            expires_at: None,
        })
    }

    fn item(&self, w: WireDocument, batch: &RemoteBatch, raw: &str) -> Result<RemoteItem, String> {
        let id = ItemId::parse(&w.document_id)
            .map_err(|e| format!("document {:?}: {e}", w.document_id))?;
        let mut error = w.error_message.filter(|m| !m.is_empty());
        let status = match w.status.as_str() {
            "completed" => RemoteStatus::Succeeded,
            "failed" => RemoteStatus::Failed,
            // A terminal extraction (`partial` above all) will not finish its other documents:
            // polling them would never end.
            "queued" | "pending" | "processing" if batch.status.is_terminal() => {
                error.get_or_insert_with(|| {
                    format!("the extraction ended {raw:?} before this document completed")
                });
                RemoteStatus::Skipped
            }
            "queued" | "pending" => RemoteStatus::Pending,
            "processing" => RemoteStatus::Running,
            other => {
                error = Some(wire::unrecognized(other));
                RemoteStatus::Unrecognized
            }
        };
        // Retention is undocumented: the configured retention runs from the document's completion.
        let deadline = (status == RemoteStatus::Succeeded)
            .then(|| w.updated_at.as_deref().and_then(timestamp))
            .flatten()
            .and_then(|t| {
                chrono::Duration::from_std(self.retention)
                    .ok()
                    .map(|r| t + r)
            });
        Ok(RemoteItem {
            id,
            status,
            deadline,
            error,
            locator: None,
        })
    }
}

/// The `code` of an error body, whatever its shape: `{"error":{"code"}}`, `{"code"}`,
/// `{"error":"CODE"}`. None when the body is not JSON or names no code (the raw text is kept).
fn error_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let code = v
        .pointer("/error/code")
        .or_else(|| v.get("code"))
        .or_else(|| v.get("error").filter(|e| e.is_string()))?;
    code.as_str().map(str::to_owned)
}

#[derive(Deserialize)]
struct WireList {
    extractions: Vec<serde_json::Value>,
    #[serde(default)]
    pagination: Option<WirePagination>,
}

#[derive(Deserialize)]
struct WirePagination {
    #[serde(default)]
    has_next_page: Option<bool>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct WireSummary {
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Deserialize)]
struct WireExtraction {
    extraction_id: String,
    status: String,
    #[serde(default)]
    file_count: Option<u64>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    document_summary: Option<WireSummary>,
}

#[derive(Deserialize)]
struct WireDetail {
    extraction: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct WireDocument {
    document_id: String,
    status: String,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[async_trait]
impl Provider for PerfectParser {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    async fn list_batches(&self, page: &ListRequest) -> Result<BatchPage, ProviderError> {
        let mut url = self.url(&["extractions"])?;
        url.query_pairs_mut()
            .append_pair("limit", &self.page_size.to_string());
        if let Some(since) = page.since {
            url.query_pairs_mut().append_pair(
                "since",
                &since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        }
        if let Some(c) = page.cursor.as_deref() {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let wire: WireList = http::read_json(self.get(&url).await?, &url).await?;
        let (batches, rejected) =
            convert_entries::<WireExtraction, _>(wire.extractions, "extraction_id", |w| {
                self.batch(&w)
            });
        let next_cursor = wire.pagination.and_then(|p| {
            let more = p.has_next_page.unwrap_or(true);
            p.next_cursor.filter(|c| more && !c.is_empty())
        });
        Ok(BatchPage {
            batches,
            rejected,
            next_cursor,
        })
    }

    /// `GET /v1/extractions?since=` lists only extractions updated after it (providers.md §4).
    fn lists_since(&self) -> bool {
        true
    }

    async fn batch_items(
        &self,
        batch: &BatchId,
        _cursor: Option<&str>,
    ) -> Result<ItemPage, ProviderError> {
        let url = self.url(&["extractions", batch.as_str()])?;
        let malformed = |message: String| ProviderError::Malformed {
            url: redact_url(&url),
            message,
        };
        let mut wire: WireDetail = http::read_json(self.get(&url).await?, &url).await?;
        let documents = match wire.extraction.remove("documents") {
            Some(serde_json::Value::Array(d)) => d,
            Some(serde_json::Value::Null) | None => Vec::new(),
            Some(other) => return Err(malformed(format!("documents is not a list: {other}"))),
        };
        let head: WireExtraction =
            serde_json::from_value(serde_json::Value::Object(wire.extraction))
                .map_err(|e| malformed(format!("extraction: {e}")))?;
        let info = self.batch(&head).map_err(malformed)?;
        if info.id != *batch {
            return Err(malformed(format!(
                "asked for extraction {batch}, got {}",
                info.id
            )));
        }
        let (items, rejected) = convert_entries::<WireDocument, _>(documents, "document_id", |w| {
            self.item(w, &info, &head.status)
        });
        Ok(ItemPage {
            batch: Some(info),
            items,
            rejected,
            next_cursor: None,
            has_more: false,
            feed_cursor: false,
        })
    }

    async fn fetch_from_batch(&self, due: &DueItem) -> Option<ResultBody> {
        let (ext, doc) = (due.batch.as_str(), due.item.as_str());
        // A document its own route cannot address fails there, whatever `/results` holds.
        self.url(&["extractions", ext, "documents", doc]).ok()?;
        let url = self.url(&["extractions", ext, "results"]).ok()?;
        let fill = || self.read_results(&url, &due.batch);
        let data = self.bulk.take(&due.batch, &due.item, fill).await?;
        Some(bulk::body(&url, data))
    }

    /// The fallback for what `/results` left out: the document's own answer, cut to its data.
    async fn fetch_result(&self, due: &DueItem) -> Result<ResultBody, ProviderError> {
        let (ext, doc) = (due.batch.as_str(), due.item.as_str());
        let url = self.url(&["extractions", ext, "documents", doc])?;
        let resp = self.get_document(&url).await?;
        let body = http::read_limited(resp, &url, bulk::MAX_DOCUMENT_BYTES).await?;
        let data = bulk::document_data(&body, &due.batch, &due.item, &url)?;
        Ok(bulk::body(&url, data))
    }

    fn sidecars(&self) -> Vec<String> {
        self.exports.iter().map(|f| format!("export.{f}")).collect()
    }

    async fn fetch_sidecar(
        &self,
        due: &DueItem,
        suffix: &str,
    ) -> Result<ResultBody, ProviderError> {
        let format = suffix
            .strip_prefix("export.")
            .filter(|f| self.exports.iter().any(|e| e == f))
            .ok_or_else(|| ProviderError::Malformed {
                url: String::new(),
                message: format!("this provider has no sidecar {suffix:?}"),
            })?;
        let (ext, doc) = (due.batch.as_str(), due.item.as_str());
        let mut url = self.url(&["extractions", ext, "documents", doc, "export"])?;
        url.query_pairs_mut().append_pair("format", format);
        Ok(http::body_of(self.get_document(&url).await?, &url))
    }

    async fn submit(&self, file: &Submission) -> Result<Submitted, ProviderError> {
        submit::submit(self, file).await
    }
}
