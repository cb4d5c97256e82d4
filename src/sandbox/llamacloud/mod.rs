//! The LlamaCloud sandbox: a local server of the v1 beta batch-processing API and the legacy
//! parse-result routes, built from `providers.md` §2 and seed 001, never from the client.
//!
//! This file owns the public surface (spec, faults, stats, request log, start and stop), the
//! timeline of jobs and items on the simulated clock, and the generated mix. The routes and wire
//! shapes live in [`routes`], the streamed result bodies in [`body`]. Nothing from the client side
//! of the crate is used here.

mod body;
mod routes;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::data::SplitMix;
use super::{Clock, LoggedRequest, Served, bind};

/// The API key of [`LlamaSpec::generated`].
pub const DEFAULT_API_KEY: &str = "llx-sandbox-local";
/// The project every job of the sandbox belongs to (the `project_id` of BatchJob).
pub const PROJECT_ID: &str = "5d3b0e9c-8f0a-4c47-9d52-3f1a0c7b2e61";
/// Simulated seconds an item spends `processing` before it finishes.
const RUN_SECS: f64 = 2.0;
const HOUR: u64 = 3600;

/// Everything the sandbox serves, fixed at start.
#[derive(Debug, Clone)]
pub struct LlamaSpec {
    /// The only Bearer token the API accepts.
    pub api_key: String,
    /// Seeds the result bodies.
    pub seed: u64,
    /// The batch jobs; ids must be unique, and so must item ids and parse job ids.
    pub jobs: Vec<JobSpec>,
    /// Simulated seconds per real second (1.0 = real time).
    pub time_scale: f64,
    /// How long parse results stay readable after the item completed (NF; the parse cache is 48 h
    /// per a secondary source). After it, the result routes answer 404.
    pub retention: Duration,
    /// Delay before the first byte of each result body.
    pub result_delay: Duration,
}

/// One batch job (always a parse job).
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The `bjb-…` id.
    pub id: String,
    /// How long ago (simulated) the job was created, relative to the sandbox start.
    pub created_ago: Duration,
    pub items: Vec<ItemSpec>,
}

/// One item (a directory file) of a job.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    /// The item id (`item_id`).
    pub id: String,
    /// The file name (`item_name`).
    pub name: String,
    /// The parse job id behind the item (`JobItem.job_id`); distinct from every item id.
    pub parse_job_id: String,
    /// Simulated seconds from start until the item finishes; negative = finished that long ago.
    pub finishes_at: f64,
    pub outcome: Outcome,
    /// Approximate size of the JSON result (exact size: [`LlamaSandbox::expected`]).
    pub result_bytes: usize,
}

/// How an item ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    /// `skipped` with `skip_reason: already_processed`; it has no parse job.
    Skipped,
}

/// A failure injected with [`LlamaSandbox::push_fault`].
#[derive(Debug, Clone)]
pub enum Fault {
    /// The next request whose raw path starts with `path_prefix` answers `status` with
    /// `{"detail": …}` and, when given, `Retry-After` verbatim. Consumed once, FIFO.
    Status {
        path_prefix: String,
        status: u16,
        retry_after: Option<String>,
    },
    /// From now on the job's `status` field is this raw string in every response (API drift: a
    /// status the published enum does not have). Never consumed.
    JobStatus { job: String, status: String },
}

/// Counters; a route counter counts every request to it, whatever the answer.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// `GET /api/v1/beta/batch-processing`.
    pub list_requests: u64,
    /// `GET /api/v1/beta/batch-processing/{job_id}`.
    pub detail_requests: u64,
    /// `GET /api/v1/beta/batch-processing/{job_id}/items`.
    pub items_requests: u64,
    /// `GET …/items/{item_id}/processing-results`.
    pub processing_results_requests: u64,
    /// `GET /api/v1/parsing/job/{id}/result/json` per (batch job id, item id); unknown parse ids
    /// are counted under ("", parse id).
    pub result_requests: HashMap<(String, String), u64>,
    /// `…/result/markdown` and `…/result/text` requests.
    pub other_format_requests: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
}

/// A running LlamaCloud sandbox. Dropping it stops the listener without waiting.
pub struct LlamaSandbox {
    shared: Arc<Shared>,
    server: Served,
}

impl LlamaSandbox {
    /// Binds the API on `listen` (port 0 = any free port).
    pub async fn start(spec: LlamaSpec, listen: SocketAddr) -> std::io::Result<LlamaSandbox> {
        let shared = Arc::new(Shared::new(spec));
        let server = bind(listen).await?.serve(routes::router(shared.clone()));
        Ok(LlamaSandbox { shared, server })
    }

    /// `http://HOST:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.server.url().to_owned()
    }

    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// sha256 (lowercase hex) and length of the item's JSON result; None if it has none.
    pub fn expected(&self, job: &str, item: &str) -> Option<(String, u64)> {
        let (j, it) = self.shared.item(job, item)?;
        (it.spec.outcome == Outcome::Completed)
            .then(|| self.shared.doc(j, it, body::Format::Json).digest())
    }

    /// Every request received, in order of arrival.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// Stops the listener, letting in-flight responses finish for a short grace period.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

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

fn uuid_like(rng: &mut SplitMix) -> String {
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
}

impl ItemStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Processing)
    }
}

pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) created_us: i64,
    pub(crate) items: Vec<Item>,
}

pub(crate) struct Item {
    pub(crate) spec: ItemSpec,
    pub(crate) running_us: i64,
    pub(crate) done_us: i64,
}

impl Item {
    pub(crate) fn status(&self, now_us: i64) -> ItemStatus {
        if now_us >= self.done_us {
            match self.spec.outcome {
                Outcome::Completed => ItemStatus::Completed,
                Outcome::Failed => ItemStatus::Failed,
                Outcome::Skipped => ItemStatus::Skipped,
            }
        } else if now_us >= self.running_us && self.spec.outcome != Outcome::Skipped {
            ItemStatus::Processing
        } else {
            ItemStatus::Pending
        }
    }
}

pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) seed: u64,
    pub(crate) retention_us: i64,
    pub(crate) result_delay: Duration,
    pub(crate) clock: Clock,
    /// Newest first, then by id: the listing order.
    pub(crate) jobs: Vec<Job>,
    /// Parse job id → (job index, item index).
    pub(crate) parse_jobs: HashMap<String, (usize, usize)>,
    /// Item id → (job index, item index).
    pub(crate) items: HashMap<String, (usize, usize)>,
    mutable: Mutex<Mutable>,
}

#[derive(Default)]
pub(crate) struct Mutable {
    pub(crate) stats: Stats,
    pub(crate) faults: Vec<Fault>,
    pub(crate) log: Vec<LoggedRequest>,
}

impl Shared {
    fn new(spec: LlamaSpec) -> Shared {
        let clock = Clock::new(spec.time_scale);
        let mut jobs: Vec<Job> = spec
            .jobs
            .into_iter()
            .map(|j| {
                let created_us = clock.at_us(-j.created_ago.as_secs_f64());
                let items = j
                    .items
                    .into_iter()
                    .map(|s| Item {
                        running_us: clock.at_us(s.finishes_at - RUN_SECS).max(created_us),
                        done_us: clock.at_us(s.finishes_at).max(created_us),
                        spec: s,
                    })
                    .collect();
                Job {
                    id: j.id,
                    created_us,
                    items,
                }
            })
            .collect();
        jobs.sort_by(|a, b| b.created_us.cmp(&a.created_us).then(a.id.cmp(&b.id)));
        let mut parse_jobs = HashMap::new();
        let mut items = HashMap::new();
        for (j, job) in jobs.iter().enumerate() {
            for (i, it) in job.items.iter().enumerate() {
                items.insert(it.spec.id.clone(), (j, i));
                if it.spec.outcome != Outcome::Skipped {
                    parse_jobs.insert(it.spec.parse_job_id.clone(), (j, i));
                }
            }
        }
        Shared {
            api_key: spec.api_key,
            seed: spec.seed,
            retention_us: i64::try_from(spec.retention.as_micros()).unwrap_or(i64::MAX / 4),
            result_delay: spec.result_delay,
            clock,
            jobs,
            parse_jobs,
            items,
            mutable: Mutex::new(Mutable::default()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.mutable.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn item(&self, job: &str, item: &str) -> Option<(&Job, &Item)> {
        let j = self.job(job)?;
        Some((j, j.items.iter().find(|it| it.spec.id == item)?))
    }

    pub(crate) fn doc(&self, job: &Job, it: &Item, format: body::Format) -> body::Doc {
        body::Doc::new(
            self.seed,
            &job.id,
            &it.spec.id,
            it.spec.result_bytes,
            format,
        )
    }

    pub(crate) fn log_begin(&self, method: &str, path: &str) -> usize {
        let mut m = self.lock();
        m.log.push(LoggedRequest {
            at: Instant::now(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: 0,
        });
        m.log.len() - 1
    }

    pub(crate) fn log_end(&self, index: usize, status: u16) {
        if let Some(entry) = self.lock().log.get_mut(index) {
            entry.status = status;
        }
    }

    /// Removes the first one-shot status fault matching `path`.
    pub(crate) fn take_status_fault(&self, path: &str) -> Option<(u16, Option<String>)> {
        let mut m = self.lock();
        let index = m.faults.iter().position(
            |f| matches!(f, Fault::Status { path_prefix, .. } if path.starts_with(path_prefix.as_str())),
        )?;
        match m.faults.remove(index) {
            Fault::Status {
                status,
                retry_after,
                ..
            } => Some((status, retry_after)),
            Fault::JobStatus { .. } => None,
        }
    }

    /// The raw status a [`Fault::JobStatus`] imposes on `job`, if any (the latest wins).
    pub(crate) fn status_override(&self, job: &str) -> Option<String> {
        self.lock().faults.iter().rev().find_map(|f| match f {
            Fault::JobStatus { job: j, status } if j == job => Some(status.clone()),
            _ => None,
        })
    }
}
