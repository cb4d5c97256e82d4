//! The download queue against the sandbox with fsync failures injected into storage: a failed
//! fsync is a failed write (temp dropped, nothing published, the item retried), never a success.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::model::{BatchId, ItemId, ItemState, no_observer};
use batchmirror_sandbox::{BatchSpec, Delivery, ItemSpec, Outcome, Sandbox, SandboxSpec};

fn eio(_: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(5))
}

async fn sandbox() -> Sandbox {
    let item = ItemSpec {
        id: "i".into(),
        finishes_at: -60.0,
        outcome: Outcome::Succeeded,
        result_bytes: 3000,
        delivery: Delivery::Inline,
    };
    let spec = SandboxSpec {
        api_key: "k".into(),
        seed: 3,
        batches: vec![BatchSpec {
            id: "b".into(),
            created_ago: Duration::from_secs(3600),
            items: vec![item],
        }],
        time_scale: 1.0,
        retention: Duration::from_secs(3 * 24 * 3600),
        presign_ttl: Duration::from_secs(300),
        result_delay: Duration::ZERO,
    };
    Sandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

/// One listed item against its sandbox, ledger and settings, for downloaders over any storage.
struct World {
    sandbox: Sandbox,
    settings: crate::config::Settings,
    ledger: Ledger,
    provider: Arc<dyn Provider>,
    _dir: tempfile::TempDir,
}

impl World {
    /// `download` is added to the `[download]` section.
    async fn new(download: &str) -> World {
        let sandbox = sandbox().await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[ledger]\npath = \"{d}/l.sqlite3\"\n[storage]\nroot = \"{d}/m\"\n\
             [download]\n{download}\n\
             [[provider]]\nname = \"ep\"\nkind = \"extract_page\"\nbase_url = \"{u}\"\napi_key = \"k\"\n",
            d = dir.path().display(),
            u = sandbox.base_url()
        );
        let settings = crate::config::load_str(&text, "test", &HashMap::new()).unwrap();
        let ledger = Ledger::open(&settings.ledger_path).unwrap();
        let provider =
            crate::provider::build(&settings.providers[0], &settings.download, no_observer())
                .unwrap();
        crate::sync::list_provider(provider.as_ref(), &ledger, no_observer().as_ref())
            .await
            .unwrap();
        World {
            sandbox,
            settings,
            ledger,
            provider,
            _dir: dir,
        }
    }

    fn downloader(&self, storage: Storage) -> Downloader {
        Downloader::new(
            self.ledger.clone(),
            Arc::new(storage),
            std::slice::from_ref(&self.provider),
            self.settings.download.clone(),
            no_observer(),
        )
    }

    /// The item's row.
    async fn row(&self) -> crate::ledger::ItemRow {
        let (p, b, i) = (
            ProviderName::parse("ep").unwrap(),
            BatchId::parse("b").unwrap(),
            ItemId::parse("i").unwrap(),
        );
        self.ledger.item(&p, &b, &i).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn a_failed_fsync_drops_the_temp_publishes_nothing_and_retries_the_item() {
    type Sync = fn(&std::fs::File) -> std::io::Result<()>;
    let ok: Sync = std::fs::File::sync_all;
    for (file_sync, dir_sync, action) in [
        (eio as Sync, ok, "fsync"),
        (ok, eio as Sync, "fsync directory"),
    ] {
        let w = World::new("").await;
        let settings = &w.settings;
        let failing = Storage::new(&settings.storage_root)
            .unwrap()
            .with_sync(file_sync, dir_sync);
        // A directory fsync also runs when directories are created: create them beforehand, so
        // the failure hits the publish itself.
        std::fs::create_dir_all(settings.storage_root.join("ep/b")).unwrap();
        let report = w
            .downloader(failing)
            .drain(Utc::now(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            (report.mirrored, report.retrying),
            (0, 1),
            "{action}: {report:?}"
        );
        let row = w.row().await;
        assert_eq!(row.state, ItemState::Ready, "{action}: not mirrored");
        assert!(row.sha256.is_none());
        let error = row.last_error.unwrap();
        assert!(
            error.contains(action) && error.contains("os error 5"),
            "{error}"
        );
        let files: Vec<_> = std::fs::read_dir(settings.storage_root.join("ep/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(files.is_empty(), "{action}: nothing left behind: {files:?}");

        // The retry, with a disk that syncs again, publishes the exact body.
        let healthy = Storage::new(&settings.storage_root).unwrap();
        let later = Utc::now() + chrono::Duration::days(1);
        let report = w
            .downloader(healthy)
            .drain(later, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.mirrored, 1, "{action}: {report:?}");
        let row = w.row().await;
        assert_eq!(row.state, ItemState::Mirrored);
        let (sha, _) = w.sandbox.expected("b", "i").unwrap();
        assert_eq!(row.sha256.as_deref(), Some(sha.as_str()));
        let bytes = std::fs::read(settings.storage_root.join(row.path.unwrap())).unwrap();
        assert_eq!(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            sha
        );
    }
}

/// A file fsync that takes its time: the publish is still on the blocking pool when shutdown
/// gives up on the task.
fn slow_sync(f: &std::fs::File) -> std::io::Result<()> {
    std::thread::sleep(Duration::from_millis(1500));
    f.sync_all()
}

#[tokio::test]
async fn a_download_aborted_during_its_publish_is_adopted_not_fetched_again() {
    let w = World::new("drain_timeout = \"100ms\"").await;
    let ok: fn(&std::fs::File) -> std::io::Result<()> = std::fs::File::sync_all;
    let storage = Storage::new(&w.settings.storage_root)
        .unwrap()
        .with_sync(slow_sync, ok);
    let downloader = w.downloader(storage);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        // The body is in by now; its fsync is not done.
        tokio::time::sleep(Duration::from_millis(400)).await;
        stop.cancel();
    });
    let report = downloader.drain(Utc::now(), &cancel).await.unwrap();
    assert_eq!(
        report.interrupted, 0,
        "adopted, not handed back: {report:?}"
    );
    let row = w.row().await;
    assert_eq!(row.state, ItemState::Mirrored, "{row:?}");
    let (sha, _) = w.sandbox.expected("b", "i").unwrap();
    assert_eq!(row.sha256.as_deref(), Some(sha.as_str()));
    // Mirrored is final: no later drain asks for it again.
    let later = Utc::now() + chrono::Duration::days(1);
    let again = downloader
        .drain(later, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again, DownloadReport::default());
    let requests = w.sandbox.stats().result_requests.values().sum::<u64>();
    assert_eq!(requests, 1, "fetched once");
}

#[test]
fn in_pass_backoff_is_capped_and_its_jitter_differs_between_items() {
    let runs: Vec<Vec<Duration>> = (0..8)
        .map(|_| super::fetch::in_pass_backoff().collect())
        .collect();
    for run in &runs {
        assert_eq!(run.len(), 2, "3 attempts, so 2 waits: {run:?}");
        assert!(
            run.iter()
                .all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_secs(8)),
            "{run:?}"
        );
    }
    // Without backon's `std` feature every item drew the same "random" waits (a fixed seed), so
    // items failing together retried together.
    assert!(runs.iter().any(|r| r[0] != runs[0][0]), "{runs:?}");
}
