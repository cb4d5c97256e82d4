//! The PerfectParser sandbox against its documented contract, over real HTTP.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

pub(super) const KEY: &str = "pp_live_test";

pub(super) fn doc(id: &str, finishes_at: f64, outcome: DocOutcome) -> DocumentSpec {
    DocumentSpec {
        id: id.to_owned(),
        filename: format!("{id}.pdf"),
        finishes_at,
        outcome,
        result_bytes: 2500,
        page_count: 2,
    }
}

pub(super) fn ext(id: &str, created_ago: u64, documents: Vec<DocumentSpec>) -> ExtractionSpec {
    ExtractionSpec {
        id: id.to_owned(),
        parser_id: "prs_a".to_owned(),
        created_ago: Duration::from_secs(created_ago),
        documents,
        status_override: None,
    }
}

pub(super) async fn start(spec: PerfectSpec) -> PerfectSandbox {
    PerfectSandbox::start(spec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub(super) async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
}

pub(super) async fn get_json(url: &str) -> (StatusCode, Value) {
    let resp = get(url).await;
    let status = resp.status();
    (
        status,
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap(),
    )
}

pub(super) fn small_world() -> PerfectSpec {
    let mut spec = PerfectSpec::new(
        KEY,
        vec![
            ext(
                "ext_a",
                3000,
                vec![doc("doc_1", -60.0, DocOutcome::Completed)],
            ),
            ext(
                "ext_b",
                2000,
                vec![
                    doc("doc_2", -60.0, DocOutcome::Completed),
                    doc("doc_3", -60.0, DocOutcome::Failed),
                ],
            ),
            ext(
                "ext_c",
                1000,
                vec![doc("doc_4", 30.0, DocOutcome::Completed)],
            ),
        ],
    );
    spec.seed = 5;
    spec
}

#[tokio::test]
async fn auth_errors_and_rate_headers_follow_the_docs() {
    let sb = start(small_world()).await;
    let url = format!("{}/v1/extractions", sb.base_url());
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(resp.headers().contains_key(h), "{h} on a 401");
    }
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    let resp = get(&url).await;
    assert_eq!(resp.headers()["x-ratelimit-limit"], "150");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "149");
    let reset: u64 = resp.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 59..=now + 61).contains(&reset), "{reset} vs {now}");
    for bad in [
        "limit=101",
        "limit=0",
        "limit=x",
        "status=archived",
        "since=yesterday",
        "cursor=zz",
    ] {
        let (status, body) = get_json(&format!("{url}?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "INVALID_PAYLOAD", "{bad}");
    }
    assert_eq!(sb.stats().unauthorized, 1);
    sb.stop().await;
}

#[tokio::test]
async fn listing_pages_newest_first_with_statuses_and_filters() {
    let sb = start(small_world()).await;
    let base = format!("{}/v1/extractions", sb.base_url());
    let (_, first) = get_json(&format!("{base}?limit=2")).await;
    let ids: Vec<&str> = first["extractions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["extraction_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ext_c", "ext_b"]);
    assert_eq!(first["extractions"][0]["status"], "queued");
    assert_eq!(first["extractions"][1]["status"], "partial");
    assert_eq!(first["extractions"][1]["document_summary"]["failed"], 1);
    assert_eq!(first["pagination"]["has_next_page"], true);
    let cursor = first["pagination"]["next_cursor"].as_str().unwrap();
    let (_, second) = get_json(&format!("{base}?limit=2&cursor={cursor}")).await;
    assert_eq!(second["extractions"][0]["extraction_id"], "ext_a");
    assert_eq!(second["extractions"][0]["status"], "completed");
    assert_eq!(second["pagination"]["has_next_page"], false);
    assert!(second["pagination"]["next_cursor"].is_null());
    let (_, partial) = get_json(&format!("{base}?status=partial")).await;
    assert_eq!(partial["extractions"].as_array().unwrap().len(), 1);
    let (_, none) = get_json(&format!("{base}?parser_id=prs_other")).await;
    assert!(none["extractions"].as_array().unwrap().is_empty());

    let (_, detail) = get_json(&format!("{base}/ext_b")).await;
    let docs = detail["extraction"]["documents"].as_array().unwrap();
    assert_eq!(docs[1]["status"], "failed");
    assert!(docs[1]["error_message"].is_string());
    let (status, body) = get_json(&format!("{base}/ext_nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "RESOURCE_NOT_FOUND");
    let (_, results) = get_json(&format!("{base}/ext_b/results")).await;
    assert!(results["extraction"]["documents"][0]["extracted_data"]["chunks"].is_array());
    assert!(results["extraction"]["documents"][1]["extracted_data"].is_null());
    sb.stop().await;
}

#[tokio::test]
async fn documents_and_exports_serve_what_expected_says() {
    let sb = start(small_world()).await;
    let base = format!("{}/v1/extractions", sb.base_url());
    let resp = get(&format!("{base}/ext_b/documents/doc_2")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["document"]["document_id"], "doc_2");
    assert!(v["document"]["extracted_data"]["chunks"].is_array());
    let (sha, len) = sb.expected("ext_b", "doc_2").unwrap();
    assert_eq!(
        (hex::encode(Sha256::digest(&bytes)), bytes.len() as u64),
        (sha, len)
    );
    assert_eq!(sb.expected("ext_b", "doc_3"), None);
    // Ids that do not pair are 404, like unknown ones.
    let (status, _) = get_json(&format!("{base}/ext_a/documents/doc_2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (format, ctype) in [
        ("json", "application/json"),
        ("csv", "text/csv; charset=utf-8"),
        (
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    ] {
        let resp = get(&format!(
            "{base}/ext_b/documents/doc_2/export?format={format}"
        ))
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "{format}");
        assert_eq!(resp.headers()["content-type"], ctype);
        let body = resp.bytes().await.unwrap();
        let want = sb.expected_export("ext_b", "doc_2", format).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&body)), want.0, "{format}");
    }
    let (status, body) = get_json(&format!("{base}/ext_b/documents/doc_2/export?format=pdf")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "INVALID_PAYLOAD");
    let stats = sb.stats();
    assert_eq!(
        stats.document_downloads[&("ext_b".into(), "doc_2".into())],
        1
    );
    assert_eq!(stats.export_requests.len(), 4);
    sb.stop().await;
}

/// Where `body` carries `extracted_data` of `len` bytes hashing to `sha`.
fn carries_data(body: &[u8], sha: &str, len: u64) -> bool {
    let marker = b"\"extracted_data\":";
    let len = usize::try_from(len).unwrap();
    (0..body.len().saturating_sub(marker.len()))
        .filter(|&i| body[i..].starts_with(marker))
        .map(|i| i + marker.len())
        .filter_map(|at| body.get(at..at + len))
        .any(|data| hex::encode(Sha256::digest(data)) == sha)
}

#[tokio::test]
async fn expected_data_is_what_the_document_and_the_results_routes_both_carry() {
    let sb = start(small_world()).await;
    let base = format!("{}/v1/extractions", sb.base_url());
    let (sha, len) = sb.expected_data("ext_b", "doc_2").unwrap();
    let one = get(&format!("{base}/ext_b/documents/doc_2")).await;
    let all = get(&format!("{base}/ext_b/results")).await;
    for body in [one.bytes().await.unwrap(), all.bytes().await.unwrap()] {
        assert!(
            carries_data(&body, &sha, len),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    assert!(!carries_data(b"{\"extracted_data\":{}}", &sha, len));
    assert_eq!(sb.expected_data("ext_b", "doc_3"), None);
    sb.stop().await;
}

#[tokio::test]
async fn the_quota_refuses_with_429_until_the_window_resets() {
    let mut spec = small_world();
    spec.requests_per_minute = 3;
    spec.window = Duration::from_secs(1);
    let sb = start(spec).await;
    let url = format!("{}/v1/credits", sb.base_url());
    for left in ["2", "1", "0"] {
        let resp = get(&url).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-ratelimit-remaining"], left);
    }
    let resp = get(&url).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let reset: u64 = resp.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(sb.stats().rate_limited, 1);
    let wait = (SystemTime::UNIX_EPOCH + Duration::from_secs(reset))
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let (status, body) = get_json(&url).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a new window opens at the announced reset"
    );
    assert!(body["credits"]["credits_available"].is_u64());
    sb.stop().await;
}

#[tokio::test]
async fn generated_mix_is_deterministic_and_as_described() {
    let a = PerfectSpec::generated(5, 6, 1500, 3);
    assert_eq!(
        format!("{a:?}"),
        format!("{:?}", PerfectSpec::generated(5, 6, 1500, 3))
    );
    let sb = start(PerfectSpec {
        api_key: KEY.to_owned(),
        ..a
    })
    .await;
    let (_, list) = get_json(&format!("{}/v1/extractions", sb.base_url())).await;
    let status = |id: &str| {
        list["extractions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["extraction_id"] == id)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(list["extractions"][0]["extraction_id"], "ext_000005");
    assert_eq!(status("ext_000005"), "processing");
    assert_eq!(status("ext_000002"), "partial");
    assert_eq!(status("ext_000003"), "completed");
    assert_eq!(status("ext_000001"), "completed");
    let url = format!(
        "{}/v1/extractions/ext_000001/documents/doc_000001_0000",
        sb.base_url()
    );
    let (code, body) = get_json(&url).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "past retention");
    assert_eq!(body["error"]["code"], "RESOURCE_NOT_FOUND");
    sb.stop().await;
}
