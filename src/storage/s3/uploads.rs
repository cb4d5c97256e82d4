//! Incomplete multipart uploads in the staging area: a process killed while streaming a large
//! body leaves one, invisible to listings of objects but stored (and billed) until aborted. The
//! object store crate has no call to list them, so this sends the two signed S3 requests itself
//! (`ListMultipartUploads`, `AbortMultipartUpload`) with the store's own credentials and signer.

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;

/// S3's URI encoding: everything but unreserved characters (and `/` between key segments).
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
const QUERY_SET: &AsciiSet = &KEY_SET.add(b'/');

/// Where requests go: the path-style bucket URL and the signing region.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub bucket_url: String,
    pub region: String,
}

/// One incomplete upload: its key, id and when it began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Upload {
    pub key: String,
    pub upload_id: String,
    pub initiated: chrono::DateTime<chrono::Utc>,
}

/// Why a raw request failed: the message, without credentials (none are ever put in it).
pub(super) type Failure = String;

async fn send(
    store: &AmazonS3,
    http: &reqwest::Client,
    at: &Endpoint,
    method: Method,
    url: String,
) -> Result<String, Failure> {
    let cred = (store.credentials().get_credential().await).map_err(|e| e.to_string())?;
    let mut req = HttpRequest::new(HttpRequestBody::empty());
    *req.method_mut() = method.clone();
    *req.uri_mut() = url.parse().map_err(|e| format!("{e}"))?;
    AwsAuthorizer::new(&cred, "s3", &at.region).authorize(&mut req, None);
    let mut out = http.request(method, &url);
    for (k, v) in req.headers() {
        out = out.header(k, v);
    }
    let resp = out.send().await.map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
    if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
        Ok(text)
    } else {
        Err(format!(
            "HTTP {status}: {}",
            tag(&text, "Code").unwrap_or_default()
        ))
    }
}

/// The incomplete uploads whose key starts with `prefix`, every page.
pub(super) async fn list(
    store: &AmazonS3,
    http: &reqwest::Client,
    at: &Endpoint,
    prefix: &str,
) -> Result<Vec<Upload>, Failure> {
    let mut out = Vec::new();
    let (mut key_marker, mut id_marker) = (String::new(), String::new());
    loop {
        let mut url = format!(
            "{}?uploads=&prefix={}",
            at.bucket_url,
            utf8_percent_encode(prefix, QUERY_SET)
        );
        if !key_marker.is_empty() {
            url.push_str(&format!(
                "&key-marker={}&upload-id-marker={}",
                utf8_percent_encode(&key_marker, QUERY_SET),
                utf8_percent_encode(&id_marker, QUERY_SET)
            ));
        }
        let xml = send(store, http, at, Method::GET, url).await?;
        for u in blocks(&xml, "Upload") {
            let (Some(key), Some(upload_id)) = (tag(u, "Key"), tag(u, "UploadId")) else {
                continue;
            };
            let initiated = tag(u, "Initiated")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map_or_else(chrono::Utc::now, |t| t.to_utc());
            out.push(Upload {
                key,
                upload_id,
                initiated,
            });
        }
        let truncated = tag(&xml, "IsTruncated").is_some_and(|t| t == "true");
        key_marker = tag(&xml, "NextKeyMarker").unwrap_or_default();
        id_marker = tag(&xml, "NextUploadIdMarker").unwrap_or_default();
        if !truncated || key_marker.is_empty() {
            return Ok(out);
        }
    }
}

/// Aborts one upload; an upload already gone is fine.
pub(super) async fn abort(
    store: &AmazonS3,
    http: &reqwest::Client,
    at: &Endpoint,
    u: &Upload,
) -> Result<(), Failure> {
    let url = format!(
        "{}/{}?uploadId={}",
        at.bucket_url,
        utf8_percent_encode(&u.key, KEY_SET),
        utf8_percent_encode(&u.upload_id, QUERY_SET)
    );
    send(store, http, at, Method::DELETE, url).await.map(drop)
}

/// The contents of each `<name>…</name>` element.
fn blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let body = &rest[at + open.len()..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

/// The first `<name>` element's text, XML entities decoded.
fn tag(xml: &str, name: &str) -> Option<String> {
    let text = blocks(xml, name).into_iter().next()?;
    Some(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_uploads_from_a_listing() {
        let xml = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>\
            <Upload><Key>p/.staging/a&amp;b.part</Key><UploadId>id1</UploadId>\
            <Initiated>2026-01-02T03:04:05.000Z</Initiated></Upload>\
            <Upload><Key>k2</Key><UploadId>id2</UploadId></Upload></ListMultipartUploadsResult>";
        let ups = blocks(xml, "Upload");
        assert_eq!(ups.len(), 2);
        assert_eq!(tag(ups[0], "Key").unwrap(), "p/.staging/a&b.part");
        assert_eq!(tag(ups[1], "UploadId").unwrap(), "id2");
        assert_eq!(tag(xml, "IsTruncated").unwrap(), "false");
        assert!(tag(ups[1], "Initiated").is_none());
    }
}
