//! `[alerts]`: where alerts go (a command, a webhook, or both) and how long a provider must fail
//! before one is sent. Present means enabled.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::fields::{Secret, duration, http_url, toml_duration, toml_list};
use crate::error::ConfigError;

/// Alert targets: a command given the event as JSON on stdin, and/or a webhook given it as a POST.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Program and arguments, run without a shell.
    pub command: Vec<String>,
    /// The webhook URL; may carry a token, so it is kept redacted.
    pub webhook_url: Option<Secret>,
    /// How long a provider must keep failing before it is alerted about.
    pub provider_failing_after: Duration,
}

/// `[alerts]` as written. No `Debug`: the webhook URL may hold a token.
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

/// At least one target; the webhook must be http(s), and its value is never echoed.
pub(super) fn validate(a: &RawAlerts) -> Result<AlertSettings, ConfigError> {
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
            if http_url(u).is_none() {
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

impl AlertSettings {
    /// The `[alerts]` table of the effective config; the webhook URL only as a comment.
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[alerts]")?;
        if !self.command.is_empty() {
            writeln!(
                f,
                "command = {}",
                toml_list(self.command.iter().map(String::as_str))
            )?;
        }
        // A comment, not a placeholder: "[redacted]" would load back as a (bad) URL.
        if self.webhook_url.is_some() {
            writeln!(
                f,
                "# webhook_url = <redacted: it may carry a token; set it here or in \
                 BATCHMIRROR__ALERTS__WEBHOOK_URL>"
            )?;
        }
        writeln!(
            f,
            "provider_failing_after = {}",
            toml_duration(self.provider_failing_after)
        )
    }
}
