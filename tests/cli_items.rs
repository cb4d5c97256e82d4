//! `status --items` on the real binary, against a ledger whose items' states are set one by one:
//! each `--state` filter, `--provider`, `--limit`, `--json`, and the refusals.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use batchmirror::ledger::Ledger;
use batchmirror::model::{
    BatchId, BatchStatus, DueItem, ItemId, ProviderName, RemoteBatch, RemoteItem, RemoteStatus,
};
use chrono::Utc;

use crate::common::*;

fn status(config: &Path, args: &[&str]) -> Output {
    let all: Vec<&str> = std::iter::once("status")
        .chain(args.iter().copied())
        .collect();
    run_cli(&all, config)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The item ids of `status --items --json <args>`, and the count it reports.
fn listed(config: &Path, args: &[&str]) -> (Vec<String>, u64) {
    let mut all = vec!["--items", "--json"];
    all.extend(args);
    let out = status(config, &all);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    (ids, v["count"].as_u64().unwrap())
}

/// Provider `ep`: one item in each state or condition; provider `two`: one lost item.
async fn seed(path: &Path) {
    let ledger = Ledger::open(path).unwrap();
    let now = Utc::now();
    let hours = |h: i64| Some(now + chrono::Duration::hours(h));
    let provider = |p: &str| ProviderName::parse(p).unwrap();
    let items = [
        ("ep", "it-lost", RemoteStatus::Succeeded, hours(1)),
        ("ep", "it-failed", RemoteStatus::Succeeded, hours(1)),
        ("ep", "it-deferred", RemoteStatus::Succeeded, hours(48)),
        ("ep", "it-risk", RemoteStatus::Succeeded, hours(1)),
        ("ep", "it-safe", RemoteStatus::Succeeded, hours(14)),
        ("ep", "it-pending", RemoteStatus::Running, None),
        ("ep", "it-skipped", RemoteStatus::Failed, hours(1)),
        ("two", "t-lost", RemoteStatus::Succeeded, hours(1)),
    ];
    for (p, id, remote, deadline) in items {
        let batch = BatchId::parse(if p == "ep" { "b1" } else { "b9" }).unwrap();
        let remote_batch = RemoteBatch {
            id: batch.clone(),
            status: BatchStatus::Running,
            total_items: None,
            created_at: Some(now),
            expires_at: None,
        };
        ledger
            .upsert_batches(&provider(p), &[remote_batch], now)
            .await
            .unwrap();
        let item = RemoteItem {
            id: ItemId::parse(id).unwrap(),
            status: remote,
            deadline,
            error: None,
            locator: None,
        };
        ledger
            .apply_item_page(&provider(p), &batch, None, &[item], None, now)
            .await
            .unwrap();
        let due = DueItem {
            provider: provider(p),
            batch,
            item: ItemId::parse(id).unwrap(),
            deadline,
            attempts: 0,
            locator: None,
        };
        match id {
            "it-lost" | "t-lost" => ledger.mark_lost(&due, "HTTP 410 Gone").await.unwrap(),
            "it-failed" => ledger.mark_failed(&due, "HTTP 404").await.unwrap(),
            "it-deferred" => ledger
                .mark_retry(&due, "connection reset", now + Duration::from_secs(3600))
                .await
                .unwrap(),
            _ => {}
        }
    }
}

#[tokio::test]
async fn status_items_lists_each_state_filter_and_provider() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = format!(
        "{}\n[[provider]]\nname = \"two\"\nkind = \"extract_page\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
        config_text(dir.path(), "http://127.0.0.1:9", "")
    );
    std::fs::write(&config, text).unwrap();
    seed(&dir.path().join("ledger.sqlite3")).await;

    let cases: [(&[&str], &[&str]); 8] = [
        (
            &[],
            &[
                "it-deferred",
                "it-failed",
                "it-lost",
                "it-pending",
                "it-risk",
                "it-safe",
                "it-skipped",
                "t-lost",
            ],
        ),
        (&["--state", "lost"], &["it-lost", "t-lost"]),
        (&["--state", "lost", "--provider", "ep"], &["it-lost"]),
        (&["--state", "lost", "--provider", "two"], &["t-lost"]),
        (&["--state", "failed"], &["it-failed"]),
        (&["--state", "deferred"], &["it-deferred"]),
        (&["--state", "at-risk"], &["it-risk"]),
        (&["--state", "skipped"], &["it-skipped"]),
    ];
    let config2 = config.clone();
    tokio::task::spawn_blocking(move || {
        for (args, want) in cases {
            let (ids, count) = listed(&config2, args);
            assert_eq!(ids, want, "{args:?}");
            assert_eq!(count, want.len() as u64, "{args:?}");
        }
    })
    .await
    .unwrap();

    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            (
                status(&config, &["--items", "--state", "deferred"]),
                status(&config, &["--items", "--state", "failed"]),
                status(&config, &["--items", "--limit", "3"]),
                listed(&config, &["--limit", "3"]),
            )
        }
    })
    .await
    .unwrap();
    let (deferred, failed, limited, (first, count)) = out;
    let text = stdout(&deferred);
    let header = text.lines().next().unwrap();
    for column in [
        "provider",
        "batch",
        "item",
        "state",
        "deadline",
        "size",
        "last error",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let line = text.lines().find(|l| l.contains("it-deferred")).unwrap();
    assert!(
        line.contains(" deferred ") && line.ends_with("connection reset"),
        "{text}"
    );
    let text = stdout(&failed);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ep ") && l.contains(" failed ") && l.ends_with("HTTP 404")),
        "{text}"
    );
    let text = stdout(&limited);
    assert_eq!(text.lines().count(), 1 + 3 + 1, "{text}");
    assert!(text.contains("5 more of 8 not shown (--limit 3)"), "{text}");
    assert_eq!((first.len(), count), (3, 8));
}

#[test]
fn status_items_refuses_an_unknown_state_or_provider_and_filters_without_items() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, config_text(dir.path(), "http://127.0.0.1:9", "")).unwrap();
    let out = status(&config, &["--items", "--state", "gone"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at-risk"),
        "{out:?}"
    );
    let out = status(&config, &["--state", "lost"]);
    assert_eq!(out.status.code(), Some(2), "--state needs --items: {out:?}");
    let out = status(&config, &["--items", "--provider", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no provider \"nope\" is configured"),
        "{out:?}"
    );
    // No ledger yet: said so, exit 0.
    let out = status(&config, &["--items"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("no ledger"), "{out:?}");
}
