//! Issue 15: PerfectParser results in bulk. One `GET /v1/extractions/:id/results` per extraction
//! serves all its documents; whatever that answer leaves out or gets wrong (a fault, bad JSON, a
//! repeated, foreign or missing id) is fetched alone, and the mirrored file is the same bytes
//! whichever route fetched it.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::ItemState;
use batchmirror_sandbox::perfectparser::{PerfectFault, PerfectSandbox, PerfectSpec};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::common::{KEY, files_under, sha256_file};
use crate::provider_perfectparser::{completed, row, settings, start, sum};

/// Checks every document of `completed(n, docs)` is mirrored under `dir` with the bytes the
/// sandbox serves as its `extracted_data`.
async fn assert_mirrored(sandbox: &PerfectSandbox, dir: &Path, n: usize, docs: usize) {
    let settings = settings(dir, &sandbox.base_url(), 150, 50, &[]);
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let root = dir.join("mirror/ep");
    for k in 0..n {
        for j in 0..docs {
            let (e, d) = (format!("ext_{k:03}"), format!("doc_{k:03}_{j}"));
            let r = row(&ledger, &e, &d).await;
            let (sha, len) = sandbox.expected_data(&e, &d).unwrap();
            assert_eq!(r.state, ItemState::Mirrored, "{e}/{d}");
            assert_eq!(r.sha256.as_deref(), Some(sha.as_str()), "{e}/{d}");
            assert_eq!(r.bytes, Some(len), "{e}/{d}");
            assert_eq!(sha256_file(&root.join(&e).join(format!("{d}.json"))), sha);
        }
    }
    assert_eq!(files_under(&root).len(), n * docs, "no stray files");
}

/// Requests per path, from the sandbox's log.
fn paths(sandbox: &PerfectSandbox) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in sandbox.request_log() {
        *out.entry(r.path.clone()).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn one_results_request_per_extraction_mirrors_every_document() {
    // Listing pages of 2: the bulk path must not depend on seeing the whole account at once.
    let sandbox = start(PerfectSpec::new(KEY, completed(4, 6))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path(), &sandbox.base_url(), 150, 2, &[]);
    let report = daemon::sync_once(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(report.download.mirrored, 24);
    assert_mirrored(&sandbox, dir.path(), 4, 6).await;

    let stats = sandbox.stats();
    assert_eq!(stats.results_requests, 4, "{stats:?}");
    assert_eq!(sum(&stats.document_requests), 0, "no per-document GET");
    let per_path = paths(&sandbox);
    for k in 0..4 {
        assert_eq!(per_path[&format!("/v1/extractions/ext_{k:03}/results")], 1);
    }
    // 2 listing pages + 4 status reads + 4 results (one GET per document would make 24 more).
    let total: usize = per_path.values().sum();
    assert_eq!(total, 2 + 4 + 4, "{per_path:?}");
    assert_eq!(stats.rate_limited, 0);
}

/// A `/results` answer for ext_002 built from the real one: doc_0 as served, doc_1 twice, doc_2
/// missing, doc_3 claiming another extraction, and a forged entry for ext_000's doc_000_0.
async fn forged_results(sandbox: &PerfectSandbox) -> String {
    let url = format!("{}/v1/extractions/ext_002/results", sandbox.base_url());
    let text = reqwest::Client::new()
        .get(url)
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let all: HashMap<String, HashMap<String, Box<RawValue>>> = serde_json::from_str(&text).unwrap();
    let docs: Vec<Box<RawValue>> =
        serde_json::from_str(all["extraction"]["documents"].get()).unwrap();
    let entry = |j: usize| -> String {
        let id = format!("\"document_id\":\"doc_002_{j}\"");
        let found = docs.iter().find(|d| d.get().contains(&id));
        found.expect("served").get().to_owned()
    };
    let foreign = format!("{{\"extraction_id\":\"ext_001\",{}", &entry(3)[1..]);
    let forged =
        r#"{"document_id":"doc_000_0","status":"completed","extracted_data":{"forged":true}}"#;
    let list = [entry(0), entry(1), entry(1), foreign, forged.to_owned()];
    format!(
        r#"{{"extraction":{{"extraction_id":"ext_002","status":"completed","documents":[{}]}}}}"#,
        list.join(",")
    )
}

#[tokio::test]
async fn what_the_bulk_answer_leaves_out_is_fetched_alone_with_the_same_bytes() {
    let sandbox = start(PerfectSpec::new(KEY, completed(3, 4))).await;
    let forged = forged_results(&sandbox).await;
    let faults = [
        PerfectFault::Status {
            path_prefix: "/v1/extractions/ext_000/results".into(),
            status: 503,
            code: "SERVICE_UNAVAILABLE".into(),
        },
        PerfectFault::Raw {
            path_prefix: "/v1/extractions/ext_001/results".into(),
            status: 200,
            body: "{\"extraction\":{\"extraction_id\":\"ext_001\",\"documents\":[".into(),
        },
        PerfectFault::Raw {
            path_prefix: "/v1/extractions/ext_002/results".into(),
            status: 200,
            body: forged,
        },
    ];
    for f in faults {
        sandbox.push_fault(f);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path(), &sandbox.base_url(), 150, 50, &[]);
    let report = daemon::sync_once(config.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(report.download.mirrored, 12);
    assert_mirrored(&sandbox, dir.path(), 3, 4).await;

    let stats = sandbox.stats();
    assert_eq!(
        stats.results_requests,
        1 + 3,
        "the test's own read, then one per extraction: a failed bulk answer is not asked again"
    );
    let alone = |e: &str, d: &str| {
        let key = (e.to_owned(), d.to_owned());
        stats.document_requests.get(&key).copied().unwrap_or(0)
    };
    for j in 0..4 {
        assert_eq!(alone("ext_000", &format!("doc_000_{j}")), 1, "503");
        assert_eq!(alone("ext_001", &format!("doc_001_{j}")), 1, "bad JSON");
    }
    assert_eq!(alone("ext_002", "doc_002_0"), 0, "served in bulk");
    for j in 1..4 {
        assert_eq!(alone("ext_002", &format!("doc_002_{j}")), 1, "doc_002_{j}");
    }

    // A clean run, in bulk only: the files are byte for byte those the fallback wrote.
    let clean = tempfile::tempdir().unwrap();
    let clean_settings = settings(clean.path(), &sandbox.base_url(), 150, 50, &[]);
    let again = daemon::sync_once(clean_settings, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again.download.mirrored, 12, "{again:?}");
    assert_eq!(
        sum(&sandbox.stats().document_requests),
        sum(&stats.document_requests),
        "the clean run asked for no document alone"
    );
    for k in 0..3 {
        for j in 0..4 {
            let rel = format!("mirror/ep/ext_{k:03}/doc_{k:03}_{j}.json");
            let (a, b) = (dir.path().join(&rel), clean.path().join(&rel));
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{rel}"
            );
        }
    }
    let ledger = Ledger::open_read_only(&config.ledger_path).unwrap();
    assert_eq!(
        row(&ledger, "ext_000", "doc_000_0").await.state,
        ItemState::Mirrored
    );
}

#[tokio::test]
async fn documents_served_from_memory_spend_none_of_the_pace() {
    // 1 listing + 8 status reads + 8 results = 17 requests fit the minute's burst of a 20/min
    // cap; were each of the 48 documents paced as a request too, the pass would take minutes.
    let sandbox = start(PerfectSpec::new(KEY, completed(8, 6))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = settings(dir.path(), &sandbox.base_url(), 20, 100, &[]);
    config.download.concurrency = 8;
    let pass = daemon::sync_once(config, CancellationToken::new());
    let report = tokio::time::timeout(Duration::from_secs(20), pass)
        .await
        .expect("the pass is not paced per document")
        .unwrap();
    assert_eq!(report.download.mirrored, 48, "{report:?}");
    assert_eq!(sandbox.request_log().len(), 17);
}
