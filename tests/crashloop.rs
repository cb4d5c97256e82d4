//! The crash-loop harness of issue 7, short: the real binary SIGKILLed ten times mid-mirror, then
//! one uninterrupted pass, then the ledger invariants. `scripts/crashloop.sh` runs the long one.

use std::time::Duration;

use batchmirror::lab::crashloop::{CrashloopOptions, crashloop};

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sigkills_mid_mirror_lose_corrupt_and_publish_twice_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mut o = CrashloopOptions::new(BIN.into(), 7);
    o.loops = 10;
    o.items = 200;
    o.item_bytes = 6000;
    o.concurrency = 4;
    // Long enough for a debug build on a busy machine to reach its downloads before most kills.
    o.max_life = Duration::from_millis(600);
    o.work_root = work.path().to_owned();
    let v = crashloop(o).await.expect("the harness runs");
    let report = format!("{}\n{}", v.line(), v.details().join("\n"));
    assert!(v.passed(), "{report}");
    assert!(
        v.items > 150 && v.items < 200,
        "some items fail at the provider, most do not: {report}"
    );
    assert_eq!(v.kills.kills + v.kills.exited_early, 10, "{report}");
    // The kills must really have interrupted work, or the verdict proves nothing.
    assert!(
        v.kills.downloads_in_flight > 0,
        "no kill found downloads in flight: {report}"
    );
    assert!(
        v.kills.items_unmirrored > 0,
        "no kill found items left to mirror: {report}"
    );
    assert!(
        v.refetched_bytes > 0,
        "no download was interrupted and fetched again: {report}"
    );
    let claimed = batchmirror::download::claimed_at_most(4);
    assert!(
        v.kills.max_in_flight <= claimed,
        "more rows in flight than the {claimed} a daemon claims: {report}"
    );
    assert!(
        std::fs::read_dir(work.path()).unwrap().next().is_none(),
        "a passing loop leaves nothing behind"
    );
}
