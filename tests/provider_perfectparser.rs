//! The PerfectParser adapter against its sandbox: full mirror with exports, no second download,
//! pagination, `partial` and still-processing extractions, the per-key quota never exceeded, gone
//! documents, unknown statuses and undocumented error shapes. The bulk `/results` path and its
//! per-document fallback are in `provider_perfectparser_bulk`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use batchmirror::config::{self, ProviderKind, Settings};
use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::{BatchId, ItemId, ItemState, ProviderName};
use batchmirror_sandbox::perfectparser::{
    DocOutcome, DocumentSpec, ExtractionSpec, PerfectFault, PerfectSandbox, PerfectSpec,
};
use tokio_util::sync::CancellationToken;

use crate::common::{KEY, config_text, files_under, sha256_file};

pub(crate) fn doc(id: &str, finishes_at: f64, outcome: DocOutcome) -> DocumentSpec {
    DocumentSpec {
        id: id.to_owned(),
        filename: format!("{id}.pdf"),
        finishes_at,
        outcome,
        result_bytes: 3000,
        page_count: 1,
    }
}

pub(crate) fn ext(id: &str, created_ago: u64, documents: Vec<DocumentSpec>) -> ExtractionSpec {
    ExtractionSpec {
        id: id.to_owned(),
        parser_id: "prs_invoices".to_owned(),
        created_ago: Duration::from_secs(created_ago),
        documents,
        status_override: None,
    }
}

/// `n` completed extractions `ext_00k` of `docs` documents `doc_00k_j`, older as k grows.
pub(crate) fn completed(n: usize, docs: usize) -> Vec<ExtractionSpec> {
    (0..n)
        .map(|k| {
            let documents = (0..docs)
                .map(|j| doc(&format!("doc_{k:03}_{j}"), -600.0, DocOutcome::Completed))
                .collect();
            ext(&format!("ext_{k:03}"), 3600 + 60 * k as u64, documents)
        })
        .collect()
}

pub(crate) async fn start(spec: PerfectSpec) -> PerfectSandbox {
    PerfectSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

/// Settings for provider "ep" of kind perfectparser (loaded as extract_page while validation
/// still gates the kind, then switched).
pub(crate) fn settings(
    dir: &Path,
    base_url: &str,
    rpm: u32,
    page_size: u32,
    exports: &[&str],
) -> Settings {
    let text = config_text(dir, base_url, "");
    let mut s = config::load_str(&text, "test", &HashMap::new()).expect("valid test config");
    let p = &mut s.providers[0];
    p.kind = ProviderKind::PerfectParser;
    p.requests_per_minute = Some(rpm);
    p.page_size = page_size;
    p.options.export_formats = exports.iter().map(|f| (*f).to_owned()).collect();
    s
}

pub(crate) fn ep() -> ProviderName {
    ProviderName::parse("ep").unwrap()
}

pub(crate) async fn row(ledger: &Ledger, ext: &str, doc: &str) -> batchmirror::ledger::ItemRow {
    ledger
        .item(
            &ep(),
            &BatchId::parse(ext).unwrap(),
            &ItemId::parse(doc).unwrap(),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{ext}/{doc} not in the ledger"))
}

pub(crate) fn sum<K>(m: &HashMap<K, u64>) -> u64 {
    m.values().sum()
}

#[tokio::test]
async fn full_mirror_with_exports_across_pages_then_nothing_again() {
    let mut spec = PerfectSpec::new(KEY, completed(5, 3));
    spec.seed = 9;
    let sandbox = start(spec).await;
    let dir = tempfile::tempdir().unwrap();
    let exports = ["json", "csv", "xlsx"];
    let settings = settings(dir.path(), &sandbox.base_url(), 150, 2, &exports);

    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(report.download.mirrored, 15);
    let stats = sandbox.stats();
    assert!(
        stats.list_requests >= 3,
        "5 extractions at limit 2: {stats:?}"
    );

    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let root = dir.path().join("mirror/ep");
    for k in 0..5 {
        for j in 0..3 {
            let (e, d) = (format!("ext_{k:03}"), format!("doc_{k:03}_{j}"));
            let r = row(&ledger, &e, &d).await;
            let (sha, len) = sandbox.expected_data(&e, &d).unwrap();
            assert_eq!(r.state, ItemState::Mirrored, "{e}/{d}");
            assert_eq!(r.sha256.as_deref(), Some(sha.as_str()));
            assert_eq!(r.bytes, Some(len));
            assert_eq!(sha256_file(&root.join(&e).join(format!("{d}.json"))), sha);
            for f in exports {
                let (want, _) = sandbox.expected_export(&e, &d, f).unwrap();
                let file = root.join(&e).join(format!("{d}@export.{f}"));
                assert_eq!(sha256_file(&file), want, "{}", file.display());
            }
        }
    }
    assert_eq!(files_under(&root).len(), 15 * 4, "no stray files");
    let (docs, exported) = (sum(&stats.document_requests), sum(&stats.export_requests));
    assert_eq!(
        (docs, exported),
        (0, 45),
        "results in bulk, exports one by one"
    );
    assert_eq!(stats.results_requests, 5, "one /results per extraction");

    let second = daemon::sync_once(settings, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(second.exit_code(), 0);
    assert_eq!(second.download.mirrored, 0);
    let after = sandbox.stats();
    assert_eq!(
        sum(&after.document_requests),
        docs,
        "nothing downloaded again"
    );
    assert_eq!(sum(&after.export_requests), exported);
    assert_eq!(after.results_requests, 5);
    assert_eq!(after.rate_limited, 0);
}

#[tokio::test]
async fn partial_and_processing_extractions() {
    let mut partial = ext(
        "ext_partial",
        7200,
        vec![
            doc("doc_ok", -900.0, DocOutcome::Completed),
            doc("doc_bad", -900.0, DocOutcome::Failed),
            // Never finishes: the extraction says `partial`, so it will not.
            doc("doc_stuck", 36_000.0, DocOutcome::Completed),
        ],
    );
    partial.status_override = Some("partial".to_owned());
    let running = ext(
        "ext_running",
        10,
        vec![
            doc("doc_now", -1.0, DocOutcome::Completed),
            doc("doc_soon", 1.5, DocOutcome::Completed),
        ],
    );
    let sandbox = start(PerfectSpec::new(KEY, vec![partial, running])).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 150, 50, &[]);

    let first = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.download.mirrored, 2, "{first:?}");
    {
        let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
        assert_eq!(
            row(&ledger, "ext_partial", "doc_ok").await.state,
            ItemState::Mirrored
        );
        for d in ["doc_bad", "doc_stuck"] {
            assert_eq!(
                row(&ledger, "ext_partial", d).await.state,
                ItemState::Skipped,
                "{d}"
            );
        }
        assert_eq!(
            row(&ledger, "ext_running", "doc_soon").await.state,
            ItemState::Pending
        );
    }
    let partial_reads = sandbox.stats().status_requests["ext_partial"];
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let second = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(second.download.mirrored, 1, "{second:?}");
    assert_eq!(second.exit_code(), 0);
    let stats = sandbox.stats();
    assert_eq!(
        stats.status_requests["ext_partial"], partial_reads,
        "a partial extraction is not polled again"
    );
    for d in ["doc_bad", "doc_stuck"] {
        let key = ("ext_partial".to_owned(), d.to_owned());
        assert!(
            !stats.document_requests.contains_key(&key),
            "{d} was requested"
        );
    }
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let r = row(&ledger, "ext_running", "doc_soon").await;
    assert_eq!(r.state, ItemState::Mirrored);
    assert_eq!(
        r.sha256,
        sandbox
            .expected_data("ext_running", "doc_soon")
            .map(|e| e.0)
    );
}

#[tokio::test]
async fn the_quota_is_never_exceeded_when_the_client_is_allowed_more() {
    // 2 extractions x (8 documents + /results) + listing + 2 status reads = 21 requests at 8 per
    // 2-second window: the client (allowed 6000/min, 4 downloads at once) must wait for resets.
    let mut spec = PerfectSpec::new(KEY, completed(2, 8));
    spec.requests_per_minute = 8;
    spec.window = Duration::from_secs(2);
    // Slow bodies keep several downloads in flight when the quota runs out.
    spec.result_delay = Duration::from_millis(100);
    let sandbox = start(spec).await;
    // Unusable bulk answers: the documents are fetched one by one, as this test needs.
    for e in ["ext_000", "ext_001"] {
        sandbox.push_fault(PerfectFault::Raw {
            path_prefix: format!("/v1/extractions/{e}/results"),
            status: 200,
            body: "{}".into(),
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), &sandbox.base_url(), 6000, 50, &[]);
    settings.download.concurrency = 8;
    let report = daemon::sync_once(settings, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 16, "{report:?}");
    assert_eq!(report.exit_code(), 0);
    let stats = sandbox.stats();
    assert_eq!(stats.rate_limited, 0, "the client slowed down before a 429");
    let log = sandbox.request_log();
    assert!(log.iter().all(|r| r.status == 200));
    let span = log.last().unwrap().at.duration_since(log[0].at);
    assert!(
        span >= Duration::from_secs(2),
        "needed more than one window: {span:?}"
    );
}

#[tokio::test]
async fn gone_documents_are_lost_and_unknown_statuses_rejected_clearly() {
    let old = ext(
        "ext_old",
        3 * 24 * 3600,
        vec![
            doc("doc_x", -2.5 * 24.0 * 3600.0, DocOutcome::Completed),
            doc("doc_y", -2.5 * 24.0 * 3600.0, DocOutcome::Completed),
        ],
    );
    let mut odd = ext(
        "ext_odd",
        600,
        vec![doc("doc_z", -60.0, DocOutcome::Completed)],
    );
    odd.status_override = Some("archived".to_owned());
    let fresh = ext(
        "ext_new",
        300,
        vec![doc("doc_n", -60.0, DocOutcome::Completed)],
    );
    let mut spec = PerfectSpec::new(KEY, vec![old, odd, fresh]);
    spec.retention = Duration::from_secs(24 * 3600);
    let sandbox = start(spec).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 150, 50, &[]);

    let first = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.download.lost, 2, "{first:?}");
    assert_eq!(first.download.mirrored, 1, "the rest goes on");
    assert_eq!(first.exit_code(), 1);
    let listing = first.providers[0].listing.as_ref().unwrap();
    let reason = listing
        .rejected
        .iter()
        .find(|r| r.contains("ext_odd"))
        .unwrap_or_else(|| panic!("no rejection for ext_odd: {:?}", listing.rejected));
    assert!(reason.contains("unknown status \"archived\""), "{reason}");
    assert!(!sandbox.stats().status_requests.contains_key("ext_odd"));

    let status = daemon::status(&settings).await.unwrap();
    assert_eq!(status.providers[0].items["lost"], 2);
    let requests = sum(&sandbox.stats().document_requests);
    let second = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(second.download.lost, 0);
    assert_eq!(
        sum(&sandbox.stats().document_requests),
        requests,
        "lost is final"
    );
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let r = row(&ledger, "ext_old", "doc_x").await;
    assert_eq!(r.state, ItemState::Lost);
    assert!(r.last_error.unwrap().contains("RESOURCE_NOT_FOUND"));
}

#[tokio::test]
async fn undocumented_error_shapes_are_kept_and_classified_by_status() {
    let mut world = completed(1, 3);
    // `..` cannot travel in a path (it would address the extraction itself): refused, recorded.
    world[0]
        .documents
        .push(doc("..", -600.0, DocOutcome::Completed));
    let sandbox = start(PerfectSpec::new(KEY, world)).await;
    // The per-document route is what this test is about: the bulk answer is made unusable.
    sandbox.push_fault(PerfectFault::Raw {
        path_prefix: "/v1/extractions/ext_000/results".into(),
        status: 200,
        body: "not json".into(),
    });
    // A plain-text 503 is transient: retried, then mirrored.
    sandbox.push_fault(PerfectFault::Raw {
        path_prefix: "/v1/extractions/ext_000/documents/doc_000_0".into(),
        status: 503,
        body: "upstream hiccup".into(),
    });
    // A 404 that is not RESOURCE_NOT_FOUND is not proof the document is gone: failed, not lost.
    sandbox.push_fault(PerfectFault::Raw {
        path_prefix: "/v1/extractions/ext_000/documents/doc_000_1".into(),
        status: 404,
        body: "<html>Not Found</html>".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 150, 50, &[]);
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 2, "{report:?}");
    assert_eq!((report.download.failed, report.download.lost), (2, 0));
    assert_eq!(
        sandbox.stats().status_requests["ext_000"],
        1,
        "no request went to the URL `documents/..` collapses into"
    );
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let r = row(&ledger, "ext_000", "doc_000_1").await;
    assert_eq!(r.state, ItemState::Failed);
    assert!(r.last_error.unwrap().contains("<html>Not Found</html>"));
    let dots = row(&ledger, "ext_000", "..").await;
    assert_eq!(dots.state, ItemState::Failed);
    assert!(
        dots.last_error
            .unwrap()
            .contains("cannot be used in a request path")
    );
}
