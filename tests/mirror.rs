//! Full mirror against a multi-page account, and a second pass that downloads nothing again.

use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::{BatchId, ItemId, ItemState, ProviderName};
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test]
async fn every_item_of_a_multi_page_account_lands_with_the_served_sha256() {
    // 12 batches at page_size 5 = 3 listing pages; 7 items a batch at page_size 5 = 2 item pages.
    let sandbox = start(spec(finished_batches(12, 7))).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());

    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(report.download.mirrored, 84);

    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let p = ProviderName::parse("ep").unwrap();
    for b in 0..12 {
        for i in 0..7 {
            let (batch, item) = (format!("b-{b:03}"), format!("it-{b}-{i}"));
            let row = ledger
                .item(
                    &p,
                    &BatchId::parse(&batch).unwrap(),
                    &ItemId::parse(&item).unwrap(),
                )
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{batch}/{item} not in the ledger"));
            let (sha, len) = sandbox.expected(&batch, &item).unwrap();
            assert_eq!(row.state, ItemState::Mirrored, "{batch}/{item}");
            assert_eq!(row.sha256.as_deref(), Some(sha.as_str()));
            assert_eq!(row.bytes, Some(len));
            let file = dir
                .path()
                .join("mirror/ep")
                .join(&batch)
                .join(format!("{item}.json"));
            assert_eq!(sha256_file(&file), sha, "file content of {batch}/{item}");
        }
    }
    let stats = sandbox.stats();
    assert!(stats.list_requests >= 3, "listing spans pages: {stats:?}");
    assert_eq!(stats.store_requests_with_credentials, 0);
    assert_eq!(
        files_under(&dir.path().join("mirror")).len(),
        84,
        "no stray files"
    );
}

#[tokio::test]
async fn a_second_pass_downloads_nothing_again_and_reads_no_handled_batch() {
    let sandbox = start(spec(finished_batches(12, 3))).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    let before = sandbox.stats();

    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.download.mirrored, 0);
    let after = sandbox.stats();
    assert_eq!(
        total(&after.result_requests),
        total(&before.result_requests),
        "no result fetched twice"
    );
    assert_eq!(after.store_requests, before.store_requests);
    assert_eq!(
        after.detail_requests, before.detail_requests,
        "handled batches are not read again"
    );
    assert_eq!(
        after.list_requests,
        before.list_requests + 1,
        "listing stops at the first handled page"
    );
}

#[tokio::test]
async fn status_reports_counts_per_state_as_json() {
    let sandbox = start(spec(finished_batches(2, 3))).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    let before = daemon::status(&settings).await.unwrap();
    assert!(!before.ledger_exists);
    daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    let report = daemon::status(&settings).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let p = &json["providers"][0];
    assert_eq!(p["name"], "ep");
    assert_eq!(p["kind"], "extract_page");
    assert_eq!(p["items"]["mirrored"], 6);
    assert_eq!(p["items"]["lost"], 0);
    assert_eq!(p["items"]["pending"], 0);
    assert!(p["last_pass_at"].is_string());
    assert!(report.render_text().contains("ep"));
}

#[tokio::test]
async fn the_daemon_runs_a_pass_at_start_and_stops_cleanly_on_cancel() {
    let sandbox = start(spec(finished_batches(3, 3))).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    let token = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(settings.clone(), token.clone()));
    let ledger_path = settings.ledger_path.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let done = ledger_path.exists()
            && daemon::status(&settings)
                .await
                .is_ok_and(|s| s.providers[0].items["mirrored"] == 9);
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the start-up pass did not mirror everything"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    token.cancel();
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), daemon).await;
    assert!(matches!(res, Ok(Ok(Ok(())))), "{res:?}");
    // The lock is released: a second daemon may open the ledger now.
    drop(Ledger::open(&ledger_path).expect("lock released on stop"));
}

#[tokio::test]
async fn the_demo_mirrors_every_provider_and_reports_its_losses() {
    let dir = tempfile::tempdir().unwrap();
    let summary = batchmirror::lab::demo(dir.path(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.failed, 0, "{summary}");
    assert!(
        summary.lost > 0,
        "each account has an expired batch: {summary}"
    );
    assert!(summary.mirrored > 300, "{summary}");
    for provider in ["demo", "llama", "talonic", "perfect"] {
        let files = files_under(&dir.path().join("demo-mirror").join(provider));
        assert!(
            files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == "json")),
            "nothing mirrored for {provider}"
        );
    }
    // Running it again replaces the previous demo instead of failing on its ledger.
    let again = batchmirror::lab::demo(dir.path(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again.mirrored, summary.mirrored);
}
