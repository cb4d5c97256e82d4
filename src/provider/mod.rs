//! The provider seam: one trait every API adapter implements, and the factory that builds them.
//!
//! Adapters only translate wire types into [`crate::model`] types. Retry, back-off and rate
//! limiting wrap them ([`retry::Retrying`]), so every adapter gets the same behaviour. The
//! factory [`build`] is the only place that matches on provider kinds.

pub mod extract_page;
pub mod http;
pub mod llamacloud;
pub mod pacing;
pub mod perfectparser;
pub mod retry;
pub mod speed;
pub mod talonic;
pub mod wire;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::config::{DownloadSettings, ProviderKind, ProviderSettings};
use crate::error::ProviderError;
use crate::model::{
    BatchId, BatchPage, DueItem, ItemPage, ListRequest, Observer, Pace, ProviderName, Submission,
    Submitted,
};

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

    /// One page of the account's batches, newest first: `page.cursor` is what the previous page
    /// returned (`None` = the head), `page.since` filters by update time when
    /// [`Provider::lists_since`] says the API can.
    async fn list_batches(&self, page: &ListRequest) -> Result<BatchPage, ProviderError>;

    /// True when [`Provider::list_batches`] honours `since` (only batches updated after it), so a
    /// walk need not read the whole listing to find what changed.
    fn lists_since(&self) -> bool {
        false
    }

    /// The pacing of this provider's requests, where a wrapper paces them ([`retry::Retrying`]).
    fn pace(&self) -> Option<Pace> {
        None
    }

    /// Starts pacing from a cap an earlier run learned.
    fn restore_pace(&self, per_minute: f64) {
        let _ = per_minute;
    }

    /// One page of a batch's items. For APIs with a change feed, `cursor` resumes it.
    async fn batch_items(
        &self,
        batch: &BatchId,
        cursor: Option<&str>,
    ) -> Result<ItemPage, ProviderError>;

    /// Starts fetching an item's result. `NotReady` and `Gone` are errors the caller acts on.
    /// `item` is the ledger's claimed row: ids plus the adapter's own locator.
    async fn fetch_result(&self, item: &DueItem) -> Result<ResultBody, ProviderError>;

    /// The item's result taken from one answer for its whole batch, which the adapter reads once
    /// for all the batch's items and paces itself through the provider's limiter (one request,
    /// however many items it serves; a wrapper cannot know which calls need one). None: ask with
    /// [`Provider::fetch_result`]. Never an error: a failed batch-wide answer only means asking
    /// item by item.
    async fn fetch_from_batch(&self, item: &DueItem) -> Option<ResultBody> {
        let _ = item;
        None
    }

    /// Suffixes of further files kept beside each item's `<item>.json` as `<item>.<suffix>`
    /// (a metadata record, other formats, exports). `[a-z0-9._-]+`, fixed per provider.
    fn sidecars(&self) -> Vec<String> {
        Vec::new()
    }

    /// Fetches one of [`Provider::sidecars`] for an item.
    async fn fetch_sidecar(
        &self,
        item: &DueItem,
        suffix: &str,
    ) -> Result<ResultBody, ProviderError> {
        let _ = item;
        Err(ProviderError::Malformed {
            url: String::new(),
            message: format!("this provider has no sidecar {suffix:?}"),
        })
    }

    /// Submits one local file as a new extraction job (the drop folder), sending
    /// `file.idempotency_key` so that asking again returns the first job instead of a second one.
    /// Providers without a submit flow keep this default.
    async fn submit(&self, file: &Submission) -> Result<Submitted, ProviderError> {
        let _ = file;
        Err(ProviderError::Unsupported {
            provider: self.name().to_string(),
            what: "submitting files",
        })
    }
}

/// What an adapter is built from: its settings, the HTTP clients, and the provider's limiter (so
/// an adapter can slow it down from rate-limit headers before the server refuses anything).
pub struct AdapterContext {
    pub settings: ProviderSettings,
    pub clients: http::Clients,
    pub limiter: Arc<retry::Limiter>,
    pub observer: Arc<dyn Observer>,
}

/// Builds the configured provider, wrapped in retry and rate limiting. The only match on kinds.
pub fn build(
    settings: &ProviderSettings,
    download: &DownloadSettings,
    observer: Arc<dyn Observer>,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let policy = retry::RetryPolicy::from_settings(settings);
    let ctx = AdapterContext {
        settings: settings.clone(),
        clients: http::Clients::new(download)?,
        limiter: Arc::new(retry::Limiter::adaptive(
            policy.documented_per_minute,
            policy.requests_per_minute,
        )),
        observer,
    };
    let adapter: Arc<dyn Provider> = match settings.kind {
        ProviderKind::ExtractPage => Arc::new(extract_page::ExtractPage::new(&ctx)),
        ProviderKind::LlamaCloud => Arc::new(llamacloud::LlamaCloud::new(&ctx)),
        ProviderKind::Talonic => Arc::new(talonic::Talonic::new(&ctx)),
        ProviderKind::PerfectParser => Arc::new(perfectparser::PerfectParser::new(&ctx)),
    };
    Ok(Arc::new(retry::Retrying::new(
        adapter,
        policy,
        ctx.limiter,
        ctx.observer,
    )))
}
