//! What one pass did, as the daemon logs it, `systemctl status` shows it and `sync --once` prints
//! it and turns it into its exit code: every provider's listing, the download counts, and the
//! items the pass leaves due but not mirrored, with the first few named.

use std::fmt::Write;

use crate::download::DownloadReport;
use crate::ledger::Listed;
use crate::model::ItemState;
use crate::sync::ListReport;

/// Items named in a pass summary; the count covers the rest.
pub(crate) const NAMED: usize = 5;

/// The outcome of one provider's listing in a pass.
#[derive(Debug)]
pub struct ProviderPass {
    pub name: String,
    pub listing: Result<ListReport, String>,
}

/// What one pass did, for logs and exit codes.
#[derive(Debug)]
pub struct PassReport {
    pub providers: Vec<ProviderPass>,
    pub download: DownloadReport,
    /// Due but not mirrored at the end of the pass: deferred to a later attempt, due and at
    /// risk, or failed or lost in this pass (earlier endings were reported by their own pass and
    /// stay in `status`). The first [`NAMED`], earliest deadline first.
    pub unmirrored: Listed,
    pub elapsed: std::time::Duration,
}

impl PassReport {
    /// True when every provider answered with nothing refused, nothing was paused, and every due
    /// item is mirrored (an item not servable yet, 409, is not due).
    pub fn ok(&self) -> bool {
        let d = &self.download;
        self.providers
            .iter()
            .all(|p| p.listing.as_ref().is_ok_and(|l| l.rejected.is_empty()))
            && d.failed == 0
            && d.lost == 0
            && d.retrying == 0
            && d.paused == 0
            && self.unmirrored.count == 0
    }

    /// One line for `systemctl status` and logs.
    pub fn summary(&self) -> String {
        let d = &self.download;
        let incomplete: Vec<&str> = self
            .providers
            .iter()
            .filter(|p| p.listing.is_err())
            .map(|p| p.name.as_str())
            .collect();
        let listing = match incomplete.as_slice() {
            [] => "every listing complete".to_owned(),
            names => format!("listing incomplete for {}", names.join(", ")),
        };
        format!(
            "last pass {}: mirrored {} ({:.1} MB), not mirrored {} (deferred {}, failed {}, lost {}), not ready yet {}, {listing}, took {:.1}s",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ"),
            d.mirrored,
            d.bytes as f64 / 1e6,
            self.unmirrored.count,
            d.retrying,
            d.failed,
            d.lost,
            d.not_ready,
            self.elapsed.as_secs_f64()
        )
    }

    /// The items due but not mirrored, one line each (the first [`NAMED`]), then how many more.
    pub fn unmirrored_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.unmirrored.first.iter().map(describe).collect();
        let more = self.unmirrored.count.saturating_sub(lines.len() as u64);
        if more > 0 {
            lines.push(format!("… and {more} more (see `batchmirror status`)"));
        }
        lines
    }

    /// `sync --once` exit code per the command-line contract.
    pub fn exit_code(&self) -> i32 {
        if self.ok() { 0 } else { 1 }
    }

    pub(crate) fn log(&self) {
        for p in &self.providers {
            match &p.listing {
                Err(e) => tracing::error!(
                    provider = %p.name,
                    "listing incomplete this pass (the next pass resumes where it stopped): {e}"
                ),
                Ok(l) if !l.rejected.is_empty() => tracing::error!(
                    provider = %p.name,
                    refused = l.rejected.len(),
                    "the provider answered entries that were refused (see above)"
                ),
                Ok(_) => {}
            }
        }
        let d = &self.download;
        tracing::info!(
            mirrored = d.mirrored,
            bytes = d.bytes,
            not_ready = d.not_ready,
            retrying = d.retrying,
            failed = d.failed,
            lost = d.lost,
            interrupted = d.interrupted,
            paused_disk_full = d.paused,
            not_mirrored = self.unmirrored.count,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "pass finished"
        );
        if self.unmirrored.count > 0 {
            tracing::warn!(
                count = self.unmirrored.count,
                "{} item(s) due but not mirrored after this pass: {}",
                self.unmirrored.count,
                self.unmirrored_lines().join("; ")
            );
        }
    }
}

/// What a failed listing says: a refused key (401/403) names the provider's key source, so
/// the operator knows which key to fix instead of reading "unreachable".
pub(super) fn listing_error(
    settings: &crate::config::Settings,
    name: &crate::model::ProviderName,
    e: &crate::error::ProviderError,
) -> String {
    let refused = matches!(e.status(), Some(401 | 403));
    let source = settings.providers.iter().find(|p| p.name == *name);
    match (refused, source) {
        (true, Some(p)) => format!(
            "the API key was refused (HTTP {}); it comes from {}: check that it is the \
             account's current key ({e})",
            e.status().unwrap_or_default(),
            p.key_source
        ),
        _ => e.to_string(),
    }
}

/// `provider/batch/item: <state and when>: <last error>`.
fn describe(row: &crate::ledger::ItemRow) -> String {
    let mut s = format!("{}/{}/{}: ", row.provider, row.batch, row.item);
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    match row.state {
        ItemState::Ready => match row.next_attempt_at.filter(|t| *t > chrono::Utc::now()) {
            Some(t) => {
                let _ = write!(s, "deferred, next attempt {}", fmt(t));
            }
            None => s.push_str("due"),
        },
        other => s.push_str(other.as_str()),
    }
    if let Some(d) = row.deadline {
        let _ = write!(s, ", deadline {}", fmt(d));
    }
    let _ = write!(
        s,
        ": {}",
        row.last_error.as_deref().unwrap_or("no error recorded")
    );
    s
}
