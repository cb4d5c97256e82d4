//! Domain types shared by every layer: names, ids, states and the records a provider hands back.
//!
//! Pure data with no I/O. Adapters translate their vendor's wire types into these; the ledger stores
//! them; the downloader and the status report read them. Nothing here knows about HTTP or SQL.

use std::fmt;

use chrono::{DateTime, Utc};

mod filter;
mod walk;
pub use filter::ItemFilter;
pub use walk::{BatchSeen, Walk, WalkState};

/// What the daemon reports as it works: progress for the watchdog, events for metrics. Every
/// method does nothing by default.
pub trait Observer: Send + Sync {
    /// Real work advanced (a page listed, a chunk downloaded).
    fn progress(&self) {}
    /// One exchange with a provider: `outcome` is the HTTP status of a refusal, `ok`, or
    /// `transport` when no status came back.
    fn request(&self, _provider: &ProviderName, _outcome: &str) {}
    /// A request is being retried after a transient failure.
    fn retry(&self, _provider: &ProviderName) {}
    /// An item's result became durable.
    fn mirrored(&self, _provider: &ProviderName, _bytes: u64) {}
    /// An item's result is gone for good.
    fn lost(&self, _item: &DueItem, _error: &str) {}
    /// An item not yet mirrored is within the alert margin of its deadline.
    fn at_risk(&self, _item: &DueItem) {}
    /// Writing the mirror failed because the disk is full.
    fn disk_full(&self, _error: &str) {}
    /// A pass wrote results and none hit a full disk: a later full disk is a new event.
    fn disk_ok(&self) {}
    /// True when [`Observer::downloads_planned`] is worth a count of the ready items (a progress
    /// bar is shown); counting costs a scan of the ledger, so nobody pays it otherwise.
    fn wants_plan(&self) -> bool {
        false
    }
    /// Files in the drop folder's inbox waiting to be submitted again (refused for now).
    fn dropfolder_queue(&self, _files: u64) {}
    /// A pass's downloads begin: `items` are ready to fetch.
    fn downloads_planned(&self, _items: u64) {}
    /// A provider's listing in a pass ended, with its error if it failed and since when it has been
    /// failing (across passes and restarts).
    fn provider_listed(
        &self,
        _provider: &ProviderName,
        _error: Option<&str>,
        _failing_since: Option<DateTime<Utc>>,
    ) {
    }
}

/// An observer that ignores everything.
pub fn no_observer() -> std::sync::Arc<dyn Observer> {
    struct Nothing;
    impl Observer for Nothing {}
    std::sync::Arc::new(Nothing)
}

/// A configured provider's name: appears in paths and in status. `[A-Za-z0-9_-]{1,64}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderName(String);

impl ProviderName {
    /// Accepts only names that are safe as one path component.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid provider name: use 1-64 characters from A-Z a-z 0-9 _ -"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Longest id we accept from a server. Longer ones are hostile or broken, never stored.
pub const MAX_REMOTE_ID_BYTES: usize = 1024;

macro_rules! remote_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Server-supplied ids are opaque strings; only emptiness, length and NUL are refused here.
            /// Turning an id into a file name is `storage`'s job.
            pub fn parse(s: &str) -> Result<Self, String> {
                if s.is_empty() {
                    Err(format!("empty {}", stringify!($name)))
                } else if s.len() > MAX_REMOTE_ID_BYTES {
                    Err(format!(
                        "{} of {} bytes is longer than {} bytes",
                        stringify!($name),
                        s.len(),
                        MAX_REMOTE_ID_BYTES
                    ))
                } else if s.contains('\0') {
                    Err(format!("{} contains a NUL byte", stringify!($name)))
                } else {
                    Ok(Self(s.to_owned()))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

remote_id!(
    /// A provider's batch (or job, or extraction) id.
    BatchId
);
remote_id!(
    /// A provider's item (or document) id, unique within its batch.
    ItemId
);

/// A batch's state at the provider, normalised from each vendor's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Pending,
    Running,
    /// Finished; some items may have failed (extract.page `partially_failed`).
    Completed,
    Failed,
    Cancelled,
}

impl BatchStatus {
    /// A terminal batch changes no more, so once its items are handled it need not be read again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// An item's state at the provider, normalised. Only `Succeeded` has a result to mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
    /// A status word the adapter does not know. The item stays pending (polled again, never given
    /// up) and carries the word in its error, so it shows in the ledger instead of vanishing.
    Unrecognized,
}

impl RemoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::Unrecognized => "unrecognized",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "skipped" => Self::Skipped,
            "unrecognized" => Self::Unrecognized,
            _ => return None,
        })
    }

    /// The ledger state an item enters when first seen (or seen again) with this remote status.
    pub fn initial_state(self) -> ItemState {
        match self {
            Self::Pending | Self::Running | Self::Unrecognized => ItemState::Pending,
            Self::Succeeded => ItemState::Ready,
            Self::Failed | Self::Cancelled | Self::Skipped => ItemState::Skipped,
        }
    }
}

/// An item's state in our ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemState {
    /// Not finished at the provider yet.
    Pending,
    /// Finished at the provider; waiting to be downloaded.
    Ready,
    /// Claimed by a download worker. Reset at start-up (a crash leaves it behind).
    Downloading,
    /// Durable on disk with bytes and sha256 recorded.
    Mirrored,
    /// A permanent error (404, 422, body over the cap, hostile response); `last_error` says which.
    Failed,
    /// The provider answered 410: the result is gone for good.
    Lost,
    /// The provider failed or cancelled the item: there is nothing to mirror.
    Skipped,
}

impl ItemState {
    pub const ALL: [ItemState; 7] = [
        Self::Pending,
        Self::Ready,
        Self::Downloading,
        Self::Mirrored,
        Self::Failed,
        Self::Lost,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Downloading => "downloading",
            Self::Mirrored => "mirrored",
            Self::Failed => "failed",
            Self::Lost => "lost",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Final states never change again, whatever a later listing says.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Mirrored | Self::Failed | Self::Lost | Self::Skipped
        )
    }
}

/// One batch as listed by a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteBatch {
    pub id: BatchId,
    pub status: BatchStatus,
    /// Items the provider says the batch holds, when it says so.
    pub total_items: Option<u64>,
    pub created_at: Option<DateTime<Utc>>,
    /// When the batch's results expire, when the provider says so.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One item of a batch as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteItem {
    pub id: ItemId,
    pub status: RemoteStatus,
    /// When the result stops being downloadable. Drives earliest-deadline-first.
    pub deadline: Option<DateTime<Utc>>,
    /// The provider's own error text for a failed item.
    pub error: Option<String>,
    /// Opaque adapter data needed to fetch the result later (LlamaCloud's parse job id, Talonic's
    /// document id); kept in the ledger and handed back in [`DueItem`].
    pub locator: Option<String>,
}

/// One batch-list request: where the walk stands, and, for a provider that filters its listing
/// by update time ([`crate::provider::Provider::lists_since`]), the oldest change the walk needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// What the previous page returned as its next position; `None` = the head of the listing.
    pub cursor: Option<String>,
    /// Only batches updated after this (PerfectParser `since`).
    pub since: Option<DateTime<Utc>>,
}

/// A page of the batch listing.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPage {
    pub batches: Vec<RemoteBatch>,
    /// Entries of the page the adapter could not accept (hostile or malformed), with the reason.
    pub rejected: Vec<String>,
    pub next_cursor: Option<String>,
}

/// A page of a batch's items (a change feed for providers that offer one).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemPage {
    /// The batch as reported alongside its items, when the provider reports it.
    pub batch: Option<RemoteBatch>,
    pub items: Vec<RemoteItem>,
    pub rejected: Vec<String>,
    /// Where the next read continues; `None` when the provider gave none.
    pub next_cursor: Option<String>,
    /// True when the provider says there is more to read right now.
    pub has_more: bool,
    /// True when `next_cursor` resumes a change feed and may be kept across passes. Offset or page
    /// cursors are not: items earlier in the list change too, so each pass reads from the start.
    pub feed_cursor: bool,
}

/// An item the downloader has claimed, with everything it needs to fetch and place it.
#[derive(Debug, Clone, PartialEq)]
pub struct DueItem {
    pub provider: ProviderName,
    pub batch: BatchId,
    pub item: ItemId,
    pub deadline: Option<DateTime<Utc>>,
    pub attempts: u32,
    /// The adapter's [`RemoteItem::locator`], as last listed.
    pub locator: Option<String>,
}

/// What a durable write produced: recorded in the ledger when an item becomes `Mirrored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Path relative to the storage root.
    pub rel_path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// How a drop-folder file is submitted: the per-provider options of `[dropfolder]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// extract.page `engine`.
    pub engine: Option<String>,
    /// extract.page `options`, as a JSON object's text (validated by the config).
    pub options_json: Option<String>,
    /// PerfectParser `parser_id`.
    pub parser_id: Option<String>,
}

/// One local file to submit as a new extraction job. The bytes hashed are the bytes sent.
#[derive(Clone)]
pub struct Submission {
    /// The file's name as dropped (one path component, UTF-8).
    pub file_name: String,
    /// A MIME type guessed from the name's extension.
    pub content_type: String,
    pub bytes: bytes::Bytes,
    /// Lower-case hex sha256 of `bytes`.
    pub sha256: String,
    /// Sent as `Idempotency-Key`: a retry after a crash or a timeout returns the first job.
    pub idempotency_key: String,
    pub options: SubmitOptions,
}

impl fmt::Debug for Submission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submission")
            .field("file_name", &self.file_name)
            .field("bytes", &self.bytes.len())
            .field("sha256", &self.sha256)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

/// The job a submission became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The batch (extract.page batch, PerfectParser extraction) the sync pass will track.
    pub batch: BatchId,
    /// The file's item in it, when the answer names it (PerfectParser's document id).
    pub item: Option<ItemId>,
    /// True when the provider answered with an earlier job for the same idempotency key.
    pub replayed: bool,
}

/// A provider's adaptive pacing as last recorded: the cap it learned, the throttles it saw and the
/// time its requests waited for the cap or a server-named pause (since the daemon started).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Pace {
    /// Requests per minute allowed; `None` = no client-side cap.
    pub per_minute: Option<f64>,
    pub throttles: u64,
    pub waited_secs: f64,
}

/// Per provider, per state counts plus the figures `status` shows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProviderSummary {
    pub name: String,
    pub kind: String,
    pub items: std::collections::BTreeMap<String, u64>,
    pub at_risk: u64,
    pub last_pass_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Seconds until the earliest deadline of an item not yet mirrored.
    pub oldest_unmirrored_deadline_secs: Option<i64>,
    /// The provider's pacing after the last pass (none recorded yet: `None`).
    pub pace: Option<Pace>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_must_be_one_safe_path_component() {
        assert!(ProviderName::parse("acme_2-b").is_ok());
        for bad in ["", "../x", "a/b", "a b", ".", &"x".repeat(65)] {
            assert!(ProviderName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn remote_ids_refuse_empty_nul_and_huge() {
        assert!(
            ItemId::parse("../x").is_ok(),
            "storage encodes, model only refuses the unusable"
        );
        assert!(ItemId::parse("").is_err());
        assert!(ItemId::parse("a\0b").is_err());
        assert!(BatchId::parse(&"x".repeat(MAX_REMOTE_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for st in ItemState::ALL {
            assert_eq!(ItemState::parse(st.as_str()), Some(st));
        }
        assert_eq!(ItemState::parse("bogus"), None);
    }
}
