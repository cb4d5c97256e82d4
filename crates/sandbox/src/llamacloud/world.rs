//! The LlamaCloud sandbox's world: batch jobs and their items on the simulated clock (which
//! status each has at an instant, cancellation included), the indexes the routes find them by,
//! jobs added at run time, and the generated mix of [`LlamaSpec::generated`].
//!
//! Nothing here does I/O; the routes read it through [`World`].

use std::collections::HashMap;
use std::time::Duration;

use super::super::Clock;
use super::super::clock::{Phase, Span};
use super::super::seeded::SplitMix;
use super::{DEFAULT_API_KEY, ItemSpec, JobSpec, LlamaSpec, Outcome};

/// Simulated seconds an item spends `processing` before it finishes.
const RUN_SECS: f64 = 2.0;
const HOUR: u64 = 3600;

impl LlamaSpec {
    /// `jobs` parse jobs of `items_per_job` items with ~`result_bytes`-byte JSON results,
    /// deterministic for `seed`. Mix: most jobs completed within the last day with a few items
    /// failed or skipped (~3% and ~2%, and always items 1 and 2 of the first such job when it has
    /// 4 or more); one job (when jobs >= 2) still running, its items completing over the
    /// next few seconds; one job (when jobs >= 3) completed longer than `retention` ago, so its
    /// results answer 404. Newest job first in listings.
    pub fn generated(jobs: usize, items_per_job: usize, result_bytes: usize, seed: u64) -> Self {
        let retention = Duration::from_secs(48 * HOUR);
        let mut rng = SplitMix::new(seed ^ 0x11a3_a5ee_d000_0001);
        let has_running = jobs >= 2;
        let has_expired = jobs >= 3;
        let mut out = Vec::with_capacity(jobs);
        for k in 0..jobs {
            let running = has_running && k + 1 == jobs;
            let expired = has_expired && k == 0;
            let created_ago = if running {
                Duration::from_secs(10)
            } else if expired {
                retention + Duration::from_secs(24 * HOUR)
            } else {
                Duration::from_secs(20 * HOUR - (k as u64 * 60).min(19 * HOUR))
            };
            let id = format!("bjb-{:016x}{:04x}", rng.next_u64(), k);
            let items = (0..items_per_job)
                .map(|i| {
                    let finishes_at = if running {
                        0.5 + 3.0 * rng.unit()
                    } else {
                        -(created_ago.as_secs_f64() - 60.0 - i as f64)
                    };
                    // The first regular job always has one failed and one skipped item.
                    let first_regular = k == usize::from(has_expired) && items_per_job >= 4;
                    let roll = rng.below(100);
                    let outcome = match roll {
                        _ if running => Outcome::Completed,
                        _ if first_regular && i == 1 => Outcome::Failed,
                        _ if first_regular && i == 2 => Outcome::Skipped,
                        0..=2 => Outcome::Failed,
                        3..=4 => Outcome::Skipped,
                        _ => Outcome::Completed,
                    };
                    ItemSpec {
                        id: uuid_like(&mut rng),
                        name: format!("document_{k:03}_{i:04}.pdf"),
                        parse_job_id: uuid_like(&mut rng),
                        finishes_at,
                        outcome,
                        result_bytes,
                    }
                })
                .collect();
            out.push(JobSpec {
                id,
                created_ago,
                items,
            });
        }
        LlamaSpec {
            api_key: DEFAULT_API_KEY.to_owned(),
            seed,
            jobs: out,
            time_scale: 1.0,
            retention,
            result_delay: Duration::ZERO,
        }
    }
}

pub(crate) fn uuid_like(rng: &mut SplitMix) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// An item's status at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl ItemStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Processing)
    }
}

pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) created_us: i64,
    /// The directory the job ran over; None for a job over explicit `item_ids`.
    pub(crate) directory_id: Option<String>,
    /// When `POST …/{job_id}/cancel` stopped it.
    pub(crate) cancelled_us: Option<i64>,
    pub(crate) items: Vec<Item>,
}

pub(crate) struct Item {
    pub(crate) spec: ItemSpec,
    pub(crate) running_us: i64,
    pub(crate) done_us: i64,
    /// Set only on items the cancel caught before they were terminal.
    pub(crate) cancelled_us: Option<i64>,
}

impl Item {
    /// An item whose parse job runs from `running_us` to `done_us`.
    pub(crate) fn new(spec: ItemSpec, running_us: i64, done_us: i64) -> Item {
        Item {
            spec,
            running_us,
            done_us,
            cancelled_us: None,
        }
    }

    fn span(&self) -> Span {
        Span::new(self.running_us, self.done_us, self.cancelled_us)
    }

    pub(crate) fn status(&self, now_us: i64) -> ItemStatus {
        let skipped = self.spec.outcome == Outcome::Skipped;
        match self.span().phase(now_us) {
            // A skipped item is never processed: it waits, then is skipped.
            Phase::Queued => ItemStatus::Pending,
            Phase::Running if skipped => ItemStatus::Pending,
            Phase::Running => ItemStatus::Processing,
            Phase::Cancelled => ItemStatus::Cancelled,
            Phase::Done => match self.spec.outcome {
                Outcome::Completed => ItemStatus::Completed,
                Outcome::Failed => ItemStatus::Failed,
                Outcome::Skipped => ItemStatus::Skipped,
            },
        }
    }

    /// Whether a parse job stands behind the item at `now_us` (its `JobItem.job_id`): once it
    /// started processing, unless it was skipped; a cancel keeps the job it had started.
    pub(crate) fn has_parse_job(&self, now_us: i64) -> bool {
        self.spec.outcome != Outcome::Skipped && self.span().started(now_us)
    }

    /// When it became terminal, if it is at `now_us`.
    pub(crate) fn finished_us(&self, now_us: i64) -> Option<i64> {
        self.span().finished_us(now_us)
    }

    /// The time of its latest transition at or before `now_us`.
    pub(crate) fn updated_us(&self, created_us: i64, now_us: i64) -> i64 {
        match self.status(now_us) {
            // A skipped item waits without being processed.
            ItemStatus::Pending => created_us,
            _ => self.span().updated_us(created_us, now_us),
        }
    }
}

impl Job {
    fn from_spec(spec: JobSpec, clock: &Clock) -> Job {
        let created_us = clock.at_us(-spec.created_ago.as_secs_f64());
        let items = spec
            .items
            .into_iter()
            .map(|s| {
                let running = clock.at_us(s.finishes_at - RUN_SECS).max(created_us);
                let done = clock.at_us(s.finishes_at).max(created_us);
                Item::new(s, running, done)
            })
            .collect();
        Job {
            directory_id: Some(format!("dir-{}", &spec.id[spec.id.len().min(4)..])),
            id: spec.id,
            created_us,
            cancelled_us: None,
            items,
        }
    }
}

/// The jobs, in listing order, and their indexes.
pub(crate) struct World {
    /// Newest first, then by id: the listing order.
    pub(crate) jobs: Vec<Job>,
    by_id: HashMap<String, usize>,
    /// Parse job id → (job index, item index).
    parse_jobs: HashMap<String, (usize, usize)>,
    /// Item id → every (job index, item index) that processed it: a directory file can be run
    /// by several jobs.
    items: HashMap<String, Vec<(usize, usize)>>,
}

impl World {
    pub(crate) fn new(specs: Vec<JobSpec>, clock: &Clock) -> World {
        let mut world = World {
            jobs: specs
                .into_iter()
                .map(|j| Job::from_spec(j, clock))
                .collect(),
            by_id: HashMap::new(),
            parse_jobs: HashMap::new(),
            items: HashMap::new(),
        };
        world.reindex();
        world
    }

    fn reindex(&mut self) {
        self.jobs
            .sort_by(|a, b| b.created_us.cmp(&a.created_us).then(a.id.cmp(&b.id)));
        self.by_id.clear();
        self.parse_jobs.clear();
        self.items.clear();
        for (j, job) in self.jobs.iter().enumerate() {
            self.by_id.insert(job.id.clone(), j);
            for (i, it) in job.items.iter().enumerate() {
                self.items
                    .entry(it.spec.id.clone())
                    .or_default()
                    .push((j, i));
                if it.spec.outcome != Outcome::Skipped {
                    self.parse_jobs.insert(it.spec.parse_job_id.clone(), (j, i));
                }
            }
        }
    }

    /// Adds a job created at run time; its ids must be new (see [`World::knows`]).
    pub(crate) fn insert(&mut self, job: Job) {
        self.jobs.push(job);
        self.reindex();
    }

    /// Whether `id` is taken by a job, an item's parse job or an item.
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
            || self.parse_jobs.contains_key(id)
            || self.items.contains_key(id)
    }

    pub(crate) fn job(&self, id: &str) -> Option<&Job> {
        self.by_id.get(id).map(|&j| &self.jobs[j])
    }

    pub(crate) fn job_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.by_id.get(id).map(|&j| &mut self.jobs[j])
    }

    pub(crate) fn item(&self, job: &str, item: &str) -> Option<(&Job, &Item)> {
        let j = self.job(job)?;
        Some((j, j.items.iter().find(|it| it.spec.id == item)?))
    }

    /// The job and item behind a parse job id.
    pub(crate) fn parse_job(&self, id: &str) -> Option<(&Job, &Item)> {
        let &(j, i) = self.parse_jobs.get(id)?;
        Some((&self.jobs[j], &self.jobs[j].items[i]))
    }

    /// Every run of the item `id`, newest job first.
    pub(crate) fn runs(&self, id: &str) -> impl Iterator<Item = (&Job, &Item)> {
        self.items
            .get(id)
            .into_iter()
            .flatten()
            .map(|&(j, i)| (&self.jobs[j], &self.jobs[j].items[i]))
    }

    /// The files of a directory (item id, item name), from the latest job that ran over it.
    pub(crate) fn directory(&self, id: &str) -> Option<Vec<(String, String)>> {
        let job = self
            .jobs
            .iter()
            .find(|j| j.directory_id.as_deref() == Some(id))?;
        Some(
            job.items
                .iter()
                .map(|it| (it.spec.id.clone(), it.spec.name.clone()))
                .collect(),
        )
    }

    /// The name a file was last processed under, if any job processed it.
    pub(crate) fn item_name(&self, id: &str) -> Option<&str> {
        self.runs(id).next().map(|(_, it)| it.spec.name.as_str())
    }
}
