//! The drop folder: files dropped into the inbox are submitted as extraction jobs, exactly once,
//! and their results come back into the outbox.
//!
//! The flow of one file:
//! 1. noticed (event or scan) and settled ([`watch::Settler`]); refused and left in place if it
//!    is not a regular file with one link;
//! 2. read whole and hashed ([`files::take`]); the same content already submitted links to that
//!    job (unless `dedupe = false`);
//! 3. an `uploads` row is committed with the idempotency key *before* the request, so a crash
//!    anywhere after it is resumed with the same key and never creates a second job;
//!    An empty file, or one over `max_file_bytes`, is refused for good here, with no request;
//!    every name derived from the file must fit the file system ([`names`]), shortened with a
//!    hash of the whole name when it would not, before anything is paid for;
//! 4. accepted: moved to `done/`; refused for good (400, 413, 415, 422): moved to `failed/` with
//!    `<name>.error.txt`; refused for now (402, auth, provider down): left in the inbox, retried;
//! 5. the sync pass tracks the job like any other batch; once its item is mirrored the result is
//!    copied to `outbox/<name>.json` (or `outbox/<name>.error.txt` says why there is none); an
//!    outbox that does not take it is retried with a growing wait and logged once ([`deliver`]).

mod deliver;
pub mod files;
pub mod names;
mod submit;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::DropFolderSettings;
use crate::error::Error;
use crate::ledger::Ledger;
use crate::model::Observer;
use crate::provider::Provider;
use crate::scheduler::PassTrigger;
use files::Refusal;
use watch::{Change, Settler};

/// A file written to and not closed, then silent this long (same size and mtime, no event), is
/// presumed complete at the next scan: its close event may have been lost in a queue overflow.
const STALE_WRITER: Duration = Duration::from_secs(10 * 60);

/// What became of a settled file.
enum Next {
    /// Taken care of (submitted, linked, filed, or refused for good).
    Done,
    /// Changed while being read: settle it again.
    Resettle,
    /// Refused for now: try again then.
    RetryAt(Instant),
    /// Left in place for a reason already logged; looked at again only if it changes.
    Ignored,
}

/// The drop folder's worker; [`DropFolder::run`] owns it until shutdown.
pub struct DropFolder {
    settings: DropFolderSettings,
    ledger: Ledger,
    provider: Arc<dyn Provider>,
    storage_root: PathBuf,
    trigger: Arc<PassTrigger>,
    observer: Arc<dyn Observer>,
    /// The name limit of `done/`, `failed/` and `outbox/`, read once they exist.
    name_limit: OnceLock<usize>,
    retries: deliver::Retries,
}

impl DropFolder {
    pub fn new(
        settings: DropFolderSettings,
        ledger: Ledger,
        provider: Arc<dyn Provider>,
        storage_root: PathBuf,
        trigger: Arc<PassTrigger>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            settings,
            ledger,
            provider,
            storage_root,
            trigger,
            observer,
            name_limit: OnceLock::new(),
            retries: deliver::Retries::default(),
        }
    }

    /// The longest name (in bytes) every folder a file is filed or delivered into takes.
    fn name_limit(&self) -> usize {
        *self.name_limit.get_or_init(|| {
            let s = &self.settings;
            names::limit(&[&s.done, &s.failed, &s.outbox])
        })
    }

    /// Creates the inbox and its sibling folders.
    fn prepare(&self) -> Result<(), Error> {
        let s = &self.settings;
        for dir in [&s.inbox, &s.done, &s.failed, &s.outbox] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Local {
                action: "drop folder: cannot create",
                path: dir.clone(),
                hint: "check dropfolder.path and its permissions",
                source,
            })?;
        }
        tracing::debug!(
            name_limit = self.name_limit(),
            "drop folder: file name limit"
        );
        Ok(())
    }

    fn scan(&self) -> Vec<OsString> {
        let s = &self.settings;
        match files::scan(&s.inbox, &s.include, &s.exclude) {
            Ok(names) => names,
            Err(e) => {
                tracing::error!(inbox = %s.inbox.display(), "cannot list the drop folder: {e}");
                Vec::new()
            }
        }
    }

    /// Watches, settles, submits and delivers until `shutdown`. Only ledger failures end it early.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        self.prepare()?;
        let s = &self.settings;
        let tick_every =
            (s.settle / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let mut watch =
            watch::start(&s.inbox, s.mode, tick_every).map_err(|source| Error::Watch {
                path: s.inbox.clone(),
                source,
            })?;
        tracing::info!(
            inbox = %s.inbox.display(),
            mode = watch.mode.as_str(),
            provider = %s.provider,
            "drop folder watched"
        );
        self.recover().await?;
        let mut settler = Settler::new(s.settle, STALE_WRITER);
        let mut retry_at: HashMap<OsString, Instant> = HashMap::new();
        let mut refused: HashSet<OsString> = HashSet::new();
        let mut tick = tokio::time::interval(tick_every);
        let mut rescan = tokio::time::interval(s.rescan);
        let mut poll = tokio::time::interval(s.result_poll);
        let mut full_scan = true;
        loop {
            if full_scan {
                let names = self.scan();
                refused.retain(|n| names.contains(n));
                let now = Instant::now();
                for n in names.iter().filter(|n| !retry_at.contains_key(*n)) {
                    if !refused.contains(n) {
                        settler.seen(n, now);
                    }
                }
                full_scan = false;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                change = watch.changes.recv() => match change {
                    Some(Change::Rescan) => full_scan = true,
                    Some(c) => {
                        if let Change::Written(n) | Change::Closed(n) = &c {
                            if !files::wanted(n, &s.include, &s.exclude) {
                                continue;
                            }
                            refused.remove(n);
                            retry_at.remove(n);
                        }
                        tracing::debug!(change = ?c, "drop folder event");
                        settler.change(&c, Instant::now());
                    }
                    None => {
                        tracing::warn!("drop folder watcher stopped; relying on rescans");
                        full_scan = true;
                    }
                },
                _ = rescan.tick() => full_scan = true,
                _ = tick.tick() => {
                    let now = Instant::now();
                    retry_at.retain(|n, at| {
                        let waiting = *at > now;
                        if !waiting {
                            settler.seen(n, now);
                        }
                        waiting
                    });
                    let due = settler.due(now, |n| files::stamp(&s.inbox, n));
                    for (name, stamp) in due {
                        if shutdown.is_cancelled() {
                            break;
                        }
                        tracing::debug!(file = ?name, stamp = ?stamp.as_ref().ok(), "drop folder: settled");
                        let next = match stamp {
                            // Stopping mid-submission is safe: the upload row was committed with
                            // its key first, and the restart asks again with the same key.
                            Ok(stamp) => tokio::select! {
                                next = self.take(&name, stamp) => next?,
                                () = shutdown.cancelled() => break,
                            },
                            Err(refusal) => self.refuse(&name, &refusal),
                        };
                        match next {
                            Next::Done => {}
                            Next::Resettle => settler.seen(&name, Instant::now()),
                            Next::RetryAt(at) => {
                                retry_at.insert(name, at);
                            }
                            Next::Ignored => {
                                refused.insert(name);
                            }
                        }
                    }
                    self.observer.dropfolder_queue(retry_at.len() as u64);
                },
                _ = poll.tick() => {
                    self.deliver().await?;
                    if self.awaiting().await? {
                        self.trigger.nudge();
                    }
                },
                () = self.trigger.pass_finished() => {
                    self.deliver().await?;
                }
            }
        }
        Ok(())
    }

    /// Logs why an entry is left alone (once per entry: it is remembered until it changes).
    fn refuse(&self, name: &OsString, refusal: &Refusal) -> Next {
        match refusal {
            Refusal::Vanished => Next::Done,
            Refusal::Changed => Next::Resettle,
            Refusal::Io(e) => {
                tracing::warn!(file = ?name, "drop folder: cannot read the file, retrying later: {e}");
                Next::RetryAt(Instant::now() + self.settings.rescan.min(Duration::from_secs(60)))
            }
            other => {
                tracing::warn!(
                    inbox = %self.settings.inbox.display(),
                    file = ?name,
                    "drop folder: refused: {other}"
                );
                Next::Ignored
            }
        }
    }

    /// True while some accepted job has not delivered its result yet.
    async fn awaiting(&self) -> Result<bool, Error> {
        Ok(!self
            .ledger
            .uploads_in(
                &self.settings.provider,
                crate::ledger::UploadState::Accepted,
            )
            .await?
            .is_empty())
    }
}
