//! Validation of one `[[provider]]` table: its kind, base URL, API key source, pacing and page
//! keys, and the keys only its kind takes. Every error names its key.

use std::collections::HashMap;

use super::raw::{self, RawProvider};
use super::validate::{absolute_path, duration, int_in_range};
use super::{ProviderKind, ProviderOptions, ProviderSettings, Secret};
use crate::error::ConfigError;
use crate::model::ProviderName;

pub(super) fn validate_provider(
    i: usize,
    p: &RawProvider,
    env: &HashMap<String, String>,
) -> Result<ProviderSettings, ConfigError> {
    let key = |field: &str| format!("provider[{i}].{field}");
    let name = ProviderName::parse(&p.name).map_err(|m| ConfigError::invalid(key("name"), m))?;
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
    let api_key = resolve_api_key(i, p, env)?;
    let max_page = i64::from(kind.max_page_size());
    Ok(ProviderSettings {
        name,
        kind,
        base_url,
        api_key,
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
            p.page_size
                .unwrap_or(max_page.min(raw::defaults::PAGE_SIZE)),
            1,
            max_page,
        )? as u32,
        retention: duration(&key("retention"), &p.retention, true)?,
        max_retries: int_in_range(&key("max_retries"), p.max_retries, 1, 20)? as u32,
        options: provider_options(kind, p, &key)?,
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

fn validate_base_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
    let mut url = url::Url::parse(value.trim()).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("{value:?} is not a URL ({e}); write e.g. \"https://api.extract.page\""),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(ConfigError::invalid(
            key,
            format!("{value:?} must be an http:// or https:// URL with a host"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "credentials do not belong in the URL: remove user:password@ and set api_key_file, \
             api_key_env or api_key",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            key,
            format!("{value:?} must not have a query or fragment"),
        ));
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

/// Exactly one of api_key_file, api_key_env and api_key; the key itself must not be empty.
fn resolve_api_key(
    i: usize,
    p: &RawProvider,
    env: &HashMap<String, String>,
) -> Result<Secret, ConfigError> {
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
            return Err(ConfigError::invalid(
                format!("provider[{i}]"),
                format!("no API key: {one_of}"),
            ));
        }
        [_] => {}
        [a, b] => {
            return Err(ConfigError::invalid(
                format!("provider[{i}]"),
                format!("{a} and {b} are both set: {one_of}"),
            ));
        }
        _ => {
            return Err(ConfigError::invalid(
                format!("provider[{i}]"),
                format!("api_key_file, api_key_env and api_key are all set: {one_of}"),
            ));
        }
    }
    let (field, key) = if let Some(file) = &p.api_key_file {
        let field = format!("provider[{i}].api_key_file");
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
        (field, text.trim_end().to_owned())
    } else if let Some(var) = &p.api_key_env {
        let field = format!("provider[{i}].api_key_env");
        let value = env.get(var).ok_or_else(|| {
            ConfigError::invalid(
                &field,
                format!(
                    "environment variable {var} is not set: export it (e.g. with \
                     EnvironmentFile= in the systemd unit) or use api_key_file"
                ),
            )
        })?;
        (field, value.trim().to_owned())
    } else {
        let field = format!("provider[{i}].api_key");
        (
            field,
            p.api_key.clone().unwrap_or_default().trim().to_owned(),
        )
    };
    if key.is_empty() {
        return Err(ConfigError::invalid(field, "the API key is empty"));
    }
    Ok(Secret::new(key))
}
