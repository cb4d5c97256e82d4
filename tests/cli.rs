//! The command line's exit codes and messages: bad config, unreadable key, unreachable provider,
//! locked and corrupt ledgers.

use std::process::{Command, Output};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = config_text(dir.path(), "http://127.0.0.1:9", "")
        .replace("concurrency = 4", "concurrency = 0");
    std::fs::write(&path, text).unwrap();
    let out = run_cli(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("download.concurrency"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&path, "[download]\nconcurency = 3\n").unwrap();
    let out = run_cli(&["sync", "--once"], &path);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("concurency"), "{}", stderr(&out));

    let out = run_cli(&["status"], &dir.path().join("missing.toml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}

#[test]
fn unreadable_key_file_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = config_text(dir.path(), "http://127.0.0.1:9", "").replace(
        &format!("api_key = \"{KEY}\""),
        "api_key_file = \"/nonexistent/acme.key\"",
    );
    std::fs::write(&path, text).unwrap();
    let out = run_cli(&["run"], &path);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/acme.key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_prints_the_config_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(dir.path(), "http://127.0.0.1:9", "")).unwrap();
    let out = run_cli(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("extract_page"));
    assert!(!all.contains(KEY), "the API key leaked: {all}");
}

#[test]
fn completions_are_printed_for_bash() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_batchmirror()") && script.contains("check-config"),
        "{script}"
    );
}

#[test]
fn unreachable_provider_exits_1_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    // Port 1 on loopback: connection refused at once.
    std::fs::write(&path, config_text(dir.path(), "http://127.0.0.1:1", "")).unwrap();
    let out = run_cli(&["sync", "--once"], &path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ep") && err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains(KEY));
}

#[test]
fn a_second_instance_and_a_corrupt_ledger_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(dir.path(), "http://127.0.0.1:1", "")).unwrap();
    let held = batchmirror::ledger::Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
    let out = run_cli(&["sync", "--once"], &path);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("another batchmirror"),
        "{}",
        stderr(&out)
    );
    drop(held);

    let ledger = dir.path().join("ledger.sqlite3");
    for f in ["ledger.sqlite3-wal", "ledger.sqlite3-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::write(
        &ledger,
        b"this is not a database, it is a shopping list\n".repeat(100),
    )
    .unwrap();
    let before = std::fs::read(&ledger).unwrap();
    let out = run_cli(&["sync", "--once"], &path);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&ledger).unwrap(),
        before,
        "a corrupt ledger is never rewritten"
    );
}

#[tokio::test]
async fn sync_once_draws_no_progress_bar_when_stderr_is_not_a_terminal() {
    let sandbox = start(spec(finished_batches(2, 3))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(dir.path(), &sandbox.base_url(), "")).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["sync", "--once", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("ETA") && !err.contains('\r'),
        "progress drawn into a log: {err}"
    );
    assert!(
        !err.contains('\x1b'),
        "terminal colour codes in a log: {err}"
    );
    assert!(
        err.contains("pass finished"),
        "the summary is still logged: {err}"
    );
}

/// A directory that exists but takes no file, even for root: /proc/sys/kernel.
const UNWRITABLE: &str = "/proc/sys/kernel";

#[tokio::test]
async fn an_unwritable_mirror_root_is_one_message_and_exit_2_before_any_download() {
    let sandbox = start(spec(finished_batches(2, 5))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = config_text(dir.path(), &sandbox.base_url(), "").replace(
        &format!("root = \"{}/mirror\"", dir.path().display()),
        &format!("root = \"{UNWRITABLE}\""),
    );
    assert!(text.contains(UNWRITABLE));
    std::fs::write(&path, text).unwrap();
    for args in [&["check-config"][..], &["sync", "--once"][..]] {
        let out = tokio::task::spawn_blocking({
            let (args, path) = (args.to_vec(), path.clone());
            move || run_cli(&args, &path)
        })
        .await
        .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("storage.root ({UNWRITABLE}) is not writable")),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("not writable").count(), 1, "one message: {err}");
    }
    let stats = sandbox.stats();
    assert_eq!(stats.list_requests, 0, "nothing listed");
    assert_eq!(total(&stats.result_requests), 0, "nothing downloaded");
    assert!(
        !dir.path().join("ledger.sqlite3").exists(),
        "no ledger opened"
    );
}

#[test]
fn an_unwritable_ledger_directory_exits_2_naming_ledger_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = config_text(dir.path(), "http://127.0.0.1:9", "").replace(
        &format!("path = \"{}/ledger.sqlite3\"", dir.path().display()),
        &format!("path = \"{UNWRITABLE}/ledger.sqlite3\""),
    );
    std::fs::write(&path, text).unwrap();
    let out = run_cli(&["sync", "--once"], &path);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("ledger.path ({UNWRITABLE}) is not writable")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_reports_each_directory_writable_with_its_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(dir.path(), "http://127.0.0.1:9", "")).unwrap();
    let out = run_cli(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    for key in ["ledger.path", "storage.root"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(key) && l.contains("writable") && l.contains("GB free")),
            "{err}"
        );
    }
    // The probe leaves nothing behind.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("mirror"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_refused_key_says_so_and_names_where_the_key_came_from() {
    let sandbox = start(spec(finished_batches(1, 2))).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ep.key");
    std::fs::write(&key_file, "not-the-key\n").unwrap();
    let path = dir.path().join("c.toml");
    let text = config_text(dir.path(), &sandbox.base_url(), "").replace(
        &format!("api_key = \"{KEY}\""),
        &format!("api_key_file = \"{}\"", key_file.display()),
    );
    assert!(text.contains("api_key_file"));
    std::fs::write(&path, text).unwrap();
    let out = tokio::task::spawn_blocking(move || run_cli(&["sync", "--once"], &path))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the API key was refused (HTTP 401)"), "{err}");
    assert!(
        err.contains(&format!("api_key_file {}", key_file.display())),
        "{err}"
    );
    assert!(
        !err.contains("not-the-key"),
        "the key itself never appears: {err}"
    );
    assert!(sandbox.stats().unauthorized > 0);
}

#[test]
fn a_key_in_clear_or_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config_text(dir.path(), "http://mirror.example.com", ""),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_cli(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the API key travels in clear; use https"),
        "{err}"
    );
    assert!(err.contains("readable by other users (mode 644)"), "{err}");
    assert!(!err.contains(KEY), "{err}");

    // Loopback http (the sandbox, a local proxy) and a private file: no warning.
    std::fs::write(&path, config_text(dir.path(), "http://127.0.0.1:9", "")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_cli(&["check-config"], &path);
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
}
