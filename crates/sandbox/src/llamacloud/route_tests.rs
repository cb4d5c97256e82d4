//! The LlamaCloud router held to `providers.md` §2, its failing list pages, the parse-job status
//! route and the create/cancel routes, over real HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::super::route_check::{
    DocRoute, ListForms, Probe, assert_table_covers_doc, check_list_faults, served, unserved,
};
use super::*;

/// providers.md §2.2 "Endpoints", the routes §2.4 names for getting result content, and the
/// ones §2.5 mentions.
const ROUTES: &[DocRoute] = &[
    served("POST", "/api/v1/beta/batch-processing"),
    served("GET", "/api/v1/beta/batch-processing"),
    served("GET", "/api/v1/beta/batch-processing/{job_id}"),
    served("POST", "/api/v1/beta/batch-processing/{job_id}/cancel"),
    served("GET", "/api/v1/beta/batch-processing/{job_id}/items"),
    served(
        "GET",
        "/api/v1/beta/batch-processing/items/{item_id}/processing-results",
    ),
    served("GET", "/api/v1/parsing/job/{job_id}"),
    served("GET", "/api/v1/parsing/job/{job_id}/result/json"),
    served("GET", "/api/v1/parsing/job/{job_id}/result/markdown"),
    served("GET", "/api/v1/parsing/job/{job_id}/result/text"),
    unserved(
        "GET",
        "/api/v1/parsing/job/{job_id}/result/structured",
        "shape NF, and only for structured-output parse jobs, which the sandbox does not run",
    ),
    unserved(
        "GET",
        "/api/v1/parsing/job/{job_id}/result/xlsx",
        "binary shape NF; the mirror keeps the json result",
    ),
    unserved(
        "GET",
        "/api/v1/parsing/job/{job_id}/result/pdf",
        "binary shape NF; the mirror keeps the json result",
    ),
    unserved(
        "GET",
        "/api/v1/parsing/job/{job_id}/result/image/{name}",
        "image names and bodies NF; sandbox pages have no images",
    ),
    unserved(
        "GET",
        "/api/v1/parsing/job/{job_id}/details",
        "shape NF; the status route gives what the mirror needs",
    ),
    unserved(
        "GET",
        "/api/v2/parse/{job_id}",
        "whether v1 batch job ids resolve on v2 is NF; §2.4 documents the v1 routes for them",
    ),
    unserved(
        "GET",
        "/api/v1/extraction/jobs/{job_id}/result",
        "extract-type items: the sandbox runs parse jobs only",
    ),
    unserved(
        "GET",
        "/api/v2/extract/{job_id}",
        "extract-type items: the sandbox runs parse jobs only",
    ),
    // §2.5.
    unserved(
        "POST",
        "/api/v1/files",
        "file upload into a project: batch jobs here run over files already in a directory",
    ),
    unserved(
        "POST",
        "/api/v1/parsing/upload",
        "single-file parse upload, outside batch processing",
    ),
    unserved(
        "POST",
        "/api/v2/batches",
        "the v2 batch API, successor of v1 beta, is not the one the mirror uses",
    ),
    unserved(
        "GET",
        "/api/v2/batches/{id}",
        "the v2 batch API, successor of v1 beta, is not the one the mirror uses",
    ),
];

/// Paths outside the table, and methods a documented path does not take: the fallback.
const UNLISTED: &[(&str, &str)] = &[
    ("GET", "/api/v1/nope"),
    ("DELETE", "/api/v1/beta/batch-processing"),
    ("POST", "/api/v1/parsing/job/x"),
];

/// A documented route with an unknown id: the documented 404, not the fallback.
const UNKNOWN_ID: (&str, &str) = ("GET", "/api/v1/beta/batch-processing/bjb-nope");

fn is_fallback(status: StatusCode, body: &Value) -> bool {
    match status {
        StatusCode::NOT_FOUND => *body == json!({ "detail": "Not Found" }),
        StatusCode::METHOD_NOT_ALLOWED => *body == json!({ "detail": "Method Not Allowed" }),
        _ => false,
    }
}

fn client_for(method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, url)
        .bearer_auth(DEFAULT_API_KEY)
}

async fn call(sb: &LlamaSandbox, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client_for(method.clone(), &format!("{}{path}", sb.base_url()));
    if method != reqwest::Method::GET {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Three jobs: [0] past retention, [1] finished with item 0 completed, 1 failed, 2 skipped,
/// [2] still running.
fn spec() -> LlamaSpec {
    let mut spec = LlamaSpec::generated(3, 4, 2000, 9);
    spec.jobs[1].items[0].outcome = Outcome::Completed;
    spec
}

#[test]
fn the_route_table_has_every_route_of_providers_md_section_2() {
    assert_table_covers_doc(ROUTES, "2");
}

#[tokio::test]
async fn every_documented_route_is_routed_and_nothing_else() {
    let spec = spec();
    let (job, item) = (spec.jobs[1].id.clone(), spec.jobs[1].items[0].clone());
    let sb = LlamaSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let fill = |p: &str| {
        p.replace(
            "/parsing/job/{job_id}",
            &format!("/parsing/job/{}", item.parse_job_id),
        )
        .replace("{job_id}", &job)
        .replace("{item_id}", &item.id)
        .replace("{name}", "img_p1_1.png")
    };
    let probe = Probe {
        base: sb.base_url(),
        auth: &|r| r.bearer_auth(DEFAULT_API_KEY),
        fill: &fill,
        is_fallback: &is_fallback,
    };
    probe.assert_routes(ROUTES, UNLISTED, UNKNOWN_ID).await;
    sb.stop().await;
}

#[tokio::test]
async fn list_faults_hit_pages_past_offset_0_only() {
    let mut spec = spec();
    spec.time_scale = 0.0;
    let sb = LlamaSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let first = format!("{}/api/v1/beta/batch-processing?limit=1", sb.base_url());
    let later = format!("{first}&offset=1");
    let forms = ListForms {
        unavailable: &|v| v["detail"] == "Service Unavailable",
        reject: (422, &|v| {
            v["detail"][0]["loc"] == json!(["query", "offset"])
        }),
    };
    let n = check_list_faults(
        &|f| sb.set_list_fault(f),
        &|url| client_for(reqwest::Method::GET, url),
        &first,
        &later,
        forms,
    )
    .await;
    assert_eq!(sb.stats().list_requests, n);
    assert!(sb.request_log().iter().any(|r| r.status == 422));
    // `offset=0` is the first page too.
    sb.set_list_fault(Some(ListFault::Status(503)));
    let (s, _) = call(
        &sb,
        "GET",
        "/api/v1/beta/batch-processing?offset=0",
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    sb.stop().await;
}

#[tokio::test]
async fn the_parse_job_status_follows_the_item() {
    let spec = spec();
    let expired = spec.jobs[0]
        .items
        .iter()
        .find(|i| i.outcome == Outcome::Completed)
        .expect("a completed item past retention")
        .parse_job_id
        .clone();
    let items = spec.jobs[1].items.clone();
    let running_job = spec.jobs[2].id.clone();
    // The item that finishes last, so that it is still unfinished when the test cancels it.
    let running = spec.jobs[2]
        .items
        .iter()
        .max_by(|a, b| a.finishes_at.total_cmp(&b.finishes_at))
        .unwrap()
        .parse_job_id
        .clone();
    let sb = LlamaSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let job = |id: &str| format!("/api/v1/parsing/job/{id}");
    let (s, ok) = call(&sb, "GET", &job(&items[0].parse_job_id), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        ok,
        json!({ "id": items[0].parse_job_id, "status": "SUCCESS", "error_code": null, "error_message": null })
    );
    let (_, failed) = call(&sb, "GET", &job(&items[1].parse_job_id), json!({})).await;
    assert_eq!(failed["status"], "ERROR");
    assert!(failed["error_code"].is_string() && failed["error_message"].is_string());
    let (_, pending) = call(&sb, "GET", &job(&running), json!({})).await;
    assert_eq!(pending["status"], "PENDING");
    let cancel = format!("/api/v1/beta/batch-processing/{running_job}/cancel");
    assert_eq!(
        call(&sb, "POST", &cancel, json!({})).await.0,
        StatusCode::OK
    );
    let (_, stopped) = call(&sb, "GET", &job(&running), json!({})).await;
    assert_eq!(stopped["status"], "CANCELLED");
    for gone in [&expired, &items[2].parse_job_id, &"nope".to_owned()] {
        let (s, body) = call(&sb, "GET", &job(gone), json!({})).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{gone}: {body}");
        assert!(body["detail"].is_string() && body != json!({ "detail": "Not Found" }));
    }
    let resp = reqwest::Client::new()
        .get(format!("{}{}", sb.base_url(), job(&running)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sb.stats().parse_job_requests, 8);
    sb.stop().await;
}

#[tokio::test]
async fn created_jobs_run_and_cancelled_ones_stop() {
    let spec = spec();
    let old = spec.jobs[1].clone();
    let finished = old.id.clone();
    let sb = LlamaSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let base = "/api/v1/beta/batch-processing";
    let config = json!({ "job_name": "parse_raw_file_job", "partitions": {},
                         "parameters": { "type": "parse", "lang": "en" } });
    let (_, before) = call(&sb, "GET", &format!("{base}?limit=1"), json!({})).await;
    let (s, job) = call(
        &sb,
        "POST",
        base,
        json!({ "job_config": config, "item_ids": ["a", "b"] }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("bjb-") && job["total_items"] == 2, "{job}");
    // Newest first: the new job takes offset 0 and shifts the rest by one, so a walk by offset
    // sees the former first job again, never skips one.
    let (_, page) = call(&sb, "GET", &format!("{base}?limit=1&offset=1"), json!({})).await;
    assert_eq!(page["items"][0]["id"], before["items"][0]["id"]);
    let (_, page) = call(&sb, "GET", &format!("{base}?limit=1"), json!({})).await;
    assert_eq!(page["items"][0]["id"], id.as_str());
    let dir = json!({ "job_config": config, "directory_id": format!("dir-{}", &finished[4..]) });
    let (s, rerun) = call(&sb, "POST", base, dir).await;
    assert_eq!(
        (s, rerun["total_items"].as_u64()),
        (StatusCode::OK, Some(old.items.len() as u64))
    );
    let (s, cancelled) = call(
        &sb,
        "POST",
        &format!("{base}/{}/cancel", rerun["id"].as_str().unwrap()),
        json!({ "reason": "test" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["processed_items"].as_u64()
        ),
        (Some("cancelled"), Some(0))
    );
    let rerun_items = format!("{base}/{}/items", rerun["id"].as_str().unwrap());
    let (_, items) = call(&sb, "GET", &rerun_items, json!({})).await;
    for it in items["items"].as_array().unwrap() {
        assert_eq!(it["status"], "cancelled", "{it}");
        assert_eq!(
            it["item_name"],
            old.items
                .iter()
                .find(|o| o.id == it["item_id"])
                .unwrap()
                .name
                .as_str()
        );
    }
    let (s, _) = call(&sb, "POST", &format!("{base}/{finished}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    for bad in [
        json!({ "item_ids": ["a"] }),
        json!({ "job_config": config }),
        json!({ "job_config": config, "item_ids": ["a"], "directory_id": "d" }),
        json!({ "job_config": { "parameters": { "type": "classify" } }, "item_ids": ["a"] }),
        json!({ "job_config": config, "item_ids": [] }),
    ] {
        let (s, body) = call(&sb, "POST", base, bad.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert!(body["detail"][0]["loc"][0] == "body", "{body}");
    }
    let (s, _) = call(
        &sb,
        "POST",
        base,
        json!({ "job_config": config, "directory_id": "dir-nope" }),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_, done) = call(&sb, "GET", &format!("{base}/{id}"), json!({})).await;
    assert_eq!(done["job"]["status"], "completed", "{done}");
    let (_, items) = call(&sb, "GET", &format!("{base}/{id}/items"), json!({})).await;
    let parse_id = items["items"][0]["job_id"].as_str().unwrap().to_owned();
    let (s, result) = call(
        &sb,
        "GET",
        &format!("/api/v1/parsing/job/{parse_id}/result/json"),
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(result["pages"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(sb.expected(&id, "a").is_some());
    assert_eq!(sb.stats().jobs_created, 2);
    assert_eq!(sb.stats().cancel_requests, 2);
    sb.stop().await;
}
