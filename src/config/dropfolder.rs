//! `[dropfolder]`: the watched inbox whose files are submitted as extraction jobs, validated into
//! [`DropFolderSettings`] and printed back as its TOML table. The folders `done/`, `failed/` and
//! `outbox/` sit next to the inbox.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::fields::{absolute_path, duration, int_in_range, toml_duration, toml_list, toml_str};
use super::kind::ProviderKind;
use crate::error::ConfigError;
use crate::model::{ProviderName, SubmitOptions};

/// Names that are never submitted: partial downloads, hidden files, editor and temp files.
pub const DEFAULT_EXCLUDE: [&str; 4] = ["*.part", ".*", "~*", "*.tmp"];

/// How the inbox is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify, except on network and FUSE mounts (no events arrive there), where it polls.
    Auto,
    Inotify,
    Poll,
}

impl WatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Inotify => "inotify",
            Self::Poll => "poll",
        }
    }
}

/// The validated `[dropfolder]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DropFolderSettings {
    /// The inbox, absolute.
    pub inbox: PathBuf,
    /// Next to the inbox: accepted originals, refused originals, results.
    pub done: PathBuf,
    pub failed: PathBuf,
    pub outbox: PathBuf,
    /// The `[[provider]]` jobs are submitted to (kind extract_page or perfectparser).
    pub provider: ProviderName,
    /// How long size and mtime must stay unchanged before a file is taken.
    pub settle: Duration,
    /// Full rescans of the inbox (events can be lost; files can arrive while we are down).
    pub rescan: Duration,
    pub mode: WatchMode,
    pub include: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
    /// Larger files are refused (moved to `failed/`) without being read.
    pub max_file_bytes: u64,
    /// The same content dropped again reuses the first job instead of paying for another.
    pub dedupe: bool,
    /// How often the provider is asked about jobs still running.
    pub result_poll: Duration,
    pub submit: SubmitOptions,
}

/// `[dropfolder]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDropFolder {
    pub path: String,
    pub provider: String,
    #[serde(default = "default_settle")]
    pub settle: String,
    #[serde(default = "default_rescan")]
    pub rescan: String,
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: i64,
    #[serde(default = "default_dedupe")]
    pub dedupe: bool,
    #[serde(default = "default_result_poll")]
    pub result_poll: String,
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub parser_id: Option<String>,
}

fn default_settle() -> String {
    "2s".into()
}
fn default_rescan() -> String {
    "5m".into()
}
fn default_mode() -> String {
    "auto".into()
}
fn default_max_file_bytes() -> i64 {
    100 << 20
}
fn default_dedupe() -> bool {
    true
}
fn default_result_poll() -> String {
    "5s".into()
}

fn patterns(key: &str, values: &[String]) -> Result<Vec<glob::Pattern>, ConfigError> {
    values
        .iter()
        .map(|v| {
            glob::Pattern::new(v)
                .map_err(|e| ConfigError::invalid(key, format!("{v:?} is not a glob pattern: {e}")))
        })
        .collect()
}

/// `providers` are the validated `[[provider]]` entries, by name and kind: the one named must
/// exist and take submissions, and decides which submit options are allowed.
pub(super) fn validate(
    d: &RawDropFolder,
    providers: &[(ProviderName, ProviderKind)],
) -> Result<DropFolderSettings, ConfigError> {
    let inbox = absolute_path("dropfolder.path", &d.path)?;
    let parent = match inbox.parent() {
        Some(p) if inbox.file_name().is_some() => p.to_owned(),
        _ => {
            return Err(ConfigError::invalid(
                "dropfolder.path",
                "must name a folder below another one (done/, failed/ and outbox/ go beside it)",
            ));
        }
    };
    let (target_name, target_kind) = providers
        .iter()
        .find(|(name, _)| name.as_str() == d.provider)
        .ok_or_else(|| {
            let names: Vec<_> = providers.iter().map(|(name, _)| name.as_str()).collect();
            ConfigError::invalid(
                "dropfolder.provider",
                format!(
                    "no [[provider]] is named {:?}; configured: {}",
                    d.provider,
                    names.join(", ")
                ),
            )
        })?;
    if !target_kind.can_submit() {
        let kinds: Vec<_> = ProviderKind::ALL
            .into_iter()
            .filter(|k| k.can_submit())
            .map(|k| k.as_str())
            .collect();
        return Err(ConfigError::invalid(
            "dropfolder.provider",
            format!(
                "provider {:?} is of kind {}, which cannot take submissions; the drop folder \
                 supports kinds {}",
                d.provider,
                target_kind.as_str(),
                kinds.join(", ")
            ),
        ));
    }
    let is_perfect = *target_kind == ProviderKind::PerfectParser;
    let only_extract_page = |key: &str, present: bool| {
        if present && is_perfect {
            Err(ConfigError::invalid(
                key,
                "only applies to extract_page providers; remove it",
            ))
        } else {
            Ok(())
        }
    };
    only_extract_page("dropfolder.engine", d.engine.is_some())?;
    only_extract_page("dropfolder.options", d.options.is_some())?;
    let parser_id = match (&d.parser_id, is_perfect) {
        (Some(p), true) if !p.trim().is_empty() => Some(p.trim().to_owned()),
        (_, true) => {
            return Err(ConfigError::invalid(
                "dropfolder.parser_id",
                "required for a perfectparser provider: the id of the parser to run (prs_…)",
            ));
        }
        (Some(_), false) => {
            return Err(ConfigError::invalid(
                "dropfolder.parser_id",
                "only applies to perfectparser providers; remove it",
            ));
        }
        (None, false) => None,
    };
    let mode = match d.mode.trim() {
        "auto" => WatchMode::Auto,
        "inotify" => WatchMode::Inotify,
        "poll" => WatchMode::Poll,
        other => {
            return Err(ConfigError::invalid(
                "dropfolder.mode",
                format!("unknown mode {other:?}: use \"auto\", \"inotify\" or \"poll\""),
            ));
        }
    };
    let include = patterns(
        "dropfolder.include",
        d.include.as_deref().unwrap_or(&["*".to_owned()]),
    )?;
    let default_exclude: Vec<String> = DEFAULT_EXCLUDE.iter().map(|s| (*s).to_owned()).collect();
    let exclude = patterns(
        "dropfolder.exclude",
        d.exclude.as_deref().unwrap_or(&default_exclude),
    )?;
    Ok(DropFolderSettings {
        done: parent.join("done"),
        failed: parent.join("failed"),
        outbox: parent.join("outbox"),
        inbox,
        provider: target_name.clone(),
        settle: duration("dropfolder.settle", &d.settle, false)?,
        rescan: duration("dropfolder.rescan", &d.rescan, true)?,
        mode,
        include,
        exclude,
        max_file_bytes: int_in_range("dropfolder.max_file_bytes", d.max_file_bytes, 1, i64::MAX)?
            as u64,
        dedupe: d.dedupe,
        result_poll: duration("dropfolder.result_poll", &d.result_poll, true)?,
        submit: SubmitOptions {
            engine: d.engine.clone(),
            options_json: d
                .options
                .as_ref()
                .map(|o| serde_json::Value::Object(o.clone()).to_string()),
            parser_id,
        },
    })
}

impl DropFolderSettings {
    /// The `[dropfolder]` table of the effective config. The JSON options are shown as a comment:
    /// they were written as an inline table, and JSON is how they are sent.
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let globs = |p: &[glob::Pattern]| toml_list(p.iter().map(glob::Pattern::as_str));
        writeln!(f, "[dropfolder]")?;
        writeln!(f, "path = {}", toml_str(&self.inbox.display().to_string()))?;
        writeln!(f, "provider = {}", toml_str(self.provider.as_str()))?;
        writeln!(f, "settle = {}", toml_duration(self.settle))?;
        writeln!(f, "rescan = {}", toml_duration(self.rescan))?;
        writeln!(f, "mode = {}", toml_str(self.mode.as_str()))?;
        writeln!(f, "include = {}", globs(&self.include))?;
        writeln!(f, "exclude = {}", globs(&self.exclude))?;
        writeln!(f, "max_file_bytes = {}", self.max_file_bytes)?;
        writeln!(f, "dedupe = {}", self.dedupe)?;
        writeln!(f, "result_poll = {}", toml_duration(self.result_poll))?;
        if let Some(e) = &self.submit.engine {
            writeln!(f, "engine = {}", toml_str(e))?;
        }
        if let Some(o) = &self.submit.options_json {
            writeln!(f, "# options (as JSON): {o}")?;
        }
        if let Some(p) = &self.submit.parser_id {
            writeln!(f, "parser_id = {}", toml_str(p))?;
        }
        Ok(())
    }
}
