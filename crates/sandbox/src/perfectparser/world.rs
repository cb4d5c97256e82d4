//! The PerfectParser sandbox's world: extractions and their documents placed on the simulated
//! clock (status at an instant, last change), the deterministic generated mix of
//! [`PerfectSpec::generated`], and the bytes served for documents (JSON built around [`Layout`]
//! for the spec's documents or derived from the upload for submitted ones), and the parser
//! fields documents, exports and submissions are made of ([`fields`]; exports are
//! [`super::export`]'s).
//!
//! Nothing here does I/O; the routes read it through [`World`].

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::super::Clock;
use super::super::body::{Layout, digest_frames};
use super::super::clock::{Phase, Span};
use super::super::seeded::{DAY, SplitMix, hash_ids};
use super::{DEFAULT_API_KEY, DocOutcome, DocumentSpec, ExtractionSpec, PerfectSpec};

/// Simulated seconds a document spends `processing` before it finishes.
const RUN_SECS: f64 = 2.0;

impl PerfectSpec {
    /// `extractions` extractions of `docs` documents with ~`result_bytes`-byte `extracted_data`,
    /// deterministic for `seed`. Mix (newest first in listings): the newest (when >= 2) still
    /// `processing`, its documents completing over the next few seconds; the oldest (when >= 3)
    /// completed more than `retention` ago (its documents answer 404 `RESOURCE_NOT_FOUND`); the
    /// second oldest (when >= 4) `partial`, every third document failed; the rest `completed`
    /// within the last day. Ids like `ext_000007`, `doc_000007_0003`, parser `prs_invoices`.
    pub fn generated(extractions: usize, docs: usize, result_bytes: usize, seed: u64) -> Self {
        let retention = Duration::from_secs(7 * DAY);
        let mut rng = SplitMix::new(seed ^ 0x9e9f_ec70_0000_0004);
        let n = extractions;
        let out = (0..n)
            .map(|k| {
                let number = k + 1;
                let expired = n >= 3 && k == 0;
                let running = n >= 2 && k == n - 1;
                let partial = n >= 4 && k == 1;
                let created_ago = if expired {
                    retention.as_secs_f64() + 2.0 * 3600.0
                } else if running {
                    20.0
                } else {
                    (DAY as f64 - 600.0) * (1.0 - k as f64 / n as f64) + 3600.0 * rng.unit()
                };
                let documents = (0..docs)
                    .map(|j| {
                        let finishes_at = if running {
                            1.0 + 4.0 * j as f64 / docs.max(1) as f64
                        } else {
                            -(created_ago - 30.0 - rng.unit() * 600.0)
                        };
                        let outcome = if partial && j % 3 == 1 {
                            DocOutcome::Failed
                        } else {
                            DocOutcome::Completed
                        };
                        DocumentSpec {
                            id: format!("doc_{number:06}_{j:04}"),
                            filename: format!("invoice_{number:03}_{j:03}.pdf"),
                            finishes_at,
                            outcome,
                            result_bytes: rng.jitter(result_bytes),
                            page_count: 1 + rng.below(4) as u32,
                        }
                    })
                    .collect();
                ExtractionSpec {
                    id: format!("ext_{number:06}"),
                    parser_id: "prs_invoices".to_owned(),
                    created_ago: Duration::from_secs_f64(created_ago.max(0.0)),
                    documents,
                    status_override: None,
                }
            })
            .collect();
        PerfectSpec {
            api_key: DEFAULT_API_KEY.to_owned(),
            seed,
            extractions: out,
            time_scale: 1.0,
            retention,
            result_delay: Duration::ZERO,
            requests_per_minute: 150,
            window: Duration::from_secs(60),
            credits: super::DEFAULT_CREDITS,
            parsers: vec![super::DEFAULT_PARSER.to_owned(), "prs_invoices".to_owned()],
            submits_per_minute: 20,
            submit_window: Duration::from_secs(60),
        }
    }
}

/// A document's status at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocStatus {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl DocStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DocStatus::Queued => "queued",
            DocStatus::Processing => "processing",
            DocStatus::Completed => "completed",
            DocStatus::Failed => "failed",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, DocStatus::Completed | DocStatus::Failed)
    }
}

pub(crate) struct World {
    /// Listing order: newest `created_at` first, ties by id.
    pub(crate) extractions: Vec<Extraction>,
    index: HashMap<String, usize>,
}

pub(crate) struct Extraction {
    pub(crate) id: String,
    pub(crate) parser_id: String,
    pub(crate) created_us: i64,
    pub(crate) status_override: Option<String>,
    pub(crate) documents: Vec<Document>,
    index: HashMap<String, usize>,
}

pub(crate) struct Document {
    pub(crate) id: String,
    pub(crate) filename: String,
    pub(crate) running_us: i64,
    pub(crate) done_us: i64,
    pub(crate) outcome: DocOutcome,
    pub(crate) result_bytes: usize,
    pub(crate) page_count: u32,
    /// The file behind a submitted document (None for the spec's).
    pub(crate) upload: Option<Upload>,
}

impl World {
    pub(crate) fn new(specs: &[ExtractionSpec], clock: &Clock) -> World {
        let mut extractions: Vec<Extraction> = specs
            .iter()
            .map(|e| {
                let created_us = clock.at_us(-e.created_ago.as_secs_f64());
                let documents: Vec<Document> = e
                    .documents
                    .iter()
                    .map(|d| Document {
                        id: d.id.clone(),
                        filename: d.filename.clone(),
                        running_us: clock.at_us(d.finishes_at - RUN_SECS).max(created_us),
                        done_us: clock.at_us(d.finishes_at).max(created_us),
                        outcome: d.outcome,
                        result_bytes: d.result_bytes,
                        page_count: d.page_count.max(1),
                        upload: None,
                    })
                    .collect();
                let mut e2 = Extraction::new(&e.id, &e.parser_id, created_us, documents);
                e2.status_override = e.status_override.clone();
                e2
            })
            .collect();
        extractions.sort_by(|a, b| b.created_us.cmp(&a.created_us).then(a.id.cmp(&b.id)));
        let index = extractions
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
        World { extractions, index }
    }

    pub(crate) fn extraction(&self, id: &str) -> Option<&Extraction> {
        self.index.get(id).map(|&i| &self.extractions[i])
    }

    /// Adds a submitted extraction (newer than the rest, so it goes first); ids must be new.
    pub(crate) fn insert(&mut self, e: Extraction) {
        let at = self
            .extractions
            .iter()
            .position(|x| (e.created_us, &x.id) > (x.created_us, &e.id))
            .unwrap_or(self.extractions.len());
        self.extractions.insert(at, e);
        self.index = self
            .extractions
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
    }

    /// The document, only when it belongs to that extraction.
    pub(crate) fn document(&self, ext: &str, doc: &str) -> Option<(&Extraction, &Document)> {
        let e = self.extraction(ext)?;
        let d = e.index.get(doc)?;
        Some((e, &e.documents[*d]))
    }
}

impl Extraction {
    pub(crate) fn new(
        id: &str,
        parser_id: &str,
        created_us: i64,
        documents: Vec<Document>,
    ) -> Extraction {
        let index = documents
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        Extraction {
            id: id.to_owned(),
            parser_id: parser_id.to_owned(),
            created_us,
            status_override: None,
            documents,
            index,
        }
    }

    /// The documented extraction status, derived from the documents unless overridden.
    pub(crate) fn status(&self, now: i64) -> String {
        if let Some(s) = &self.status_override {
            return s.clone();
        }
        let statuses: Vec<DocStatus> = self.documents.iter().map(|d| d.status(now)).collect();
        let count = |s: DocStatus| statuses.iter().filter(|x| **x == s).count();
        let total = statuses.len();
        let word = if statuses.iter().all(|s| s.is_terminal()) {
            match (count(DocStatus::Completed), count(DocStatus::Failed)) {
                (_, 0) => "completed",
                (0, _) => "failed",
                _ => "partial",
            }
        } else if count(DocStatus::Queued) == total {
            "queued"
        } else {
            "processing"
        };
        word.to_owned()
    }

    pub(crate) fn updated_us(&self, now: i64) -> i64 {
        self.documents
            .iter()
            .map(|d| d.updated_us(self.created_us, now))
            .max()
            .unwrap_or(self.created_us)
    }

    /// When every document is terminal, the last completion.
    pub(crate) fn completed_us(&self, now: i64) -> Option<i64> {
        let all = self.documents.iter().all(|d| d.status(now).is_terminal());
        all.then(|| self.updated_us(now))
    }

    pub(crate) fn page_count(&self) -> u64 {
        self.documents.iter().map(|d| u64::from(d.page_count)).sum()
    }
}

impl Document {
    fn span(&self) -> Span {
        Span::new(self.running_us, self.done_us, None)
    }

    pub(crate) fn status(&self, now: i64) -> DocStatus {
        match self.span().phase(now) {
            Phase::Queued => DocStatus::Queued,
            Phase::Running => DocStatus::Processing,
            // Extractions cannot be cancelled.
            Phase::Done | Phase::Cancelled => match self.outcome {
                DocOutcome::Completed => DocStatus::Completed,
                DocOutcome::Failed => DocStatus::Failed,
            },
        }
    }

    pub(crate) fn updated_us(&self, created_us: i64, now: i64) -> i64 {
        self.span().updated_us(created_us, now)
    }

    pub(crate) fn error_message(&self, now: i64) -> Option<&'static str> {
        (self.status(now) == DocStatus::Failed)
            .then_some("The document could not be parsed: no text layer and OCR failed.")
    }

    pub(crate) fn confidence(&self, seed: u64, ext: &str) -> f64 {
        let h = hash_ids(seed ^ 0xc0f1, ext, &self.id);
        0.80 + (h % 20) as f64 / 100.0
    }

    pub(crate) fn processing_ms(&self, seed: u64, ext: &str) -> u64 {
        800 + hash_ids(seed ^ 0x7135, ext, &self.id) % 9000
    }
}

pub(crate) fn ts(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET …/documents/:id`: `{"document":{…,"extracted_data":<layout>,…}}` as (head, data, tail),
/// so a large `extracted_data` is streamed and never materialised.
pub(crate) struct DocumentBody {
    pub(crate) head: Bytes,
    pub(crate) data: Option<Data>,
    pub(crate) tail: Bytes,
}

/// A completed document's `extracted_data`: generated around a [`Layout`] for the spec's
/// documents, a small JSON object derived from the uploaded bytes for submitted ones.
pub(crate) enum Data {
    Layout(Layout),
    Inline(Bytes),
}

impl DocumentBody {
    pub(crate) fn new(seed: u64, e: &Extraction, d: &Document, now: i64) -> DocumentBody {
        let status = d.status(now);
        let meta = json!({
            "extraction_id": e.id,
            "document_id": d.id,
            "filename": d.filename,
            "file_type": d.upload.as_ref().map_or("application/pdf", |u| u.file_type),
            "file_size": d.upload.as_ref().map_or(40_000 + u64::from(d.page_count) * 25_000, |u| u.size),
            "status": status.as_str(),
            "page_count": d.page_count,
            "credits_used": d.page_count,
            "confidence": (status == DocStatus::Completed).then(|| d.confidence(seed, &e.id)),
            "processing_time_ms": status.is_terminal().then(|| d.processing_ms(seed, &e.id)),
        });
        let rest = json!({
            "error_message": d.error_message(now),
            "created_at": ts(e.created_us),
            "updated_at": ts(d.updated_us(e.created_us, now)),
        });
        let inner = |v: &serde_json::Value| {
            let s = v.to_string();
            s[1..s.len() - 1].to_owned()
        };
        let data = (status == DocStatus::Completed).then(|| match &d.upload {
            Some(u) => Data::Inline(Bytes::from(upload_data(seed, e, d, u))),
            None => Data::Layout(layout(seed, e, d)),
        });
        let head = format!(
            "{{\"document\":{{{},\"extracted_data\":{}",
            inner(&meta),
            if data.is_some() { "" } else { "null" }
        );
        let tail = format!(",{}}}}}", inner(&rest));
        DocumentBody {
            head: Bytes::from(head),
            data,
            tail: Bytes::from(tail),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        let data = match &self.data {
            Some(Data::Layout(l)) => l.len(),
            Some(Data::Inline(b)) => b.len() as u64,
            None => 0,
        };
        (self.head.len() + self.tail.len()) as u64 + data
    }

    pub(crate) fn digest(&self) -> (String, u64) {
        let data: Box<dyn Iterator<Item = Bytes>> = match &self.data {
            Some(Data::Layout(l)) => Box::new(l.frames()),
            Some(Data::Inline(b)) => Box::new(std::iter::once(b.clone())),
            None => Box::new(std::iter::empty()),
        };
        let frames = std::iter::once(self.head.clone())
            .chain(data)
            .chain(std::iter::once(self.tail.clone()));
        digest_frames(frames)
    }

    /// The extracted data materialised (for `/results` and exports).
    pub(crate) fn data_bytes(&self) -> Vec<u8> {
        match &self.data {
            Some(Data::Layout(l)) => l.frames().flat_map(|f| f.to_vec()).collect(),
            Some(Data::Inline(b)) => b.to_vec(),
            None => b"null".to_vec(),
        }
    }
}

pub(crate) fn layout(seed: u64, e: &Extraction, d: &Document) -> Layout {
    Layout::new(seed, &e.id, &d.id, d.result_bytes)
}

/// The fields of the sandbox's parsers, in the order [`fields`] gives them.
pub(crate) const FIELD_NAMES: [&str; 5] = [
    "invoice_number",
    "vendor_name",
    "invoice_date",
    "total_amount",
    "currency",
];

/// The parser's fields for one document: (field, value, confidence), deterministic.
pub(crate) fn fields(
    seed: u64,
    e: &Extraction,
    d: &Document,
) -> Vec<(&'static str, String, String)> {
    let mut rng = SplitMix::new(hash_ids(seed ^ 0xf1e1d, &e.id, &d.id));
    let mut conf = || format!("0.{}", 80 + rng.below(20));
    let cents = hash_ids(seed, &e.id, &d.id) % 1_000_000;
    let values = [
        format!("INV-{}", cents % 100_000),
        "Acme, \"Global\" Ltd".to_owned(),
        "2026-11-02".to_owned(),
        format!("{}.{:02}", cents / 100, cents % 100),
        "EUR".to_owned(),
    ];
    FIELD_NAMES
        .into_iter()
        .zip(values)
        .map(|(f, v)| (f, v, conf()))
        .collect()
}

/// What a submission uploaded for one document; its `extracted_data` derives from it.
pub(crate) struct Upload {
    /// sha256 of the bytes, lowercase hex.
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) file_type: &'static str,
}

/// `extracted_data` of a submitted document: the parser's fields plus where they came from.
fn upload_data(seed: u64, e: &Extraction, d: &Document, u: &Upload) -> Vec<u8> {
    let fields: serde_json::Map<String, serde_json::Value> = fields(seed, e, d)
        .into_iter()
        .map(|(f, v, _)| (f.to_owned(), json!(v)))
        .collect();
    let body = json!({
        "source": { "filename": d.filename, "sha256": u.sha256, "size": u.size,
                    "file_type": u.file_type, "page_count": d.page_count },
        "fields": fields,
    });
    body.to_string().into_bytes()
}
