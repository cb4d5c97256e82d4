//! A provider's listing walk as the ledger keeps it: its number, state, position and the
//! watermark that decides when a walk may stop early (see `sync`).

use chrono::{DateTime, Utc};

/// Where a provider's listing walk stands, as the ledger keeps it across passes and restarts.
///
/// A walk reads the listing page by page from the head; each page's rows are committed together
/// with the walk's new position, so a walk cut short (a failing page, a crash) resumes where it
/// stopped. `complete_through` is the watermark: the newest walk that reached the end. Every
/// batch first seen by a walk at or below it, and every older batch, has been listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// This walk's number; each walk from the head takes the next one.
    pub walk: i64,
    pub state: WalkState,
    /// The position of the next page to read; `None` = the head.
    pub position: Option<String>,
    /// Whether this walk may stop at a page of handled batches within the watermark. Off for a
    /// walk that must read to the end (the first one, one after a rejected cursor).
    pub early_stop: bool,
    /// The `since` this walk lists with (providers that filter by update time).
    pub since: Option<DateTime<Utc>>,
    /// The newest walk that reached the end of the listing.
    pub complete_through: Option<i64>,
    /// When the walk of `complete_through` started: the next walk's `since`.
    pub complete_since: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Pages read by this walk so far (over all the passes it took).
    pub pages: u64,
    pub last_error: Option<String>,
}

/// The state of a listing walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkState {
    /// Reading; a walk found in this state at the start of a pass was cut short by a crash.
    Running,
    /// A page failed; the next pass resumes at `position`.
    Failed,
    /// Reached the end of the listing (or stopped early within the watermark).
    Complete,
}

impl WalkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Complete => "complete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Failed, Self::Complete]
            .into_iter()
            .find(|w| w.as_str() == s)
    }
}

/// What the ledger knows of a listed batch, for the walk's early-stop rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeen {
    /// Terminal and every item final, with status and total unchanged by this listing.
    pub handled: bool,
    /// First seen by a walk at or below the watermark (`Walk::complete_through`).
    pub within: bool,
}
