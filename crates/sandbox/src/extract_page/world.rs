//! extract.page's world: the batch and item timeline on the simulated clock (what status an item
//! has at a given instant and when it last changed) and the deterministic generated mix of
//! [`SandboxSpec::generated`], drawn with the crate's seeded kit (`crate::seeded`).
//!
//! Nothing here does I/O; the routes read it through [`World`].

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::clock::{Phase, Span};
use crate::seeded::{DAY, Role, SplitMix, batch_role, hash_ids};

use super::{BatchSpec, Clock, DEFAULT_API_KEY, Delivery, ItemSpec, Outcome, SandboxSpec};

/// Simulated seconds an item spends `running` before it finishes.
const RUN_SECS: f64 = 2.0;

impl SandboxSpec {
    /// `batches` batches of `items_per_batch` items with ~`result_bytes`-byte results, deterministic
    /// for `seed`. Mix: most batches completed within the last day (items succeeded, ~3% failed,
    /// about half served inline 200 and half by 302 redirect), one batch (when batches >= 3) whose
    /// items completed more than `retention` ago (their results answer 410), and one batch (when
    /// batches >= 2) still running whose items succeed over the next few (simulated) seconds.
    /// Batch ids like `batch_000123`, item ids like `item_000123_0042`. Newest batch first in listings.
    pub fn generated(
        batches: usize,
        items_per_batch: usize,
        result_bytes: usize,
        seed: u64,
    ) -> Self {
        let retention = Duration::from_secs(3 * DAY);
        let mut rng = SplitMix::new(seed ^ 0x5eed_ba7c_0000_0001);

        // Batch numbers grow with creation time: batch_000001 is the oldest.
        let mut out = Vec::with_capacity(batches);
        for k in 0..batches {
            let number = k + 1;
            let (created_ago, kind) = batch_role(&mut rng, k, batches, retention, 30.0);
            let items = (0..items_per_batch)
                .map(|j| {
                    let mut item =
                        generated_item(&mut rng, number, j, items_per_batch, created_ago, kind);
                    item.result_bytes = rng.jitter(result_bytes);
                    item
                })
                .collect();
            out.push(BatchSpec {
                id: format!("batch_{number:06}"),
                created_ago: Duration::from_secs_f64(created_ago),
                items,
            });
        }
        SandboxSpec {
            api_key: DEFAULT_API_KEY.to_owned(),
            seed,
            batches: out,
            time_scale: 1.0,
            retention,
            presign_ttl: Duration::from_secs(300),
            result_delay: Duration::ZERO,
        }
    }
}

fn generated_item(
    rng: &mut SplitMix,
    batch: usize,
    j: usize,
    n: usize,
    created_ago: f64,
    kind: Role,
) -> ItemSpec {
    let (finishes_at, outcome) = match kind {
        // Finished between 1 and 30 minutes after creation.
        Role::Completed => {
            let after = 60.0 + rng.unit() * 1740.0;
            let outcome = if rng.below(100) < 3 {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
            (-(created_ago - after), outcome)
        }
        Role::Expired => (
            -(created_ago - 60.0 - rng.unit() * 600.0),
            Outcome::Succeeded,
        ),
        // One after another over the next ~5 simulated seconds.
        Role::Running => (1.0 + 4.0 * j as f64 / n.max(1) as f64, Outcome::Succeeded),
    };
    let delivery = if rng.below(2) == 0 {
        Delivery::Inline
    } else {
        Delivery::Redirect
    };
    ItemSpec {
        id: format!("item_{batch:06}_{j:04}"),
        finishes_at,
        outcome,
        result_bytes: 0,
        delivery,
    }
}

/// An item's status at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Caught by `POST /v1/batches/{id}/cancel` before it was terminal.
    Cancelled,
}

impl ItemStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Running => "running",
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        !matches!(self, ItemStatus::Pending | ItemStatus::Running)
    }
}

/// The spec, placed on the simulated clock and indexed.
pub(crate) struct World {
    /// In listing order: newest `created_at` first, ties by id.
    pub(crate) batches: Vec<Batch>,
    index: HashMap<String, usize>,
}

pub(crate) struct Batch {
    pub(crate) id: String,
    pub(crate) created_us: i64,
    /// In position order.
    pub(crate) items: Vec<Item>,
    index: HashMap<String, usize>,
    /// As the create request gave them (spec batches: `standard`, `{}`, null).
    pub(crate) engine: String,
    pub(crate) options: Map<String, Value>,
    pub(crate) metadata: Option<Value>,
    /// When `POST /v1/batches/{id}/cancel` stopped it.
    pub(crate) cancelled_us: Option<i64>,
}

pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) position: usize,
    pub(crate) file_id: String,
    /// pending → running at `running_us` → terminal at `done_us` (both clamped after creation).
    pub(crate) running_us: i64,
    pub(crate) done_us: i64,
    pub(crate) outcome: Outcome,
    pub(crate) delivery: Delivery,
    pub(crate) result_bytes: usize,
    /// Attempts once terminal (failures were retried before giving up).
    pub(crate) final_attempts: u32,
    /// `(code, message)` for failed items.
    pub(crate) error: Option<(&'static str, &'static str)>,
    /// The whole result body of an item created from an upload (None: generated by [`crate::body`]).
    pub(crate) body: Option<Bytes>,
    /// Pages of `body` (its `page_count`); 0 for generated results.
    pub(crate) body_pages: u64,
    /// Set only on items a cancel caught before they were terminal.
    pub(crate) cancelled_us: Option<i64>,
}

impl World {
    pub(crate) fn new(specs: &[BatchSpec], clock: &Clock) -> World {
        let mut batches: Vec<Batch> = specs.iter().map(|b| Batch::new(b, clock)).collect();
        batches.sort_by(|a, b| b.created_us.cmp(&a.created_us).then(a.id.cmp(&b.id)));
        let index = batches
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        World { batches, index }
    }

    /// Adds a batch created at run time, in listing order; false if the id is taken.
    pub(crate) fn insert(&mut self, batch: Batch) -> bool {
        if self.index.contains_key(&batch.id) {
            return false;
        }
        let at = self.batches.partition_point(|b| {
            b.created_us > batch.created_us || (b.created_us == batch.created_us && b.id < batch.id)
        });
        self.batches.insert(at, batch);
        self.index = self
            .batches
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        true
    }

    pub(crate) fn batch(&self, id: &str) -> Option<&Batch> {
        self.index.get(id).map(|&i| &self.batches[i])
    }

    pub(crate) fn batch_mut(&mut self, id: &str) -> Option<&mut Batch> {
        self.index.get(id).map(|&i| &mut self.batches[i])
    }

    pub(crate) fn item(&self, batch: &str, item: &str) -> Option<(&Batch, &Item)> {
        let b = self.batch(batch)?;
        let i = b.index.get(item)?;
        Some((b, &b.items[*i]))
    }
}

impl Batch {
    fn new(spec: &BatchSpec, clock: &Clock) -> Batch {
        let created_us = clock.at_us(-spec.created_ago.as_secs_f64());
        let items: Vec<Item> = spec
            .items
            .iter()
            .enumerate()
            .map(|(position, it)| {
                let done_us = clock.at_us(it.finishes_at).max(created_us);
                let running_us = clock.at_us(it.finishes_at - RUN_SECS).max(created_us);
                let h = hash_ids(0, &spec.id, &it.id);
                let (final_attempts, error) = match it.outcome {
                    Outcome::Succeeded => (1, None),
                    Outcome::Failed if h.is_multiple_of(4) => (
                        1,
                        Some((
                            "upload_missing",
                            "The input file expired before a worker fetched it.",
                        )),
                    ),
                    Outcome::Failed => (
                        2 + (h % 2) as u32,
                        Some(("extraction_failed", "The document could not be parsed.")),
                    ),
                };
                Item {
                    id: it.id.clone(),
                    position,
                    file_id: format!("file_{:016x}", hash_ids(1, &spec.id, &it.id)),
                    running_us,
                    done_us,
                    outcome: it.outcome,
                    delivery: it.delivery,
                    result_bytes: it.result_bytes,
                    final_attempts,
                    error,
                    body: None,
                    body_pages: 0,
                    cancelled_us: None,
                }
            })
            .collect();
        Batch::created(
            spec.id.clone(),
            created_us,
            items,
            "standard".to_owned(),
            Map::new(),
            None,
        )
    }

    /// A batch of the given items (already in position order).
    pub(crate) fn created(
        id: String,
        created_us: i64,
        items: Vec<Item>,
        engine: String,
        options: Map<String, Value>,
        metadata: Option<Value>,
    ) -> Batch {
        let index = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id.clone(), i))
            .collect();
        Batch {
            id,
            created_us,
            items,
            index,
            engine,
            options,
            metadata,
            cancelled_us: None,
        }
    }
}

impl Item {
    /// An item of a created batch: runs from `running_us`, succeeds at `done_us`, serves `body`.
    pub(crate) fn uploaded(
        id: String,
        position: usize,
        file_id: String,
        running_us: i64,
        done_us: i64,
        (body, body_pages): (Bytes, u64),
    ) -> Item {
        Item {
            id,
            position,
            file_id,
            running_us,
            done_us,
            outcome: Outcome::Succeeded,
            delivery: Delivery::Inline,
            result_bytes: body.len(),
            final_attempts: 1,
            error: None,
            body: Some(body),
            body_pages,
            cancelled_us: None,
        }
    }

    fn span(&self) -> Span {
        Span::new(self.running_us, self.done_us, self.cancelled_us)
    }

    pub(crate) fn status(&self, now_us: i64) -> ItemStatus {
        match self.span().phase(now_us) {
            Phase::Queued => ItemStatus::Pending,
            Phase::Running => ItemStatus::Running,
            Phase::Cancelled => ItemStatus::Cancelled,
            Phase::Done => match self.outcome {
                Outcome::Succeeded => ItemStatus::Succeeded,
                Outcome::Failed => ItemStatus::Failed,
            },
        }
    }

    /// The time of the latest transition at or before `now_us`, so it only moves forward.
    pub(crate) fn updated_us(&self, created_us: i64, now_us: i64) -> i64 {
        self.span().updated_us(created_us, now_us)
    }

    /// When it became terminal, if it is at `now_us`.
    pub(crate) fn finished_us(&self, now_us: i64) -> Option<i64> {
        self.span().finished_us(now_us)
    }

    /// Whether a worker had picked it up by `now_us` (a cancel can come before or after).
    pub(crate) fn started(&self, now_us: i64) -> bool {
        self.span().started(now_us)
    }

    /// Whether it ends with a result (a cancel may have stopped it first).
    pub(crate) fn will_succeed(&self) -> bool {
        self.outcome == Outcome::Succeeded && self.cancelled_us.is_none()
    }

    pub(crate) fn attempts(&self, now_us: i64) -> u32 {
        match self.status(now_us) {
            ItemStatus::Pending => 0,
            ItemStatus::Running => 1,
            ItemStatus::Cancelled => u32::from(self.started(now_us)),
            ItemStatus::Succeeded | ItemStatus::Failed => self.final_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::super::tests::*;
    use super::super::{DEFAULT_API_KEY, SandboxSpec};

    #[tokio::test]
    async fn generated_mix_is_deterministic_and_as_described() {
        let a = SandboxSpec::generated(6, 50, 2000, 11);
        assert_eq!(
            format!("{a:?}"),
            format!("{:?}", SandboxSpec::generated(6, 50, 2000, 11))
        );
        assert_eq!(a.batches[0].items[42].id, "item_000001_0042");
        assert_eq!(a.api_key, DEFAULT_API_KEY);
        let sb = start(SandboxSpec {
            api_key: KEY.to_owned(),
            ..a
        })
        .await;
        let url = format!("{}/v1/batches", sb.base_url());
        let (_, list) = get_json(&url).await;
        let data = list["data"].as_array().unwrap();
        let status = |i: usize| data[i]["status"].as_str().unwrap().to_owned();
        assert_eq!(data[0]["id"], "batch_000006");
        assert_eq!(status(0), "running");
        assert_eq!(data[5]["id"], "batch_000001");
        for b in &data[1..] {
            assert!(["completed", "partially_failed"].contains(&b["status"].as_str().unwrap()));
            assert!(b["completed_at"].is_string());
        }
        let (_, expired) = get_json(&result_url(&sb, "batch_000001", "item_000001_0000")).await;
        assert_eq!(expired["detail"], "Result expired");
        let mut deliveries = std::collections::HashSet::new();
        for j in 0..10 {
            let id = format!("item_000002_{j:04}");
            let resp = get(&result_url(&sb, "batch_000002", &id)).await;
            deliveries.insert(resp.status());
        }
        assert!(deliveries.contains(&StatusCode::FOUND) && deliveries.contains(&StatusCode::OK));
        sb.stop().await;
    }
}
