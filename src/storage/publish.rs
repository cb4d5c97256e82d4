//! The durable steps under [`super::Storage`]'s writes: directories made and synced, a body
//! written to its `.part` and fsynced (in memory or streamed through a bounded channel, checked as
//! JSON on the way), and the renames that publish it with its sidecars.
//!
//! Everything here is blocking except [`write_part`], which feeds a blocking writer. A `.part`
//! file exists only while someone owns it: a failed or abandoned write removes its own.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::{Staged, SyncFn, WriteError};
use crate::error::StorageError;
use crate::jsoncheck::JsonCheck;

/// Write buffer: large enough to keep syscalls few on multi-GB results.
const WRITE_BUFFER: usize = 256 * 1024;
/// Chunks in flight to the writer and to the JSON check: bounded, so a slow disk or check slows
/// the download instead of buffering it in memory.
const CHANNEL: usize = 16;

/// Creates a directory under the root and makes the new entries durable, up to the root.
pub(super) fn ensure_dir(root: &Path, dir: &Path, sync_dir: SyncFn) -> Result<(), StorageError> {
    if std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, "create", e))?;
    let mut cur = dir.parent();
    while let Some(d) = cur {
        sync_dir_at(d, sync_dir)?;
        if d == root {
            break;
        }
        cur = d.parent();
    }
    Ok(())
}

pub(super) fn sync_dir_at(dir: &Path, sync_dir: SyncFn) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| sync_dir(&d))
        .map_err(|e| StorageError::io(dir, "fsync directory", e))
}

/// Checks a body held in memory as JSON (when asked; `Err` says why it is not) and returns its
/// size and sha256: the CPU half of a small write, done before anything touches the disk (nothing
/// is written for a bad body).
pub(super) fn check_small(chunks: &[Bytes], validate_json: bool) -> Result<(u64, String), String> {
    if validate_json {
        let joined;
        let whole: &[u8] = match chunks {
            [one] => one,
            _ => {
                joined = chunks.concat();
                &joined
            }
        };
        serde_json::from_slice::<serde::de::IgnoredAny>(whole).map_err(|e| e.to_string())?;
    }
    let mut hash = Sha256::new();
    let mut n = 0u64;
    for chunk in chunks {
        hash.update(chunk);
        n += chunk.len() as u64;
    }
    Ok((n, hex::encode(hash.finalize())))
}

/// Creates `part` and writes a body held in memory to it, not yet durable: the caller makes a
/// whole group durable at once. The `.part` is removed on failure.
pub(super) fn create_part(part: &Path, chunks: &[Bytes]) -> Result<std::fs::File, StorageError> {
    let write = || -> Result<std::fs::File, StorageError> {
        let mut file =
            std::fs::File::create(part).map_err(|e| StorageError::io(part, "create", e))?;
        write_chunks(&mut file, chunks).map_err(|e| StorageError::io(part, "write", e))?;
        Ok(file)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(part);
    })
}

/// Writes every chunk, in one `writev` where the kernel takes them all: a body arrives in
/// several chunks, and a syscall each cost more than their copy (issue 15's profile).
fn write_chunks(file: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        chunks.iter().map(|c| std::io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    // Drops leading empty chunks, so a body of nothing but empty chunks writes nothing instead
    // of reading a zero-length write as `WriteZero`.
    std::io::IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One item to publish: its staged sidecars, then its durable result.
pub(super) struct Publishing<'a> {
    pub sidecars: &'a mut [Staged],
    pub result: &'a mut Staged,
}

impl Publishing<'_> {
    fn files(&self) -> impl Iterator<Item = &Staged> {
        self.sidecars.iter().chain(std::iter::once(&*self.result))
    }

    /// Removes whatever of the item was published; its `.part` files go when they are dropped.
    fn take_back(&self) {
        for s in self.files().filter(|s| s.is_published()) {
            let _ = std::fs::remove_file(&s.final_path);
        }
    }
}

/// Publishes every item of a group whose files are already durable under their `.part` names.
///
/// All sidecars are renamed and their directories synced first, then all results and theirs,
/// each directory once: the result's name appearing is what says the item is whole (start-up
/// recovery adopts a result it finds), so it must never be durable before its sidecars are.
/// Until its directory is synced a new name may not survive a power cut, so a failure there
/// fails the item. An item that fails has nothing of it left published; the others go on.
pub(super) fn publish_group(
    items: &mut [Publishing<'_>],
    sync_dir: SyncFn,
) -> Vec<Result<(), StorageError>> {
    let mut outcome: Vec<Result<(), StorageError>> = items.iter().map(|_| Ok(())).collect();
    for (item, out) in items.iter_mut().zip(outcome.iter_mut()) {
        if let Some(e) = item.sidecars.iter_mut().find_map(|s| rename_in(s).err()) {
            *out = Err(e);
        }
    }
    sync_dirs(
        items,
        &mut outcome,
        |it| it.sidecars.iter().collect(),
        sync_dir,
    );
    for (item, out) in items.iter_mut().zip(outcome.iter_mut()) {
        if out.is_ok() {
            *out = rename_in(item.result);
        }
    }
    sync_dirs(items, &mut outcome, |it| vec![&*it.result], sync_dir);
    for (item, out) in items.iter().zip(&outcome) {
        if out.is_err() {
            item.take_back();
        }
    }
    outcome
}

/// Renames a durable `.part` onto its final name; once renamed it is published (disarmed).
fn rename_in(s: &mut Staged) -> Result<(), StorageError> {
    std::fs::rename(&s.part, &s.final_path)
        .map_err(|e| StorageError::io(&s.final_path, "rename into", e))?;
    s.part = PathBuf::new();
    Ok(())
}

/// Syncs each directory holding a just-published file of a still-whole item, once; an item with
/// a file in a directory that failed fails.
fn sync_dirs<'s>(
    items: &'s [Publishing<'_>],
    outcome: &mut [Result<(), StorageError>],
    files: impl Fn(&'s Publishing<'_>) -> Vec<&'s Staged>,
    sync_dir: SyncFn,
) {
    let dirs_of = |i: usize| -> Vec<&'s Path> {
        files(&items[i])
            .into_iter()
            .filter(|s| s.is_published())
            .filter_map(|s| s.final_path.parent())
            .collect()
    };
    let mut dirs: Vec<&Path> = (0..items.len())
        .filter(|&i| outcome[i].is_ok())
        .flat_map(dirs_of)
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let Err(e) = sync_dir_at(dir, sync_dir) else {
            continue;
        };
        for (i, out) in outcome.iter_mut().enumerate() {
            if out.is_ok() && dirs_of(i).contains(&dir) {
                *out = Err(copy_io(&e));
            }
        }
    }
}

/// A second report of the same failure, for another item of the group.
pub(super) fn copy_io(e: &StorageError) -> StorageError {
    match e {
        StorageError::Io {
            path,
            action,
            source,
        } => StorageError::io(path, action, copy_io_error(source)),
        StorageError::OutsideRoot { path } => StorageError::OutsideRoot { path: path.clone() },
        StorageError::RootLocked { root, lock } => StorageError::RootLocked {
            root: root.clone(),
            lock: lock.clone(),
        },
    }
}

/// `std::io::Error` is not `Clone`: the same kind and message, for another item's report.
pub(super) fn copy_io_error(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

/// What the streaming writer is sent. Only `End` makes it keep the file: a sender that goes away
/// without it (the body failed, the task was aborted) has the `.part` removed by the writer itself.
enum Msg {
    Chunk(Bytes),
    End,
}

/// Streams `body` into `part` and fsyncs it; the `.part` is gone again on any failure, including
/// this future being dropped half-way.
pub(super) async fn write_part<E, S>(
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
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(CHANNEL);
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
        let written = write_from(&path, &rx, sync_file);
        if !matches!(written, Ok(Some(_))) {
            let _ = std::fs::remove_file(&path);
        }
        written?.ok_or_else(|| {
            StorageError::io(
                &path,
                "write",
                std::io::Error::other("the body was abandoned"),
            )
        })
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
                if tx.send(Msg::Chunk(c)).is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(WriteError::Body(e));
                break;
            }
        }
    }
    // End of input for the validator: it sees EOF and settles (a cut body is invalid JSON).
    vtx.take();
    let checked = match check {
        Some(check) => check
            .await
            .map_err(|e| StorageError::io(part, "validate", std::io::Error::other(e)))?,
        None => Ok(()),
    };
    if failure.is_none() && checked.is_ok() {
        // A writer that already failed has hung up: its own error is reported below.
        let _ = tx.send(Msg::End);
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| StorageError::io(part, "write", std::io::Error::other(e)))?;
    if let Some(f) = failure {
        return Err(f);
    }
    checked.map_err(WriteError::InvalidJson)?;
    Ok(written?)
}

/// The writer's loop: `Some` once `End` came and the file is fsynced, `None` if the sender left.
fn write_from(
    path: &Path,
    rx: &std::sync::mpsc::Receiver<Msg>,
    sync_file: SyncFn,
) -> Result<Option<(u64, String)>, StorageError> {
    let file = std::fs::File::create(path).map_err(|e| StorageError::io(path, "create", e))?;
    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut hash = Sha256::new();
    let mut n = 0u64;
    for msg in rx {
        match msg {
            Msg::Chunk(chunk) => {
                hash.update(&chunk);
                n += chunk.len() as u64;
                out.write_all(&chunk)
                    .map_err(|e| StorageError::io(path, "write", e))?;
            }
            Msg::End => {
                let file = out
                    .into_inner()
                    .map_err(|e| StorageError::io(path, "write", e.into_error()))?;
                sync_file(&file).map_err(|e| StorageError::io(path, "fsync", e))?;
                return Ok(Some((n, hex::encode(hash.finalize()))));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_in_many_chunks_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("r.json.part");
        // More slices than one writev takes at once on some systems (IOV_MAX is 1024 on Linux),
        // empty ones among them.
        let chunks: Vec<Bytes> = (0..3000u32)
            .map(|n| match n % 3 {
                0 => Bytes::new(),
                _ => Bytes::from(n.to_string()),
            })
            .collect();
        let want: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        drop(create_part(&part, &chunks).unwrap());
        assert_eq!(std::fs::read(&part).unwrap(), want);
    }
}
