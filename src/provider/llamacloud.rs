//! The LlamaCloud batch-processing (v1 beta) adapter: the batch job list, each job's items (with
//! the job status on the first page), and per item the parse job's JSON result plus sidecars (the
//! item's processing-results record, and markdown / text results when configured).
//!
//! Paging is offset-based as in the official SDK (`SyncPaginatedBatchItems`): next offset =
//! offset + items on the page, going on while `total_size` is present and larger. Retention is
//! undocumented, so a 404 on the result of an item listed completed means the result is gone.
//! Wire types are private and parsed entry by entry, so one bad entry is rejected with a reason
//! while the rest of the page goes on.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use super::http::{self, Clients, KeyStyle};
use super::wire::{self, convert_entries, timestamp};
use super::{AdapterContext, Provider, ResultBody};
use crate::config::Secret;
use crate::error::{ProviderError, redact_url};
use crate::model::{
    BatchId, BatchPage, BatchStatus, DueItem, ItemId, ItemPage, ListRequest, ProviderName,
    RemoteBatch, RemoteItem, RemoteStatus,
};

/// The sidecar holding the item's `processing-results` record.
const PROCESSING_RESULTS: &str = "processing-results.json";
/// The SDK's documented page bound (1..=1000).
const MAX_PAGE: u32 = 1000;

pub struct LlamaCloud {
    name: ProviderName,
    base: url::Url,
    key: Secret,
    clients: Clients,
    page_size: u32,
    retention: Duration,
    scope: Vec<(&'static str, String)>,
    markdown: bool,
    text: bool,
}

impl LlamaCloud {
    pub fn new(ctx: &AdapterContext) -> Self {
        let settings = &ctx.settings;
        let options = &settings.options;
        let scope = [
            ("project_id", &options.project_id),
            ("organization_id", &options.organization_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
        let wants = |f: &str| options.result_formats.iter().any(|r| r == f);
        Self {
            name: settings.name.clone(),
            base: settings.base_url.clone(),
            key: settings.api_key.clone(),
            clients: ctx.clients.clone(),
            page_size: settings.page_size.clamp(1, MAX_PAGE),
            retention: settings.retention,
            scope,
            markdown: wants("markdown"),
            text: wants("text"),
        }
    }

    /// `<base>/api/v1/<segments…>` with every segment percent-encoded and the scope parameters
    /// added. `.` and `..` would be resolved away by URL parsers and address another resource, so
    /// they are refused.
    fn url(&self, segments: &[&str]) -> Result<url::Url, ProviderError> {
        let mut u = wire::path_url(&self.base, "api/v1", segments)?;
        for (k, v) in &self.scope {
            u.query_pairs_mut().append_pair(k, v);
        }
        Ok(u)
    }

    fn paged(
        &self,
        segments: &[&str],
        cursor: Option<&str>,
    ) -> Result<(url::Url, u64), ProviderError> {
        let offset = match cursor {
            None => 0,
            Some(c) => c.parse::<u64>().map_err(|_| ProviderError::Malformed {
                url: String::new(),
                message: format!("offset cursor {c:?} is not a number"),
            })?,
        };
        let mut url = self.url(segments)?;
        url.query_pairs_mut()
            .append_pair("limit", &self.page_size.to_string())
            .append_pair("offset", &offset.to_string());
        Ok((url, offset))
    }

    async fn get(&self, url: &url::Url) -> Result<reqwest::Response, ProviderError> {
        let req = self.clients.api.get(url.clone());
        let resp = http::send_keyed(req, url, &self.key, KeyStyle::Bearer).await?;
        // The SDK honours `retry-after-ms` before `retry-after`; `check_status` knows only the latter.
        let wait_ms = resp
            .headers()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
        match http::check_status(resp, url).await {
            Err(ProviderError::Status {
                url,
                status,
                body,
                retry_after,
                retryable,
            }) => Err(ProviderError::Status {
                url,
                status,
                body,
                retry_after: wait_ms.or(retry_after),
                retryable,
            }),
            other => other,
        }
    }

    /// GETs a parse-job result route; a 404 means the result is gone (retention is undocumented,
    /// and only items listed completed are fetched).
    async fn get_result(&self, url: &url::Url) -> Result<reqwest::Response, ProviderError> {
        match self.get(url).await {
            Err(ProviderError::Status {
                status: 404,
                url,
                body,
                ..
            }) => Err(ProviderError::Gone {
                url,
                status: 404,
                body,
            }),
            other => other,
        }
    }

    fn batch(&self, w: WireJob) -> Result<RemoteBatch, String> {
        let id = BatchId::parse(&w.id).map_err(|e| format!("batch job {:?}: {e}", w.id))?;
        let status = match w.status.as_str() {
            "pending" => BatchStatus::Pending,
            "running" | "dispatched" => BatchStatus::Running,
            "completed" => BatchStatus::Completed,
            "failed" => BatchStatus::Failed,
            "cancelled" => BatchStatus::Cancelled,
            other => return Err(format!("batch job {id}: unknown status {other:?}")),
        };
        Ok(RemoteBatch {
            id,
            status,
            total_items: w.total_items,
            created_at: w.created_at.as_deref().and_then(timestamp),
            expires_at: None,
        })
    }

    fn item(&self, w: WireItem) -> Result<RemoteItem, String> {
        let id = ItemId::parse(&w.item_id).map_err(|e| format!("item {:?}: {e}", w.item_id))?;
        let status = match w.status.as_str() {
            "pending" => RemoteStatus::Pending,
            "processing" => RemoteStatus::Running,
            "completed" => RemoteStatus::Succeeded,
            "failed" => RemoteStatus::Failed,
            "skipped" => RemoteStatus::Skipped,
            "cancelled" => RemoteStatus::Cancelled,
            _ => RemoteStatus::Unrecognized,
        };
        let locator = w.job_id.filter(|j| !j.is_empty());
        if status == RemoteStatus::Succeeded && locator.is_none() {
            return Err(format!(
                "item {id}: completed but without a parse job id, so its result cannot be fetched"
            ));
        }
        let deadline = w.completed_at.as_deref().and_then(timestamp).and_then(|t| {
            chrono::Duration::from_std(self.retention)
                .ok()
                .map(|r| t + r)
        });
        let error = match (w.error_message, w.skip_reason) {
            _ if status == RemoteStatus::Unrecognized => Some(wire::unrecognized(&w.status)),
            (Some(e), _) => Some(e),
            (None, Some(r)) => Some(format!("skipped: {r}")),
            (None, None) => None,
        };
        Ok(RemoteItem {
            id,
            status,
            deadline,
            error,
            locator,
        })
    }

    fn locator<'a>(&self, due: &'a DueItem) -> Result<&'a str, ProviderError> {
        // Listing refuses completed items without a parse job id, so such a row comes from
        // elsewhere; with no id nothing can be fetched, and asking again will not help.
        due.locator
            .as_deref()
            .ok_or_else(|| ProviderError::UnaddressableId {
                id: format!(
                    "{} (item of batch job {} without a parse job id)",
                    due.item, due.batch
                ),
            })
    }
}

/// The next offset cursor per the SDK rule, or None on the last page.
fn next_offset(offset: u64, page_len: usize, total: Option<u64>) -> Option<String> {
    let next = offset + page_len as u64;
    (page_len > 0 && total.is_some_and(|t| next < t)).then(|| next.to_string())
}

#[derive(Deserialize)]
struct WirePage {
    items: Vec<serde_json::Value>,
    #[serde(default)]
    total_size: Option<u64>,
}

#[derive(Deserialize)]
struct WireJob {
    id: String,
    status: String,
    #[serde(default)]
    total_items: Option<u64>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct WireStatus {
    job: serde_json::Value,
}

#[derive(Deserialize)]
struct WireItem {
    item_id: String,
    status: String,
    #[serde(default)]
    completed_at: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    skip_reason: Option<String>,
    #[serde(default)]
    job_id: Option<String>,
}

#[async_trait]
impl Provider for LlamaCloud {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    async fn list_batches(&self, page: &ListRequest) -> Result<BatchPage, ProviderError> {
        let cursor = page.cursor.as_deref();
        let (url, offset) = self.paged(&["beta", "batch-processing"], cursor)?;
        let wire: WirePage = http::read_json(self.get(&url).await?, &url).await?;
        let page_len = wire.items.len();
        let (batches, rejected) =
            convert_entries::<WireJob, _>(wire.items, "id", |w| self.batch(w));
        Ok(BatchPage {
            batches,
            rejected,
            next_cursor: next_offset(offset, page_len, wire.total_size),
        })
    }

    async fn batch_items(
        &self,
        batch: &BatchId,
        cursor: Option<&str>,
    ) -> Result<ItemPage, ProviderError> {
        let mut rejected = Vec::new();
        let info = if cursor.is_none() {
            let url = self.url(&["beta", "batch-processing", batch.as_str()])?;
            let wire: WireStatus = http::read_json(self.get(&url).await?, &url).await?;
            let job = serde_json::from_value::<WireJob>(wire.job)
                .map_err(|e| format!("batch job {batch}: {e}"))
                .and_then(|w| self.batch(w));
            match job {
                Ok(job) if job.id == *batch => Some(job),
                Ok(job) => {
                    return Err(ProviderError::Malformed {
                        url: redact_url(&url),
                        message: format!("asked for batch job {batch}, got {}", job.id),
                    });
                }
                // A job status we cannot read (an unknown status) must not hide its items.
                Err(e) => {
                    rejected.push(e);
                    None
                }
            }
        } else {
            None
        };
        let (url, offset) = self.paged(
            &["beta", "batch-processing", batch.as_str(), "items"],
            cursor,
        )?;
        let wire: WirePage = http::read_json(self.get(&url).await?, &url).await?;
        let page_len = wire.items.len();
        let (items, bad) = convert_entries::<WireItem, _>(wire.items, "item_id", |w| self.item(w));
        rejected.extend(bad);
        let next_cursor = next_offset(offset, page_len, wire.total_size);
        Ok(ItemPage {
            batch: info,
            items,
            rejected,
            has_more: next_cursor.is_some(),
            next_cursor,
            feed_cursor: false,
        })
    }

    async fn fetch_result(&self, due: &DueItem) -> Result<ResultBody, ProviderError> {
        let job = self.locator(due)?;
        let url = self.url(&["parsing", "job", job, "result", "json"])?;
        let resp = self.get_result(&url).await?;
        Ok(http::body_of(resp, &url))
    }

    fn sidecars(&self) -> Vec<String> {
        let mut out = vec![PROCESSING_RESULTS.to_owned()];
        if self.markdown {
            out.push("md".to_owned());
        }
        if self.text {
            out.push("txt".to_owned());
        }
        out
    }

    async fn fetch_sidecar(
        &self,
        due: &DueItem,
        suffix: &str,
    ) -> Result<ResultBody, ProviderError> {
        let (format, field) = match suffix {
            PROCESSING_RESULTS => {
                let url = self.url(&[
                    "beta",
                    "batch-processing",
                    "items",
                    due.item.as_str(),
                    "processing-results",
                ])?;
                return Ok(http::body_of(self.get(&url).await?, &url));
            }
            "md" if self.markdown => ("markdown", "markdown"),
            "txt" if self.text => ("text", "text"),
            other => {
                return Err(ProviderError::Malformed {
                    url: String::new(),
                    message: format!("LlamaCloud has no sidecar {other:?} configured"),
                });
            }
        };
        let job = self.locator(due)?;
        let url = self.url(&["parsing", "job", job, "result", format])?;
        let resp = self.get_result(&url).await?;
        if resp
            .content_length()
            .is_some_and(|n| n > http::MAX_LISTING_BYTES as u64)
        {
            // Too big to unwrap in memory: kept as served (the JSON envelope), streamed.
            return Ok(http::body_of(resp, &url));
        }
        // The route answers `{"<format>": "...", "job_metadata": …}`; the file keeps the plain
        // text. A body that is not that JSON is kept as served.
        let body = http::read_limited(resp, &url, http::MAX_LISTING_BYTES).await?;
        let bytes = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(mut o)) => match o.remove(field) {
                Some(serde_json::Value::String(s)) => Bytes::from(s),
                _ => Bytes::from(body),
            },
            _ => Bytes::from(body),
        };
        Ok(ResultBody {
            url: redact_url(&url),
            content_length: Some(bytes.len() as u64),
            stream: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_sdk_rule() {
        assert_eq!(next_offset(0, 2, Some(5)), Some("2".into()));
        assert_eq!(next_offset(4, 1, Some(5)), None);
        assert_eq!(next_offset(0, 2, None), None, "no total: last page");
        assert_eq!(next_offset(2, 0, Some(5)), None, "empty page: last page");
    }

    #[tokio::test]
    async fn a_missing_locator_is_a_permanent_error() {
        let toml = "[ledger]\npath = \"/tmp/l.sqlite3\"\n[storage]\nroot = \"/tmp/m\"\n\
                    [[provider]]\nname = \"lc\"\nkind = \"extract_page\"\n\
                    base_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n";
        let settings =
            crate::config::load_str(toml, "test", &std::collections::HashMap::new()).unwrap();
        let ctx = AdapterContext {
            clients: Clients::new(&settings.download).unwrap(),
            settings: settings.providers[0].clone(),
            limiter: std::sync::Arc::new(crate::provider::retry::Limiter::adaptive(None, None)),
            observer: crate::model::no_observer(),
        };
        let due = DueItem {
            provider: ctx.settings.name.clone(),
            batch: BatchId::parse("bjb-1").unwrap(),
            item: ItemId::parse("i-1").unwrap(),
            deadline: None,
            attempts: 0,
            locator: None,
        };
        let err = LlamaCloud::new(&ctx).fetch_result(&due).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("without a parse job id"), "{err}");
    }

    #[test]
    fn naive_and_offset_timestamps_parse_as_utc() {
        let a = timestamp("2019-12-27T18:11:19.117Z").unwrap();
        let b = timestamp("2019-12-27T18:11:19.117").unwrap();
        assert_eq!(a, b);
        assert!(timestamp("yesterday").is_none());
    }
}
