//! The mirror root's lock, `<root>/.batchmirror.lock`: one batchmirror writes under a root at a
//! time, whatever ledger it uses, because start-up recovery deletes every `.part` under the root
//! and another writer's would be among them.
//!
//! A `flock` on the lock file, held as long as any clone of the [`Storage`](super::Storage) that
//! took it lives; the file itself stays (removing it would let a third process lock a new inode
//! while the second still holds the old one).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::Arc;

use crate::error::StorageError;

/// The lock file's name in the root. Never a result, a stray or a partial file: whatever walks the
/// root skips it.
pub const ROOT_LOCK: &str = ".batchmirror.lock";

/// Takes the lock of `root` (created if missing), or says another process holds it.
pub(super) fn lock_root(root: &Path) -> Result<Arc<File>, StorageError> {
    let lock = root.join(ROOT_LOCK);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(|e| StorageError::io(&lock, "open", e))?;
    match file.try_lock() {
        Ok(()) => Ok(Arc::new(file)),
        Err(TryLockError::WouldBlock) => Err(StorageError::RootLocked {
            root: root.to_owned(),
            lock,
        }),
        Err(TryLockError::Error(e)) => Err(StorageError::io(&lock, "lock", e)),
    }
}

/// True when another process holds the lock of `root` right now (a daemon is writing there),
/// without taking it for longer than the look: for readers that must not stop a daemon starting.
pub fn root_in_use(root: &Path) -> Result<bool, StorageError> {
    let lock = root.join(ROOT_LOCK);
    let file = match File::open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io(&lock, "open", e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(StorageError::io(&lock, "lock", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_root_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_root(dir.path()).unwrap();
        let clone = held.clone();
        match lock_root(dir.path()) {
            Err(StorageError::RootLocked { root, lock }) => {
                assert_eq!(root, dir.path());
                assert_eq!(lock, dir.path().join(ROOT_LOCK));
            }
            other => panic!("expected RootLocked, got {other:?}"),
        }
        drop(held);
        assert!(lock_root(dir.path()).is_err(), "a clone still holds it");
        assert!(root_in_use(dir.path()).unwrap());
        drop(clone);
        assert!(!root_in_use(dir.path()).unwrap());
        lock_root(dir.path()).unwrap();
    }
}
