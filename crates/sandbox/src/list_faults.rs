//! Failing batch-list pages, shared by the four sandboxes: [`ListFault`] says what goes wrong with
//! a page after the first, and [`answer`] builds it from the provider's own error forms and the
//! real page. Each sandbox decides which requests are "not the first page" (a cursor, or an
//! offset past 0) and keeps the fault set by its `set_list_fault`.

use axum::response::Response;

use super::faults::{Cut, cut};

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
