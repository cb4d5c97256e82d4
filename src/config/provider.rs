//! `[[provider]]`: the accounts mirrored, one table each: its kind, base URL, API key source,
//! pacing and page keys, and the keys only its kind takes. Validated into [`ProviderSettings`];
//! every error names its key by the provider's name, e.g. `provider "acme".page_size` (by its
//! place, `provider[1].name`, only while the name itself is missing, invalid or taken).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::fields::{
    KeyFrom, Secret, absolute_path, duration, int_in_range, toml_duration, toml_list, toml_str,
    validate_base_url,
};
use super::kind::ProviderKind;
use super::webhook::{RawProviderWebhook, WebhookAuth, provider_auth};
use crate::error::ConfigError;
use crate::model::ProviderName;

/// Page size asked for when none is set, unless the kind's largest page is smaller.
const DEFAULT_PAGE_SIZE: i64 = 200;
/// How long results are assumed to stay downloadable when the API gives no expiry.
const DEFAULT_RETENTION: &str = "3d";
const DEFAULT_MAX_RETRIES: i64 = 5;

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

/// One validated `[[provider]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    pub name: ProviderName,
    pub kind: ProviderKind,
    /// Base URL without trailing slash, e.g. `https://api.extract.page`.
    pub base_url: url::Url,
    pub api_key: Secret,
    /// Where the key came from, for messages when the provider refuses it: `api_key_file
    /// <path>`, `api_key_env <VAR>` or `api_key (inline in the config file)`. Never the key.
    pub key_source: String,
    /// The same, as the printed config writes it back.
    pub key_from: KeyFrom,
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
    /// What deliveries to `/hooks/<name>` must prove; None = the receiver refuses them.
    pub webhook: Option<WebhookAuth>,
}

/// One `[[provider]]` table as written. No `Debug`: it may hold an API key.
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
    /// Default by kind ([`ProviderKind::default_submits_per_minute`]).
    #[serde(default)]
    pub submits_per_minute: Option<i64>,
    /// Default: the kind's largest page, at most [`DEFAULT_PAGE_SIZE`].
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
    #[serde(default)]
    pub webhook_secret: Option<String>,
    #[serde(default)]
    pub webhook_secret_file: Option<String>,
    #[serde(default)]
    pub webhook_header: Option<String>,
}

fn default_retention() -> String {
    DEFAULT_RETENTION.into()
}

fn default_max_retries() -> i64 {
    DEFAULT_MAX_RETRIES
}

/// Every `[[provider]]`: at least one, each valid, names unique (the ledger and `[dropfolder]`
/// refer to a provider by its name).
pub(super) fn validate(
    raw: &[RawProvider],
    env: &HashMap<String, String>,
) -> Result<Vec<ProviderSettings>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid(
            "provider",
            "no [[provider]] configured: add a [[provider]] block with name, kind, base_url and \
             one of api_key_file / api_key_env / api_key (see config/example.toml)",
        ));
    }
    // Names first: an error key naming a provider by its name must name only one.
    for (i, p) in raw.iter().enumerate() {
        if let Some(j) = raw[..i].iter().position(|o| o.name == p.name) {
            return Err(ConfigError::invalid(
                format!("provider[{i}].name"),
                format!(
                    "provider name {:?} is already used by provider[{j}]: names must be unique",
                    p.name
                ),
            ));
        }
    }
    raw.iter()
        .enumerate()
        .map(|(i, p)| validate_one(i, p, env))
        .collect()
}

/// How error keys name the provider at place `i` with `name` as written: by its name when that
/// is a valid one (what the user wrote and looks for), else by its place.
pub(super) fn provider_key(i: usize, name: Option<&str>) -> String {
    match name.map(ProviderName::parse) {
        Some(Ok(n)) => format!("provider {:?}", n.as_str()),
        _ => format!("provider[{i}]"),
    }
}

/// One table; `i` is its place in the list.
fn validate_one(
    i: usize,
    p: &RawProvider,
    env: &HashMap<String, String>,
) -> Result<ProviderSettings, ConfigError> {
    let name = ProviderName::parse(&p.name)
        .map_err(|m| ConfigError::invalid(format!("provider[{i}].name"), m))?;
    let at = provider_key(i, Some(&p.name));
    let key = |field: &str| format!("{at}.{field}");
    let kind = ProviderKind::parse(&p.kind).ok_or_else(|| {
        let kinds: Vec<_> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
        ConfigError::invalid(
            key("kind"),
            format!(
                "unsupported kind {:?}: supported kinds are {}",
                p.kind,
                kinds.join(", ")
            ),
        )
    })?;
    let base_url = validate_base_url(&key("base_url"), &p.base_url)?;
    let (api_key, key_source, key_from) = resolve_api_key(&at, p, env)?;
    let max_page = i64::from(kind.max_page_size());
    Ok(ProviderSettings {
        name,
        kind,
        base_url,
        api_key,
        key_source,
        key_from,
        requests_per_minute: p
            .requests_per_minute
            .map(|n| int_in_range(&key("requests_per_minute"), n, 1, i64::from(u32::MAX)))
            .transpose()?
            .map(|n| n as u32),
        submits_per_minute: match p
            .submits_per_minute
            .or(kind.default_submits_per_minute().map(i64::from))
        {
            Some(_) if !kind.can_submit() => {
                return Err(ConfigError::invalid(
                    key("submits_per_minute"),
                    format!("kind {} takes no submissions; remove it", kind.as_str()),
                ));
            }
            Some(n) => Some(int_in_range(&key("submits_per_minute"), n, 1, 10_000)? as u32),
            None => None,
        },
        page_size: int_in_range(
            &key("page_size"),
            p.page_size.unwrap_or(max_page.min(DEFAULT_PAGE_SIZE)),
            1,
            max_page,
        )? as u32,
        retention: duration(&key("retention"), &p.retention, true)?,
        max_retries: int_in_range(&key("max_retries"), p.max_retries, 1, 20)? as u32,
        options: provider_options(kind, p, &key)?,
        webhook: provider_auth(
            &at,
            kind,
            &RawProviderWebhook {
                secret: &p.webhook_secret,
                secret_file: &p.webhook_secret_file,
                header: &p.webhook_header,
            },
        )?,
    })
}

/// Kind-specific keys: each is accepted only for its kind, and lists only hold known values.
fn provider_options(
    kind: ProviderKind,
    p: &RawProvider,
    key: &dyn Fn(&str) -> String,
) -> Result<ProviderOptions, ConfigError> {
    let only_for = |field: &str, present: bool, owner: ProviderKind| {
        if present && kind != owner {
            Err(ConfigError::invalid(
                key(field),
                format!(
                    "only applies to kind {}; remove it from this {} provider",
                    owner.as_str(),
                    kind.as_str()
                ),
            ))
        } else {
            Ok(())
        }
    };
    only_for(
        "project_id",
        p.project_id.is_some(),
        ProviderKind::LlamaCloud,
    )?;
    only_for(
        "organization_id",
        p.organization_id.is_some(),
        ProviderKind::LlamaCloud,
    )?;
    only_for(
        "result_formats",
        p.result_formats.is_some(),
        ProviderKind::LlamaCloud,
    )?;
    only_for(
        "export_formats",
        p.export_formats.is_some(),
        ProviderKind::PerfectParser,
    )?;
    let list = |field: &str, values: &Option<Vec<String>>, allowed: &[&str], default: &[&str]| {
        let values = values
            .clone()
            .unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect());
        for v in &values {
            if !allowed.contains(&v.as_str()) {
                return Err(ConfigError::invalid(
                    key(field),
                    format!("unknown format {v:?}: use any of {}", allowed.join(", ")),
                ));
            }
        }
        Ok(values)
    };
    let result_formats = if kind == ProviderKind::LlamaCloud {
        let f = list(
            "result_formats",
            &p.result_formats,
            &["json", "markdown", "text"],
            &["json"],
        )?;
        if f.first().map(String::as_str) != Some("json") {
            return Err(ConfigError::invalid(
                key("result_formats"),
                "must start with \"json\" (the item's result); add markdown or text after it",
            ));
        }
        f
    } else {
        Vec::new()
    };
    let export_formats = list(
        "export_formats",
        &p.export_formats,
        &["json", "csv", "xlsx"],
        &[],
    )?;
    let nonempty = |field: &str, v: &Option<String>| match v {
        Some(s) if s.trim().is_empty() => {
            Err(ConfigError::invalid(key(field), "must not be empty"))
        }
        _ => Ok(v.clone()),
    };
    Ok(ProviderOptions {
        project_id: nonempty("project_id", &p.project_id)?,
        organization_id: nonempty("organization_id", &p.organization_id)?,
        result_formats,
        export_formats,
    })
}

/// Exactly one of api_key_file, api_key_env and api_key; the key itself must not be empty. The
/// key comes back with where it came from.
fn resolve_api_key(
    at: &str,
    p: &RawProvider,
    env: &HashMap<String, String>,
) -> Result<(Secret, String, KeyFrom), ConfigError> {
    let sources: Vec<&str> = [
        ("api_key_file", p.api_key_file.is_some()),
        ("api_key_env", p.api_key_env.is_some()),
        ("api_key", p.api_key.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect();
    let one_of = "set exactly one of api_key_file (a file holding the key), api_key_env (the name \
                  of an environment variable holding it) or api_key (the key itself)";
    match sources.as_slice() {
        [] => {
            return Err(ConfigError::invalid(at, format!("no API key: {one_of}")));
        }
        [_] => {}
        [a, b] => {
            return Err(ConfigError::invalid(
                at,
                format!("{a} and {b} are both set: {one_of}"),
            ));
        }
        _ => {
            return Err(ConfigError::invalid(
                at,
                format!("api_key_file, api_key_env and api_key are all set: {one_of}"),
            ));
        }
    }
    let (field, key, source, from) = if let Some(file) = &p.api_key_file {
        let field = format!("{at}.api_key_file");
        let path = absolute_path(&field, file)?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::invalid(
                &field,
                format!(
                    "cannot read {}: {e}; create it or point api_key_file at the key file",
                    path.display()
                ),
            )
        })?;
        if text.trim().is_empty() {
            return Err(ConfigError::invalid(
                &field,
                format!("{} is empty: put the API key in it", path.display()),
            ));
        }
        let source = format!("api_key_file {}", path.display());
        (
            field,
            text.trim_end().to_owned(),
            source,
            KeyFrom::File(path),
        )
    } else if let Some(var) = &p.api_key_env {
        let field = format!("{at}.api_key_env");
        let value = env.get(var).ok_or_else(|| {
            ConfigError::invalid(
                &field,
                format!(
                    "environment variable {var} is not set: export it (e.g. with \
                     EnvironmentFile= in the systemd unit) or use api_key_file"
                ),
            )
        })?;
        let source = format!("api_key_env {var}");
        (
            field,
            value.trim().to_owned(),
            source,
            KeyFrom::Env(var.clone()),
        )
    } else {
        let field = format!("{at}.api_key");
        (
            field,
            p.api_key.clone().unwrap_or_default().trim().to_owned(),
            "api_key (inline in the config file)".to_owned(),
            KeyFrom::Inline,
        )
    };
    if key.is_empty() {
        return Err(ConfigError::invalid(field, "the API key is empty"));
    }
    Ok((Secret::new(key), source, from))
}

impl ProviderSettings {
    /// This provider's `[[provider]]` table of the effective config. The key is never printed: a
    /// file or variable is named again, an inline key is a comment (a placeholder value would
    /// load back as a wrong key).
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[provider]]")?;
        writeln!(f, "name = {}", toml_str(self.name.as_str()))?;
        writeln!(f, "kind = {}", toml_str(self.kind.as_str()))?;
        writeln!(f, "base_url = {}", toml_str(self.base_url.as_str()))?;
        match &self.key_from {
            KeyFrom::File(path) => {
                writeln!(f, "api_key_file = {}", toml_str(&path.to_string_lossy()))?
            }
            KeyFrom::Env(var) => writeln!(f, "api_key_env = {}", toml_str(var))?,
            KeyFrom::Inline => writeln!(
                f,
                "# api_key = <redacted: inline in the config; set api_key_file or api_key_env>"
            )?,
        }
        match (
            self.requests_per_minute,
            self.kind.documented_requests_per_minute(),
        ) {
            (Some(n), _) => writeln!(f, "requests_per_minute = {n}")?,
            (None, Some(d)) => writeln!(
                f,
                "# requests_per_minute: adaptive, starting at the documented {d}/min"
            )?,
            (None, None) => writeln!(
                f,
                "# requests_per_minute: adaptive, no cap until the provider throttles"
            )?,
        }
        if let Some(n) = self.submits_per_minute {
            writeln!(f, "submits_per_minute = {n}")?;
        }
        writeln!(f, "page_size = {}", self.page_size)?;
        writeln!(f, "retention = {}", toml_duration(self.retention))?;
        writeln!(f, "max_retries = {}", self.max_retries)?;
        let o = &self.options;
        for (k, v) in [
            ("project_id", &o.project_id),
            ("organization_id", &o.organization_id),
        ] {
            if let Some(v) = v {
                writeln!(f, "{k} = {}", toml_str(v))?;
            }
        }
        for (k, v) in [
            ("result_formats", &o.result_formats),
            ("export_formats", &o.export_formats),
        ] {
            if !v.is_empty() {
                writeln!(f, "{k} = {}", toml_list(v.iter().map(String::as_str)))?;
            }
        }
        self.webhook.as_ref().map_or(Ok(()), |w| w.write_toml(f))
    }
}
