//! The pace a provider taught one run (it throttled) is kept in the ledger and the next run starts
//! from it instead of uncapped; `status --json` shows it.

use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::ProviderName;
use batchmirror_sandbox::{Delivery, Fault};
use tokio_util::sync::CancellationToken;

use crate::common::{self, batch, done_item, settings};

#[tokio::test]
async fn a_learned_cap_survives_a_restart_and_shows_in_status() {
    let items = (0..12)
        .map(|i| done_item(&format!("it-{i}"), 600.0, Delivery::Inline))
        .collect();
    let sandbox = common::start(common::spec(vec![batch("b-000", items)])).await;
    for _ in 0..3 {
        sandbox.push_fault(Fault::Status {
            path_prefix: "/v1/batches/b-000/items/".into(),
            status: 429,
            retry_after: Some("0".into()),
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &sandbox.base_url());
    let ep = ProviderName::parse("ep").unwrap();
    let pace = |s: &batchmirror::config::Settings| {
        let path = s.ledger_path.clone();
        let ep = ep.clone();
        async move {
            let ledger = Ledger::open_read_only(&path).unwrap();
            ledger.pace(&ep).await.unwrap().expect("a pace is recorded")
        }
    };

    let first = daemon::sync_once(s.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.exit_code(), 0, "{first:?}");
    let learned = pace(&s).await;
    let cap = learned.per_minute.expect("throttled: a cap was learned");
    assert!(learned.throttles >= 1, "{learned:?}");

    // A fresh run with nothing to throttle it starts from that cap, so its requests wait for it
    // (uncapped, none would), then climbs back and may lift it.
    let second = daemon::sync_once(s.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(second.exit_code(), 0, "{second:?}");
    let kept = pace(&s).await;
    assert!(
        kept.waited_secs > 0.05,
        "the learned cap {cap}/min was not restored: {kept:?}"
    );
    assert_eq!(kept.throttles, 0, "a new run counts its own throttles");

    let status = daemon::status(&s).await.unwrap();
    assert!(
        status.to_json().contains("\"waited_secs\""),
        "{}",
        status.to_json()
    );
    assert!(
        status.render_text().contains("pacing: "),
        "{}",
        status.render_text()
    );
}
