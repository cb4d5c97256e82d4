//! Tests of the sandbox against the published extract.page contract, over real HTTP, and the
//! helpers the object-store tests share.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{CONTENT_LENGTH, LOCATION, RETRY_AFTER};
use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

pub(crate) const KEY: &str = "test-key";

pub(crate) fn item(id: &str, finishes_at: f64, outcome: Outcome, delivery: Delivery) -> ItemSpec {
    ItemSpec {
        id: id.to_owned(),
        finishes_at,
        outcome,
        result_bytes: 3000,
        delivery,
    }
}

pub(crate) fn done(id: &str, delivery: Delivery) -> ItemSpec {
    item(id, -60.0, Outcome::Succeeded, delivery)
}

pub(crate) fn batch(id: &str, created_ago: u64, items: Vec<ItemSpec>) -> BatchSpec {
    BatchSpec {
        id: id.to_owned(),
        created_ago: Duration::from_secs(created_ago),
        items,
    }
}

pub(crate) fn spec(batches: Vec<BatchSpec>) -> SandboxSpec {
    SandboxSpec {
        api_key: KEY.to_owned(),
        seed: 42,
        batches,
        time_scale: 1.0,
        retention: Duration::from_secs(3 * 24 * 3600),
        presign_ttl: Duration::from_secs(300),
        result_delay: Duration::ZERO,
    }
}

pub(crate) async fn start(spec: SandboxSpec) -> Sandbox {
    Sandbox::start(spec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Never follows redirects and sends no credentials unless asked.
pub(crate) fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

pub(crate) fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub(crate) fn result_url(sb: &Sandbox, b: &str, i: &str) -> String {
    format!(
        "{}/v1/batches/{}/items/{}/result",
        sb.base_url(),
        enc(b),
        enc(i)
    )
}

pub(crate) async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("X-API-KEY", KEY)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn get_json(url: &str) -> (StatusCode, Value) {
    let resp = get(url).await;
    let status = resp.status();
    (status, json(resp).await)
}

pub(crate) async fn json(resp: reqwest::Response) -> Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// Fetches a result, following a 302 without credentials; returns (sha256 hex, length).
pub(crate) async fn fetch_result(sb: &Sandbox, b: &str, i: &str) -> (String, u64) {
    let mut resp = get(&result_url(sb, b, i)).await;
    if resp.status() == StatusCode::FOUND {
        let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(location.starts_with(&sb.object_store_url()), "{location}");
        resp = client().get(&location).send().await.unwrap();
    }
    assert_eq!(resp.status(), StatusCode::OK);
    let declared: u64 = resp.headers()[CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(declared, body.len() as u64);
    serde_json::from_slice::<Value>(&body).expect("result is JSON")["chunks"][0]["page_content"]
        .as_str()
        .expect("documented result schema");
    (hex::encode(Sha256::digest(&body)), body.len() as u64)
}

#[tokio::test]
async fn missing_or_wrong_key_is_401() {
    let sb = start(spec(vec![batch(
        "b",
        60,
        vec![done("i", Delivery::Inline)],
    )]))
    .await;
    let url = format!("{}/v1/batches", sb.base_url());
    for key in [None, Some("nope")] {
        let mut req = client().get(&url);
        if let Some(key) = key {
            req = req.header("X-API-KEY", key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body = json(resp).await;
        assert_eq!(
            body,
            serde_json::json!({"detail": "Invalid or missing API key"})
        );
    }
    assert_eq!(sb.stats().unauthorized, 2);
    assert_eq!(get_json(&url).await.0, StatusCode::OK);
    sb.stop().await;
}

#[tokio::test]
async fn bad_limits_and_cursors_are_fastapi_422() {
    let sb = start(spec(vec![batch(
        "b",
        60,
        vec![done("i", Delivery::Inline)],
    )]))
    .await;
    let base = sb.base_url();
    let cases = [
        ("/v1/batches?limit=0", "greater_than_equal", Some(("ge", 1))),
        (
            "/v1/batches?limit=201",
            "less_than_equal",
            Some(("le", 200)),
        ),
        ("/v1/batches?limit=x", "int_parsing", None),
        (
            "/v1/batches/b?limit=501",
            "less_than_equal",
            Some(("le", 500)),
        ),
        (
            "/v1/batches/b?limit=0",
            "greater_than_equal",
            Some(("ge", 1)),
        ),
    ];
    for (path, kind, ctx) in cases {
        let (status, body) = get_json(&format!("{base}{path}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        let e = &body["detail"][0];
        assert_eq!(e["loc"], serde_json::json!(["query", "limit"]), "{path}");
        assert_eq!(e["type"], kind, "{path}");
        assert!(e["msg"].as_str().unwrap().starts_with("Input should be"));
        assert!(e["input"].is_string());
        match ctx {
            Some((k, v)) => assert_eq!(e["ctx"][k], v, "{path}"),
            None => assert!(e.get("ctx").is_none()),
        }
    }
    assert_eq!(
        get_json(&format!("{base}/v1/batches?limit=201")).await.1["detail"][0]["msg"],
        "Input should be less than or equal to 200"
    );
    for path in ["/v1/batches?cursor=%21%21", "/v1/batches/b?cursor=Zm9v"] {
        let (status, body) = get_json(&format!("{base}{path}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(
            body["detail"][0]["loc"],
            serde_json::json!(["query", "cursor"])
        );
    }
    for limit in [1, 200] {
        let url = format!("{base}/v1/batches?limit={limit}");
        assert_eq!(get_json(&url).await.0, StatusCode::OK);
    }
    sb.stop().await;
}

#[tokio::test]
async fn paging_returns_every_batch_once_newest_first() {
    let sb = start(SandboxSpec {
        api_key: KEY.to_owned(),
        ..SandboxSpec::generated(7, 2, 500, 3)
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/v1/batches?limit=3", sb.base_url());
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", enc(c)));
        }
        let (status, body) = get_json(&url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["object"], "list");
        pages += 1;
        for b in body["data"].as_array().unwrap() {
            assert_eq!(b["object"], "batch");
            for key in [
                "counts",
                "total_items",
                "engine",
                "options",
                "created_at",
                "expires_at",
            ] {
                assert!(b.get(key).is_some(), "missing {key}");
            }
            assert!(b["created_at"].as_str().unwrap().ends_with('Z'));
            seen.push((
                b["created_at"].as_str().unwrap().to_owned(),
                b["id"].clone(),
            ));
        }
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("bad cursor {other}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 7);
    assert_eq!(seen[0].1, "batch_000007");
    assert!(seen.windows(2).all(|w| w[0].0 > w[1].0), "newest first");
    let url = format!("{}/v1/batches?status=running", sb.base_url());
    let running = get_json(&url).await.1;
    assert_eq!(running["data"].as_array().unwrap().len(), 1);
    assert_eq!(running["data"][0]["id"], "batch_000007");
    assert_eq!(sb.stats().list_requests, 4);
    sb.stop().await;
}

#[tokio::test]
async fn change_feed_returns_only_changed_items() {
    let mut s = spec(vec![batch(
        "b",
        600,
        vec![
            done("a", Delivery::Inline),
            item("b", 4.0, Outcome::Succeeded, Delivery::Inline),
            item("c", 10_000.0, Outcome::Succeeded, Delivery::Inline),
        ],
    )]);
    s.time_scale = 5.0; // "b" runs from 0.4 s and succeeds at 0.8 s of real time
    let sb = start(s).await;
    let url = format!("{}/v1/batches/b", sb.base_url());
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, first) = get_json(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["status"], "running");
    assert_eq!(ids(&first), ["b", "c", "a"], "ascending (updated_at, id)");
    assert_eq!(first["items"][2]["status"], "succeeded");
    assert_eq!(first["items"][0]["object"], "batch_item");
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();

    let (_, quiet) = get_json(&format!("{url}?cursor={}", enc(&cursor))).await;
    assert!(ids(&quiet).is_empty());
    assert_eq!(
        quiet["next_cursor"],
        cursor.as_str(),
        "same cursor when nothing changed"
    );

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, later) = get_json(&format!("{url}?cursor={}", enc(&cursor))).await;
    assert_eq!(ids(&later), ["b"]);
    assert_eq!(later["items"][0]["status"], "succeeded");
    assert_eq!(later["items"][0]["attempts"], 1);
    assert!(later["items"][0]["page_count"].as_u64().unwrap() >= 1);
    let next = later["next_cursor"].as_str().unwrap();
    assert_ne!(next, cursor);

    // Paging the feed one item at a time visits each item once.
    let mut seen = Vec::new();
    let mut c: Option<String> = None;
    loop {
        let q = c
            .as_ref()
            .map(|c| format!("&cursor={}", enc(c)))
            .unwrap_or_default();
        let (_, page) = get_json(&format!("{url}?limit=1{q}")).await;
        if ids(&page).is_empty() {
            break;
        }
        seen.extend(ids(&page));
        c = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ["c", "a", "b"]);
    sb.stop().await;
}

#[tokio::test]
async fn result_is_409_until_succeeded_then_200() {
    let mut s = spec(vec![batch(
        "b",
        60,
        vec![
            item("soon", 1.5, Outcome::Succeeded, Delivery::Inline),
            item("bad", -30.0, Outcome::Failed, Delivery::Inline),
            done("once", Delivery::Inline),
        ],
    )]);
    s.time_scale = 2.0; // "soon" succeeds after 0.75 s of real time
    let sb = start(s).await;
    let (status, body) = get_json(&result_url(&sb, "b", "soon")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        serde_json::json!({"error": "result_not_ready", "status": "running"})
    );
    let (status, body) = get_json(&result_url(&sb, "b", "bad")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["status"], "failed");
    let (status, body) = get_json(&result_url(&sb, "b", "nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Batch or item not found");
    assert_eq!(
        get_json(&format!("{}/v1/batches/zz", sb.base_url()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    sb.push_fault(Fault::NotReadyOnce {
        batch: "b".into(),
        item: "once".into(),
    });
    assert_eq!(
        get(&result_url(&sb, "b", "once")).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        fetch_result(&sb, "b", "once").await,
        sb.expected("b", "once").unwrap()
    );

    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        fetch_result(&sb, "b", "soon").await,
        sb.expected("b", "soon").unwrap()
    );
    assert_eq!(sb.expected("b", "bad"), None);
    let stats = sb.stats();
    assert_eq!(
        stats.result_requests[&("b".to_owned(), "soon".to_owned())],
        2
    );
    assert_eq!(
        stats.result_requests[&("b".to_owned(), "once".to_owned())],
        2
    );
    sb.stop().await;
}

#[tokio::test]
async fn result_is_410_after_retention() {
    let mut s = spec(vec![batch(
        "b",
        4 * 3600,
        vec![
            item("old", -7200.0, Outcome::Succeeded, Delivery::Redirect),
            done("new", Delivery::Inline),
        ],
    )]);
    s.retention = Duration::from_secs(3600);
    let sb = start(s).await;
    let (status, body) = get_json(&result_url(&sb, "b", "old")).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["detail"], "Result expired");
    assert_eq!(
        get(&result_url(&sb, "b", "new")).await.status(),
        StatusCode::OK
    );
    sb.stop().await;
}

#[tokio::test]
async fn status_fault_is_served_once_before_auth() {
    let sb = start(spec(vec![batch(
        "b",
        60,
        vec![done("i", Delivery::Inline)],
    )]))
    .await;
    let url = format!("{}/v1/batches", sb.base_url());
    sb.push_fault(Fault::Status {
        path_prefix: "/v1/batches".into(),
        status: 429,
        retry_after: Some("7".into()),
    });
    let resp = get(&url).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[RETRY_AFTER], "7");
    assert!(json(resp).await["detail"].is_string());
    assert_eq!(get(&url).await.status(), StatusCode::OK);

    sb.push_fault(Fault::Status {
        path_prefix: "/elsewhere".into(),
        status: 500,
        retry_after: None,
    });
    sb.push_fault(Fault::Status {
        path_prefix: "/".into(),
        status: 503,
        retry_after: None,
    });
    let resp = client().get(&url).send().await.unwrap(); // no key: the fault comes first
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get(RETRY_AFTER).is_none());
    assert_eq!(get(&url).await.status(), StatusCode::OK);

    let statuses: Vec<u16> = sb.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 503, 200]);
    assert_eq!(sb.stats().list_requests, 4);
    assert_eq!(sb.stats().unauthorized, 0);
    sb.stop().await;
}

#[tokio::test]
async fn hostile_ids_round_trip() {
    let long = "z".repeat(300);
    let items = [
        "a/b",
        ".hidden",
        "ünï©ødé ?#%&+",
        long.as_str(),
        "../../etc/passwd",
    ];
    let specs = items
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let delivery = if n % 2 == 0 {
                Delivery::Inline
            } else {
                Delivery::Redirect
            };
            done(id, delivery)
        })
        .collect();
    let sb = start(spec(vec![batch("../x", 600, specs)])).await;
    let (status, list) = get_json(&format!("{}/v1/batches", sb.base_url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], "../x");
    let (status, detail) = get_json(&format!("{}/v1/batches/{}", sb.base_url(), enc("../x"))).await;
    assert_eq!(status, StatusCode::OK);
    let mut listed: Vec<&str> = detail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut wanted = items.to_vec();
    wanted.sort_unstable();
    assert_eq!(listed, wanted);
    for id in items {
        assert_eq!(
            fetch_result(&sb, "../x", id).await,
            sb.expected("../x", id).unwrap(),
            "{id}"
        );
        assert_eq!(
            sb.stats().result_requests[&("../x".to_owned(), id.to_owned())],
            1
        );
    }
    assert_eq!(sb.stats().store_downloads.len(), 2);
    sb.stop().await;
}

#[tokio::test]
async fn result_delay_holds_the_body_back() {
    let mut s = spec(vec![batch("b", 600, vec![done("i", Delivery::Inline)])]);
    s.result_delay = Duration::from_millis(300);
    let sb = start(s).await;
    let started = std::time::Instant::now();
    let resp = get(&result_url(&sb, "b", "i")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body.len() as u64, sb.expected("b", "i").unwrap().1);
    sb.stop().await;
}
