//! The provider's failure modes: 409 not ready, 410 gone, 429 with Retry-After, presigned
//! redirects, and hostile ids.

use std::time::Duration;

use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::{BatchId, ItemId, ItemState, ProviderName};
use batchmirror_sandbox::{Delivery, Fault, ItemSpec, Outcome};
use tokio_util::sync::CancellationToken;

use crate::common::*;

fn ep() -> ProviderName {
    ProviderName::parse("ep").unwrap()
}

async fn state(ledger: &Ledger, batch: &str, item: &str) -> ItemState {
    ledger
        .item(
            &ep(),
            &BatchId::parse(batch).unwrap(),
            &ItemId::parse(item).unwrap(),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{batch}/{item} missing"))
        .state
}

#[tokio::test]
async fn not_ready_and_still_running_items_land_on_a_later_pass() {
    let running = ItemSpec {
        id: "late".into(),
        finishes_at: 1.5,
        outcome: Outcome::Succeeded,
        result_bytes: 2000,
        delivery: Delivery::Inline,
    };
    let sandbox = start(spec(vec![batch(
        "b1",
        vec![
            done_item("a", 60.0, Delivery::Inline),
            done_item("b", 60.0, Delivery::Redirect),
            running,
        ],
    )]))
    .await;
    sandbox.push_fault(Fault::NotReadyOnce {
        batch: "b1".into(),
        item: "a".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());

    let first = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.download.not_ready, 1, "{first:?}");
    assert_eq!(first.download.mirrored, 1);
    {
        let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
        assert_eq!(state(&ledger, "b1", "a").await, ItemState::Ready);
        assert_eq!(state(&ledger, "b1", "late").await, ItemState::Pending);
    }
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let second = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(second.download.mirrored, 2, "{second:?}");
    assert_eq!(second.exit_code(), 0);
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    for item in ["a", "b", "late"] {
        assert_eq!(
            state(&ledger, "b1", item).await,
            ItemState::Mirrored,
            "{item}"
        );
    }
}

#[tokio::test]
async fn gone_results_are_lost_in_status_and_never_requested_again() {
    let four_days = 4.0 * 24.0 * 3600.0;
    let mut old = batch(
        "old",
        vec![
            done_item("x", four_days, Delivery::Inline),
            done_item("y", four_days, Delivery::Redirect),
        ],
    );
    old.created_ago = Duration::from_secs(5 * 24 * 3600);
    let sandbox = start(spec(vec![
        old,
        batch("new", vec![done_item("z", 10.0, Delivery::Inline)]),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());

    let first = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.download.lost, 2, "{first:?}");
    assert_eq!(first.download.mirrored, 1, "the rest keeps going");
    assert_eq!(first.exit_code(), 1, "a lost item makes sync --once exit 1");
    let status = daemon::status(&settings).await.unwrap();
    assert_eq!(status.providers[0].items["lost"], 2);
    let requests = total(&sandbox.stats().result_requests);

    let second = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        total(&sandbox.stats().result_requests),
        requests,
        "lost items are not retried"
    );
    assert_eq!(second.exit_code(), 0);
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let row = ledger
        .item(
            &ep(),
            &BatchId::parse("old").unwrap(),
            &ItemId::parse("x").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(row.last_error.unwrap().contains("410"));
}

#[tokio::test]
async fn presigned_results_are_fetched_without_the_api_key() {
    let items = (0..6)
        .map(|i| done_item(&format!("r{i}"), 30.0, Delivery::Redirect))
        .collect();
    let sandbox = start(spec(vec![batch("b", items)])).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    let report = daemon::sync_once(settings, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 6);
    let stats = sandbox.stats();
    assert_eq!(
        total(&stats.store_downloads),
        6,
        "bodies came from the object store"
    );
    assert_eq!(
        stats.store_requests_with_credentials, 0,
        "no credential reached the object store"
    );
}

#[tokio::test]
async fn hostile_ids_stay_inside_the_root() {
    let hostile = [
        "../x",
        "a/b",
        ".hidden",
        "ünïcødé€",
        &"L".repeat(300),
        "x\\y",
        "%2e%2e",
        "con.json.part",
    ];
    let mut items: Vec<_> = hostile
        .iter()
        .map(|id| done_item(id, 30.0, Delivery::Inline))
        .collect();
    // `..` cannot be put in a request path at all (URL parsers resolve it away): that item must
    // fail on its own, recorded, without a request to whatever URL it would collapse into.
    items.push(done_item("..", 30.0, Delivery::Inline));
    let sandbox = start(spec(vec![batch("../../etc", items)])).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, hostile.len() as u64, "{report:?}");
    assert_eq!(report.download.failed, 1, "{report:?}");
    assert!(
        sandbox
            .request_log()
            .iter()
            .all(|r| r.status != 404 && r.status != 405),
        "no request went to a URL the id collapsed into"
    );

    let root = dir.path().join("mirror").canonicalize().unwrap();
    let files = files_under(&root);
    assert_eq!(files.len(), hostile.len(), "one file per id: {files:?}");
    for f in &files {
        let f = f.canonicalize().unwrap();
        assert!(f.starts_with(&root), "{} escaped the root", f.display());
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            !name.starts_with('.') && name.len() <= 255 && name.ends_with(".json"),
            "{name}"
        );
    }
    // Nothing was written beside the mirror and ledger.
    let mut top: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("ledger.sqlite3"))
        .collect();
    top.sort();
    assert_eq!(top, vec!["mirror"]);
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let batch_id = BatchId::parse("../../etc").unwrap();
    for id in hostile {
        let row = ledger
            .item(&ep(), &batch_id, &ItemId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let (sha, _) = sandbox.expected("../../etc", id).unwrap();
        assert_eq!(row.sha256.as_deref(), Some(sha.as_str()), "{id}");
        assert_eq!(sha256_file(&root.join(row.path.unwrap())), sha, "{id}");
    }
    let dotdot = ledger
        .item(&ep(), &batch_id, &ItemId::parse("..").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dotdot.state, ItemState::Failed);
    assert!(
        dotdot
            .last_error
            .unwrap()
            .contains("cannot be used in a request path")
    );
}

#[tokio::test]
async fn retry_after_is_honoured_before_the_next_request() {
    for http_date in [false, true] {
        // Computed when used: a date made earlier would be partly spent by the first round.
        let retry_after = if http_date {
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3))
        } else {
            "2".to_owned()
        };
        let sandbox = start(spec(finished_batches(1, 2))).await;
        sandbox.push_fault(Fault::Status {
            path_prefix: "/v1/batches".into(),
            status: 429,
            retry_after: Some(retry_after.clone()),
        });
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), &sandbox.base_url());
        let report = daemon::sync_once(settings, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.download.mirrored, 2, "{report:?}");
        let log = sandbox.request_log();
        let refused = log
            .iter()
            .position(|r| r.status == 429)
            .expect("the fault was served");
        let next = &log[refused + 1];
        // An HTTP date has one-second resolution: allow for the rounding.
        let min = if retry_after == "2" {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(1900)
        };
        let waited = next.at.duration_since(log[refused].at);
        assert!(
            waited >= min,
            "next request after {waited:?}, Retry-After was {retry_after}"
        );
    }
}

#[tokio::test]
async fn a_server_error_on_one_result_fails_that_item_only() {
    let sandbox = start(spec(finished_batches(1, 4))).await;
    // 404 on a result is permanent: recorded with its body, the rest goes on.
    sandbox.push_fault(Fault::Status {
        path_prefix: "/v1/batches/b-000/items/it-0-2/result".into(),
        status: 404,
        retry_after: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.failed, 1);
    assert_eq!(report.download.mirrored, 3);
    assert_eq!(report.exit_code(), 1);
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let row = ledger
        .item(
            &ep(),
            &BatchId::parse("b-000").unwrap(),
            &ItemId::parse("it-0-2").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ItemState::Failed);
    assert!(row.last_error.unwrap().contains("404"));
}

#[tokio::test]
async fn an_expired_presigned_url_is_retried_through_the_api_never_failed() {
    // Presigned URLs that expire at once: every store GET is refused 403, as S3 does.
    let items = (0..2)
        .map(|i| done_item(&format!("p{i}"), 30.0, Delivery::Redirect))
        .collect();
    let mut s = spec(vec![batch("b", items)]);
    s.presign_ttl = Duration::ZERO;
    let sandbox = start(s).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        report.download.failed, 0,
        "an expired link is not the item's fault: {report:?}"
    );
    assert_eq!(report.download.retrying, 2, "{report:?}");
    // Each retry went back to the API for a fresh link (max_retries = 3 in the test config).
    let api_calls = sandbox.stats().result_requests[&("b".to_owned(), "p0".to_owned())];
    assert!(api_calls >= 2, "the API was asked again: {api_calls}");
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let row = ledger
        .item(
            &ep(),
            &BatchId::parse("b").unwrap(),
            &ItemId::parse("p0").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ItemState::Ready, "kept for the next pass");
}

#[tokio::test]
async fn a_410_from_the_object_store_is_a_refused_link_not_a_lost_result() {
    let sandbox = start(spec(vec![batch(
        "b",
        vec![done_item("s0", 30.0, Delivery::Redirect)],
    )]))
    .await;
    // The store answers the first download 410: the API never said the result was gone.
    sandbox.push_fault(Fault::StoreStatus { status: 410 });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (report.download.lost, report.download.mirrored),
        (0, 1),
        "{report:?}"
    );
    let api_calls = sandbox.stats().result_requests[&("b".to_owned(), "s0".to_owned())];
    assert_eq!(api_calls, 2, "a fresh link was asked of the API");
    mirrored_rows_match(&settings, &sandbox).await;
}
