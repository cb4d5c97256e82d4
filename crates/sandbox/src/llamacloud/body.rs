//! Parse-job result bodies of the LlamaCloud sandbox, in the three legacy result shapes
//! (`providers.md` §2.4): `/result/json` → `{"pages":[{page,text,md,…}],"job_metadata":{…}}`,
//! `/result/markdown` → `{"markdown":"…","job_metadata":{…}}`, `/result/text` →
//! `{"text":"…","job_metadata":{…}}`.
//!
//! Each body is a pure function of (sandbox seed, job id, item id, target size): its exact length
//! is known up front (so `Content-Length` is exact) and it is produced in ~64 KiB frames, never
//! materialised whole. [`Doc::digest`] walks the same frames that are served.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;

use super::super::body::{digest_frames, stream_frames};
use super::super::seeded::{SplitMix, hash_ids};

/// Target bytes per page of the JSON body (text appears twice per page: `text` and `md`).
const PAGE_TARGET: u64 = 4000;
const MIN_TEXT: u64 = 8;
const FRAME: usize = 64 * 1024;

const P1: &[u8] = b"{\"page\":";
const P2: &[u8] = b",\"text\":\"";
const P3: &[u8] = b"\",\"md\":\"";
const P4: &[u8] =
    b"\",\"images\":[],\"items\":[],\"status\":\"OK\",\"width\":612.0,\"height\":792.0}";
const PAGE_FIXED: u64 = (P1.len() + P2.len() + P3.len() + P4.len()) as u64;
/// Between pages in the markdown body (JSON-escaped `\n\n---\n\n`) and the text body (`\n\n`).
const MD_SEP: &[u8] = b"\\n\\n---\\n\\n";
const TXT_SEP: &[u8] = b"\\n\\n";

const WORDS: &[&str] = &[
    "the", "invoice", "total", "amount", "due", "page", "section", "table", "of", "contents",
    "revenue", "quarter", "report", "figure", "shows", "and", "in", "for", "with", "annual",
    "customer", "account", "number", "date", "summary", "analysis", "results", "net", "tax",
];

/// Which result route a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Markdown,
    Text,
}

/// The shape of one result body.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    format: Format,
    seed: u64,
    pages: u64,
    text: u64,
    last_text: u64,
    meta: String,
    len: u64,
}

impl Doc {
    /// The body for `format`; the page count and page texts depend only on the JSON target size,
    /// so the three formats of one job carry the same text.
    pub(crate) fn new(seed: u64, job: &str, item: &str, target: usize, format: Format) -> Doc {
        let target = target as u64;
        let pages = (target / PAGE_TARGET).max(1);
        let meta = format!(
            "{{\"credits_used\":{pages}.0,\"job_credits_usage\":{pages},\"job_pages\":{pages},\
             \"job_auto_mode_triggered_pages\":0,\"job_is_cache_hit\":false}}"
        );
        let mut json_overhead = (head(Format::Json).len() + tail_fixed(Format::Json)) as u64
            + meta.len() as u64
            + (pages - 1);
        for p in 1..=pages {
            json_overhead += PAGE_FIXED + digits(p);
        }
        let text_total = (target.saturating_sub(json_overhead) / 2).max(pages * MIN_TEXT);
        let text = text_total / pages;
        let last_text = text + text_total % pages;
        let len = match format {
            Format::Json => json_overhead + 2 * text_total,
            Format::Markdown | Format::Text => {
                (head(format).len() + tail_fixed(format) + meta.len()) as u64
                    + text_total
                    + (pages - 1) * sep(format).len() as u64
            }
        };
        Doc {
            format,
            seed: hash_ids(seed ^ 0x11a3_a000, job, item),
            pages,
            text,
            last_text,
            meta,
            len,
        }
    }

    /// The exact body length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Pages of the parsed document.
    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }

    fn frames(&self) -> Frames {
        Frames {
            doc: self.clone(),
            next: 0,
            done: false,
        }
    }

    /// sha256 (lowercase hex) and length, computed over the served frames.
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

    /// Page `p` (0-based): its text, or for JSON the whole page object.
    fn write_page(&self, p: u64, buf: &mut BytesMut) {
        let len = if p + 1 == self.pages {
            self.last_text
        } else {
            self.text
        };
        let rng_seed = self.seed ^ p.wrapping_mul(0xA24B_AED4_963E_E407);
        match self.format {
            Format::Json => {
                buf.put_slice(P1);
                buf.put_slice((p + 1).to_string().as_bytes());
                buf.put_slice(P2);
                write_text(&mut SplitMix::new(rng_seed), len, buf);
                buf.put_slice(P3);
                write_text(&mut SplitMix::new(rng_seed), len, buf);
                buf.put_slice(P4);
            }
            Format::Markdown | Format::Text => {
                write_text(&mut SplitMix::new(rng_seed), len, buf);
            }
        }
    }
}

fn head(format: Format) -> &'static [u8] {
    match format {
        Format::Json => b"{\"pages\":[",
        Format::Markdown => b"{\"markdown\":\"",
        Format::Text => b"{\"text\":\"",
    }
}

/// Bytes of the tail around the metadata object: `…,"job_metadata":` META `}`.
fn tail_fixed(format: Format) -> usize {
    tail_open(format).len() + 1
}

fn tail_open(format: Format) -> &'static [u8] {
    match format {
        Format::Json => b"],\"job_metadata\":",
        Format::Markdown | Format::Text => b"\",\"job_metadata\":",
    }
}

fn sep(format: Format) -> &'static [u8] {
    match format {
        Format::Json => b",",
        Format::Markdown => MD_SEP,
        Format::Text => TXT_SEP,
    }
}

struct Frames {
    doc: Doc,
    next: u64,
    done: bool,
}

impl Iterator for Frames {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let format = self.doc.format;
        let mut buf = BytesMut::with_capacity(FRAME + 8192);
        if self.next == 0 {
            buf.put_slice(head(format));
        }
        while buf.len() < FRAME && self.next < self.doc.pages {
            if self.next > 0 {
                buf.put_slice(sep(format));
            }
            self.doc.write_page(self.next, &mut buf);
            self.next += 1;
        }
        if self.next == self.doc.pages {
            buf.put_slice(tail_open(format));
            buf.put_slice(self.doc.meta.as_bytes());
            buf.put_u8(b'}');
            self.done = true;
        }
        Some(buf.freeze())
    }
}

fn digits(mut n: u64) -> u64 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Exactly `len` bytes of JSON string content: ASCII words, spaces and `\n` escapes (never split).
fn write_text(rng: &mut SplitMix, len: u64, buf: &mut BytesMut) {
    let mut left = len as usize;
    while left > 0 {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if word.len() >= left {
            buf.put_bytes(b'x', left);
            return;
        }
        buf.put_slice(word.as_bytes());
        left -= word.len();
        let sep: &[u8] = if rng.below(12) == 0 { b"\\n" } else { b" " };
        if sep.len() > left {
            buf.put_bytes(b' ', left);
            return;
        }
        buf.put_slice(sep);
        left -= sep.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn materialise(d: &Doc) -> Vec<u8> {
        d.frames().flat_map(|f| f.to_vec()).collect()
    }

    #[test]
    fn exact_lengths_valid_json_deterministic_for_every_format() {
        for target in [0, 1, 500, 4000, 20_000, 300_000] {
            for format in [Format::Json, Format::Markdown, Format::Text] {
                let d = Doc::new(3, "bjb-1", "item-1", target, format);
                let bytes = materialise(&d);
                assert_eq!(bytes.len() as u64, d.len(), "{format:?} {target}");
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
                assert_eq!(v["job_metadata"]["job_pages"].as_u64(), Some(d.pages()));
                match format {
                    Format::Json => {
                        let pages = v["pages"].as_array().expect("pages");
                        assert_eq!(pages.len() as u64, d.pages());
                        assert_eq!(pages[0]["page"], 1);
                        assert_eq!(pages[0]["text"], pages[0]["md"]);
                        if target >= 1000 {
                            // Text appears twice per page, so an odd remainder is dropped.
                            assert!(d.len().abs_diff(target as u64) <= 1, "{target}");
                        }
                    }
                    Format::Markdown => assert!(v["markdown"].is_string()),
                    Format::Text => assert!(v["text"].is_string()),
                }
                assert_eq!(d.digest().0, hex::encode(Sha256::digest(&bytes)));
                let again = Doc::new(3, "bjb-1", "item-1", target, format);
                assert_eq!(materialise(&again), bytes);
            }
        }
        let a = materialise(&Doc::new(3, "j", "i", 5000, Format::Json));
        assert_ne!(a, materialise(&Doc::new(4, "j", "i", 5000, Format::Json)));
    }
}
