//! The ledger contract (`LedgerStore`), one suite for both backends: each scenario below runs on
//! a SQLite ledger in a temp dir and on PostgreSQL (a fresh schema per test on the server of
//! `scripts/services.sh`; skipped loudly without it, never under CI). Then what only a shared
//! ledger has: several daemons claiming at once, leases expiring and taken over, the old owner
//! refused, one walker per provider.

use std::collections::HashSet;
use std::time::Duration;

use batchmirror::error::LedgerError;
use batchmirror::ledger::pg::{PgLedger, PgSettings};
use batchmirror::ledger::{Ledger, LedgerStore};
use batchmirror::model::{
    BatchId, BatchStatus, DueItem, ItemFilter, ItemId, ItemState, Pace, ProviderName, Published,
    RemoteBatch, RemoteItem, RemoteStatus, WalkState,
};
use chrono::{DateTime, TimeZone, Utc};

use crate::common::services::pg_url;

fn acme() -> ProviderName {
    ProviderName::parse("acme").unwrap()
}

fn bid(s: &str) -> BatchId {
    BatchId::parse(s).unwrap()
}

/// A fixed, whole-millisecond clock (the ledger keeps ms), close to the real one so that leases
/// and `claim_due`'s own clock agree with it.
fn now() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(Utc::now().timestamp_millis())
        .unwrap()
}

fn batch(id: &str, status: BatchStatus, total: Option<u64>) -> RemoteBatch {
    RemoteBatch {
        id: bid(id),
        status,
        total_items: total,
        created_at: None,
        expires_at: None,
    }
}

fn item(id: &str, status: RemoteStatus, deadline: Option<DateTime<Utc>>) -> RemoteItem {
    RemoteItem {
        id: ItemId::parse(id).unwrap(),
        status,
        deadline,
        error: None,
        locator: Some(format!("loc-{id}")),
    }
}

fn ids(items: &[DueItem]) -> Vec<String> {
    items.iter().map(|d| d.item.as_str().to_owned()).collect()
}

fn published(tag: &str) -> Published {
    Published {
        rel_path: format!("acme/b1/{tag}"),
        bytes: 12,
        sha256: format!("{tag:0>64}"),
    }
}

async fn state_of(l: &dyn LedgerStore, batch: &str, id: &str) -> ItemState {
    l.item(&acme(), &bid(batch), &ItemId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row for {id}"))
        .state
}

/// Ready items are claimed earliest deadline first (no deadline last); pending, skipped and
/// already claimed ones never are; a provider filter restricts the claim.
async fn claims_go_earliest_deadline_first(l: &dyn LedgerStore) {
    let t = now();
    let h = |n: i64| Some(t + chrono::Duration::hours(n));
    let items = [
        item("a", RemoteStatus::Succeeded, h(3)),
        item("b", RemoteStatus::Succeeded, h(1)),
        item("c", RemoteStatus::Succeeded, None),
        item("d", RemoteStatus::Succeeded, h(2)),
        item("e", RemoteStatus::Running, h(1)),
        item("f", RemoteStatus::Failed, h(1)),
    ];
    let b1 = batch("b1", BatchStatus::Completed, Some(6));
    l.apply_item_page(&acme(), &bid("b1"), Some(&b1), &items, None, t)
        .await
        .unwrap();
    assert_eq!(state_of(l, "b1", "e").await, ItemState::Pending);
    assert_eq!(state_of(l, "b1", "f").await, ItemState::Skipped);

    let first = l.claim_due(&[], t, 2).await.unwrap();
    assert_eq!(ids(&first), ["b", "d"]);
    assert_eq!(first[0].locator.as_deref(), Some("loc-b"));
    let other = ProviderName::parse("other").unwrap();
    assert!(l.claim_due(&[other], t, 10).await.unwrap().is_empty());
    let rest = l.claim_due(&[acme()], t, 10).await.unwrap();
    assert_eq!(
        ids(&rest),
        ["a", "c"],
        "the item without a deadline comes last"
    );
    assert!(l.claim_due(&[], t, 10).await.unwrap().is_empty());
    assert_eq!(state_of(l, "b1", "a").await, ItemState::Downloading);
    let mut flying = ids(&l.in_flight().await.unwrap());
    flying.sort();
    assert_eq!(flying, ["a", "b", "c", "d"]);
}

/// Each outcome lands once; a final row never changes again; counts, at-risk and `handled`
/// follow; alerts fire once; pass results and pacing are kept.
async fn outcomes_are_recorded_and_counted(l: &dyn LedgerStore) {
    let t = now();
    let soon = Some(t + chrono::Duration::minutes(30));
    let later = Some(t + chrono::Duration::hours(5));
    let items = [
        item("x1", RemoteStatus::Succeeded, later),
        item("x2", RemoteStatus::Succeeded, later),
        item("x3", RemoteStatus::Succeeded, later),
        item("x4", RemoteStatus::Succeeded, soon),
    ];
    let b1 = batch("b1", BatchStatus::Completed, Some(4));
    l.apply_item_page(&acme(), &bid("b1"), Some(&b1), &items, None, t)
        .await
        .unwrap();
    let claimed = l.claim_due(&[], t, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    assert_eq!(
        claimed[0].item.as_str(),
        "x4",
        "the earliest deadline first"
    );
    let by = |id: &str| {
        claimed
            .iter()
            .find(|d| d.item.as_str() == id)
            .unwrap()
            .clone()
    };
    l.mark_mirrored(&by("x1"), &published("x1"), t)
        .await
        .unwrap();
    l.mark_failed(&by("x2"), "HTTP 404").await.unwrap();
    l.mark_lost(&by("x3"), "HTTP 410").await.unwrap();
    l.release(&[by("x4")]).await.unwrap();
    // A second outcome on a final row changes nothing (and is no error).
    l.mark_mirrored(&by("x1"), &published("again"), t)
        .await
        .unwrap();

    let row = |id: &'static str| async move {
        l.item(&acme(), &bid("b1"), &ItemId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap()
    };
    let x1 = row("x1").await;
    assert_eq!(x1.state, ItemState::Mirrored);
    assert_eq!(
        (x1.bytes, x1.sha256.as_deref(), x1.path.as_deref()),
        (
            Some(12),
            Some(published("x1").sha256.as_str()),
            Some("acme/b1/x1")
        )
    );
    let x2 = row("x2").await;
    assert_eq!(
        (x2.state, x2.attempts, x2.last_error.as_deref()),
        (ItemState::Failed, 1, Some("HTTP 404"))
    );
    let x3 = row("x3").await;
    assert_eq!((x3.state, x3.attempts), (ItemState::Lost, 1));
    let x4 = row("x4").await;
    assert_eq!(
        (x4.state, x4.attempts),
        (ItemState::Ready, 0),
        "release counts no attempt"
    );

    let margin = Duration::from_secs(3600);
    let summary = l
        .summary(&[(acme(), "sandbox".to_owned())], t, margin)
        .await
        .unwrap();
    let s = &summary[0];
    let count = |st: ItemState| s.items[st.as_str()];
    assert_eq!(
        [
            count(ItemState::Mirrored),
            count(ItemState::Failed),
            count(ItemState::Lost),
            count(ItemState::Ready),
            count(ItemState::Pending),
        ],
        [1, 1, 1, 1, 0]
    );
    assert_eq!(s.at_risk, 1, "x4 is due within the margin");
    assert_eq!(s.oldest_unmirrored_deadline_secs, Some(30 * 60));
    let risky = l.at_risk(t, margin, 10).await.unwrap();
    assert_eq!(ids(&risky), ["x4"]);
    let lost = l
        .list_items(&[acme()], ItemFilter::State(ItemState::Lost), t, margin, 10)
        .await
        .unwrap();
    assert_eq!((lost.count, lost.first[0].item.as_str()), (1, "x3"));

    assert!(!l.refresh_handled(&acme(), &bid("b1")).await.unwrap());
    assert_eq!(l.unhandled_batches(&acme()).await.unwrap(), [bid("b1")]);
    let x4 = l.claim_due(&[], t, 10).await.unwrap();
    l.mark_mirrored(&x4[0], &published("x4"), t).await.unwrap();
    assert!(l.refresh_handled(&acme(), &bid("b1")).await.unwrap());
    assert!(l.unhandled_batches(&acme()).await.unwrap().is_empty());

    assert!(l.claim_alert("lost:acme/b1/x3", t).await.unwrap());
    assert!(!l.claim_alert("lost:acme/b1/x3", t).await.unwrap());
    l.clear_alert("lost:acme/b1/x3").await.unwrap();
    assert!(l.claim_alert("lost:acme/b1/x3", t).await.unwrap());

    let t2 = t + chrono::Duration::minutes(5);
    assert_eq!(
        l.record_pass(&acme(), t, Some("503")).await.unwrap(),
        Some(t)
    );
    assert_eq!(
        l.record_pass(&acme(), t2, Some("503")).await.unwrap(),
        Some(t)
    );
    assert_eq!(l.record_pass(&acme(), t2, None).await.unwrap(), None);
    let pace = Pace {
        per_minute: Some(90.0),
        throttles: 3,
        waited_secs: 1.5,
    };
    assert_eq!(l.pace(&acme()).await.unwrap(), None);
    l.save_pace(&acme(), pace).await.unwrap();
    assert_eq!(l.pace(&acme()).await.unwrap(), Some(pace));
}

/// A retry counts an attempt and defers the item until its next attempt is due.
async fn retries_are_deferred_then_due_again(l: &dyn LedgerStore) {
    let t = now();
    let items = [item("r1", RemoteStatus::Succeeded, None)];
    l.apply_item_page(&acme(), &bid("b1"), None, &items, None, t)
        .await
        .unwrap();
    let claimed = l.claim_due(&[], t, 10).await.unwrap();
    let next = t + chrono::Duration::minutes(10);
    l.mark_retry(&claimed[0], "HTTP 503", next).await.unwrap();
    let row = l
        .item(&acme(), &bid("b1"), &ItemId::parse("r1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            row.state,
            row.attempts,
            row.next_attempt_at,
            row.last_error.as_deref()
        ),
        (ItemState::Ready, 1, Some(next), Some("HTTP 503"))
    );
    assert!(
        l.claim_due(&[], t, 10).await.unwrap().is_empty(),
        "deferred"
    );
    let deferred = l.deferred(&[acme()], t, 10).await.unwrap();
    assert_eq!(deferred.count, 1);
    let unmirrored = l
        .unmirrored(&[acme()], t, t, Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(
        unmirrored.count, 1,
        "a deferred item is reported as not mirrored"
    );
    let again = l
        .claim_due(&[], next + chrono::Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!((ids(&again), again[0].attempts), (vec!["r1".to_owned()], 1));
    l.release(&again).await.unwrap();
    assert_eq!(state_of(l, "b1", "r1").await, ItemState::Ready);
}

/// A walk cut short resumes at its saved position; the watermark moves only on completion.
async fn walks_resume_where_they_stopped(l: &dyn LedgerStore) {
    let p = acme();
    let t = now();
    let margin = Duration::from_secs(60);
    let done = |id: &str| batch(id, BatchStatus::Completed, Some(0));
    assert!(l.take_walker(&p).await.unwrap());
    assert_eq!(l.walk(&p).await.unwrap(), None);
    let w1 = l.begin_walk(&p, false, None, t).await.unwrap();
    assert_eq!((w1.walk, w1.state), (1, WalkState::Running));
    let seen = l
        .apply_list_page(&p, 1, &[done("a")], Some("c2"), false, margin, t)
        .await
        .unwrap();
    assert!(!seen[0].within, "no walk has completed yet");
    l.fail_walk(&p, 1, "page 2: HTTP 503", t).await.unwrap();
    let failed = l.walk(&p).await.unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.position.as_deref(), failed.pages),
        (WalkState::Failed, Some("c2"), 1)
    );
    assert_eq!(failed.last_error.as_deref(), Some("page 2: HTTP 503"));
    l.apply_list_page(&p, 1, &[done("b")], None, true, margin, t)
        .await
        .unwrap();
    let complete = l.walk(&p).await.unwrap().unwrap();
    assert_eq!(
        (complete.state, complete.complete_through, complete.pages),
        (WalkState::Complete, Some(1), 2)
    );
    assert_eq!(
        complete.complete_since,
        Some(t - chrono::Duration::seconds(60))
    );
    let w2 = l.begin_walk(&p, true, None, t).await.unwrap();
    assert_eq!(
        (w2.walk, w2.complete_through, w2.position),
        (2, Some(1), None)
    );
    let seen = l
        .apply_list_page(&p, 2, &[done("n"), done("a")], Some("x"), false, margin, t)
        .await
        .unwrap();
    assert_eq!(
        seen.iter().map(|s| s.within).collect::<Vec<_>>(),
        [false, true]
    );
    l.complete_walk(&p, 2, margin, t).await.unwrap();
    assert_eq!(l.walk(&p).await.unwrap().unwrap().complete_through, Some(2));
    l.drop_walker(&p).await.unwrap();
}

/// An item page's cursor is saved with its rows; a page without one keeps the old cursor; a
/// cursor saved on its own can be cleared; an unknown batch gets a `pending` row.
async fn cursors_go_with_their_page(l: &dyn LedgerStore) {
    let (p, t) = (acme(), now());
    let page1 = [item("i1", RemoteStatus::Succeeded, None)];
    l.apply_item_page(&p, &bid("nb"), None, &page1, Some("c1"), t)
        .await
        .unwrap();
    assert_eq!(
        l.item_cursor(&p, &bid("nb")).await.unwrap().as_deref(),
        Some("c1")
    );
    assert_eq!(l.unhandled_batches(&p).await.unwrap(), [bid("nb")]);
    let page2 = [item("i2", RemoteStatus::Running, None)];
    l.apply_item_page(&p, &bid("nb"), None, &page2, None, t)
        .await
        .unwrap();
    assert_eq!(
        l.item_cursor(&p, &bid("nb")).await.unwrap().as_deref(),
        Some("c1")
    );
    assert_eq!(state_of(l, "nb", "i2").await, ItemState::Pending);
    // A listing never regresses a claimed item.
    let claimed = l.claim_due(&[], t, 1).await.unwrap();
    assert_eq!(ids(&claimed), ["i1"]);
    l.apply_item_page(&p, &bid("nb"), None, &page1, None, t)
        .await
        .unwrap();
    assert_eq!(state_of(l, "nb", "i1").await, ItemState::Downloading);

    l.save_cursor(&p, "batches", Some("k9")).await.unwrap();
    assert_eq!(
        l.cursor(&p, "batches").await.unwrap().as_deref(),
        Some("k9")
    );
    l.save_cursor(&p, "batches", None).await.unwrap();
    assert_eq!(l.cursor(&p, "batches").await.unwrap(), None);
    let handled = l
        .upsert_batches(&p, &[batch("nb", BatchStatus::Completed, Some(2))], t)
        .await
        .unwrap();
    assert_eq!(handled, [false]);
}

/// A listing updates known rows by the merge rule (an absent deadline or locator keeps the old
/// one), and a page that lists an item twice ends as if its rows came one by one.
async fn pages_merge_into_known_rows(l: &dyn LedgerStore) {
    let (p, t) = (acme(), now());
    let d1 = Some(t + chrono::Duration::hours(1));
    let d2 = Some(t + chrono::Duration::hours(2));
    let first = [item("k1", RemoteStatus::Running, d1)];
    l.apply_item_page(&p, &bid("b1"), None, &first, None, t)
        .await
        .unwrap();
    let mut done = item("k1", RemoteStatus::Succeeded, None);
    done.locator = None;
    l.apply_item_page(&p, &bid("b1"), None, &[done], None, t)
        .await
        .unwrap();
    let row = l
        .item(&p, &bid("b1"), &ItemId::parse("k1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.deadline, row.remote_status.as_deref()),
        (ItemState::Ready, d1, Some("succeeded"))
    );
    let claimed = l.claim_due(&[], t, 1).await.unwrap();
    assert_eq!(
        claimed[0].locator.as_deref(),
        Some("loc-k1"),
        "the locator is kept"
    );
    l.release(&claimed).await.unwrap();

    let mut failed = item("k2", RemoteStatus::Failed, None);
    failed.error = Some("bad scan".to_owned());
    let twice = [
        item("k2", RemoteStatus::Running, d2),
        failed,
        item("k2", RemoteStatus::Succeeded, None),
    ];
    l.apply_item_page(&p, &bid("b1"), None, &twice, None, t)
        .await
        .unwrap();
    let row = l
        .item(&p, &bid("b1"), &ItemId::parse("k2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.deadline, row.last_error.as_deref()),
        (ItemState::Skipped, d2, Some("bad scan")),
        "pending, then skipped (final), then a success that cannot undo it"
    );
}

/// Settings for a fresh schema on the test server.
fn fresh(lease: Duration, walker: Duration) -> PgSettings {
    PgSettings {
        schema: format!("t_{:016x}", rand::random::<u64>()),
        lease,
        walker_lease: walker,
        pool_size: 4,
    }
}

async fn pg_with(settings: &PgSettings) -> Option<PgLedger> {
    let url = pg_url()?;
    Some(
        PgLedger::connect(&url, settings.clone())
            .await
            .expect("the test PostgreSQL server accepts the ledger"),
    )
}

async fn sqlite() -> (Ledger, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
    (l, dir)
}

/// Each scenario as a SQLite test and a PostgreSQL test of the same name.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $scenario() {
                let (l, _dir) = super::sqlite().await;
                super::$scenario(&l).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $scenario() {
                let lease = super::Duration::from_secs(300);
                let s = super::fresh(lease, lease);
                let Some(l) = super::pg_with(&s).await else { return };
                super::$scenario(&l).await;
            })*
        }
    };
}

on_both!(
    claims_go_earliest_deadline_first,
    outcomes_are_recorded_and_counted,
    retries_are_deferred_then_due_again,
    walks_resume_where_they_stopped,
    cursors_go_with_their_page,
    pages_merge_into_known_rows,
);

/// A failed connection names the server but never the password, whether it came in the URL.
#[tokio::test]
async fn a_connection_error_never_shows_the_password() {
    // Port 1 on loopback: refused at once, no server needed.
    let err = PgLedger::connect(
        "postgres://mirror:s3cret-pw@127.0.0.1:1/bm?password=other-pw",
        PgSettings::default(),
    )
    .await
    .unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(
        !shown.contains("s3cret-pw") && !shown.contains("other-pw"),
        "{shown}"
    );
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
}

mod shared {
    //! What only a shared ledger has: several daemons on one PostgreSQL schema.
    use super::*;

    async fn ready_items(l: &dyn LedgerStore, n: usize) {
        let t = now();
        let items: Vec<RemoteItem> = (0..n)
            .map(|i| {
                let d = t + chrono::Duration::seconds(i as i64);
                item(&format!("it-{i:04}"), RemoteStatus::Succeeded, Some(d))
            })
            .collect();
        let b1 = batch("b1", BatchStatus::Completed, Some(n as u64));
        l.apply_item_page(&acme(), &bid("b1"), Some(&b1), &items, None, t)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn two_daemons_claiming_at_once_never_get_the_same_item() {
        let s = fresh(Duration::from_secs(300), Duration::from_secs(300));
        let Some(a) = pg_with(&s).await else { return };
        let b = pg_with(&s).await.unwrap();
        assert_ne!(a.owner(), b.owner());
        ready_items(&a, 300).await;
        let drain = |l: PgLedger| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let claimed = l.claim_due(&[], now(), 7).await.unwrap();
                    if claimed.is_empty() {
                        return got;
                    }
                    got.extend(ids(&claimed));
                }
            })
        };
        let (ga, gb) = (drain(a.clone()), drain(b.clone()));
        let (ga, gb) = (ga.await.unwrap(), gb.await.unwrap());
        let (sa, sb): (HashSet<_>, HashSet<_>) = (ga.iter().collect(), gb.iter().collect());
        assert_eq!(
            (sa.len(), sb.len()),
            (ga.len(), gb.len()),
            "no item twice to one daemon"
        );
        assert!(sa.is_disjoint(&sb), "an item went to both daemons");
        assert_eq!(ga.len() + gb.len(), 300, "every item claimed once");
        assert!(
            !ga.is_empty() && !gb.is_empty(),
            "both daemons claimed: {} / {}",
            ga.len(),
            gb.len()
        );
        assert_eq!(
            a.in_flight().await.unwrap().len(),
            ga.len(),
            "in_flight is a daemon's own"
        );
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_the_old_owner_is_refused() {
        // Lease 5 s; every wait keeps at least 1.5 s from the expiry it tests, either way.
        let s = fresh(Duration::from_secs(5), Duration::from_secs(300));
        let Some(a) = pg_with(&s).await else { return };
        let b = pg_with(&s).await.unwrap();
        ready_items(&a, 1).await;
        let mine = a.claim_due(&[], now(), 10).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert!(
            b.claim_due(&[], now(), 10).await.unwrap().is_empty(),
            "leased"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            a.renew_leases(&mine).await.unwrap().is_empty(),
            "still ours: renewed"
        );
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(
            b.claim_due(&[], now(), 10).await.unwrap().is_empty(),
            "the renewed lease has not expired"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let taken = b.claim_due(&[], now(), 10).await.unwrap();
        assert_eq!(ids(&taken), ids(&mine), "an expired lease is due again");
        assert_eq!(taken[0].attempts, 0, "a takeover counts no attempt");

        assert_eq!(
            a.renew_leases(&mine).await.unwrap(),
            mine,
            "the old owner learns it lost it"
        );
        let late = a.mark_mirrored(&mine[0], &published("late"), now()).await;
        assert!(
            matches!(late, Err(LedgerError::LeaseLost { .. })),
            "{late:?}"
        );
        let msg = late.unwrap_err().to_string();
        assert!(msg.contains("acme/b1/it-0000"), "{msg}");
        assert!(matches!(
            a.mark_retry(&mine[0], "x", now()).await,
            Err(LedgerError::LeaseLost { .. })
        ));
        a.release(&mine).await.unwrap();
        assert_eq!(
            state_of(&b, "b1", "it-0000").await,
            ItemState::Downloading,
            "not released"
        );

        b.mark_mirrored(&taken[0], &published("new"), now())
            .await
            .unwrap();
        let row = b
            .item(&acme(), &bid("b1"), &taken[0].item)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.state, row.sha256),
            (ItemState::Mirrored, Some(published("new").sha256))
        );
    }

    #[tokio::test]
    async fn one_walker_per_provider_at_a_time() {
        let s = fresh(Duration::from_secs(300), Duration::from_secs(4));
        let Some(a) = pg_with(&s).await else { return };
        let b = pg_with(&s).await.unwrap();
        let (p, other) = (acme(), ProviderName::parse("other").unwrap());
        assert!(a.take_walker(&p).await.unwrap());
        assert!(!b.take_walker(&p).await.unwrap(), "a walks acme");
        assert!(
            b.take_walker(&other).await.unwrap(),
            "turns are per provider"
        );
        assert!(
            a.take_walker(&p).await.unwrap(),
            "the walker renews its turn"
        );
        a.drop_walker(&p).await.unwrap();
        assert!(b.take_walker(&p).await.unwrap(), "a gave its turn up");
        a.drop_walker(&p).await.unwrap();
        assert!(
            !a.take_walker(&p).await.unwrap(),
            "dropping another's turn does nothing"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            a.take_walker(&p).await.unwrap(),
            "b's turn expired: a takes over"
        );
        assert!(!b.take_walker(&p).await.unwrap());
    }

    fn refused<T>(r: Result<T, LedgerError>) -> bool {
        matches!(r, Err(LedgerError::LeaseLost { .. }))
    }

    #[tokio::test]
    async fn a_walker_whose_turn_was_taken_over_cannot_move_the_walk() {
        let s = fresh(Duration::from_secs(300), Duration::from_secs(1));
        let Some(a) = pg_with(&s).await else { return };
        let b = pg_with(&s).await.unwrap();
        let (p, t, margin) = (acme(), now(), Duration::ZERO);
        let done = |id: &str| batch(id, BatchStatus::Completed, Some(0));
        assert!(
            refused(b.begin_walk(&p, false, None, t).await),
            "no walk without the turn"
        );
        assert!(a.take_walker(&p).await.unwrap());
        let w = a.begin_walk(&p, false, None, t).await.unwrap();
        a.apply_list_page(&p, w.walk, &[done("a")], Some("c2"), false, margin, t)
            .await
            .unwrap();
        // `a` stalls past its turn; `b` takes over and resumes the walk.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(b.take_walker(&p).await.unwrap());
        b.apply_list_page(&p, w.walk, &[done("b")], Some("c3"), false, margin, t)
            .await
            .unwrap();
        let late = a
            .apply_list_page(&p, w.walk, &[done("z")], Some("c9"), false, margin, t)
            .await;
        assert!(refused(late), "the stale walker moved the walk");
        assert!(refused(a.fail_walk(&p, w.walk, "late", t).await));
        assert!(refused(a.complete_walk(&p, w.walk, margin, t).await));
        let walk = b.walk(&p).await.unwrap().unwrap();
        assert_eq!(
            (walk.state, walk.position.as_deref(), walk.pages),
            (WalkState::Running, Some("c3"), 2)
        );
        let z = b.unhandled_batches(&p).await.unwrap();
        assert!(
            !z.contains(&bid("z")),
            "the refused page's rows were rolled back: {z:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_item_page_saves_neither_its_rows_nor_its_cursor() {
        let s = fresh(Duration::from_secs(300), Duration::from_secs(300));
        let Some(l) = pg_with(&s).await else { return };
        let t = now();
        let ok = item("ok", RemoteStatus::Succeeded, None);
        // PostgreSQL refuses a NUL in text: the statement fails mid-page.
        let mut bad = item("bad", RemoteStatus::Succeeded, None);
        bad.locator = Some("a\0b".to_owned());
        let err = l
            .apply_item_page(&acme(), &bid("b1"), None, &[ok, bad], Some("c1"), t)
            .await;
        assert!(err.is_err());
        assert_eq!(l.item_cursor(&acme(), &bid("b1")).await.unwrap(), None);
        let row = l
            .item(&acme(), &bid("b1"), &ItemId::parse("ok").unwrap())
            .await
            .unwrap();
        assert_eq!(row, None, "the page's first row was rolled back with it");
    }

    #[tokio::test]
    async fn daemons_starting_together_migrate_once() {
        let s = fresh(Duration::from_secs(300), Duration::from_secs(300));
        let Some(url) = pg_url() else { return };
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let (url, s) = (url.clone(), s.clone());
                tokio::spawn(async move { PgLedger::connect(&url, s).await })
            })
            .collect();
        for s in starts {
            s.await.unwrap().expect("each daemon opens the ledger");
        }
    }
}
