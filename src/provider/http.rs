//! HTTP plumbing shared by the adapters: the two clients, status → error mapping, bounded reads
//! and the parsing of server-requested waits.
//!
//! There are two clients on purpose. The API client carries credentials (per request, never as a
//! default header). The presigned client is a separate connection pool with no credentials, no
//! Referer and no redirects, so a presigned URL can never receive an API key, whatever the adapter
//! does.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;

use super::{BodyStream, ResultBody};
use crate::config::{DownloadSettings, Secret};
use crate::error::{ProviderError, redact_url};

/// Largest listing page we read into memory. Results are streamed and capped elsewhere.
pub const MAX_LISTING_BYTES: usize = 32 * 1024 * 1024;
/// How much of an error body is kept for the ledger and logs.
const MAX_ERROR_BODY: usize = 2048;

/// The API client and the credential-free client for presigned URLs.
#[derive(Clone)]
pub struct Clients {
    pub api: reqwest::Client,
    pub presigned: reqwest::Client,
}

impl Clients {
    pub fn new(download: &DownloadSettings) -> Result<Self, ProviderError> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("batchmirror/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(download.connect_timeout)
                // A per-read idle timeout, not a total one: a 1 GB body may take minutes, a stall must not.
                .read_timeout(download.read_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                .pool_idle_timeout(Duration::from_secs(60))
        };
        let build = |b: reqwest::ClientBuilder| {
            b.build().map_err(|e| ProviderError::Transport {
                url: String::new(),
                message: format!("cannot build HTTP client: {e}"),
            })
        };
        Ok(Self {
            api: build(builder())?,
            presigned: build(builder())?,
        })
    }
}

/// How a provider wants its key presented.
#[derive(Clone, Copy, Debug)]
pub enum KeyStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A header of its own, such as `X-API-KEY`.
    Header(&'static str),
}

/// Sends `req` (built on the API client, for `url`) with the key and `Accept: application/json`.
/// The key is added here, per request, so no other request can carry it; the answer's status is
/// left to the adapter, which knows its provider's error forms.
pub async fn send_keyed(
    req: reqwest::RequestBuilder,
    url: &url::Url,
    key: &Secret,
    style: KeyStyle,
) -> Result<Response, ProviderError> {
    let req = match style {
        KeyStyle::Bearer => req.bearer_auth(key.expose()),
        KeyStyle::Header(name) => req.header(name, key.expose()),
    };
    req.header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport(url, e))
}

/// Maps a transport error without letting reqwest print the URL (it would include the query).
pub fn transport(url: &url::Url, err: reqwest::Error) -> ProviderError {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::Transport {
        url: redact_url(url),
        message,
    }
}

/// Reads at most `limit` bytes of a body; longer bodies are an error.
pub async fn read_limited(
    resp: Response,
    url: &url::Url,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ProviderError::TooLarge {
            url: redact_url(url),
            cap: limit as u64,
        });
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(url, e))?;
        if out.len() + chunk.len() > limit {
            return Err(ProviderError::TooLarge {
                url: redact_url(url),
                cap: limit as u64,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads a listing page as JSON, bounded in size.
pub async fn read_json<T: DeserializeOwned>(
    resp: Response,
    url: &url::Url,
) -> Result<T, ProviderError> {
    let body = read_limited(resp, url, MAX_LISTING_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| ProviderError::Malformed {
        url: redact_url(url),
        message: format!("invalid JSON: {e}"),
    })
}

/// Turns a non-success response into the error the retry rule understands. 2xx and 3xx pass.
pub async fn check_status(resp: Response, url: &url::Url) -> Result<Response, ProviderError> {
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        return Ok(resp);
    }
    let retry_after = wait_hint(status, resp.headers(), SystemTime::now());
    let body = error_body(resp, url).await;
    let url = redact_url(url);
    Err(match status {
        StatusCode::CONFLICT => ProviderError::NotReady { url, body },
        StatusCode::GONE => ProviderError::Gone {
            url,
            status: 410,
            body,
        },
        _ => ProviderError::Status {
            url,
            status: status.as_u16(),
            body,
            retry_after,
            retryable: None,
        },
    })
}

/// An error of [`check_status`] seen outside result fetching (submitting): there a 409 or 410
/// says nothing about a result's readiness or expiry, so it becomes a plain status for the one
/// retry rule to judge.
pub fn as_status(err: ProviderError) -> ProviderError {
    match err {
        ProviderError::NotReady { url, body } => ProviderError::Status {
            url,
            status: 409,
            body,
            retry_after: None,
            retryable: None,
        },
        ProviderError::Gone { url, status, body } => ProviderError::Status {
            url,
            status,
            body,
            retry_after: None,
            retryable: None,
        },
        other => other,
    }
}

async fn error_body(resp: Response, url: &url::Url) -> String {
    match read_limited(resp, url, 64 * 1024).await {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            let mut cut = text.len().min(MAX_ERROR_BODY);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_owned()
        }
        Err(e) => format!("(body unreadable: {e})"),
    }
}

/// How long the server asked us to wait: `Retry-After` (seconds or HTTP date), else, on 429 and
/// 503, `X-RateLimit-Reset` (Unix seconds or ISO-8601). Junk values are ignored.
pub fn wait_hint(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // Stainless SDKs (LlamaCloud) honour this millisecond form first.
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_millis(ms as u64));
    }
    if let Some(v) = header("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    // The reset time is a wait only when the quota is spent (or, on a 429, not stated): Talonic and
    // PerfectParser send it on every answer, and Talonic's is the next midnight, so a refusal for
    // another reason must not stall every request until then.
    let remaining = header("x-ratelimit-remaining");
    let throttled = match status {
        StatusCode::TOO_MANY_REQUESTS => remaining.is_none_or(|r| r == "0"),
        StatusCode::SERVICE_UNAVAILABLE => remaining == Some("0"),
        _ => false,
    };
    let reset = header("x-ratelimit-reset").filter(|_| throttled)?;
    let at = match reset.parse::<u64>() {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => chrono::DateTime::parse_from_rfc3339(reset)
            .ok()?
            .with_timezone(&chrono::Utc)
            .into(),
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Slows the provider's limiter when a success says the quota is spent: `X-RateLimit-Remaining: 0`
/// with `X-RateLimit-Reset` (Unix seconds or ISO-8601) holds every request until the reset.
pub fn observe_rate_headers(limiter: &super::retry::Limiter, headers: &HeaderMap, now: SystemTime) {
    let remaining = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if remaining == Some(0)
        && let Some(wait) = wait_hint(StatusCode::TOO_MANY_REQUESTS, headers, now)
    {
        limiter.pause_for(wait.min(Duration::from_secs(15 * 60)));
        limiter.throttled();
    }
}

/// Fetches a presigned URL with the credential-free client and returns its streamed body.
pub async fn fetch_presigned(
    clients: &Clients,
    url: url::Url,
) -> Result<ResultBody, ProviderError> {
    presigned_scheme(&url, "presigned URL")?;
    let resp = clients
        .presigned
        .get(url.clone())
        .send()
        .await
        .map_err(|e| transport(&url, e))?;
    // A refusal from the store (expired or rejected signature, missing object) is about this link,
    // not the result: asking the API again yields a fresh one, and the API, not the store, says
    // when a result is gone (410). So it is retried, never a permanent failure.
    // A 409 or 410 here is the store's word on a link, not the API's on the result: only the API
    // says a result is gone, so they are judged as plain statuses, like any store refusal.
    let resp = check_status(resp, &url)
        .await
        .map_err(|e| store_refusal(as_status(e), "presigned URL"))?;
    if resp.status().is_redirection() {
        return Err(ProviderError::Redirect {
            url: redact_url(&url),
            message: "the presigned URL redirected again".into(),
        });
    }
    Ok(body_of(resp, &url))
}

/// True when a create answered with an earlier job for its `Idempotency-Key`
/// (`Idempotent-Replayed: true`, PerfectParser's marker; extract.page documents none).
pub fn replayed(headers: &HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Presigned URLs come from the server: only http(s) is followed.
pub fn presigned_scheme(url: &url::Url, what: &str) -> Result<(), ProviderError> {
    if matches!(url.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err(ProviderError::Redirect {
            url: redact_url(url),
            message: format!("{what} scheme {:?} is not http(s)", url.scheme()),
        })
    }
}

/// An object store's 4xx (expired or rejected signature, missing object, disputed length) is
/// about the presigned URL, not what is behind it: retryable, since asking the API again yields a
/// fresh URL. `what` names the URL in the message.
pub fn store_refusal(err: ProviderError, what: &str) -> ProviderError {
    match err {
        ProviderError::Status {
            url,
            status,
            body,
            retry_after,
            ..
        } if (400..500).contains(&status) => ProviderError::Status {
            url,
            status,
            body: format!("{what} refused by the object store: {body}"),
            retry_after,
            retryable: Some(true),
        },
        other => other,
    }
}

/// Wraps a response's decoded body as a [`ResultBody`].
pub fn body_of(resp: Response, url: &url::Url) -> ResultBody {
    let content_length = resp.content_length();
    let err_url = url.clone();
    let stream: BodyStream = Box::pin(
        resp.bytes_stream()
            .map(move |r| r.map_err(|e| transport(&err_url, e))),
    );
    ResultBody {
        url: redact_url(url),
        content_length,
        stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            wait_hint(s, &headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            wait_hint(s, &headers(&[("retry-after", &later)]), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait_hint(s, &headers(&[("retry-after", "soon")]), now),
            None
        );
        assert_eq!(
            wait_hint(
                s,
                &headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]),
                now
            ),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn rate_limit_reset_accepts_unix_seconds_and_iso8601() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            wait_hint(s, &headers(&[("x-ratelimit-reset", "1700000012")]), now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            wait_hint(
                s,
                &headers(&[("x-ratelimit-reset", "2023-11-14T22:13:40Z")]),
                now
            ),
            Some(Duration::from_secs(20))
        );
        // A 429 with quota left is not a quota refusal either.
        assert_eq!(
            wait_hint(
                s,
                &headers(&[
                    ("x-ratelimit-reset", "1700000012"),
                    ("x-ratelimit-remaining", "7")
                ]),
                now
            ),
            None
        );
        // A 503 with quota left is not told to wait until the reset.
        assert_eq!(
            wait_hint(
                StatusCode::SERVICE_UNAVAILABLE,
                &headers(&[
                    ("x-ratelimit-reset", "1700000012"),
                    ("x-ratelimit-remaining", "5")
                ]),
                now
            ),
            None
        );
        // On a success the reset header is only information, not an order to wait.
        assert_eq!(
            wait_hint(
                StatusCode::OK,
                &headers(&[("x-ratelimit-reset", "1700000012")]),
                now
            ),
            None
        );
    }
}
