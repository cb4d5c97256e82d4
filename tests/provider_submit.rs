//! `Provider::submit` through the built (retrying, paced) provider against the sandboxes: the
//! extract.page upload flow (credential-free PUT, one batch per idempotency key, 402 and 413) and
//! the PerfectParser multipart submit (one charge per key, error codes kept, the submit window
//! never exceeded).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchmirror::config::{self, ProviderKind, Settings};
use batchmirror::model::{
    BatchId, DueItem, ProviderName, RemoteStatus, Submission, SubmitOptions, no_observer,
};
use batchmirror::provider::{self, Provider};
use batchmirror_sandbox::perfectparser::{DEFAULT_PARSER, PerfectSandbox, PerfectSpec};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::common::{self, config_text};

fn submission(name: &str, bytes: &[u8], key: &str, options: SubmitOptions) -> Submission {
    Submission {
        file_name: name.to_owned(),
        content_type: "application/pdf".to_owned(),
        bytes: bytes::Bytes::copy_from_slice(bytes),
        sha256: hex::encode(Sha256::digest(bytes)),
        idempotency_key: key.to_owned(),
        options,
    }
}

fn build(s: &Settings) -> Arc<dyn Provider> {
    provider::build(&s.providers[0], &s.download, no_observer()).expect("provider builds")
}

// ---------------------------------------------------------------------------------------------
// extract.page

const TEXT: &str = "Invoice 7\nTotal due: 99,00 €\nPaid by transfer.";

fn extract_page(dir: &Path, sb: &batchmirror_sandbox::Sandbox) -> Arc<dyn Provider> {
    build(&common::settings(dir, &sb.base_url()))
}

#[tokio::test]
async fn extract_page_submit_uploads_without_credentials_and_creates_one_batch_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let sb = common::start(common::spec(Vec::new())).await;
    let p = extract_page(dir.path(), &sb);
    let options = SubmitOptions {
        engine: Some("standard".into()),
        options_json: Some(r#"{"ocr":true}"#.into()),
        parser_id: None,
    };
    let file = submission("inv.pdf", TEXT.as_bytes(), "key-1", options);

    let first = p.submit(&file).await.expect("submitted");
    assert_eq!(first.item, None);
    let stats = sb.stats();
    assert_eq!(
        (stats.files_created, stats.uploads, stats.batches_created),
        (1, 1, 1)
    );
    assert!(
        stats.store_requests >= 1,
        "the PUT went to the object store"
    );
    assert_eq!(stats.store_requests_with_credentials, 0);

    // The same key again: the flow runs again (a new file) but the batch is the first one.
    let again = p.submit(&file).await.expect("submitted again");
    assert_eq!(again.batch, first.batch);
    let stats = sb.stats();
    assert_eq!((stats.files_created, stats.batches_created), (2, 1));
    assert_eq!(stats.idempotent_replays, 1);
    assert_eq!(stats.store_requests_with_credentials, 0);

    let listed = p
        .list_batches(&batchmirror::model::ListRequest::default())
        .await
        .unwrap();
    assert!(listed.batches.iter().any(|b| b.id == first.batch));

    // Its one item completes with a result made from the uploaded bytes.
    let mut item = None;
    for _ in 0..100 {
        let page = p.batch_items(&first.batch, None).await.unwrap();
        assert_eq!(page.items.len(), 1);
        if page.items[0].status == RemoteStatus::Succeeded {
            item = Some(page.items[0].id.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let item = item.expect("the submitted item succeeds");
    let due = DueItem {
        provider: ProviderName::parse("ep").unwrap(),
        batch: first.batch.clone(),
        item,
        deadline: None,
        attempts: 0,
        locator: None,
    };
    let mut body = p.fetch_result(&due).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["input_sha256"], file.sha256.as_str());
    let content: String = v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["page_content"].as_str().unwrap())
        .collect();
    assert_eq!(content, TEXT);
}

#[tokio::test]
async fn extract_page_quota_and_size_refusals_are_final() {
    let dir = tempfile::tempdir().unwrap();
    let sb = common::start(common::spec(Vec::new())).await;
    let p = extract_page(dir.path(), &sb);

    sb.set_quota(0);
    let file = submission(
        "a.pdf",
        TEXT.as_bytes(),
        "key-quota",
        SubmitOptions::default(),
    );
    let err = p.submit(&file).await.expect_err("quota spent");
    assert_eq!(err.status(), Some(402), "{err}");
    assert!(!err.is_retryable());
    let stats = sb.stats();
    assert_eq!(stats.files_created, 1, "a 402 must not re-run the flow");
    assert_eq!(stats.batches_created, 0);

    sb.set_quota(10);
    sb.set_max_upload_bytes(16);
    let big = submission("big.pdf", &[b'x'; 17], "key-big", SubmitOptions::default());
    let err = p.submit(&big).await.expect_err("over the upload cap");
    assert_eq!(err.status(), Some(413), "{err}");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(common::KEY));
    assert_eq!(sb.stats().files_created, 1, "no file for the refused size");
}

#[tokio::test]
async fn extract_page_refuses_options_that_are_not_an_object_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let sb = common::start(common::spec(Vec::new())).await;
    let p = extract_page(dir.path(), &sb);
    let options = SubmitOptions {
        options_json: Some("[1,2]".into()),
        ..SubmitOptions::default()
    };
    let err = p
        .submit(&submission("a.pdf", b"x", "k", options))
        .await
        .expect_err("not an object");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(sb.stats().files_created, 0);
}

// ---------------------------------------------------------------------------------------------
// PerfectParser

async fn perfect(spec: PerfectSpec) -> PerfectSandbox {
    PerfectSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

/// Provider "ep" of kind perfectparser (loaded as extract_page, then switched, as the other
/// PerfectParser tests do), pacing submits at `submits_per_minute`.
fn perfect_settings(dir: &Path, base_url: &str, submits_per_minute: u32) -> Settings {
    let text = config_text(dir, base_url, "");
    let mut s = config::load_str(&text, "test", &HashMap::new()).expect("valid test config");
    let p = &mut s.providers[0];
    p.kind = ProviderKind::PerfectParser;
    p.submits_per_minute = Some(submits_per_minute);
    s
}

fn parser() -> SubmitOptions {
    SubmitOptions {
        parser_id: Some(DEFAULT_PARSER.to_owned()),
        ..SubmitOptions::default()
    }
}

fn submit_attempts(sb: &PerfectSandbox) -> usize {
    sb.request_log()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/extractions")
        .count()
}

#[tokio::test]
async fn perfectparser_submit_charges_once_per_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    let sb = perfect(PerfectSpec::new(common::KEY, Vec::new()).with_credits(10)).await;
    let p = build(&perfect_settings(dir.path(), &sb.base_url(), 20));
    let file = submission("scan.pdf", b"%PDF-1.7 hello", "pp-key-1", parser());

    let first = p.submit(&file).await.expect("submitted");
    assert!(!first.replayed);
    let doc = first.item.clone().expect("the document id");
    let page = p.batch_items(&first.batch, None).await.unwrap();
    let ids: Vec<_> = page.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids, vec![doc.clone()]);

    let again = p.submit(&file).await.expect("replayed");
    assert!(again.replayed);
    assert_eq!((again.batch, again.item), (first.batch, Some(doc)));
    let stats = sb.stats();
    assert_eq!((stats.submissions, stats.replays), (1, 1));
    assert_eq!(stats.credits_charged, 1, "one page, charged once");
}

#[tokio::test]
async fn perfectparser_refusals_keep_their_code_and_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sb = perfect(PerfectSpec::new(common::KEY, Vec::new()).with_credits(0)).await;
    let p = build(&perfect_settings(dir.path(), &sb.base_url(), 600));

    let err = p
        .submit(&submission("a.pdf", b"%PDF", "k-credits", parser()))
        .await
        .expect_err("no credits");
    assert_eq!(err.status(), Some(402), "{err}");
    assert!(err.to_string().contains("INSUFFICIENT_CREDITS"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(submit_attempts(&sb), 1, "a 402 is asked once");

    let err = p
        .submit(&submission("setup.exe", b"MZ", "k-exe", parser()))
        .await
        .expect_err("not a document");
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("UNSUPPORTED_FILE_TYPE"), "{err}");
    assert_eq!(submit_attempts(&sb), 2);

    let unknown = SubmitOptions {
        parser_id: Some("prs_nope".into()),
        ..SubmitOptions::default()
    };
    let err = p
        .submit(&submission("a.pdf", b"%PDF", "k-parser", unknown))
        .await
        .expect_err("unknown parser");
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(err.to_string().contains("PARSER_NOT_FOUND"), "{err}");

    let err = p
        .submit(&submission(
            "a.pdf",
            b"%PDF",
            "k-none",
            SubmitOptions::default(),
        ))
        .await
        .expect_err("no parser_id");
    assert!(err.to_string().contains("parser_id"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(submit_attempts(&sb), 3, "nothing sent without a parser_id");
    assert_eq!(sb.stats().submissions, 0);
}

#[tokio::test]
async fn perfectparser_submits_are_paced_within_the_submit_window() {
    // 3 per 3 s is 60 a minute: the provider is configured to match.
    let (n, window) = (3u32, Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let sb = perfect(PerfectSpec::new(common::KEY, Vec::new()).with_submit_limit(n, window)).await;
    let per_minute = n * 60 / window.as_secs() as u32;
    let p = build(&perfect_settings(dir.path(), &sb.base_url(), per_minute));

    let mut batches = Vec::new();
    for i in 0..n + 5 {
        let file = submission(
            &format!("f{i}.pdf"),
            b"%PDF",
            &format!("pace-{i}"),
            parser(),
        );
        batches.push(p.submit(&file).await.expect("submitted").batch);
    }
    let stats = sb.stats();
    assert_eq!(stats.submit_rate_limited, 0, "no submit was refused");
    assert_eq!(stats.submissions, u64::from(n + 5));
    let distinct: std::collections::HashSet<&BatchId> = batches.iter().collect();
    assert_eq!(distinct.len(), batches.len());
}
