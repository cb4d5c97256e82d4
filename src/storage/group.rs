//! Group commit of small results: one thread creates and writes every small `.part`, makes the
//! whole group durable at once (`syncfs` on Linux, one fsync per file elsewhere), then publishes
//! the group, syncing each touched directory once.
//!
//! Why one thread: with a writer per download, 16 threads creating files in one directory spent
//! most of a 10,000-result run spinning on the directory's lock and in ext4's inode allocator
//! (perf, issue 15), and paid a file fsync plus a directory fsync per result. One writer does not
//! contend, and the group's one `syncfs` replaces all of those fsyncs. The group forms by itself:
//! whatever arrived while the previous group was being made durable is the next group, so a lone
//! result waits for nobody.
//!
//! The order of the steps is the single-file order (data durable, rename, directory durable), so a
//! crash anywhere in a group leaves each result either published whole or only as a `.part`, which
//! start-up removes and the ledger fetches again.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::publish::{self, Publishing};
use super::{Staged, SyncFn, Then};
use crate::error::StorageError;

/// Results in one group at most, and their bytes at most: enough to amortise one `syncfs` over a
/// full set of concurrent downloads, small enough to bound the memory the group holds.
const GROUP_MAX: usize = 64;
const GROUP_BYTES: u64 = 32 * 1024 * 1024;

/// How the committer makes files and directories durable.
#[derive(Debug, Clone, Copy)]
pub(super) struct Durability {
    pub sync_file: SyncFn,
    pub sync_dir: SyncFn,
    /// One `syncfs` for the group instead of a fsync per file.
    pub syncfs: bool,
}

impl Durability {
    pub fn new(sync_file: SyncFn, sync_dir: SyncFn) -> Self {
        Self {
            sync_file,
            sync_dir,
            syncfs: syncfs_reports_errors(),
        }
    }
}

/// `syncfs` returns the filesystem's writeback errors only since Linux 5.8; before that it could
/// report success over a failed write, so older kernels (and other systems) fsync each file.
fn syncfs_reports_errors() -> bool {
    #[cfg(target_os = "linux")]
    {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (5, 8)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// One small result for the committer: checked and digested, not yet on disk.
struct Job {
    dir: PathBuf,
    chunks: Vec<Bytes>,
    /// Its `.part` and final names and its digest; the `.part` does not exist yet.
    staged: Staged,
    then: Then,
    reply: oneshot::Sender<Result<Staged, StorageError>>,
    /// Held until the job is answered, so [`super::Storage::quiesce`] waits for it even when
    /// its caller was aborted.
    token: TaskTrackerToken,
}

/// The sending side of the committer thread; the thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    pub fn start(root: PathBuf, durability: Durability) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("batchmirror-commit".into())
            .spawn(move || run(&root, durability, &rx))
            .map_err(|e| StorageError::io(Path::new("(committer thread)"), "start", e))?;
        Ok(Self { tx })
    }

    /// Writes `chunks` to `staged`'s `.part` with the current group, makes them durable and,
    /// unless `then` says stage, publishes them after their sidecars.
    pub async fn commit(
        &self,
        dir: PathBuf,
        chunks: Vec<Bytes>,
        staged: Staged,
        then: Then,
        token: TaskTrackerToken,
    ) -> Result<Staged, StorageError> {
        let path = staged.final_path.clone();
        let stopped = || {
            StorageError::io(
                &path,
                "write",
                std::io::Error::other("the storage committer stopped"),
            )
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            dir,
            chunks,
            staged,
            then,
            reply,
            token,
        };
        self.tx.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(root: &Path, durability: Durability, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.staged.published.bytes;
        let mut group = vec![first];
        while group.len() < GROUP_MAX && bytes < GROUP_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.staged.published.bytes;
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit_group(root, durability, group);
    }
}

/// A job whose `.part` is written, with the open file for a per-file fsync.
struct Written {
    job: Job,
    file: std::fs::File,
}

fn commit_group(root: &Path, d: Durability, group: Vec<Job>) {
    let mut written = Vec::with_capacity(group.len());
    for job in group {
        let created = publish::ensure_dir(root, &job.dir, d.sync_dir)
            .and_then(|()| publish::create_part(&job.staged.part, &job.chunks));
        match created {
            Ok(file) => written.push(Written { job, file }),
            Err(e) => answer(job, Err(e)),
        }
    }
    let written = make_durable(d, written);
    let (staged, mut publishing): (Vec<_>, Vec<_>) = written
        .into_iter()
        .map(|w| w.job)
        .partition(|job| matches!(job.then, Then::Stage));
    for job in staged {
        answer(job, Ok(()));
    }
    let mut sidecars: Vec<Vec<Staged>> = publishing
        .iter_mut()
        .map(|job| match std::mem::replace(&mut job.then, Then::Stage) {
            Then::Publish(s) => s,
            Then::Stage => Vec::new(),
        })
        .collect();
    let mut items: Vec<Publishing<'_>> = publishing
        .iter_mut()
        .zip(sidecars.iter_mut())
        .map(|(job, sidecars)| Publishing {
            sidecars,
            result: &mut job.staged,
        })
        .collect();
    let outcome = publish::publish_group(&mut items, d.sync_dir);
    drop(items);
    // The sidecars of a failed item are dropped here, which removes any `.part` left of them.
    drop(sidecars);
    for (job, result) in publishing.into_iter().zip(outcome) {
        answer(job, result);
    }
}

/// Makes every written `.part` durable; a job whose data may not be durable is answered with the
/// error (its `.part` goes when its `Staged` is dropped) and left out.
fn make_durable(d: Durability, written: Vec<Written>) -> Vec<Written> {
    if d.syncfs && !written.is_empty() {
        #[cfg(target_os = "linux")]
        if let Err(e) = rustix::fs::syncfs(&written[0].file) {
            let e = std::io::Error::from(e);
            for w in written {
                let err =
                    StorageError::io(&w.job.staged.part, "syncfs", publish::copy_io_error(&e));
                answer(w.job, Err(err));
            }
            return Vec::new();
        }
        return written;
    }
    let mut durable = Vec::with_capacity(written.len());
    for w in written {
        match (d.sync_file)(&w.file) {
            Ok(()) => durable.push(w),
            Err(e) => {
                let err = StorageError::io(&w.job.staged.part, "fsync", e);
                answer(w.job, Err(err));
            }
        }
    }
    durable
}

/// Answers a job. A caller that went away (aborted) still had its result published or removed:
/// the ledger learns of a published one at start-up, as after a crash.
fn answer(job: Job, result: Result<(), StorageError>) {
    let Job {
        staged,
        reply,
        token,
        ..
    } = job;
    let _ = reply.send(result.map(|()| staged));
    drop(token);
}
