//! `[download]`: how results are fetched: concurrency, timeouts, size and speed limits, and the
//! deadline margin that raises a warning.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::fields::{RawBytes, duration, int_in_range, parse_bytes, toml_bytes, toml_duration};
use crate::error::ConfigError;

/// The validated `[download]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadSettings {
    /// Downloads in flight at once, across providers. 1..=256.
    pub concurrency: usize,
    /// Warn when an un-mirrored item's deadline is closer than this.
    pub alert_margin: Duration,
    /// Largest result accepted, counted on decoded bytes.
    pub max_body_bytes: u64,
    /// Connect timeout for every request.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before giving up on it.
    pub read_timeout: Duration,
    /// How long a stopping daemon waits for in-flight downloads.
    pub drain_timeout: Duration,
    /// Check that a result parses as JSON before publishing it.
    pub validate_json: bool,
    /// A body slower than this many bytes/s over `low_speed_time` is abandoned (0 = never).
    pub low_speed_limit: u64,
    /// The window of `low_speed_limit`, counted while waiting on the network.
    pub low_speed_time: Duration,
}

/// `[download]` as written; every key has a default, so the table may be left out. Values stay
/// in their written form (strings, `i64`) so validation can name the key in every error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDownload {
    pub concurrency: i64,
    pub alert_margin: String,
    pub max_body_bytes: RawBytes,
    pub connect_timeout: String,
    pub read_timeout: String,
    pub drain_timeout: String,
    pub validate_json: bool,
    pub low_speed_limit: RawBytes,
    pub low_speed_time: String,
}

impl Default for RawDownload {
    fn default() -> Self {
        Self {
            concurrency: 8,
            alert_margin: "12h".into(),
            max_body_bytes: RawBytes::Int(1 << 30),
            connect_timeout: "10s".into(),
            read_timeout: "60s".into(),
            drain_timeout: "30s".into(),
            validate_json: true,
            low_speed_limit: RawBytes::Int(1024),
            low_speed_time: "15s".into(),
        }
    }
}

pub(super) fn validate(d: &RawDownload) -> Result<DownloadSettings, ConfigError> {
    let max_body_bytes = match &d.max_body_bytes {
        RawBytes::Int(n) => u64::try_from(*n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::invalid("download.max_body_bytes", format!("{n} must be at least 1"))
        })?,
        RawBytes::Str(s) => parse_bytes(s)
            .and_then(|n| {
                if n == 0 {
                    Err(format!("{s:?} must be at least 1 byte"))
                } else {
                    Ok(n)
                }
            })
            .map_err(|m| ConfigError::invalid("download.max_body_bytes", m))?,
    };
    // Zero is allowed here: it turns the low-speed check off.
    let low_speed_limit = match &d.low_speed_limit {
        RawBytes::Int(n) => u64::try_from(*n).map_err(|_| {
            ConfigError::invalid(
                "download.low_speed_limit",
                format!("{n} must be 0 (off) or more bytes per second"),
            )
        })?,
        RawBytes::Str(s) => {
            parse_bytes(s).map_err(|m| ConfigError::invalid("download.low_speed_limit", m))?
        }
    };
    Ok(DownloadSettings {
        concurrency: int_in_range("download.concurrency", d.concurrency, 1, 256)? as usize,
        alert_margin: duration("download.alert_margin", &d.alert_margin, false)?,
        max_body_bytes,
        connect_timeout: duration("download.connect_timeout", &d.connect_timeout, true)?,
        read_timeout: duration("download.read_timeout", &d.read_timeout, true)?,
        drain_timeout: duration("download.drain_timeout", &d.drain_timeout, false)?,
        validate_json: d.validate_json,
        low_speed_limit,
        low_speed_time: duration("download.low_speed_time", &d.low_speed_time, true)?,
    })
}

impl DownloadSettings {
    /// The `[download]` table of the effective config.
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[download]")?;
        writeln!(f, "concurrency = {}", self.concurrency)?;
        writeln!(f, "alert_margin = {}", toml_duration(self.alert_margin))?;
        writeln!(f, "max_body_bytes = {}", toml_bytes(self.max_body_bytes))?;
        writeln!(
            f,
            "connect_timeout = {}",
            toml_duration(self.connect_timeout)
        )?;
        writeln!(f, "read_timeout = {}", toml_duration(self.read_timeout))?;
        writeln!(f, "drain_timeout = {}", toml_duration(self.drain_timeout))?;
        writeln!(f, "validate_json = {}", self.validate_json)?;
        writeln!(f, "low_speed_limit = {}", self.low_speed_limit)?;
        writeln!(f, "low_speed_time = {}", toml_duration(self.low_speed_time))
    }
}
