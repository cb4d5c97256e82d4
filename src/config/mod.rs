//! Configuration: TOML file and `BATCHMIRROR__SECTION__KEY` environment overrides, loaded with the
//! `config` crate into a raw serde struct, then validated into [`Settings`] (parsed durations,
//! absolute paths, API keys read and redacted).
//!
//! Every error names the key and what to do; `main` turns it into exit code 2.
//!
//! One file per section holds that section's raw struct with its defaults, its validated
//! settings, its validation and its part of the printed config: `ledger`, `storage`, `schedule`,
//! `download`, `log`, `alerts`, `metrics`, `dropfolder`, `webhook` and `provider`. They share the parsers in
//! `fields` (and `kind`, the provider kinds) and import nothing else from here; this file only
//! composes them, so adding a key touches its section's file and `config/example.toml`.
//!
//! Layers, later wins: the defaults (each section's raw struct), the TOML file, then environment
//! variables `BATCHMIRROR__SECTION__KEY` (e.g. `BATCHMIRROR__DOWNLOAD__CONCURRENCY=3`).
//! `[[provider]]` entries are set in the file only; their keys can come from the environment via
//! `api_key_env`. The environment is passed in ([`load_with_env`], [`load_str`]) so tests need no process env.

mod alerts;
mod download;
mod dropfolder;
mod fields;
mod kind;
mod ledger;
mod log;
mod metrics;
mod provider;
mod schedule;
mod storage;
mod warnings;
mod webhook;

pub use alerts::AlertSettings;
pub use download::DownloadSettings;
pub use dropfolder::{DEFAULT_EXCLUDE, DropFolderSettings, WatchMode};
pub use fields::{KeyFrom, Secret, toml_str};
pub use kind::ProviderKind;
pub use log::{LogFormat, LogSettings};
pub use metrics::MetricsSettings;
pub use provider::{ProviderOptions, ProviderSettings};
pub use warnings::warnings;
pub use webhook::{DEFAULT_LLAMACLOUD_HEADER, WebhookAuth, WebhookSettings};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

/// Prefix of the environment overrides: `BATCHMIRROR__SECTION__KEY`.
pub const ENV_PREFIX: &str = "BATCHMIRROR";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// The config `batchmirror demo` uses (`config/demo.toml`), for [`load_str`].
pub const DEMO_CONFIG: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"));

/// Validated settings: everything the daemon needs, nothing left to parse.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute path of the SQLite ledger.
    pub ledger_path: PathBuf,
    /// Absolute path of the mirror root.
    pub storage_root: PathBuf,
    /// tokio-cron-scheduler expression, with seconds.
    pub schedule_cron: String,
    pub download: DownloadSettings,
    pub log: LogSettings,
    pub providers: Vec<ProviderSettings>,
    /// The Prometheus endpoint, when `[metrics]` is configured.
    pub metrics: Option<MetricsSettings>,
    /// Where alerts go, when `[alerts]` is configured.
    pub alerts: Option<AlertSettings>,
    /// The watched inbox, when `[dropfolder]` is configured.
    pub dropfolder: Option<DropFolderSettings>,
    /// The webhook receiver, when `[webhook]` is configured.
    pub webhook: Option<WebhookSettings>,
}

/// The whole config as written, one field per section. Unknown keys are refused
/// (`deny_unknown_fields`, here and in every section) so a typo is an error, not a silently
/// ignored setting. No `Debug`: it may hold an API key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    ledger: ledger::RawLedger,
    #[serde(default)]
    storage: storage::RawStorage,
    #[serde(default)]
    schedule: schedule::RawSchedule,
    #[serde(default)]
    download: download::RawDownload,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    provider: Vec<provider::RawProvider>,
    #[serde(default)]
    metrics: Option<metrics::RawMetrics>,
    #[serde(default)]
    alerts: Option<alerts::RawAlerts>,
    #[serde(default)]
    dropfolder: Option<dropfolder::RawDropFolder>,
    #[serde(default)]
    webhook: Option<webhook::RawWebhook>,
}

impl RawConfig {
    /// Section by section in a fixed order, so when several keys are bad the same one is
    /// reported; the drop folder comes after the providers because it must name one of them.
    fn validate(self, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        let ledger_path = ledger::validate(&self.ledger)?;
        let storage_root = storage::validate(&self.storage)?;
        let schedule_cron = schedule::validate(&self.schedule)?;
        let download = download::validate(&self.download)?;
        let log = log::validate(&self.log)?;
        let providers = provider::validate(&self.provider, env)?;
        let named: Vec<_> = providers.iter().map(|p| (p.name.clone(), p.kind)).collect();
        Ok(Settings {
            ledger_path,
            storage_root,
            schedule_cron,
            download,
            log,
            metrics: self.metrics.as_ref().map(metrics::validate).transpose()?,
            alerts: self.alerts.as_ref().map(alerts::validate).transpose()?,
            dropfolder: self
                .dropfolder
                .as_ref()
                .map(|d| dropfolder::validate(d, &named))
                .transpose()?,
            webhook: self
                .webhook
                .as_ref()
                .map(|w| webhook::validate(w, providers.iter().any(|p| p.webhook.is_some())))
                .transpose()?,
            providers,
        })
    }
}

/// The effective config as TOML (what `check-config` prints). Secrets are left out: an API key
/// shows as the file or variable it came from, or (inline) as a comment, the webhook URL as a
/// comment; so the output loads back as a config holding no secret.
/// Each section prints its own table; this fixes their order and the blank line between them.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ledger::write_toml(f, &self.ledger_path)?;
        writeln!(f)?;
        storage::write_toml(f, &self.storage_root)?;
        writeln!(f)?;
        schedule::write_toml(f, &self.schedule_cron)?;
        writeln!(f)?;
        self.download.write_toml(f)?;
        writeln!(f)?;
        self.log.write_toml(f)?;
        if let Some(a) = &self.alerts {
            writeln!(f)?;
            a.write_toml(f)?;
        }
        if let Some(d) = &self.dropfolder {
            writeln!(f)?;
            d.write_toml(f)?;
        }
        if let Some(m) = &self.metrics {
            writeln!(f)?;
            m.write_toml(f)?;
        }
        if let Some(w) = &self.webhook {
            writeln!(f)?;
            w.write_toml(f)?;
        }
        for p in &self.providers {
            writeln!(f)?;
            p.write_toml(f)?;
        }
        Ok(())
    }
}

/// Loads and validates the config file at `path`, with `BATCHMIRROR__…` overrides from the process
/// environment (which also resolves `api_key_env`).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_with_env(path, &process_env())
}

/// Like [`load`], with the environment given as a map instead of read from the process.
pub fn load_with_env(path: &Path, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Load {
        path: path.to_owned(),
        message: format!("{e}; check the path given to --config"),
    })?;
    load_source(&text, path, env)
}

/// Loads and validates config text (e.g. [`DEMO_CONFIG`]); `origin` names it in errors.
pub fn load_str(
    toml: &str,
    origin: &str,
    env: &HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    load_source(toml, Path::new(origin), env)
}

/// The process environment; variables that are not valid Unicode are skipped (they cannot be
/// ours, and `std::env::vars` would panic on them).
fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn load_source(
    text: &str,
    origin: &Path,
    env: &HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    reject_provider_env(env)?;
    let overrides: config::Map<String, String> =
        env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::Load {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
    let raw = built
        .clone()
        .try_deserialize::<RawConfig>()
        .map_err(|e| name_the_provider(deserialize_error(e), &built));
    raw.and_then(|raw| raw.validate(env))
        .map_err(|e| name_env_source(e, env))
}

/// Refuses `BATCHMIRROR__PROVIDER…` variables: `[[provider]]` is a list, set in the file only.
fn reject_provider_env(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}PROVIDER").to_ascii_lowercase();
    match env
        .keys()
        .find(|k| k.to_ascii_lowercase().starts_with(&prefix))
    {
        Some(var) => Err(ConfigError::invalid(
            "provider",
            format!(
                "the environment variable {var} cannot set [[provider]] entries: write them in \
                 the config file (API keys can come from the environment with api_key_env)"
            ),
        )),
        None => Ok(()),
    }
}

/// `provider[0].parser_idd` as `provider "acme".parser_idd` when that table's name is readable
/// (serde reports the place in the list; the user looks for the name).
fn name_the_provider(err: ConfigError, built: &config::Config) -> ConfigError {
    let ConfigError::Invalid { key, message } = err else {
        return err;
    };
    let place = key
        .strip_prefix("provider[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, field)| Some((i.parse::<usize>().ok()?, field)))
        .filter(|(_, field)| *field != ".name");
    match place {
        Some((i, field)) => {
            let name = built.get::<String>(&format!("provider[{i}].name")).ok();
            let at = provider::provider_key(i, name.as_deref());
            ConfigError::Invalid {
                key: format!("{at}{field}"),
                message,
            }
        }
        None => ConfigError::Invalid { key, message },
    }
}

/// When the bad value came from a `BATCHMIRROR__…` variable, says so.
fn name_env_source(err: ConfigError, env: &HashMap<String, String>) -> ConfigError {
    let ConfigError::Invalid { key, message } = err else {
        return err;
    };
    let wanted = format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.replace('.', ENV_SEPARATOR)
    );
    match env.keys().find(|k| k.eq_ignore_ascii_case(&wanted)) {
        Some(var) => ConfigError::invalid(
            key,
            format!("{message} (set by the environment variable {var})"),
        ),
        None => ConfigError::Invalid { key, message },
    }
}

/// Turns a `config` deserialisation error into one naming the key, e.g. `download.concurency`.
fn deserialize_error(err: config::ConfigError) -> ConfigError {
    let (key, message) = match err {
        config::ConfigError::Type {
            ref key,
            ref unexpected,
            expected,
            ..
        } => (
            key.clone(),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At {
            ref error, ref key, ..
        } => (key.clone(), error.to_string()),
        config::ConfigError::NotFound(ref key) => (
            Some(dot_after_index(key)),
            "missing: this key has no default, set it".to_owned(),
        ),
        ref other => (None, other.to_string()),
    };
    // serde reports unknown and missing fields against the enclosing table: name the field itself.
    let field = ["unknown field `", "missing field `"].iter().find_map(|p| {
        let rest = message.strip_prefix(p)?;
        Some(rest[..rest.find('`')?].to_owned())
    });
    let key = match (key, field) {
        (Some(k), Some(f)) if !k.is_empty() => format!("{k}.{f}"),
        (_, Some(f)) => f,
        (Some(k), None) => k,
        (None, None) => "config".to_owned(),
    };
    let message = if message.starts_with("unknown field `") {
        format!("{message}; remove it or fix its spelling (see config/example.toml)")
    } else {
        message
    };
    ConfigError::invalid(key, message)
}

/// `config` joins an index and a missing field without a dot (`provider[0]name`): add it.
fn dot_after_index(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| *n != '.' && *n != '[') {
            out.push('.');
        }
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dropfolder;
#[cfg(test)]
mod webhook_tests;
