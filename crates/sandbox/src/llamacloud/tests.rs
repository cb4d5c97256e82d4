//! The LlamaCloud sandbox against its documented contract, over real HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_LENGTH;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

async fn started(spec: LlamaSpec) -> LlamaSandbox {
    LlamaSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .expect("starts")
}

async fn get(sb: &LlamaSandbox, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", sb.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .send()
        .await
        .expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.bytes().await.expect("body").to_vec())
}

async fn json(sb: &LlamaSandbox, path: &str) -> (StatusCode, Value) {
    let (status, _, body) = get(sb, path).await;
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

#[tokio::test]
async fn lists_pages_by_offset_with_total_size_and_required_fields() {
    let sb = started(LlamaSpec::generated(5, 3, 2000, 1)).await;
    let (s, first) = json(&sb, "/api/v1/beta/batch-processing?limit=2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(first["total_size"], 5);
    assert_eq!(first["next_page_token"], "2");
    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let (_, page) = json(
            &sb,
            &format!("/api/v1/beta/batch-processing?limit=2&offset={offset}"),
        )
        .await;
        for job in page["items"].as_array().unwrap() {
            for key in ["id", "job_type", "project_id", "status", "total_items"] {
                assert!(!job[key].is_null(), "{key} missing in {job}");
            }
            assert!(job["id"].as_str().unwrap().starts_with("bjb-"));
            seen.push(job["id"].as_str().unwrap().to_owned());
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 5);
    let (_, running) = json(&sb, "/api/v1/beta/batch-processing?status=completed").await;
    assert_eq!(running["total_size"], 4, "one job is still running");
    assert_eq!(sb.stats().list_requests, 5);
    sb.stop().await;
}

#[tokio::test]
async fn refuses_bad_keys_and_bad_paging_like_fastapi() {
    let sb = started(LlamaSpec::generated(1, 1, 500, 1)).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/beta/batch-processing", sb.base_url()))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["detail"], "Invalid API key");
    assert_eq!(sb.stats().unauthorized, 1);
    for q in [
        "limit=0",
        "limit=1001",
        "offset=-1",
        "limit=x",
        "status=done",
    ] {
        let (s, body) = json(&sb, &format!("/api/v1/beta/batch-processing?{q}")).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        assert_eq!(body["detail"][0]["loc"][0], "query", "{q}");
    }
    let (s, body) = json(&sb, "/api/v1/beta/batch-processing/bjb-nope").await;
    assert_eq!(
        (s, body["detail"].is_string()),
        (StatusCode::NOT_FOUND, true)
    );
    sb.stop().await;
}

#[tokio::test]
async fn items_results_and_processing_records_agree() {
    let mut spec = LlamaSpec::generated(3, 4, 6000, 9);
    spec.jobs[1].items[0].outcome = Outcome::Completed;
    let job = spec.jobs[1].id.clone();
    let sb = started(spec).await;
    let (_, status) = json(&sb, &format!("/api/v1/beta/batch-processing/{job}")).await;
    assert_eq!(status["job"]["id"], job.as_str());
    assert_eq!(status["progress_percentage"], 100.0);
    let (_, items) = json(
        &sb,
        &format!("/api/v1/beta/batch-processing/{job}/items?limit=1000"),
    )
    .await;
    assert_eq!(items["total_size"], 4);
    let item = &items["items"][0];
    assert_eq!(item["status"], "completed");
    let parse_id = item["job_id"].as_str().unwrap();
    assert_ne!(parse_id, item["item_id"].as_str().unwrap());
    let (s, headers, body) = get(&sb, &format!("/api/v1/parsing/job/{parse_id}/result/json")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        headers[CONTENT_LENGTH].to_str().unwrap(),
        body.len().to_string()
    );
    let item_id = item["item_id"].as_str().unwrap();
    let (sha, len) = sb.expected(&job, item_id).unwrap();
    assert_eq!(
        (hex::encode(Sha256::digest(&body)), body.len() as u64),
        (sha, len)
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["pages"].as_array().is_some_and(|p| !p.is_empty()));
    let (_, md) = json(
        &sb,
        &format!("/api/v1/parsing/job/{parse_id}/result/markdown"),
    )
    .await;
    assert!(md["markdown"].is_string());
    let path = format!("/api/v1/beta/batch-processing/items/{item_id}/processing-results");
    let (_, rec) = json(&sb, &path).await;
    assert_eq!(rec["item_id"], item_id);
    assert_eq!(rec["processing_results"][0]["job_type"], "parse");
    assert_eq!(rec["processing_results"][0]["result_id"], parse_id);
    assert_eq!(sb.stats().processing_results_requests, 1);
    sb.stop().await;
}

#[tokio::test]
async fn expired_results_are_404_and_running_jobs_finish() {
    let spec = LlamaSpec::generated(3, 2, 1000, 4);
    let old = spec.jobs[0].clone();
    let running = spec.jobs[2].id.clone();
    let sb = started(spec).await;
    let done = old
        .items
        .iter()
        .find(|i| i.outcome == Outcome::Completed)
        .expect("a completed item");
    let (s, body) = json(
        &sb,
        &format!("/api/v1/parsing/job/{}/result/json", done.parse_job_id),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body["detail"].is_string());
    let (_, st) = json(&sb, &format!("/api/v1/beta/batch-processing/{running}")).await;
    assert_ne!(st["job"]["status"], "completed");
    sb.push_fault(Fault::Status {
        path_prefix: "/api/v1/beta".into(),
        status: 429,
        retry_after: Some("1".into()),
    });
    let (s, _) = json(&sb, "/api/v1/beta/batch-processing").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_millis(3700)).await;
    let (_, st) = json(&sb, &format!("/api/v1/beta/batch-processing/{running}")).await;
    assert_eq!(st["job"]["status"], "completed");
    assert!(sb.request_log().iter().any(|r| r.status == 429));
    sb.stop().await;
}

#[test]
fn generated_mix_has_every_documented_case_and_distinct_ids() {
    let spec = LlamaSpec::generated(4, 6, 1000, 2);
    let items: Vec<&ItemSpec> = spec.jobs.iter().flat_map(|j| &j.items).collect();
    for outcome in [Outcome::Completed, Outcome::Failed, Outcome::Skipped] {
        assert!(items.iter().any(|i| i.outcome == outcome), "{outcome:?}");
    }
    assert!(
        spec.jobs[0].created_ago > spec.retention,
        "one job is past retention"
    );
    assert!(
        spec.jobs[3].items.iter().all(|i| i.finishes_at > 0.0),
        "one job still runs"
    );
    let mut ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    ids.extend(items.iter().map(|i| i.parse_job_id.as_str()));
    ids.extend(spec.jobs.iter().map(|j| j.id.as_str()));
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "item, parse job and batch job ids are all distinct"
    );
    let again = LlamaSpec::generated(4, 6, 1000, 2);
    assert_eq!(again.jobs[2].items[5].id, spec.jobs[2].items[5].id);
}
