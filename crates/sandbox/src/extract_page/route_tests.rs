//! extract.page's router held to the route table of `providers.md` §1, its failing list pages,
//! and `POST /v1/batches/{batch_id}/cancel`, over real HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::tests::*;
use super::{Delivery, Outcome};
use crate::route_check::{
    DocRoute, ListForms, Probe, assert_table_covers_doc, check_list_faults, served, unserved,
};

/// providers.md §1.2 "Endpoints" (and the synchronous routes of §1.1 "Flow"), as documented.
const ROUTES: &[DocRoute] = &[
    served("POST", "/v1/files"),
    served("GET", "/v1/files/{file_id}"),
    served("POST", "/v1/batches"),
    served("GET", "/v1/batches"),
    served("GET", "/v1/batches/{batch_id}"),
    served("POST", "/v1/batches/{batch_id}/cancel"),
    served("GET", "/v1/batches/{batch_id}/items/{item_id}/result"),
    unserved(
        "POST",
        "/v1/extract",
        "synchronous extraction (§1.1): no batch, nothing for a mirror of batch results",
    ),
    unserved(
        "POST",
        "/v1/extract/file",
        "synchronous upload (§1.1): no batch, nothing for a mirror of batch results",
    ),
];

/// Paths outside the table, and methods a documented path does not take: the fallback.
const UNLISTED: &[(&str, &str)] = &[
    ("GET", "/v1/nope"),
    ("GET", "/v1/batches/b1/items"),
    ("DELETE", "/v1/batches"),
    ("POST", "/v1/batches/b1"),
];

/// A documented route with an unknown id: the documented 404, not the fallback.
const UNKNOWN_ID: (&str, &str) = ("GET", "/v1/batches/nope");

fn is_fallback(status: StatusCode, body: &Value) -> bool {
    match status {
        StatusCode::NOT_FOUND => *body == json!({ "detail": "Not Found" }),
        StatusCode::METHOD_NOT_ALLOWED => *body == json!({ "detail": "Method Not Allowed" }),
        _ => false,
    }
}

#[test]
fn the_route_table_has_every_route_of_providers_md_section_1() {
    assert_table_covers_doc(ROUTES, "1");
}

#[tokio::test]
async fn every_documented_route_is_routed_and_nothing_else() {
    let sb = start(spec(vec![batch(
        "b1",
        600,
        vec![done("i1", Delivery::Inline)],
    )]))
    .await;
    let file = client()
        .post(format!("{}/v1/files", sb.base_url()))
        .header("X-API-KEY", KEY)
        .header("content-type", "application/json")
        .body(json!({ "size_bytes": 10 }).to_string())
        .send()
        .await
        .unwrap();
    let file_id = json(file).await["id"].as_str().unwrap().to_owned();
    let fill = |p: &str| {
        p.replace("{file_id}", &file_id)
            .replace("{batch_id}", "b1")
            .replace("{item_id}", "i1")
    };
    let probe = Probe {
        base: sb.base_url(),
        auth: &|r| r.header("X-API-KEY", KEY),
        fill: &fill,
        is_fallback: &is_fallback,
    };
    probe.assert_routes(ROUTES, UNLISTED, UNKNOWN_ID).await;
    sb.stop().await;
}

#[tokio::test]
async fn list_faults_hit_cursor_pages_only() {
    let mut s = spec(
        ["b1", "b2", "b3"]
            .iter()
            .enumerate()
            .map(|(k, id)| batch(id, 600 + 60 * k as u64, vec![done("i", Delivery::Inline)]))
            .collect(),
    );
    s.time_scale = 0.0;
    let sb = start(s).await;
    let first = format!("{}/v1/batches?limit=1", sb.base_url());
    let cursor = get_json(&first).await.1["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let later = format!("{first}&cursor={}", enc(&cursor));
    let forms = ListForms {
        unavailable: &|v| v["detail"] == "Service Unavailable",
        reject: (422, &|v| {
            v["detail"][0]["loc"] == json!(["query", "cursor"])
        }),
    };
    let n = check_list_faults(
        &|f| sb.set_list_fault(f),
        &|url| client().get(url).header("X-API-KEY", KEY),
        &first,
        &later,
        forms,
    )
    .await;
    assert_eq!(sb.stats().list_requests, 1 + n);
    let statuses: Vec<u16> = sb
        .request_log()
        .iter()
        .filter(|r| r.path == "/v1/batches")
        .map(|r| r.status)
        .collect();
    assert!(
        statuses.contains(&503) && statuses.contains(&422),
        "{statuses:?}"
    );
    sb.stop().await;
}

async fn cancel(sb: &super::Sandbox, id: &str) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{}/v1/batches/{}/cancel", sb.base_url(), enc(id)))
        .header("X-API-KEY", KEY)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, json(resp).await)
}

#[tokio::test]
async fn cancel_stops_a_running_batch_and_refuses_a_finished_one() {
    let sb = start(spec(vec![
        batch(
            "run",
            60,
            vec![
                done("ok", Delivery::Inline),
                item("late", 3600.0, Outcome::Succeeded, Delivery::Inline),
            ],
        ),
        batch("fin", 600, vec![done("f1", Delivery::Redirect)]),
    ]))
    .await;
    assert!(sb.expected("run", "late").is_some());
    let (_, before) = get_json(&format!("{}/v1/batches/run", sb.base_url())).await;
    let feed = format!(
        "{}/v1/batches/run?cursor={}",
        sb.base_url(),
        enc(before["next_cursor"].as_str().unwrap())
    );
    let (s, b) = cancel(&sb, "run").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["object"].as_str(), b["status"].as_str()),
        (Some("batch"), Some("cancelled"))
    );
    assert_eq!(
        b["counts"],
        json!({ "pending": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 1 })
    );
    assert!(
        b["completed_at"].is_string() && b.get("items").is_none(),
        "{b}"
    );
    let (_, detail) = get_json(&format!("{}/v1/batches/run", sb.base_url())).await;
    let late = detail["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "late")
        .unwrap();
    assert_eq!(late["status"], "cancelled");
    assert!(
        late["started_at"].is_null() && late["completed_at"].is_string(),
        "{late}"
    );
    let (s, body) = get_json(&result_url(&sb, "run", "late")).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::CONFLICT,
            json!({ "error": "result_not_ready", "status": "cancelled" })
        )
    );
    assert_eq!(sb.expected("run", "late"), None);
    assert_eq!(
        get(&result_url(&sb, "run", "ok")).await.status(),
        StatusCode::OK
    );
    let (s, again) = cancel(&sb, "run").await;
    assert_eq!(
        (s, again["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (s, body) = cancel(&sb, "fin").await;
    assert_eq!(
        (s, body),
        (
            StatusCode::CONFLICT,
            json!({ "error": "batch_not_cancellable", "status": "completed" })
        )
    );
    let (s, body) = cancel(&sb, "nope").await;
    assert_eq!(
        (s, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Batch not found"))
    );
    let resp = client()
        .post(format!("{}/v1/batches/run/cancel", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, listed) = get_json(&format!("{}/v1/batches?status=cancelled", sb.base_url())).await;
    assert_eq!(listed["data"][0]["id"], "run");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(sb.stats().cancel_requests, 5);
    // The change feed gives the cancellation as the item's latest change, and only that.
    let changed = get_json(&feed).await.1;
    let ids: Vec<&str> = changed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["late"]);
    sb.stop().await;
}
