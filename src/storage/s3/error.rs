//! The S3 backend's errors: each carries the bucket and the object key (or the URL, without its
//! query) it failed on, never a credential; and the one place that decides which are worth a retry.

use std::fmt;

/// What kind of failure the object store reported: the retry decision is made from this alone
/// ([`S3Error::is_retryable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// The object (or the upload) is not there.
    NotFound,
    /// A conditional create found the key taken.
    AlreadyExists,
    /// Another precondition failed (an ETag that changed under us).
    Precondition,
    /// Wrong or missing credentials, or no permission on the bucket or key.
    Denied,
    /// The store does not offer an operation we need (conditional create or copy).
    Unsupported,
    /// Anything else: network failures, 5xx, timeouts left after the client's own retries.
    Other,
}

/// Why an S3 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The `[storage] url` (or a setting) is not a usable S3 location.
    #[error("invalid S3 location {url}: {reason}")]
    Location { url: String, reason: String },
    /// A request to the store failed; `message` has any credential removed.
    #[error("S3 {action} s3://{bucket}/{key}: {message}")]
    Request {
        bucket: String,
        key: String,
        action: &'static str,
        kind: S3ErrorKind,
        message: String,
    },
    /// The key holds different bytes than the ones we publish: never overwritten.
    #[error(
        "s3://{bucket}/{key} already holds a different object ({existing}); ours is {bytes} bytes, sha256 {sha256}: not overwritten"
    )]
    Conflict {
        bucket: String,
        key: String,
        existing: String,
        bytes: u64,
        sha256: String,
    },
    /// A relative path that would leave the prefix (or enter the staging area).
    #[error("{path} would be outside the S3 prefix")]
    OutsidePrefix { path: String },
}

impl S3Error {
    /// Whether trying the same operation again later may succeed. The object store client has
    /// already retried transient failures with backoff, so only those outcomes count; a refused
    /// create, a missing object, bad credentials or a conflict will not change by retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Request {
                kind: S3ErrorKind::Other,
                ..
            }
        )
    }

    /// The kind of a request failure, `None` for the other variants.
    pub fn kind(&self) -> Option<S3ErrorKind> {
        match self {
            Self::Request { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// The values that must never leave the process in a message, removed from whatever the store
/// or the HTTP client said (AWS echoes the access key id in some error bodies).
#[derive(Clone, Default)]
pub(super) struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.secrets.len())
    }
}

impl Redactor {
    pub(super) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    pub(super) fn clean(&self, message: String) -> String {
        self.secrets.iter().fold(message, |m, s| {
            if m.contains(s.as_str()) {
                m.replace(s.as_str(), "[redacted]")
            } else {
                m
            }
        })
    }

    /// An [`S3Error::Request`] from the object store's error, its text cleaned.
    pub(super) fn request(
        &self,
        bucket: &str,
        key: &str,
        action: &'static str,
        e: &object_store::Error,
    ) -> S3Error {
        use object_store::Error as E;
        let kind = match e {
            E::NotFound { .. } => S3ErrorKind::NotFound,
            E::AlreadyExists { .. } => S3ErrorKind::AlreadyExists,
            E::Precondition { .. } | E::NotModified { .. } => S3ErrorKind::Precondition,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => S3ErrorKind::Denied,
            E::NotSupported { .. } | E::NotImplemented { .. } => S3ErrorKind::Unsupported,
            _ => S3ErrorKind::Other,
        };
        // The chain's text: object_store's Display stops at the first level.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        S3Error::Request {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            action,
            kind,
            message: self.clean(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_removes_every_secret_and_keeps_the_rest() {
        let r = Redactor::new(["AKIDEXAMPLE".to_owned(), "s3cr3t".to_owned(), String::new()]);
        let m = r.clean("key AKIDEXAMPLE sig s3cr3t at s3cr3t end".to_owned());
        assert_eq!(m, "key [redacted] sig [redacted] at [redacted] end");
        assert!(!format!("{r:?}").contains("s3cr3t"));
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let r = Redactor::default();
        let gone = object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        };
        let e = r.request("b", "k", "get", &gone);
        assert_eq!(e.kind(), Some(S3ErrorKind::NotFound));
        assert!(!e.is_retryable());
        let net = object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        assert!(r.request("b", "k", "put", &net).is_retryable());
        let taken = S3Error::Conflict {
            bucket: "b".into(),
            key: "k".into(),
            existing: "1 byte".into(),
            bytes: 2,
            sha256: "00".into(),
        };
        assert!(!taken.is_retryable());
    }
}
