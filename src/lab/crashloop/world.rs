//! The account the crash loop mirrors: a seeded sandbox spec of a few thousand finished items
//! (inline and redirected results, a few failed items, a few ids that are not safe file names),
//! and what each item must become on disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{BatchId, ItemId, ProviderName};
use crate::storage::Storage;
use batchmirror_sandbox::{BatchSpec, Delivery, ItemSpec, Outcome, Sandbox, SandboxSpec};

/// The provider name in the harness's config (and so the mirror's first directory).
pub(super) const PROVIDER: &str = "cl";
/// The key the sandbox accepts and the config sends.
pub(super) const API_KEY: &str = "crashloop-key";
const ITEMS_PER_BATCH: usize = 100;

/// One item of the account.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub batch: String,
    pub item: String,
    /// The final file, relative to the mirror root.
    pub rel: PathBuf,
    /// `Some((sha256, len))` of the served body; None for an item that failed at the provider.
    pub expected: Option<(String, u64)>,
}

/// Every item, indexed by ids and by final path.
pub(super) struct World {
    pub items: Vec<Item>,
    by_ids: HashMap<(String, String), usize>,
    by_rel: HashMap<PathBuf, usize>,
}

/// `items` items in batches of 100; sizes average `item_bytes`; about 1 in 40 fails at the provider.
/// One in five finishes at a random moment within `late` of the start, so the daemons keep
/// listing items that turn from pending to ready while they are being killed.
pub(super) fn spec(
    seed: u64,
    items: usize,
    item_bytes: usize,
    result_delay: Duration,
    late: Duration,
) -> SandboxSpec {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x00c4_a510_0f00_0001);
    let mut batches = Vec::new();
    for b in 0..items.div_ceil(ITEMS_PER_BATCH) {
        let n = ITEMS_PER_BATCH.min(items - b * ITEMS_PER_BATCH);
        let items = (0..n)
            .map(|i| ItemSpec {
                // A few ids need percent-encoding on disk, so the publish path under test is the
                // hostile-id one too.
                id: if i % 37 == 5 {
                    format!("doc {b}/{i} ü")
                } else {
                    format!("it-{b:03}-{i:03}")
                },
                finishes_at: if i % 5 == 4 {
                    rng.random::<f64>() * late.as_secs_f64()
                } else {
                    -600.0 - b as f64
                },
                outcome: if rng.random_ratio(1, 40) {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                },
                result_bytes: item_bytes / 2 + rng.random_range(0..=item_bytes),
                delivery: if rng.random_bool(0.5) {
                    Delivery::Inline
                } else {
                    Delivery::Redirect
                },
            })
            .collect();
        batches.push(BatchSpec {
            id: format!("cl-{b:04}"),
            created_ago: Duration::from_secs(7200 + b as u64 * 60),
            items,
        });
    }
    SandboxSpec {
        api_key: API_KEY.to_owned(),
        seed,
        batches,
        time_scale: 1.0,
        retention: Duration::from_secs(3 * 24 * 3600),
        presign_ttl: Duration::from_secs(300),
        result_delay,
    }
}

impl World {
    /// What `sandbox` (started from `spec`) serves for each item.
    pub(super) fn new(spec: &SandboxSpec, sandbox: &Sandbox) -> World {
        let provider = ProviderName::parse(PROVIDER).expect("a valid provider name");
        let mut items = Vec::new();
        for b in &spec.batches {
            for it in &b.items {
                let (Ok(batch), Ok(item)) = (BatchId::parse(&b.id), ItemId::parse(&it.id)) else {
                    unreachable!("generated ids are valid");
                };
                items.push(Item {
                    batch: b.id.clone(),
                    item: it.id.clone(),
                    rel: Storage::item_path(&provider, &batch, &item),
                    expected: sandbox.expected(&b.id, &it.id),
                });
            }
        }
        World::from_items(items)
    }

    pub(super) fn from_items(items: Vec<Item>) -> World {
        let by_ids = items
            .iter()
            .enumerate()
            .map(|(k, it)| ((it.batch.clone(), it.item.clone()), k))
            .collect();
        let by_rel = items
            .iter()
            .enumerate()
            .map(|(k, it)| (it.rel.clone(), k))
            .collect();
        World {
            items,
            by_ids,
            by_rel,
        }
    }

    pub(super) fn index(&self, batch: &str, item: &str) -> Option<usize> {
        self.by_ids
            .get(&(batch.to_owned(), item.to_owned()))
            .copied()
    }

    pub(super) fn by_rel(&self, rel: &std::path::Path) -> Option<usize> {
        self.by_rel.get(rel).copied()
    }

    /// Items with a result to mirror.
    pub(super) fn succeeded(&self) -> usize {
        self.items.iter().filter(|i| i.expected.is_some()).count()
    }

    /// Length of the item's result (0 for a failed item).
    pub(super) fn len(&self, k: usize) -> u64 {
        self.items[k].expected.as_ref().map_or(0, |e| e.1)
    }

    /// The longest result.
    pub(super) fn max_len(&self) -> u64 {
        (0..self.items.len())
            .map(|k| self.len(k))
            .max()
            .unwrap_or(0)
    }
}
