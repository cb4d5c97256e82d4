//! `[storage]`: the root of the mirror on disk. Validated into `Settings::storage_root`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::fields::{absolute_path, toml_str};
use crate::error::ConfigError;

const DEFAULT_ROOT: &str = "/var/lib/batchmirror/mirror";

/// `[storage]` as written; every key has a default, so the table may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub root: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            root: DEFAULT_ROOT.into(),
        }
    }
}

/// The mirror root, absolute.
pub(super) fn validate(raw: &RawStorage) -> Result<PathBuf, ConfigError> {
    absolute_path("storage.root", &raw.root)
}

/// The `[storage]` table of the effective config.
pub(super) fn write_toml(f: &mut fmt::Formatter<'_>, root: &Path) -> fmt::Result {
    writeln!(f, "[storage]")?;
    writeln!(f, "root = {}", toml_str(&root.to_string_lossy()))
}
