//! Tests of the ledger against real database files in a temporary directory: locking, corruption
//! and version refusal, the item-state merge, claiming order, handled batches and the summary.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::model::ItemId;

use super::queries::merged_state;
use super::*;
use crate::model::{BatchStatus, RemoteStatus};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn p(s: &str) -> ProviderName {
    ProviderName::parse(s).unwrap()
}

fn b(s: &str) -> BatchId {
    BatchId::parse(s).unwrap()
}

fn i(s: &str) -> ItemId {
    ItemId::parse(s).unwrap()
}

fn batch(id: &str, status: BatchStatus, total: Option<u64>) -> RemoteBatch {
    RemoteBatch {
        id: b(id),
        status,
        total_items: total,
        created_at: Some(t(0)),
        expires_at: Some(t(86_400)),
    }
}

fn item(id: &str, status: RemoteStatus, deadline: Option<i64>) -> RemoteItem {
    RemoteItem {
        locator: None,
        id: i(id),
        status,
        deadline: deadline.map(t),
        error: None,
    }
}

fn open_in(dir: &Path) -> Ledger {
    Ledger::open(&dir.join("sub").join("ledger.sqlite3")).unwrap()
}

/// One batch `b1` of provider `acme` holding `items`.
async fn seed(l: &Ledger, items: &[RemoteItem]) {
    let acme = p("acme");
    l.upsert_batches(&acme, &[batch("b1", BatchStatus::Running, None)], t(0))
        .await
        .unwrap();
    l.apply_item_page(&acme, &b("b1"), None, items, None, t(0))
        .await
        .unwrap();
}

async fn state_of(l: &Ledger, id: &str) -> ItemState {
    l.item(&p("acme"), &b("b1"), &i(id))
        .await
        .unwrap()
        .unwrap()
        .state
}

#[test]
fn second_open_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let first = Ledger::open(&path).unwrap();
    let clone = first.clone();
    match Ledger::open(&path) {
        Err(LedgerError::Locked { lock, .. }) => assert_eq!(lock, lock_path(&path)),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    assert!(matches!(
        Ledger::open(&path),
        Err(LedgerError::Locked { .. })
    ));
    drop(clone);
    Ledger::open(&path).unwrap();
}

#[test]
fn garbage_file_is_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("short", b"definitely not sqlite".to_vec()),
        (
            "long",
            (0..20_000u32).map(|n| (n * 7 % 251) as u8).collect(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        match Ledger::open(&path) {
            Err(LedgerError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} modified");
        assert!(matches!(
            Ledger::open_read_only(&path),
            Err(LedgerError::Corrupt { .. })
        ));
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    {
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    for r in [Ledger::open(&path), Ledger::open_read_only(&path)] {
        match r {
            Err(LedgerError::TooNew {
                found, supported, ..
            }) => {
                assert_eq!(found, 99);
                assert_eq!(supported, schema::SUPPORTED_VERSION);
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
}

#[test]
fn read_only_open_of_a_missing_ledger_says_no_pass_has_run() {
    let dir = tempfile::tempdir().unwrap();
    let err = Ledger::open_read_only(&dir.path().join("none.sqlite3")).unwrap_err();
    assert!(err.to_string().contains("sync --once"), "{err}");
    assert!(!dir.path().join("none.sqlite3").exists());
}

#[tokio::test]
async fn reopen_keeps_data_and_read_only_works_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("ledger.sqlite3");
    {
        let l = Ledger::open(&path).unwrap();
        seed(&l, &[item("a", RemoteStatus::Succeeded, Some(10))]).await;
    }
    let l = Ledger::open(&path).unwrap();
    assert_eq!(l.path(), path);
    assert_eq!(state_of(&l, "a").await, ItemState::Ready);
    let mode: String = l
        .inner
        .conn
        .lock()
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let ro = Ledger::open_read_only(&path).unwrap();
    let row = ro
        .item(&p("acme"), &b("b1"), &i("a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.deadline, Some(t(10)));
    let err = ro.record_pass(&p("acme"), t(1), None).await.unwrap_err();
    assert!(matches!(err, LedgerError::Sqlite { .. }), "{err:?}");
}

#[test]
fn merge_rule_never_regresses_final_or_claimed_items() {
    use ItemState as S;
    use RemoteStatus as R;
    assert_eq!(merged_state(None, R::Running), S::Pending);
    assert_eq!(merged_state(None, R::Succeeded), S::Ready);
    assert_eq!(merged_state(None, R::Failed), S::Skipped);
    assert_eq!(merged_state(Some(S::Pending), R::Succeeded), S::Ready);
    assert_eq!(merged_state(Some(S::Pending), R::Cancelled), S::Skipped);
    assert_eq!(merged_state(Some(S::Ready), R::Running), S::Ready);
    assert_eq!(merged_state(Some(S::Ready), R::Failed), S::Skipped);
    for s in [S::Downloading, S::Mirrored, S::Failed, S::Lost, S::Skipped] {
        for r in [R::Pending, R::Succeeded, R::Failed, R::Skipped] {
            assert_eq!(merged_state(Some(s), r), s, "{s:?} + {r:?}");
        }
    }
}

#[tokio::test]
async fn item_pages_never_regress_final_items_and_save_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    let acme = p("acme");
    seed(
        &l,
        &[
            item("m", RemoteStatus::Succeeded, Some(100)),
            item("l", RemoteStatus::Succeeded, Some(50)),
            item("w", RemoteStatus::Running, None),
        ],
    )
    .await;
    assert_eq!(l.item_cursor(&acme, &b("b1")).await.unwrap(), None);
    let claimed = l.claim_due(&[], t(0), 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (lost, mirrored) = (&claimed[0], &claimed[1]);
    assert_eq!(lost.item, i("l"));
    let published = Published {
        rel_path: "acme/b1/m.json".into(),
        bytes: 42,
        sha256: "ab".repeat(32),
    };
    l.mark_mirrored(mirrored, &published, t(1)).await.unwrap();
    l.mark_lost(lost, "HTTP 410").await.unwrap();

    let mut failed = item("m", RemoteStatus::Failed, Some(200));
    failed.error = Some("provider says no".into());
    let mut w_failed = item("w", RemoteStatus::Failed, None);
    w_failed.error = Some("ocr crashed".into());
    let page = [
        failed,
        item("l", RemoteStatus::Succeeded, None),
        w_failed,
        item("n", RemoteStatus::Pending, Some(300)),
    ];
    let done = batch("b1", BatchStatus::Completed, Some(4));
    l.apply_item_page(&acme, &b("b1"), Some(&done), &page, Some("c2"), t(2))
        .await
        .unwrap();

    let m = l.item(&acme, &b("b1"), &i("m")).await.unwrap().unwrap();
    assert_eq!(m.state, ItemState::Mirrored);
    assert_eq!(
        (m.bytes, m.path.as_deref()),
        (Some(42), Some("acme/b1/m.json"))
    );
    assert_eq!(m.remote_status.as_deref(), Some("failed"));
    assert_eq!(m.deadline, Some(t(200)), "deadline refreshes");
    assert_eq!(m.last_error, None, "a mirrored item takes no remote error");
    let lrow = l.item(&acme, &b("b1"), &i("l")).await.unwrap().unwrap();
    assert_eq!((lrow.state, lrow.attempts), (ItemState::Lost, 1));
    assert_eq!(
        lrow.deadline,
        Some(t(50)),
        "a None deadline keeps the old one"
    );
    assert_eq!(lrow.last_error.as_deref(), Some("HTTP 410"));
    let w = l.item(&acme, &b("b1"), &i("w")).await.unwrap().unwrap();
    assert_eq!(w.state, ItemState::Skipped);
    assert_eq!(w.last_error.as_deref(), Some("ocr crashed"));
    assert_eq!(state_of(&l, "n").await, ItemState::Pending);
    assert_eq!(
        l.item_cursor(&acme, &b("b1")).await.unwrap().as_deref(),
        Some("c2")
    );
    // A page without a cursor keeps the saved one; a failed page saves nothing.
    l.apply_item_page(&acme, &b("b1"), None, &[], None, t(3))
        .await
        .unwrap();
    assert_eq!(
        l.item_cursor(&acme, &b("b1")).await.unwrap().as_deref(),
        Some("c2")
    );
    // The final state is sticky against later worker outcomes too.
    l.mark_retry(mirrored, "late", t(9)).await.unwrap();
    assert_eq!(state_of(&l, "m").await, ItemState::Mirrored);
}

#[tokio::test]
async fn claim_due_orders_by_deadline_respects_limits_and_retry_times() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    seed(
        &l,
        &[
            item("late", RemoteStatus::Succeeded, Some(300)),
            item("none", RemoteStatus::Succeeded, None),
            item("early", RemoteStatus::Succeeded, Some(100)),
            item("mid", RemoteStatus::Succeeded, Some(200)),
            item("wait", RemoteStatus::Running, Some(1)),
        ],
    )
    .await;
    let ids = |v: &[DueItem]| v.iter().map(|d| d.item.to_string()).collect::<Vec<_>>();
    let first = l.claim_due(&[], t(0), 2).await.unwrap();
    assert_eq!(ids(&first), ["early", "mid"]);
    assert_eq!(first[0].deadline, Some(t(100)));
    assert_eq!(state_of(&l, "early").await, ItemState::Downloading);
    // Retry "early" later than the next claim's horizon: it is skipped until then.
    l.mark_retry(&first[0], "HTTP 503", t(60)).await.unwrap();
    l.release(&first[1..]).await.unwrap();
    let second = l.claim_due(&[], t(30), 10).await.unwrap();
    assert_eq!(ids(&second), ["mid", "late", "none"], "NULL deadlines last");
    assert!(l.claim_due(&[], t(30), 10).await.unwrap().is_empty());
    let third = l.claim_due(&[], t(60), 10).await.unwrap();
    assert_eq!(ids(&third), ["early"]);
    assert_eq!(third[0].attempts, 1);
    let row = l
        .item(&p("acme"), &b("b1"), &i("early"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.next_attempt_at, Some(t(60)));
    assert_eq!(row.last_error.as_deref(), Some("HTTP 503"));
    // Released rows do not count an attempt; in_flight lists what is still claimed.
    assert_eq!(
        l.item(&p("acme"), &b("b1"), &i("mid"))
            .await
            .unwrap()
            .unwrap()
            .attempts,
        0
    );
    let flying = l.in_flight().await.unwrap();
    assert_eq!(ids(&flying), ["early", "mid", "late", "none"]);
    l.mark_failed(&flying[1], "HTTP 404").await.unwrap();
    assert_eq!(state_of(&l, "mid").await, ItemState::Failed);
}

#[tokio::test]
async fn claim_due_filters_by_provider_and_is_atomic_across_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    for prov in ["acme", "beta"] {
        l.upsert_batches(&p(prov), &[batch("b1", BatchStatus::Running, None)], t(0))
            .await
            .unwrap();
        let items: Vec<_> = (0..50)
            .map(|n| item(&format!("{prov}-{n}"), RemoteStatus::Succeeded, Some(n)))
            .collect();
        l.apply_item_page(&p(prov), &b("b1"), None, &items, None, t(0))
            .await
            .unwrap();
    }
    let only_beta = l.claim_due(&[p("beta")], t(0), 5).await.unwrap();
    assert!(only_beta.iter().all(|d| d.provider == p("beta")));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.claim_due(&[], t(0), 7).await.unwrap() })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for task in tasks {
        for d in task.await.unwrap() {
            assert!(seen.insert((d.provider, d.item)), "claimed twice");
        }
    }
    assert_eq!(seen.len(), 56);
}

#[tokio::test]
async fn refresh_handled_needs_terminal_all_final_and_all_rows() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    let acme = p("acme");
    let running = batch("b1", BatchStatus::Running, Some(2));
    let done = batch("b1", BatchStatus::Completed, Some(2));
    l.upsert_batches(&acme, std::slice::from_ref(&running), t(0))
        .await
        .unwrap();
    assert!(!l.refresh_handled(&acme, &b("unknown")).await.unwrap());
    let a = [item("a", RemoteStatus::Succeeded, Some(5))];
    l.apply_item_page(&acme, &b("b1"), Some(&done), &a, None, t(1))
        .await
        .unwrap();
    assert!(
        !l.refresh_handled(&acme, &b("b1")).await.unwrap(),
        "a is ready"
    );
    let due = l.claim_due(&[], t(1), 10).await.unwrap();
    let published = Published {
        rel_path: "x".into(),
        bytes: 1,
        sha256: "0".repeat(64),
    };
    l.mark_mirrored(&due[0], &published, t(2)).await.unwrap();
    assert!(
        !l.refresh_handled(&acme, &b("b1")).await.unwrap(),
        "1 of 2 rows"
    );
    assert_eq!(l.unhandled_batches(&acme).await.unwrap(), [b("b1")]);
    let c = [item("c", RemoteStatus::Cancelled, None)];
    l.apply_item_page(&acme, &b("b1"), None, &c, None, t(3))
        .await
        .unwrap();
    assert!(l.refresh_handled(&acme, &b("b1")).await.unwrap());
    assert!(l.unhandled_batches(&acme).await.unwrap().is_empty());
    let other = batch("b2", BatchStatus::Completed, None);
    let flags = l
        .upsert_batches(&acme, &[done.clone(), other], t(4))
        .await
        .unwrap();
    assert_eq!(flags, [true, false]);
    // A status change makes it unhandled again.
    let flags = l
        .upsert_batches(&acme, &[running, done], t(5))
        .await
        .unwrap();
    assert_eq!(flags, [false, false]);
}

#[tokio::test]
async fn summary_counts_states_risk_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    let acme = p("acme");
    seed(
        &l,
        &[
            item("r1", RemoteStatus::Succeeded, Some(3_600)),
            item("r2", RemoteStatus::Succeeded, Some(-60)),
            item("r3", RemoteStatus::Succeeded, Some(86_400)),
            item("p1", RemoteStatus::Running, None),
            item("s1", RemoteStatus::Failed, Some(10)),
        ],
    )
    .await;
    l.record_pass(&acme, t(5), Some("HTTP 500")).await.unwrap();
    let providers = [
        (acme.clone(), "extract_page".to_owned()),
        (p("idle"), "talonic".into()),
    ];
    let s = l
        .summary(&providers, t(0), Duration::from_secs(7_200))
        .await
        .unwrap();
    assert_eq!(s.len(), 2);
    let a = &s[0];
    assert_eq!((a.name.as_str(), a.kind.as_str()), ("acme", "extract_page"));
    assert_eq!(a.items.len(), ItemState::ALL.len());
    assert_eq!(a.items["ready"], 3);
    assert_eq!(a.items["pending"], 1);
    assert_eq!(a.items["skipped"], 1);
    assert_eq!(a.items["mirrored"], 0);
    assert_eq!(a.at_risk, 2, "r1 within the margin, r2 already passed");
    assert_eq!(a.oldest_unmirrored_deadline_secs, Some(-60));
    assert_eq!(a.last_pass_at, Some(t(5)));
    assert_eq!(a.last_error.as_deref(), Some("HTTP 500"));
    let idle = &s[1];
    assert!(idle.items.values().all(|n| *n == 0));
    assert_eq!((idle.at_risk, idle.last_pass_at), (0, None));
    l.record_pass(&acme, t(6), None).await.unwrap();
    let s = l
        .summary(&providers[..1], t(0), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((s[0].at_risk, s[0].last_error.as_deref()), (1, None));

    let risky = l
        .at_risk(t(0), Duration::from_secs(7_200), 10)
        .await
        .unwrap();
    let ids: Vec<_> = risky.iter().map(|d| d.item.to_string()).collect();
    assert_eq!(ids, ["r2", "r1"]);
    assert_eq!(
        l.at_risk(t(0), Duration::from_secs(7_200), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let ready = l.items_in_state(&acme, ItemState::Ready, 10).await.unwrap();
    let ids: Vec<_> = ready.iter().map(|r| r.item.as_str()).collect();
    assert_eq!(ids, ["r2", "r1", "r3"]);
}

#[test]
fn claim_query_uses_the_due_index() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    let plan = l.explain_claim().unwrap();
    assert!(!plan.is_empty());
    for line in &plan {
        assert!(
            line.contains("USING INDEX items_due")
                || line.contains("USING COVERING INDEX items_due"),
            "{plan:?}"
        );
        assert!(!line.contains("TEMP B-TREE"), "{plan:?}");
    }
}

#[tokio::test]
async fn generic_cursors_save_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    let acme = p("acme");
    l.save_cursor(&acme, "batches", Some("x")).await.unwrap();
    assert_eq!(
        l.cursor(&acme, "batches").await.unwrap().as_deref(),
        Some("x")
    );
    l.save_cursor(&acme, "batches", None).await.unwrap();
    assert_eq!(l.cursor(&acme, "batches").await.unwrap(), None);
}

#[tokio::test]
async fn an_unrecognized_status_is_kept_pending_with_its_error_then_follows_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    let mut odd = item("x", RemoteStatus::Unrecognized, Some(100));
    odd.error = Some("unknown item status \"frobbed\"".into());
    seed(&l, &[odd]).await;
    let row = l
        .item(&p("acme"), &b("b1"), &i("x"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ItemState::Pending, "never given up on");
    assert!(
        row.last_error.unwrap().contains("frobbed"),
        "recorded, not silent"
    );
    seed(&l, &[item("x", RemoteStatus::Succeeded, Some(100))]).await;
    assert_eq!(state_of(&l, "x").await, ItemState::Ready);
}

#[tokio::test]
async fn each_alert_is_claimed_once_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    assert!(l.claim_alert("lost:a/b/c", t(0)).await.unwrap());
    assert!(!l.claim_alert("lost:a/b/c", t(1)).await.unwrap());
    l.clear_alert("lost:a/b/c").await.unwrap();
    assert!(l.claim_alert("lost:a/b/c", t(2)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_outcomes_each_commit_once_and_leave_the_connection_at_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_in(dir.path());
    let items: Vec<_> = (0..200)
        .map(|n| item(&format!("it-{n}"), RemoteStatus::Succeeded, Some(n)))
        .collect();
    seed(&l, &items).await;
    let claimed = l.claim_due(&[], t(0), 200).await.unwrap();
    assert_eq!(claimed.len(), 200);
    // Every caller gets its own answer, whether it led a commit or waited for another's; the
    // failed and lost ones go through the same queue as the mirrored ones.
    let tasks: Vec<_> = claimed
        .into_iter()
        .enumerate()
        .map(|(n, d)| {
            let l = l.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros((n % 7) as u64 * 50)).await;
                match n % 3 {
                    0 => {
                        let published = Published {
                            rel_path: format!("acme/b1/{}.json", d.item.as_str()),
                            bytes: n as u64,
                            sha256: format!("{n:064x}"),
                        };
                        l.mark_mirrored(&d, &published, t(1)).await
                    }
                    1 => l.mark_failed(&d, "refused").await,
                    _ => l.mark_lost(&d, "gone").await,
                }
            })
        })
        .collect();
    for task in tasks {
        // A follower stranded without a leader would wait forever: fail instead.
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("an outcome was never committed")
            .unwrap()
            .unwrap();
    }
    for n in 0..200 {
        let row = l
            .item(&p("acme"), &b("b1"), &i(&format!("it-{n}")))
            .await
            .unwrap()
            .unwrap();
        let want = [ItemState::Mirrored, ItemState::Failed, ItemState::Lost][n % 3];
        assert_eq!(row.state, want, "it-{n}");
        if want == ItemState::Mirrored {
            assert_eq!(row.bytes, Some(n as u64));
        }
    }
    // Outcomes commit with synchronous=NORMAL; everything else must still commit with FULL (2).
    let sync: i64 = l
        .run(|c| c.pragma_query_value(None, "synchronous", |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(sync, 2, "the connection is back at synchronous=FULL");
}
