//! The writer's two locks on a ledger, held for its life: `<path>.lock`, which older batchmirrors
//! take too, and a lock on the database file itself, which a hard link or another path to the same
//! file cannot get round (a lock file is found by name; the database lock is on the inode).
//!
//! Both are `flock` locks (std's `File::try_lock` on Linux). Those are independent of the POSIX
//! (`fcntl`) byte-range locks SQLite takes on the same file, so neither disturbs the other. One
//! POSIX rule still binds: closing any descriptor of a file drops every `fcntl` lock the process
//! holds on it, so the database handle here must be closed after the connection, never before.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::LedgerError;

/// The mode SQLite itself creates a database with, so a ledger created here looks no different.
const DB_MODE: u32 = 0o644;

/// Both locks; dropping this releases them.
#[derive(Debug)]
pub(super) struct Held {
    _lock_file: File,
    _db: File,
}

/// `<ledger path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Takes `<path>.lock`, then the database file (created empty if missing: SQLite takes an empty
/// file as a new database). Either one held elsewhere is [`LedgerError::Locked`].
pub(super) fn take(path: &Path) -> Result<Held, LedgerError> {
    let lock = lock_path(path);
    let lock_file = open(&lock, 0o666).map_err(|e| io_error(path, "open the lock file", e))?;
    try_lock(&lock_file, path, &lock)?;
    let db = open(path, DB_MODE).map_err(|e| io_error(path, "open the ledger to lock it", e))?;
    try_lock(&db, path, path)?;
    Ok(Held {
        _lock_file: lock_file,
        _db: db,
    })
}

fn open(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
}

fn try_lock(file: &File, path: &Path, lock: &Path) -> Result<(), LedgerError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(LedgerError::Locked {
            path: path.to_owned(),
            lock: lock.to_owned(),
        }),
        Err(TryLockError::Error(e)) => Err(io_error(path, "lock", e)),
    }
}

pub(super) fn io_error(path: &Path, action: &'static str, source: std::io::Error) -> LedgerError {
    LedgerError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_lock_is_on_the_file_not_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let link = dir.path().join("other-name.sqlite3");
        let held = take(&path).unwrap();
        std::fs::hard_link(&path, &link).unwrap();
        match take(&link) {
            Err(LedgerError::Locked { path: p, lock }) => {
                assert_eq!((p, lock), (link.clone(), link.clone()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        // The link's own lock file was free: only the database lock refused.
        assert!(lock_path(&link).exists());
        drop(held);
        take(&link).unwrap();
    }

    #[test]
    fn a_missing_database_is_created_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let _held = take(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
