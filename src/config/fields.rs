//! The leaf of the config: parsers for the kinds of value many sections share (paths, durations,
//! integer ranges, byte counts, http URLs, cron expressions), the [`Secret`] they may yield (and
//! [`KeyFrom`], where it came from), and the helpers that print values back as TOML.
//!
//! It imports no section file, so every section can use it without forming a cycle. Each parser
//! takes the key it is reading, so its errors name the key like every other config error.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::error::ConfigError;

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

/// Which key gave a secret (an API key, a webhook secret): the printed config names the file or variable again (neither is a
/// secret), and an inline key only as a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    File(std::path::PathBuf),
    Env(String),
    Inline,
}

/// `value` made absolute against the working directory; an empty value is refused.
pub(super) fn absolute_path(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, "empty path: set a file path"));
    }
    std::path::absolute(value)
        .map_err(|e| ConfigError::invalid(key, format!("cannot make {value:?} absolute: {e}")))
}

/// `value` if it lies in `min..=max`; a `max` of `u32::MAX` stands for "no upper bound" and is
/// left out of the message.
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

/// A humantime duration ("500ms", "12h", "3d"); `nonzero` refuses "0s" where zero would mean
/// "never" or "at once" and is surely a mistake.
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

/// Parses the expression exactly as the scheduler will, so a bad one fails at start-up.
pub(super) fn cron(key: &str, value: &str) -> Result<String, ConfigError> {
    let cron = value.trim();
    match tokio_cron_scheduler::Job::new(cron, |_, _| {}) {
        Ok(_) => Ok(cron.to_owned()),
        Err(_) => Err(ConfigError::invalid(
            key,
            format!(
                "{cron:?} is not a valid cron expression: write six fields, seconds first \
                 (sec min hour day-of-month month day-of-week), e.g. \"0 */5 * * * *\" for every \
                 five minutes"
            ),
        )),
    }
}

/// `value` as an http(s) URL, or `None`. No message of its own: the caller words it, since the
/// value may hold a token that must not be echoed.
pub(super) fn http_url(value: &str) -> Option<url::Url> {
    url::Url::parse(value.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// A byte count as written: an integer, or a string such as "512MiB".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawBytes {
    Int(i64),
    Str(String),
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

/// `s` as a TOML basic string, escaped (for configs written by tools and tests, too).
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A list of strings as a TOML array of basic strings.
pub(super) fn toml_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<String> = items.into_iter().map(toml_str).collect();
    format!("[{}]", v.join(", "))
}

/// A duration as the humantime string it loads back from, e.g. "1h 30m".
pub(super) fn toml_duration(d: Duration) -> String {
    toml_str(&humantime::format_duration(d).to_string())
}

/// "1GiB" when the count is a whole number of a binary unit, else the plain integer.
pub(super) fn toml_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return toml_str(&format!("{}{unit}", n >> shift));
        }
    }
    n.to_string()
}

/// A provider's `base_url`: http(s) with a host, no credentials, query or fragment; the path's
/// trailing slash removed.
pub(super) fn validate_base_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
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
