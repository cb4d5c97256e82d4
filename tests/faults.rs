//! Injected faults (issue 7), one test each: the sandbox misbehaves on one item while its
//! neighbours are served normally, and the item ends in the right state with nothing lost or
//! corrupted: transient faults are retried and land byte-exact once the fault stops, permanent ones
//! are `failed` with the reason in `last_error`, and no `.part` or partial file is ever left.
//!
//! Expired presigned URLs are covered by
//! `provider_faults::an_expired_presigned_url_is_retried_through_the_api_never_failed`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use batchmirror::config::{self, Settings};
use batchmirror::daemon::{self, PassReport};
use batchmirror::download::{DownloadReport, Downloader};
use batchmirror::ledger::{ItemRow, Ledger};
use batchmirror::model::{BatchId, ItemId, ItemState, ProviderName, no_observer};
use batchmirror::provider;
use batchmirror::storage::{PART_SUFFIX, Storage};
use batchmirror_sandbox::{Delivery, Fault, ResultFault, Sandbox};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const BATCH: &str = "b";
pub(crate) const BAD: &str = "bad";
const GOOD: [&str; 2] = ["ok1", "ok2"];

pub(crate) fn ep() -> ProviderName {
    ProviderName::parse("ep").unwrap()
}

/// Settings for a mirror in `dir`; `download` adds keys to `[download]`, `provider` to the provider.
pub(crate) fn config(dir: &Path, base_url: &str, download: &str, provider: &str) -> Settings {
    let text = format!(
        r#"
[ledger]
path = "{dir}/ledger.sqlite3"
[storage]
root = "{dir}/mirror"
[download]
{download}
[[provider]]
name = "ep"
kind = "extract_page"
base_url = "{base_url}"
api_key = "{KEY}"
{provider}
"#,
        dir = dir.display()
    );
    config::load_str(&text, "test", &HashMap::new()).expect("valid test config")
}

/// One drain of the queue as the daemon runs it, but as if every item back-off had passed: the
/// retry of an hour later, without the hour.
pub(crate) async fn drain_as_if_later(settings: &Settings) -> DownloadReport {
    let ledger = Ledger::open(&settings.ledger_path).unwrap();
    let storage = Arc::new(Storage::new(&settings.storage_root).unwrap());
    let providers: Vec<_> = settings
        .providers
        .iter()
        .map(|p| provider::build(p, &settings.download, no_observer()).unwrap())
        .collect();
    let d = Downloader::new(
        ledger,
        storage,
        &providers,
        settings.download.clone(),
        no_observer(),
    );
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    d.drain(later, &CancellationToken::new()).await.unwrap()
}

pub(crate) async fn row(settings: &Settings, batch: &str, item: &str) -> ItemRow {
    Ledger::open_read_only(&settings.ledger_path)
        .unwrap()
        .item(
            &ep(),
            &BatchId::parse(batch).unwrap(),
            &ItemId::parse(item).unwrap(),
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{batch}/{item} missing"))
}

/// Mirrored, and the file and its ledger digest are exactly what the sandbox serves.
pub(crate) async fn assert_intact(sandbox: &Sandbox, settings: &Settings, batch: &str, item: &str) {
    let r = row(settings, batch, item).await;
    assert_eq!(r.state, ItemState::Mirrored, "{item}: {:?}", r.last_error);
    let (sha, len) = sandbox.expected(batch, item).unwrap();
    assert_eq!(r.sha256.as_deref(), Some(sha.as_str()), "{item}");
    assert_eq!(r.bytes, Some(len), "{item}");
    let file = settings.storage_root.join(r.path.unwrap());
    assert_eq!(sha256_file(&file), sha, "{item}: the file is the body");
}

/// No `.part` anywhere under the mirror.
pub(crate) fn assert_no_parts(settings: &Settings) {
    let parts: Vec<_> = files_under(&settings.storage_root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(PART_SUFFIX))
        .collect();
    assert!(parts.is_empty(), "left behind: {parts:?}");
}

/// A batch of one faulty item and two good ones.
pub(crate) struct Case {
    pub(crate) sandbox: Sandbox,
    pub(crate) settings: Settings,
    _dir: TempDir,
}

impl Case {
    /// `faults` are queued for [`BAD`]; every item is served `delivery`.
    pub(crate) async fn new(delivery: Delivery, faults: &[ResultFault], download: &str) -> Case {
        let items = std::iter::once(BAD)
            .chain(GOOD)
            .map(|id| done_item(id, 60.0, delivery))
            .collect();
        let sandbox = start(spec(vec![batch(BATCH, items)])).await;
        for fault in faults {
            sandbox.push_fault(Fault::Result {
                batch: BATCH.into(),
                item: BAD.into(),
                fault: fault.clone(),
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let settings = config(
            dir.path(),
            &sandbox.base_url(),
            &format!("concurrency = 2\n{download}"),
            "max_retries = 3",
        );
        Case {
            sandbox,
            settings,
            _dir: dir,
        }
    }

    pub(crate) async fn pass(&self) -> PassReport {
        daemon::sync_once(self.settings.clone(), CancellationToken::new())
            .await
            .unwrap()
    }

    pub(crate) async fn row(&self, item: &str) -> ItemRow {
        row(&self.settings, BATCH, item).await
    }

    pub(crate) async fn assert_intact(&self, item: &str) {
        assert_intact(&self.sandbox, &self.settings, BATCH, item).await;
    }

    fn published(&self, item: &str) -> bool {
        let rel = Storage::item_path(
            &ep(),
            &BatchId::parse(BATCH).unwrap(),
            &ItemId::parse(item).unwrap(),
        );
        self.settings.storage_root.join(rel).exists()
    }

    pub(crate) fn result_requests(&self, item: &str) -> u64 {
        self.sandbox
            .stats()
            .result_requests
            .get(&(BATCH.to_owned(), item.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The good items landed; the bad one is `state`, unpublished, with `error` in `last_error`.
    pub(crate) async fn assert_bad_is(&self, state: ItemState, error: &str) {
        for good in GOOD {
            self.assert_intact(good).await;
        }
        let r = self.row(BAD).await;
        assert_eq!(r.state, state, "{:?}", r.last_error);
        let last = r.last_error.unwrap_or_default();
        assert!(last.contains(error), "last_error {last:?} lacks {error:?}");
        assert!(
            !self.published(BAD),
            "nothing published for the faulty item"
        );
        assert_eq!(r.sha256, None);
        assert_no_parts(&self.settings);
    }
}

/// A transient body fault once: retried within the pass, the item lands there (exit 0). Both
/// deliveries: inline from the API, and from the object store after a redirect.
async fn once(fault: &ResultFault, download: &str) {
    for delivery in [Delivery::Inline, Delivery::Redirect] {
        let case = Case::new(delivery, std::slice::from_ref(fault), download).await;
        let report = case.pass().await;
        assert_eq!(report.download.mirrored, 3, "{delivery:?}: {report:?}");
        assert_eq!(report.exit_code(), 0, "{delivery:?}: {report:?}");
        case.assert_intact(BAD).await;
        assert_eq!(case.result_requests(BAD), 2, "{delivery:?}");
        assert_no_parts(&case.settings);
    }
}

/// A transient body fault on every attempt of the pass (three): the item is deferred,
/// unpublished with nothing left behind, the pass exits 1 naming it with its last error, and a
/// later pass lands the exact body.
async fn every_attempt(fault: &ResultFault, download: &str, error: &str) {
    for delivery in [Delivery::Inline, Delivery::Redirect] {
        let case = Case::new(delivery, &vec![fault.clone(); 3], download).await;
        let report = case.pass().await;
        assert_eq!(report.download.mirrored, 2, "{delivery:?}: {report:?}");
        assert_eq!(report.download.retrying, 1, "{delivery:?}: {report:?}");
        assert_eq!(
            report.exit_code(),
            1,
            "{delivery:?}: deferred is not mirrored"
        );
        assert_eq!(report.unmirrored.count, 1, "{report:?}");
        let named = report.unmirrored_lines().join("\n");
        assert!(
            named.contains(&format!("ep/{BATCH}/{BAD}")) && named.contains(error),
            "{named}"
        );
        assert_eq!(case.result_requests(BAD), 3, "three attempts in the pass");
        case.assert_bad_is(ItemState::Ready, error).await;
        assert_eq!(case.row(BAD).await.attempts, 1);

        let retry = drain_as_if_later(&case.settings).await;
        assert_eq!(retry.mirrored, 1, "{delivery:?}: {retry:?}");
        case.assert_intact(BAD).await;
        assert_no_parts(&case.settings);
    }
}

async fn transient(fault: ResultFault, download: &str, error: &str) {
    once(&fault, download).await;
    every_attempt(&fault, download, error).await;
}

#[tokio::test]
async fn connection_reset_mid_body_is_retried_and_lands_intact() {
    transient(ResultFault::Reset, "", "end of file before message length").await;
}

#[tokio::test]
async fn body_shorter_than_content_length_is_retried_and_lands_intact() {
    transient(
        ResultFault::ShortBody,
        "",
        "end of file before message length",
    )
    .await;
}

#[tokio::test]
async fn stall_after_headers_hits_the_per_read_timeout_and_is_retried() {
    transient(ResultFault::Stall, "read_timeout = \"1s\"", "timed out").await;
}

#[tokio::test]
async fn a_one_byte_per_second_trickle_trips_the_low_speed_guard_and_is_retried() {
    // The read timeout stays at its 60 s default: only the speed guard can catch a trickle.
    let download = "low_speed_limit = 100\nlow_speed_time = \"2s\"";
    transient(ResultFault::Trickle, download, "too slow").await;
}

#[tokio::test]
async fn malformed_json_once_is_read_again_and_lands_intact() {
    // Always malformed is a failure, not a deferral: see the next test.
    once(&ResultFault::MalformedJson, "").await;
}

#[tokio::test]
async fn malformed_json_that_persists_fails_after_three_reads() {
    let truncated = vec![ResultFault::TruncatedJson; 3];
    let case = Case::new(Delivery::Inline, &truncated, "").await;
    let report = case.pass().await;
    assert_eq!(report.download.failed, 1, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    case.assert_bad_is(ItemState::Failed, "not valid JSON")
        .await;
    assert_eq!(case.result_requests(BAD), 3);
    // Final: a later pass does not ask again.
    drain_as_if_later(&case.settings).await;
    assert_eq!(case.result_requests(BAD), 3);
}

#[tokio::test]
async fn a_5xx_burst_is_ridden_out_within_the_pass_or_on_the_next() {
    let path = format!("/v1/batches/{BATCH}/items/{BAD}/result");
    // Shorter than max_retries (3 requests per attempt): the first attempt gets through.
    let case = Case::new(Delivery::Inline, &[], "").await;
    case.sandbox.push_burst(&path, 503, 2);
    let report = case.pass().await;
    assert_eq!(report.download.mirrored, 3, "{report:?}");
    assert_eq!(case.result_requests(BAD), 3);
    case.assert_intact(BAD).await;

    // Longer: a second attempt in the same pass gets through.
    let case = Case::new(Delivery::Redirect, &[], "").await;
    case.sandbox.push_burst(&path, 502, 4);
    let report = case.pass().await;
    assert_eq!(report.download.mirrored, 3, "{report:?}");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(case.result_requests(BAD), 5);
    case.assert_intact(BAD).await;

    // Longer than every attempt of the pass (3 × 3 requests): deferred, exit 1, then it lands.
    let case = Case::new(Delivery::Redirect, &[], "").await;
    case.sandbox.push_burst(&path, 502, 9);
    let report = case.pass().await;
    assert_eq!(report.exit_code(), 1, "{report:?}");
    case.assert_bad_is(ItemState::Ready, "HTTP 502").await;
    let retry = drain_as_if_later(&case.settings).await;
    assert_eq!(retry.mirrored, 1, "{retry:?}");
    assert_eq!(case.result_requests(BAD), 10);
    case.assert_intact(BAD).await;
}

#[tokio::test]
async fn a_429_with_any_retry_after_or_none_is_retried_to_success() {
    use batchmirror_sandbox::RetryAfter;
    let cases = [
        (Some(RetryAfter::Seconds(1)), 1000),
        // An HTTP date has one-second resolution: it may name a wait a second short.
        (
            Some(RetryAfter::DateIn(std::time::Duration::from_secs(2))),
            900,
        ),
        (Some(RetryAfter::Raw("soon".into())), 0),
        (None, 0),
    ];
    for (retry_after, min_wait_ms) in cases {
        let fault = ResultFault::Status {
            status: 429,
            retry_after: retry_after.clone(),
        };
        let case = Case::new(Delivery::Inline, &[fault], "").await;
        let report = case.pass().await;
        assert_eq!(report.download.mirrored, 3, "{retry_after:?}: {report:?}");
        case.assert_intact(BAD).await;
        assert_eq!(case.result_requests(BAD), 2, "{retry_after:?}");
        let path = format!("/v1/batches/{BATCH}/items/{BAD}/result");
        let log: Vec<_> = case
            .sandbox
            .request_log()
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        assert_eq!(log[0].status, 429, "{log:?}");
        let waited = log[1].at.duration_since(log[0].at);
        assert!(
            waited.as_millis() >= min_wait_ms,
            "{retry_after:?}: next request after {waited:?}"
        );
    }
}

#[tokio::test]
async fn a_redirect_loop_fails_the_item_with_the_reason_after_one_hop() {
    let case = Case::new(Delivery::Inline, &[ResultFault::RedirectLoop], "").await;
    let report = case.pass().await;
    assert_eq!(report.download.failed, 1, "{report:?}");
    case.assert_bad_is(ItemState::Failed, "redirect").await;
    let log = case.sandbox.request_log();
    let hops = log.iter().filter(|r| r.path.starts_with("/loop/")).count();
    assert_eq!(hops, 1, "followed once, then refused: {log:?}");
    assert_eq!(case.sandbox.stats().unauthorized, 0, "never looped back");
    assert_eq!(case.sandbox.stats().store_requests_with_credentials, 0);
}

#[tokio::test]
async fn a_gzip_bomb_is_stopped_at_the_cap_and_fails_the_item() {
    let bomb = ResultFault::GzipBomb {
        decoded_bytes: 8 << 20,
    };
    let case = Case::new(Delivery::Redirect, &[bomb], "max_body_bytes = \"1MiB\"").await;
    let report = case.pass().await;
    assert_eq!(report.download.failed, 1, "{report:?}");
    case.assert_bad_is(ItemState::Failed, "1048576-byte cap")
        .await;
}

#[tokio::test]
async fn bodies_over_the_cap_fail_whether_announced_or_not() {
    for announced in [true, false] {
        let big = ResultFault::Oversize {
            bytes: 3 << 20,
            announced,
        };
        let case = Case::new(Delivery::Inline, &[big], "max_body_bytes = \"1MiB\"").await;
        let report = case.pass().await;
        assert_eq!(
            report.download.failed, 1,
            "announced {announced}: {report:?}"
        );
        let reason = if announced { "announced" } else { "exceeds" };
        case.assert_bad_is(ItemState::Failed, reason).await;
    }
}
