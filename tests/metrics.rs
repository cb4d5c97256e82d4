//! `/metrics` and `/healthz` of the in-process daemon: the text parses as Prometheus exposition
//! format and the counters move while it mirrors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::*;

/// Checks every line is a comment or `name{labels} value`, and returns the samples.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" HELP ") || comment.starts_with(" TYPE ") || comment == " EOF",
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_move_while_mirroring_and_healthz_answers() {
    let sandbox = start(spec(finished_batches(3, 4))).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, daemon, token) = run_serving_metrics(dir.path(), &sandbox.base_url());
    let client = reqwest::Client::new();

    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        if let Ok(resp) = client.get(format!("{url}/metrics")).send().await {
            let samples = parse_exposition(&resp.text().await.unwrap());
            if samples.get("batchmirror_items{provider=\"ep\",state=\"mirrored\"}") == Some(&12.0) {
                break samples;
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed 12 mirrored items"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(samples["batchmirror_mirrored_bytes_total{provider=\"ep\"}"] > 0.0);
    assert!(
        samples["batchmirror_requests_total{provider=\"ep\",status=\"ok\"}"] >= 12.0,
        "{samples:?}"
    );
    assert_eq!(samples["batchmirror_passes_total"], 1.0);
    assert_eq!(samples["batchmirror_lost_items{provider=\"ep\"}"], 0.0);
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    token.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}
