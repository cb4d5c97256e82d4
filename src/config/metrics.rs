//! `[metrics]`: where `/metrics` and `/healthz` are served. Present means enabled.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

use super::fields::toml_str;
use crate::error::ConfigError;

/// Where `/metrics` and `/healthz` are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// A non-loopback `listen` is refused unless this is set.
    pub allow_remote: bool,
}

/// `[metrics]` as written: `listen` has no default, since writing the table is how metrics are
/// turned on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: String,
    #[serde(default)]
    pub allow_remote: bool,
}

/// The metrics address must parse, and stay on loopback unless remote access is asked for.
pub(super) fn validate(m: &RawMetrics) -> Result<MetricsSettings, ConfigError> {
    let listen: SocketAddr = m.listen.trim().parse().map_err(|e| {
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

impl MetricsSettings {
    /// The `[metrics]` table of the effective config.
    pub(super) fn write_toml(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[metrics]")?;
        writeln!(f, "listen = {}", toml_str(&self.listen.to_string()))?;
        writeln!(f, "allow_remote = {}", self.allow_remote)
    }
}
