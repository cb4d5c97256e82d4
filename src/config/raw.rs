//! The config as written: serde structs with every default, before validation.
//!
//! Keys are snake_case exactly as in DESIGN.md; unknown keys are refused (`deny_unknown_fields`) so
//! a typo is an error, not a silently ignored setting. Values stay close to their written form
//! (strings for durations, `i64` for numbers) so validation can name the key in every error.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Every default, in one place.
pub(super) mod defaults {
    pub const LEDGER_PATH: &str = "/var/lib/batchmirror/ledger.sqlite3";
    pub const STORAGE_ROOT: &str = "/var/lib/batchmirror/mirror";
    pub const CRON: &str = "0 */5 * * * *";
    pub const CONCURRENCY: i64 = 8;
    pub const ALERT_MARGIN: &str = "12h";
    pub const MAX_BODY_BYTES: i64 = 1 << 30;
    pub const CONNECT_TIMEOUT: &str = "10s";
    pub const READ_TIMEOUT: &str = "60s";
    pub const DRAIN_TIMEOUT: &str = "30s";
    pub const VALIDATE_JSON: bool = true;
    pub const LOW_SPEED_LIMIT: i64 = 1024;
    pub const LOW_SPEED_TIME: &str = "15s";
    pub const LOG_FORMAT: &str = "text";
    pub const LOG_LEVEL: &str = "info";
    pub const PAGE_SIZE: i64 = 200;
    pub const RETENTION: &str = "3d";
    pub const MAX_RETRIES: i64 = 5;
}

/// No `Debug`: it may hold an API key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub download: RawDownload,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub provider: Vec<RawProvider>,
    #[serde(default)]
    pub metrics: Option<RawMetrics>,
    #[serde(default)]
    pub alerts: Option<RawAlerts>,
    #[serde(default)]
    pub dropfolder: Option<super::dropfolder::RawDropFolder>,
}

/// `[alerts]`: present means enabled. No `Debug`: the webhook URL may hold a token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default = "default_provider_failing_after")]
    pub provider_failing_after: String,
}

fn default_provider_failing_after() -> String {
    "30m".into()
}

/// `[metrics]`: present means enabled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: String,
    #[serde(default)]
    pub allow_remote: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLedger {
    pub path: String,
}

impl Default for RawLedger {
    fn default() -> Self {
        Self {
            path: defaults::LEDGER_PATH.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub root: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            root: defaults::STORAGE_ROOT.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSchedule {
    pub cron: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        Self {
            cron: defaults::CRON.into(),
        }
    }
}

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
            concurrency: defaults::CONCURRENCY,
            alert_margin: defaults::ALERT_MARGIN.into(),
            max_body_bytes: RawBytes::Int(defaults::MAX_BODY_BYTES),
            connect_timeout: defaults::CONNECT_TIMEOUT.into(),
            read_timeout: defaults::READ_TIMEOUT.into(),
            drain_timeout: defaults::DRAIN_TIMEOUT.into(),
            validate_json: defaults::VALIDATE_JSON,
            low_speed_limit: RawBytes::Int(defaults::LOW_SPEED_LIMIT),
            low_speed_time: defaults::LOW_SPEED_TIME.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: defaults::LOG_FORMAT.into(),
            level: defaults::LOG_LEVEL.into(),
        }
    }
}

/// No `Debug`: it may hold an API key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub name: String,
    pub kind: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key_file: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Optional user cap; pacing is adaptive either way.
    #[serde(default)]
    pub requests_per_minute: Option<i64>,
    /// Default by kind ([`super::ProviderKind::default_submits_per_minute`]).
    #[serde(default)]
    pub submits_per_minute: Option<i64>,
    /// Default: the kind's largest page, at most 200.
    #[serde(default)]
    pub page_size: Option<i64>,
    #[serde(default = "default_retention")]
    pub retention: String,
    #[serde(default = "default_max_retries")]
    pub max_retries: i64,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub result_formats: Option<Vec<String>>,
    #[serde(default)]
    pub export_formats: Option<Vec<String>>,
}

fn default_retention() -> String {
    defaults::RETENTION.into()
}

fn default_max_retries() -> i64 {
    defaults::MAX_RETRIES
}

/// A byte count as written: an integer, or a string such as "512MiB".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawBytes {
    Int(i64),
    Str(String),
}

impl Default for RawBytes {
    fn default() -> Self {
        Self::Int(defaults::MAX_BODY_BYTES)
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl Visitor<'_> for BytesVisitor {
            type Value = RawBytes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count: an integer or a string such as \"512MiB\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawBytes, E> {
                Ok(RawBytes::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawBytes, E> {
                i64::try_from(v)
                    .map(RawBytes::Int)
                    .map_err(|_| E::custom(format!("{v} bytes is too large")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBytes, E> {
                Ok(RawBytes::Str(v.to_owned()))
            }
        }

        deserializer.deserialize_any(BytesVisitor)
    }
}

/// Parses "1073741824", "64KiB", "512 MiB", "1GiB" (binary suffixes only, case-insensitive).
pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let hint =
        "write an integer or a number with a binary suffix, e.g. \"64KiB\", \"512MiB\", \"1GiB\"";
    if num.is_empty() {
        return Err(format!("{s:?} is not a byte size: {hint}"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is too large a byte size"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        "tib" => 40,
        other => {
            return Err(format!(
                "{s:?} is not a byte size: unknown suffix {other:?}; {hint}"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large a byte size"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("7b"), Ok(7));
        assert!(parse_bytes("1GB").unwrap_err().contains("unknown suffix"));
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
