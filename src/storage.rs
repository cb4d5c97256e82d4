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
use crate::model::{BatchId, ItemId, ProviderName, Published};

/// Suffix of files being written; never the suffix of a published file.
pub const PART_SUFFIX: &str = ".part";
/// Longest encoded name we use; longer ones are shortened and made unique with a hash.
const MAX_NAME: usize = 180;
/// Write buffer: large enough to keep syscalls few on multi-GB results.
const WRITE_BUFFER: usize = 256 * 1024;
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

/// The local mirror under one root directory.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Creates the root if needed.
    pub fn new(root: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root).map_err(|e| StorageError::io(root, "create", e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StorageError::io(root, "resolve", e))?;
        Ok(Self { root })
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
        self.ensure_dir(&dir).await?;
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
            let (bytes, sha256) = tokio::task::spawn_blocking(move || {
                publish_small(&part, &final_path, &dir, &head, validate_json)
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
        let rest = futures_util::stream::iter(head.into_iter().map(Ok)).chain(body);
        let result = write_part(&part, rest, cap, validate_json).await;
        let (bytes, sha256) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::rename(&part, &final_path).await {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(StorageError::io(&final_path, "rename into", e).into());
        }
        sync_dir(dir).await?;
        Ok(Published {
            rel_path: rel.to_string_lossy().into_owned(),
            bytes,
            sha256,
        })
    }

    /// Creates a directory under the root and makes the new entries durable.
    async fn ensure_dir(&self, dir: &Path) -> Result<(), StorageError> {
        if tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| StorageError::io(dir, "create", e))?;
        // The new directories' entries must survive a power cut too, up to the root.
        let mut cur = dir.parent();
        while let Some(d) = cur {
            sync_dir(d.to_owned()).await?;
            if d == self.root {
                break;
            }
            cur = d.parent();
        }
        Ok(())
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
        file.sync_all()
            .map_err(|e| StorageError::io(part, "fsync", e))?;
        std::fs::rename(part, final_path)
            .map_err(|e| StorageError::io(final_path, "rename into", e))?;
        Ok((n, hex::encode(hash.finalize())))
    };
    let written = write().inspect_err(|_| {
        let _ = std::fs::remove_file(part);
    });
    let written = written.map_err(SmallError::Storage)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SmallError::Storage(StorageError::io(dir, "fsync directory", e)))?;
    Ok(written)
}

async fn write_part<E, S>(
    part: &Path,
    mut body: S,
    cap: u64,
    validate_json: bool,
) -> Result<(u64, String), WriteError<E>>
where
    E: std::error::Error + 'static,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    // Blocking writes run on the blocking pool; chunks travel over a small bounded channel so a
    // slow disk slows the download instead of buffering it in memory.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(16);
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
        file.sync_all()
            .map_err(|e| StorageError::io(&path, "fsync", e))?;
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
    let written = writer
        .await
        .map_err(|e| StorageError::io(part, "write", std::io::Error::other(e)))?;
    if let Some(f) = failure {
        return Err(f);
    }
    let (bytes, sha) = written?;
    if validate_json {
        let path = part.to_owned();
        let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            let reader = std::io::BufReader::with_capacity(WRITE_BUFFER, f);
            serde_json::from_reader::<_, serde::de::IgnoredAny>(reader)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| StorageError::io(part, "validate", std::io::Error::other(e)))?;
        check.map_err(WriteError::InvalidJson)?;
    }
    Ok((bytes, sha))
}

async fn sync_dir(dir: PathBuf) -> Result<(), StorageError> {
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(&dir, "fsync directory", e))
    })
    .await
    .map_err(|e| StorageError::io("", "fsync directory", std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_ids_are_kept_and_others_encoded_into_one_component() {
        assert_eq!(safe_component("item_001.v2-a"), "item_001.v2-a");
        for hostile in [
            "../x", "a/b", ".hidden", "..", ".", "", "é€", "a\\b", "%41", "x~y",
        ] {
            let c = safe_component(hostile);
            assert!(!c.is_empty() && !c.starts_with('.'), "{hostile:?} -> {c:?}");
            assert!(
                !c.contains('/') && !c.contains('\\'),
                "{hostile:?} -> {c:?}"
            );
            assert!(c.len() <= MAX_NAME);
        }
        assert_ne!(safe_component("%41"), safe_component("A"));
        let long = "ü".repeat(300);
        let c = safe_component(&long);
        assert!(c.len() <= MAX_NAME, "{}", c.len());
        assert_ne!(
            c,
            safe_component(&"ü".repeat(301)),
            "hash keeps long ids apart"
        );
        assert_ne!(
            safe_component(&"a".repeat(129)),
            safe_component(&"a".repeat(130))
        );
        let dotted = format!(".{}", "x".repeat(127));
        let lookalike = format!("2E{}", "x".repeat(127));
        assert_ne!(safe_component(&dotted), safe_component(&lookalike));
    }

    #[test]
    fn resolve_refuses_paths_leaving_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path()).unwrap();
        assert!(s.resolve(Path::new("../x")).is_err());
        assert!(s.resolve(Path::new("/etc/passwd")).is_err());
        assert!(s.resolve(Path::new("a/./b")).is_ok());
    }

    #[tokio::test]
    async fn publish_is_atomic_and_failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path()).unwrap();
        let ok = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"a\":")),
            Ok(Bytes::from_static(b"1}")),
        ]);
        let p = s
            .write_atomic(Path::new("p/b/i.json"), ok, 100, true)
            .await
            .unwrap();
        assert_eq!(p.bytes, 7);
        assert_eq!(p.sha256, hex::encode(Sha256::digest(b"{\"a\":1}")));
        assert_eq!(
            std::fs::read(dir.path().join("p/b/i.json")).unwrap(),
            b"{\"a\":1}"
        );

        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"{\"a\"")),
            Err(std::io::Error::other("reset")),
        ]);
        let r = s
            .write_atomic(Path::new("p/b/j.json"), broken, 100, true)
            .await;
        assert!(matches!(r, Err(WriteError::Body(_))));
        let big =
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 101]))]);
        let r = s
            .write_atomic(Path::new("p/b/k.json"), big, 100, false)
            .await;
        assert!(matches!(r, Err(WriteError::TooLarge { cap: 100 })));
        let bad =
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"{nope"))]);
        let r = s
            .write_atomic(Path::new("p/b/l.json"), bad, 100, true)
            .await;
        assert!(matches!(r, Err(WriteError::InvalidJson(_))));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("p/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["i.json"]);
    }

    /// A JSON document of `n` bytes (`["xxx…"]`) in 64 KiB chunks.
    fn big_json(n: usize, valid: bool) -> (Vec<u8>, Vec<Result<Bytes, std::io::Error>>) {
        let mut doc = vec![b'x'; n];
        doc[..2].copy_from_slice(b"[\"");
        doc[n - 2..].copy_from_slice(if valid { b"\"]" } else { b"\"," });
        let chunks = doc
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        (doc, chunks)
    }

    #[tokio::test]
    async fn results_above_the_in_memory_size_stream_and_are_checked_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path()).unwrap();
        let n = 3 * SMALL_BODY as usize + 5;
        let (doc, chunks) = big_json(n, true);
        let p = s
            .write_atomic(
                Path::new("p/b/big.json"),
                futures_util::stream::iter(chunks),
                u64::MAX,
                true,
            )
            .await
            .unwrap();
        assert_eq!(p.bytes, n as u64);
        assert_eq!(p.sha256, hex::encode(Sha256::digest(&doc)));
        assert_eq!(std::fs::read(dir.path().join("p/b/big.json")).unwrap(), doc);
        // The tail is broken only after the in-memory limit: still refused, nothing left behind.
        let (_, chunks) = big_json(n, false);
        let r = s
            .write_atomic(
                Path::new("p/b/bad.json"),
                futures_util::stream::iter(chunks),
                u64::MAX,
                true,
            )
            .await;
        assert!(matches!(r, Err(WriteError::InvalidJson(_))), "{r:?}");
        // The cap holds past the in-memory limit too.
        let (_, chunks) = big_json(n, true);
        let r = s
            .write_atomic(
                Path::new("p/b/capped.json"),
                futures_util::stream::iter(chunks),
                2 * SMALL_BODY,
                true,
            )
            .await;
        assert!(matches!(r, Err(WriteError::TooLarge { .. })), "{r:?}");
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("p/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["big.json"]);
    }

    #[test]
    fn stray_parts_are_removed_and_results_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("p/b")).unwrap();
        std::fs::write(dir.path().join("p/b/x.json.part"), b"half").unwrap();
        std::fs::write(dir.path().join("p/b/y.json"), b"{}").unwrap();
        assert_eq!(s.remove_stray_parts().unwrap(), 1);
        assert!(dir.path().join("p/b/y.json").exists());
    }
}
