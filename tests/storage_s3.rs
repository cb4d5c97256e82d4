//! The S3 storage backend against a real SeaweedFS (`scripts/services.sh start`): exactly-once
//! publishing of small and large results, concurrent publishers, bounded multipart memory,
//! abandoned uploads and their cleanup, hostile ids and credentials kept out of errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batchmirror::model::{BatchId, ItemId, ProviderName};
use batchmirror::storage::Storage;
use batchmirror::storage::s3::{
    MAX_HELD_PARTS, Outcome, PART_SIZE, S3Error, S3Published, S3Settings, S3Store,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use sha2::{Digest, Sha256};

use crate::common::services::s3_url;

const CAP: u64 = 64 * 1024 * 1024;

/// A store under a prefix of its own (`<test prefix>/<test>-<random>`), so tests running at
/// once never see each other's objects or staging area.
fn store(test: &str) -> Option<S3Store> {
    let base = s3_url()?;
    let tag: u32 = rand::random();
    let settings = S3Settings {
        url: format!("{}/{test}-{tag:08x}", base.trim_end_matches('/')),
        ..Default::default()
    };
    Some(S3Store::new(&settings).expect("S3 settings from services.env"))
}

type Chunk = Result<Bytes, std::io::Error>;

fn body(bytes: &[u8], chunk: usize) -> impl futures_util::Stream<Item = Chunk> + Unpin + use<> {
    let chunks: Vec<Chunk> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn item_rel(item: &str) -> PathBuf {
    Storage::item_path(
        &ProviderName::parse("extract_page").unwrap(),
        &BatchId::parse("batch-1").unwrap(),
        &ItemId::parse(item).unwrap(),
    )
}

/// A JSON array of about `size` bytes, distinct per `seed`.
fn big_json(size: usize, seed: u8) -> Vec<u8> {
    let mut v = b"[".to_vec();
    let mut i = 0u64;
    while v.len() < size {
        v.extend_from_slice(format!("\"{seed}-{i:012}-abcdefghijklmnopqrstuvwxyz\",").as_bytes());
        i += 1;
    }
    v.extend_from_slice(b"0]");
    v
}

async fn publish(s: &S3Store, rel: &Path, bytes: &[u8]) -> Result<S3Published, String> {
    s.write_atomic(rel, body(bytes, 64 * 1024), CAP, true, Vec::new())
        .await
        .map_err(|e| e.to_string())
}

async fn read_all(s: &S3Store, rel: &Path) -> Vec<u8> {
    let chunks: Vec<Bytes> = s.read(rel).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test]
async fn small_result_is_created_once_and_never_overwritten() {
    let Some(s) = store("small") else { return };
    let rel = item_rel("doc-1");
    let first = br#"{"text":"first"}"#;
    let t = Instant::now();
    let p = publish(&s, &rel, first).await.unwrap();
    eprintln!("small publish: {:?}", t.elapsed());
    assert_eq!(p.outcome, Outcome::Created);
    assert_eq!(p.published.sha256, sha(first));
    assert_eq!(p.key, format!("{}/{}", s.prefix(), rel.display()));
    assert!(p.e_tag.is_some(), "the ETag is recorded");
    // The same bytes again (a retry, another daemon): recognised, not written twice.
    let again = publish(&s, &rel, first).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPublished);
    assert_eq!(again.e_tag, p.e_tag);
    // Different bytes at the same key: refused, and the object keeps the first bytes.
    let err = publish(&s, &rel, br#"{"text":"other"}"#).await.unwrap_err();
    assert!(err.contains("already holds a different object"), "{err}");
    assert_eq!(read_all(&s, &rel).await, first);
    assert!(s.exists(&rel).await.unwrap());
    assert!(!s.exists(&item_rel("doc-2")).await.unwrap());
    let d = s.digest(&rel).await.unwrap();
    assert_eq!((d.bytes, d.sha256), (first.len() as u64, sha(first)));
    // A figure for the report, not an assertion: small results one after another.
    let t = Instant::now();
    let n = 100;
    for i in 0..n {
        let doc = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(20_000));
        publish(&s, &item_rel(&format!("seq-{i}")), doc.as_bytes())
            .await
            .unwrap();
    }
    let took = t.elapsed();
    eprintln!(
        "{n} small (20 KB) publishes in sequence: {took:?}, {:.1} ms each",
        took.as_secs_f64() * 1000.0 / f64::from(n)
    );
}

#[tokio::test]
async fn concurrent_publishers_of_one_key_exactly_one_wins() {
    let Some(s) = store("race") else { return };
    let rel = item_rel("contended");
    // Small bodies: eight publishers of distinct bytes.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, rel) = (s.clone(), rel.clone());
            tokio::spawn(async move {
                let bytes = format!("{{\"writer\":{i}}}").into_bytes();
                (publish(&s, &rel, &bytes).await, bytes)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (Ok(p), bytes) => {
                assert_eq!(p.outcome, Outcome::Created);
                winners.push(bytes);
            }
            (Err(e), _) => assert!(e.contains("already holds a different object"), "{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one publisher creates the object");
    assert_eq!(read_all(&s, &rel).await, winners[0]);

    // The same bytes from several daemons (a lease that expired mid-fetch): one creates the
    // object, the others recognise it as published; none fails.
    let rel_same = item_rel("same-bytes");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (s, rel) = (s.clone(), rel_same.clone());
            tokio::spawn(async move { publish(&s, &rel, br#"{"same":true}"#).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap().outcome);
    }
    let created = outcomes.iter().filter(|o| **o == Outcome::Created).count();
    assert_eq!(created, 1, "{outcomes:?}");

    // Large bodies (staged, then committed by a conditional copy): two publishers.
    let rel = item_rel("contended-large");
    let tasks: Vec<_> = (0..2u8)
        .map(|i| {
            let (s, rel) = (s.clone(), rel.clone());
            tokio::spawn(async move {
                let bytes = big_json(3 * 1024 * 1024, i);
                (publish(&s, &rel, &bytes).await, bytes)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (Ok(p), bytes) => {
                assert_eq!(p.outcome, Outcome::Created);
                winners.push(bytes);
            }
            (Err(e), _) => assert!(e.contains("already holds a different object"), "{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one large publisher commits");
    assert_eq!(s.digest(&rel).await.unwrap().sha256, sha(&winners[0]));
    // Both staged copies are gone, the winner's and the loser's.
    assert_eq!(s.remove_stray_staging(Duration::ZERO).await.unwrap(), 0);
}

#[tokio::test]
async fn large_result_streams_with_bounded_memory_and_the_right_sha256() {
    let Some(s) = store("large") else { return };
    let rel = item_rel("big");
    let bytes = big_json(20 * 1024 * 1024, 7);
    let t = Instant::now();
    let p = publish(&s, &rel, &bytes).await.unwrap();
    let took = t.elapsed();
    eprintln!(
        "20 MB publish: {took:?} ({:.1} MB/s), peak buffered {} bytes",
        bytes.len() as f64 / 1e6 / took.as_secs_f64(),
        p.peak_buffered
    );
    assert_eq!(p.outcome, Outcome::Created);
    assert_eq!(p.published.sha256, sha(&bytes));
    assert_eq!(p.published.bytes, bytes.len() as u64);
    assert!(
        p.peak_buffered <= MAX_HELD_PARTS * PART_SIZE,
        "held {} bytes at once",
        p.peak_buffered
    );
    let d = s.digest(&rel).await.unwrap();
    assert_eq!(d.sha256, sha(&bytes));
    // Published again with the same bytes: recognised by streaming the object (no metadata).
    let again = publish(&s, &rel, &bytes).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPublished);
    assert_eq!(again.e_tag, p.e_tag);
    // Other large bytes at the key: the conditional commit refuses them, the object is kept.
    let other = big_json(3 * 1024 * 1024, 8);
    let err = publish(&s, &rel, &other).await.unwrap_err();
    assert!(err.contains("already holds a different object"), "{err}");
    assert_eq!(s.digest(&rel).await.unwrap().sha256, sha(&bytes));
    assert_eq!(s.remove_stray_staging(Duration::ZERO).await.unwrap(), 0);
    let listed: Vec<_> = s.list(Path::new("")).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].rel_path, rel.to_string_lossy());
    assert_eq!(listed[0].bytes, bytes.len() as u64);
}

#[tokio::test]
async fn abandoned_uploads_leave_no_object_and_stale_staging_is_removed() {
    let Some(s) = store("abandon") else { return };
    // The body fails after 10 MB: the multipart upload is aborted, nothing is published.
    let rel = item_rel("cut");
    let bytes = big_json(10 * 1024 * 1024, 1);
    let failing = body(&bytes, 256 * 1024).chain(futures_util::stream::iter([Err(
        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"),
    )]));
    let err = s
        .write_atomic(&rel, failing, CAP, true, Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reset"), "{err}");
    assert!(!s.exists(&rel).await.unwrap());
    assert_eq!(s.remove_stray_staging(Duration::ZERO).await.unwrap(), 0);

    // A staged sidecar whose result never came, and whose process died before its cleanup ran
    // (forgotten: no drop): its staged object stays until it is old enough.
    let side = Storage::sidecar_path(
        &ProviderName::parse("extract_page").unwrap(),
        &BatchId::parse("batch-1").unwrap(),
        &ItemId::parse("cut").unwrap(),
        "processing-results.json",
    )
    .unwrap();
    let staged = s
        .stage(&side, body(&bytes, 1 << 20), CAP, true)
        .await
        .map_err(|e| e.to_string())
        .unwrap();
    std::mem::forget(staged);
    assert!(!s.exists(&side).await.unwrap(), "staged is not published");
    let listed: Vec<_> = s.list(Path::new("")).try_collect().await.unwrap();
    assert!(listed.is_empty(), "staging is not listed: {listed:?}");
    assert_eq!(
        s.remove_stray_staging(Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "a young staged object may be a publish in progress"
    );
    assert_eq!(s.remove_stray_staging(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(s.remove_stray_staging(Duration::ZERO).await.unwrap(), 0);

    // A publish dropped mid-stream (its task aborted, as when the process dies): the multipart
    // upload is left incomplete; no object appears, and the cleanup aborts the upload.
    let rel = item_rel("killed");
    let (reached, stalled) = tokio::sync::oneshot::channel::<()>();
    let mut reached = Some(reached);
    let stalling = body(&bytes, 256 * 1024).chain(futures_util::stream::poll_fn(move |_| {
        if let Some(tx) = reached.take() {
            let _ = tx.send(());
        }
        std::task::Poll::<Option<Chunk>>::Pending
    }));
    tokio::select! {
        r = s.write_atomic(&rel, stalling, CAP, true, Vec::new()) => panic!("finished: {r:?}"),
        _ = stalled => {}
    }
    assert!(!s.exists(&rel).await.unwrap());
    assert_eq!(
        s.remove_stray_staging(Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "an upload in progress is left alone"
    );
    assert_eq!(s.remove_stray_staging(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(s.remove_stray_staging(Duration::ZERO).await.unwrap(), 0);
    assert!(!s.exists(&rel).await.unwrap());
}

#[tokio::test]
async fn sidecars_are_published_with_their_result_only() {
    let Some(s) = store("sidecar") else { return };
    let provider = ProviderName::parse("extract_page").unwrap();
    let batch = BatchId::parse("b").unwrap();
    let side = |item: &str| {
        Storage::sidecar_path(
            &provider,
            &batch,
            &ItemId::parse(item).unwrap(),
            "extra.json",
        )
        .unwrap()
    };
    let result = |item: &str| Storage::item_path(&provider, &batch, &ItemId::parse(item).unwrap());
    // A result that fails: its staged sidecar is not published.
    let staged = s
        .stage(&side("a"), body(b"{}", 8), CAP, true)
        .await
        .unwrap();
    let bad = s
        .write_atomic(&result("a"), body(b"{not json", 8), CAP, true, vec![staged])
        .await;
    assert!(bad.is_err());
    assert!(!s.exists(&side("a")).await.unwrap());
    assert!(!s.exists(&result("a")).await.unwrap());
    // A large staged sidecar (an object in the staging area) of a result that fails: not
    // published, and its staged object is removed once it is dropped.
    let big = big_json(2 * 1024 * 1024, 4);
    let staged = s
        .stage(&side("c"), body(&big, 1 << 16), CAP, true)
        .await
        .unwrap();
    let bad = s
        .write_atomic(&result("c"), body(b"{not json", 8), CAP, true, vec![staged])
        .await;
    assert!(bad.is_err());
    assert!(!s.exists(&side("c")).await.unwrap());
    // Watched with a plain client (the store's own listing leaves the staging area out).
    let raw = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(s.bucket())
        .build()
        .unwrap();
    let staging = object_store::path::Path::from(format!("{}/.staging", s.prefix()));
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = raw
            .list(Some(&staging))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the dropped sidecar's staged object is removed");
    // A good one: both, large sidecar and small result.
    let big = big_json(2 * 1024 * 1024, 3);
    let staged = s
        .stage(&side("b"), body(&big, 1 << 16), CAP, true)
        .await
        .unwrap();
    let p = s
        .write_atomic(&result("b"), body(b"[1]", 8), CAP, true, vec![staged])
        .await
        .unwrap();
    assert_eq!(p.outcome, Outcome::Created);
    assert_eq!(s.digest(&side("b")).await.unwrap().sha256, sha(&big));
    assert_eq!(read_all(&s, &result("b")).await, b"[1]");
}

#[tokio::test]
async fn hostile_ids_stay_under_the_prefix() {
    let Some(s) = store("hostile") else { return };
    let provider = ProviderName::parse("extract_page").unwrap();
    for id in [
        "../../escape",
        "a/b",
        "/abs",
        ".staging",
        "..",
        "%2e%2e",
        "x?y#z",
        "é\u{1}",
    ] {
        let rel = Storage::item_path(
            &provider,
            &BatchId::parse(id).unwrap(),
            &ItemId::parse(id).unwrap(),
        );
        let p = publish(&s, &rel, b"{}").await.unwrap();
        let under = p.key.strip_prefix(&format!("{}/extract_page/", s.prefix()));
        let rest = under.unwrap_or_else(|| panic!("{id:?} → {}", p.key));
        assert_eq!(rest.split('/').count(), 2, "{id:?} → {}", p.key);
        assert!(
            !rest.split('/').any(|seg| seg == ".." || seg == "."),
            "{}",
            p.key
        );
    }
    let listed: Vec<_> = s.list(Path::new("")).try_collect().await.unwrap();
    assert_eq!(listed.len(), 8, "{listed:?}");
    for bad in ["../x", "/etc/passwd", ".staging/x.part", "a/../../b"] {
        assert!(
            matches!(s.key(Path::new(bad)), Err(S3Error::OutsidePrefix { .. })),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn credentials_never_appear_in_errors() {
    let Some(base) = s3_url() else { return };
    let key_id = "AKIALEAKCHECK0000001";
    let secret = "leak-check-secret-9f8e7d6c5b4a";
    let settings = S3Settings {
        url: base,
        access_key_id: Some(key_id.into()),
        secret_access_key: Some(secret.into()),
        ..Default::default()
    };
    let s = S3Store::new(&settings).unwrap();
    let err = s.exists(&item_rel("x")).await.unwrap_err();
    let err2 = publish(&s, &item_rel("x"), b"{}").await.unwrap_err();
    assert!(
        !err.is_retryable(),
        "bad credentials are not retried: {err}"
    );
    // The cleanup's own signed requests too.
    let err3 = s.remove_stray_staging(Duration::ZERO).await.unwrap_err();
    for text in [
        err.to_string(),
        format!("{err:?}"),
        err2,
        err3.to_string(),
        format!("{err3:?}"),
        format!("{s:?}"),
        format!("{settings:?}"),
    ] {
        assert!(!text.contains(key_id) && !text.contains(secret), "{text}");
    }
    assert!(
        err.to_string().contains("extract_page/batch-1/x.json"),
        "{err}"
    );
}
