//! The start-up checks of the directories the daemon writes to (`ledger.path`'s directory and
//! `storage.root`), run before the ledger is opened and by `check-config`: a directory that takes
//! no writes is one message and exit 2 before anything is downloaded.

use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::error::Error;
use crate::storage::probe_dir;

/// One directory that passed, with its free space when the system says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub key: &'static str,
    pub path: PathBuf,
    pub free_bytes: Option<u64>,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: writable", self.key, self.path.display())?;
        match self.free_bytes {
            Some(n) => write!(f, ", {:.1} GB free", n as f64 / 1e9),
            None => Ok(()),
        }
    }
}

/// Probes the ledger's directory and the mirror root (blocking: a few syscalls each).
pub fn preflight(settings: &Settings) -> Result<Vec<Checked>, Error> {
    let ledger_dir = match settings.ledger_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    [
        ("ledger.path", ledger_dir.as_path()),
        ("storage.root", settings.storage_root.as_path()),
    ]
    .into_iter()
    .map(|(key, dir)| check(key, dir))
    .collect()
}

fn check(key: &'static str, dir: &Path) -> Result<Checked, Error> {
    let probed = probe_dir(dir).map_err(|source| Error::Preflight {
        key,
        path: dir.to_owned(),
        source,
    })?;
    Ok(Checked {
        key,
        path: dir.to_owned(),
        free_bytes: probed.free_bytes,
    })
}
