use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn ext(id: &str) -> BatchId {
    BatchId::parse(id).unwrap()
}

fn doc(id: &str) -> ItemId {
    ItemId::parse(id).unwrap()
}

fn docs(ids: &[&str], size: usize) -> Vec<(ItemId, Bytes)> {
    ids.iter()
        .map(|i| (doc(i), Bytes::from(format!("{i:-<size$}"))))
        .collect()
}

fn url() -> url::Url {
    url::Url::parse("http://pp.test/v1/extractions/ext_a/results").unwrap()
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch_and_each_body_is_handed_out_once() {
    let cache = Arc::new(BulkCache::default());
    let fetches = Arc::new(AtomicUsize::new(0));
    let ids = ["d0", "d1", "d2", "d3", "d4"];
    let tasks: Vec<_> = ids
        .iter()
        .map(|i| {
            let (cache, fetches, i) = (cache.clone(), fetches.clone(), (*i).to_owned());
            tokio::spawn(async move {
                cache
                    .take(&ext("ext_a"), &doc(&i), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        docs(&["d0", "d1", "d2", "d3", "d4"], 8)
                    })
                    .await
            })
        })
        .collect();
    for (task, i) in tasks.into_iter().zip(ids) {
        let got = task.await.unwrap().expect("served from the bulk answer");
        assert_eq!(got, Bytes::from(format!("{i:-<8}")));
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "one request for all five"
    );
    assert_eq!(cache.cached_bytes(), 0, "everything handed out is freed");
    let again = cache
        .take(&ext("ext_a"), &doc("d0"), || async {
            panic!("no second fetch")
        })
        .await;
    assert_eq!(again, None, "a body is handed out once");
}

#[tokio::test]
async fn the_cap_is_respected_and_what_does_not_fit_falls_back() {
    let cache = BulkCache::new(20, CACHE_TTL);
    let fill = || async { docs(&["d0", "d1", "d2"], 8) };
    let first = cache.take(&ext("ext_a"), &doc("d0"), fill).await;
    assert!(first.is_some());
    assert!(cache.cached_bytes() <= 20);
    let rest: Vec<_> = [
        cache.take(&ext("ext_a"), &doc("d1"), fill).await,
        cache.take(&ext("ext_a"), &doc("d2"), fill).await,
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(
        rest.len(),
        1,
        "two of three 8-byte bodies fit under 20 bytes"
    );
    let other = BulkCache::new(20, CACHE_TTL);
    let big = other
        .take(&ext("ext_b"), &doc("d0"), || async { docs(&["d0"], 21) })
        .await;
    assert_eq!(big, None, "a body over the cap is fetched alone");
    assert_eq!(other.cached_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_is_not_repeated_until_the_entry_expires() {
    let cache = BulkCache::new(1 << 20, Duration::from_secs(60));
    let fetches = AtomicUsize::new(0);
    let failing = || async {
        fetches.fetch_add(1, Ordering::SeqCst);
        Vec::new()
    };
    assert_eq!(cache.take(&ext("ext_a"), &doc("d0"), failing).await, None);
    assert_eq!(cache.take(&ext("ext_a"), &doc("d1"), failing).await, None);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    let got = cache
        .take(&ext("ext_a"), &doc("d1"), || async {
            docs(&["d1", "d2"], 4)
        })
        .await;
    assert!(got.is_some(), "a later pass asks again");
    assert_eq!(cache.cached_bytes(), 4, "d2 is held for a while");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(
        cache.cached_bytes(),
        0,
        "leftovers go when their entry expires, unasked"
    );
}

#[tokio::test]
async fn a_cancelled_fetch_is_taken_over_by_the_next_caller() {
    let cache = BulkCache::default();
    let (e, d) = (ext("ext_a"), doc("d0"));
    let stalled = cache.take(&e, &d, || async {
        std::future::pending::<Vec<(ItemId, Bytes)>>().await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(20), stalled)
            .await
            .is_err()
    );
    let got = cache.take(&e, &d, || async { docs(&["d0"], 4) }).await;
    assert!(got.is_some(), "no caller waits on a fetch nobody runs");
}

#[test]
fn doubtful_entries_of_a_bulk_answer_are_left_out() {
    let body = br#"{"extraction":{"extraction_id":"ext_a","status":"partial","documents":[
        {"document_id":"ok","status":"completed","extracted_data":{"a": [1, 2]},"error_message":null},
        {"document_id":"twice","status":"completed","extracted_data":{"v":1}},
        {"document_id":"twice","status":"completed","extracted_data":{"v":2}},
        {"document_id":"failed","status":"failed","extracted_data":null,"error_message":"bad scan"},
        {"document_id":"running","status":"processing"},
        {"document_id":"foreign","extraction_id":"ext_b","status":"completed","extracted_data":{}},
        {"status":"completed","extracted_data":{}},
        "not an object"
    ]}}"#;
    let got = parse_results(body, &ext("ext_a")).unwrap();
    assert_eq!(
        got,
        vec![(doc("ok"), Bytes::from_static(br#"{"a": [1, 2]}"#))]
    );
    assert!(
        parse_results(body, &ext("ext_b")).is_err(),
        "another extraction"
    );
    assert!(parse_results(b"{\"extraction\":", &ext("ext_a")).is_err());
    assert!(parse_results(b"[]", &ext("ext_a")).is_err());
}

#[test]
fn a_document_answer_yields_the_same_bytes_as_its_bulk_entry() {
    let data = r#"{"chunks":[{"page_content":"x","page_no":1}],"n":1.50}"#;
    let one = format!(
        r#"{{"document":{{"extraction_id":"ext_a","document_id":"d0","filename":"d0.pdf","file_type":"application/pdf","file_size":9,"status":"completed","confidence":0.9,"extracted_data":{data},"error_message":null}}}}"#
    );
    let all = format!(
        r#"{{"extraction":{{"extraction_id":"ext_a","documents":[{{"document_id":"d0","status":"completed","confidence":0.9,"extracted_data":{data}}}]}}}}"#
    );
    let (e, d) = (ext("ext_a"), doc("d0"));
    let from_one = document_data(one.as_bytes(), &e, &d, &url()).unwrap();
    let from_all = parse_results(all.as_bytes(), &e).unwrap();
    assert_eq!(from_one, Bytes::from(data));
    assert_eq!(from_all, vec![(d.clone(), from_one)]);
}

#[test]
fn a_document_answer_that_is_not_the_document_asked_for_is_refused() {
    let (e, d) = (ext("ext_a"), doc("d0"));
    let answer = |ext: &str, id: &str, status: &str, data: &str| {
        format!(
            r#"{{"document":{{"extraction_id":"{ext}","document_id":"{id}","status":"{status}","extracted_data":{data}}}}}"#
        )
    };
    let err = |body: String| document_data(body.as_bytes(), &e, &d, &url()).unwrap_err();
    assert!(matches!(
        err(answer("ext_a", "d1", "completed", "{}")),
        ProviderError::Malformed { .. }
    ));
    assert!(matches!(
        err(answer("ext_b", "d0", "completed", "{}")),
        ProviderError::Malformed { .. }
    ));
    assert!(matches!(
        err(answer("ext_a", "d0", "processing", "null")),
        ProviderError::NotReady { .. }
    ));
    let empty = err(answer("ext_a", "d0", "completed", "null"));
    assert!(empty.to_string().contains("no extracted_data"), "{empty}");
    assert!(matches!(
        document_data(b"<html>", &e, &d, &url()),
        Err(ProviderError::Malformed { .. })
    ));
}
