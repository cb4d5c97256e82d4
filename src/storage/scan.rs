//! Reading the mirror back, for `batchmirror verify`: list one directory, hash one file, move a
//! bad file aside, remove a stray `.part`. Behind the small [`MirrorRead`] interface so the S3
//! storage (issue 14) can answer the same questions with a prefix listing and a ranged GET.
//!
//! The local side never follows a symlink it finds while listing (it reports it as a plain entry)
//! and never loads a whole file: hashing reads in fixed-size chunks. Bad files are moved, not
//! deleted, into `<root>/`[`QUARANTINE`]`/<relative path>.<unix ms>`: a corrupt result may be the
//! only copy left of an item the provider no longer has.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::StorageError;

/// The directory, in the root, that bad files are moved into by `verify --repair`. Starts with
/// `.`, so it is neither a provider name nor an encoded id.
pub const QUARANTINE: &str = ".batchmirror-quarantine";

/// Read in chunks of this size while hashing.
const CHUNK: usize = 256 * 1024;

/// What a listed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink, socket, FIFO or device: never a file batchmirror wrote.
    Other,
}

/// One name in a listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name, lossily converted when it is not UTF-8 (batchmirror writes only ASCII names).
    pub name: String,
    pub kind: EntryKind,
}

/// What a hashed file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    pub bytes: u64,
    pub sha256: String,
}

/// The mirror's read side and the two changes a repair makes, all by path relative to the root.
/// Blocking: callers run them on blocking threads.
pub trait MirrorRead: Send + Sync + 'static {
    /// The entries of a directory (`""`: the root); `None` when it does not exist.
    fn list(&self, rel: &str) -> Result<Option<Vec<Entry>>, StorageError>;
    /// Size and sha256 of a file; `None` when it does not exist.
    fn hash(&self, rel: &str) -> Result<Option<Hashed>, StorageError>;
    /// Moves a file into the quarantine, returning where it went (relative to the root).
    fn quarantine(&self, rel: &str) -> Result<String, StorageError>;
    /// Removes a file (a stray `.part`); a missing one is fine.
    fn remove(&self, rel: &str) -> Result<(), StorageError>;
}

/// The mirror on a local file system.
#[derive(Debug, Clone)]
pub struct LocalMirror {
    root: PathBuf,
}

impl LocalMirror {
    /// The mirror under `root`; nothing is created (a read-only verify writes nothing).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// `rel` under the root, refusing anything but plain names (no `..`, no absolute path).
    fn path(&self, rel: &str) -> Result<PathBuf, StorageError> {
        let p = Path::new(rel);
        let ok = p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !ok {
            return Err(StorageError::OutsideRoot { path: p.to_owned() });
        }
        Ok(self.root.join(p))
    }
}

impl MirrorRead for LocalMirror {
    fn list(&self, rel: &str) -> Result<Option<Vec<Entry>>, StorageError> {
        let dir = self.path(rel)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(&dir, "list", e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::io(&dir, "list", e))?;
            // file_type() does not follow symlinks: a link is Other, never walked into.
            let ft = entry
                .file_type()
                .map_err(|e| StorageError::io(entry.path(), "stat", e))?;
            let kind = if ft.is_file() {
                EntryKind::File
            } else if ft.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::Other
            };
            out.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }

    fn hash(&self, rel: &str) -> Result<Option<Hashed>, StorageError> {
        let path = self.path(rel)?;
        let mut f = match open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(&path, "open", e)),
        };
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut bytes = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StorageError::io(&path, "read", e)),
            };
            h.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(Some(Hashed {
            bytes,
            sha256: hex::encode(h.finalize()),
        }))
    }

    fn quarantine(&self, rel: &str) -> Result<String, StorageError> {
        let from = self.path(rel)?;
        let stamp = chrono::Utc::now().timestamp_millis();
        let to_rel = format!("{QUARANTINE}/{rel}.{stamp}");
        let to = self.path(&to_rel)?;
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, "create", e))?;
        }
        std::fs::rename(&from, &to).map_err(|e| StorageError::io(&from, "move aside", e))?;
        // The move must outlive a crash before the ledger says the item is ready again.
        for dir in [to.parent(), from.parent()].into_iter().flatten() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io(dir, "fsync", e))?;
        }
        Ok(to_rel)
    }

    fn remove(&self, rel: &str) -> Result<(), StorageError> {
        let path = self.path(rel)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&path, "remove", e)),
        }
    }
}

/// Opens a file for reading without following a symlink in its last component.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_hashes_quarantines_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let m = LocalMirror::new(dir.path());
        std::fs::create_dir_all(dir.path().join("p/b")).unwrap();
        std::fs::write(dir.path().join("p/b/i.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("p/b/link")).unwrap();
        assert_eq!(m.list("nope").unwrap(), None);
        let listed = m.list("p/b").unwrap().unwrap();
        assert_eq!(listed[0].name, "i.json");
        assert_eq!(listed[0].kind, EntryKind::File);
        assert_eq!(
            listed[1].kind,
            EntryKind::Other,
            "a symlink is not followed"
        );
        let h = m.hash("p/b/i.json").unwrap().unwrap();
        assert_eq!(h.bytes, 2);
        assert_eq!(
            h.sha256,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(m.hash("p/b/gone.json").unwrap(), None);
        assert!(m.hash("p/b/link").is_err(), "a symlink is not opened");
        assert!(m.hash("../x").is_err());
        let moved = m.quarantine("p/b/i.json").unwrap();
        assert!(moved.starts_with(".batchmirror-quarantine/p/b/i.json."));
        assert!(!dir.path().join("p/b/i.json").exists());
        assert_eq!(std::fs::read(dir.path().join(moved)).unwrap(), b"{}");
    }
}
