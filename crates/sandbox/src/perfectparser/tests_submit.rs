//! `POST /v1/extractions` against its documented contract, over real HTTP (the multipart bodies
//! are built by hand, so malformed and edge-case forms can be sent byte for byte).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

const KEY: &str = "pp_live_test";
const BOUNDARY: &str = "----sandbox-boundary-7f3a";

async fn start(spec: PerfectSpec) -> PerfectSandbox {
    PerfectSandbox::start(spec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn spec() -> PerfectSpec {
    PerfectSpec::new(KEY, Vec::new())
}

/// A multipart body: `parser_id` (when given), then one `files` part per (filename, bytes).
fn form(parser: Option<&str>, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(p) = parser {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"parser_id\"\r\n\r\n{p}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, bytes) in files {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

async fn post(sb: &PerfectSandbox, body: Vec<u8>, key: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/extractions", sb.base_url()))
        .header("X-API-Key", KEY)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

async fn json(resp: reqwest::Response) -> Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

async fn get_json(sb: &PerfectSandbox, path: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", sb.base_url()))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    (resp.status(), json(resp).await)
}

async fn available(sb: &PerfectSandbox) -> u64 {
    let (_, body) = get_json(sb, "/v1/credits").await;
    body["credits"]["credits_available"].as_u64().unwrap()
}

#[tokio::test]
async fn a_submission_completes_and_serves_documents_derived_from_the_bytes() {
    let sb = start(spec().with_credits(100)).await;
    let big = vec![7u8; 120_000]; // 3 pages
    let body = form(
        Some(DEFAULT_PARSER),
        &[("a.pdf", b"%PDF-1.7 one"), ("scan.JPEG", &big)],
    );
    let resp = post(&sb, body, None).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "20", "submit window");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "19");
    assert!(!resp.headers().contains_key("idempotent-replayed"));
    let v = json(resp).await;
    let e = &v["extraction"];
    let id = e["extraction_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ext_"));
    assert_eq!(e["parser_id"], DEFAULT_PARSER);
    assert_eq!(e["status"], "queued");
    assert_eq!(
        (e["file_count"].as_u64(), e["page_count"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(e["credits_used"], 4);
    assert_eq!(e["credits_remaining"], 96);
    let docs = e["documents"].as_array().unwrap();
    assert_eq!(docs[1]["filename"], "scan.JPEG");
    assert_eq!(
        (docs[1]["page_count"].as_u64(), docs[1]["status"].as_str()),
        (Some(3), Some("queued"))
    );
    let doc_ids: Vec<String> = docs
        .iter()
        .map(|d| d["document_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(doc_ids.iter().all(|d| d.starts_with("doc_")));
    assert_eq!(available(&sb).await, 96);

    let (_, list) = get_json(&sb, "/v1/extractions").await;
    assert_eq!(list["extractions"][0]["extraction_id"], id.as_str());
    let (_, status) = get_json(&sb, &format!("/v1/extractions/{id}")).await;
    assert_ne!(status["extraction"]["status"], "completed");
    // Documents finish 1–3 simulated (here real) seconds after the submission.
    let started = std::time::Instant::now();
    loop {
        let (_, status) = get_json(&sb, &format!("/v1/extractions/{id}")).await;
        if status["extraction"]["status"] == "completed" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (doc, bytes) in doc_ids.iter().zip([&b"%PDF-1.7 one"[..], &big]) {
        let resp = reqwest::Client::new()
            .get(format!(
                "{}/v1/extractions/{id}/documents/{doc}",
                sb.base_url()
            ))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.bytes().await.unwrap();
        let want = sb.expected(&id, doc).unwrap();
        assert_eq!(
            (hex::encode(Sha256::digest(&body)), body.len() as u64),
            want
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        let source = &v["document"]["extracted_data"]["source"];
        assert_eq!(source["sha256"], hex::encode(Sha256::digest(bytes)));
        assert_eq!(source["size"], bytes.len());
        assert_eq!(v["document"]["file_size"], bytes.len());
    }
    let (_, results) = get_json(&sb, &format!("/v1/extractions/{id}/results")).await;
    assert!(results["extraction"]["documents"][0]["extracted_data"]["fields"].is_object());
    let stats = sb.stats();
    assert_eq!(
        (
            stats.submissions,
            stats.credits_charged,
            stats.list_requests
        ),
        (1, 4, 1)
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_replayed_idempotency_key_returns_the_same_job_without_a_charge() {
    let sb = start(spec().with_credits(10)).await;
    let body = || form(Some(DEFAULT_PARSER), &[("a.png", b"png bytes")]);
    let first = post(&sb, body(), Some("key-1")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first = json(first).await;
    let again = post(&sb, body(), Some("key-1")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = json(again).await;
    assert_eq!(
        again["extraction"]["extraction_id"],
        first["extraction"]["extraction_id"]
    );
    assert_eq!(available(&sb).await, 9);
    let other = json(post(&sb, body(), Some("key-2")).await).await;
    assert_ne!(
        other["extraction"]["extraction_id"],
        first["extraction"]["extraction_id"]
    );
    let stats = sb.stats();
    assert_eq!(
        (stats.submissions, stats.replays, stats.credits_charged),
        (2, 1, 2)
    );
    sb.stop().await;
}

#[tokio::test]
async fn insufficient_credits_is_402_and_creates_nothing() {
    let sb = start(spec().with_credits(2)).await;
    let big = vec![1u8; 150_000]; // 4 pages
    let resp = post(
        &sb,
        form(Some(DEFAULT_PARSER), &[("big.pdf", &big)]),
        Some("k"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(json(resp).await["error"]["code"], "INSUFFICIENT_CREDITS");
    let (_, list) = get_json(&sb, "/v1/extractions").await;
    assert!(list["extractions"].as_array().unwrap().is_empty());
    assert_eq!(available(&sb).await, 2);
    // The refused key was not remembered: a fitting retry with it is a new submission.
    let resp = post(
        &sb,
        form(Some(DEFAULT_PARSER), &[("s.pdf", b"x")]),
        Some("k"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(!resp.headers().contains_key("idempotent-replayed"));
    let stats = sb.stats();
    assert_eq!((stats.submissions, stats.credits_charged), (1, 1));
    sb.stop().await;
}

#[tokio::test]
async fn the_21st_submit_in_the_window_is_rate_limited() {
    let sb = start(spec().with_submit_limit(20, Duration::from_secs(30))).await;
    for i in 0..20 {
        let resp = post(&sb, form(Some(DEFAULT_PARSER), &[("a.pdf", b"x")]), None).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "submit {i}");
    }
    let resp = post(&sb, form(Some(DEFAULT_PARSER), &[("a.pdf", b"x")]), None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "20");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(json(resp).await["error"]["code"], "RATE_LIMITED");
    // Other routes still answer under the global quota.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/credits", sb.base_url()))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "150");
    let stats = sb.stats();
    assert_eq!(
        (
            stats.submissions,
            stats.submit_rate_limited,
            stats.rate_limited
        ),
        (20, 1, 0)
    );
    sb.stop().await;
}

#[tokio::test]
async fn bad_submissions_are_refused_with_the_documented_codes() {
    let sb = start(spec().with_parsers(&["prs_a", "prs_b"])).await;
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            form(Some("prs_a"), &[("notes.txt", b"hi")]),
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED_FILE_TYPE",
        ),
        (
            form(Some("prs_zzz"), &[("a.pdf", b"x")]),
            StatusCode::NOT_FOUND,
            "PARSER_NOT_FOUND",
        ),
        (
            form(Some(DEFAULT_PARSER), &[("a.pdf", b"x")]),
            StatusCode::NOT_FOUND,
            "PARSER_NOT_FOUND",
        ),
        (
            form(None, &[("a.pdf", b"x")]),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
        (
            form(Some("prs_a"), &[]),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
        (
            form(Some("prs_a"), &[("empty.pdf", b"")]),
            StatusCode::BAD_REQUEST,
            "PAGE_COUNT_FAILED",
        ),
        (
            b"not multipart".to_vec(),
            StatusCode::BAD_REQUEST,
            "INVALID_PAYLOAD",
        ),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let resp = post(&sb, body, None).await;
        assert_eq!(resp.status(), status, "case {i}");
        assert_eq!(json(resp).await["error"]["code"], code, "case {i}");
    }
    let many: Vec<(String, Vec<u8>)> = (0..51).map(|i| (format!("f{i}.tif"), vec![1])).collect();
    let parts: Vec<(&str, &[u8])> = many.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    let resp = post(&sb, form(Some("prs_b"), &parts), None).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(resp).await["error"]["code"], "INVALID_PAYLOAD");
    let resp = post(&sb, form(Some("prs_b"), &parts[..50]), None).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "50 files are allowed");
    let stats = sb.stats();
    assert_eq!((stats.submissions, stats.credits_charged), (1, 50));
    sb.stop().await;
}
