//! The drop folder against PerfectParser: multipart submits paced under the 20-a-minute submit
//! window (scaled down here) without a single 429, a refused file type in `failed/`, and a 402
//! that keeps the file in the inbox.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use batchmirror::config;
use batchmirror::daemon;
use batchmirror::ledger::{Ledger, UploadState};
use batchmirror::model::ProviderName;
use batchmirror_sandbox::perfectparser::{PerfectSandbox, PerfectSpec};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::common::{KEY, wait_until};

const PARSER: &str = "prs_drop";

fn config_text(dir: &Path, base_url: &str, submits_per_minute: u32) -> String {
    format!(
        r#"
[ledger]
path = "{dir}/ledger.sqlite3"
[storage]
root = "{dir}/mirror"
[schedule]
cron = "0 0 0 1 1 *"
[[provider]]
name = "pp"
kind = "perfectparser"
base_url = "{base_url}"
api_key = "{KEY}"
submits_per_minute = {submits_per_minute}
max_retries = 3
[dropfolder]
path = "{dir}/drop/inbox"
provider = "pp"
parser_id = "{PARSER}"
settle = "200ms"
rescan = "1s"
result_poll = "200ms"
"#,
        dir = dir.display()
    )
}

async fn start(spec: PerfectSpec) -> PerfectSandbox {
    PerfectSandbox::start(spec.with_parsers(&[PARSER]), ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

fn run(dir: &Path, base_url: &str, spm: u32) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let text = config_text(dir, base_url, spm);
    let settings = config::load_str(&text, "test", &HashMap::new()).expect("valid config");
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = tokio::spawn(async move { daemon::run(settings, t).await.expect("daemon runs") });
    (token, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_stay_under_the_submit_window_and_a_refused_type_goes_to_failed() {
    // 5 submits per 2 s at the sandbox (150 a minute), and the client told the same.
    let sandbox =
        start(PerfectSpec::new(KEY, vec![]).with_submit_limit(5, Duration::from_secs(2))).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("drop/inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut shas = HashMap::new();
    for i in 0..12 {
        let body = format!("page of invoice {i}\n").repeat(20 + i);
        std::fs::write(inbox.join(format!("inv-{i:02}.pdf")), &body).unwrap();
        shas.insert(
            format!("inv-{i:02}.pdf"),
            hex::encode(Sha256::digest(&body)),
        );
    }
    std::fs::write(inbox.join("setup.exe"), "MZ not a document").unwrap();
    let (token, daemon) = run(dir.path(), &sandbox.base_url(), 150);
    let outbox = dir.path().join("drop/outbox");
    let failed = dir.path().join("drop/failed");
    wait_until("12 results and one refusal", 90, || {
        shas.keys()
            .all(|n| outbox.join(format!("{n}.json")).exists())
            && failed.join("setup.exe.error.txt").exists()
    })
    .await;
    token.cancel();
    daemon.await.unwrap();

    let stats = sandbox.stats();
    assert_eq!(
        stats.submit_rate_limited, 0,
        "never refused by the submit window"
    );
    assert_eq!(stats.rate_limited, 0);
    assert_eq!(
        stats.submissions, 12,
        "one job per document; the .exe was refused"
    );
    for (name, sha) in &shas {
        let result = std::fs::read_to_string(outbox.join(format!("{name}.json"))).unwrap();
        assert!(
            result.contains(sha.as_str()),
            "{name}: result of another file"
        );
    }
    let why = std::fs::read_to_string(failed.join("setup.exe.error.txt")).unwrap();
    assert!(why.contains("UNSUPPORTED_FILE_TYPE"), "{why}");
    assert!(failed.join("setup.exe").exists() && !inbox.join("setup.exe").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_credits_keep_the_file_waiting_never_failed() {
    let sandbox = start(PerfectSpec::new(KEY, vec![]).with_credits(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("drop/inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("contract.pdf"), "needs one credit").unwrap();
    let (token, daemon) = run(dir.path(), &sandbox.base_url(), 20);
    let ledger_path = dir.path().join("ledger.sqlite3");
    let pp = ProviderName::parse("pp").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let waiting = loop {
        if let Ok(l) = Ledger::open_read_only(&ledger_path) {
            let rows = l.uploads_in(&pp, UploadState::Waiting).await.unwrap();
            // Waiting through at least one retry: it is kept, not given up on.
            if rows.first().is_some_and(|r| r.attempts >= 2) {
                break rows;
            }
        }
        assert!(Instant::now() < deadline, "never retried while waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    token.cancel();
    daemon.await.unwrap();
    let error = waiting[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("402") && error.contains("INSUFFICIENT_CREDITS"),
        "{error}"
    );
    assert!(inbox.join("contract.pdf").exists(), "kept in the inbox");
    let failed = dir.path().join("drop/failed");
    assert!(
        std::fs::read_dir(&failed).unwrap().next().is_none(),
        "nothing in failed/"
    );
    assert_eq!(sandbox.stats().credits_charged, 0);
}
