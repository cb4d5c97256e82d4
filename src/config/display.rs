//! The effective configuration printed back as TOML (`check-config`): every key with its value,
//! secrets redacted.

use std::fmt;
use std::time::Duration;

use super::{LogFormat, Settings};

/// The effective config as TOML (what `check-config` prints). API keys show as `"[redacted]"`.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.download;
        writeln!(f, "[ledger]")?;
        writeln!(
            f,
            "path = {}",
            toml_str(&self.ledger_path.to_string_lossy())
        )?;
        writeln!(f, "\n[storage]")?;
        writeln!(
            f,
            "root = {}",
            toml_str(&self.storage_root.to_string_lossy())
        )?;
        writeln!(f, "\n[schedule]")?;
        writeln!(f, "cron = {}", toml_str(&self.schedule_cron))?;
        writeln!(f, "\n[download]")?;
        writeln!(f, "concurrency = {}", d.concurrency)?;
        writeln!(f, "alert_margin = {}", toml_duration(d.alert_margin))?;
        writeln!(f, "max_body_bytes = {}", toml_bytes(d.max_body_bytes))?;
        writeln!(f, "connect_timeout = {}", toml_duration(d.connect_timeout))?;
        writeln!(f, "read_timeout = {}", toml_duration(d.read_timeout))?;
        writeln!(f, "drain_timeout = {}", toml_duration(d.drain_timeout))?;
        writeln!(f, "validate_json = {}", d.validate_json)?;
        writeln!(f, "low_speed_limit = {}", d.low_speed_limit)?;
        writeln!(f, "low_speed_time = {}", toml_duration(d.low_speed_time))?;
        writeln!(f, "\n[log]")?;
        let format = match self.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(f, "format = {}", toml_str(format))?;
        writeln!(f, "level = {}", toml_str(&self.log.level))?;
        if let Some(a) = &self.alerts {
            writeln!(f, "\n[alerts]")?;
            let argv: Vec<String> = a.command.iter().map(|s| toml_str(s)).collect();
            if !argv.is_empty() {
                writeln!(f, "command = [{}]", argv.join(", "))?;
            }
            if let Some(w) = &a.webhook_url {
                writeln!(f, "webhook_url = {}", toml_str(&w.to_string()))?;
            }
            writeln!(
                f,
                "provider_failing_after = {}",
                toml_duration(a.provider_failing_after)
            )?;
        }
        if let Some(d) = &self.dropfolder {
            let globs = |p: &[glob::Pattern]| {
                let v: Vec<String> = p.iter().map(|g| toml_str(g.as_str())).collect();
                format!("[{}]", v.join(", "))
            };
            writeln!(f, "\n[dropfolder]")?;
            writeln!(f, "path = {}", toml_str(&d.inbox.display().to_string()))?;
            writeln!(f, "provider = {}", toml_str(d.provider.as_str()))?;
            writeln!(f, "settle = {}", toml_duration(d.settle))?;
            writeln!(f, "rescan = {}", toml_duration(d.rescan))?;
            writeln!(f, "mode = {}", toml_str(d.mode.as_str()))?;
            writeln!(f, "include = {}", globs(&d.include))?;
            writeln!(f, "exclude = {}", globs(&d.exclude))?;
            writeln!(f, "max_file_bytes = {}", d.max_file_bytes)?;
            writeln!(f, "dedupe = {}", d.dedupe)?;
            writeln!(f, "result_poll = {}", toml_duration(d.result_poll))?;
            if let Some(e) = &d.submit.engine {
                writeln!(f, "engine = {}", toml_str(e))?;
            }
            if let Some(o) = &d.submit.options_json {
                writeln!(f, "# options (as JSON): {o}")?;
            }
            if let Some(p) = &d.submit.parser_id {
                writeln!(f, "parser_id = {}", toml_str(p))?;
            }
        }
        if let Some(m) = &self.metrics {
            writeln!(f, "\n[metrics]")?;
            writeln!(f, "listen = {}", toml_str(&m.listen.to_string()))?;
            writeln!(f, "allow_remote = {}", m.allow_remote)?;
        }
        for p in &self.providers {
            writeln!(f, "\n[[provider]]")?;
            writeln!(f, "name = {}", toml_str(p.name.as_str()))?;
            writeln!(f, "kind = {}", toml_str(p.kind.as_str()))?;
            writeln!(f, "base_url = {}", toml_str(p.base_url.as_str()))?;
            writeln!(f, "api_key = {}", toml_str(&p.api_key.to_string()))?;
            match (
                p.requests_per_minute,
                p.kind.documented_requests_per_minute(),
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
            if let Some(n) = p.submits_per_minute {
                writeln!(f, "submits_per_minute = {n}")?;
            }
            writeln!(f, "page_size = {}", p.page_size)?;
            writeln!(f, "retention = {}", toml_duration(p.retention))?;
            writeln!(f, "max_retries = {}", p.max_retries)?;
            let o = &p.options;
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
                    let list: Vec<String> = v.iter().map(|s| toml_str(s)).collect();
                    writeln!(f, "{k} = [{}]", list.join(", "))?;
                }
            }
        }
        Ok(())
    }
}

/// A TOML basic string.
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

fn toml_duration(d: Duration) -> String {
    toml_str(&humantime::format_duration(d).to_string())
}

/// "1GiB" when the count is a whole number of a binary unit, else the plain integer.
fn toml_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return toml_str(&format!("{}{unit}", n >> shift));
        }
    }
    n.to_string()
}
