//! The start-up probe of a directory the daemon must write to: every step a publish takes
//! (create, write, fsync, rename, directory fsync, remove) tried once on a small file, so an
//! unwritable mirror or ledger directory is one clear error before any download, not one failed
//! write per item.

use std::path::Path;

use bytes::Bytes;

use super::publish::{create_part, sync_dir_at};
use crate::error::StorageError;

/// What a probe found: the directory takes writes; `free_bytes` when the system says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    pub free_bytes: Option<u64>,
}

/// Creates `dir` if needed and publishes and removes a probe file in it. The probe's names are
/// hidden and end neither in `.part` nor `.json`, so nothing else ever mistakes them.
pub fn probe_dir(dir: &Path) -> Result<Probed, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, "create", e))?;
    let pid = std::process::id();
    let first = dir.join(format!(".batchmirror-probe-{pid}"));
    let second = dir.join(format!(".batchmirror-probe-{pid}.renamed"));
    let attempt = || -> Result<(), StorageError> {
        create_part(&first, &[Bytes::from_static(b"probe")])?
            .sync_all()
            .map_err(|e| StorageError::io(&first, "fsync", e))?;
        std::fs::rename(&first, &second)
            .map_err(|e| StorageError::io(&second, "rename into", e))?;
        sync_dir_at(dir, std::fs::File::sync_all)?;
        std::fs::remove_file(&second).map_err(|e| StorageError::io(&second, "remove", e))
    };
    let result = attempt();
    if result.is_err() {
        let _ = std::fs::remove_file(&first);
        let _ = std::fs::remove_file(&second);
    }
    result.map(|()| Probed {
        free_bytes: free_bytes(dir),
    })
}

fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let st = rustix::fs::statvfs(dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}
