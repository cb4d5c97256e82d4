//! The tracker on real files: what it must call a second publish, a corrupt file or a ledger that
//! disagrees with the disk, and what it must not.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::observe::{LedgerView, Record, Snapshot, Tracker, scan_mirror};
use super::world::{Item, World};

const BODY: &[u8] = b"{\"chunks\":[]}";

fn world() -> World {
    let item = |id: &str| Item {
        batch: "b".to_owned(),
        item: id.to_owned(),
        rel: PathBuf::from(format!("cl/b/{id}.json")),
        expected: Some((hex::encode(Sha256::digest(BODY)), BODY.len() as u64)),
    };
    World::from_items(vec![item("x"), item("y")])
}

/// What the daemon does: a new `.part`, renamed onto the final name.
fn publish(root: &Path, rel: &Path, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let part = path.with_extension("json.part");
    std::fs::write(&part, bytes).unwrap();
    std::fs::rename(&part, &path).unwrap();
}

fn look(
    w: &World,
    root: &Path,
    t: &Tracker,
    mirrored: &[usize],
    downloading: &[usize],
) -> Snapshot {
    let mut snap = scan_mirror(w, root, &t.known_files()).unwrap();
    let record = |k: usize| Record {
        sha256: w.items[k].expected.as_ref().map(|e| e.0.clone()),
        bytes: Some(BODY.len() as u64),
        path: Some(w.items[k].rel.to_string_lossy().into_owned()),
    };
    snap.ledger = Some(LedgerView {
        mirrored: mirrored.iter().map(|&k| (k, record(k))).collect(),
        downloading: downloading.to_vec(),
        rows: 2,
        quick_check: vec!["ok".to_owned()],
        ..LedgerView::default()
    });
    snap
}

#[test]
fn a_crash_between_publish_and_commit_then_adoption_is_one_publish() {
    let (dir, w) = (tempfile::tempdir().unwrap(), world());
    let mut t = Tracker::new(&w, 4);
    let started = chrono::Utc::now();
    publish(dir.path(), &w.items[0].rel, BODY);
    // What every daemon leaves in the root: no unexpected file.
    std::fs::write(dir.path().join(crate::storage::ROOT_LOCK), b"").unwrap();
    t.observe(&w, &look(&w, dir.path(), &t, &[], &[0]), 0, started, true);
    t.observe(&w, &look(&w, dir.path(), &t, &[0], &[]), 1, started, true);
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    assert!(t.republished.is_empty() && t.corrupt.is_empty());
    assert_eq!(t.stats.published_not_recorded, 1);
    assert_eq!(t.in_flight_kills[0], 1);
    assert_eq!(t.in_flight_bytes, BODY.len() as u64);
}

#[test]
fn the_same_bytes_published_again_are_a_duplicate() {
    let (dir, w) = (tempfile::tempdir().unwrap(), world());
    let mut t = Tracker::new(&w, 4);
    let started = chrono::Utc::now();
    publish(dir.path(), &w.items[0].rel, BODY);
    t.observe(&w, &look(&w, dir.path(), &t, &[], &[0]), 0, started, true);
    // Recovery re-fetched instead of adopting: identical bytes, but a second publish.
    publish(dir.path(), &w.items[0].rel, BODY);
    t.observe(&w, &look(&w, dir.path(), &t, &[0], &[]), 1, started, true);
    assert_eq!(t.republished.iter().copied().collect::<Vec<_>>(), [0]);
    assert!(t.corrupt.is_empty());
}

#[test]
fn a_torn_file_is_corrupt_and_a_file_the_ledger_does_not_know_is_reported() {
    let (dir, w) = (tempfile::tempdir().unwrap(), world());
    let mut t = Tracker::new(&w, 4);
    let started = chrono::Utc::now();
    publish(dir.path(), &w.items[0].rel, &BODY[..5]);
    publish(dir.path(), &w.items[1].rel, BODY);
    t.observe(&w, &look(&w, dir.path(), &t, &[0], &[]), 0, started, true);
    assert_eq!(t.corrupt.iter().copied().collect::<Vec<_>>(), [0]);
    assert!(
        t.problems
            .iter()
            .any(|p| p.starts_with("b/y:") && p.contains("neither mirrored nor in flight")),
        "{:?}",
        t.problems
    );
}

#[test]
fn a_mirrored_row_without_its_file_or_taken_back_is_reported() {
    let (dir, w) = (tempfile::tempdir().unwrap(), world());
    let mut t = Tracker::new(&w, 1);
    let started = chrono::Utc::now();
    publish(dir.path(), &w.items[0].rel, BODY);
    t.observe(
        &w,
        &look(&w, dir.path(), &t, &[0, 1], &[]),
        0,
        started,
        true,
    );
    assert!(
        t.problems
            .iter()
            .any(|p| p.starts_with("b/y:") && p.contains("file is missing")),
        "{:?}",
        t.problems
    );
    t.observe(
        &w,
        &look(&w, dir.path(), &t, &[], &[0, 1]),
        1,
        started,
        true,
    );
    assert!(
        t.republished.contains(&0),
        "un-mirroring counts as a publish undone"
    );
    assert!(
        t.problems
            .iter()
            .any(|p| p.contains("more than the 1 a daemon claims at once")),
        "{:?}",
        t.problems
    );
}

/// The final look of a clean run: both items published once and mirrored.
fn judged(served_x: u64, kills_in_flight_x: bool) -> super::CrashloopVerdict {
    let (dir, w) = (tempfile::tempdir().unwrap(), world());
    let mut t = Tracker::new(&w, 4);
    let started = chrono::Utc::now();
    if kills_in_flight_x {
        t.observe(&w, &look(&w, dir.path(), &t, &[], &[0]), 0, started, true);
    }
    publish(dir.path(), &w.items[0].rel, BODY);
    publish(dir.path(), &w.items[1].rel, BODY);
    let mut last = look(&w, dir.path(), &t, &[0, 1], &[]);
    t.observe(&w, &last, 1, started, false);
    last.digests = scan_mirror(&w, dir.path(), &Default::default())
        .unwrap()
        .digests;
    let mut served = batchmirror_sandbox::Stats::default();
    served
        .result_requests
        .insert(("b".into(), "x".into()), served_x);
    served.result_requests.insert(("b".into(), "y".into()), 1);
    super::verdict::judge(super::verdict::Outcome {
        seed: 1,
        loops: 1,
        claimed: 4,
        world: &w,
        tracker: t,
        last: &last,
        served: &served,
        final_exit: Some(0),
        result_delay: std::time::Duration::ZERO,
        elapsed: std::time::Duration::ZERO,
    })
}

#[test]
fn an_item_served_again_is_a_refetch_only_when_a_kill_found_it_in_flight() {
    let v = judged(2, true);
    assert!(v.passed(), "{}\n{:?}", v.line(), v.problems);
    assert_eq!(v.refetched_bytes, BODY.len() as u64);
    assert_eq!(v.in_flight_bytes, BODY.len() as u64);
    assert!(v.line().ends_with("quick_check ok — PASS"), "{}", v.line());

    let v = judged(2, false);
    assert!(!v.passed());
    assert_eq!(
        (v.lost, v.corrupt, v.duplicate),
        (0, 0, 1),
        "{:?}",
        v.problems
    );
    assert!(
        v.line().contains("refetched 13 > in-flight bound 0"),
        "{}",
        v.line()
    );

    let v = judged(1, false);
    assert!(v.passed(), "an item served once is fine: {:?}", v.problems);
    let v = judged(0, false);
    assert!(
        !v.passed(),
        "counters that miss an item would make the check vacuous"
    );
}
