//! Failing batch-list pages, shared by the four sandboxes: [`ListFault`] says what goes wrong with
//! a page after the first, and [`answer`] builds it from the provider's own error forms and the
//! real page. Each sandbox decides which requests are "not the first page" (a cursor, or an
//! offset past 0) and keeps the fault set by its `set_list_fault`. The half-body answers
//! ([`cut`]) are shared with extract.page's result faults.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;

/// How long a body that is cut short waits before the cut: without it the server gives up before
/// the headers and the first half are even flushed, and the fault is one of the request instead.
const FLUSH: Duration = Duration::from_millis(200);

/// What goes wrong with a batch-list page after the first (see `set_list_fault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFault {
    /// 200 with the content type of JSON and the first half of the real page body.
    TruncatedJson,
    /// This status (5xx) in the provider's own error form.
    Status(u16),
    /// Headers with the full Content-Length, half the body, then the connection drops.
    Reset,
    /// The provider's documented 4xx for a bad or expired cursor/parameter (extract.page: FastAPI
    /// 422 with loc ["query","cursor"]; Talonic: its error envelope with VALIDATION_ERROR or its
    /// documented code; PerfectParser: 400 in its `{"error":{code,message}}` envelope; LlamaCloud:
    /// 422 for the offset parameter).
    RejectCursor,
}

/// The answer to a later-page list request while `fault` is set: `status` renders a
/// [`ListFault::Status`] in the provider's error form, `reject` is its refusal of the cursor, and
/// the cut answers are made from `page`, the answer the request would have had.
pub(crate) async fn answer(
    fault: &ListFault,
    page: Response,
    status: impl FnOnce(u16) -> Response,
    reject: impl FnOnce() -> Response,
) -> Response {
    let how = match fault {
        ListFault::Status(code) => return status(*code),
        ListFault::RejectCursor => return reject(),
        ListFault::TruncatedJson => Cut::Truncated,
        ListFault::Reset => Cut::Reset,
    };
    // A list page is a small JSON document already in memory, so reading it whole is fine.
    let body = axum::body::to_bytes(page.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let len = body.len() as u64;
    cut(std::iter::once(body), len, how)
}

/// How [`cut`] gives only the first half of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The full `Content-Length`, half the body, then the connection drops.
    Reset,
    /// The full `Content-Length`, half the body, then the body ends cleanly.
    Short,
    /// `Content-Length` of the half and the half: a complete message of broken JSON.
    Truncated,
}

/// 200 `application/json` with the first half of the `len`-byte body `frames`, cut as `how` says.
pub(crate) fn cut(
    frames: impl Iterator<Item = Bytes> + Send + 'static,
    len: u64,
    how: Cut,
) -> Response {
    let half = len / 2;
    let head = futures_util::stream::iter(prefix(frames, half).map(Ok::<_, std::io::Error>));
    let (announced, body) = match how {
        Cut::Truncated => (half, Body::from_stream(head)),
        Cut::Reset => (
            len,
            Body::from_stream(head.chain(futures_util::stream::once(async {
                tokio::time::sleep(FLUSH).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "sandbox: connection reset mid-body",
                ))
            }))),
        ),
        Cut::Short => (
            len,
            Body::from_stream(head.chain(futures_util::stream::once(async {
                tokio::time::sleep(FLUSH).await;
                Ok(Bytes::new())
            }))),
        ),
    };
    axum::http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, announced)
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The first `n` bytes of `frames`.
fn prefix(frames: impl Iterator<Item = Bytes>, n: u64) -> impl Iterator<Item = Bytes> {
    let mut left = n as usize;
    frames.map_while(move |f| {
        if left == 0 {
            return None;
        }
        let take = f.len().min(left);
        left -= take;
        Some(f.slice(..take))
    })
}
