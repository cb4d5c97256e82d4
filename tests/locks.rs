//! Issue 16, defect 6: the locks are on files, not names. A hard link to the ledger is the ledger;
//! two daemons with different ledgers cannot share a mirror root; readers are never locked out.

use std::path::Path;
use std::process::Output;

use batchmirror::daemon::{self, Mirror};
use batchmirror::error::{Error, LedgerError, StorageError};
use batchmirror::ledger::Ledger;
use batchmirror::storage::ROOT_LOCK;

use crate::common::*;

/// Nothing listens there; opening a mirror never connects.
const NOWHERE: &str = "http://127.0.0.1:1";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config in `dir` whose ledger is `dir`'s own but whose mirror root is `root`'s.
fn config_sharing_root(dir: &Path, root: &Path) -> String {
    config_text(dir, NOWHERE, "").replace(
        &format!("root = \"{}/mirror\"", dir.display()),
        &format!("root = \"{}\"", root.display()),
    )
}

#[test]
fn a_hard_link_to_the_ledger_is_locked_while_the_ledger_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let link = dir.path().join("alias.sqlite3");
    let first = Ledger::open(&path).unwrap();
    std::fs::hard_link(&path, &link).unwrap();
    let err = Ledger::open(&link).unwrap_err();
    match &err {
        LedgerError::Locked { path: p, lock } => assert_eq!((p, lock), (&link, &link)),
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("another batchmirror") && message.contains("alias.sqlite3"),
        "{message}"
    );
    drop(first);
    Ledger::open(&link).unwrap();
}

#[test]
fn a_second_process_through_another_name_is_refused_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, config_text(dir.path(), NOWHERE, "")).unwrap();
    let path = dir.path().join("ledger.sqlite3");
    drop(Ledger::open(&path).unwrap());
    let link = dir.path().join("alias.sqlite3");
    std::fs::hard_link(&path, &link).unwrap();
    // This process holds the ledger through the link; the binary opens it by its own name.
    let held = Ledger::open(&link).unwrap();
    let out = run_cli(&["sync", "--once"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("another batchmirror") && err.contains("ledger.sqlite3"),
        "{err}"
    );
    drop(held);
}

#[tokio::test]
async fn a_second_mirror_on_the_same_root_is_refused_and_deletes_nothing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = settings(a.path(), NOWHERE);
    let mut second = settings(b.path(), NOWHERE);
    second.storage_root = first.storage_root.clone();
    let mirror = Mirror::open(first.clone()).await.unwrap();
    let root = first.storage_root.canonicalize().unwrap();
    assert!(root.join(ROOT_LOCK).is_file());
    // A result the first mirror is still writing.
    let part = root.join("ep/b-000/it-0-0.json.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, b"{\"half\":").unwrap();

    let err = match Mirror::open(second.clone()).await {
        Err(e) => e,
        Ok(_) => panic!("a second mirror opened on a locked root"),
    };
    match &err {
        Error::Storage(StorageError::RootLocked { root: r, lock }) => {
            assert_eq!((r, lock), (&root, &root.join(ROOT_LOCK)));
        }
        other => panic!("expected RootLocked, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 1, "as for a locked ledger");
    let message = err.to_string();
    assert!(
        message.contains("in use by another batchmirror") && message.contains("storage.root"),
        "{message}"
    );
    assert!(
        part.is_file(),
        "the refused mirror removed the first one's .part"
    );
    assert_eq!(
        files_under(&root),
        std::slice::from_ref(&part),
        "the lock is not a file"
    );

    // Once the first is gone, the second owns the root and clears what a crash would have left.
    drop(mirror);
    let _second = Mirror::open(second).await.unwrap();
    assert!(!part.exists());
}

#[tokio::test]
async fn a_second_process_on_the_same_root_exits_1_and_status_still_reads() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = settings(a.path(), NOWHERE);
    let config_a = a.path().join("c.toml");
    std::fs::write(&config_a, config_text(a.path(), NOWHERE, "")).unwrap();
    let config_b = b.path().join("c.toml");
    std::fs::write(
        &config_b,
        config_sharing_root(b.path(), &first.storage_root),
    )
    .unwrap();
    let _mirror = Mirror::open(first.clone()).await.unwrap();

    let out = run_cli(&["sync", "--once"], &config_b);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("in use by another batchmirror"), "{err}");

    // Readers take neither lock: status works beside the writer, in-process and from another.
    let report = daemon::status(&first).await.unwrap();
    assert!(report.ledger_exists);
    let out = run_cli(&["status"], &config_a);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
