//! The Talonic router held to `providers.md` §3, its failing list pages, and the batch actions
//! (sync, cancel, with `Idempotency-Key`), over real HTTP.

use reqwest::StatusCode;
use serde_json::Value;

use super::super::route_check::{
    DocRoute, ListForms, Probe, assert_table_covers_doc, check_list_faults, served, unserved,
};
use super::tests::*;
use super::*;

/// providers.md §3.2 "Endpoints", and the webhook registration of §3.3.
const ROUTES: &[DocRoute] = &[
    served("GET", "/v1/batches"),
    served("GET", "/v1/batches/:id"),
    served("POST", "/v1/batches/:id/sync"),
    served("POST", "/v1/batches/:id/cancel"),
    served("GET", "/v1/documents/:id"),
    served("GET", "/v1/extractions/:id"),
    unserved(
        "POST",
        "/v1/webhooks",
        "webhooks (2nd) have no batch events, and the mirror polls",
    ),
];

/// Paths outside the table, and methods a documented path does not take: the fallback.
const UNLISTED: &[(&str, &str)] = &[
    ("GET", "/v1/nope"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches/b1/sync"),
    ("DELETE", "/v1/documents/doc-i1"),
];

/// A documented route with an unknown id: the documented 404, not the fallback.
const UNKNOWN_ID: (&str, &str) = ("GET", "/v1/batches/nope");

/// Express answers a route it does not have, whatever the method, with `Cannot METHOD /path`.
fn is_fallback(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND
        && body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Cannot "))
}

async fn post(sb: &TalonicSandbox, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", sb.base_url()))
        .bearer_auth(KEY);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), json(resp).await)
}

#[test]
fn the_route_table_has_every_route_of_providers_md_section_3() {
    assert_table_covers_doc(ROUTES, "3");
}

#[tokio::test]
async fn every_documented_route_is_routed_and_nothing_else() {
    let sb = start(spec(vec![batch(
        "b1",
        3600,
        vec![item("i1", -60.0, ItemOutcome::Completed)],
    )]))
    .await;
    let (_, doc) = get_json(&sb, "/v1/documents/doc-i1").await;
    let extraction = doc["latest_extraction_id"].as_str().unwrap().to_owned();
    let fill = |p: &str| {
        p.replace("/v1/documents/:id", "/v1/documents/doc-i1")
            .replace(
                "/v1/extractions/:id",
                &format!("/v1/extractions/{extraction}"),
            )
            .replace(":id", "b1")
    };
    let probe = Probe {
        base: sb.base_url(),
        auth: &|r| r.bearer_auth(KEY),
        fill: &fill,
        is_fallback: &is_fallback,
    };
    probe.assert_routes(ROUTES, UNLISTED, UNKNOWN_ID).await;
    sb.stop().await;
}

#[tokio::test]
async fn list_faults_hit_cursor_pages_only() {
    let mut s = TalonicSpec::generated(3, 2, 1000, 4);
    s.api_key = KEY.to_owned();
    s.time_scale = 0.0;
    let sb = start(s).await;
    let first = format!("{}/v1/batches?limit=1", sb.base_url());
    let (_, page) = get_json(&sb, "/v1/batches?limit=1").await;
    let cursor = page["pagination"]["next_cursor"].as_str().unwrap();
    let later = format!("{first}&cursor={cursor}");
    let forms = ListForms {
        unavailable: &|v| {
            v["statusCode"] == 503 && v["code"] == "SERVICE_UNAVAILABLE" && v["retryable"] == true
        },
        reject: (400, &|v| {
            v["code"] == "VALIDATION_ERROR" && v["retryable"] == false && v["path"] == "/v1/batches"
        }),
    };
    let n = check_list_faults(
        &|f| sb.set_list_fault(f),
        &|url| reqwest::Client::new().get(url).bearer_auth(KEY),
        &first,
        &later,
        forms,
    )
    .await;
    assert_eq!(sb.stats().list_requests, 1 + n);
    assert!(sb.request_log().iter().any(|r| r.status == 503));
    sb.stop().await;
}

#[tokio::test]
async fn sync_answers_the_batch_and_cancel_stops_unfinished_ones_only() {
    let sb = start(spec(vec![
        batch("acc", 60, vec![item("a1", 3600.0, ItemOutcome::Completed)]),
        batch(
            "sub",
            600,
            vec![
                item("s1", -30.0, ItemOutcome::Completed),
                item("s2", 3600.0, ItemOutcome::Completed),
            ],
        ),
        batch(
            "done",
            7200,
            vec![item("d1", -600.0, ItemOutcome::Completed)],
        ),
    ]))
    .await;
    let (s, synced) = post(&sb, "/v1/batches/sub/sync", None).await;
    assert_eq!(
        (s, synced["status"].as_str()),
        (StatusCode::OK, Some("submitted"))
    );
    assert_eq!(synced["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        get_json(&sb, "/v1/batches/acc").await.1["status"],
        "accumulating"
    );
    let (s, acc) = post(&sb, "/v1/batches/acc/cancel", None).await;
    assert_eq!(
        (s, acc["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert!(
        acc["submitted_at"].is_null() && acc["completed_at"].is_null(),
        "{acc}"
    );
    assert_eq!(acc["items"][0]["status"], "failed");
    assert!(
        acc["items"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let (_, doc) = get_json(&sb, "/v1/documents/doc-a1").await;
    assert_eq!(
        (doc["status"].as_str(), &doc["latest_extraction_id"]),
        (Some("failed"), &Value::Null)
    );
    assert_eq!(sb.expected("acc", "a1"), None);
    let (s, first) = post(&sb, "/v1/batches/sub/cancel", Some("k1")).await;
    assert_eq!(
        (s, first["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let statuses: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "failed"]);
    assert_eq!(
        post(&sb, "/v1/batches/sub/cancel", Some("k1")).await,
        (StatusCode::OK, first)
    );
    assert_eq!(sb.stats().idempotent_replays, 1);
    let (s, again) = post(&sb, "/v1/batches/sub/cancel", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_envelope(&again, 400, "VALIDATION_ERROR", false);
    let (s, done) = post(&sb, "/v1/batches/done/cancel", Some("k2")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_envelope(&done, 400, "VALIDATION_ERROR", false);
    let (s, nope) = post(&sb, "/v1/batches/nope/cancel", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_envelope(&nope, 404, "not_found", false);
    let (_, listed) = get_json(&sb, "/v1/batches?status=cancelled").await;
    assert_eq!(listed["pagination"]["total"], 2);
    let stats = sb.stats();
    assert_eq!((stats.sync_requests, stats.cancel_requests), (1, 6));
    sb.stop().await;
}
