//! The PerfectParser router held to `providers.md` §4, its failing list pages (with and without
//! `since`), and the account, parser and extraction-export routes, over real HTTP.

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use super::super::route_check::{
    DocRoute, ListForms, Probe, assert_table_covers_doc, check_list_faults, served,
};
use super::tests::*;
use super::*;

/// providers.md §4.2 "Endpoints", and the webhook routes of §4.3.
const ROUTES: &[DocRoute] = &[
    served("POST", "/v1/extractions"),
    served("GET", "/v1/extractions"),
    served("GET", "/v1/extractions/:id"),
    served("GET", "/v1/extractions/:id/results"),
    served("GET", "/v1/extractions/:id/documents/:document_id"),
    served("GET", "/v1/extractions/:id/export"),
    served("GET", "/v1/extractions/:id/documents/:document_id/export"),
    served("GET", "/v1/me"),
    served("GET", "/v1/credits"),
    served("GET", "/v1/parsers/:id"),
    served("POST", "/v1/parsers"),
    served("GET", "/v1/webhooks"),
    served("POST", "/v1/webhooks"),
    served("GET", "/v1/webhooks/:id"),
    served("PATCH", "/v1/webhooks/:id"),
    served("POST", "/v1/webhooks/:id/test"),
    served("DELETE", "/v1/webhooks/:id"),
];

/// Paths outside the table, and methods a documented path does not take: the fallback.
const UNLISTED: &[(&str, &str)] = &[
    ("GET", "/v1/nope"),
    // "There is no top-level /v1/documents" [D P1].
    ("GET", "/v1/documents/doc_1"),
    ("DELETE", "/v1/extractions/ext_a"),
];

/// A documented route with an unknown id: the documented 404, not the fallback.
const UNKNOWN_ID: (&str, &str) = ("GET", "/v1/extractions/ext_nope");

fn is_fallback(status: StatusCode, body: &Value) -> bool {
    match status {
        StatusCode::NOT_FOUND => body["error"]["message"] == "No such route",
        // axum's own answer to a method the route does not take.
        StatusCode::METHOD_NOT_ALLOWED => true,
        _ => false,
    }
}

fn authed(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("X-API-Key", KEY)
}

#[test]
fn the_route_table_has_every_route_of_providers_md_section_4() {
    assert_table_covers_doc(ROUTES, "4");
}

#[tokio::test]
async fn every_documented_route_is_routed_and_nothing_else() {
    let sb = start(small_world()).await;
    let fill = |p: &str| {
        p.replace("/v1/parsers/:id", &format!("/v1/parsers/{DEFAULT_PARSER}"))
            .replace(":document_id", "doc_1")
            .replace(":id", "ext_a")
    };
    let probe = Probe {
        base: sb.base_url(),
        auth: &authed,
        fill: &fill,
        is_fallback: &is_fallback,
    };
    probe.assert_routes(ROUTES, UNLISTED, UNKNOWN_ID).await;
    sb.stop().await;
}

#[tokio::test]
async fn list_faults_hit_cursor_pages_with_or_without_since() {
    let mut spec = small_world();
    spec.time_scale = 0.0;
    let sb = start(spec).await;
    let base = format!("{}/v1/extractions?limit=1", sb.base_url());
    let mut n = 0;
    for first in [base.clone(), format!("{base}&since=2000-01-01T00:00:00Z")] {
        let (_, page) = get_json(&first).await;
        let cursor = page["pagination"]["next_cursor"].as_str().unwrap();
        let later = format!("{first}&cursor={cursor}");
        let forms = ListForms {
            unavailable: &|v| v["error"]["code"] == "SERVICE_UNAVAILABLE",
            reject: (400, &|v| v["error"]["code"] == "INVALID_PAYLOAD"),
        };
        n += 1 + check_list_faults(
            &|f| sb.set_list_fault(f),
            &|url| authed(reqwest::Client::new().get(url)),
            &first,
            &later,
            forms,
        )
        .await;
    }
    assert_eq!(sb.stats().list_requests, n);
    sb.stop().await;
}

/// `since` keeps only extractions updated after it, still newest-created first, and its pages
/// chain by cursor like unfiltered ones.
#[tokio::test]
async fn since_filters_by_update_and_keeps_the_creation_order() {
    let sb = start(small_world()).await;
    let base = format!("{}/v1/extractions", sb.base_url());
    let (_, all) = get_json(&base).await;
    let queued = &all["extractions"][0];
    assert_eq!(queued["extraction_id"], "ext_c");
    // ext_c has not changed since it was created; ext_a and ext_b finished a minute ago.
    // Timestamps are shown in milliseconds, so one a second later is surely after ext_c's.
    let updated = chrono::DateTime::parse_from_rfc3339(queued["updated_at"].as_str().unwrap());
    let since = (updated.unwrap() + chrono::Duration::seconds(1)).to_rfc3339();
    let since = percent_encoding::utf8_percent_encode(&since, percent_encoding::NON_ALPHANUMERIC);
    let (_, page) = get_json(&format!("{base}?limit=1&since={since}")).await;
    assert_eq!(page["extractions"][0]["extraction_id"], "ext_b");
    let cursor = page["pagination"]["next_cursor"].as_str().unwrap();
    let (_, next) = get_json(&format!("{base}?limit=1&since={since}&cursor={cursor}")).await;
    assert_eq!(next["extractions"][0]["extraction_id"], "ext_a");
    assert_eq!(next["pagination"]["has_next_page"], false);
    sb.stop().await;
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = authed(req).send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn account_parsers_and_extraction_exports() {
    let sb = start(small_world()).await;
    let url = |p: &str| format!("{}{p}", sb.base_url());
    let c = reqwest::Client::new();
    let (_, me) = send(c.get(url("/v1/me"))).await;
    let (_, credits) = send(c.get(url("/v1/credits"))).await;
    assert_eq!(me["user"]["credits_available"], DEFAULT_CREDITS);
    assert_eq!(
        me["user"]["credits_available"],
        credits["credits"]["credits_available"]
    );

    let (s, p) = send(c.get(url(&format!("/v1/parsers/{DEFAULT_PARSER}")))).await;
    assert_eq!(
        (s, p["parser"]["parser_id"].as_str()),
        (StatusCode::OK, Some(DEFAULT_PARSER))
    );
    assert_eq!(p["parser"]["fields"][0]["name"], "invoice_number");
    let (s, missing) = send(c.get(url("/v1/parsers/prs_nope"))).await;
    assert_eq!(
        (s, &missing["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("PARSER_NOT_FOUND"))
    );
    let body = json!({ "name": "Receipts", "fields": [{ "name": "total", "type": "number" }] });
    let (s, created) = send(c.post(url("/v1/parsers")).body(body.to_string())).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["parser"]["parser_id"].as_str().unwrap().to_owned();
    let (_, got) = send(c.get(url(&format!("/v1/parsers/{id}")))).await;
    assert_eq!(got, created);
    assert_eq!(
        got["parser"]["schema"]["properties"]["total"]["type"],
        "number"
    );
    let (s, bad) = send(c.post(url("/v1/parsers")).body("{}")).await;
    assert_eq!(
        (s, &bad["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_PAYLOAD"))
    );
    // A new parser is one submissions may name, and listings show its name.
    let form = Form::new().text("parser_id", id.clone()).part(
        "files",
        Part::bytes(b"%PDF-1.4 receipt".to_vec()).file_name("r.pdf"),
    );
    let (s, submitted) = send(c.post(url("/v1/extractions")).multipart(form)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{submitted}");
    let (_, listed) = send(c.get(url(&format!("/v1/extractions?parser_id={id}")))).await;
    assert_eq!(listed["extractions"][0]["parser_name"], "Receipts");

    // ext_b: doc_2 completed, doc_3 failed; only the completed one is exported.
    let (s, export) = send(c.get(url("/v1/extractions/ext_b/export?format=json"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(export["documents"].as_array().unwrap().len(), 1);
    assert_eq!(export["documents"][0]["document_id"], "doc_2");
    let csv = authed(c.get(url("/v1/extractions/ext_b/export?format=csv")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.starts_with("doc_2,")),
        "{csv}"
    );
    let (s, queued) = send(c.get(url("/v1/extractions/ext_c/export"))).await;
    assert_eq!(
        (s, &queued["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_PAYLOAD"))
    );
    let (s, _) = send(c.get(url("/v1/extractions/ext_nope/export"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let key = ("ext_b".to_owned(), String::new(), "json".to_owned());
    assert_eq!(sb.stats().export_requests.get(&key), Some(&1));
    assert_eq!(sb.stats().me_requests, 1);
    sb.stop().await;
}
