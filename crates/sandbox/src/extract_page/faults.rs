//! Result faults of the extract.page sandbox: the ways a real result download goes wrong (a
//! connection dropped mid-body, a body shorter than its `Content-Length`, a stall after the
//! headers, a 1 byte/s trickle, 5xx and 429 answers, a redirect loop, a gzip bomb, a body over any
//! sane cap, malformed or truncated JSON), a provider outage, failing list pages, a test clock,
//! and a seeded random mix of faults for `batchmirror sandbox --fault`. The half-body cuts are
//! the crate's ([`crate::list_faults`]).
//!
//! It owns the faulty responses and the mix; which request consumes a fault is decided by the
//! listeners ([`super::routes`] and [`super::object_store`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::world::Item;
use super::{Fault, ListFault, Sandbox, Shared};
use crate::fastapi::status_detail;
use crate::list_faults::{Cut, cut};
use crate::seeded::SplitMix;

/// An injected `status` as FastAPI answers it (`Rate limit exceeded` for a 429), with
/// `Retry-After` verbatim when given.
pub(super) fn fault_response(status: u16, retry_after: Option<String>) -> Response {
    status_detail(status, retry_after, "Rate limit exceeded")
}

/// How long a stalled body stays silent: longer than any client should wait.
const STALL: Duration = Duration::from_secs(3600);
/// Padding frames of the oversize and gzip-bomb bodies.
const PAD_FRAME: usize = 64 * 1024;

/// What goes wrong with one result download (see [`Fault::Result`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultFault {
    /// The full `Content-Length` is announced, half the body is sent, then the connection drops.
    Reset,
    /// The full `Content-Length` is announced, half the body is sent, then the body ends cleanly.
    ShortBody,
    /// Status line and headers go out at once, then not one body byte for an hour.
    Stall,
    /// The right body, one byte a second: never silent long enough for a read timeout.
    Trickle,
    /// The API answers this status (with `Retry-After` when given) instead of the result.
    Status {
        status: u16,
        retry_after: Option<RetryAfter>,
    },
    /// The API redirects to the object store, which redirects back to the API: a loop.
    RedirectLoop,
    /// `Content-Encoding: gzip`: a small compressed body that decodes to `decoded_bytes` of JSON.
    GzipBomb { decoded_bytes: u64 },
    /// A valid JSON body of `bytes` bytes, with `Content-Length` when `announced`, else chunked.
    Oversize { bytes: u64, announced: bool },
    /// 200 `application/json` whose body is not JSON at all.
    MalformedJson,
    /// 200 `application/json` with the first half of the real body (a complete HTTP message).
    TruncatedJson,
}

/// A `Retry-After` value, rendered when the answer is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delay-seconds.
    Seconds(u64),
    /// An HTTP date this far after the answer.
    DateIn(Duration),
    /// Sent verbatim (e.g. junk such as `"soon"`).
    Raw(String),
}

impl RetryAfter {
    fn render(&self) -> String {
        match self {
            Self::Seconds(s) => s.to_string(),
            Self::DateIn(d) => httpdate::fmt_http_date(SystemTime::now() + *d),
            Self::Raw(v) => v.clone(),
        }
    }
}

impl ResultFault {
    /// The names `batchmirror sandbox --fault` accepts, in the order of [`ResultFault::named`].
    pub const NAMES: [&'static str; 14] = [
        "reset",
        "short-body",
        "stall",
        "trickle",
        "5xx",
        "429-seconds",
        "429-date",
        "429-junk",
        "429-bare",
        "redirect-loop",
        "gzip-bomb",
        "oversize",
        "bad-json",
        "truncated-json",
    ];

    /// The fault a `--fault` name stands for. Sizes are past the client's default cap (1 GiB).
    pub fn named(name: &str) -> Option<ResultFault> {
        let status = |status, retry_after| ResultFault::Status {
            status,
            retry_after,
        };
        Some(match name {
            "reset" => Self::Reset,
            "short-body" => Self::ShortBody,
            "stall" => Self::Stall,
            "trickle" => Self::Trickle,
            "5xx" => status(503, None),
            "429-seconds" => status(429, Some(RetryAfter::Seconds(2))),
            "429-date" => status(429, Some(RetryAfter::DateIn(Duration::from_secs(2)))),
            "429-junk" => status(429, Some(RetryAfter::Raw("soon".into()))),
            "429-bare" => status(429, None),
            "redirect-loop" => Self::RedirectLoop,
            "gzip-bomb" => Self::GzipBomb {
                decoded_bytes: (1 << 30) + (1 << 20),
            },
            "oversize" => Self::Oversize {
                bytes: (1 << 30) + 1,
                announced: true,
            },
            "bad-json" => Self::MalformedJson,
            "truncated-json" => Self::TruncatedJson,
            _ => return None,
        })
    }

    /// Whether the API answers it itself rather than the request serving the body.
    fn api_only(&self) -> bool {
        matches!(self, Self::Status { .. } | Self::RedirectLoop)
    }
}

/// A seeded random mix of faults over a fraction of the result requests.
#[derive(Debug, Clone)]
pub struct FaultMix {
    /// The faults drawn from, uniformly.
    pub faults: Vec<ResultFault>,
    /// Fraction of result-endpoint requests that get a fault, 0.0 to 1.0.
    pub rate: f64,
    /// Seeds the draws: the same seed faults the same requests.
    pub seed: u64,
}

/// The mix and its generator.
pub(crate) struct MixState {
    mix: FaultMix,
    rng: SplitMix,
}

impl Sandbox {
    /// Queues `n` faults answering `status` to the next `n` API requests under `path_prefix`:
    /// a burst of server errors.
    pub fn push_burst(&self, path_prefix: &str, status: u16, n: usize) {
        for _ in 0..n {
            self.push_fault(Fault::Status {
                path_prefix: path_prefix.to_owned(),
                status,
                retry_after: None,
            });
        }
    }

    /// Takes the API down: every request whose raw path contains `pattern` ("/" for all of it,
    /// "/result" for the result endpoint only) is answered 503 until called again with None.
    /// Queued [`Fault::Status`] faults are still served first.
    pub fn set_outage(&self, pattern: Option<&str>) {
        self.shared.lock().outage = pattern.map(str::to_owned);
    }

    /// While set, every `GET /v1/batches` with a non-empty `cursor` (a page past the first) is
    /// answered with `fault`; first pages are served normally. None clears it.
    pub fn set_list_fault(&self, fault: Option<ListFault>) {
        self.shared.lock().list_fault = fault;
    }

    /// Moves the simulated clock forward (the test clock), in simulated time.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Each result body served moves the simulated clock forward by `cost` (zero by default):
    /// a link that can only deliver so many results before a deadline.
    pub fn set_result_cost(&self, cost: Duration) {
        self.shared.lock().result_cost = cost;
    }

    /// Applies `mix` to the result requests from now on (None stops it). Targeted faults queued
    /// with [`Sandbox::push_fault`] are served first.
    pub fn set_fault_mix(&self, mix: Option<FaultMix>) {
        self.shared.lock().mix = mix.map(|mix| MixState {
            rng: SplitMix::new(mix.seed ^ 0xfa17_fa17_0000_0001),
            mix,
        });
    }
}

impl Shared {
    /// The fault for this API result request: a queued one for the item, else a draw from the
    /// mix. A drawn body fault of a redirected item is queued for the object store instead.
    pub(crate) fn api_result_fault(
        &self,
        batch: &str,
        item: &str,
        redirected: bool,
    ) -> Option<ResultFault> {
        let queued = self.take_fault(|f| {
            matches!(f, Fault::Result { batch: b, item: i, fault }
                if b == batch && i == item && (fault.api_only() || !redirected))
        });
        if let Some(Fault::Result { fault, .. }) = queued {
            return Some(fault);
        }
        let mut m = self.lock();
        let drawn = m.mix.as_mut().and_then(|s| {
            if s.mix.faults.is_empty() || s.rng.unit() >= s.mix.rate {
                return None;
            }
            let k = s.rng.below(s.mix.faults.len() as u64) as usize;
            Some(s.mix.faults[k].clone())
        })?;
        if redirected && !drawn.api_only() {
            m.faults.push_front(Fault::Result {
                batch: batch.to_owned(),
                item: item.to_owned(),
                fault: drawn,
            });
            return None;
        }
        Some(drawn)
    }

    /// The queued body fault for an object-store GET of this item.
    pub(crate) fn store_result_fault(&self, batch: &str, item: &str) -> Option<ResultFault> {
        match self.take_fault(|f| {
            matches!(f, Fault::Result { batch: b, item: i, fault }
                if b == batch && i == item && !fault.api_only())
        }) {
            Some(Fault::Result { fault, .. }) => Some(fault),
            _ => None,
        }
    }

    /// Whether an outage covers this API path.
    pub(crate) fn in_outage(&self, path: &str) -> bool {
        self.lock()
            .outage
            .as_deref()
            .is_some_and(|p| path.contains(p))
    }

    /// Charges one served result to the simulated clock.
    pub(crate) fn charge_result(&self) {
        let cost = self.lock().result_cost;
        if !cost.is_zero() {
            self.clock.advance(cost);
        }
    }
}

/// The faulty answer to a result request for `item`.
pub(crate) fn respond(sh: &Arc<Shared>, batch: &str, item: &Item, fault: &ResultFault) -> Response {
    let (frames, len) = body_frames(sh, batch, item);
    let json = |cl: u64, body: Body| {
        axum::http::Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, cl)
            .body(body)
    };
    let built = match fault {
        ResultFault::Reset => return cut(frames, len, Cut::Reset),
        ResultFault::ShortBody => return cut(frames, len, Cut::Short),
        ResultFault::TruncatedJson => return cut(frames, len, Cut::Truncated),
        ResultFault::Stall => json(
            len,
            Body::from_stream(futures_util::stream::once(async {
                tokio::time::sleep(STALL).await;
                Ok::<_, std::io::Error>(Bytes::new())
            })),
        ),
        ResultFault::Trickle => json(len, Body::from_stream(trickle(frames))),
        ResultFault::MalformedJson => {
            let body: &[u8] = b"{\"chunks\": [{\"page_content\": undefined,}] <html>oops";
            json(body.len() as u64, Body::from(body))
        }
        ResultFault::Oversize { bytes, announced } => {
            let builder = axum::http::Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json");
            let builder = if *announced {
                builder.header(header::CONTENT_LENGTH, *bytes)
            } else {
                builder
            };
            builder.body(Body::from_stream(futures_util::stream::iter(
                padded_json(*bytes).map(Ok::<_, std::io::Error>),
            )))
        }
        ResultFault::GzipBomb { decoded_bytes } => {
            // Compressing a GiB takes seconds: off the runtime, once per size.
            let (sh, n) = (sh.clone(), *decoded_bytes);
            let gz = futures_util::stream::once(async move {
                let cached = sh.lock().bomb.clone().filter(|(size, _)| *size == n);
                if let Some((_, gz)) = cached {
                    return Ok(gz);
                }
                let gz = tokio::task::spawn_blocking(move || gzip(padded_json(n)))
                    .await
                    .map_err(std::io::Error::other)?;
                sh.lock().bomb = Some((n, gz.clone()));
                Ok::<_, std::io::Error>(gz)
            });
            axum::http::Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from_stream(gz))
        }
        ResultFault::Status {
            status,
            retry_after,
        } => {
            return fault_response(*status, retry_after.as_ref().map(RetryAfter::render));
        }
        ResultFault::RedirectLoop => axum::http::Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, sh.loop_url(batch, &item.id))
            .header(header::CONTENT_LENGTH, 0)
            .body(Body::empty()),
    };
    built.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The item's real body, frame by frame, and its length.
fn body_frames(
    sh: &Shared,
    batch: &str,
    item: &Item,
) -> (Box<dyn Iterator<Item = Bytes> + Send>, u64) {
    match &item.body {
        Some(body) => (Box::new(std::iter::once(body.clone())), body.len() as u64),
        None => {
            let layout = sh.layout(batch, item);
            let len = layout.len();
            (Box::new(layout.frames()), len)
        }
    }
}

/// `frames`, one byte a second.
fn trickle(
    frames: Box<dyn Iterator<Item = Bytes> + Send>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let bytes = frames.flat_map(|f| (0..f.len()).map(move |i| f.slice(i..=i)));
    futures_util::stream::unfold(bytes, |mut bytes| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = bytes.next()?;
        Some((Ok(b), bytes))
    })
}

/// Exactly `len` bytes (at least 16) of valid JSON: `{"padding":"    …    "}`, in frames.
fn padded_json(len: u64) -> impl Iterator<Item = Bytes> + Send {
    const HEAD: &[u8] = b"{\"padding\":\"";
    const TAIL: &[u8] = b"\"}";
    let fixed = (HEAD.len() + TAIL.len()) as u64;
    let mut pad = len.saturating_sub(fixed);
    let spaces = Bytes::from(vec![b' '; PAD_FRAME]);
    let body = std::iter::from_fn(move || {
        if pad == 0 {
            return None;
        }
        let n = pad.min(PAD_FRAME as u64) as usize;
        pad -= n as u64;
        Some(spaces.slice(..n))
    });
    std::iter::once(Bytes::from_static(HEAD))
        .chain(body)
        .chain(std::iter::once(Bytes::from_static(TAIL)))
}

/// gzip of the frames (runs of spaces shrink about a thousandfold at any level).
fn gzip(frames: impl Iterator<Item = Bytes>) -> Bytes {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for f in frames {
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(&f);
    }
    Bytes::from(enc.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_json_is_exactly_sized_valid_json() {
        for len in [16u64, 100, 70_000, 200_000] {
            let bytes: Vec<u8> = padded_json(len).flat_map(|f| f.to_vec()).collect();
            assert_eq!(bytes.len() as u64, len);
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("valid JSON");
        }
    }

    #[test]
    fn a_gzip_bomb_is_small_on_the_wire_and_large_decoded() {
        use std::io::Read as _;
        let gz = gzip(padded_json(8 << 20));
        assert!(gz.len() < 64 * 1024, "{} bytes compressed", gz.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 8 << 20);
    }

    #[test]
    fn every_name_parses_and_unknown_ones_do_not() {
        for name in ResultFault::NAMES {
            assert!(ResultFault::named(name).is_some(), "{name}");
        }
        assert_eq!(ResultFault::named("meteor"), None);
    }
}
