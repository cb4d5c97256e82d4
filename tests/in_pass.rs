//! Issue 17, "nothing lost, nothing silent": a body cut short or reset on its first two requests
//! lands within the same pass; one that fails every attempt of a pass is deferred, named, and keeps
//! `sync --once` at exit 1 (and listed by `status`) until it lands; a trickling body is abandoned by
//! the low-speed guard with the default settings and the pass still ends within 60 s; and passes
//! after an item is mirrored never fetch it again.

use std::time::{Duration, Instant};

use batchmirror::daemon;
use batchmirror::model::ItemState;
use batchmirror_sandbox::{Delivery, ResultFault, Sandbox};

use crate::common::*;
use crate::faults::{BAD, Case, assert_no_parts, drain_as_if_later};

/// No `[download]` keys: the default guard and retries, as shipped.
const DEFAULTS: &str = "";

/// Result-endpoint requests and object-store downloads, all items.
fn fetches(sandbox: &Sandbox) -> (u64, u64) {
    let s = sandbox.stats();
    (total(&s.result_requests), total(&s.store_downloads))
}

#[tokio::test]
async fn a_body_cut_short_or_reset_twice_lands_in_the_same_pass() {
    for fault in [ResultFault::ShortBody, ResultFault::Reset] {
        for delivery in [Delivery::Inline, Delivery::Redirect] {
            let case = Case::new(delivery, &[fault.clone(), fault.clone()], DEFAULTS).await;
            let report = case.pass().await;
            let what = format!("{fault:?}/{delivery:?}");
            assert_eq!(report.exit_code(), 0, "{what}: {report:?}");
            assert_eq!(report.download.mirrored, 3, "{what}: {report:?}");
            assert!(report.unmirrored_lines().is_empty(), "{what}");
            case.assert_intact(BAD).await;
            assert_eq!(case.result_requests(BAD), 3, "{what}");
            assert_no_parts(&case.settings);
            eprintln!("{what}: pass took {:?}, exit 0", report.elapsed);
        }
    }
}

#[tokio::test]
async fn an_item_failing_every_attempt_keeps_sync_once_at_exit_1_until_it_lands() {
    let case = Case::new(
        Delivery::Redirect,
        &vec![ResultFault::ShortBody; 3],
        DEFAULTS,
    )
    .await;
    let first = case.pass().await;
    assert_eq!(first.exit_code(), 1, "{first:?}");
    assert_eq!(first.download.retrying, 1);
    // The next pass comes before the item's next attempt: it skips the item and still says so.
    let started = Instant::now();
    let second = case.pass().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(second.download, Default::default(), "nothing was due");
    assert_eq!(
        second.exit_code(),
        1,
        "deferred is not mirrored: {second:?}"
    );
    assert_eq!(second.unmirrored.count, 1);
    let line = second.unmirrored_lines().remove(0);
    assert!(
        line.starts_with("ep/b/bad: deferred, next attempt ") && line.contains("end of file"),
        "{line}"
    );
    let summary = second.summary();
    assert!(summary.contains("not mirrored 1"), "{summary}");

    let status = daemon::status(&case.settings).await.unwrap();
    assert_eq!(status.deferred, 1);
    let json: serde_json::Value = serde_json::from_str(&status.to_json()).unwrap();
    let listed = &json["deferred_items"][0];
    assert_eq!(listed["item"], BAD);
    assert!(listed["next_attempt_at"].is_string(), "{listed}");
    let error = listed["last_error"].as_str().unwrap();
    assert!(error.contains("end of file"), "{error}");
    let text = status.render_text();
    assert!(
        text.contains("deferred (1 item(s)") && text.contains("ep/b/bad"),
        "{text}"
    );

    let later = drain_as_if_later(&case.settings).await;
    assert_eq!(later.mirrored, 1, "{later:?}");
    case.assert_intact(BAD).await;
    let third = case.pass().await;
    assert_eq!(third.exit_code(), 0, "{third:?}");
}

#[tokio::test]
async fn a_trickling_body_ends_the_pass_within_60_s_with_the_default_guard() {
    // Two attempts fit in the pass; both trickle (1 byte/s) from the object store.
    let case = Case::new(Delivery::Redirect, &vec![ResultFault::Trickle; 2], DEFAULTS).await;
    assert_eq!(
        case.settings.download.low_speed_time,
        Duration::from_secs(15)
    );
    let report = case.pass().await;
    eprintln!(
        "trickle, default guard: pass took {:?}, exit {}, mirrored {}",
        report.elapsed,
        report.exit_code(),
        report.download.mirrored
    );
    assert!(report.elapsed < Duration::from_secs(60), "{report:?}");
    assert_eq!(report.exit_code(), 1);
    case.assert_bad_is(ItemState::Ready, "too slow").await;
    let later = drain_as_if_later(&case.settings).await;
    assert_eq!(later.mirrored, 1, "{later:?}");
    case.assert_intact(BAD).await;
}

#[tokio::test]
async fn a_mirrored_item_is_never_fetched_again_by_later_passes() {
    let mix = [
        ResultFault::Reset,
        ResultFault::ShortBody,
        ResultFault::Reset,
    ];
    let case = Case::new(Delivery::Redirect, &mix, DEFAULTS).await;
    let first = case.pass().await;
    assert_eq!(
        first.exit_code(),
        1,
        "three faults outlast the pass: {first:?}"
    );
    drain_as_if_later(&case.settings).await;
    let settled = fetches(&case.sandbox);
    for _ in 0..3 {
        let idle = case.pass().await;
        assert_eq!(idle.exit_code(), 0, "{idle:?}");
        assert_eq!(idle.download, Default::default());
    }
    assert_eq!(
        fetches(&case.sandbox),
        settled,
        "no result or blob asked again"
    );
}
