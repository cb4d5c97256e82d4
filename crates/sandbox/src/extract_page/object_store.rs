//! The object store the result endpoint redirects to: S3-style presigned GETs of result blobs on
//! a second loopback listener.
//!
//! It owns the presigned URL format (`X-Amz-Date`, `X-Amz-Expires`, `X-Amz-Signature` = hex
//! HMAC-SHA256 over method, canonical path, date and expiry, keyed by the sandbox's random secret),
//! the S3 XML errors, and the store's counters: every request, the ones carrying credentials
//! (a client must never forward its API key here), and the 200 downloads. Expiry runs on the real
//! clock, as S3's does, not the simulated one.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

use super::{Fault, Shared};
use crate::Mark;

type St = Arc<Shared>;

/// Everything but RFC 3986 unreserved characters is encoded, so ids with `/`, `%`, `?`, `#` or
/// non-ASCII stay one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const AMZ_DATE: &str = "%Y%m%dT%H%M%SZ";

/// The store's 404 for anything that is not one of its routes.
pub(super) fn no_such_key() -> Response {
    s3_error(
        StatusCode::NOT_FOUND,
        "NoSuchKey",
        "The specified key does not exist.",
    )
}

/// `/results/{batch}/{item}` with both ids percent-encoded.
fn canonical_path(batch: &str, item: &str) -> String {
    format!(
        "/results/{}/{}",
        utf8_percent_encode(batch, SEGMENT),
        utf8_percent_encode(item, SEGMENT)
    )
}

/// `/loop/{batch}/{item}`: the store half of [`super::ResultFault::RedirectLoop`].
pub(crate) fn loop_path(batch: &str, item: &str) -> String {
    format!(
        "/loop/{}/{}",
        utf8_percent_encode(batch, SEGMENT),
        utf8_percent_encode(item, SEGMENT)
    )
}

/// Redirects back to the API's result URL, which redirected here: a loop between two URLs.
pub(super) async fn redirect_back(
    State(sh): State<St>,
    Path((batch, item)): Path<(String, String)>,
) -> Response {
    let location = format!(
        "{}/v1/batches/{}/items/{}/result",
        sh.api_url,
        utf8_percent_encode(&batch, SEGMENT),
        utf8_percent_encode(&item, SEGMENT)
    );
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `/uploads/{file_id}`, percent-encoded.
pub(crate) fn upload_path(file_id: &str) -> String {
    format!("/uploads/{}", utf8_percent_encode(file_id, SEGMENT))
}

fn signature(secret: &[u8], method: &str, path: &str, date: &str, expires: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{method}\n{path}\n{date}\n{expires}").as_bytes());
    mac
}

/// A presigned GET URL for the item's result, valid for `presign_ttl` of real time.
pub(crate) fn presign(sh: &Shared, batch: &str, item: &str) -> String {
    presign_url(sh, "GET", &canonical_path(batch, item))
}

/// A presigned URL for `method` on `path`, valid for `presign_ttl` of real time.
pub(crate) fn presign_url(sh: &Shared, method: &str, path: &str) -> String {
    let date = Utc::now().format(AMZ_DATE).to_string();
    let expires = sh.presign_ttl.as_secs().to_string();
    let sig = hex::encode(
        signature(&sh.secret, method, path, &date, &expires)
            .finalize()
            .into_bytes(),
    );
    format!(
        "{}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}&X-Amz-Expires={expires}\
         &X-Amz-SignedHeaders=host&X-Amz-Signature={sig}",
        sh.store_url
    )
}

/// Logs and counts every store request, and answers an injected store fault instead.
pub(super) async fn gate(State(sh): State<St>, req: Request, next: Next) -> Response {
    let index = sh.lock().log.begin(req.method().as_str(), req.uri().path());
    let h = req.headers();
    let with_credentials = ["x-api-key", "authorization", "cookie", "referer"]
        .iter()
        .any(|name| h.contains_key(*name));
    {
        let mut m = sh.lock();
        m.stats.store_requests += 1;
        if with_credentials {
            m.stats.store_requests_with_credentials += 1;
        }
    }
    if with_credentials {
        tracing::warn!(
            path = req.uri().path(),
            "object store request carried credentials"
        );
    }
    let fault = sh.take_fault(|f| matches!(f, Fault::StoreStatus { .. }));
    let resp = match fault {
        Some(Fault::StoreStatus { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let (code, message) = match status.as_u16() {
                503 => ("SlowDown", "Please reduce your request rate."),
                500 => (
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ),
                _ => ("InjectedFault", "Injected by the sandbox."),
            };
            s3_error(status, code, message)
        }
        _ => next.run(req).await,
    };
    // Never counted against the API's budget: S3 is not the API.
    sh.lock()
        .log
        .end(index, resp.status().as_u16(), Mark::default());
    resp
}

pub(super) async fn get_object(
    State(sh): State<St>,
    Path((batch, item)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(denied) = verify(&sh, "GET", &canonical_path(&batch, &item), query.as_deref()) {
        return denied;
    }
    let world = sh.world();
    let Some((b, it)) = world.item(&batch, &item) else {
        return s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    if let Some(fault) = sh.store_result_fault(&b.id, &it.id) {
        return super::faults::respond(&sh, &b.id, it, &fault);
    }
    sh.charge_result();
    let resp = sh.result_response(&b.id, it);
    *sh.lock()
        .stats
        .store_downloads
        .entry((batch, item))
        .or_default() += 1;
    resp
}

/// Checks a presigned URL's signature (over `method` and `path`) and expiry, S3-style: the
/// S3 error to answer with, or None when the URL is valid.
pub(crate) fn verify(
    sh: &Shared,
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Option<Response> {
    let mut date = None;
    let mut expires = None;
    let mut sig = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "X-Amz-Date" => date = Some(v.into_owned()),
            "X-Amz-Expires" => expires = Some(v.into_owned()),
            "X-Amz-Signature" => sig = Some(v.into_owned()),
            _ => {}
        }
    }
    let (Some(date), Some(expires), Some(sig)) = (date, expires, sig) else {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and Date parameters",
        ));
    };
    let valid = hex::decode(&sig).is_ok_and(|given| {
        signature(&sh.secret, method, path, &date, &expires)
            .verify_slice(&given)
            .is_ok()
    });
    if !valid {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    let signed_at = NaiveDateTime::parse_from_str(&date, AMZ_DATE).map(|d| d.and_utc());
    let lifetime = expires.parse::<i64>();
    let expired = match (signed_at, lifetime) {
        (Ok(at), Ok(secs)) => {
            Utc::now().timestamp_millis()
                >= at
                    .timestamp_millis()
                    .saturating_add(secs.saturating_mul(1000))
        }
        _ => true,
    };
    if expired {
        return Some(s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Request has expired",
        ));
    }
    None
}

pub(crate) fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::StatusCode;
    use reqwest::header::LOCATION;

    use super::super::Delivery;
    use super::super::tests::*;

    #[tokio::test]
    async fn redirect_is_served_without_credentials() {
        let sb = start(spec(vec![batch(
            "b",
            600,
            vec![done("r", Delivery::Redirect)],
        )]))
        .await;
        let resp = get(&result_url(&sb, "b", "r")).await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert!(
            resp.headers()[LOCATION]
                .to_str()
                .unwrap()
                .contains("X-Amz-Signature=")
        );
        assert_eq!(
            fetch_result(&sb, "b", "r").await,
            sb.expected("b", "r").unwrap()
        );
        let stats = sb.stats();
        assert_eq!(stats.store_downloads[&("b".to_owned(), "r".to_owned())], 1);
        assert_eq!(stats.store_requests, 1);
        assert_eq!(stats.store_requests_with_credentials, 0);
        let log = sb.request_log();
        let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [302, 302, 200]);
        assert!(log[2].path.starts_with("/results/b/r"));
        sb.stop().await;
    }

    /// The presigned URL the result route of item `b/r` redirects to.
    async fn presigned_location(sb: &crate::Sandbox) -> String {
        get(&result_url(sb, "b", "r")).await.headers()[LOCATION]
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn store_rejects_tampered_or_expired_signatures() {
        let sb = start(spec(vec![batch(
            "b",
            600,
            vec![done("r", Delivery::Redirect)],
        )]))
        .await;
        let location = presigned_location(&sb).await;
        let flipped = if location.ends_with('0') { '1' } else { '0' };
        let tampered = format!("{}{flipped}", &location[..location.len() - 1]);
        let other_item = location.replace("/results/b/r?", "/results/b/x?");
        let unsigned = location.split('?').next().unwrap().to_owned();
        for url in [tampered, other_item, unsigned] {
            let resp = client().get(&url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{url}");
            assert!(resp.text().await.unwrap().contains("<Error><Code>"));
        }
        sb.stop().await;

        let mut s = spec(vec![batch("b", 600, vec![done("r", Delivery::Redirect)])]);
        s.presign_ttl = Duration::ZERO;
        let sb = start(s).await;
        let location = presigned_location(&sb).await;
        let resp = client().get(&location).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let text = resp.text().await.unwrap();
        assert!(text.contains("<Code>AccessDenied</Code><Message>Request has expired</Message>"));
        assert!(sb.stats().store_downloads.is_empty());
        sb.stop().await;
    }

    #[tokio::test]
    async fn store_counts_requests_that_carry_credentials() {
        let sb = start(spec(vec![batch(
            "b",
            600,
            vec![done("r", Delivery::Redirect)],
        )]))
        .await;
        let location = presigned_location(&sb).await;
        let resp = client()
            .get(&location)
            .header("X-API-KEY", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "still served, so leaks are visible"
        );
        assert_eq!(sb.stats().store_requests_with_credentials, 1);
        sb.stop().await;
    }
}
