//! `sync --once --dry-run` on the real binary against the sandbox: it lists and plans, prints what
//! would be fetched and lost, and fetches and writes nothing (issue 16).
//!
//! Multi-threaded runtimes: the binary runs blocking while the in-process sandbox serves it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use batchmirror::ledger::Ledger;
use batchmirror_sandbox::{Delivery, Sandbox};

use crate::common::*;

/// A config for `dir` against the sandbox, written to `dir/c.toml`.
fn config(dir: &Path, sandbox: &Sandbox) -> PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(&path, config_text(dir, &sandbox.base_url(), "")).unwrap();
    path
}

fn dry_run(config: &Path, json: bool) -> (Output, String) {
    let args: &[&str] = if json {
        &["sync", "--once", "--dry-run", "--json"]
    } else {
        &["sync", "--once", "-n"]
    };
    let out = run_cli(args, config);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The item ids of one section of the JSON plan, in its order.
fn ids(plan: &serde_json::Value, section: &str) -> Vec<String> {
    plan[section]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item"].as_str().unwrap().to_owned())
        .collect()
}

/// The ledger file's bytes (hashed) and mtime, and the names beside it.
fn ledger_fingerprint(dir: &Path) -> (String, SystemTime, Vec<String>) {
    let path = dir.join("ledger.sqlite3");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (sha256_file(&path), mtime, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_on_a_fresh_config_lists_the_ready_items_and_writes_nothing() {
    let sandbox = start(spec(finished_batches(3, 4))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sandbox);
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();

    let (out, stdout) = dry_run(&config, true);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let plan = json(&stdout);
    let mut fetched = ids(&plan, "fetch");
    fetched.sort();
    let mut expected: Vec<String> = (0..3)
        .flat_map(|b| (0..4).map(move |i| format!("it-{b}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(fetched, expected, "{stdout}");
    assert_eq!(plan["would_fetch"], 12);
    assert_eq!(plan["would_lose"], 0);
    assert_eq!(plan["ledger_exists"], false);

    let stats = sandbox.stats();
    assert!(stats.list_requests > 0, "the dry run lists");
    assert_eq!(total(&stats.result_requests), 0, "no result was requested");
    assert_eq!(stats.store_requests, 0, "no result was downloaded");
    assert!(files_under(&dir.path().join("mirror")).is_empty());
    let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        after.len(),
        before.len(),
        "no ledger (nor lock) was created"
    );
    assert!(!dir.path().join("ledger.sqlite3").exists());

    let (out, text) = dry_run(&config, false);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text.starts_with("dry run: nothing was fetched or written"),
        "{text}"
    );
    assert!(
        text.contains("would fetch 12 (0.0 MB known), would lose 0, not ready 0, listing errors 0"),
        "{text}"
    );
    assert_eq!(
        text.matches(" it-").count(),
        12,
        "one line per item: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_sync_a_dry_run_would_fetch_nothing_and_leaves_the_ledger_alone() {
    let sandbox = start(spec(finished_batches(2, 3))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sandbox);
    let out = run_cli(&["sync", "--once"], &config);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mirrored = files_under(&dir.path().join("mirror"));
    let results = total(&sandbox.stats().result_requests);
    let ledger = ledger_fingerprint(dir.path());
    // A whole second of mtime resolution between the two, so a write could not hide.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let (out, stdout) = dry_run(&config, false);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("would fetch 0 (0.0 MB known), would lose 0"),
        "{stdout}"
    );
    assert_eq!(
        ledger_fingerprint(dir.path()),
        ledger,
        "the real ledger is unchanged"
    );
    assert_eq!(files_under(&dir.path().join("mirror")), mirrored);
    assert_eq!(total(&sandbox.stats().result_requests), results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_past_its_deadline_would_be_lost_and_exits_1() {
    let four_days = 4.0 * 24.0 * 3600.0;
    let mut old = batch("old", vec![done_item("x", four_days, Delivery::Inline)]);
    old.created_ago = Duration::from_secs(5 * 24 * 3600);
    let sandbox = start(spec(vec![
        old,
        batch("new", vec![done_item("z", 10.0, Delivery::Inline)]),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sandbox);

    let (out, stdout) = dry_run(&config, true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let plan = json(&stdout);
    assert_eq!(ids(&plan, "lose"), ["x"], "{stdout}");
    assert_eq!(ids(&plan, "fetch"), ["z"], "{stdout}");
    let (out, text) = dry_run(&config, false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text.contains("would fetch 1 (0.0 MB known), would lose 1"),
        "{text}"
    );
    assert_eq!(total(&sandbox.stats().result_requests), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_works_while_a_daemon_holds_the_ledger() {
    let sandbox = start(spec(finished_batches(1, 3))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sandbox);
    let held = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
    let ledger = ledger_fingerprint(dir.path());

    let (out, stdout) = dry_run(&config, true);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json(&stdout)["would_fetch"], 3, "{stdout}");
    assert_eq!(ledger_fingerprint(dir.path()), ledger);
    // The holder still has its lock: a second writer is refused.
    assert!(Ledger::open(&dir.path().join("ledger.sqlite3")).is_err());
    drop(held);
}
