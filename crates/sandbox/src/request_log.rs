//! The request log every sandbox keeps: each request as it arrived, what it was answered, and
//! what the rate limit made of it (the window it counted in, and when a refusal said the client
//! may come back). One type, so the four sandboxes log alike and a test reads them alike.

use std::time::Instant;

use super::rate::Mark;

/// One request as received by a sandbox listener.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// When it arrived.
    pub at: Instant,
    /// HTTP method.
    pub method: String,
    /// Raw path (percent-encoded as sent, without the query).
    pub path: String,
    /// The status answered (0 while the answer is still being computed).
    pub status: u16,
    /// The rate-limit window it was counted in (an id that grows with time), or None when it
    /// was not counted: no limit set, no valid key, or not an API request (the object store).
    pub window: Option<u64>,
    /// For a request the rate limit refused: the earliest instant its answer lets the client
    /// send again (`Retry-After`, `retry-after-ms` or `X-RateLimit-Reset`, as the provider names
    /// it).
    pub retry_at: Option<Instant>,
}

/// The log, in order of arrival.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Vec<LoggedRequest>,
}

impl RequestLog {
    /// Appends an entry at arrival; [`RequestLog::end`] fills in the answer.
    pub(crate) fn begin(&mut self, method: &str, path: &str) -> usize {
        self.entries.push(LoggedRequest {
            at: Instant::now(),
            method: method.to_owned(),
            path: path.to_owned(),
            status: 0,
            window: None,
            retry_at: None,
        });
        self.entries.len() - 1
    }

    pub(crate) fn end(&mut self, index: usize, status: u16, mark: Mark) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.status = status;
            entry.window = mark.window;
            entry.retry_at = mark.retry_at;
        }
    }

    pub(crate) fn entries(&self) -> Vec<LoggedRequest> {
        self.entries.clone()
    }
}
