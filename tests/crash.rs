//! The real binary killed with SIGKILL mid-mirror, and stopped with SIGTERM while downloading.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::{ItemState, ProviderName};
use batchmirror_sandbox::Delivery;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

fn slow_account(items: usize) -> batchmirror_sandbox::SandboxSpec {
    let list = (0..items)
        .map(|i| {
            let d = if i % 3 == 0 {
                Delivery::Redirect
            } else {
                Delivery::Inline
            };
            done_item(&format!("i{i:03}"), 600.0, d)
        })
        .collect();
    let mut s = spec(vec![batch("slow", list)]);
    s.result_delay = Duration::from_millis(120);
    s
}

fn write_config(dir: &Path, base_url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let mut text = config_text(dir, base_url, "");
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    path
}

async fn wait_for_files(root: &Path, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_under(root)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .count()
        < at_least
    {
        assert!(
            Instant::now() < deadline,
            "the child mirrored nothing in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigkill_mid_mirror_then_restart_loses_nothing_and_refetches_at_most_the_in_flight() {
    let sandbox = start(slow_account(40)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sandbox.base_url(), "");
    let mut child = Command::new(BIN)
        .args(["sync", "--once", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_files(&dir.path().join("mirror"), 8).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let settings = settings(dir.path(), &sandbox.base_url());
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");

    let files = whole_files_under(&dir.path().join("mirror"));
    assert_eq!(files.len(), 40);
    let mirrored = mirrored_rows_match(&settings, &sandbox).await;
    assert_eq!(mirrored.len(), 40, "every item mirrored once in the ledger");
    let requests = total(&sandbox.stats().result_requests);
    assert!(
        requests <= 40 + 4,
        "re-fetches ({}) exceed the concurrency (4) in flight at the kill",
        requests - 40
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_downloads_and_exits_zero() {
    let sandbox = start(slow_account(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &sandbox.base_url(),
        "[schedule]\ncron = \"0 0 0 1 1 *\"\n",
    );
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_files(&dir.path().join("mirror"), 4).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0), "clean stop exits 0");
    let files = whole_files_under(&dir.path().join("mirror"));
    let settings = settings(dir.path(), &sandbox.base_url());
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let p = ProviderName::parse("ep").unwrap();
    assert!(
        ledger
            .items_in_state(&p, ItemState::Downloading, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mirrored = ledger
        .items_in_state(&p, ItemState::Mirrored, 100)
        .await
        .unwrap()
        .len();
    assert_eq!(
        mirrored,
        files.len(),
        "every file on disk is recorded, and only those"
    );
    assert!(mirrored < 30, "the stop came mid-mirror");
}

/// `sync --once` stopped by `signal` mid-mirror: the same drain as `run`, then the shell's code
/// for the signal, never 0 (a timer stopped at shutdown must not record success).
async fn sync_once_stopped_by(signal: &str, expected: i32) {
    let sandbox = start(slow_account(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sandbox.base_url(), "");
    let child = Command::new(BIN)
        .args(["sync", "--once", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_files(&dir.path().join("mirror"), 4).await;
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(expected), "{stdout}");
    assert!(stdout.contains("interrupted by a signal"), "{stdout}");
    let files = whole_files_under(&dir.path().join("mirror"));
    assert!(files.len() < 30, "the stop came mid-mirror");
    let settings = settings(dir.path(), &sandbox.base_url());
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let p = ProviderName::parse("ep").unwrap();
    let downloading = ledger
        .items_in_state(&p, ItemState::Downloading, 10)
        .await
        .unwrap();
    assert!(downloading.is_empty(), "rows released: {downloading:?}");
}

#[tokio::test]
async fn sync_once_stopped_by_sigterm_exits_143_after_draining() {
    sync_once_stopped_by("TERM", 143).await;
}

#[tokio::test]
async fn sync_once_stopped_by_sigint_exits_130_after_draining() {
    sync_once_stopped_by("INT", 130).await;
}

/// A closed terminal: before SIGHUP was handled it killed the process at once, rows left
/// `downloading`.
#[tokio::test]
async fn sync_once_stopped_by_sighup_exits_129_after_draining() {
    sync_once_stopped_by("HUP", 129).await;
}
