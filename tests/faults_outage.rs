//! Faults over a whole account (issue 7): a provider down for an hour near deadlines (on the
//! sandbox's test clock), a seeded random mix of faults, and the fault switch of the `sandbox`
//! command.

use std::time::Duration;

use batchmirror::config::Settings;
use batchmirror::daemon;
use batchmirror::ledger::Ledger;
use batchmirror::model::ItemState;
use batchmirror_sandbox::{BatchSpec, Delivery, FaultMix, ItemSpec, Outcome, ResultFault, Sandbox};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::faults::{assert_intact, assert_no_parts, config, drain_as_if_later, ep, row};

const MIN: u64 = 60;

async fn json(resp: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// Two batches near their deadlines on a frozen simulated clock (retention 2 h): "late" was
/// created last, so it is listed and discovered first, but its results expire at +1h45; "soon"
/// is older and expires at +1h25.
fn near_deadlines() -> batchmirror_sandbox::SandboxSpec {
    let items = |prefix: &str, finished_ago: u64| {
        (0..3)
            .map(|i| ItemSpec {
                id: format!("{prefix}{i}"),
                finishes_at: -((finished_ago * MIN) as f64),
                outcome: Outcome::Succeeded,
                result_bytes: 2000,
                delivery: Delivery::Inline,
            })
            .collect()
    };
    let mut s = spec(vec![
        BatchSpec {
            id: "late".into(),
            created_ago: Duration::from_secs(20 * MIN),
            items: items("L", 15),
        },
        BatchSpec {
            id: "soon".into(),
            created_ago: Duration::from_secs(600 * MIN),
            items: items("S", 35),
        },
    ]);
    s.time_scale = 0.0;
    s.retention = Duration::from_secs(120 * MIN);
    s
}

/// The outage: an hour passes on the test clock, then the link recovers with room for one result
/// per 10 simulated minutes.
fn outage_then_slow_recovery(sandbox: &Sandbox) {
    sandbox.advance_clock(Duration::from_secs(60 * MIN));
    sandbox.set_outage(None);
    sandbox.set_result_cost(Duration::from_secs(10 * MIN));
}

/// What a first-in-first-out client saves: items in the order the API lists them. Returns the
/// items answered 410.
async fn fifo_losses(sandbox: &Sandbox) -> Vec<String> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{}{path}", sandbox.base_url()))
            .header("x-api-key", KEY)
            .send()
    };
    let list = json(get("/v1/batches".into()).await.unwrap()).await;
    let mut lost = Vec::new();
    for b in list["data"].as_array().unwrap() {
        let b = b["id"].as_str().unwrap();
        let detail = json(get(format!("/v1/batches/{b}")).await.unwrap()).await;
        for it in detail["items"].as_array().unwrap() {
            let it = it["id"].as_str().unwrap();
            let resp = get(format!("/v1/batches/{b}/items/{it}/result"))
                .await
                .unwrap();
            if resp.status() == 410 {
                lost.push(it.to_owned());
            }
            resp.bytes().await.unwrap();
        }
    }
    lost
}

#[tokio::test]
async fn after_an_hour_long_outage_earliest_deadline_first_saves_what_fifo_loses() {
    // The premise: on this account, a FIFO client loses the whole "soon" batch.
    let fifo = start(near_deadlines()).await;
    outage_then_slow_recovery(&fifo);
    let mut fifo_lost = fifo_losses(&fifo).await;
    fifo_lost.sort();
    assert_eq!(
        fifo_lost,
        ["S0", "S1", "S2"],
        "FIFO order loses the batch listed last"
    );

    let sandbox = start(near_deadlines()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = config(
        dir.path(),
        &sandbox.base_url(),
        "concurrency = 1",
        "max_retries = 1\nretention = \"2h\"",
    );
    // The outage starts right after the listing: every result request is refused.
    sandbox.set_outage(Some("/result"));
    let first = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.download.retrying, 6, "{first:?}");
    outage_then_slow_recovery(&sandbox);

    let report = drain_as_if_later(&settings).await;
    assert_eq!((report.mirrored, report.lost), (5, 1), "{report:?}");
    for s in ["S0", "S1", "S2"] {
        assert_intact(&sandbox, &settings, "soon", s).await;
    }
    let mut lost = Vec::new();
    for l in ["L0", "L1", "L2"] {
        let r = row(&settings, "late", l).await;
        match r.state {
            ItemState::Mirrored => assert_intact(&sandbox, &settings, "late", l).await,
            ItemState::Lost => {
                assert!(r.last_error.unwrap().contains("410"));
                lost.push(l);
            }
            other => panic!("{l} ended {other:?}"),
        }
    }
    assert_eq!(
        lost.len(),
        1,
        "only the last of the latest deadlines is lost"
    );
    // Saved are exactly the earliest deadlines.
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let saved = ledger
        .items_in_state(&ep(), ItemState::Mirrored, 100)
        .await
        .unwrap();
    let gone = ledger
        .items_in_state(&ep(), ItemState::Lost, 100)
        .await
        .unwrap();
    let latest_saved = saved.iter().filter_map(|r| r.deadline).max().unwrap();
    assert!(gone.iter().all(|r| r.deadline.unwrap() >= latest_saved));
    assert_no_parts(&settings);
}

async fn mirrored_count(settings: &Settings) -> usize {
    Ledger::open_read_only(&settings.ledger_path)
        .unwrap()
        .items_in_state(&ep(), ItemState::Mirrored, 1000)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_seeded_mix_of_transient_faults_loses_and_corrupts_nothing() {
    let batches = finished_batches(3, 6);
    let sandbox = start(spec(batches.clone())).await;
    let faults = ["reset", "short-body", "5xx", "429-bare", "bad-json"]
        .map(|n| ResultFault::named(n).unwrap())
        .to_vec();
    sandbox.set_fault_mix(Some(FaultMix {
        faults,
        rate: 0.3,
        seed: 5,
    }));
    let dir = tempfile::tempdir().unwrap();
    let settings = config(
        dir.path(),
        &sandbox.base_url(),
        "concurrency = 3",
        "max_retries = 3",
    );
    let first = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        first.download.mirrored + first.download.retrying,
        18,
        "{first:?}"
    );
    // Bounded: each round retries what the last one left, and faults hit only 30% of requests.
    for _ in 0..10 {
        if mirrored_count(&settings).await == 18 {
            break;
        }
        drain_as_if_later(&settings).await;
    }
    let requests: u64 = sandbox.stats().result_requests.values().sum();
    assert!(
        requests > 18,
        "the mix must have cost some attempts: {requests}"
    );
    let served_faults = sandbox
        .request_log()
        .iter()
        .filter(|r| r.status == 503 || r.status == 429)
        .count();
    assert!(served_faults > 0, "statuses were injected");
    for b in &batches {
        for it in &b.items {
            assert_intact(&sandbox, &settings, &b.id, &it.id).await;
        }
    }
    assert_no_parts(&settings);
}

#[tokio::test]
async fn the_sandbox_command_switches_faults_on_per_run() {
    const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");
    let unknown = tokio::process::Command::new(BIN)
        .args(["sandbox", "--fault", "meteor"])
        .output()
        .await
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("gzip-bomb"));

    let mut child = tokio::process::Command::new(BIN)
        .args(["sandbox", "--batches", "3", "--items-per-batch", "2"])
        .args(["--fault", "5xx", "--fault-rate", "1", "--api-key", KEY])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a listening line");
    let base = line.strip_prefix("listening on ").expect(&line).to_owned();
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{base}{path}"))
            .header("x-api-key", KEY)
            .send()
    };
    let list = json(get("/v1/batches".into()).await.unwrap()).await;
    let mut succeeded = None;
    for b in list["data"].as_array().unwrap() {
        let b = b["id"].as_str().unwrap().to_owned();
        let detail = json(get(format!("/v1/batches/{b}")).await.unwrap()).await;
        let items = detail["items"].as_array().unwrap();
        if let Some(it) = items.iter().find(|it| it["status"] == "succeeded") {
            succeeded = Some((b, it["id"].as_str().unwrap().to_owned()));
            break;
        }
    }
    let (b, it) = succeeded.expect("a succeeded item");
    let resp = get(format!("/v1/batches/{b}/items/{it}/result"))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        503,
        "every result request is faulted at rate 1"
    );
    child.kill().await.unwrap();
}
