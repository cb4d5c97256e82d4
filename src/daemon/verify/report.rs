//! What `batchmirror verify` found and did, and how it is printed: a summary line and one line
//! per finding (text, escaped like `status --items`), or one JSON object.
//!
//! Counts cover every finding; the findings themselves are kept up to [`KEPT`] (memory stays
//! bounded on a mirror that lost everything), the rest counted in `findings_omitted`.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::telemetry::escape_controls;

/// Most findings kept for the report (JSON lists them all up to this).
const KEPT: usize = 10_000;
/// Most findings printed one a line in the text output.
const SHOWN: usize = 50;

/// What is wrong with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    /// The ledger says mirrored, the file is not there.
    Missing,
    /// The file's size or sha256 differs from the ledger's (or it cannot be read).
    Corrupt,
    /// A file under the root that no mirrored item accounts for.
    Unknown,
    /// A `.part` file no running writer owns.
    Part,
}

impl FindingKind {
    fn word(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Corrupt => "corrupt",
            Self::Unknown => "unknown",
            Self::Part => "part",
        }
    }
}

/// One problem, with what the ledger expected and what the disk held where that applies.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The provider, batch and item the path belongs to, when known.
    pub provider: Option<String>,
    pub batch: Option<String>,
    pub item: Option<String>,
    /// Relative to `storage.root`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_sha256: Option<String>,
    /// When the provider deletes the result (missing and corrupt items; `null` if unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Why the file could not be read, for a corrupt one that could not be hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `--repair`: `requeued`, `lost`, `removed`, `left alone` or `failed: …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

impl Finding {
    /// A finding about a path alone (unknown file, stray `.part`).
    pub fn path(kind: FindingKind, provider: Option<&str>, path: String) -> Self {
        Self {
            kind,
            provider: provider.map(str::to_owned),
            batch: None,
            item: None,
            path,
            expected_bytes: None,
            expected_sha256: None,
            actual_bytes: None,
            actual_sha256: None,
            deadline: None,
            error: None,
            repair: None,
        }
    }
}

/// Findings per kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub missing: u64,
    pub corrupt: u64,
    pub unknown: u64,
    pub part: u64,
}

/// What `--repair` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Repaired {
    /// Missing or corrupt items back to `ready`: the next pass fetches them.
    pub requeued: u64,
    /// Missing or corrupt items past their deadline, now `lost`.
    pub lost: u64,
    /// Stray `.part` files removed.
    pub parts_removed: u64,
    /// Corrupt files (and sidecars of lost items) moved into the quarantine directory.
    pub quarantined: u64,
    /// Repairs that failed (named in their finding).
    pub failed: u64,
}

/// What `verify` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub root: String,
    pub ledger: String,
    /// `--provider`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub repair: bool,
    /// Mirrored results hashed, and their bytes.
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub elapsed_ms: u64,
    pub counts: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repaired>,
    /// True when a daemon held the root's lock: its `.part` files and the files of items it was
    /// downloading were skipped, not reported.
    pub writer_running: bool,
    /// Files skipped as in flight (see `writer_running`), and sidecars of items waiting to be
    /// fetched again.
    pub in_flight: u64,
    pub findings: Vec<Finding>,
    /// Findings counted but not listed (over 10,000).
    pub findings_omitted: u64,
}

impl VerifyReport {
    pub(super) fn add(&mut self, finding: Finding) {
        let c = &mut self.counts;
        match finding.kind {
            FindingKind::Missing => c.missing += 1,
            FindingKind::Corrupt => c.corrupt += 1,
            FindingKind::Unknown => c.unknown += 1,
            FindingKind::Part => c.part += 1,
        }
        if self.findings.len() < KEPT {
            self.findings.push(finding);
        } else {
            self.findings_omitted += 1;
        }
    }

    /// Every finding, listed or not.
    pub fn problems(&self) -> u64 {
        let c = &self.counts;
        c.missing + c.corrupt + c.unknown + c.part
    }

    /// 0 when the mirror matches the ledger, 1 when anything was found (repaired or not: a
    /// re-queued item is not back until a pass fetched it).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.problems() > 0)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let secs = self.elapsed_ms as f64 / 1000.0;
        let rate = if secs > 0.0 {
            self.files_checked as f64 / secs
        } else {
            0.0
        };
        let _ = write!(
            out,
            "verify: checked {} files ({:.1} MB) in {secs:.2} s ({rate:.0} files/s): ",
            self.files_checked,
            self.bytes_checked as f64 / 1e6,
        );
        let c = &self.counts;
        if self.problems() == 0 {
            out.push_str("clean\n");
        } else {
            let _ = writeln!(
                out,
                "{} missing, {} corrupt, {} unknown, {} .part",
                c.missing, c.corrupt, c.unknown, c.part
            );
        }
        if self.writer_running {
            let _ = writeln!(
                out,
                "  a batchmirror is writing under {}: {} file(s) in flight skipped",
                escape_controls(&self.root),
                self.in_flight
            );
        }
        for f in self.findings.iter().take(SHOWN) {
            out.push_str(&finding_line(f));
        }
        let more = (self.findings.len().saturating_sub(SHOWN)) as u64 + self.findings_omitted;
        if more > 0 {
            let _ = writeln!(out, "  … and {more} more (--json lists up to {KEPT})");
        }
        match &self.repaired {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "repair: {} re-queued (the next `sync --once` or daemon pass fetches them), \
                     {} lost (past the provider's deadline: `status --items --state lost`), \
                     {} .part removed, {} moved to {}/{}, {} failed; unknown files are left alone",
                    r.requeued,
                    r.lost,
                    r.parts_removed,
                    r.quarantined,
                    escape_controls(&self.root),
                    crate::storage::QUARANTINE,
                    r.failed
                );
            }
            None if self.problems() > 0 => {
                out.push_str(
                    "run `batchmirror verify --repair` to re-queue missing and corrupt items \
                     (and remove stray .part files); unknown files are never touched\n",
                );
            }
            None => {}
        }
        out
    }
}

/// `  <kind> <path>  <what was expected and found> [→ repair]`.
fn finding_line(f: &Finding) -> String {
    let mut line = format!("  {:<8}{}", f.kind.word(), escape_controls(&f.path));
    if let (Some(b), Some(i)) = (&f.batch, &f.item) {
        let p = f.provider.as_deref().unwrap_or("-");
        let _ = write!(
            line,
            "  item {}/{}/{}",
            escape_controls(p),
            escape_controls(b),
            escape_controls(i)
        );
    }
    if let Some(n) = f.expected_bytes {
        let sha = f.expected_sha256.as_deref().unwrap_or("-");
        let _ = write!(line, ": expected {n} bytes sha256 {sha}");
    }
    if let Some(n) = f.actual_bytes {
        let sha = f.actual_sha256.as_deref().unwrap_or("-");
        let _ = write!(line, ", found {n} bytes sha256 {sha}");
    }
    if let Some(e) = &f.error {
        let _ = write!(line, ", {}", escape_controls(e));
    }
    if let Some(d) = f.deadline {
        let _ = write!(line, ", deadline {}", d.format("%Y-%m-%d %H:%M UTC"));
    }
    if let Some(r) = &f.repair {
        let _ = write!(line, " → {}", escape_controls(r));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_names_and_caps_the_lines() {
        let mut r = VerifyReport::default();
        for i in 0..(SHOWN + 3) {
            r.add(Finding::path(
                FindingKind::Unknown,
                Some("ep"),
                format!("ep/b/x{i}\n\u{1b}[31m"),
            ));
        }
        let text = r.render_text();
        assert!(text.contains("53 unknown"), "{text}");
        assert!(text.contains("x0\\n\\u{1b}[31m"), "{text}");
        assert!(text.contains("… and 3 more"), "{text}");
        assert_eq!(r.exit_code(), 1);
        assert_eq!(VerifyReport::default().exit_code(), 0);
    }
}
