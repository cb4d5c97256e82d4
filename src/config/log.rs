//! `[log]`: how log lines are written (text or JSON) and which are kept (an `EnvFilter`).

use std::fmt;

use serde::Deserialize;

use super::fields::toml_str;
use crate::error::ConfigError;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. "info" or "batchmirror=debug".
    pub level: String,
}

/// `[log]` as written; every key has a default, so the table may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// The format must be known and the level must parse as the subscriber will parse it, so a bad
/// filter fails at start-up instead of silently logging nothing.
pub(super) fn validate(raw: &RawLog) -> Result<LogSettings, ConfigError> {
    let format = match raw.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::invalid(
                "log.format",
                format!("unknown format {other:?}: use \"text\" or \"json\""),
            ));
        }
    };
    let level = raw.level.trim().to_owned();
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        return Err(ConfigError::invalid(
            "log.level",
            format!(
                "{level:?} is not a log filter ({e}); use e.g. \"info\" or \"batchmirror=debug\""
            ),
        ));
    }
    Ok(LogSettings { format, level })
}

impl LogSettings {
    /// The `[log]` table of the effective config.
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match self.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(f, "[log]")?;
        writeln!(f, "format = {}", toml_str(format))?;
        writeln!(f, "level = {}", toml_str(&self.level))
    }
}
