//! Alerts through a command: exactly one event per lost item, even across separate runs.

use std::collections::HashMap;
use std::time::Duration;

use batchmirror::{config, daemon};
use batchmirror_sandbox::Delivery;
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test]
async fn the_alert_command_gets_exactly_one_event_per_lost_item() {
    let four_days = 4.0 * 24.0 * 3600.0;
    let mut old = batch(
        "old",
        vec![
            done_item("x", four_days, Delivery::Inline),
            done_item("y", four_days, Delivery::Redirect),
        ],
    );
    old.created_ago = Duration::from_secs(5 * 24 * 3600);
    let sandbox = start(spec(vec![
        old,
        batch("new", vec![done_item("z", 10.0, Delivery::Inline)]),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("alerts.jsonl");
    let mut text = config_text(dir.path(), &sandbox.base_url(), "");
    text.push_str(&format!(
        "[alerts]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'\"]\n",
        events.display()
    ));
    let settings = config::load_str(&text, "test", &HashMap::new()).unwrap();

    // Two separate runs, as cron would make them: the second must not alert again.
    for _ in 0..2 {
        daemon::sync_once(settings.clone(), CancellationToken::new())
            .await
            .unwrap();
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let mut items: Vec<_> = lines
        .iter()
        .map(|e| {
            assert_eq!(e["event"], "item_lost");
            assert_eq!(e["provider"], "ep");
            assert_eq!(e["batch"], "old");
            e["item"].as_str().unwrap().to_owned()
        })
        .collect();
    items.sort();
    assert_eq!(items, ["x", "y"]);
}

#[tokio::test]
async fn a_failing_alert_command_never_blocks_mirroring() {
    let mut old = batch(
        "old",
        vec![done_item("x", 4.0 * 24.0 * 3600.0, Delivery::Inline)],
    );
    old.created_ago = Duration::from_secs(5 * 24 * 3600);
    let fresh = (0..3)
        .map(|i| done_item(&format!("f{i}"), 10.0, Delivery::Inline))
        .collect();
    let sandbox = start(spec(vec![old, batch("new", fresh)])).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(dir.path(), &sandbox.base_url(), "");
    // The lost item fires an alert whose command cannot even start.
    text.push_str("[alerts]\ncommand = [\"/nonexistent/alert-me\"]\n");
    let settings = config::load_str(&text, "test", &HashMap::new()).unwrap();
    let report = daemon::sync_once(settings, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 3, "{report:?}");
    assert_eq!(report.download.lost, 1);
}

#[tokio::test]
async fn a_provider_failing_across_separate_runs_alerts_once_after_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("alerts.jsonl");
    // Port 1 on loopback refuses at once; one attempt per request keeps each run short.
    let mut text = config_text(dir.path(), "http://127.0.0.1:1", "")
        .replace("max_retries = 3", "max_retries = 1");
    text.push_str(&format!(
        "[alerts]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'\"]\nprovider_failing_after = \"1s\"\n",
        events.display()
    ));
    let settings = config::load_str(&text, "test", &HashMap::new()).unwrap();
    let run = || daemon::sync_once(settings.clone(), CancellationToken::new());

    assert_eq!(run().await.unwrap().exit_code(), 1);
    assert!(
        !events.exists(),
        "failing for less than the threshold: no alert yet"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run().await.unwrap();
    run().await.unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "provider_failing");
    assert_eq!(lines[0]["provider"], "ep");
}
