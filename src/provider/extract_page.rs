//! The extract.page adapter: batch listing, batch detail with its item change feed, and item
//! results (200 JSON inline, or 302 to a presigned object-store URL fetched without credentials).
//!
//! Wire types are private and parsed entry by entry, so one malformed or hostile entry is rejected
//! with a reason while the rest of the page goes on.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::http::{self, Clients, KeyStyle};
use super::wire::{self, convert_entries, timestamp};
use super::{AdapterContext, Provider, ResultBody};
use crate::config::Secret;
use crate::error::{ProviderError, redact_url};
use crate::model::{
    BatchId, BatchPage, BatchStatus, DueItem, ItemId, ItemPage, ListRequest, ProviderName,
    RemoteBatch, RemoteItem, RemoteStatus, Submission, Submitted,
};

mod submit;

/// The documented maximum page size of the batch detail's item feed.
const MAX_ITEMS_PAGE: u32 = 500;
/// extract.page takes its key in a header of its own.
const KEY: KeyStyle = KeyStyle::Header("X-API-KEY");

pub struct ExtractPage {
    name: ProviderName,
    base: url::Url,
    key: Secret,
    clients: Clients,
    page_size: u32,
    retention: Duration,
}

impl ExtractPage {
    pub fn new(ctx: &AdapterContext) -> Self {
        let settings = &ctx.settings;
        let clients = ctx.clients.clone();
        let mut base = settings.base_url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Self {
            name: settings.name.clone(),
            base,
            key: settings.api_key.clone(),
            clients,
            page_size: settings.page_size.clamp(1, 200),
            retention: settings.retention,
        }
    }

    /// `<base>/v1/<segments…>`, each segment percent-encoded (see [`wire::path_url`]).
    fn url(&self, segments: &[&str]) -> Result<url::Url, ProviderError> {
        wire::path_url(&self.base, "v1", segments)
    }

    async fn get(&self, url: &url::Url) -> Result<reqwest::Response, ProviderError> {
        let req = self.clients.api.get(url.clone());
        let resp = http::send_keyed(req, url, &self.key, KEY).await?;
        http::check_status(resp, url).await
    }

    fn batch(&self, w: WireBatch) -> Result<RemoteBatch, String> {
        let id = BatchId::parse(&w.id).map_err(|e| format!("batch {:?}: {e}", w.id))?;
        let status = match w.status.as_str() {
            "pending" => BatchStatus::Pending,
            "running" | "in_progress" | "processing" => BatchStatus::Running,
            "completed" | "partially_failed" => BatchStatus::Completed,
            "failed" => BatchStatus::Failed,
            "cancelled" | "canceled" => BatchStatus::Cancelled,
            other => return Err(format!("batch {id}: unknown status {other:?}")),
        };
        Ok(RemoteBatch {
            id,
            status,
            total_items: w.total_items,
            created_at: w.created_at.as_deref().and_then(timestamp),
            expires_at: w.expires_at.as_deref().and_then(timestamp),
        })
    }

    fn item(
        &self,
        w: WireItem,
        batch_expires: Option<DateTime<Utc>>,
    ) -> Result<RemoteItem, String> {
        let id = ItemId::parse(&w.id).map_err(|e| format!("item {:?}: {e}", w.id))?;
        let status = match w.status.as_str() {
            "pending" | "queued" => RemoteStatus::Pending,
            "running" | "processing" => RemoteStatus::Running,
            "succeeded" => RemoteStatus::Succeeded,
            "failed" => RemoteStatus::Failed,
            "cancelled" | "canceled" => RemoteStatus::Cancelled,
            _ => RemoteStatus::Unrecognized,
        };
        // Results expire `retention` after the item completed; the batch's expiry is the fallback.
        let deadline = w
            .completed_at
            .as_deref()
            .and_then(timestamp)
            .and_then(|t| {
                chrono::Duration::from_std(self.retention)
                    .ok()
                    .map(|r| t + r)
            })
            .or(batch_expires);
        let error = if status == RemoteStatus::Unrecognized {
            Some(wire::unrecognized(&w.status))
        } else {
            w.error.map(|e| match e {
                serde_json::Value::Object(o) => {
                    let code = o.get("code").and_then(|v| v.as_str()).unwrap_or("error");
                    let msg = o.get("message").and_then(|v| v.as_str()).unwrap_or("");
                    format!("{code}: {msg}").trim_end_matches(": ").to_owned()
                }
                other => other.to_string(),
            })
        };
        Ok(RemoteItem {
            id,
            status,
            deadline,
            error,
            locator: None,
        })
    }
}

#[derive(Deserialize)]
struct WireList {
    data: Vec<serde_json::Value>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct WireBatch {
    id: String,
    status: String,
    #[serde(default)]
    total_items: Option<u64>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct WireDetail {
    #[serde(flatten)]
    batch: serde_json::Map<String, serde_json::Value>,
    items: Vec<serde_json::Value>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct WireItem {
    id: String,
    status: String,
    #[serde(default)]
    completed_at: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[async_trait]
impl Provider for ExtractPage {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    async fn list_batches(&self, page: &ListRequest) -> Result<BatchPage, ProviderError> {
        let cursor = page.cursor.as_deref();
        let mut url = self.url(&["batches"])?;
        url.query_pairs_mut()
            .append_pair("limit", &self.page_size.to_string());
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let wire: WireList = http::read_json(self.get(&url).await?, &url).await?;
        let (batches, rejected) =
            convert_entries::<WireBatch, _>(wire.data, "id", |w| self.batch(w));
        Ok(BatchPage {
            batches,
            rejected,
            next_cursor: wire.next_cursor.filter(|c| !c.is_empty()),
        })
    }

    async fn batch_items(
        &self,
        batch: &BatchId,
        cursor: Option<&str>,
    ) -> Result<ItemPage, ProviderError> {
        let mut url = self.url(&["batches", batch.as_str()])?;
        let limit = self.page_size.clamp(1, MAX_ITEMS_PAGE);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let wire: WireDetail = http::read_json(self.get(&url).await?, &url).await?;
        let info = serde_json::from_value::<WireBatch>(serde_json::Value::Object(wire.batch))
            .map_err(|e| e.to_string())
            .and_then(|w| self.batch(w))
            .map_err(|message| ProviderError::Malformed {
                url: redact_url(&url),
                message,
            })?;
        if info.id != *batch {
            return Err(ProviderError::Malformed {
                url: redact_url(&url),
                message: format!("asked for batch {batch}, got {}", info.id),
            });
        }
        let page_len = wire.items.len();
        let (items, rejected) =
            convert_entries::<WireItem, _>(wire.items, "id", |w| self.item(w, info.expires_at));
        let next_cursor = wire.next_cursor.filter(|c| !c.is_empty());
        Ok(ItemPage {
            batch: Some(info),
            items,
            rejected,
            has_more: page_len >= limit as usize && next_cursor.is_some(),
            next_cursor,
            feed_cursor: true,
        })
    }

    async fn fetch_result(&self, due: &DueItem) -> Result<ResultBody, ProviderError> {
        let (batch, item) = (&due.batch, &due.item);
        let url = self.url(&["batches", batch.as_str(), "items", item.as_str(), "result"])?;
        let resp = self.get(&url).await?;
        if !resp.status().is_redirection() {
            return Ok(http::body_of(resp, &url));
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ProviderError::Redirect {
                url: redact_url(&url),
                message: format!("HTTP {} without a Location", resp.status()),
            })?;
        let target = url.join(location).map_err(|e| ProviderError::Redirect {
            url: redact_url(&url),
            message: format!("bad Location: {e}"),
        })?;
        http::fetch_presigned(&self.clients, target).await
    }

    async fn submit(&self, file: &Submission) -> Result<Submitted, ProviderError> {
        submit::submit(self, file).await
    }
}
