//! PerfectParser adapter. (Being written.)

use async_trait::async_trait;

use super::{AdapterContext, Provider, ResultBody};
use crate::error::ProviderError;
use crate::model::{BatchId, BatchPage, DueItem, ItemPage, ProviderName};

pub struct PerfectParser {
    name: ProviderName,
}

impl PerfectParser {
    pub fn new(ctx: &AdapterContext) -> Self {
        Self {
            name: ctx.settings.name.clone(),
        }
    }
}

#[async_trait]
impl Provider for PerfectParser {
    fn name(&self) -> &ProviderName {
        &self.name
    }
    async fn list_batches(&self, _cursor: Option<&str>) -> Result<BatchPage, ProviderError> {
        Err(ProviderError::Cancelled)
    }
    async fn batch_items(&self, _: &BatchId, _: Option<&str>) -> Result<ItemPage, ProviderError> {
        Err(ProviderError::Cancelled)
    }
    async fn fetch_result(&self, _: &DueItem) -> Result<ResultBody, ProviderError> {
        Err(ProviderError::Cancelled)
    }
}
