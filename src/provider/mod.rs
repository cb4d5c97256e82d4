//! The provider seam: one trait every API adapter implements, and the factory that builds them.
//!
//! Adapters only translate wire types into [`crate::model`] types. Retry, back-off and rate
//! limiting wrap them ([`retry::Retrying`]), so every adapter gets the same behaviour. The
//! factory [`build`] is the only place that matches on provider kinds.

pub mod extract_page;
pub mod http;
pub mod retry;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::config::{DownloadSettings, ProviderKind, ProviderSettings};
use crate::error::ProviderError;
use crate::model::{BatchId, BatchPage, ItemId, ItemPage, ProviderName};

/// A result body as it arrives: decoded bytes, streamed.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// A result ready to be streamed to disk.
pub struct ResultBody {
    /// Where the bytes come from, without query string (safe to log).
    pub url: String,
    /// The length the server announced, if any (decoded bodies may differ).
    pub content_length: Option<u64>,
    pub stream: BodyStream,
}

impl std::fmt::Debug for ResultBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultBody")
            .field("url", &self.url)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// One hosted extraction API, seen as batches of items whose results can be fetched.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The configured name (used in paths, the ledger and logs).
    fn name(&self) -> &ProviderName;

    /// One page of the account's batches; `cursor` is what the previous page returned.
    async fn list_batches(&self, cursor: Option<&str>) -> Result<BatchPage, ProviderError>;

    /// One page of a batch's items. For APIs with a change feed, `cursor` resumes it.
    async fn batch_items(
        &self,
        batch: &BatchId,
        cursor: Option<&str>,
    ) -> Result<ItemPage, ProviderError>;

    /// Starts fetching an item's result. `NotReady` and `Gone` are errors the caller acts on.
    async fn fetch_result(
        &self,
        batch: &BatchId,
        item: &ItemId,
    ) -> Result<ResultBody, ProviderError>;
}

/// Builds the configured provider, wrapped in retry and rate limiting. The only match on kinds.
pub fn build(
    settings: &ProviderSettings,
    download: &DownloadSettings,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let clients = http::Clients::new(download)?;
    let adapter: Arc<dyn Provider> = match settings.kind {
        ProviderKind::ExtractPage => Arc::new(extract_page::ExtractPage::new(settings, clients)),
    };
    Ok(Arc::new(retry::Retrying::new(
        adapter,
        retry::RetryPolicy::from_settings(settings),
    )))
}
