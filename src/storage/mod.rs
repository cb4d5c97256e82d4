//! The mirror on disk: the layout ([`layout`]), ids made safe as file names, and the atomic,
//! durable publish (`.part` → fsync → rename → fsync directory), of a result alone or of a result
//! together with its sidecars; and the root's lock ([`lock`]), so one process writes under a root.
//! `scan` reads the mirror back for `verify` ([`MirrorRead`]); [`s3`] is the S3 backend for
//! several daemons (not wired into the download path yet).
//!
//! This module knows nothing of HTTP or SQL: it takes streams of bytes and returns what it
//! published. It is the one place that turns server-supplied ids into paths, and every path it
//! builds is checked to stay under the root.

mod group;
mod layout;
mod lock;
mod probe;
mod publish;
pub mod s3;
mod scan;

pub use layout::{BATCH_META, SIDECAR_SEP, result_file_name, safe_component};
pub use lock::{ROOT_LOCK, root_in_use};
pub use probe::{Probed, probe_dir};
pub use scan::{Entry, EntryKind, Hashed, LocalMirror, MirrorRead, QUARANTINE};

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::StorageError;
use crate::model::Published;
use group::{Committer, Durability};
use publish::Publishing;

/// Suffix of files being written; never the suffix of a published file.
pub const PART_SUFFIX: &str = ".part";
/// Results up to this size are held in memory and published in one blocking step.
const SMALL_BODY: u64 = 1024 * 1024;
/// Results up to this size are checked and digested on the calling task: tens of microseconds,
/// less than the hand-off to a blocking thread costs.
const INLINE_CHECK: u64 = 64 * 1024;

/// Why a result could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E: std::error::Error + 'static> {
    /// The body stream failed (connection reset, truncated body, …).
    #[error(transparent)]
    Body(E),
    #[error("result is larger than the {cap}-byte cap")]
    TooLarge { cap: u64 },
    #[error("result is not valid JSON: {0}")]
    InvalidJson(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The start of a body: all of it when it ends within [`SMALL_BODY`] (`small`), else its first
/// chunks, just past that size, with the rest still in the stream.
pub(crate) struct Head {
    pub chunks: Vec<Bytes>,
    pub held: u64,
    pub small: bool,
}

/// Why a body's start could not be read: over `cap`, or the stream failed.
pub(crate) enum HeadError<E> {
    TooLarge { cap: u64 },
    Body(E),
}

impl<E: std::error::Error + 'static> From<HeadError<E>> for WriteError<E> {
    fn from(e: HeadError<E>) -> Self {
        match e {
            HeadError::TooLarge { cap } => WriteError::TooLarge { cap },
            HeadError::Body(e) => WriteError::Body(e),
        }
    }
}

/// Reads `body` until it ends or passes [`SMALL_BODY`], the one decision between holding a result
/// in memory and streaming it, for every backend.
pub(crate) async fn read_head<E>(body: &mut impl Body<E>, cap: u64) -> Result<Head, HeadError<E>> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut held = 0u64;
    let small = loop {
        match body.next().await {
            Some(Ok(chunk)) => {
                held += chunk.len() as u64;
                if held > cap {
                    return Err(HeadError::TooLarge { cap });
                }
                chunks.push(chunk);
                if held > SMALL_BODY {
                    break false;
                }
            }
            Some(Err(e)) => return Err(HeadError::Body(e)),
            None => break true,
        }
    };
    Ok(Head {
        chunks,
        held,
        small,
    })
}

/// A body as storage takes it: chunks, or the error that cut it short.
pub trait Body<E>: Stream<Item = Result<Bytes, E>> + Unpin {}

impl<E, S: Stream<Item = Result<Bytes, E>> + Unpin> Body<E> for S {}

/// A body written completely and fsynced under its `.part` name, not published yet: a sidecar
/// waiting for its item's result ([`Storage::write_atomic`]). Dropping it unpublished removes the
/// `.part`, so a result that fails, or a task that is aborted, leaves no sidecar behind.
#[derive(Debug)]
pub struct Staged {
    /// Empty once published (nothing left to remove).
    part: PathBuf,
    final_path: PathBuf,
    published: Published,
}

impl Staged {
    fn new(
        part: PathBuf,
        final_path: PathBuf,
        rel_path: String,
        (bytes, sha256): (u64, String),
    ) -> Self {
        Self {
            part,
            final_path,
            published: Published {
                rel_path,
                bytes,
                sha256,
            },
        }
    }

    /// Size, digest and final relative path of the staged body.
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Renamed onto its final name: nothing is left to remove when it is dropped.
    fn is_published(&self) -> bool {
        self.part.as_os_str().is_empty()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.is_published() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

/// What a write does once its `.part` is durable.
enum Then {
    /// Keep it staged for a later publish.
    Stage,
    /// Publish it now, after these sidecars.
    Publish(Vec<Staged>),
}

/// How a file or directory is made durable: `File::sync_all`, swapped only by tests to inject
/// fsync failures.
type SyncFn = fn(&std::fs::File) -> std::io::Result<()>;

/// The local mirror under one root directory.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    sync_file: SyncFn,
    sync_dir: SyncFn,
    /// The blocking steps that may publish: they run to the end even when their caller is
    /// aborted, so [`Storage::quiesce`] can wait for them.
    publishing: tokio_util::task::TaskTracker,
    /// The one writer of small results, which makes them durable in groups.
    committer: Committer,
    /// The root's lock once taken ([`Storage::lock_root`]), shared by every clone.
    _root_lock: Option<Arc<std::fs::File>>,
}

impl Storage {
    /// Creates the root if needed.
    pub fn new(root: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root).map_err(|e| StorageError::io(root, "create", e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StorageError::io(root, "resolve", e))?;
        let (sync_file, sync_dir) = (std::fs::File::sync_all, std::fs::File::sync_all);
        let committer = Committer::start(root.clone(), Durability::new(sync_file, sync_dir))?;
        Ok(Self {
            root,
            sync_file,
            sync_dir,
            publishing: tokio_util::task::TaskTracker::new(),
            committer,
            _root_lock: None,
        })
    }

    /// The same storage holding `<root>/`[`ROOT_LOCK`] for as long as it or a clone lives: for the
    /// process that writes under the root, before its recovery removes anything there. Another
    /// holder is [`StorageError::RootLocked`].
    pub fn lock_root(self) -> Result<Self, StorageError> {
        let _root_lock = Some(lock::lock_root(&self.root)?);
        Ok(Self { _root_lock, ..self })
    }

    /// Waits until every publish already started has finished, including those of aborted
    /// callers: afterwards a result on disk is exactly what was published.
    pub async fn quiesce(&self) {
        self.publishing.close();
        self.publishing.wait().await;
        self.publishing.reopen();
    }

    /// The same storage with fsync of files and of directories replaced (fault injection); its
    /// groups fsync each file, through `sync_file`, instead of one `syncfs`.
    #[cfg(test)]
    pub(crate) fn with_sync(self, sync_file: SyncFn, sync_dir: SyncFn) -> Self {
        let durability = Durability {
            syncfs: false,
            ..Durability::new(sync_file, sync_dir)
        };
        let committer = Committer::start(self.root.clone(), durability).unwrap();
        Self {
            sync_file,
            sync_dir,
            committer,
            ..self
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Joins a relative path to the root, refusing anything that could leave it.
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf, StorageError> {
        let ok = rel.components().count() > 0
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(StorageError::OutsideRoot {
                path: rel.to_owned(),
            });
        }
        Ok(self.root.join(rel))
    }

    pub fn exists(&self, rel: &Path) -> bool {
        self.resolve(rel).is_ok_and(|p| p.is_file())
    }

    /// Size and sha256 of a published file (start-up recovery of a crash after rename).
    pub async fn digest(&self, rel: &Path) -> Result<Published, StorageError> {
        let path = self.resolve(rel)?;
        let rel = rel.to_string_lossy().into_owned();
        tokio::task::spawn_blocking(move || {
            let mut f =
                std::fs::File::open(&path).map_err(|e| StorageError::io(&path, "open", e))?;
            let mut h = Sha256::new();
            let bytes =
                std::io::copy(&mut f, &mut h).map_err(|e| StorageError::io(&path, "read", e))?;
            Ok(Published {
                rel_path: rel,
                bytes,
                sha256: hex::encode(h.finalize()),
            })
        })
        .await
        .map_err(|e| StorageError::io(&self.root, "digest", std::io::Error::other(e)))?
    }

    /// Streams `body` to `<rel>.part`, checks it, makes it durable and renames it to `rel`,
    /// after renaming `sidecars` into place: the result's name is the item's completion mark. On
    /// any failure nothing is published (neither the result nor a sidecar) and no `.part` is left.
    pub async fn write_atomic<E: std::error::Error + 'static>(
        &self,
        rel: &Path,
        body: impl Body<E>,
        cap: u64,
        validate_json: bool,
        sidecars: Vec<Staged>,
    ) -> Result<Published, WriteError<E>> {
        let then = Then::Publish(sidecars);
        let written = self.write(rel, body, cap, validate_json, then).await?;
        Ok(written.published.clone())
    }

    /// Writes `body` to `<rel>.part` and makes it durable without publishing it: a sidecar, to
    /// be published by [`Storage::write_atomic`] with its item's result.
    pub async fn stage<E: std::error::Error + 'static>(
        &self,
        rel: &Path,
        body: impl Body<E>,
        cap: u64,
        validate_json: bool,
    ) -> Result<Staged, WriteError<E>> {
        self.write(rel, body, cap, validate_json, Then::Stage).await
    }

    /// Removes these published files if present (an item's sidecars once it ended lost or
    /// failed). Missing files are fine.
    pub fn remove_published(&self, rels: &[PathBuf]) -> Result<usize, StorageError> {
        let mut removed = 0;
        for rel in rels {
            let path = self.resolve(rel)?;
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, "remove", e)),
            }
        }
        Ok(removed)
    }

    async fn write<E: std::error::Error + 'static>(
        &self,
        rel: &Path,
        mut body: impl Body<E>,
        cap: u64,
        validate_json: bool,
        then: Then,
    ) -> Result<Staged, WriteError<E>> {
        let final_path = self.resolve(rel)?;
        let dir = final_path
            .parent()
            .ok_or_else(|| StorageError::OutsideRoot { path: rel.into() })?
            .to_owned();
        let mut part = final_path.clone().into_os_string();
        part.push(PART_SUFFIX);
        let part = PathBuf::from(part);
        let rel_path = rel.to_string_lossy().into_owned();
        let (sync_file, sync_dir) = (self.sync_file, self.sync_dir);
        // Most results are small: held in memory, they are checked, written, fsynced, renamed and
        // their directory fsynced in one blocking task, instead of a thread hand-off per step.
        let Head {
            chunks: head,
            held,
            small,
        } = read_head(&mut body, cap).await?;
        let root = self.root.clone();
        if small {
            // The CPU half (JSON check, digest) runs here when it is a few microseconds, else on
            // the blocking pool; the disk half goes to the one committer, which makes this
            // result durable with its group.
            let (head, digest) = if held <= INLINE_CHECK {
                let digest = publish::check_small(&head, validate_json);
                (head, digest.map_err(WriteError::InvalidJson)?)
            } else {
                let checked = tokio::task::spawn_blocking(move || {
                    publish::check_small(&head, validate_json).map(|digest| (head, digest))
                })
                .await
                .map_err(|e| StorageError::io(rel, "validate", std::io::Error::other(e)))?;
                checked.map_err(WriteError::InvalidJson)?
            };
            let staged = Staged::new(part, final_path, rel_path, digest);
            let token = self.publishing.token();
            return Ok(self
                .committer
                .commit(dir, head, staged, then, token)
                .await?);
        }
        let at = dir.clone();
        tokio::task::spawn_blocking(move || publish::ensure_dir(&root, &at, sync_dir))
            .await
            .map_err(|e| StorageError::io(&dir, "create", std::io::Error::other(e)))??;
        let rest = futures_util::stream::iter(head.into_iter().map(Ok)).chain(body);
        let written = publish::write_part(&part, rest, cap, validate_json, sync_file).await?;
        let mut s = Staged::new(part, final_path, rel_path, written);
        self.publishing
            .spawn_blocking(move || finish(&mut s, then, sync_dir).map(|()| s))
            .await
            .map_err(|e| StorageError::io(rel, "rename into", std::io::Error::other(e)))?
            .map_err(WriteError::Storage)
    }

    /// Removes `*.part` files left by a crash. Only called while holding the root's lock: another
    /// process's `.part` files are being written.
    pub fn remove_stray_parts(&self) -> Result<usize, StorageError> {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(&dir, "list", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io(&dir, "list", e))?;
                let ft = entry
                    .file_type()
                    .map_err(|e| StorageError::io(entry.path(), "stat", e))?;
                let path = entry.path();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() && path.to_string_lossy().ends_with(PART_SUFFIX) {
                    std::fs::remove_file(&path)
                        .map_err(|e| StorageError::io(&path, "remove", e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Publishes a durable `.part` if asked to (disarming it), or leaves it staged.
fn finish(s: &mut Staged, then: Then, sync_dir: SyncFn) -> Result<(), StorageError> {
    let Then::Publish(mut sidecars) = then else {
        return Ok(());
    };
    let mut item = [Publishing {
        sidecars: &mut sidecars,
        result: s,
    }];
    let [outcome] = <[_; 1]>::try_from(publish::publish_group(&mut item, sync_dir))
        .unwrap_or_else(|_| unreachable!("one outcome per item"));
    outcome
}

#[cfg(test)]
mod tests;
