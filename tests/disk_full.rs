//! ENOSPC on a real (small) tmpfs: downloads pause with nothing half-written and no attempt spent,
//! one alert fires, and the next pass resumes once there is room. Needs permission to mount a
//! tmpfs; where that is refused the test says so and passes without running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use batchmirror::ledger::Ledger;
use batchmirror::model::{ItemState, ProviderName};
use batchmirror::{config, daemon};
use batchmirror_sandbox::Delivery;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Unmounts on drop, even when an assertion fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if out.status.success() {
            Some(Tmpfs(at.to_owned()))
        } else {
            eprintln!(
                "skipping the disk-full test: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
    }

    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Ten finished 20 KB results: about three fit the 96 KiB tmpfs.
fn ten_results_of_20kb() -> Vec<batchmirror_sandbox::ItemSpec> {
    (0..10)
        .map(|i| {
            let mut it = done_item(&format!("r{i}"), 60.0, Delivery::Inline);
            it.result_bytes = 20_000;
            it
        })
        .collect()
}

#[tokio::test]
async fn a_full_disk_pauses_downloads_alerts_once_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about three of the ten 20 KB results.
    let Some(disk) = Tmpfs::mount(&dir.path().join("mirror"), "96k") else {
        return;
    };
    let sandbox = start(spec(vec![batch("big", ten_results_of_20kb())])).await;
    let events = dir.path().join("alerts.jsonl");
    let mut text = config_text(dir.path(), &sandbox.base_url(), "");
    text.push_str(&format!(
        "[alerts]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'\"]\n",
        events.display()
    ));
    let settings = config::load_str(&text, "test", &HashMap::new()).unwrap();

    let first = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert!(first.download.paused >= 1, "{first:?}");
    assert!(first.download.mirrored < 10, "{first:?}");
    assert_eq!(
        first.download.failed, 0,
        "a full disk fails no item: {first:?}"
    );
    assert_eq!(first.exit_code(), 1);
    whole_files_under(&dir.path().join("mirror"));
    {
        let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
        let p = ProviderName::parse("ep").unwrap();
        let waiting = ledger
            .items_in_state(&p, ItemState::Ready, 100)
            .await
            .unwrap();
        assert!(!waiting.is_empty());
        assert!(
            waiting.iter().all(|r| r.attempts == 0),
            "no attempt spent: {waiting:?}"
        );
    }

    disk.grow("1m");
    let second = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        first.download.mirrored + second.download.mirrored,
        10,
        "{second:?}"
    );
    assert_eq!(second.exit_code(), 0);
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let disk_full = alerts.iter().filter(|a| a["event"] == "disk_full").count();
    assert_eq!(disk_full, 1, "{alerts:?}");
}

#[tokio::test]
async fn a_full_disk_under_the_ledger_stops_the_pass_alerts_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The ledger alone on a tiny disk; the mirror has room.
    let Some(disk) = Tmpfs::mount(&dir.path().join("ledgerdisk"), "160k") else {
        return;
    };
    let items = (0..400)
        .map(|i| {
            let mut it = done_item(
                &format!("item-with-a-longish-id-{i:04}"),
                60.0,
                Delivery::Inline,
            );
            it.result_bytes = 500;
            it
        })
        .collect();
    let sandbox = start(spec(vec![batch("many", items)])).await;
    let events = dir.path().join("alerts.jsonl");
    let mut text = config_text(dir.path(), &sandbox.base_url(), "");
    text = text.replace(
        &format!("{}/ledger.sqlite3", dir.path().display()),
        &format!("{}/ledgerdisk/ledger.sqlite3", dir.path().display()),
    );
    text.push_str(&format!(
        "[alerts]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'\"]\n",
        events.display()
    ));
    let settings = config::load_str(&text, "test", &HashMap::new()).unwrap();
    assert!(
        settings
            .ledger_path
            .starts_with(dir.path().join("ledgerdisk"))
    );

    let err = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .expect_err("a full ledger disk stops the pass");
    assert!(err.is_disk_full(), "{err}");
    assert!(
        err.to_string().contains("ledger.sqlite3") && err.to_string().contains("full"),
        "the message names the ledger and the cause: {err}"
    );
    let alerts = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(alerts.contains("\"disk_full\""), "alerted: {alerts:?}");
    // Nothing half-written is left in the mirror.
    whole_files_under(&dir.path().join("mirror"));

    disk.grow("16m");
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .expect("room again: the pass completes");
    assert_eq!(report.exit_code(), 0, "{report:?}");
    let mirrored = mirrored_rows_match(&settings, &sandbox).await;
    assert_eq!(
        mirrored.len(),
        400,
        "every item mirrored once there was room"
    );
}

/// The daemon's `/healthz` while downloads are paused for a full disk: 503 with the reason, not
/// 200 because the pass loop still ticks.
#[tokio::test]
async fn healthz_answers_503_with_the_reason_while_the_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_disk) = Tmpfs::mount(&dir.path().join("mirror"), "96k") else {
        return;
    };
    let sandbox = start(spec(vec![batch("big", ten_results_of_20kb())])).await;
    let (url, daemon, token) = run_serving_metrics(dir.path(), &sandbox.base_url());
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (status, body) = loop {
        if let Ok(resp) = client.get(format!("{url}/healthz")).send().await {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            if status != 200 {
                break (status, body);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz never left 200 with the disk full"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk full"), "{body}");
    token.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), daemon).await;
}
