//! PerfectParser webhooks over real HTTP: the `/v1/webhooks` API as documented, and signed
//! deliveries to a loopback receiver when documents finish, when asked for a test event, and
//! none once deleted or while delivery is off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use super::tests::*;
use super::*;

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver on loopback that records every POST and answers 200; its URL.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |h: HeaderMap, b: Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push((h, b));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("X-API-Key", KEY);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn signed_by(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let sig = headers["x-perfectparser-signature"].to_str().unwrap();
    mac.verify_slice(&hex::decode(sig).unwrap()).is_ok()
}

async fn wait_for(got: &Received, n: usize) {
    for _ in 0..400 {
        if got.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{n} deliveries never arrived");
}

#[tokio::test]
async fn finished_documents_are_delivered_signed_and_deleted_webhooks_stop() {
    let spec = PerfectSpec::new(
        KEY,
        vec![ext(
            "ext_w",
            5,
            vec![
                doc("doc_a", 0.3, DocOutcome::Completed),
                doc("doc_b", 0.6, DocOutcome::Failed),
            ],
        )],
    );
    let sb = start(spec).await;
    let (url, got) = receiver().await;
    let base = format!("{}/v1/webhooks", sb.base_url());
    let (status, bad) = call(reqwest::Method::POST, &base, Some(json!({"url": url}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["code"], "INVALID_PAYLOAD");
    let (status, created) = call(
        reqwest::Method::POST,
        &base,
        Some(json!({"url": url, "events": WEBHOOK_EVENTS, "secret": "static-secret"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let hook = &created["webhook"];
    let secret = hook["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wh_sec_"));
    let id = hook["webhook_id"].as_str().unwrap().to_owned();
    let (_, listed) = call(reqwest::Method::GET, &base, None).await;
    assert_eq!(listed["webhooks"][0]["webhook_id"], id.as_str());
    assert!(
        listed["webhooks"][0].get("signing_secret").is_none(),
        "the secret is shown only once"
    );

    // Two documents, then the extraction.
    wait_for(&got, 3).await;
    let deliveries = got.lock().unwrap().clone();
    for (h, b) in &deliveries {
        assert!(signed_by(&secret, h, b), "signed with the signing secret");
        assert!(!signed_by("wh_sec_wrong", h, b));
        assert_eq!(h["x-webhook-secret"], "static-secret");
    }
    let bodies: Vec<Value> = deliveries
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    let doc_a = bodies
        .iter()
        .find(|v| v["document_id"] == "doc_a")
        .expect("doc_a delivered");
    assert_eq!(doc_a["event"], "extraction.document_completed");
    assert_eq!(doc_a["extraction_id"], "ext_w");
    assert!(
        bodies
            .iter()
            .any(|v| v["event"] == "extraction.job_completed" && v["document_id"].is_null())
    );
    let log = sb.webhook_deliveries();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d.status == Some(200) && !d.dropped));

    // The test event, then the deletion: nothing more arrives.
    let (status, tested) = call(reqwest::Method::POST, &format!("{base}/{id}/test"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tested["delivery"]["success"], true);
    let (_, last) = got.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&last).unwrap()["test"],
        true
    );
    let (_, one) = call(reqwest::Method::GET, &format!("{base}/{id}"), None).await;
    assert_eq!(one["webhook"]["deliveries"].as_array().unwrap().len(), 4);
    let (status, _) = call(reqwest::Method::DELETE, &format!("{base}/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(reqwest::Method::GET, &format!("{base}/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sb.stop().await;
}

#[tokio::test]
async fn deliveries_switched_off_are_recorded_as_dropped_and_never_sent() {
    let spec = PerfectSpec::new(
        KEY,
        vec![ext(
            "ext_d",
            5,
            vec![doc("doc_a", 0.3, DocOutcome::Completed)],
        )],
    );
    let sb = start(spec).await;
    sb.set_webhook_delivery(false);
    let (url, got) = receiver().await;
    let base = format!("{}/v1/webhooks", sb.base_url());
    let events = json!(["extraction.document_completed"]);
    let (status, _) = call(
        reqwest::Method::POST,
        &base,
        Some(json!({"url": url, "events": events})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for _ in 0..200 {
        if !sb.webhook_deliveries().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let log = sb.webhook_deliveries();
    assert_eq!(log.len(), 1, "only the subscribed event: {log:?}");
    assert!(log[0].dropped && log[0].status.is_none());
    assert!(got.lock().unwrap().is_empty());
    sb.stop().await;
}
