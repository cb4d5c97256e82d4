//! Issue 17, LlamaCloud sidecars: the processing-results record and the other formats are staged
//! and published only together with their result, so an item that ends lost or keeps failing
//! leaves no file at all; and item ids with dots or suffix-like words never share a file.

use batchmirror_sandbox::llamacloud::{Fault, Outcome};
use tokio_util::sync::CancellationToken;

use crate::common::{files_under, sha256_file};
use crate::faults::drain_as_if_later;
use crate::provider_llamacloud::{RETENTION, item, item_file, job, settings, spec, start};

/// The mirror's files, relative to `<root>/ep`, sorted.
fn mirrored_files(dir: &std::path::Path) -> Vec<String> {
    let root = dir.join("mirror").join("ep");
    files_under(&root)
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_lost_result_leaves_no_sidecar_beside_it() {
    let old_secs = RETENTION.as_secs() + 7200;
    let lost = item("bjb-old", 0, (old_secs - 60) as f64, Outcome::Completed);
    let old = job("bjb-old", old_secs, vec![lost]);
    let fine = job(
        "bjb-new",
        3600,
        vec![item("bjb-new", 0, 600.0, Outcome::Completed)],
    );
    let sandbox = start(spec(vec![old, fine])).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);
    let report = daemon_pass(&settings).await;
    assert_eq!((report.download.lost, report.download.mirrored), (1, 1));
    assert_eq!(
        mirrored_files(dir.path()),
        [
            "bjb-new/itm-bjb-new-0.json",
            "bjb-new/itm-bjb-new-0@md",
            "bjb-new/itm-bjb-new-0@processing-results.json",
        ],
        "nothing of the lost item, its record included"
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn a_result_failing_the_whole_pass_publishes_none_of_its_sidecars() {
    let its = vec![
        item("bjb-1", 0, 600.0, Outcome::Completed),
        item("bjb-1", 1, 600.0, Outcome::Completed),
    ];
    let sandbox = start(spec(vec![job("bjb-1", 3600, its)])).await;
    // Every request of every attempt in the pass (3 attempts × max_retries 3).
    for _ in 0..9 {
        sandbox.push_fault(Fault::Status {
            path_prefix: "/api/v1/parsing/job/pj-bjb-1-1/result/json".into(),
            status: 503,
            retry_after: None,
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);
    let report = daemon_pass(&settings).await;
    assert_eq!(report.exit_code(), 1, "{report:?}");
    assert_eq!(report.download.retrying, 1, "{report:?}");
    let files = mirrored_files(dir.path());
    assert!(
        files.iter().all(|f| f.contains("itm-bjb-1-0")),
        "sidecars wait for their result: {files:?}"
    );
    assert_eq!(files.len(), 3, "{files:?}");

    let later = drain_as_if_later(&settings).await;
    assert_eq!(later.mirrored, 1, "{later:?}");
    assert_eq!(mirrored_files(dir.path()).len(), 6);
    let (sha, _) = sandbox.expected("bjb-1", "itm-bjb-1-1").unwrap();
    assert_eq!(
        sha256_file(&item_file(dir.path(), "bjb-1", "itm-bjb-1-1", "json")),
        sha
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn ids_with_dots_or_suffix_words_never_share_a_file() {
    let ids = ["a", "a.processing-results", "a.md", "a@md"];
    let its = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let mut it = item("bjb-d", n, 600.0, Outcome::Completed);
            it.id = (*id).to_owned();
            it
        })
        .collect();
    let sandbox = start(spec(vec![job("bjb-d", 3600, its)])).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);
    let report = daemon_pass(&settings).await;
    assert_eq!(report.download.mirrored, 4, "{report:?}");
    assert_eq!(report.exit_code(), 0, "{report:?}");
    // Each item: its result, its record, its markdown; 12 distinct files.
    assert_eq!(
        mirrored_files(dir.path()).len(),
        12,
        "{:?}",
        mirrored_files(dir.path())
    );
    let ledger = batchmirror::ledger::Ledger::open_read_only(&settings.ledger_path).unwrap();
    let p = batchmirror::model::ProviderName::parse("ep").unwrap();
    let rows = ledger
        .items_in_state(&p, batchmirror::model::ItemState::Mirrored, 10)
        .await
        .unwrap();
    for row in rows {
        let (sha, _) = sandbox.expected("bjb-d", &row.item).unwrap();
        let file = settings.storage_root.join(row.path.as_deref().unwrap());
        assert_eq!(sha256_file(&file), sha, "{}: its own result", row.item);
        let record = file.with_file_name(format!(
            "{}@processing-results.json",
            file.file_stem().unwrap().to_string_lossy()
        ));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(record["item_id"], row.item.as_str(), "its own record");
    }
    sandbox.stop().await;
}

async fn daemon_pass(settings: &batchmirror::config::Settings) -> batchmirror::daemon::PassReport {
    batchmirror::daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap()
}
