//! `[schedule]`: when a mirror pass starts, as a cron expression with seconds. Validated into
//! `Settings::schedule_cron`.

use std::fmt;

use serde::Deserialize;

use super::fields::{cron, toml_str};
use crate::error::ConfigError;

/// Every five minutes, on the minute.
const DEFAULT_CRON: &str = "0 */5 * * * *";

/// `[schedule]` as written; every key has a default, so the table may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSchedule {
    pub cron: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        Self {
            cron: DEFAULT_CRON.into(),
        }
    }
}

/// The expression, trimmed, once the scheduler has accepted it.
pub(super) fn validate(raw: &RawSchedule) -> Result<String, ConfigError> {
    cron("schedule.cron", &raw.cron)
}

/// The `[schedule]` table of the effective config.
pub(super) fn write_toml(f: &mut fmt::Formatter<'_>, cron: &str) -> fmt::Result {
    writeln!(f, "[schedule]")?;
    writeln!(f, "cron = {}", toml_str(cron))
}
