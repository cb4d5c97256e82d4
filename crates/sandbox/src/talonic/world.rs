//! The Talonic sandbox's world: batches, items, documents and extractions placed on the simulated
//! clock (which status each has at an instant), the generated mix of [`TalonicSpec::generated`],
//! UUID-shaped ids, and the extraction bodies (`{id, document_id, …, data: {…}}`, deterministic,
//! streamed in frames with an exact length).
//!
//! Nothing here does I/O; the routes read it through [`World`].

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use super::super::Clock;
use super::super::body::{Layout, digest_frames, stream_frames};
use super::super::clock::{Phase, Span};
use super::super::seeded::{DAY, Role, SplitMix, batch_role, hash_ids};
use super::{DEFAULT_API_KEY, ItemOutcome, TalonicBatch, TalonicItem, TalonicSpec};

/// Simulated seconds an item spends `processing` before it finishes.
const RUN_SECS: f64 = 2.0;

impl TalonicSpec {
    /// `batches` batches of `items_per_batch` items with ~`result_bytes`-byte extractions,
    /// deterministic for `seed`. Mix: most batches `completed` within the last day (~3 % of items
    /// `failed`); when batches >= 3 the oldest completed longer than `retention` ago (its documents
    /// and extractions answer 404); when batches >= 2 the newest is `submitted` and its items
    /// complete over the next few (simulated) seconds. Every id is UUID-shaped.
    pub fn generated(
        batches: usize,
        items_per_batch: usize,
        result_bytes: usize,
        seed: u64,
    ) -> Self {
        // Retention is not documented (providers.md §3.2): the sandbox picks 7 days.
        let retention = Duration::from_secs(7 * DAY);
        let mut rng = SplitMix::new(seed ^ 0x7a10_41c0_0000_0002);
        let mut out = Vec::with_capacity(batches);
        for k in 0..batches {
            let tag = format!("{seed}/{k}");
            // The running batch is Talonic's `submitted` one.
            let (created_ago, kind) = batch_role(&mut rng, k, batches, retention, 20.0 * 60.0);
            let items = (0..items_per_batch)
                .map(|j| {
                    let finishes_at = match kind {
                        Role::Running => 1.0 + 3.0 * j as f64 / items_per_batch.max(1) as f64,
                        _ => -(created_ago - 900.0 - rng.unit() * 1800.0),
                    };
                    let outcome = if kind == Role::Completed && rng.below(100) < 3 {
                        ItemOutcome::Failed
                    } else {
                        ItemOutcome::Completed
                    };
                    let spread = (result_bytes / 20) as u64;
                    let bytes = result_bytes - spread as usize + rng.below(2 * spread + 1) as usize;
                    TalonicItem {
                        id: uuid(&tag, &format!("item {j}")),
                        document_id: uuid(&tag, &format!("document {j}")),
                        filename: Some(format!("invoice_{:03}_{j:04}.pdf", k + 1)),
                        finishes_at,
                        outcome,
                        result_bytes: bytes,
                    }
                })
                .collect();
            out.push(TalonicBatch {
                id: uuid(&tag, "batch"),
                created_ago: Duration::from_secs_f64(created_ago),
                provider: if k % 3 == 2 { "bedrock" } else { "anthropic" }.to_owned(),
                items,
                status_override: None,
            });
        }
        TalonicSpec {
            api_key: DEFAULT_API_KEY.to_owned(),
            seed,
            batches: out,
            time_scale: 1.0,
            retention,
            result_delay: Duration::ZERO,
            daily_limit: None,
            quota_retry_after: false,
        }
    }
}

/// A UUID-shaped (version 4 layout) id, a pure function of its two parts.
pub fn uuid(a: &str, b: &str) -> String {
    let hi = hash_ids(0x7575_6964, a, b);
    let lo = hash_ids(0x7575_6965, a, b);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0x0fff,
        0x8000 | ((lo >> 48) & 0x3fff),
        lo & 0xffff_ffff_ffff
    )
}

/// An item's status at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl ItemStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

pub(crate) struct World {
    /// Listing order: newest `created_at` first, ties by id.
    pub(crate) batches: Vec<Batch>,
    index: HashMap<String, usize>,
    documents: HashMap<String, (usize, usize)>,
    extractions: HashMap<String, (usize, usize)>,
}

pub(crate) struct Batch {
    pub(crate) id: String,
    pub(crate) provider: String,
    pub(crate) created_us: i64,
    pub(crate) status_override: Option<String>,
    /// When `POST /v1/batches/:id/cancel` stopped it.
    pub(crate) cancelled_us: Option<i64>,
    pub(crate) items: Vec<Item>,
}

pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) document_id: String,
    pub(crate) extraction_id: String,
    pub(crate) filename: Option<String>,
    pub(crate) custom_id: String,
    pub(crate) running_us: i64,
    pub(crate) done_us: i64,
    pub(crate) outcome: ItemOutcome,
    pub(crate) result_bytes: usize,
    /// Set only on items a cancel caught unprocessed: they end `failed` then (items have no
    /// cancelled status).
    pub(crate) cancelled_us: Option<i64>,
}

impl World {
    pub(crate) fn new(specs: &[TalonicBatch], clock: &Clock) -> World {
        let mut batches: Vec<Batch> = specs.iter().map(|b| Batch::new(b, clock)).collect();
        batches.sort_by(|a, b| b.created_us.cmp(&a.created_us).then(a.id.cmp(&b.id)));
        let mut world = World {
            index: HashMap::new(),
            documents: HashMap::new(),
            extractions: HashMap::new(),
            batches,
        };
        for (bi, b) in world.batches.iter().enumerate() {
            world.index.insert(b.id.clone(), bi);
            for (ii, it) in b.items.iter().enumerate() {
                world.documents.insert(it.document_id.clone(), (bi, ii));
                world.extractions.insert(it.extraction_id.clone(), (bi, ii));
            }
        }
        world
    }

    pub(crate) fn batch(&self, id: &str) -> Option<&Batch> {
        self.index.get(id).map(|&i| &self.batches[i])
    }

    pub(crate) fn batch_mut(&mut self, id: &str) -> Option<&mut Batch> {
        self.index.get(id).map(|&i| &mut self.batches[i])
    }

    pub(crate) fn item(&self, batch: &str, item: &str) -> Option<(&Batch, &Item)> {
        let b = self.batch(batch)?;
        Some((b, b.items.iter().find(|it| it.id == item)?))
    }

    pub(crate) fn document(&self, id: &str) -> Option<(&Batch, &Item)> {
        let &(b, i) = self.documents.get(id)?;
        Some((&self.batches[b], &self.batches[b].items[i]))
    }

    pub(crate) fn extraction(&self, id: &str) -> Option<(&Batch, &Item)> {
        let &(b, i) = self.extractions.get(id)?;
        Some((&self.batches[b], &self.batches[b].items[i]))
    }
}

impl Batch {
    fn new(spec: &TalonicBatch, clock: &Clock) -> Batch {
        let created_us = clock.at_us(-spec.created_ago.as_secs_f64());
        let msgbatch = format!("msgbatch_{:012x}", hash_ids(3, &spec.id, "") >> 16);
        let items = spec
            .items
            .iter()
            .enumerate()
            .map(|(j, it)| Item {
                id: it.id.clone(),
                document_id: it.document_id.clone(),
                extraction_id: uuid(&spec.id, &format!("extraction {}", it.id)),
                filename: it.filename.clone(),
                custom_id: format!("{msgbatch}:{j}"),
                running_us: clock.at_us(it.finishes_at - RUN_SECS).max(created_us),
                done_us: clock.at_us(it.finishes_at).max(created_us),
                outcome: it.outcome,
                result_bytes: it.result_bytes,
                cancelled_us: None,
            })
            .collect();
        Batch {
            id: spec.id.clone(),
            provider: spec.provider.clone(),
            created_us,
            status_override: spec.status_override.clone(),
            cancelled_us: None,
            items,
        }
    }

    /// When the accumulated batch went to the provider: its first item started processing
    /// (never, for a batch cancelled while accumulating).
    pub(crate) fn submitted_us(&self) -> i64 {
        let first = self
            .items
            .iter()
            .map(|it| it.running_us)
            .min()
            .unwrap_or(self.created_us);
        match self.cancelled_us {
            Some(c) if c < first => i64::MAX,
            _ => first,
        }
    }

    /// `(status, completed_at)` at `now`: accumulating → submitted → completed | failed, or
    /// `cancelled` (never completed) from either of the first two.
    pub(crate) fn status(&self, now: i64) -> (String, Option<i64>) {
        let done = self.items.iter().all(|it| now >= it.finished_us());
        let last = self.items.iter().map(Item::finished_us).max();
        let completed_at =
            (done && self.cancelled_us.is_none()).then(|| last.unwrap_or(self.created_us));
        if let Some(s) = &self.status_override {
            return (s.clone(), completed_at);
        }
        if self.cancelled_us.is_some() {
            return ("cancelled".to_owned(), None);
        }
        let all_failed = !self.items.is_empty()
            && self
                .items
                .iter()
                .all(|it| it.outcome == ItemOutcome::Failed);
        let status = if done && all_failed {
            "failed"
        } else if done {
            "completed"
        } else if now < self.submitted_us() {
            "accumulating"
        } else {
            "submitted"
        };
        (status.to_owned(), completed_at)
    }

    /// The latest transition at or before `now`.
    pub(crate) fn updated_us(&self, now: i64) -> i64 {
        self.items
            .iter()
            .flat_map(|it| [it.running_us.min(it.finished_us()), it.finished_us()])
            .chain(self.cancelled_us)
            .filter(|t| *t <= now)
            .max()
            .unwrap_or(self.created_us)
            .max(self.created_us)
    }
}

impl Item {
    pub(crate) fn status(&self, now: i64) -> ItemStatus {
        let span = Span::new(self.running_us, self.done_us, self.cancelled_us);
        match span.phase(now) {
            Phase::Queued => ItemStatus::Pending,
            Phase::Running => ItemStatus::Processing,
            // Items have no cancelled status: a cancelled one failed.
            Phase::Cancelled => ItemStatus::Failed,
            Phase::Done => match self.outcome {
                ItemOutcome::Completed => ItemStatus::Completed,
                ItemOutcome::Failed => ItemStatus::Failed,
            },
        }
    }

    /// When it is (or will be) processed: a cancel ends it early.
    pub(crate) fn finished_us(&self) -> i64 {
        self.cancelled_us.unwrap_or(self.done_us)
    }

    /// Whether it ends with an extraction.
    pub(crate) fn will_complete(&self) -> bool {
        self.outcome == ItemOutcome::Completed && self.cancelled_us.is_none()
    }

    /// The extraction body: a fixed head and tail around the [`Layout`] data, so the length is
    /// known up front and the bytes are never materialised whole.
    pub(crate) fn extraction(&self, seed: u64, batch: &str) -> Extraction {
        let layout = Layout::new(seed, batch, &self.id, self.result_bytes);
        let confidence = 80 + hash_ids(seed, batch, &self.id) % 20;
        let head = format!(
            "{{\"id\":{},\"document_id\":{},\"status\":\"completed\",\"confidence\":0.{confidence},\
             \"schema_version\":1,\"data\":",
            serde_json::Value::from(self.extraction_id.as_str()),
            serde_json::Value::from(self.document_id.as_str()),
        );
        Extraction {
            head: Bytes::from(head),
            layout,
        }
    }
}

pub(crate) struct Extraction {
    head: Bytes,
    layout: Layout,
}

const TAIL: &[u8] = b"}";

impl Extraction {
    pub(crate) fn len(&self) -> u64 {
        self.head.len() as u64 + self.layout.len() + TAIL.len() as u64
    }

    /// sha256 (lowercase hex) and length, frame by frame.
    pub(crate) fn digest(&self) -> (String, u64) {
        digest_frames(self.frames())
    }

    fn frames(&self) -> impl Iterator<Item = Bytes> + Send + use<> {
        std::iter::once(self.head.clone())
            .chain(self.layout.frames())
            .chain(std::iter::once(Bytes::from_static(TAIL)))
    }

    /// The body as a stream; nothing is sent before `delay` has passed.
    pub(crate) fn stream(
        self,
        delay: Duration,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        stream_frames(self.frames(), delay)
    }
}
