//! The mirror on disk: `<root>/<provider>/<batch>/<item>.json`, ids made safe as file names, and
//! the atomic, durable publish (`.part` → fsync → rename → fsync directory).
//!
//! This module knows nothing of HTTP or SQL: it takes a stream of bytes and returns what it
//! published. It is the one place that turns server-supplied ids into paths, and every path it
//! builds is checked to stay under the root.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::StorageError;
use crate::jsoncheck::JsonCheck;
use crate::model::{BatchId, ItemId, ProviderName, Published};

/// Suffix of files being written; never the suffix of a published file.
pub const PART_SUFFIX: &str = ".part";
/// Longest encoded name we use; longer ones are shortened and made unique with a hash.
const MAX_NAME: usize = 180;
/// Write buffer: large enough to keep syscalls few on multi-GB results.
const WRITE_BUFFER: usize = 256 * 1024;
/// Chunks in flight to the writer and to the JSON check: bounded, so a slow disk or check slows
/// the download instead of buffering it in memory.
const CHANNEL: usize = 16;
/// Results up to this size are held in memory and published in one blocking step.
const SMALL_BODY: u64 = 1024 * 1024;

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

/// Turns an id into one safe path component. Ids already safe (`[A-Za-z0-9._-]{1,128}`, not
/// starting with `.`) are kept; others are percent-encoded (dots too, so `..` cannot survive), and
/// very long ones are cut and suffixed with a hash of the whole id. Distinct ids never collide: a
/// kept id has no `%` and no `~`, an encoded one has a `%` and no `~`, an over-long safe id starts
/// with `~`, and a shortened one ends in `~<hash>`.
pub fn safe_component(id: &str) -> String {
    let kept = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if kept {
        return id.to_owned();
    }
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'_').remove(b'-');
    let enc = percent_encoding::utf8_percent_encode(id, SET).to_string();
    // Ids of only safe bytes that were still not kept (too long) get a `~` mark: neither a kept
    // name nor an encoding ever contains `~`, so the mark cannot collide with either.
    let enc = if enc.contains('%') {
        enc
    } else {
        format!("~{enc}")
    };
    if enc.len() <= MAX_NAME {
        return enc;
    }
    let mut cut = MAX_NAME - 18;
    // Never cut inside a %XX triplet.
    while enc.as_bytes()[..cut]
        .iter()
        .rev()
        .take(2)
        .any(|&b| b == b'%')
    {
        cut -= 1;
    }
    let hash = hex::encode(&Sha256::digest(id.as_bytes())[..8]);
    format!("{}~{hash}", &enc[..cut])
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
}

impl Storage {
    /// Creates the root if needed.
    pub fn new(root: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root).map_err(|e| StorageError::io(root, "create", e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StorageError::io(root, "resolve", e))?;
        Ok(Self {
            root,
            sync_file: std::fs::File::sync_all,
            sync_dir: std::fs::File::sync_all,
        })
    }

    /// The same storage with fsync of files and of directories replaced (fault injection).
    #[cfg(test)]
    pub(crate) fn with_sync(self, sync_file: SyncFn, sync_dir: SyncFn) -> Self {
        Self {
            sync_file,
            sync_dir,
            ..self
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The item's path relative to the root.
    pub fn item_path(provider: &ProviderName, batch: &BatchId, item: &ItemId) -> PathBuf {
        let mut p = PathBuf::from(provider.as_str());
        p.push(safe_component(batch.as_str()));
        p.push(format!("{}.json", safe_component(item.as_str())));
        p
    }

    /// A file kept beside the item's result: `<item>.<suffix>`. The suffix comes from the adapter,
    /// never the server; it must be `[a-z0-9._-]+`, and neither `json` nor ending in `.part`.
    pub fn sidecar_path(
        provider: &ProviderName,
        batch: &BatchId,
        item: &ItemId,
        suffix: &str,
    ) -> Result<PathBuf, StorageError> {
        let ok = !suffix.is_empty()
            && suffix != "json"
            && !suffix.ends_with(PART_SUFFIX)
            && !suffix.starts_with('.')
            && suffix.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        let mut p = PathBuf::from(provider.as_str());
        p.push(safe_component(batch.as_str()));
        p.push(format!("{}.{suffix}", safe_component(item.as_str())));
        if ok {
            Ok(p)
        } else {
            Err(StorageError::OutsideRoot { path: p })
        }
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

    /// Streams `body` to `<rel>.part`, checks it, makes it durable and renames it to `rel`.
    /// On any failure the `.part` file is removed and nothing is published.
    pub async fn write_atomic<E, S>(
        &self,
        rel: &Path,
        body: S,
        cap: u64,
        validate_json: bool,
    ) -> Result<Published, WriteError<E>>
    where
        E: std::error::Error + 'static,
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let final_path = self.resolve(rel)?;
        let dir = final_path
            .parent()
            .ok_or_else(|| StorageError::OutsideRoot { path: rel.into() })?
            .to_owned();
        let mut part = final_path.clone().into_os_string();
        part.push(PART_SUFFIX);
        let part = PathBuf::from(part);
        // Most results are small: held in memory, they are checked, written, fsynced, renamed and
        // their directory fsynced in one blocking task, instead of a thread hand-off per step.
        let mut body = body;
        let mut head: Vec<Bytes> = Vec::new();
        let mut held = 0u64;
        let small = loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    held += chunk.len() as u64;
                    if held > cap {
                        return Err(WriteError::TooLarge { cap });
                    }
                    head.push(chunk);
                    if held > SMALL_BODY {
                        break false;
                    }
                }
                Some(Err(e)) => return Err(WriteError::Body(e)),
                None => break true,
            }
        };
        if small {
            let syncs = (self.sync_file, self.sync_dir);
            let root = self.root.clone();
            // The directory is made here too: one thread hand-off per small result, not two.
            let (bytes, sha256) = tokio::task::spawn_blocking(move || {
                ensure_dir(&root, &dir, syncs.1).map_err(SmallError::Storage)?;
                publish_small(&part, &final_path, &dir, &head, validate_json, syncs)
            })
            .await
            .map_err(|e| StorageError::io(rel, "write", std::io::Error::other(e)))?
            .map_err(|e| match e {
                SmallError::Storage(e) => WriteError::Storage(e),
                SmallError::InvalidJson(m) => WriteError::InvalidJson(m),
            })?;
            return Ok(Published {
                rel_path: rel.to_string_lossy().into_owned(),
                bytes,
                sha256,
            });
        }
        let (root, sync, at) = (self.root.clone(), self.sync_dir, dir.clone());
        tokio::task::spawn_blocking(move || ensure_dir(&root, &at, sync))
            .await
            .map_err(|e| StorageError::io(&dir, "create", std::io::Error::other(e)))??;
        let rest = futures_util::stream::iter(head.into_iter().map(Ok)).chain(body);
        let result = write_part(&part, rest, cap, validate_json, self.sync_file).await;
        let (bytes, sha256) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        let (sync, at) = (self.sync_dir, final_path.clone());
        tokio::task::spawn_blocking(move || rename_durably(&part, &at, &dir, sync))
            .await
            .map_err(|e| {
                StorageError::io(&final_path, "rename into", std::io::Error::other(e))
            })??;
        Ok(Published {
            rel_path: rel.to_string_lossy().into_owned(),
            bytes,
            sha256,
        })
    }

    /// Removes `*.part` files left by a crash. Only called while holding the ledger lock.
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

/// Creates a directory under the root and makes the new entries durable, up to the root.
fn ensure_dir(root: &Path, dir: &Path, sync_dir: SyncFn) -> Result<(), StorageError> {
    if std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, "create", e))?;
    let mut cur = dir.parent();
    while let Some(d) = cur {
        std::fs::File::open(d)
            .and_then(|f| sync_dir(&f))
            .map_err(|e| StorageError::io(d, "fsync directory", e))?;
        if d == root {
            break;
        }
        cur = d.parent();
    }
    Ok(())
}

/// Why a small, in-memory result was not published.
enum SmallError {
    Storage(StorageError),
    InvalidJson(String),
}

/// Publishes a result held in memory: JSON check first (nothing is written for a bad body), then
/// `.part` → write → fsync → rename → fsync directory, the same durable sequence as the streaming
/// path. The `.part` is removed on any failure.
fn publish_small(
    part: &Path,
    final_path: &Path,
    dir: &Path,
    chunks: &[Bytes],
    validate_json: bool,
    (sync_file, sync_dir): (SyncFn, SyncFn),
) -> Result<(u64, String), SmallError> {
    if validate_json {
        let joined;
        let whole: &[u8] = match chunks {
            [one] => one,
            _ => {
                joined = chunks.concat();
                &joined
            }
        };
        serde_json::from_slice::<serde::de::IgnoredAny>(whole)
            .map_err(|e| SmallError::InvalidJson(e.to_string()))?;
    }
    let write = || -> Result<(u64, String), StorageError> {
        let mut file =
            std::fs::File::create(part).map_err(|e| StorageError::io(part, "create", e))?;
        let mut hash = Sha256::new();
        let mut n = 0u64;
        for chunk in chunks {
            hash.update(chunk);
            n += chunk.len() as u64;
            file.write_all(chunk)
                .map_err(|e| StorageError::io(part, "write", e))?;
        }
        sync_file(&file).map_err(|e| StorageError::io(part, "fsync", e))?;
        Ok((n, hex::encode(hash.finalize())))
    };
    let written = write().inspect_err(|_| {
        let _ = std::fs::remove_file(part);
    });
    let written = written.map_err(SmallError::Storage)?;
    rename_durably(part, final_path, dir, sync_dir).map_err(SmallError::Storage)?;
    Ok(written)
}

/// Renames a complete, fsynced `.part` onto its final name and fsyncs the directory. Until the
/// directory is synced the new name may not survive a power cut: a failure there is a failed
/// write, so the file is taken back rather than left published but unrecorded. On any failure
/// neither name is left behind.
fn rename_durably(
    part: &Path,
    final_path: &Path,
    dir: &Path,
    sync_dir: SyncFn,
) -> Result<(), StorageError> {
    if let Err(e) = std::fs::rename(part, final_path) {
        let _ = std::fs::remove_file(part);
        return Err(StorageError::io(final_path, "rename into", e));
    }
    if let Err(e) = std::fs::File::open(dir).and_then(|d| sync_dir(&d)) {
        let _ = std::fs::remove_file(final_path);
        return Err(StorageError::io(dir, "fsync directory", e));
    }
    Ok(())
}

async fn write_part<E, S>(
    part: &Path,
    mut body: S,
    cap: u64,
    validate_json: bool,
    sync_file: SyncFn,
) -> Result<(u64, String), WriteError<E>>
where
    E: std::error::Error + 'static,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    // Blocking writes run on the blocking pool; chunks travel over a small bounded channel so a
    // slow disk slows the download instead of buffering it in memory.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(CHANNEL);
    // JSON is checked while the body streams, on a thread of its own fed the same chunks, instead
    // of reading the whole file again afterwards; its bounded channel keeps memory flat too.
    let validator = validate_json.then(|| {
        let (vtx, vrx) = std::sync::mpsc::sync_channel::<Bytes>(CHANNEL);
        let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut check = JsonCheck::new();
            for chunk in vrx {
                check.feed(&chunk)?;
            }
            check.finish()
        });
        (vtx, check)
    });
    let (mut vtx, check) = validator.unzip();
    let path = part.to_owned();
    let writer = tokio::task::spawn_blocking(move || -> Result<(u64, String), StorageError> {
        let file =
            std::fs::File::create(&path).map_err(|e| StorageError::io(&path, "create", e))?;
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut hash = Sha256::new();
        let mut n = 0u64;
        for chunk in rx {
            hash.update(&chunk);
            n += chunk.len() as u64;
            out.write_all(&chunk)
                .map_err(|e| StorageError::io(&path, "write", e))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| StorageError::io(&path, "write", e.into_error()))?;
        sync_file(&file).map_err(|e| StorageError::io(&path, "fsync", e))?;
        Ok((n, hex::encode(hash.finalize())))
    });
    let mut received = 0u64;
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                received += c.len() as u64;
                if received > cap {
                    failure = Some(WriteError::TooLarge { cap });
                    break;
                }
                // A validator that stopped has found the body invalid: its error is reported
                // below, and there is no point in writing the rest.
                if let Some(v) = &vtx
                    && v.send(c.clone()).is_err()
                {
                    break;
                }
                if tx.send(c).is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(WriteError::Body(e));
                break;
            }
        }
    }
    drop(tx);
    // End of input for the validator: it sees EOF and settles (a cut body is invalid JSON).
    vtx.take();
    let checked = match check {
        Some(check) => Some(
            check
                .await
                .map_err(|e| StorageError::io(part, "validate", std::io::Error::other(e)))?,
        ),
        None => None,
    };
    let written = writer
        .await
        .map_err(|e| StorageError::io(part, "write", std::io::Error::other(e)))?;
    if let Some(f) = failure {
        return Err(f);
    }
    let (bytes, sha) = written?;
    if let Some(checked) = checked {
        checked.map_err(WriteError::InvalidJson)?;
    }
    Ok((bytes, sha))
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
