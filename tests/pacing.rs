//! Adaptive pacing against the sandboxes' rate limits (issue 15, "Fast by default"): one real
//! pass (`daemon::sync_once`, shipped defaults, no `requests_per_minute`) against an account whose
//! limit is well below what the client sends uncapped. From the sandbox's request log: at least
//! 80 % of the limit used over the full windows after a short warm-up, at most 5 % of requests
//! refused, and none sent before a refusal said it could be; the rate climbs back when the limit
//! is lifted; presigned object-store GETs never spend the API's budget.
//!
//! Everything is counted, not timed: the log says which window each request counted in and when
//! each 429 let the client back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use batchmirror::config::{ProviderKind, Settings};
use batchmirror::daemon;
use batchmirror_sandbox::{
    BatchSpec, Delivery, LoggedRequest, RateLimit, RetryAfterForm, Sandbox, llamacloud as llama,
    talonic,
};
use tokio_util::sync::CancellationToken;

use crate::common::{self, KEY};

/// A request arriving this soon after a 429 may have left the client before the client read the
/// refusal (it was in flight, the client's choice was made), so it is not counted as early.
const IN_FLIGHT: Duration = Duration::from_millis(50);
/// Clock granularity: the client converts a wall-clock reset to its monotonic clock, the sandbox
/// likewise, and the timer wheel ticks in milliseconds.
const CLOCK: Duration = Duration::from_millis(5);
/// Left out at the start of a pass while the pacer finds the rate: the uncapped burst that meets
/// the limit, and the first shrink's window or two. Windows starting in it are not measured.
const WARM_UP: Duration = Duration::from_secs(4);

/// What a pass made of the sandbox's limit, read from its request log.
#[derive(Debug)]
struct Figures {
    /// API requests counted against the limit.
    requests: usize,
    /// Those the limit refused (429).
    refused: usize,
    /// Full windows measured (after the warm-up, before the last, partial one).
    windows: usize,
    /// Requests admitted in them.
    admitted: usize,
    /// The limit.
    limit: RateLimit,
    /// Requests that arrived before a previous 429 let the client back.
    early: Vec<String>,
    /// Admitted/refused, window by window.
    timeline: String,
}

impl Figures {
    fn of(log: &[LoggedRequest], limit: RateLimit) -> Figures {
        let counted: Vec<&LoggedRequest> = log.iter().filter(|r| r.window.is_some()).collect();
        let refused: Vec<&LoggedRequest> = counted
            .iter()
            .copied()
            .filter(|r| r.status == 429)
            .collect();
        let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
        for r in &counted {
            let admitted = usize::from(r.status != 429);
            *per_window.entry(r.window.unwrap()).or_default() += admitted;
        }
        let first = per_window.keys().next().copied().unwrap_or(0);
        let last = per_window.keys().last().copied().unwrap_or(0);
        // Windows lie on the clock grid, so ids are consecutive: a window with no request counts
        // as an unused one.
        let warm_up = WARM_UP.as_nanos().div_ceil(limit.window.as_nanos()) as u64;
        let measured = (first + 1 + warm_up)..last;
        let admitted: usize = measured
            .clone()
            .map(|w| per_window.get(&w).copied().unwrap_or(0))
            .sum();
        let windows = measured.count();
        let timeline = (first..=last)
            .map(|w| {
                let of = |rs: &[&LoggedRequest]| rs.iter().filter(|r| r.window == Some(w)).count();
                let refused = of(&refused);
                format!("{}/{refused}", of(&counted) - refused)
            })
            .collect::<Vec<_>>()
            .join(" ");
        let early = counted
            .iter()
            .filter_map(|r| {
                let told = refused.iter().find(|e| {
                    let retry_at = e.retry_at.expect("a 429 says when to come back");
                    r.at > e.at + IN_FLIGHT && r.at + CLOCK < retry_at
                })?;
                let ahead = told.retry_at.unwrap() - r.at;
                Some(format!("{} {} {ahead:?} early", r.method, r.path))
            })
            .collect();
        Figures {
            requests: counted.len(),
            refused: refused.len(),
            windows,
            admitted,
            limit,
            early,
            timeline,
        }
    }

    /// The share of the limit used over the measured windows.
    fn used(&self) -> f64 {
        self.admitted as f64 / (self.windows.max(1) as f64 * f64::from(self.limit.requests))
    }

    fn refused_share(&self) -> f64 {
        self.refused as f64 / self.requests.max(1) as f64
    }

    /// The three claims of issue 15.
    fn assert_converged(&self, what: &str) {
        let measured = self.limit.window * self.windows as u32;
        assert!(
            measured >= Duration::from_secs(10),
            "{what}: too short a pass to judge: {self:?}"
        );
        assert!(
            self.used() >= 0.80,
            "{what}: under 80 % of the limit used: {self:?}"
        );
        assert!(
            self.refused_share() <= 0.05,
            "{what}: over 5 % of requests refused: {self:?}"
        );
        assert!(
            self.early.is_empty(),
            "{what}: sent before Retry-After allowed: {self:?}"
        );
    }
}

/// One provider's sandbox, as these tests drive it.
enum Account {
    ExtractPage(Sandbox),
    Llama(llama::LlamaSandbox),
    Talonic(talonic::TalonicSandbox),
}

impl Account {
    fn kind(&self) -> ProviderKind {
        match self {
            Account::ExtractPage(_) => ProviderKind::ExtractPage,
            Account::Llama(_) => ProviderKind::LlamaCloud,
            Account::Talonic(_) => ProviderKind::Talonic,
        }
    }

    fn base_url(&self) -> String {
        match self {
            Account::ExtractPage(s) => s.base_url(),
            Account::Llama(s) => s.base_url(),
            Account::Talonic(s) => s.base_url(),
        }
    }

    fn set_rate_limit(&self, limit: Option<RateLimit>) {
        match self {
            Account::ExtractPage(s) => s.set_rate_limit(limit),
            Account::Llama(s) => s.set_rate_limit(limit),
            Account::Talonic(s) => s.set_rate_limit(limit),
        }
    }

    fn request_log(&self) -> Vec<LoggedRequest> {
        match self {
            Account::ExtractPage(s) => s.request_log(),
            Account::Llama(s) => s.request_log(),
            Account::Talonic(s) => s.request_log(),
        }
    }

    /// The shipped defaults for the kind: no `requests_per_minute`, no download keys.
    fn settings(&self, dir: &Path) -> Settings {
        let mut s = crate::faults::config(dir, &self.base_url(), "", "");
        let p = &mut s.providers[0];
        p.kind = self.kind();
        // Loaded as extract_page: its default page is the largest this kind may not allow.
        p.page_size = p.page_size.min(p.kind.max_page_size());
        if p.kind == ProviderKind::LlamaCloud {
            p.options.project_id = Some("proj-1".into());
            p.options.result_formats = vec!["json".into()];
        }
        s
    }
}

/// `batches` finished extract.page batches of `items` items each, served as `delivery` says.
async fn extract_page(batches: usize, items: usize, delivery: Delivery) -> Sandbox {
    let batches = (0..batches)
        .map(|b| {
            let items = (0..items)
                .map(|i| common::done_item(&format!("it-{b}-{i}"), 3600.0, delivery))
                .collect();
            BatchSpec {
                id: format!("b-{b:03}"),
                created_ago: ago(b),
                items,
            }
        })
        .collect();
    common::start(common::spec(batches)).await
}

fn ago(batch: usize) -> Duration {
    Duration::from_secs(7200 + 60 * batch as u64)
}

/// A generated LlamaCloud account with every item completed an hour ago: the generated mix also
/// has failed, skipped, running and expired ones, which a pass about pacing does not need.
async fn llamacloud(jobs: usize, items: usize) -> Account {
    let mut spec = llama::LlamaSpec::generated(jobs, items, 1500, 3);
    spec.api_key = KEY.into();
    for (k, job) in spec.jobs.iter_mut().enumerate() {
        job.created_ago = ago(k);
        for item in &mut job.items {
            (item.finishes_at, item.outcome) = (-3600.0, llama::Outcome::Completed);
        }
    }
    Account::Llama(
        llama::LlamaSandbox::start(spec, LOCAL.into())
            .await
            .unwrap(),
    )
}

/// The same for Talonic.
async fn talonic(batches: usize, items: usize) -> Account {
    let mut spec = talonic::TalonicSpec::generated(batches, items, 1500, 4);
    spec.api_key = KEY.into();
    for (k, batch) in spec.batches.iter_mut().enumerate() {
        batch.created_ago = ago(k);
        for item in &mut batch.items {
            (item.finishes_at, item.outcome) = (-3600.0, talonic::ItemOutcome::Completed);
        }
    }
    Account::Talonic(
        talonic::TalonicSandbox::start(spec, LOCAL.into())
            .await
            .unwrap(),
    )
}

const LOCAL: ([u8; 4], u16) = ([127, 0, 0, 1], 0);
/// 12 requests a second, well below the ~1,000 a second an uncapped pass sends to a sandbox.
const LIMIT: RateLimit = RateLimit {
    requests: 24,
    window: Duration::from_secs(2),
};

/// One pass under `limit`: every item mirrored, and the figures of the log.
async fn converge(account: &Account, limit: RateLimit, items: u64) -> Figures {
    account.set_rate_limit(Some(limit));
    let dir = tempfile::tempdir().unwrap();
    let report = daemon::sync_once(account.settings(dir.path()), CancellationToken::new())
        .await
        .expect("pass runs");
    assert_eq!(report.download.mirrored, items, "{report:?}");
    let figures = Figures::of(&account.request_log(), limit);
    eprintln!(
        "{:?} at {limit:?}: {:.0} % used over {} windows, {} of {} refused ({:.1} %), {} early, \
         in {:?}; admitted/refused per window: {}",
        account.kind(),
        figures.used() * 100.0,
        figures.windows,
        figures.refused,
        figures.requests,
        figures.refused_share() * 100.0,
        figures.early.len(),
        report.elapsed,
        figures.timeline,
    );
    figures
}

/// extract.page names its wait in `Retry-After`, here in delay-seconds. Rounded up, they keep
/// the client out for up to a second of the next window, so the windows are longer (4 s) to keep
/// that cost a small share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_page_converges_on_retry_after_seconds() {
    let account = Account::ExtractPage(extract_page(30, 10, Delivery::Inline).await);
    let limit = RateLimit::new(60, Duration::from_secs(4));
    let figures = converge(&account, limit, 300).await;
    figures.assert_converged("Retry-After in seconds");
}

/// The same as an HTTP date (the window's end exactly), with half the results redirected to the
/// object store: its GETs are not the API's, so the API still gets its whole limit (were they
/// counted, a third of it would go to them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_page_converges_on_retry_after_date_beside_the_store() {
    let sandbox = common::start(common::spec(common::finished_batches(24, 10))).await;
    sandbox.set_retry_after_form(RetryAfterForm::HttpDate);
    let account = Account::ExtractPage(sandbox);
    let figures = converge(&account, LIMIT, 240).await;
    figures.assert_converged("Retry-After as a date");
    let Account::ExtractPage(sandbox) = &account else {
        unreachable!()
    };
    let stats = sandbox.stats();
    assert_eq!(common::total(&stats.store_downloads), 120, "{stats:?}");
    let store: Vec<LoggedRequest> = account
        .request_log()
        .into_iter()
        .filter(|r| r.path.starts_with("/results/"))
        .collect();
    assert_eq!(store.len(), 120);
    assert!(
        store.iter().all(|r| r.window.is_none() && r.status == 200),
        "no store GET counted or refused"
    );
}

/// Talonic names it in `X-RateLimit-Reset` (ISO-8601) with `X-RateLimit-Remaining: 0`, on the last
/// admitted answer of a window as on the 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talonic_converges_on_x_ratelimit_reset() {
    let account = talonic(20, 6).await;
    converge(&account, LIMIT, 120)
        .await
        .assert_converged("Talonic");
}

/// LlamaCloud names it in `retry-after-ms` (what the Stainless SDK reads first) and `retry-after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacloud_converges_on_retry_after_ms() {
    let account = llamacloud(20, 5).await;
    converge(&account, LIMIT, 100)
        .await
        .assert_converged("LlamaCloud");
}

/// Requests per second over `span` after `from`, counting every API request.
fn rate_after(log: &[LoggedRequest], from: Instant, span: Duration) -> f64 {
    let n = log
        .iter()
        .filter(|r| r.path.starts_with("/v1/") && r.at >= from && r.at < from + span)
        .count();
    n as f64 / span.as_secs_f64()
}

/// Throttled for a while, then the limit is lifted mid-pass: the rate climbs back, far past the
/// old limit, with no throttle to tell the client so. The pass is stopped after a fixed time, so a
/// pacer that never grows back fails instead of crawling through the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_climbs_back_once_the_limit_is_lifted() {
    let account = Account::ExtractPage(extract_page(100, 10, Delivery::Inline).await);
    account.set_rate_limit(Some(LIMIT));
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let pass = tokio::spawn(daemon::sync_once(
        account.settings(dir.path()),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    account.set_rate_limit(None);
    let lifted = Instant::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.cancel();
    let report = pass.await.unwrap().expect("pass runs");
    let log = account.request_log();
    let limited = rate_after(
        &log,
        lifted - Duration::from_secs(4),
        Duration::from_secs(4),
    );
    let climbed: Vec<f64> = (0..12)
        .map(|s| {
            rate_after(
                &log,
                lifted + Duration::from_secs(s),
                Duration::from_secs(1),
            )
        })
        .collect();
    eprintln!(
        "limited {limited:.1}/s, then {climbed:.0?} ({:?})",
        report.download
    );
    let per_sec = f64::from(LIMIT.requests) / LIMIT.window.as_secs_f64();
    // All requests count, 429s included, so a burst after a Retry-After lands in the span on a
    // loaded machine (seen once at 14/s against 12/s in a full `cargo test` on 2 busy cores);
    // the check is that the limit held the pass first, far below the climb asserted next.
    assert!(
        limited <= per_sec * 1.25,
        "held to the limit first: {limited}/s"
    );
    let peak = climbed.iter().copied().fold(0.0, f64::max);
    assert!(
        peak >= per_sec * 4.0,
        "the rate climbs back: {limited:.1}/s limited, then {climbed:.0?}"
    );
}
