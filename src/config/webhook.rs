//! `[webhook]` (where the receiver listens; present means enabled) and each provider's
//! `webhook_secret` / `webhook_secret_file` / `webhook_header`, the proof a delivery must carry.
//!
//! The secret is read like an API key and never printed: `check-config` names the file again or
//! shows an inline secret as a comment.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

use super::fields::{KeyFrom, Secret, absolute_path, toml_str};
use super::kind::ProviderKind;
use crate::error::ConfigError;

/// The header LlamaCloud deliveries carry the secret in unless `webhook_header` says otherwise.
pub const DEFAULT_LLAMACLOUD_HEADER: &str = "authorization";
/// Shorter secrets are guessable; PerfectParser itself asks for at least 8 characters.
const MIN_SECRET_LEN: usize = 8;

/// Where the webhook receiver listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    /// A non-loopback `listen` is refused unless this is set (a reverse proxy is the usual way in).
    pub allow_remote: bool,
}

/// `[webhook]` as written: `listen` has no default, since writing the table turns it on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub listen: String,
    #[serde(default)]
    pub allow_remote: bool,
}

/// How one provider's deliveries prove they come from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAuth {
    /// PerfectParser: the signing secret (HMAC key) or the static `X-Webhook-Secret`; LlamaCloud:
    /// the value of the header set in `webhook_headers` (with or without `Bearer `).
    pub secret: Secret,
    /// The file it was read from, or [`KeyFrom::Inline`].
    pub from: KeyFrom,
    /// LlamaCloud: the header carrying the secret, lowercase; empty for PerfectParser.
    pub header: String,
}

/// The receiver address must parse, and stay on loopback unless remote access is asked for; at
/// least one provider must have a secret, or every delivery would be refused.
pub(super) fn validate(w: &RawWebhook, any_secret: bool) -> Result<WebhookSettings, ConfigError> {
    let listen: SocketAddr = w.listen.trim().parse().map_err(|e| {
        ConfigError::invalid(
            "webhook.listen",
            format!(
                "{:?} is not an address ({e}); use e.g. \"127.0.0.1:8787\"",
                w.listen
            ),
        )
    })?;
    if !listen.ip().is_loopback() && !w.allow_remote {
        return Err(ConfigError::invalid(
            "webhook.listen",
            format!(
                "{listen} is not a loopback address: put a TLS reverse proxy in front and bind \
                 127.0.0.1, or set webhook.allow_remote = true if this is intended"
            ),
        ));
    }
    if !any_secret {
        return Err(ConfigError::invalid(
            "webhook.listen",
            "no [[provider]] has webhook_secret or webhook_secret_file: every delivery would be \
             refused; set one on the providers that push events, or remove [webhook]",
        ));
    }
    Ok(WebhookSettings {
        listen,
        allow_remote: w.allow_remote,
    })
}

/// A provider's webhook keys as written.
pub(super) struct RawProviderWebhook<'a> {
    pub secret: &'a Option<String>,
    pub secret_file: &'a Option<String>,
    pub header: &'a Option<String>,
}

/// The provider's [`WebhookAuth`], None when it has no secret; `at` names the provider in errors.
pub(super) fn provider_auth(
    at: &str,
    kind: ProviderKind,
    raw: &RawProviderWebhook<'_>,
) -> Result<Option<WebhookAuth>, ConfigError> {
    let key = |field: &str| format!("{at}.{field}");
    let pushes = matches!(kind, ProviderKind::PerfectParser | ProviderKind::LlamaCloud);
    for (field, set) in [
        ("webhook_secret", raw.secret.is_some()),
        ("webhook_secret_file", raw.secret_file.is_some()),
        ("webhook_header", raw.header.is_some()),
    ] {
        if set && !pushes {
            return Err(ConfigError::invalid(
                key(field),
                format!(
                    "kind {} has no webhook receiver (perfectparser and llamacloud have); remove it",
                    kind.as_str()
                ),
            ));
        }
    }
    if raw.header.is_some() && kind != ProviderKind::LlamaCloud {
        return Err(ConfigError::invalid(
            key("webhook_header"),
            "only applies to kind llamacloud (PerfectParser signs its deliveries); remove it",
        ));
    }
    let (field, secret, from) = match (raw.secret, raw.secret_file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                key("webhook_secret"),
                "webhook_secret and webhook_secret_file are both set: keep one",
            ));
        }
        (Some(s), None) => (key("webhook_secret"), s.trim().to_owned(), KeyFrom::Inline),
        (None, Some(file)) => {
            let field = key("webhook_secret_file");
            let path = absolute_path(&field, file)?;
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::invalid(
                    &field,
                    format!(
                        "cannot read {}: {e}; create it or point webhook_secret_file at it \
                         (under systemd, LoadCredential= puts it in $CREDENTIALS_DIRECTORY)",
                        path.display()
                    ),
                )
            })?;
            (field, text.trim().to_owned(), KeyFrom::File(path))
        }
    };
    if secret.chars().count() < MIN_SECRET_LEN {
        return Err(ConfigError::invalid(
            field,
            format!(
                "the webhook secret is empty or shorter than {MIN_SECRET_LEN} characters: use \
                 the signing secret the provider gave, or a long random value"
            ),
        ));
    }
    let header = match (kind, raw.header) {
        (ProviderKind::LlamaCloud, Some(h)) => {
            axum::http::HeaderName::from_bytes(h.trim().as_bytes())
                .map_err(|_| {
                    ConfigError::invalid(
                        key("webhook_header"),
                        format!("{h:?} is not an HTTP header name; e.g. \"Authorization\""),
                    )
                })?
                .as_str()
                .to_owned()
        }
        (ProviderKind::LlamaCloud, None) => DEFAULT_LLAMACLOUD_HEADER.to_owned(),
        _ => String::new(),
    };
    Ok(Some(WebhookAuth {
        secret: Secret::new(secret),
        from,
        header,
    }))
}

impl WebhookSettings {
    /// The `[webhook]` table of the effective config.
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[webhook]")?;
        writeln!(f, "listen = {}", toml_str(&self.listen.to_string()))?;
        writeln!(f, "allow_remote = {}", self.allow_remote)
    }
}

impl WebhookAuth {
    /// A provider's webhook keys in the effective config; the secret itself never.
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            KeyFrom::File(path) => writeln!(
                f,
                "webhook_secret_file = {}",
                toml_str(&path.to_string_lossy())
            )?,
            _ => writeln!(
                f,
                "# webhook_secret = <redacted: inline in the config; set webhook_secret_file>"
            )?,
        }
        if !self.header.is_empty() {
            writeln!(f, "webhook_header = {}", toml_str(&self.header))?;
        }
        Ok(())
    }
}
