//! Tests of the Talonic sandbox against its documented contract (`providers.md` §3, seed 002),
//! over real HTTP.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

pub(super) const KEY: &str = "tlnc_test";

pub(super) fn item(id: &str, finishes_at: f64, outcome: ItemOutcome) -> TalonicItem {
    TalonicItem {
        id: id.to_owned(),
        document_id: format!("doc-{id}"),
        filename: Some(format!("{id}.pdf")),
        finishes_at,
        outcome,
        result_bytes: 3000,
    }
}

pub(super) fn batch(id: &str, created_ago: u64, items: Vec<TalonicItem>) -> TalonicBatch {
    TalonicBatch {
        id: id.to_owned(),
        created_ago: Duration::from_secs(created_ago),
        provider: "anthropic".into(),
        items,
        status_override: None,
    }
}

pub(super) fn spec(batches: Vec<TalonicBatch>) -> TalonicSpec {
    TalonicSpec {
        api_key: KEY.into(),
        seed: 5,
        batches,
        time_scale: 1.0,
        retention: Duration::from_secs(7 * 24 * 3600),
        result_delay: Duration::ZERO,
        daily_limit: None,
        quota_retry_after: false,
    }
}

pub(super) async fn start(spec: TalonicSpec) -> TalonicSandbox {
    TalonicSandbox::start(spec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub(super) async fn get(sb: &TalonicSandbox, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", sb.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
}

pub(super) async fn get_json(sb: &TalonicSandbox, path: &str) -> (StatusCode, Value) {
    let resp = get(sb, path).await;
    (resp.status(), json(resp).await)
}

pub(super) async fn json(resp: reqwest::Response) -> Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

pub(super) fn assert_envelope(v: &Value, status: u16, code: &str, retryable: bool) {
    let want: BTreeSet<String> = [
        "statusCode",
        "code",
        "error",
        "message",
        "retryable",
        "request_id",
        "timestamp",
        "path",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys(v), want, "{v}");
    assert_eq!(v["statusCode"], status);
    assert_eq!(v["code"], code);
    assert_eq!(v["retryable"], retryable);
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
}

fn reset_of(resp: &reqwest::Response) -> chrono::DateTime<chrono::FixedOffset> {
    let h = resp.headers();
    assert!(h.contains_key("x-ratelimit-limit") && h.contains_key("x-ratelimit-remaining"));
    chrono::DateTime::parse_from_rfc3339(h["x-ratelimit-reset"].to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn bearer_auth_envelope_and_rate_headers_on_every_response() {
    let sb = start(spec(vec![batch(
        "b1",
        60,
        vec![item("i", -10.0, ItemOutcome::Completed)],
    )]))
    .await;
    let url = format!("{}/v1/batches", sb.base_url());
    for auth in [None, Some("Bearer nope"), Some(KEY)] {
        let mut req = reqwest::Client::new().get(&url);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        reset_of(&resp);
        let v: Value = json(resp).await;
        assert_envelope(&v, 401, "unauthorized", false);
        assert_eq!(v["path"], "/v1/batches");
    }
    assert_eq!(sb.stats().unauthorized, 3);
    let resp = get(&sb, "/v1/batches").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(reset_of(&resp) > chrono::Utc::now());
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "99999");
    let (status, v) = get_json(&sb, "/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&v, 404, "not_found", false);
    sb.stop().await;
}

#[tokio::test]
async fn listing_pages_by_cursor_and_refuses_bad_parameters() {
    let batches = (0..7)
        .map(|k| {
            batch(
                &format!("b{k}"),
                600 + k * 60,
                vec![item(&format!("i{k}"), -5.0, ItemOutcome::Completed)],
            )
        })
        .collect();
    let sb = start(spec(batches)).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (status, v) = get_json(&sb, &format!("/v1/batches?limit=3{q}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let p = &v["pagination"];
        assert_eq!(
            keys(p),
            ["has_more", "limit", "next_cursor", "total"]
                .map(String::from)
                .into()
        );
        assert_eq!(
            (p["total"].as_u64(), p["limit"].as_u64()),
            (Some(7), Some(3))
        );
        for b in v["data"].as_array().unwrap() {
            assert!(b.get("items").is_none(), "listing entries carry no items");
            seen.push(b["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(p["has_more"], page < 2);
        match p["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["b0", "b1", "b2", "b3", "b4", "b5", "b6"],
        "newest first"
    );
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=%21%21",
        "status=archived",
    ] {
        let (status, v) = get_json(&sb, &format!("/v1/batches?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_envelope(&v, 400, "VALIDATION_ERROR", false);
    }
    let (_, v) = get_json(&sb, "/v1/batches?status=completed&limit=100").await;
    assert_eq!(v["pagination"]["total"], 7);
    sb.stop().await;
}

#[tokio::test]
async fn batch_detail_has_the_seed_fields_and_documents_lead_to_extractions() {
    let items = vec![
        item("done", -30.0, ItemOutcome::Completed),
        item("bad", -30.0, ItemOutcome::Failed),
        item("soon", 0.4, ItemOutcome::Completed),
    ];
    let sb = start(spec(vec![batch("b1", 3600, items)])).await;
    let (status, v) = get_json(&sb, "/v1/batches/b1").await;
    assert_eq!(status, StatusCode::OK);
    let want = [
        "id",
        "status",
        "provider",
        "item_count",
        "succeeded_count",
        "errored_count",
        "expired_count",
        "submitted_at",
        "completed_at",
        "error_message",
        "created_at",
        "updated_at",
        "links",
        "items",
    ];
    assert_eq!(keys(&v), want.map(String::from).into());
    assert_eq!(v["status"], "submitted");
    assert_eq!(v["links"]["self"], "/v1/batches/b1");
    assert_eq!(
        (v["item_count"].as_u64(), v["succeeded_count"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(v["errored_count"], 1);
    let item_keys = [
        "id",
        "document_id",
        "document_filename",
        "custom_id",
        "status",
        "error_message",
        "created_at",
        "processed_at",
    ];
    let items = v["items"].as_array().unwrap();
    for it in items {
        assert_eq!(keys(it), item_keys.map(String::from).into());
        let custom = it["custom_id"].as_str().unwrap();
        assert!(
            custom.starts_with("msgbatch_") && custom.contains(':'),
            "{custom}"
        );
    }
    assert_eq!(items[1]["status"], "failed");
    assert!(items[1]["error_message"].is_string());
    assert!(items[2]["processed_at"].is_null());

    let (_, doc) = get_json(&sb, "/v1/documents/doc-soon").await;
    assert!(doc["latest_extraction_id"].is_null(), "{doc}");
    let (_, failed) = get_json(&sb, "/v1/documents/doc-bad").await;
    assert!(failed["latest_extraction_id"].is_null());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = get_json(&sb, "/v1/batches/b1").await;
    assert_eq!(v["status"], "completed");
    assert!(v["completed_at"].is_string());
    for (doc_id, item_id) in [("doc-done", "done"), ("doc-soon", "soon")] {
        let (_, doc) = get_json(&sb, &format!("/v1/documents/{doc_id}")).await;
        let ext = doc["latest_extraction_id"].as_str().unwrap().to_owned();
        let resp = get(&sb, &format!("/v1/extractions/{ext}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let declared: u64 = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = resp.bytes().await.unwrap();
        assert_eq!(declared, body.len() as u64);
        let expected = sb.expected("b1", item_id).unwrap();
        assert_eq!(expected, (hex::encode(Sha256::digest(&body)), declared));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["document_id"].as_str()),
            (Some(ext.as_str()), Some(doc_id))
        );
        assert!(v["data"]["chunks"].is_array() && v["confidence"].is_f64());
    }
    assert_eq!(sb.expected("b1", "bad"), None);
    assert_eq!(
        get(&sb, "/v1/documents/nope").await.status(),
        StatusCode::NOT_FOUND
    );
    sb.stop().await;
}

#[tokio::test]
async fn past_retention_documents_and_extractions_are_404() {
    let mut s = spec(vec![batch(
        "old",
        9 * 24 * 3600,
        vec![item("x", -8.0 * 24.0 * 3600.0, ItemOutcome::Completed)],
    )]);
    s.retention = Duration::from_secs(24 * 3600);
    let sb = start(s).await;
    let (_, v) = get_json(&sb, "/v1/batches/old").await;
    assert_eq!(v["items"][0]["status"], "completed");
    let (status, v) = get_json(&sb, "/v1/documents/doc-x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&v, 404, "not_found", false);
    sb.stop().await;
}

#[tokio::test]
async fn faults_speak_the_envelope_with_or_without_retry_after() {
    let sb = start(spec(vec![batch("b1", 60, vec![])])).await;
    let mut f = TalonicFault::new("/v1/batches", 429);
    f.reset_in = Some(Duration::from_secs(2));
    sb.push_fault(f);
    let mut f = TalonicFault::new("/v1/batches", 429);
    f.retry_after = Some("3".into());
    f.code = Some("RATE_LIMIT_EXCEEDED".into());
    sb.push_fault(f);
    let mut f = TalonicFault::new("/v1/", 400);
    f.retryable = Some(true);
    f.draft = true;
    sb.push_fault(f);

    let resp = get(&sb, "/v1/batches").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let wait = reset_of(&resp).with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(wait > chrono::Duration::milliseconds(1500) && wait <= chrono::Duration::seconds(2));
    assert_envelope(&json(resp).await, 429, "rate_limited", true);

    let resp = get(&sb, "/v1/batches").await;
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_envelope(&json(resp).await, 429, "RATE_LIMIT_EXCEEDED", true);

    let (status, v) = get_json(&sb, "/v1/batches/b1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        keys(&v),
        ["code", "message", "status"].map(String::from).into()
    );
    assert_eq!(get(&sb, "/v1/batches/b1").await.status(), StatusCode::OK);
    let log = sb.request_log();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 429, 400, 200]
    );
    sb.stop().await;
}

#[tokio::test]
async fn the_daily_quota_ends_in_rate_limited() {
    for retry_after in [false, true] {
        let mut s = spec(vec![]);
        s.daily_limit = Some(2);
        s.quota_retry_after = retry_after;
        let sb = start(s).await;
        for remaining in ["1", "0"] {
            let resp = get(&sb, "/v1/batches").await;
            assert_eq!(resp.headers()["x-ratelimit-remaining"], remaining);
        }
        let resp = get(&sb, "/v1/batches").await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().contains_key("retry-after"), retry_after);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "2");
        let reset = reset_of(&resp).with_timezone(&chrono::Utc);
        assert_eq!(
            reset.time(),
            chrono::NaiveTime::MIN,
            "resets at UTC midnight"
        );
        assert_envelope(&json(resp).await, 429, "rate_limited", true);
        assert_eq!(sb.stats().rate_limited, 1);
        sb.stop().await;
    }
}

#[tokio::test]
async fn generated_mix_is_deterministic_and_as_described() {
    let a = TalonicSpec::generated(5, 20, 2000, 3);
    assert_eq!(
        format!("{a:?}"),
        format!("{:?}", TalonicSpec::generated(5, 20, 2000, 3))
    );
    let uuid_shape = |s: &str| {
        s.len() == 36
            && s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && s.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit())
    };
    assert!(a.batches.iter().all(|b| uuid_shape(&b.id)));
    assert!(
        a.batches[1]
            .items
            .iter()
            .all(|i| uuid_shape(&i.id) && uuid_shape(&i.document_id))
    );
    let oldest = a.batches[0].clone();
    let newest = a.batches[4].clone();
    let sb = start(TalonicSpec {
        api_key: KEY.into(),
        ..a
    })
    .await;
    let (_, v) = get_json(&sb, "/v1/batches?limit=100").await;
    let data = v["data"].as_array().unwrap();
    assert_eq!(data[0]["id"], newest.id.as_str());
    assert!(["accumulating", "submitted"].contains(&data[0]["status"].as_str().unwrap()));
    for b in &data[1..] {
        assert_eq!(b["status"], "completed");
    }
    assert_eq!(data[4]["id"], oldest.id.as_str());
    let doc = &oldest.items[0].document_id;
    assert_eq!(
        get(&sb, &format!("/v1/documents/{doc}")).await.status(),
        StatusCode::NOT_FOUND
    );
    sb.stop().await;
}
