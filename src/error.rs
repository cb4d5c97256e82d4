//! Errors at each seam, and the one rule that decides what is worth retrying.
//!
//! Rules:
//! - Each seam (config, ledger, provider, storage) has its own enum, and each variant carries the
//!   failing input: a config key, a path, a URL without its query, an item id.
//! - URLs in errors never carry a query string: presigned URLs hold credentials there.
//! - [`ProviderError::is_retryable`] is the only place that classifies failures as transient.
//! - `anyhow` is for `main.rs` only.

use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem. Always exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load config {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A ledger problem: the database, its lock file or its schema.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// `lock` is `<path>.lock`, or `path` itself when the database file's own lock is held.
    #[error(
        "another batchmirror is using the ledger {path} (its lock on {lock} is held, maybe through another name for the same file, such as a hard link); stop that one first, or point this one at another ledger"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "the ledger {path} is corrupt ({message}); it was left untouched: restore it from a backup or move it aside to start a new one (every result would then be downloaded again)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "the ledger {path} has schema version {found}, newer than this batchmirror understands ({supported}); upgrade batchmirror"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("ledger {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger task failed: {0}")]
    Task(String),
    /// A shared ledger's lease passed to another daemon (ours expired and was taken over): this
    /// daemon must not record the outcome, the new owner will.
    #[error(
        "ledger: another daemon holds {what} now (this daemon's lease expired and was taken over); nothing was recorded"
    )]
    LeaseLost { what: String },
    /// A PostgreSQL ledger's statement or connection failed. `url` has no password.
    #[error("ledger {url}: {action}: {source}")]
    Postgres {
        url: String,
        action: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection from a PostgreSQL ledger's pool. `url` has no password.
    #[error("ledger {url}: no connection: {message}")]
    PgPool { url: String, message: String },
    /// A PostgreSQL ledger holds what this build cannot use (a row that does not decode, a
    /// newer schema), or its URL or settings are unusable.
    #[error("ledger {url}: {message}")]
    PgData { url: String, message: String },
}

/// A storage problem while writing the mirror.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{action} {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} would be outside the storage root")]
    OutsideRoot { path: PathBuf },
    /// Another process holds the root's lock: its recovery would delete this one's `.part` files.
    #[error(
        "the mirror root {root} is in use by another batchmirror (lock {lock} is held); stop that one first, or give each its own storage.root"
    )]
    RootLocked { root: PathBuf, lock: PathBuf },
}

impl StorageError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// A full disk pauses work instead of failing items.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}

/// A failure talking to a provider, or in what it answered.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
        /// The provider's own word on retrying (Talonic's `retryable`), which wins over the status.
        retryable: Option<bool>,
    },
    #[error("{url}: result not ready yet ({body})")]
    NotReady { url: String, body: String },
    /// The provider no longer has the result: 410, or the 404 a provider uses for that.
    #[error("{url}: result is gone (HTTP {status}): {body}")]
    Gone {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: response does not match the API: {message}")]
    Malformed { url: String, message: String },
    #[error("{url}: body is larger than the {cap}-byte cap")]
    TooLarge { url: String, cap: u64 },
    #[error("{url}: redirect refused: {message}")]
    Redirect { url: String, message: String },
    /// A server-supplied id that cannot be sent back in a URL path (`.` or `..` would be
    /// normalised away and address another resource).
    #[error("id {id:?} cannot be used in a request path; refusing to send it")]
    UnaddressableId { id: String },
    /// The provider cannot do what was asked (e.g. submit files); a configuration matter.
    #[error("{provider}: {what} is not supported by this provider")]
    Unsupported {
        provider: String,
        what: &'static str,
    },
    #[error("cancelled")]
    Cancelled,
}

/// HTTP statuses that are worth asking again: timeouts, throttling, server trouble.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}

impl ProviderError {
    /// The one place that decides whether trying again may help.
    ///
    /// Transient: transport failures (connect, timeout, truncated body), 408/425/429/5xx and
    /// bodies that failed to parse (a truncated or garbled body is worth one more read). Permanent:
    /// other 4xx, bodies over the cap, refused redirects. `NotReady` is retried on a later pass, not
    /// here; `Gone` never.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status {
                status, retryable, ..
            } => retryable.unwrap_or_else(|| is_retryable_status(*status)),
            Self::Transport { .. } | Self::Malformed { .. } => true,
            Self::NotReady { .. }
            | Self::Gone { .. }
            | Self::TooLarge { .. }
            | Self::Redirect { .. }
            | Self::UnaddressableId { .. }
            | Self::Unsupported { .. }
            | Self::Cancelled => false,
        }
    }

    /// True when the server refused the request itself as invalid (400, 404, 410, 422), as it
    /// does a listing position it no longer knows. Auth refusals and throttling are not this.
    pub fn is_refused_request(&self) -> bool {
        matches!(self.status(), Some(400 | 404 | 410 | 422)) && !self.is_retryable()
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::NotReady { .. } => Some(409),
            Self::Gone { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Strips the query and fragment from a URL so it can be logged or stored: presigned URLs carry
/// credentials there.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// The library's top-level error; `main` maps it to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A directory the daemon writes to failed the start-up probe: nothing was downloaded.
    #[error("{key} ({}) is not writable: {source}; make it writable by the user batchmirror runs as, or set {key} elsewhere", path.display())]
    Preflight {
        /// The config key naming the directory.
        key: &'static str,
        path: std::path::PathBuf,
        source: StorageError,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A local directory the daemon needs (drop folder and its siblings) cannot be used.
    #[error("{action} {}: {source}; {hint}", path.display())]
    Local {
        action: &'static str,
        path: std::path::PathBuf,
        hint: &'static str,
        source: std::io::Error,
    },
    /// The drop folder's inbox cannot be watched.
    #[error("drop folder: cannot watch {}: {source}; check the inotify limits (fs.inotify.max_user_watches) or set dropfolder.mode = \"poll\"", path.display())]
    Watch {
        path: std::path::PathBuf,
        source: notify::Error,
    },
    /// A background task panicked or was aborted: a bug, or the runtime going away.
    #[error("the {task} task ended abnormally: {source}")]
    Task {
        task: &'static str,
        source: tokio::task::JoinError,
    },
    /// A socket the daemon serves on could not be bound.
    #[error("cannot serve {what} on {addr}: {source}; is another process using the port?")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    /// The cron scheduler refused the schedule or failed to run.
    #[error("scheduler ({cron}): {source}")]
    Schedule {
        cron: String,
        source: tokio_cron_scheduler::JobSchedulerError,
    },
    /// A harness (demo, bench, crash loop) could not set up the sandbox it runs against.
    #[cfg(feature = "sandbox")]
    #[error("the {kind} sandbox: {reason}")]
    Sandbox { kind: String, reason: String },
}

impl Error {
    /// True when the disk under the ledger or the mirror is full: work stops, and it is alerted
    /// about as a full disk rather than only logged.
    pub fn is_disk_full(&self) -> bool {
        const ENOSPC: i32 = 28;
        match self {
            Self::Storage(e) => e.is_disk_full(),
            Self::Ledger(LedgerError::Sqlite { source, .. }) => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            Self::Ledger(LedgerError::Io { source, .. }) => source.raw_os_error() == Some(ENOSPC),
            _ => false,
        }
    }

    /// Exit code per the command-line contract: 2 for configuration and usage, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Preflight { .. } => 2,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_rule_matches_the_design() {
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!is_retryable_status(s), "{s}");
        }
        let gone = ProviderError::Gone {
            url: "u".into(),
            status: 410,
            body: String::new(),
        };
        assert!(!gone.is_retryable());
    }

    #[test]
    fn redacted_urls_lose_query_and_userinfo() {
        let u = url::Url::parse("https://k:s@bucket.s3/x/y?X-Amz-Signature=secret#f").unwrap();
        assert_eq!(redact_url(&u), "https://bucket.s3/x/y");
    }
}
