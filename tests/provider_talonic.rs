//! The Talonic adapter against its sandbox: the daemon in-process over loopback with a real
//! SQLite ledger. Full mirror, no re-download, cursor pages, 429 with only `X-RateLimit-Reset`,
//! the envelope's `retryable` winning over the status, gone documents and unknown statuses.

use std::path::Path;
use std::time::Duration;

use batchmirror::config::{ProviderKind, Settings};
use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::{BatchId, ItemId, ItemState, ProviderName};
use batchmirror_sandbox::talonic::{
    ItemOutcome, TalonicBatch, TalonicFault, TalonicItem, TalonicSandbox, TalonicSpec, uuid,
};
use tokio_util::sync::CancellationToken;

use crate::common::{KEY, settings, sha256_file};

/// An item of batch `b` processed `ago` seconds ago (negative: processed in `-ago` seconds).
fn item(b: &str, n: usize, ago: f64, outcome: ItemOutcome) -> TalonicItem {
    TalonicItem {
        id: uuid(b, &format!("item {n}")),
        document_id: uuid(b, &format!("doc {n}")),
        filename: Some(format!("invoice_{n}.pdf")),
        finishes_at: -ago,
        outcome,
        result_bytes: 2500,
    }
}

fn batch(name: &str, created_ago: u64, items: Vec<TalonicItem>) -> TalonicBatch {
    TalonicBatch {
        id: uuid("batch", name),
        created_ago: Duration::from_secs(created_ago),
        provider: "anthropic".into(),
        items,
        status_override: None,
    }
}

/// `count` completed items of batch `name`.
fn done_batch(name: &str, created_ago: u64, count: usize) -> TalonicBatch {
    let id = uuid("batch", name);
    let items = (0..count)
        .map(|n| item(&id, n, 600.0, ItemOutcome::Completed))
        .collect();
    batch(name, created_ago, items)
}

async fn start(batches: Vec<TalonicBatch>, retention: Duration) -> TalonicSandbox {
    let spec = TalonicSpec {
        api_key: KEY.into(),
        seed: 21,
        batches,
        time_scale: 1.0,
        retention,
        result_delay: Duration::ZERO,
        daily_limit: None,
        quota_retry_after: false,
    };
    TalonicSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .expect("talonic sandbox starts")
}

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Until validation accepts `talonic`, load an extract_page config and switch its kind.
fn talonic_settings(dir: &Path, base_url: &str) -> Settings {
    let mut s = settings(dir, base_url);
    s.providers[0].kind = ProviderKind::Talonic;
    s
}

async fn row(s: &Settings, batch: &str, item: &str) -> batchmirror::ledger::ItemRow {
    let ledger = Ledger::open_read_only(&s.ledger_path).unwrap();
    let name = ProviderName::parse("ep").unwrap();
    let (b, i) = (BatchId::parse(batch).unwrap(), ItemId::parse(item).unwrap());
    ledger
        .item(&name, &b, &i)
        .await
        .unwrap()
        .expect("row exists")
}

fn downloads(sb: &TalonicSandbox) -> u64 {
    sb.stats().extraction_downloads.values().sum()
}

fn doc_requests(sb: &TalonicSandbox) -> u64 {
    sb.stats().document_requests.values().sum()
}

#[tokio::test]
async fn full_mirror_with_served_hashes_and_nothing_downloaded_twice() {
    let mut a = done_batch("a", 7200, 4);
    a.items
        .push(item(&a.id.clone(), 9, 600.0, ItemOutcome::Failed));
    let b = done_batch("b", 3600, 3);
    // Submitted: its item is processed a second from now.
    let c_id = uuid("batch", "c");
    let c = batch(
        "c",
        1200,
        vec![item(&c_id, 0, -1.0, ItemOutcome::Completed)],
    );
    let sb = start(vec![a.clone(), b.clone(), c.clone()], WEEK).await;
    let dir = tempfile::tempdir().unwrap();
    let s = talonic_settings(dir.path(), &sb.base_url());

    let first = daemon::sync_once(s.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.download.mirrored, 7, "{first:?}");
    assert_eq!(first.exit_code(), 0, "{first:?}");
    for bt in [&a, &b] {
        for it in bt
            .items
            .iter()
            .filter(|i| i.outcome == ItemOutcome::Completed)
        {
            let (sha, len) = sb.expected(&bt.id, &it.id).unwrap();
            let r = row(&s, &bt.id, &it.id).await;
            assert_eq!(r.state, ItemState::Mirrored);
            assert_eq!(
                (r.sha256.as_deref(), r.bytes),
                (Some(sha.as_str()), Some(len))
            );
            let path = dir.path().join("mirror").join(r.path.unwrap());
            assert_eq!(sha256_file(&path), sha);
        }
    }
    let failed = a.items.last().unwrap();
    assert_eq!(row(&s, &a.id, &failed.id).await.state, ItemState::Skipped);
    assert_eq!(
        row(&s, &c_id, &c.items[0].id).await.state,
        ItemState::Pending
    );
    assert_eq!(downloads(&sb), 7);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = daemon::sync_once(s.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(second.download.mirrored, 1, "{second:?}");
    let (sha, _) = sb.expected(&c_id, &c.items[0].id).unwrap();
    assert_eq!(row(&s, &c_id, &c.items[0].id).await.sha256, Some(sha));
    let (docs, got) = (doc_requests(&sb), downloads(&sb));
    assert_eq!(got, 8, "only the newly processed item was fetched");

    let third = daemon::sync_once(s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(third.download.mirrored, 0);
    assert_eq!((doc_requests(&sb), downloads(&sb)), (docs, got));
    assert_eq!(
        sb.stats().detail_requests,
        4,
        "handled batches are not read again"
    );
}

#[tokio::test]
async fn listing_follows_the_cursor_across_pages() {
    let batches = (0..12)
        .map(|k| done_batch(&format!("p{k}"), 3600 + k * 60, 1))
        .collect();
    let sb = start(batches, WEEK).await;
    let dir = tempfile::tempdir().unwrap();
    let s = talonic_settings(dir.path(), &sb.base_url());
    let report = daemon::sync_once(s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 12, "{report:?}");
    let listing = report.providers[0].listing.as_ref().unwrap();
    assert_eq!((listing.pages, listing.batches), (3, 12), "page_size 5");
    assert_eq!(sb.stats().list_requests, 3);
}

#[tokio::test]
async fn a_429_with_only_x_ratelimit_reset_holds_the_next_request() {
    let sb = start(vec![done_batch("r", 3600, 2)], WEEK).await;
    let mut fault = TalonicFault::new("/v1/batches", 429);
    fault.reset_in = Some(Duration::from_secs(2));
    sb.push_fault(fault);
    let dir = tempfile::tempdir().unwrap();
    let s = talonic_settings(dir.path(), &sb.base_url());
    let report = daemon::sync_once(s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 2, "{report:?}");
    let log = sb.request_log();
    let refused = log
        .iter()
        .position(|r| r.status == 429)
        .expect("fault served");
    let waited = log[refused + 1].at.duration_since(log[refused].at);
    assert!(
        waited >= Duration::from_millis(1950),
        "next request after {waited:?}, X-RateLimit-Reset was 2 s ahead"
    );
}

#[tokio::test]
async fn the_envelope_retryable_flag_wins_over_the_status() {
    let bt = done_batch("e", 3600, 3);
    let sb = start(vec![bt.clone()], WEEK).await;
    // A 4xx the server calls retryable, then a draft-shaped throttling code: both retried.
    let mut f = TalonicFault::new("/v1/batches", 400);
    f.retryable = Some(true);
    sb.push_fault(f);
    let mut f = TalonicFault::new("/v1/batches", 400);
    f.code = Some("RATE_LIMIT_EXCEEDED".into());
    f.draft = true;
    sb.push_fault(f);
    // A 5xx the server calls final: not retried, that item alone fails.
    let doc = &bt.items[1].document_id;
    let mut f = TalonicFault::new(&format!("/v1/documents/{doc}"), 503);
    f.retryable = Some(false);
    sb.push_fault(f);
    let dir = tempfile::tempdir().unwrap();
    let s = talonic_settings(dir.path(), &sb.base_url());
    let report = daemon::sync_once(s.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert!(report.providers[0].listing.is_ok(), "{report:?}");
    assert_eq!((report.download.mirrored, report.download.failed), (2, 1));
    let log = sb.request_log();
    let statuses: Vec<u16> = log
        .iter()
        .filter(|r| r.path == "/v1/batches")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [400, 400, 200]);
    assert_eq!(
        sb.stats().document_requests[doc.as_str()],
        1,
        "503 was final"
    );
    let r = row(&s, &bt.id, &bt.items[1].id).await;
    assert_eq!(r.state, ItemState::Failed);
    assert!(r.last_error.unwrap().contains("503"));
}

#[tokio::test]
async fn documents_past_retention_are_lost_and_not_requested_again() {
    let old_id = uuid("batch", "old");
    let two_days = 2.0 * 24.0 * 3600.0;
    let old = batch(
        "old",
        3 * 24 * 3600,
        (0..2)
            .map(|n| item(&old_id, n, two_days, ItemOutcome::Completed))
            .collect(),
    );
    let sb = start(
        vec![old, done_batch("new", 3600, 1)],
        Duration::from_secs(24 * 3600),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = talonic_settings(dir.path(), &sb.base_url());
    let first = daemon::sync_once(s.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (first.download.lost, first.download.mirrored),
        (2, 1),
        "{first:?}"
    );
    assert_eq!(first.exit_code(), 1);
    let status = daemon::status(&s).await.unwrap();
    assert_eq!(status.providers[0].items["lost"], 2);
    let r = row(&s, &old_id, &uuid(&old_id, "item 0")).await;
    assert!(r.last_error.unwrap().contains("404"));
    let docs = doc_requests(&sb);
    let second = daemon::sync_once(s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(doc_requests(&sb), docs, "lost items are not retried");
    assert_eq!(second.exit_code(), 0);
}

#[tokio::test]
async fn an_unknown_batch_status_is_rejected_with_a_reason_and_the_rest_mirrored() {
    let mut odd = done_batch("odd", 3600, 2);
    odd.status_override = Some("archived".into());
    let sb = start(vec![odd.clone(), done_batch("fine", 1800, 2)], WEEK).await;
    let dir = tempfile::tempdir().unwrap();
    let s = talonic_settings(dir.path(), &sb.base_url());
    let report = daemon::sync_once(s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 2, "{report:?}");
    let rejected = &report.providers[0].listing.as_ref().unwrap().rejected;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].contains(&odd.id) && rejected[0].contains("unknown status \"archived\""),
        "{rejected:?}"
    );
    let stats = sb.stats();
    assert!(
        odd.items
            .iter()
            .all(|i| !stats.document_requests.contains_key(&i.document_id))
    );
}

#[tokio::test]
async fn remaining_zero_on_a_success_slows_the_client_before_any_refusal() {
    let sb = start(vec![done_batch("z", 3600, 1)], WEEK).await;
    // The listing succeeds but spends the window: Remaining 0, Reset 2 s ahead.
    let mut fault = TalonicFault::new("/v1/batches", 200);
    fault.reset_in = Some(Duration::from_secs(2));
    sb.push_fault(fault);
    let dir = tempfile::tempdir().unwrap();
    let s = talonic_settings(dir.path(), &sb.base_url());
    let report = daemon::sync_once(s, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 1, "{report:?}");
    let log = sb.request_log();
    assert!(
        log.iter().all(|r| r.status == 200),
        "never refused: {log:?}"
    );
    let waited = log[1].at.duration_since(log[0].at);
    assert!(waited >= Duration::from_millis(1950), "{waited:?}");
}
