//! The webhook receiver against the PerfectParser sandbox's own deliveries (`/v1/webhooks`,
//! signed as documented), with a schedule that never ticks during a test, so only the start
//! pass and webhooks drive passes: an item completing after the start pass is mirrored within
//! seconds (latency printed, p95 over 20 items), forged / replayed / oversized / misaddressed
//! deliveries cause no request to the provider, a dropped delivery is caught by the next pass,
//! and LlamaCloud's `webhook_configurations` with a bearer header drive passes listing only it.
//! An event naming an extraction has it read by id, with no listing request (request counts
//! printed); one naming an extraction the API does not know falls back to a listing pass.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batchmirror::config::{self, Settings};
use batchmirror::daemon;
use batchmirror::model::ItemState;
use batchmirror_sandbox::perfectparser::{
    DEFAULT_PARSER, DocOutcome, ExtractionSpec, PerfectSandbox, PerfectSpec, WEBHOOK_EVENTS,
    WebhookDelivery,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{KEY, files_under, free_port, wait_until};
use crate::provider_perfectparser::{completed, doc, ext, row, start};

/// A daemon running against a sandbox whose webhook points at the daemon's receiver.
struct Rig {
    sandbox: PerfectSandbox,
    dir: tempfile::TempDir,
    settings: Settings,
    hooks: String,
    /// The sandbox's id of the registered webhook, and its signing secret.
    webhook_id: String,
    secret: String,
    metrics: String,
    daemon: tokio::task::JoinHandle<Result<(), batchmirror::error::Error>>,
    token: CancellationToken,
}

/// `docs` documents of extraction `ext_live`, the k-th finishing `first + k × step` seconds
/// after the sandbox starts; the webhook registered through the API before the daemon starts.
async fn rig(docs: usize, first: f64, step: f64, deliver: bool) -> Rig {
    let documents = (0..docs)
        .map(|k| {
            let at = first + step * k as f64;
            doc(&format!("doc_{k:03}"), at, DocOutcome::Completed)
        })
        .collect();
    rig_with(vec![ext("ext_live", 30, documents)], deliver, "").await
}

/// A rig over `extractions`, with `extra` appended to the provider's config.
async fn rig_with(extractions: Vec<ExtractionSpec>, deliver: bool, extra: &str) -> Rig {
    let sandbox = start(PerfectSpec::new(KEY, extractions)).await;
    sandbox.set_webhook_delivery(deliver);
    let (wport, mport) = (free_port(), free_port());
    let hooks = format!("http://127.0.0.1:{wport}/hooks");
    let asked = json!({"url": format!("{hooks}/ep"), "events": WEBHOOK_EVENTS});
    let created = reqwest::Client::new()
        .post(format!("{}/v1/webhooks", sandbox.base_url()))
        .header("X-API-Key", KEY)
        .header("content-type", "application/json")
        .body(asked.to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let created: Value = serde_json::from_slice(&created).unwrap();
    let secret = created["webhook"]["signing_secret"].as_str().unwrap();
    let webhook_id = created["webhook"]["webhook_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    // Never ticks: a cron pass could only hide a missing webhook pass.
    let text = format!(
        r#"
[ledger]
path = "{d}/ledger.sqlite3"
[storage]
root = "{d}/mirror"
[schedule]
cron = "0 0 0 1 1 *"
[metrics]
listen = "127.0.0.1:{mport}"
[webhook]
listen = "127.0.0.1:{wport}"
[[provider]]
name = "ep"
kind = "perfectparser"
base_url = "{base}"
api_key = "{KEY}"
webhook_secret = "{secret}"
{extra}
"#,
        d = dir.path().display(),
        base = sandbox.base_url(),
    );
    let settings = config::load_str(&text, "test", &HashMap::new()).expect("valid config");
    let token = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(settings.clone(), token.clone()));
    let secret = secret.to_owned();
    Rig {
        sandbox,
        dir,
        settings,
        hooks,
        webhook_id,
        secret,
        metrics: format!("http://127.0.0.1:{mport}/metrics"),
        daemon,
        token,
    }
}

impl Rig {
    async fn stop(self) -> (PerfectSandbox, tempfile::TempDir, Settings) {
        self.token.cancel();
        self.daemon.await.unwrap().unwrap();
        (self.sandbox, self.dir, self.settings)
    }

    fn requests(&self) -> usize {
        self.sandbox.request_log().len()
    }

    async fn post(&self, provider: &str, headers: &[(String, String)], body: Vec<u8>) -> u16 {
        let mut req = reqwest::Client::new().post(format!("{}/{provider}", self.hooks));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(body).send().await.unwrap().status().as_u16()
    }

    async fn metric(&self, outcome: &str) -> u64 {
        let text = reqwest::get(&self.metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let provider = if outcome == "unknown_provider" {
            ""
        } else {
            "ep"
        };
        let want = format!(
            "batchmirror_webhook_deliveries_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&want)?.parse().ok())
            .unwrap_or(0)
    }
}

/// A published file of item `id` (a `.part` is still being written).
fn named(file: &Path, id: &str) -> bool {
    file.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.contains(id) && !n.ends_with(".part")
    })
}

/// The first file under the mirror whose name holds `id`.
fn published(root: &Path, id: &str) -> Option<PathBuf> {
    files_under(root).into_iter().find(|f| named(f, id))
}

/// `body` with a valid `X-PerfectParser-Signature` under `secret`.
fn signed(secret: &str, body: &[u8]) -> [(String, String); 1] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let signature = hex::encode(mac.finalize().into_bytes());
    [("x-perfectparser-signature".to_owned(), signature)]
}

/// `GET /v1/extractions`: the listing (a walk reads it page by page).
fn is_listing(r: &batchmirror_sandbox::LoggedRequest) -> bool {
    r.method == "GET" && r.path == "/v1/extractions"
}

fn document_delivery(d: &WebhookDelivery, id: &str) -> bool {
    d.event == "extraction.document_completed" && d.document_id.as_deref() == Some(id)
}

#[tokio::test]
async fn items_completing_after_the_start_pass_are_mirrored_within_seconds_by_webhook() {
    const N: usize = 20;
    // The start pass lists the extraction while every document is still queued.
    let rig = rig(N, 3.0, 0.25, true).await;
    let root = rig.dir.path().join("mirror");
    let mut seen: HashMap<usize, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N {
        assert!(Instant::now() < deadline, "mirrored {} of {N}", seen.len());
        let now = chrono::Utc::now().timestamp_micros();
        let files = files_under(&root);
        for k in 0..N {
            let id = format!("doc_{k:03}");
            if !seen.contains_key(&k) && files.iter().any(|f| named(f, &id)) {
                seen.insert(k, now);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deliveries = rig.sandbox.webhook_deliveries();
    let mut latencies: Vec<f64> = (0..N)
        .map(|k| {
            let id = format!("doc_{k:03}");
            let d = deliveries
                .iter()
                .find(|d| document_delivery(d, &id))
                .unwrap_or_else(|| panic!("{id} was delivered"));
            assert_eq!(d.status, Some(202), "{id}: the receiver queued it");
            (seen[&k] - d.completed_us) as f64 / 1e6
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let p95 = latencies[(N * 95).div_ceil(100) - 1];
    println!(
        "webhook latency, completed at the sandbox -> file published, {N} items: p50 {:.3} s, \
         p95 {p95:.3} s, max {:.3} s",
        latencies[N / 2],
        latencies[N - 1]
    );
    assert!(
        latencies[N - 1] < 10.0,
        "every item mirrored within 10 s of completing: {latencies:?}"
    );
    assert!(
        latencies[0] > 0.0,
        "nothing is published before it completes"
    );
    let (sandbox, _dir, settings) = rig.stop().await;
    let ledger = batchmirror::ledger::Ledger::open_read_only(&settings.ledger_path).unwrap();
    for k in 0..N {
        let id = format!("doc_{k:03}");
        let r = row(&ledger, "ext_live", &id).await;
        assert_eq!(r.state, ItemState::Mirrored, "{id}");
        let (sha, _) = sandbox.expected_data("ext_live", &id).unwrap();
        assert_eq!(
            r.sha256.as_deref(),
            Some(sha.as_str()),
            "{id}: the API's bytes"
        );
    }
}

#[tokio::test]
async fn forged_replayed_oversized_and_misaddressed_deliveries_fetch_nothing() {
    let rig = rig(1, 1.5, 0.0, true).await;
    let root = rig.dir.path().join("mirror");
    wait_until("the webhook's pass mirrors doc_000", 30, || {
        published(&root, "doc_000").is_some()
    })
    .await;
    wait_until("both events acknowledged", 30, || {
        rig.sandbox.webhook_deliveries().len() == 2
    })
    .await;
    // Let the follow-up pass of the second event finish.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = rig.requests();
    let real = rig
        .sandbox
        .webhook_deliveries()
        .into_iter()
        .find(|d| document_delivery(d, "doc_000"))
        .unwrap();

    // A body naming another document, signed with a wrong secret; then no proof at all.
    let forged_body = String::from_utf8(real.body.to_vec())
        .unwrap()
        .replace("doc_000", "doc_999");
    let mut forged = real.headers.clone();
    for (k, v) in forged.iter_mut() {
        if k == "x-perfectparser-signature" {
            *v = "00".repeat(32);
        }
    }
    assert_eq!(rig.post("ep", &forged, forged_body.into()).await, 401);
    assert_eq!(rig.post("ep", &[], real.body.to_vec()).await, 401);
    // The real delivery again, byte for byte: acknowledged, not acted on.
    assert_eq!(rig.post("ep", &real.headers, real.body.to_vec()).await, 200);
    // Over 1 MiB, even with a valid proof.
    let big = vec![b' '; (1 << 20) + 1];
    assert_eq!(rig.post("ep", &real.headers, big).await, 413);
    assert_eq!(
        rig.post("nope", &real.headers, real.body.to_vec()).await,
        404
    );
    // PerfectParser's test event: verified and acknowledged, nothing to mirror.
    let test_path = format!("/v1/webhooks/{}/test", rig.webhook_id);
    let tested = reqwest::Client::new()
        .post(format!("{}{test_path}", rig.sandbox.base_url()))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(tested.status(), 200);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = rig.sandbox.request_log();
    let after: Vec<_> = log[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        after,
        [format!("POST {test_path}")],
        "no request from the daemon after refused, repeated or test deliveries"
    );
    let test_delivery = rig.sandbox.webhook_deliveries().pop().unwrap();
    assert_eq!(test_delivery.status, Some(200), "the test event is taken");
    assert_eq!(rig.metric("ignored").await, 1);

    // Over 1 MiB without a Content-Length (chunked): cut off at the limit, 413.
    let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
    let chunked = reqwest::Client::new()
        .post(format!("{}/ep", rig.hooks))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);
    assert_eq!(rig.metric("too_large").await, 2);

    // A verified event naming nothing usable (a dashboard `batch.completed`): a normal pass.
    let lists = rig.sandbox.stats().list_requests;
    let body = br#"{"event":"batch.completed"}"#.to_vec();
    assert_eq!(rig.post("ep", &signed(&rig.secret, &body), body).await, 202);
    wait_until("a pass lists the provider", 30, || {
        rig.sandbox.stats().list_requests > lists
    })
    .await;
    assert_eq!(rig.metric("unauthorized").await, 2);
    assert_eq!(rig.metric("duplicate").await, 1);
    assert_eq!(rig.metric("too_large").await, 2);
    assert_eq!(rig.metric("unknown_provider").await, 1);
    assert_eq!(
        rig.metric("accepted").await,
        3,
        "the two real events and batch.completed"
    );
    assert!(published(&root, "doc_999").is_none());
    rig.stop().await;
}

#[tokio::test]
async fn a_dropped_webhook_is_caught_by_the_next_pass() {
    let rig = rig(1, 1.0, 0.0, false).await;
    let root = rig.dir.path().join("mirror");
    wait_until("the delivery is dropped", 30, || {
        rig.sandbox.webhook_deliveries().iter().any(|d| d.dropped)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        published(&root, "doc_000").is_none(),
        "without a webhook or a tick, nothing runs a pass"
    );
    let (sandbox, _dir, settings) = rig.stop().await;
    // The next pass (here `sync --once`; in `run`, the next cron tick) finds it by listing.
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.download.mirrored, 1, "{report:?}");
    assert!(published(&root, "doc_000").is_some());
    drop(sandbox);
}

#[tokio::test]
async fn llamacloud_job_webhooks_carrying_the_configured_header_drive_the_mirror() {
    use batchmirror_sandbox::llamacloud::{LlamaSandbox, LlamaSpec};
    const TOKEN: &str = "lc-token-0123456789";
    let spec = LlamaSpec {
        api_key: KEY.to_owned(),
        seed: 3,
        jobs: Vec::new(),
        time_scale: 1.0,
        retention: Duration::from_secs(48 * 3600),
        result_delay: Duration::ZERO,
    };
    let sandbox = LlamaSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    // A second account that pushes nothing: webhook passes must not list it.
    let quiet = start(PerfectSpec::new(KEY, Vec::new())).await;
    let (wport, dir) = (free_port(), tempfile::tempdir().unwrap());
    let text = format!(
        r#"
[ledger]
path = "{d}/ledger.sqlite3"
[storage]
root = "{d}/mirror"
[schedule]
cron = "0 0 0 1 1 *"
[webhook]
listen = "127.0.0.1:{wport}"
[[provider]]
name = "lc"
kind = "llamacloud"
base_url = "{base}"
api_key = "{KEY}"
webhook_secret = "{TOKEN}"
[[provider]]
name = "quiet"
kind = "perfectparser"
base_url = "{quiet}"
api_key = "{KEY}"
"#,
        d = dir.path().display(),
        base = sandbox.base_url(),
        quiet = quiet.base_url(),
    );
    let settings = config::load_str(&text, "test", &HashMap::new()).expect("valid config");
    let token = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(settings, token.clone()));
    // Let the start pass find nothing, then create the job the documented way, with one
    // configuration carrying the token and one (a stranger's) carrying another.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("http://127.0.0.1:{wport}/hooks/lc");
    let create = json!({
        "item_ids": ["file-a", "file-b"],
        "job_config": {"job_name": "parse_raw_file_job", "partitions": {}, "parameters": {
            "type": "parse",
            "webhook_configurations": [
                {"webhook_url": url, "webhook_events": ["parse.running", "parse.success"],
                 "webhook_headers": {"Authorization": format!("Bearer {TOKEN}")},
                 "webhook_output_format": "json"},
                {"webhook_url": url, "webhook_events": ["parse.success"],
                 "webhook_headers": {"Authorization": "Bearer not-the-token"}},
            ],
        }},
    });
    let status = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/beta/batch-processing",
            sandbox.base_url()
        ))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(create.to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    let root = dir.path().join("mirror");
    wait_until("both items mirrored through the webhook", 30, || {
        published(&root, "file-a").is_some() && published(&root, "file-b").is_some()
    })
    .await;
    wait_until("every delivery answered", 10, || {
        sandbox.webhook_deliveries().len() == 6
    })
    .await;
    let deliveries = sandbox.webhook_deliveries();
    let answered = |event: &str, auth: &str| -> Vec<Option<u16>> {
        deliveries
            .iter()
            .filter(|d| {
                d.event_type == event
                    && d.headers
                        .iter()
                        .any(|(k, v)| k == "Authorization" && v == auth)
            })
            .map(|d| d.status)
            .collect()
    };
    let ours = format!("Bearer {TOKEN}");
    assert_eq!(answered("parse.success", &ours), [Some(202), Some(202)]);
    assert_eq!(
        answered("parse.running", &ours),
        [Some(200), Some(200)],
        "progress is verified and ignored"
    );
    assert_eq!(
        answered("parse.success", "Bearer not-the-token"),
        [Some(401), Some(401)]
    );
    assert_eq!(
        quiet.stats().list_requests,
        1,
        "only the start pass lists the provider no webhook named"
    );
    token.cancel();
    daemon.await.unwrap().unwrap();
}

/// Twelve finished extractions, listed five a page: the start pass walks three pages.
async fn listed_rig() -> Rig {
    let rig = rig_with(completed(12, 1), true, "page_size = 5").await;
    let root = rig.dir.path().join("mirror");
    wait_until("the start pass mirrors the twelve", 30, || {
        (0..12).all(|k| published(&root, &format!("doc_{k:03}_0")).is_some())
    })
    .await;
    // Let the start pass finish (it marks the batches done after the downloads).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    rig
}

#[tokio::test]
async fn a_webhook_naming_a_new_extraction_reads_it_by_id_without_listing() {
    let rig = listed_rig().await;
    let root = rig.dir.path().join("mirror");
    let start_log = rig.sandbox.request_log();
    let start_lists = start_log.iter().filter(|r| is_listing(r)).count();
    assert!(
        start_lists >= 3,
        "the start pass walked the pages: {start_lists}"
    );
    // A new extraction, submitted the documented way after the start pass: only its webhooks
    // can tell the daemon about it before the next (hourly) tick.
    let pdf = reqwest::multipart::Part::bytes(b"%PDF-1.4 new invoice".to_vec())
        .file_name("new.pdf")
        .mime_str("application/pdf")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("parser_id", DEFAULT_PARSER)
        .part("files", pdf);
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/extractions", rig.sandbox.base_url()))
        .header("X-API-Key", KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let created: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    let new_ext = created["extraction"]["extraction_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_doc = created["extraction"]["documents"][0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = start_log.len();
    wait_until("the webhook's refresh mirrors the new document", 30, || {
        published(&root, &new_doc).is_some()
    })
    .await;
    wait_until("both events acknowledged", 30, || {
        rig.sandbox
            .webhook_deliveries()
            .iter()
            .filter(|d| d.extraction_id == new_ext && d.status.is_some())
            .count()
            == 2
    })
    .await;
    // Let the follow-up of the second event finish.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = rig.sandbox.request_log();
    let after: Vec<String> = log[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    println!(
        "requests: start pass (3 listing pages, 12 extractions) {before} ({start_lists} listing); \
         after the new extraction's 2 webhooks {} ({} listing): {after:?}",
        after.len() - 1,
        log[before..].iter().filter(|r| is_listing(r)).count()
    );
    assert!(
        !log[before..].iter().any(is_listing),
        "no listing request after the start pass: {after:?}"
    );
    let ours = format!("/v1/extractions/{new_ext}");
    for r in &after {
        assert!(
            r == "POST /v1/extractions" || r.starts_with(&format!("GET {ours}")),
            "only the named extraction is asked for: {r} in {after:?}"
        );
    }
    assert!(after.len() > 1, "the extraction was read: {after:?}");
    let (sandbox, _dir, settings) = rig.stop().await;
    let ledger = batchmirror::ledger::Ledger::open_read_only(&settings.ledger_path).unwrap();
    let r = row(&ledger, &new_ext, &new_doc).await;
    assert_eq!(r.state, ItemState::Mirrored);
    let (sha, _) = sandbox.expected_data(&new_ext, &new_doc).unwrap();
    assert_eq!(r.sha256.as_deref(), Some(sha.as_str()), "the API's bytes");
}

#[tokio::test]
async fn a_webhook_naming_an_unknown_extraction_falls_back_to_a_listing_pass() {
    let rig = listed_rig().await;
    let before = rig.requests();
    let body = br#"{"event":"extraction.job_completed","event_id":"evt_x","extraction_id":"ext_nobody_knows"}"#;
    assert_eq!(
        rig.post("ep", &signed(&rig.secret, body), body.to_vec())
            .await,
        202
    );
    wait_until("a pass lists the provider", 30, || {
        rig.sandbox.request_log()[before..].iter().any(is_listing)
    })
    .await;
    let log = rig.sandbox.request_log();
    let asked = log[before..]
        .iter()
        .position(|r| r.path == "/v1/extractions/ext_nobody_knows")
        .expect("the named extraction is asked for first");
    assert_eq!(log[before + asked].status, 404);
    let listed = log[before..].iter().position(is_listing).unwrap();
    assert!(asked < listed, "asked by id, then listed");
    rig.stop().await;
}
