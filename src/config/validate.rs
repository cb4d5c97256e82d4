//! Validation of the raw config into [`Settings`]: every error names its key and what to do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{self, RawBytes, RawConfig, RawDownload};
use super::{
    AlertSettings, DownloadSettings, LogFormat, LogSettings, MetricsSettings, ProviderSettings,
    Secret, Settings,
};
use crate::error::ConfigError;

pub(super) fn validate(
    raw: RawConfig,
    env: &HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    let ledger_path = absolute_path("ledger.path", &raw.ledger.path)?;
    let storage_root = absolute_path("storage.root", &raw.storage.root)?;
    let schedule_cron = validate_cron(&raw.schedule.cron)?;
    let download = validate_download(&raw.download)?;

    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::invalid(
                "log.format",
                format!("unknown format {other:?}: use \"text\" or \"json\""),
            ));
        }
    };
    let level = raw.log.level.trim().to_owned();
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        return Err(ConfigError::invalid(
            "log.level",
            format!(
                "{level:?} is not a log filter ({e}); use e.g. \"info\" or \"batchmirror=debug\""
            ),
        ));
    }

    if raw.provider.is_empty() {
        return Err(ConfigError::invalid(
            "provider",
            "no [[provider]] configured: add a [[provider]] block with name, kind, base_url and \
             one of api_key_file / api_key_env / api_key (see config/example.toml)",
        ));
    }
    let mut providers: Vec<ProviderSettings> = Vec::with_capacity(raw.provider.len());
    for (i, p) in raw.provider.iter().enumerate() {
        let settings = super::provider::validate_provider(i, p, env)?;
        if let Some(j) = providers.iter().position(|o| o.name == settings.name) {
            return Err(ConfigError::invalid(
                format!("provider[{i}].name"),
                format!(
                    "provider name {:?} is already used by provider[{j}]: names must be unique",
                    settings.name.as_str()
                ),
            ));
        }
        providers.push(settings);
    }

    Ok(Settings {
        ledger_path,
        storage_root,
        schedule_cron,
        download,
        log: LogSettings { format, level },
        metrics: raw.metrics.as_ref().map(validate_metrics).transpose()?,
        alerts: raw.alerts.as_ref().map(validate_alerts).transpose()?,
        dropfolder: raw
            .dropfolder
            .as_ref()
            .map(|d| super::dropfolder::validate(d, &providers))
            .transpose()?,
        providers,
    })
}

fn validate_alerts(a: &raw::RawAlerts) -> Result<AlertSettings, ConfigError> {
    let command = a.command.clone().unwrap_or_default();
    if command.first().is_some_and(|p| p.trim().is_empty()) {
        return Err(ConfigError::invalid(
            "alerts.command",
            "the program name is empty",
        ));
    }
    let webhook_url = match &a.webhook_url {
        Some(u) => {
            // Unlike a base URL, a webhook may carry its token in the query.
            let ok =
                url::Url::parse(u.trim()).is_ok_and(|p| matches!(p.scheme(), "http" | "https"));
            if !ok {
                return Err(ConfigError::invalid(
                    "alerts.webhook_url",
                    "not an http(s) URL (its value is not shown: it may hold a token)",
                ));
            }
            Some(Secret::new(u.trim()))
        }
        None => None,
    };
    if command.is_empty() && webhook_url.is_none() {
        return Err(ConfigError::invalid(
            "alerts",
            "set command (argv list, e.g. [\"/usr/local/bin/page-me\"]) and/or webhook_url, or remove [alerts]",
        ));
    }
    Ok(AlertSettings {
        command,
        webhook_url,
        provider_failing_after: duration(
            "alerts.provider_failing_after",
            &a.provider_failing_after,
            true,
        )?,
    })
}

/// The metrics address must parse, and stay on loopback unless remote access is asked for.
fn validate_metrics(m: &raw::RawMetrics) -> Result<MetricsSettings, ConfigError> {
    let listen: std::net::SocketAddr = m.listen.trim().parse().map_err(|e| {
        ConfigError::invalid(
            "metrics.listen",
            format!(
                "{:?} is not an address ({e}); use e.g. \"127.0.0.1:9464\"",
                m.listen
            ),
        )
    })?;
    if !listen.ip().is_loopback() && !m.allow_remote {
        return Err(ConfigError::invalid(
            "metrics.listen",
            format!(
                "{listen} is not a loopback address: metrics reveal your account's activity; \
                 bind 127.0.0.1, or set metrics.allow_remote = true if this is intended"
            ),
        ));
    }
    Ok(MetricsSettings {
        listen,
        allow_remote: m.allow_remote,
    })
}

pub(super) fn absolute_path(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, "empty path: set a file path"));
    }
    std::path::absolute(value)
        .map_err(|e| ConfigError::invalid(key, format!("cannot make {value:?} absolute: {e}")))
}

/// Parses the expression exactly as the scheduler will, so a bad one fails at start-up.
fn validate_cron(cron: &str) -> Result<String, ConfigError> {
    let cron = cron.trim();
    match tokio_cron_scheduler::Job::new(cron, |_, _| {}) {
        Ok(_) => Ok(cron.to_owned()),
        Err(_) => Err(ConfigError::invalid(
            "schedule.cron",
            format!(
                "{cron:?} is not a valid cron expression: write six fields, seconds first \
                 (sec min hour day-of-month month day-of-week), e.g. \"0 */5 * * * *\" for every \
                 five minutes"
            ),
        )),
    }
}

fn validate_download(d: &RawDownload) -> Result<DownloadSettings, ConfigError> {
    let max_body_bytes = match &d.max_body_bytes {
        RawBytes::Int(n) => u64::try_from(*n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::invalid("download.max_body_bytes", format!("{n} must be at least 1"))
        })?,
        RawBytes::Str(s) => raw::parse_bytes(s)
            .and_then(|n| {
                if n == 0 {
                    Err(format!("{s:?} must be at least 1 byte"))
                } else {
                    Ok(n)
                }
            })
            .map_err(|m| ConfigError::invalid("download.max_body_bytes", m))?,
    };
    let low_speed_limit = match &d.low_speed_limit {
        RawBytes::Int(n) => u64::try_from(*n).map_err(|_| {
            ConfigError::invalid(
                "download.low_speed_limit",
                format!("{n} must be 0 (off) or more bytes per second"),
            )
        })?,
        RawBytes::Str(s) => {
            raw::parse_bytes(s).map_err(|m| ConfigError::invalid("download.low_speed_limit", m))?
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

pub(super) fn int_in_range(key: &str, value: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else if max == i64::from(u32::MAX) {
        Err(ConfigError::invalid(
            key,
            format!("{value} must be at least {min}"),
        ))
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{value} is out of range: use {min} to {max}"),
        ))
    }
}

pub(super) fn duration(key: &str, value: &str, nonzero: bool) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        ConfigError::invalid(
            key,
            format!(
                "{value:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"12h\", \"3d\""
            ),
        )
    })?;
    if nonzero && d.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than zero"));
    }
    Ok(d)
}
