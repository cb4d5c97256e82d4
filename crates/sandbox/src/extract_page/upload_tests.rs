//! Tests of the submit flow over real HTTP: `POST /v1/files`, the presigned `PUT`,
//! `GET /v1/files/{id}`, `POST /v1/batches` (idempotency, quota, error forms) and the created
//! batch's life in the listing, the detail, the change feed and the result endpoint.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::tests::*;
use super::{Delivery, Sandbox};

const TEXT: &str = "Invoice 42\nTotal due: 1 234,50 €\nThank you.";

async fn post(
    sb: &Sandbox,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = client()
        .post(format!("{}{path}", sb.base_url()))
        .header("X-API-KEY", KEY)
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, json(resp).await)
}

async fn create_file(sb: &Sandbox, size: usize) -> Value {
    let (status, file) = post(
        sb,
        "/v1/files",
        &json!({ "size_bytes": size }).to_string(),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    file
}

async fn put(url: &str, bytes: &[u8], headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut req = client().put(url).body(bytes.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// A file with `bytes` uploaded; returns its id.
async fn uploaded(sb: &Sandbox, bytes: &[u8]) -> String {
    let file = create_file(sb, bytes.len()).await;
    let (status, text) = put(file["upload"]["url"].as_str().unwrap(), bytes, &[]).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    file["id"].as_str().unwrap().to_owned()
}

fn batch_body(ids: &[&str]) -> String {
    json!({ "file_ids": ids }).to_string()
}

#[tokio::test]
async fn upload_then_batch_runs_to_a_result_made_from_the_bytes() {
    let sb = start(spec(vec![batch(
        "old",
        600,
        vec![done("i", Delivery::Inline)],
    )]))
    .await;
    let req =
        json!({ "size_bytes": TEXT.len(), "filename": "inv.txt", "content_type": "text/plain" });
    let (status, file) = post(&sb, "/v1/files", &req.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(file["object"], "file");
    assert_eq!(file["status"], "pending_upload");
    assert_eq!(file["size_bytes"], TEXT.len());
    assert_eq!(file["filename"], "inv.txt");
    assert_eq!(file["upload"]["method"], "PUT");
    let id = file["id"].as_str().unwrap();
    assert!(id.starts_with("file_"));
    let url = file["upload"]["url"].as_str().unwrap();
    assert!(url.starts_with(&sb.object_store_url()) && url.contains("X-Amz-Signature="));
    for key in ["customer_id", "created_at", "expires_at"] {
        assert!(file[key].is_string(), "{key}");
    }
    assert_eq!(put(url, TEXT.as_bytes(), &[]).await.0, StatusCode::OK);
    let (status, shown) = get_json(&format!("{}/v1/files/{id}", sb.base_url())).await;
    assert_eq!(status, StatusCode::OK);
    let sha = hex::encode(Sha256::digest(TEXT.as_bytes()));
    assert_eq!(shown["status"], "uploaded");
    assert_eq!(shown["sha256"], sha);

    let req = json!({ "file_ids": [id], "engine": "fast", "metadata": { "source": "drop" } });
    let (status, created) = post(&sb, "/v1/batches", &req.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["object"], "batch");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["total_items"], 1);
    assert_eq!(created["counts"]["pending"], 1);
    assert_eq!(created["engine"], "fast");
    assert_eq!(created["metadata"]["source"], "drop");
    assert!(created.get("items").is_none());
    let bid = created["id"].as_str().unwrap().to_owned();

    let (_, list) = get_json(&format!("{}/v1/batches", sb.base_url())).await;
    assert_eq!(list["data"][0]["id"], bid.as_str(), "newest first");
    assert_eq!(list["data"][1]["id"], "old");
    let detail_url = format!("{}/v1/batches/{}", sb.base_url(), enc(&bid));
    let (status, detail) = get_json(&detail_url).await;
    assert_eq!(status, StatusCode::OK);
    let item = &detail["items"][0];
    assert_eq!(item["file_id"], id);
    assert_eq!(item["position"], 0);
    let iid = item["id"].as_str().unwrap().to_owned();
    let cursor = detail["next_cursor"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = vec![item["status"].as_str().unwrap().to_owned()];
    loop {
        let (_, d) = get_json(&format!("{detail_url}?cursor={cursor}")).await;
        if let Some(it) = d["items"].as_array().unwrap().first() {
            seen.push(it["status"].as_str().unwrap().to_owned());
        }
        if d["status"] == "completed" {
            assert_eq!(d["counts"]["succeeded"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.first().unwrap(), "pending");
    assert_eq!(seen.last().unwrap(), "succeeded");

    let resp = get(&result_url(&sb, &bid, &iid)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().await.unwrap();
    let expected = sb.expected(&bid, &iid).unwrap();
    assert_eq!(
        expected,
        (hex::encode(Sha256::digest(&body)), body.len() as u64)
    );
    assert_eq!(fetch_result(&sb, &bid, &iid).await, expected);
    let result: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(result["chunks"][0]["page_content"], TEXT);
    assert_eq!(result["chunks"][0]["page_no"], 1);
    assert_eq!(result["input_sha256"], sha);

    let stats = sb.stats();
    assert_eq!(
        (stats.files_created, stats.uploads, stats.batches_created),
        (1, 1, 1)
    );
    assert_eq!(stats.idempotent_replays, 0);
    assert_eq!(stats.store_requests_with_credentials, 0);
    sb.stop().await;
}

#[tokio::test]
async fn upload_with_credentials_is_counted_and_wrong_lengths_are_400() {
    let sb = start(spec(vec![])).await;
    let file = create_file(&sb, 5).await;
    let url = file["upload"]["url"].as_str().unwrap();
    for bytes in [&b"1234"[..], b"123456", b""] {
        let (status, text) = put(url, bytes, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", bytes.len());
        assert!(text.contains("<Error><Code>"), "{text}");
    }
    let id = file["id"].as_str().unwrap();
    let (status, body) = post(&sb, "/v1/batches", &batch_body(&[id]), &[]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({ "error": "file_not_uploaded", "file_ids": [id] })
    );
    assert_eq!(sb.stats().store_requests_with_credentials, 0);
    let (status, _) = put(url, b"12345", &[("X-API-KEY", KEY)]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "still stored, so the leak is visible"
    );
    let stats = sb.stats();
    assert_eq!(stats.store_requests_with_credentials, 1);
    assert_eq!(stats.uploads, 1);
    sb.stop().await;
}

#[tokio::test]
async fn idempotency_key_replays_the_same_batch() {
    let sb = start(spec(vec![])).await;
    let id = uploaded(&sb, b"hello").await;
    let key = [("Idempotency-Key", "drop-1")];
    let (s1, a) = post(&sb, "/v1/batches", &batch_body(&[&id]), &key).await;
    let (s2, b) = post(&sb, "/v1/batches", &batch_body(&[&id]), &key).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a["id"], b["id"]);
    let stats = sb.stats();
    assert_eq!((stats.batches_created, stats.idempotent_replays), (1, 1));
    let (_, list) = get_json(&format!("{}/v1/batches", sb.base_url())).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let other = [("Idempotency-Key", "drop-2")];
    let (_, c) = post(&sb, "/v1/batches", &batch_body(&[&id]), &other).await;
    assert_ne!(a["id"], c["id"]);
    assert_eq!(sb.stats().batches_created, 2);
    sb.stop().await;
}

/// Listings are newest first and a cursor is a (created_at, id) position, not an offset: a batch
/// created after page 1 was fetched comes before the cursor, so the walk neither repeats nor
/// skips one.
#[tokio::test]
async fn a_cursor_from_before_a_new_batch_still_continues_where_it_was() {
    let sb = start(spec(vec![
        batch("old", 7200, vec![done("o", Delivery::Inline)]),
        batch("mid", 3600, vec![done("m", Delivery::Inline)]),
    ]))
    .await;
    let list = format!("{}/v1/batches?limit=1", sb.base_url());
    let (_, first) = get_json(&list).await;
    assert_eq!(first["data"][0]["id"], "mid");
    let cursor = enc(first["next_cursor"].as_str().unwrap());
    let id = uploaded(&sb, b"late").await;
    let (_, new) = post(&sb, "/v1/batches", &batch_body(&[&id]), &[]).await;
    let (_, next) = get_json(&format!("{list}&cursor={cursor}")).await;
    assert_eq!(next["data"][0]["id"], "old");
    assert!(next["next_cursor"].is_null());
    let (_, now_first) = get_json(&list).await;
    assert_eq!(now_first["data"][0]["id"], new["id"]);
    sb.stop().await;
}

#[tokio::test]
async fn error_forms_404_409_422_413_402_401() {
    let sb = start(spec(vec![])).await;
    let id = uploaded(&sb, b"abc").await;
    let pending = create_file(&sb, 3).await["id"].as_str().unwrap().to_owned();

    let (status, body) = post(&sb, "/v1/batches", &batch_body(&[&id, "file_abc123"]), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({ "error": "file_not_found", "file_ids": ["file_abc123"] })
    );
    let (status, body) = post(&sb, "/v1/batches", &batch_body(&[&pending, &id]), &[]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["file_ids"], json!([pending]));
    let (status, _) = get_json(&format!("{}/v1/files/file_nope", sb.base_url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let long = "x".repeat(513);
    let cases: [(&str, &str, Value, &str); 7] = [
        (
            "/v1/batches",
            "{\"file_ids\":[]}",
            json!(["body", "file_ids"]),
            "too_short",
        ),
        ("/v1/batches", "{}", json!(["body", "file_ids"]), "missing"),
        (
            "/v1/batches",
            "{\"file_ids\":\"x\"}",
            json!(["body", "file_ids"]),
            "list_type",
        ),
        ("/v1/files", "{}", json!(["body", "size_bytes"]), "missing"),
        (
            "/v1/files",
            "{\"size_bytes\":0}",
            json!(["body", "size_bytes"]),
            "greater_than",
        ),
        (
            "/v1/files",
            "{\"size_bytes\":\"a\"}",
            json!(["body", "size_bytes"]),
            "int_type",
        ),
        ("/v1/files", "not json", json!(["body"]), "json_invalid"),
    ];
    for (path, body, loc, kind) in cases {
        let (status, resp) = post(&sb, path, body, &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}");
        let got = &resp["detail"][0]["loc"];
        if kind == "json_invalid" {
            // FastAPI gives the character position of the decode error.
            assert!(got[0] == "body" && got[1].is_u64(), "{resp}");
        } else {
            assert_eq!(*got, loc, "{resp}");
        }
        assert_eq!(resp["detail"][0]["type"], kind, "{resp}");
        assert!(resp["detail"][0]["msg"].is_string());
    }
    let req = json!({ "size_bytes": 1, "filename": long }).to_string();
    let (status, resp) = post(&sb, "/v1/files", &req, &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(resp["detail"][0]["type"], "string_too_long");

    let over = json!({ "size_bytes": 100 * 1024 * 1024 + 1 }).to_string();
    assert_eq!(
        post(&sb, "/v1/files", &over, &[]).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    sb.set_max_upload_bytes(10);
    let (status, resp) = post(&sb, "/v1/files", "{\"size_bytes\":11}", &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp["detail"].is_string());
    assert_eq!(
        post(&sb, "/v1/files", "{\"size_bytes\":10}", &[]).await.0,
        StatusCode::OK
    );

    sb.set_quota(1);
    let key = [("Idempotency-Key", "q")];
    let (status, first) = post(&sb, "/v1/batches", &batch_body(&[&id]), &key).await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = post(&sb, "/v1/batches", &batch_body(&[&id]), &[]).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(resp, json!({ "detail": "Quota exceeded" }));
    let (status, replay) = post(&sb, "/v1/batches", &batch_body(&[&id]), &key).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a replay creates nothing, so costs no quota"
    );
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(sb.stats().batches_created, 1);

    for path in ["/v1/files", "/v1/batches"] {
        let resp = client()
            .post(format!("{}{path}", sb.base_url()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(sb.stats().unauthorized, 2);
    sb.stop().await;
}

#[tokio::test]
async fn expired_or_tampered_upload_urls_are_403() {
    let sb = start(spec(vec![])).await;
    let url = create_file(&sb, 3).await["upload"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = if url.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &url[..url.len() - 1]);
    let (status, text) = put(&tampered, b"abc", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    sb.stop().await;

    let mut s = spec(vec![]);
    s.presign_ttl = Duration::ZERO;
    let sb = start(s).await;
    let file = create_file(&sb, 3).await;
    let (status, text) = put(file["upload"]["url"].as_str().unwrap(), b"abc", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("<Code>AccessDenied</Code><Message>Request has expired</Message>"));
    let (_, shown) = get_json(&format!(
        "{}/v1/files/{}",
        sb.base_url(),
        file["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(shown["status"], "pending_upload");
    assert_eq!(sb.stats().uploads, 0);
    sb.stop().await;
}
