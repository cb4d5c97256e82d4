//! `batchmirror verify`: re-hashes every mirrored result against the ledger's size and sha256, and
//! reports missing and corrupt results, files the ledger does not account for, and stray `.part`
//! files; with `--repair`, re-queues what the provider still retains and marks the rest lost.
//!
//! How it walks: provider by provider, batch by batch (the ledger paged by key), it lists the
//! batch's directory *first*, then reads the batch's rows: a file published meanwhile by a running
//! daemon then belongs to a row already `downloading` or `mirrored`, never to one read as
//! `ready`. Every mirrored row is hashed by opening its recorded path (so a result published after
//! the listing is still checked), on a few blocking threads at a time. What the listing holds
//! beyond those results is classified by name: `<item>@<suffix>` is a sidecar of `<item>.json`,
//! accepted when that item is mirrored, neither hashed (the ledger records no digest for
//! sidecars) nor required, and skipped as in flight when the item is ready or downloading (the
//! next fetch rewrites it); `@batch.json` is reserved; `.part` is a stray unless a writer holds
//! the root's lock; anything else is unknown. Then the provider directory's entries that no
//! ledger batch claims, and the root's entries that are neither providers, the root lock, the
//! quarantine nor a drop-folder directory, are walked (iteratively): every file in them is
//! unknown.
//!
//! Locks: a plain verify reads the ledger read-only and takes no lock, so it runs beside a daemon
//! (like `status`). `--repair` writes the ledger and the root, so it takes the writer's locks,
//! the ledger's and the root's, and refuses to run beside a daemon.

mod report;
mod walk;

pub use report::{Counts, Finding, FindingKind, Repaired, VerifyReport};

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use tokio::task::JoinSet;
use walk::{drop_folder_dirs, progress_bar};

use crate::config::Settings;
use crate::error::{ConfigError, Error, LedgerError, StorageError};
use crate::ledger::{Ledger, VerifyRow};
use crate::model::ItemState;
use crate::storage::{
    self, BATCH_META, EntryKind, Hashed, LocalMirror, MirrorRead, PART_SUFFIX, SIDECAR_SEP, Storage,
};

/// Batches read from the ledger per page.
const BATCH_PAGE: usize = 256;

/// What `verify` is asked to do.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only this configured provider.
    pub provider: Option<String>,
    /// Re-queue missing and corrupt items (or mark them lost), remove stray `.part` files.
    pub repair: bool,
    /// The clock deadlines are compared with.
    pub now: DateTime<Utc>,
    /// Draw a progress bar on stderr when it is a terminal.
    pub progress: bool,
}

impl VerifyOptions {
    pub fn new(provider: Option<String>, repair: bool) -> Self {
        Self {
            provider,
            repair,
            now: Utc::now(),
            progress: false,
        }
    }
}

/// One mirrored result to hash, and what its check needs afterwards.
struct Job {
    provider: String,
    batch: String,
    row: VerifyRow,
    rel: String,
    /// Its sidecars seen in the listing (moved aside with it if it ends lost).
    sidecars: Vec<String>,
}

type Hashing = JoinSet<(Job, Result<Option<Hashed>, StorageError>)>;

/// Verifies the mirror named by `settings` (see the module doc).
pub async fn verify(settings: &Settings, opts: VerifyOptions) -> Result<VerifyReport, Error> {
    let started = Instant::now();
    let configured: Vec<String> = settings
        .providers
        .iter()
        .map(|p| p.name.as_str().to_owned())
        .collect();
    if let Some(p) = opts.provider.as_ref().filter(|p| !configured.contains(p)) {
        return Err(ConfigError::invalid(
            "--provider",
            format!(
                "no provider {p:?} is configured: use one of {}",
                configured.join(", ")
            ),
        )
        .into());
    }
    let root = settings.storage_root.clone();
    let path = settings.ledger_path.clone();
    let repair = opts.repair;
    let ledger = tokio::task::spawn_blocking(move || {
        if repair {
            Ledger::open(&path)
        } else {
            Ledger::open_read_only(&path)
        }
    })
    .await
    .map_err(|e| LedgerError::Task(e.to_string()))??;
    // Held to the end: no daemon may start writing under the root while the repair does.
    let _writer = if repair {
        Some(Storage::new(&root)?.lock_root()?)
    } else {
        None
    };
    let writer_running = !repair && storage::root_in_use(&root)?;
    let mut known = configured.clone();
    known.extend(ledger.verify_providers().await?);
    known.sort();
    known.dedup();
    let providers = match &opts.provider {
        Some(p) => vec![p.clone()],
        None => known.clone(),
    };
    let total = ledger.count_mirrored(&providers).await?;
    let mut v = Verifier {
        ledger,
        mirror: Arc::new(LocalMirror::new(&root)),
        report: VerifyReport {
            root: root.display().to_string(),
            ledger: settings.ledger_path.display().to_string(),
            provider: opts.provider.clone(),
            repair,
            repaired: repair.then(Repaired::default),
            writer_running,
            ..VerifyReport::default()
        },
        bar: (opts.progress && std::io::stderr().is_terminal()).then(|| progress_bar(total)),
        hashing: JoinSet::new(),
        threads: std::thread::available_parallelism().map_or(4, |n| n.get().clamp(2, 8)),
        excluded: drop_folder_dirs(settings),
        opts,
    };
    for p in &providers {
        v.provider(p).await?;
    }
    while !v.hashing.is_empty() {
        v.next_hashed().await?;
    }
    if v.opts.provider.is_none() {
        v.root_level(&known).await?;
    }
    if let Some(bar) = &v.bar {
        bar.finish_and_clear();
        crate::telemetry::print_through(None);
    }
    v.report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(v.report)
}

struct Verifier {
    ledger: Ledger,
    mirror: Arc<dyn MirrorRead>,
    report: VerifyReport,
    bar: Option<ProgressBar>,
    hashing: Hashing,
    threads: usize,
    /// Drop-folder directories under the root, relative to it: not the mirror's.
    excluded: HashSet<String>,
    opts: VerifyOptions,
}

impl Verifier {
    /// Runs a blocking mirror call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn MirrorRead) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, Error> {
        let mirror = self.mirror.clone();
        tokio::task::spawn_blocking(move || f(mirror.as_ref()))
            .await
            .map_err(|source| Error::Task {
                task: "verify",
                source,
            })?
            .map_err(Error::from)
    }

    async fn provider(&mut self, provider: &str) -> Result<(), Error> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .ledger
                .verify_batches(provider, after.as_deref(), BATCH_PAGE)
                .await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for batch in page {
                let dir = storage::safe_component(&batch);
                self.batch(provider, &batch, &dir).await?;
                seen.insert(dir);
            }
            after = Some(last);
        }
        // What no ledger batch claims in the provider's directory.
        let listed = {
            let rel = provider.to_owned();
            self.blocking(move |m| m.list(&rel)).await?
        };
        for e in listed.into_iter().flatten() {
            if !seen.contains(&e.name) {
                self.unknown_tree(Some(provider), format!("{provider}/{}", e.name), e.kind)
                    .await?;
            }
        }
        Ok(())
    }

    async fn batch(&mut self, provider: &str, batch: &str, dir_name: &str) -> Result<(), Error> {
        let dir = format!("{provider}/{dir_name}");
        // The listing before the rows (see the module doc).
        let listed = {
            let rel = dir.clone();
            self.blocking(move |m| m.list(&rel)).await?
        };
        let rows = self.ledger.verify_items(provider, batch).await?;
        // File name in this directory → index of its mirrored row.
        let mut mirrored: HashMap<String, usize> = HashMap::new();
        // Result names of items a pass may still (re)write: in flight, or waiting to be.
        let mut pending: HashSet<String> = HashSet::new();
        for (i, row) in rows.iter().enumerate() {
            match row.state {
                ItemState::Mirrored => {
                    let in_dir = row
                        .path
                        .as_deref()
                        .and_then(|p| p.strip_prefix(&dir)?.strip_prefix('/'))
                        .filter(|name| !name.contains('/'));
                    if let Some(name) = in_dir {
                        mirrored.insert(name.to_owned(), i);
                    }
                }
                ItemState::Downloading | ItemState::Ready => {
                    pending.insert(storage::result_file_name(&row.item));
                }
                _ => {}
            }
        }
        let mut sidecars: HashMap<usize, Vec<String>> = HashMap::new();
        for e in listed.into_iter().flatten() {
            let rel = format!("{dir}/{}", e.name);
            if e.kind == EntryKind::Dir {
                self.unknown_tree(Some(provider), rel, e.kind).await?;
                continue;
            }
            if e.kind == EntryKind::File && mirrored.contains_key(&e.name) {
                continue; // hashed below, through its row
            }
            if e.kind == EntryKind::File && e.name.ends_with(PART_SUFFIX) {
                self.part(Some(provider), rel).await?;
                continue;
            }
            let owner = e
                .name
                .split_once(SIDECAR_SEP)
                .map(|(item, _)| format!("{item}.json"));
            match owner {
                _ if e.kind != EntryKind::File => {}
                _ if e.name == BATCH_META => continue,
                Some(result) if mirrored.contains_key(&result) => {
                    sidecars.entry(mirrored[&result]).or_default().push(rel);
                    continue;
                }
                Some(result) if pending.contains(&result) => {
                    self.report.in_flight += 1;
                    continue;
                }
                None if self.report.writer_running && pending.contains(&e.name) => {
                    self.report.in_flight += 1;
                    continue;
                }
                _ => {}
            }
            self.unknown(Some(provider), rel).await?;
        }
        for (i, row) in rows.into_iter().enumerate() {
            if row.state != ItemState::Mirrored {
                continue;
            }
            let rel = row
                .path
                .clone()
                .unwrap_or_else(|| format!("{dir}/{}", storage::result_file_name(&row.item)));
            let job = Job {
                provider: provider.to_owned(),
                batch: batch.to_owned(),
                sidecars: sidecars.remove(&i).unwrap_or_default(),
                row,
                rel,
            };
            self.hash(job).await?;
        }
        Ok(())
    }

    /// Starts hashing `job`, first waiting for one in flight when all threads are busy.
    async fn hash(&mut self, job: Job) -> Result<(), Error> {
        while self.hashing.len() >= self.threads {
            self.next_hashed().await?;
        }
        let mirror = self.mirror.clone();
        self.hashing.spawn_blocking(move || {
            let hashed = mirror.hash(&job.rel);
            (job, hashed)
        });
        Ok(())
    }

    /// Takes one finished hash and checks it against its row.
    async fn next_hashed(&mut self) -> Result<(), Error> {
        let Some(joined) = self.hashing.join_next().await else {
            return Ok(());
        };
        let (job, hashed) = joined.map_err(|source| Error::Task {
            task: "verify hashing",
            source,
        })?;
        self.report.files_checked += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        let row = &job.row;
        let mut finding = Finding {
            kind: FindingKind::Missing,
            provider: Some(job.provider.clone()),
            batch: Some(job.batch.clone()),
            item: Some(row.item.clone()),
            path: job.rel.clone(),
            expected_bytes: row.bytes,
            expected_sha256: row.sha256.clone(),
            deadline: row.deadline,
            ..Finding::path(FindingKind::Missing, None, String::new())
        };
        match hashed {
            Ok(None) => {}
            Ok(Some(h)) => {
                self.report.bytes_checked += h.bytes;
                let size_ok = row.bytes.is_none_or(|b| b == h.bytes);
                let sha_ok = row.sha256.as_deref().is_none_or(|s| s == h.sha256);
                if size_ok && sha_ok {
                    return Ok(());
                }
                finding.kind = FindingKind::Corrupt;
                finding.actual_bytes = Some(h.bytes);
                finding.actual_sha256 = Some(h.sha256);
            }
            Err(e) => {
                finding.kind = FindingKind::Corrupt;
                finding.error = Some(e.to_string());
            }
        }
        if self.opts.repair {
            finding.repair = Some(match self.repair_item(&job, finding.kind).await {
                Ok(done) => done.to_owned(),
                Err(e) => {
                    self.repaired().failed += 1;
                    format!("failed: {e}")
                }
            });
        }
        self.report.add(finding);
        Ok(())
    }

    fn repaired(&mut self) -> &mut Repaired {
        self.report.repaired.get_or_insert_with(Repaired::default)
    }

    /// Moves a corrupt file aside, then re-queues the item while the provider retains it, else
    /// marks it lost (its sidecars moved aside too: a lost item has no file).
    async fn repair_item(&mut self, job: &Job, kind: FindingKind) -> Result<&'static str, Error> {
        let (p, b, i) = (&job.provider, &job.batch, &job.row.item);
        let what = if kind == FindingKind::Missing {
            "missing"
        } else {
            "corrupt"
        };
        if kind == FindingKind::Corrupt {
            // Before the ledger changes: a re-queued row with its old file in place would be
            // adopted as mirrored by crash recovery.
            let rel = job.rel.clone();
            self.blocking(move |m| m.quarantine(&rel)).await?;
            self.repaired().quarantined += 1;
        }
        let retained = job.row.deadline.is_none_or(|d| d > self.opts.now);
        if retained {
            let note = format!("verify: result {what}; re-queued for a fresh fetch");
            if self.ledger.requeue_mirrored(p, b, i, &note).await? {
                tracing::warn!(provider = %p, batch = %b, item = %i,
                    "verify: result {what}; re-queued, the next pass fetches it again");
                self.repaired().requeued += 1;
                return Ok("requeued");
            }
            return Ok("left alone: no longer mirrored in the ledger");
        }
        for rel in job.sidecars.clone() {
            self.blocking(move |m| m.quarantine(&rel)).await?;
            self.repaired().quarantined += 1;
        }
        let note = format!("verify: result {what} after the provider's deadline; lost");
        if self.ledger.mark_lost_mirrored(p, b, i, &note).await? {
            tracing::error!(provider = %p, batch = %b, item = %i,
                "verify: result {what} and past the provider's deadline: LOST");
            self.repaired().lost += 1;
            return Ok("lost");
        }
        Ok("left alone: no longer mirrored in the ledger")
    }
}
