//! `[ledger]`: where the SQLite ledger lives. Validated into `Settings::ledger_path`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::fields::{absolute_path, toml_str};
use crate::error::ConfigError;

const DEFAULT_PATH: &str = "/var/lib/batchmirror/ledger.sqlite3";

/// `[ledger]` as written; every key has a default, so the table may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLedger {
    pub path: String,
}

impl Default for RawLedger {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.into(),
        }
    }
}

/// The ledger's absolute path.
pub(super) fn validate(raw: &RawLedger) -> Result<PathBuf, ConfigError> {
    absolute_path("ledger.path", &raw.path)
}

/// The `[ledger]` table of the effective config.
pub(super) fn write_toml(f: &mut fmt::Formatter<'_>, path: &Path) -> fmt::Result {
    writeln!(f, "[ledger]")?;
    writeln!(f, "path = {}", toml_str(&path.to_string_lossy()))
}
