//! What the mirror stores for a PerfectParser document, and the short-lived cache of
//! `GET /v1/extractions/:id/results` answers that lets one request serve every document of an
//! extraction (`providers.md` §4.2, seed 004 "All results at once").
//!
//! The stored bytes are the document's `extracted_data` value exactly as the server wrote it. The
//! per-document route wraps it in `{document:{…}}` with fields the `/results` entry lacks
//! (`extraction_id`, `file_type`, `file_size`), so neither whole answer can be produced from the
//! other; the parser-schema object is what both carry, byte for byte. [`document_data`] and
//! [`parse_results`] are the only two readers, so a file never depends on which route fetched it.
//!
//! The cache owns no requests: the adapter hands [`BulkCache::take`] the fetch. Anything doubtful
//! in a bulk answer (bad JSON, a foreign or repeated id, an entry not completed) is left out, so
//! that document falls back to its own request, which keeps that route's error handling.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::error::{ProviderError, redact_url};
use crate::model::{BatchId, ItemId};
use crate::provider::ResultBody;

/// Bytes of `/results` answers held at once, all extractions together; documents past it are
/// fetched one by one instead.
pub(super) const MAX_CACHED_BYTES: usize = 64 << 20;
/// Largest per-document answer read: the data must be cut out of it, so it is held in memory.
pub(super) const MAX_DOCUMENT_BYTES: usize = 64 << 20;
/// How long an extraction's answer is kept: long enough for the downloads one listing started,
/// short enough that a later pass asks again (documents completed since then).
pub(super) const CACHE_TTL: Duration = Duration::from_secs(60);
/// Extractions remembered at once (each empty marker is small, but not free).
const MAX_EXTRACTIONS: usize = 1024;

/// A body handed out from memory, whatever route it came from.
pub(super) fn body(url: &url::Url, data: Bytes) -> ResultBody {
    ResultBody {
        url: redact_url(url),
        content_length: Some(data.len() as u64),
        stream: Box::pin(futures_util::stream::once(async move { Ok(data) })),
    }
}

#[derive(Deserialize)]
struct WireOne<'a> {
    #[serde(borrow)]
    document: WireEntry<'a>,
}

#[derive(Deserialize)]
struct WireEntry<'a> {
    document_id: String,
    status: String,
    #[serde(default)]
    extraction_id: Option<String>,
    #[serde(default, borrow)]
    extracted_data: Option<&'a RawValue>,
}

/// The mirrored bytes of document `doc` of `ext` from its own answer `{document:{…}}`.
pub(super) fn document_data(
    body: &[u8],
    ext: &BatchId,
    doc: &ItemId,
    url: &url::Url,
) -> Result<Bytes, ProviderError> {
    let malformed = |message: String| ProviderError::Malformed {
        url: redact_url(url),
        message,
    };
    let wire: WireOne<'_> =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    let d = wire.document;
    let foreign = d
        .extraction_id
        .as_deref()
        .is_some_and(|e| e != ext.as_str());
    if d.document_id != doc.as_str() || foreign {
        return Err(malformed(format!(
            "asked for document {doc} of {ext}, got {:?} of {:?}",
            d.document_id, d.extraction_id
        )));
    }
    if d.status != "completed" {
        return Err(ProviderError::NotReady {
            url: redact_url(url),
            body: format!("document status {:?}", d.status),
        });
    }
    d.extracted_data
        .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes()))
        .ok_or_else(|| malformed(format!("completed document {doc} has no extracted_data")))
}

#[derive(Deserialize)]
struct WireResults<'a> {
    #[serde(borrow)]
    extraction: WireBulk<'a>,
}

#[derive(Deserialize)]
struct WireBulk<'a> {
    extraction_id: String,
    #[serde(borrow)]
    documents: Vec<&'a RawValue>,
}

/// The completed documents of a `/results` answer for `ext`, each with its mirrored bytes.
/// An entry that does not parse, names another extraction, repeats an id or has no data is
/// left out (its document is then asked for alone); an answer about another extraction is an error.
pub(super) fn parse_results(body: &[u8], ext: &BatchId) -> Result<Vec<(ItemId, Bytes)>, String> {
    let wire: WireResults<'_> =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if wire.extraction.extraction_id != ext.as_str() {
        return Err(format!(
            "asked for extraction {ext}, got {:?}",
            wire.extraction.extraction_id
        ));
    }
    let mut found: HashMap<String, Option<Bytes>> = HashMap::new();
    for raw in wire.extraction.documents {
        let Ok(d) = serde_json::from_str::<WireEntry<'_>>(raw.get()) else {
            continue;
        };
        let data = d
            .extracted_data
            .filter(|_| d.status == "completed")
            .filter(|_| d.extraction_id.as_deref().is_none_or(|e| e == ext.as_str()))
            .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes()));
        match found.entry(d.document_id) {
            // Two entries for one id: neither can be trusted to be the document.
            Entry::Occupied(mut o) => *o.get_mut() = None,
            Entry::Vacant(v) => {
                v.insert(data);
            }
        }
    }
    Ok(found
        .into_iter()
        .filter_map(|(id, data)| Some((ItemId::parse(&id).ok()?, data?)))
        .collect())
}

/// Each extraction's bulk answer, fetched at most once per [`CACHE_TTL`] (concurrent callers
/// share the one request) and handed out one document at a time.
pub(super) struct BulkCache {
    state: Arc<Mutex<State>>,
    cap: usize,
    ttl: Duration,
}

#[derive(Default)]
struct State {
    batches: HashMap<BatchId, Cached>,
    /// Bytes of every `Cached::docs`, against the cap.
    bytes: usize,
    /// Tells a fill of an expired entry from one of its successor.
    generation: u64,
}

struct Cached {
    generation: u64,
    born: Instant,
    filled: Arc<OnceCell<()>>,
    docs: HashMap<ItemId, Bytes>,
}

impl Default for BulkCache {
    fn default() -> Self {
        Self::new(MAX_CACHED_BYTES, CACHE_TTL)
    }
}

impl BulkCache {
    pub(super) fn new(cap: usize, ttl: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            cap,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `item`'s bytes from `batch`'s bulk answer, calling `fill` for that answer if no live one
    /// is held or being fetched. None: ask for the item alone (not in the answer, over the cap,
    /// already handed out, or the fetch failed, which `fill` reports as an empty list).
    pub(super) async fn take<F, Fut>(
        &self,
        batch: &BatchId,
        item: &ItemId,
        fill: F,
    ) -> Option<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Vec<(ItemId, Bytes)>>,
    {
        let (generation, filled) = self.entry(batch);
        filled
            .get_or_init(|| async {
                let docs = fill().await;
                self.store(batch, generation, docs);
            })
            .await;
        let mut s = self.lock();
        let cached = s.batches.get_mut(batch)?;
        if cached.generation != generation {
            return None;
        }
        let data = cached.docs.remove(item)?;
        s.bytes -= data.len();
        Some(data)
    }

    /// The live entry of `batch`, created if need be; expired ones are dropped first.
    fn entry(&self, batch: &BatchId) -> (u64, Arc<OnceCell<()>>) {
        let now = Instant::now();
        let mut guard = self.lock();
        let s = &mut *guard;
        let ttl = self.ttl;
        let mut freed = 0;
        s.batches.retain(|_, c| {
            let live = now.duration_since(c.born) < ttl;
            if !live {
                freed += c.docs.values().map(Bytes::len).sum::<usize>();
            }
            live
        });
        s.bytes = s.bytes.saturating_sub(freed);
        if !s.batches.contains_key(batch) && s.batches.len() >= MAX_EXTRACTIONS {
            let oldest = s.batches.iter().min_by_key(|(_, c)| c.born);
            if let Some(old) = oldest.map(|(id, _)| id.clone())
                && let Some(c) = s.batches.remove(&old)
            {
                s.bytes -= c.docs.values().map(Bytes::len).sum::<usize>();
            }
        }
        s.generation += 1;
        let generation = s.generation;
        let c = s.batches.entry(batch.clone()).or_insert_with(|| Cached {
            generation,
            born: now,
            filled: Arc::new(OnceCell::new()),
            docs: HashMap::new(),
        });
        (c.generation, c.filled.clone())
    }

    /// Keeps what fits under the cap (the rest is fetched one by one) until the entry expires.
    fn store(&self, batch: &BatchId, generation: u64, docs: Vec<(ItemId, Bytes)>) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(cached) = s
            .batches
            .get_mut(batch)
            .filter(|c| c.generation == generation)
        else {
            return;
        };
        for (id, data) in docs {
            if s.bytes + data.len() > self.cap {
                continue;
            }
            s.bytes += data.len();
            if let Some(old) = cached.docs.insert(id, data) {
                s.bytes -= old.len();
            }
        }
        if cached.docs.is_empty() {
            return;
        }
        // Documents nobody asks for (mirrored before, not due) would otherwise stay until the
        // next fetch, which in a daemon may be hours away.
        let at = cached.born + self.ttl;
        let (state, batch) = (Arc::downgrade(&self.state), batch.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let Some(state) = state.upgrade() else {
                return;
            };
            let mut guard = lock(&state);
            let s = &mut *guard;
            if let Some(c) = s
                .batches
                .get_mut(&batch)
                .filter(|c| c.generation == generation)
            {
                let freed: usize = c.docs.drain().map(|(_, d)| d.len()).sum();
                s.bytes = s.bytes.saturating_sub(freed);
            }
        });
    }

    #[cfg(test)]
    fn cached_bytes(&self) -> usize {
        self.lock().bytes
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "bulk_tests.rs"]
mod tests;
