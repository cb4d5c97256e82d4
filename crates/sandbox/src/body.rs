//! Served result bodies, shared by the sandboxes: extract.page's deterministic JSON in its
//! documented result schema `{"chunks":[{"page_content","page_no","bbox","chunk_type"},…]}`, a
//! pure function of (sandbox seed, batch id, item id, target size), which Talonic and
//! PerfectParser wrap in their own envelopes, and the frame helpers ([`digest_frames`],
//! [`stream_frames`]) LlamaCloud's bodies use too.
//!
//! The exact length is computed up front (so `Content-Length` is set) and the bytes are produced
//! in frames of about 64 KiB, never materialised whole: a 1 GB result costs one frame of memory.
//! [`Layout::digest`] walks the same frames, so `Sandbox::expected` matches what is served.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use sha2::{Digest, Sha256};

use super::seeded::{SplitMix, hash_ids};

/// Bytes of `page_content` per chunk when the result is large.
const CONTENT_PER_CHUNK: u64 = 1900;
const CHUNKS_PER_PAGE: u64 = 3;
/// Every chunk has some text, so tiny targets round up to a small valid document.
const MIN_CONTENT: u64 = 8;
const FRAME: usize = 64 * 1024;

const HEAD: &[u8] = b"{\"chunks\":[";
const TAIL: &[u8] = b"]}";
const C1: &[u8] = b"{\"page_content\":\"";
const C2: &[u8] = b"\",\"page_no\":";
const C3: &[u8] = b",\"bbox\":[";
const C4: &[u8] = b"],\"chunk_type\":\"text\"}";
/// `NN.NN,NNN.NN,NNN.NN,NNN.NN`: every coordinate has a fixed width (see [`write_bbox`]).
const BBOX_LEN: u64 = 26;
const CHUNK_FIXED: u64 = (C1.len() + C2.len() + C3.len() + C4.len()) as u64 + BBOX_LEN;

const WORDS: &[&str] = &[
    "the",
    "invoice",
    "total",
    "amount",
    "due",
    "page",
    "section",
    "table",
    "of",
    "contents",
    "revenue",
    "quarter",
    "report",
    "figure",
    "shows",
    "and",
    "in",
    "for",
    "with",
    "annual",
    "customer",
    "account",
    "number",
    "date",
    "signature",
    "summary",
    "analysis",
    "results",
    "method",
    "data",
    "value",
    "net",
    "gross",
    "tax",
    "rate",
    "item",
    "description",
    "unit",
    "price",
    "quantity",
    "notes",
    "appendix",
    "reference",
    "Überblick",
    "données",
    "año",
];

/// The shape of one result body.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    seed: u64,
    chunks: u64,
    content: u64,
    last_content: u64,
    len: u64,
}

impl Layout {
    pub(crate) fn new(sandbox_seed: u64, batch: &str, item: &str, target: usize) -> Layout {
        let target = target as u64;
        let chunks = (target / (CONTENT_PER_CHUNK + CHUNK_FIXED + 4)).max(1);
        let mut overhead = (HEAD.len() + TAIL.len()) as u64 + (chunks - 1);
        for i in 0..chunks {
            overhead += CHUNK_FIXED + digits(page_no(i));
        }
        let content_total = target.saturating_sub(overhead).max(chunks * MIN_CONTENT);
        Layout {
            seed: hash_ids(sandbox_seed, batch, item),
            chunks,
            content: content_total / chunks,
            last_content: content_total / chunks + content_total % chunks,
            len: overhead + content_total,
        }
    }

    /// The exact body length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Pages the chunks span (the item's `page_count`).
    pub(crate) fn pages(&self) -> u64 {
        page_no(self.chunks - 1)
    }

    pub(crate) fn frames(&self) -> Frames {
        Frames {
            layout: self.clone(),
            next: 0,
            done: false,
        }
    }

    /// sha256 (lowercase hex) and length of the body, computed frame by frame.
    pub(crate) fn digest(&self) -> (String, u64) {
        let (sha, n) = digest_frames(self.frames());
        debug_assert_eq!(n, self.len);
        (sha, n)
    }

    /// The body as a stream; the first frame waits `delay`.
    pub(crate) fn stream(
        &self,
        delay: Duration,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        stream_frames(self.frames(), delay)
    }

    fn write_chunk(&self, i: u64, buf: &mut BytesMut) {
        let mut rng = SplitMix::new(self.seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
        let content = if i + 1 == self.chunks {
            self.last_content
        } else {
            self.content
        };
        buf.put_slice(C1);
        write_text(&mut rng, content, buf);
        buf.put_slice(C2);
        buf.put_slice(page_no(i).to_string().as_bytes());
        buf.put_slice(C3);
        write_bbox(&mut rng, buf);
        buf.put_slice(C4);
    }
}

/// sha256 (lowercase hex) and length of a body given frame by frame.
pub(crate) fn digest_frames<F: AsRef<[u8]>>(frames: impl IntoIterator<Item = F>) -> (String, u64) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    for frame in frames {
        n += frame.as_ref().len() as u64;
        h.update(frame.as_ref());
    }
    (hex::encode(h.finalize()), n)
}

/// A body given frame by frame, as a response stream; the first frame waits `delay`.
pub(crate) fn stream_frames<I>(
    frames: I,
    delay: Duration,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    I: Iterator<Item = Bytes> + Send + 'static,
{
    futures_util::stream::unfold((delay, frames), |(delay, mut frames)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let frame = frames.next()?;
        Some((Ok(frame), (Duration::ZERO, frames)))
    })
}

/// The body, frame by frame.
pub(crate) struct Frames {
    layout: Layout,
    next: u64,
    done: bool,
}

impl Iterator for Frames {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut buf = BytesMut::with_capacity(FRAME + 4096);
        if self.next == 0 {
            buf.put_slice(HEAD);
        }
        while buf.len() < FRAME && self.next < self.layout.chunks {
            if self.next > 0 {
                buf.put_u8(b',');
            }
            self.layout.write_chunk(self.next, &mut buf);
            self.next += 1;
        }
        if self.next == self.layout.chunks {
            buf.put_slice(TAIL);
            self.done = true;
        }
        Some(buf.freeze())
    }
}

fn page_no(chunk: u64) -> u64 {
    chunk / CHUNKS_PER_PAGE + 1
}

fn digits(mut n: u64) -> u64 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Exactly `len` bytes of JSON string content: words, spaces, sentence breaks and `\n` escapes
/// (never split), UTF-8 only at word boundaries.
fn write_text(rng: &mut SplitMix, len: u64, buf: &mut BytesMut) {
    let mut left = len as usize;
    while left > 0 {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if word.len() >= left {
            // Finish with ASCII letters so no multi-byte character is cut.
            buf.put_bytes(b'x', left);
            return;
        }
        buf.put_slice(word.as_bytes());
        left -= word.len();
        let sep: &[u8] = match rng.below(16) {
            0 => b". ",
            1 => b"\\n",
            _ => b" ",
        };
        if sep.len() > left {
            buf.put_bytes(b' ', left);
            return;
        }
        buf.put_slice(sep);
        left -= sep.len();
    }
}

/// PDF points on a letter page, each coordinate with a fixed number of digits.
fn write_bbox(rng: &mut SplitMix, buf: &mut BytesMut) {
    let x0 = 3600 + rng.below(6400); // 36.00 ..= 99.99
    let y0 = 10_000 + rng.below(60_000); // 100.00 ..= 699.99
    let x1 = 40_000 + rng.below(17_600); // 400.00 ..= 575.99
    let y1 = y0 + 2000 + rng.below(8000); // 120.00 ..= 799.98
    let text = format!(
        "{}.{:02},{}.{:02},{}.{:02},{}.{:02}",
        x0 / 100,
        x0 % 100,
        y0 / 100,
        y0 % 100,
        x1 / 100,
        x1 % 100,
        y1 / 100,
        y1 % 100
    );
    debug_assert_eq!(text.len() as u64, BBOX_LEN);
    buf.put_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn materialise(l: &Layout) -> Vec<u8> {
        l.frames().flat_map(|f| f.to_vec()).collect()
    }

    #[test]
    fn exact_length_valid_json_and_deterministic() {
        for target in [0, 1, 100, 250, 4000, 20_000, 300_000] {
            let l = Layout::new(7, "batch_1", "item_1", target);
            let bytes = materialise(&l);
            assert_eq!(bytes.len() as u64, l.len(), "target {target}");
            if target >= 250 {
                assert_eq!(l.len(), target as u64);
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
            let chunks = v["chunks"].as_array().expect("chunks");
            assert!(!chunks.is_empty());
            for c in chunks {
                assert!(c["page_content"].is_string());
                assert!(c["page_no"].as_u64().unwrap() >= 1);
                assert_eq!(c["bbox"].as_array().unwrap().len(), 4);
                assert_eq!(c["chunk_type"], "text");
            }
            assert_eq!(
                chunks.last().unwrap()["page_no"].as_u64().unwrap(),
                l.pages()
            );
            assert_eq!(
                materialise(&Layout::new(7, "batch_1", "item_1", target)),
                bytes
            );
            let (sha, n) = l.digest();
            assert_eq!(n, l.len());
            assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        }
        let a = materialise(&Layout::new(7, "b", "i", 5000));
        assert_ne!(a, materialise(&Layout::new(8, "b", "i", 5000)));
        assert_ne!(a, materialise(&Layout::new(7, "b", "j", 5000)));
    }

    #[test]
    fn large_bodies_come_in_bounded_frames() {
        let l = Layout::new(1, "b", "i", 5_000_000);
        let mut total = 0u64;
        for frame in l.frames() {
            assert!(frame.len() < FRAME + 4096);
            total += frame.len() as u64;
        }
        assert_eq!(total, 5_000_000);
    }
}
