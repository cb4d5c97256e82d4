//! Where the S3 backend writes and with which credentials: an `s3://bucket/prefix` URL, the
//! standard AWS variables, and explicit settings (what the config will fill) that win over both.

use std::fmt;

use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut, S3CopyIfNotExists,
};

use super::error::{Redactor, S3Error};
use super::uploads::Endpoint;

/// The AWS variables read from the environment; any other `AWS_*` variable is ignored, so what
/// the backend does depends on nothing undocumented.
const ENV_KEYS: [&str; 6] = [
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ALLOW_HTTP",
];

/// The S3 location and its overrides. `None` fields fall back to the AWS variables. Its Debug
/// shows whether a credential is set, never the credential.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// `s3://bucket/prefix` (the prefix may be empty).
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Plain-HTTP endpoints (a local test server) are refused unless this is true.
    pub allow_http: Option<bool>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "[set]" } else { "[unset]" };
        f.debug_struct("S3Settings")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &set(&self.access_key_id))
            .field("secret_access_key", &set(&self.secret_access_key))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// A parsed location: the bucket, and the key prefix without slashes at either end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Location {
    pub bucket: String,
    pub prefix: String,
}

/// Parses `s3://bucket/prefix`; the error shows the URL without any query or userinfo.
pub(super) fn parse_url(raw: &str) -> Result<Location, S3Error> {
    let bad = |reason: &str| S3Error::Location {
        url: raw.split(['?', '#']).next().unwrap_or_default().to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    let bad = |reason: &str| {
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        S3Error::Location {
            url: shown.to_string(),
            reason: reason.to_owned(),
        }
    };
    if url.scheme() != "s3" {
        return Err(bad("the scheme must be s3:// (s3://bucket/prefix)"));
    }
    if url.query().is_some() || url.fragment().is_some() || url.password().is_some() {
        return Err(bad(
            "no query, fragment or credentials in the URL (use the AWS_* variables)",
        ));
    }
    let bucket = url.host_str().unwrap_or_default().to_owned();
    if bucket.is_empty() {
        return Err(bad("no bucket name"));
    }
    let prefix = url.path().trim_matches('/').to_owned();
    // The URL parser resolves `.` and `..` away; a prefix is taken as written or refused.
    let raw_path = raw.splitn(4, '/').nth(3).unwrap_or_default();
    let segments_ok = (prefix.is_empty() || prefix == raw_path.trim_matches('/'))
        && (prefix.is_empty()
            || prefix
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with(".staging")));
    if !segments_ok {
        return Err(bad(
            "the prefix has an empty, `.`, `..` or `.staging` segment",
        ));
    }
    Ok(Location { bucket, prefix })
}

/// How a staged object is committed: a one-part multipart upload copying it
/// (`UploadPartCopy`) completed with `If-None-Match: *`, which the store refuses when the key
/// exists. Amazon S3 documents conditional completes, and SeaweedFS honours them (tested); a
/// `CopyObject` with `If-None-Match` works on SeaweedFS too but is not what S3 documents.
fn commit_mode() -> S3CopyIfNotExists {
    S3CopyIfNotExists::Multipart
}

/// The client, its location, and what to remove from its error messages.
pub(super) fn build(s: &S3Settings) -> Result<(AmazonS3, Location, Redactor, Endpoint), S3Error> {
    let loc = parse_url(&s.url)?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let pick = |explicit: &Option<String>, k: &str| explicit.clone().or_else(|| env(k));
    let mut b = AmazonS3Builder::new().with_bucket_name(&loc.bucket);
    for key in ENV_KEYS {
        if let (Some(v), Ok(k)) = (
            env(key),
            key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>(),
        ) {
            b = b.with_config(k, v);
        }
    }
    if let Some(v) = &s.endpoint {
        b = b.with_endpoint(v);
    }
    if let Some(v) = &s.region {
        b = b.with_region(v);
    }
    if let Some(v) = &s.access_key_id {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = &s.secret_access_key {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = s.allow_http {
        b = b.with_allow_http(v);
    }
    // Exactly once: a create is `If-None-Match: *`, whatever a variable says.
    b = b.with_conditional_put(S3ConditionalPut::ETagMatch);
    b = b.with_copy_if_not_exists(commit_mode());
    let redactor = Redactor::new(
        [
            pick(&s.access_key_id, "AWS_ACCESS_KEY_ID"),
            pick(&s.secret_access_key, "AWS_SECRET_ACCESS_KEY"),
            env("AWS_SESSION_TOKEN"),
        ]
        .into_iter()
        .flatten(),
    );
    let region =
        (b.get_config_value(&AmazonS3ConfigKey::Region)).unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = (b.get_config_value(&AmazonS3ConfigKey::Endpoint))
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let at = Endpoint {
        bucket_url: format!("{}/{}", endpoint.trim_end_matches('/'), loc.bucket),
        region,
    };
    let store = b.build().map_err(|e| S3Error::Location {
        url: format!("s3://{}/{}", loc.bucket, loc.prefix),
        reason: redactor.clean(e.to_string()),
    })?;
    Ok((store, loc, redactor, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_bucket_and_trimmed_prefix() {
        let l = parse_url("s3://b/a/p/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "a/p"));
        assert_eq!(parse_url("s3://b").unwrap().prefix, "");
        for bad in [
            "http://b/p",
            "s3:///p",
            "s3://b/a/../p",
            "s3://b/a//p",
            "s3://b/.staging",
            "s3://b/p?x=1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let e = parse_url("s3://user:hunter2@b/p").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn debug_hides_the_credentials() {
        let s = S3Settings {
            url: "s3://b/p".into(),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI".into()),
            ..Default::default()
        };
        let d = format!("{s:?}");
        assert!(
            !d.contains("AKIDEXAMPLE") && !d.contains("wJalrXUtnFEMI"),
            "{d}"
        );
        assert!(d.contains("[set]"));
    }
}
