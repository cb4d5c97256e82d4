//! Configuration: TOML file and `BATCHMIRROR__SECTION__KEY` environment overrides, loaded with the
//! `config` crate into a raw serde struct, then validated into [`Settings`] (parsed durations,
//! absolute paths, API keys read and redacted).
//!
//! Every error names the key and what to do; `main` turns it into exit code 2.
//!
//! Layers, later wins: the defaults (all in `raw::defaults`), the TOML file, then environment
//! variables `BATCHMIRROR__SECTION__KEY` (e.g. `BATCHMIRROR__DOWNLOAD__CONCURRENCY=3`).
//! `[[provider]]` entries are set in the file only; their keys can come from the environment via
//! `api_key_env`. The environment is passed in ([`load_with_env`], [`load_str`]) so tests need no process env.

mod display;
mod dropfolder;
mod provider;
mod raw;
mod validate;

pub use display::toml_str;
pub use dropfolder::{DEFAULT_EXCLUDE, DropFolderSettings, WatchMode};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::model::ProviderName;

use raw::RawConfig;
use validate::validate;

/// Prefix of the environment overrides: `BATCHMIRROR__SECTION__KEY`.
pub const ENV_PREFIX: &str = "BATCHMIRROR";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

/// The config `batchmirror demo` uses (`config/demo.toml`), for [`load_str`].
pub const DEMO_CONFIG: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"));

/// A secret that never shows in Debug or Display output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The only way to read the secret: call sites are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The provider APIs batchmirror can mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    ExtractPage,
    LlamaCloud,
    Talonic,
    PerfectParser,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        Self::ExtractPage,
        Self::LlamaCloud,
        Self::Talonic,
        Self::PerfectParser,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExtractPage => "extract_page",
            Self::LlamaCloud => "llamacloud",
            Self::Talonic => "talonic",
            Self::PerfectParser => "perfectparser",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The largest page the API's listing accepts (documented, or the SDK's bound).
    pub fn max_page_size(self) -> u32 {
        match self {
            Self::ExtractPage => 200,
            Self::LlamaCloud => 1000,
            Self::Talonic | Self::PerfectParser => 100,
        }
    }

    /// The provider's published overall request limit, the adaptive pacer's starting cap and
    /// ceiling: PerfectParser documents 150/min per key; the others document none, so they are
    /// not capped until they throttle.
    pub fn documented_requests_per_minute(self) -> Option<u32> {
        match self {
            Self::PerfectParser => Some(150),
            _ => None,
        }
    }

    /// True for the kinds whose adapter can submit files (the drop folder).
    pub fn can_submit(self) -> bool {
        matches!(self, Self::ExtractPage | Self::PerfectParser)
    }

    /// The documented cap on job submissions, apart from the overall rate: PerfectParser allows
    /// 20 `POST /v1/extractions` a minute; the others name none.
    pub fn default_submits_per_minute(self) -> Option<u32> {
        match self {
            Self::PerfectParser => Some(20),
            _ => None,
        }
    }
}

/// Keys that only some kinds take; empty or `None` for the others (validation refuses them there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderOptions {
    /// LlamaCloud: `project_id` query parameter sent with every call.
    pub project_id: Option<String>,
    /// LlamaCloud: `organization_id` query parameter sent with every call.
    pub organization_id: Option<String>,
    /// LlamaCloud: parse-result formats mirrored per item; the first is the item's `.json`
    /// result ("json"), others are stored beside it ("markdown" → `.md`, "text" → `.txt`).
    pub result_formats: Vec<String>,
    /// PerfectParser: export files stored beside each document ("json", "csv", "xlsx").
    pub export_formats: Vec<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

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
}

/// Alert targets: a command given the event as JSON on stdin, and/or a webhook given it as a POST.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Program and arguments, run without a shell.
    pub command: Vec<String>,
    /// The webhook URL; may carry a token, so it is kept redacted.
    pub webhook_url: Option<Secret>,
    /// How long a provider must keep failing before it is alerted about.
    pub provider_failing_after: Duration,
}

/// Where `/metrics` and `/healthz` are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: std::net::SocketAddr,
    /// A non-loopback `listen` is refused unless this is set.
    pub allow_remote: bool,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. "info" or "batchmirror=debug".
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: ProviderName,
    pub kind: ProviderKind,
    /// Base URL without trailing slash, e.g. `https://api.extract.page`.
    pub base_url: url::Url,
    pub api_key: Secret,
    /// The user's cap on requests per minute to this provider, all API calls together (like
    /// rclone's `--tpslimit`); `None` = adaptive pacing alone.
    pub requests_per_minute: Option<u32>,
    /// Job submissions per minute (drop folder), paced one at a time; `None` = no separate cap.
    pub submits_per_minute: Option<u32>,
    /// Page size asked of the batch listing.
    pub page_size: u32,
    /// How long results stay downloadable after completion, when the API gives no expiry.
    pub retention: Duration,
    /// Attempts per request for transient failures (1 = no retry).
    pub max_retries: u32,
    /// Kind-specific keys.
    pub options: ProviderOptions,
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
        .try_deserialize::<RawConfig>()
        .map_err(deserialize_error);
    raw.and_then(|raw| validate(raw, env))
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
