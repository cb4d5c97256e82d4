//! Resumable listing walks, per provider: a batch-list page that fails in one pass is reached by
//! the next even though the first page holds only done batches; an idle pass after a complete walk
//! makes one list request; a saved position the provider refuses restarts from the head; and
//! PerfectParser's `since` never advances past a failed walk.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use batchmirror::config::{ProviderKind, Settings};
use batchmirror::daemon::{self, PassReport};
use batchmirror::ledger::Ledger;
use batchmirror::model::{ItemState, ProviderName, WalkState};
use batchmirror_sandbox::ListFault;
use batchmirror_sandbox::{llamacloud as llama, perfectparser as perfect, talonic};
use tokio_util::sync::CancellationToken;

use crate::common::{self, KEY, config_text};

/// Batches per account and items per batch; with [`PAGE`] batches a page, the listing is three
/// pages and the failing one is the second.
const BATCHES: usize = 6;
const ITEMS: usize = 3;
const PAGE: u32 = 2;
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// One provider's sandbox, seen through what these tests need of it.
enum Account {
    ExtractPage(batchmirror_sandbox::Sandbox),
    Llama(llama::LlamaSandbox),
    Talonic(talonic::TalonicSandbox),
    Perfect(perfect::PerfectSandbox),
}

impl Account {
    /// `BATCHES` done batches of `ITEMS` done items each, older as the index grows.
    async fn start(kind: ProviderKind) -> Account {
        let local = ([127, 0, 0, 1], 0).into();
        let ago = |b: usize| Duration::from_secs(7200 + 60 * b as u64);
        match kind {
            ProviderKind::ExtractPage => {
                let mut batches = common::finished_batches(BATCHES, ITEMS);
                for (b, spec) in batches.iter_mut().enumerate() {
                    spec.created_ago = ago(b);
                }
                Account::ExtractPage(common::start(common::spec(batches)).await)
            }
            ProviderKind::LlamaCloud => {
                let jobs = (0..BATCHES)
                    .map(|b| llama::JobSpec {
                        id: format!("bjb-{b:03}"),
                        created_ago: ago(b),
                        items: (0..ITEMS)
                            .map(|i| llama::ItemSpec {
                                id: format!("itm-{b}-{i}"),
                                name: format!("doc_{b}_{i}.pdf"),
                                parse_job_id: format!("pj-{b}-{i}"),
                                finishes_at: -600.0,
                                outcome: llama::Outcome::Completed,
                                result_bytes: 1500,
                            })
                            .collect(),
                    })
                    .collect();
                let spec = llama::LlamaSpec {
                    api_key: KEY.into(),
                    seed: 3,
                    jobs,
                    time_scale: 1.0,
                    retention: WEEK,
                    result_delay: Duration::ZERO,
                };
                Account::Llama(llama::LlamaSandbox::start(spec, local).await.unwrap())
            }
            ProviderKind::Talonic => {
                let batches = (0..BATCHES)
                    .map(|b| {
                        let id = talonic::uuid("batch", &format!("b{b}"));
                        let items = (0..ITEMS)
                            .map(|i| talonic::TalonicItem {
                                id: talonic::uuid(&id, &format!("item {i}")),
                                document_id: talonic::uuid(&id, &format!("doc {i}")),
                                filename: Some(format!("invoice_{i}.pdf")),
                                finishes_at: -600.0,
                                outcome: talonic::ItemOutcome::Completed,
                                result_bytes: 1500,
                            })
                            .collect();
                        talonic::TalonicBatch {
                            id,
                            created_ago: ago(b),
                            provider: "anthropic".into(),
                            items,
                            status_override: None,
                        }
                    })
                    .collect();
                let spec = talonic::TalonicSpec {
                    api_key: KEY.into(),
                    seed: 4,
                    batches,
                    time_scale: 1.0,
                    retention: WEEK,
                    result_delay: Duration::ZERO,
                    daily_limit: None,
                    quota_retry_after: false,
                };
                Account::Talonic(talonic::TalonicSandbox::start(spec, local).await.unwrap())
            }
            ProviderKind::PerfectParser => {
                let extractions = (0..BATCHES)
                    .map(|b| perfect::ExtractionSpec {
                        id: format!("ext_{b:03}"),
                        parser_id: "prs_invoices".into(),
                        created_ago: ago(b),
                        documents: (0..ITEMS)
                            .map(|i| perfect::DocumentSpec {
                                id: format!("doc_{b:03}_{i}"),
                                filename: format!("doc_{b}_{i}.pdf"),
                                // Long enough ago that a `since` listing leaves them out.
                                finishes_at: -7200.0,
                                outcome: perfect::DocOutcome::Completed,
                                result_bytes: 1500,
                                page_count: 1,
                            })
                            .collect(),
                        status_override: None,
                    })
                    .collect();
                let spec = perfect::PerfectSpec::new(KEY, extractions);
                Account::Perfect(perfect::PerfectSandbox::start(spec, local).await.unwrap())
            }
        }
    }

    fn base_url(&self) -> String {
        match self {
            Account::ExtractPage(s) => s.base_url(),
            Account::Llama(s) => s.base_url(),
            Account::Talonic(s) => s.base_url(),
            Account::Perfect(s) => s.base_url(),
        }
    }

    fn set_list_fault(&self, fault: Option<ListFault>) {
        match self {
            Account::ExtractPage(s) => s.set_list_fault(fault),
            Account::Llama(s) => s.set_list_fault(fault),
            Account::Talonic(s) => s.set_list_fault(fault),
            Account::Perfect(s) => s.set_list_fault(fault),
        }
    }

    fn list_requests(&self) -> u64 {
        match self {
            Account::ExtractPage(s) => s.stats().list_requests,
            Account::Llama(s) => s.stats().list_requests,
            Account::Talonic(s) => s.stats().list_requests,
            Account::Perfect(s) => s.stats().list_requests,
        }
    }
}

fn settings(dir: &Path, account: &Account, kind: ProviderKind) -> Settings {
    let text = config_text(dir, &account.base_url(), "");
    let mut s = batchmirror::config::load_str(&text, "test", &HashMap::new()).expect("config");
    let p = &mut s.providers[0];
    p.kind = kind;
    p.page_size = PAGE;
    p.retention = WEEK;
    if kind == ProviderKind::LlamaCloud {
        p.options.project_id = Some("proj-1".into());
        p.options.result_formats = vec!["json".into()];
    }
    s
}

async fn pass(settings: &Settings) -> PassReport {
    daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .expect("pass runs")
}

fn ep() -> ProviderName {
    ProviderName::parse("ep").unwrap()
}

async fn mirrored(settings: &Settings) -> usize {
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    ledger
        .items_in_state(&ep(), ItemState::Mirrored, 10_000)
        .await
        .unwrap()
        .len()
}

async fn walk(settings: &Settings) -> batchmirror::model::Walk {
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    ledger
        .walk(&ep())
        .await
        .unwrap()
        .expect("a walk is recorded")
}

/// Pass 1 fails on page 2 with `fault`; pass 2 (page 1 holds only done batches by then) still
/// reaches pages 2 and 3 and mirrors everything; pass 3 makes one list request and exits 0.
async fn a_failing_page_is_reached_by_the_next_pass(kind: ProviderKind, fault: ListFault) {
    let dir = tempfile::tempdir().unwrap();
    let account = Account::start(kind).await;
    let s = settings(dir.path(), &account, kind);
    account.set_list_fault(Some(fault.clone()));

    let first = pass(&s).await;
    assert_eq!(first.exit_code(), 1, "{kind:?} {fault:?}: {first:?}");
    assert_eq!(
        mirrored(&s).await,
        PAGE as usize * ITEMS,
        "{kind:?}: page 1 only"
    );
    let w = walk(&s).await;
    assert_eq!(w.state, WalkState::Failed, "{w:?}");
    assert!(
        w.position.is_some() && w.complete_through.is_none(),
        "{w:?}"
    );
    // Named in the summary and in `status`, text and JSON.
    assert!(
        first.summary().contains("listing incomplete for ep"),
        "{}",
        first.summary()
    );
    let status = daemon::status(&s).await.unwrap();
    assert_eq!(status.listings[0].state, "failed", "{:?}", status.listings);
    assert!(status.listings[0].last_error.is_some());
    let text = status.render_text();
    assert!(
        text.contains("listing incomplete: walk 1 failed after 1 page(s)"),
        "{text}"
    );
    assert!(status.to_json().contains("\"listings\""));

    account.set_list_fault(None);
    let before = account.list_requests();
    let second = pass(&s).await;
    assert_eq!(second.exit_code(), 0, "{kind:?}: {second:?}");
    assert_eq!(mirrored(&s).await, BATCHES * ITEMS, "{kind:?}: every item");
    let listing = second.providers[0].listing.as_ref().unwrap();
    assert!(listing.resumed, "{listing:?}");
    // Pages 2 and 3 of the resumed walk, then one page from the head for what is new.
    assert_eq!(account.list_requests() - before, 3, "{kind:?}: {listing:?}");
    assert_eq!(walk(&s).await.state, WalkState::Complete);

    let before = account.list_requests();
    let third = pass(&s).await;
    assert_eq!(third.exit_code(), 0, "{kind:?}: {third:?}");
    assert_eq!(third.download.mirrored, 0);
    assert_eq!(
        account.list_requests() - before,
        1,
        "{kind:?}: an idle pass"
    );
    // The figures for the record (`cargo test --test tests walks -- --nocapture`).
    eprintln!(
        "{kind:?} {fault:?}: pass 1 exit {} in {:.2}s ({} mirrored); pass 2 exit {} in {:.2}s ({} mirrored, resumed); pass 3 exit {} in {:.2}s, 1 list request",
        first.exit_code(),
        first.elapsed.as_secs_f64(),
        first.download.mirrored,
        second.exit_code(),
        second.elapsed.as_secs_f64(),
        second.download.mirrored,
        third.exit_code(),
        third.elapsed.as_secs_f64(),
    );
}

#[tokio::test]
async fn extract_page_truncated_list_page() {
    a_failing_page_is_reached_by_the_next_pass(ProviderKind::ExtractPage, ListFault::TruncatedJson)
        .await;
}

#[tokio::test]
async fn llamacloud_5xx_list_page() {
    a_failing_page_is_reached_by_the_next_pass(ProviderKind::LlamaCloud, ListFault::Status(503))
        .await;
}

#[tokio::test]
async fn talonic_reset_list_page() {
    a_failing_page_is_reached_by_the_next_pass(ProviderKind::Talonic, ListFault::Reset).await;
}

#[tokio::test]
async fn perfectparser_truncated_list_page() {
    a_failing_page_is_reached_by_the_next_pass(
        ProviderKind::PerfectParser,
        ListFault::TruncatedJson,
    )
    .await;
}

#[tokio::test]
async fn a_refused_saved_position_lists_again_from_the_head_to_the_end() {
    let kind = ProviderKind::ExtractPage;
    let dir = tempfile::tempdir().unwrap();
    let account = Account::start(kind).await;
    let s = settings(dir.path(), &account, kind);
    account.set_list_fault(Some(ListFault::Status(503)));
    assert_eq!(pass(&s).await.exit_code(), 1);
    account.set_list_fault(Some(ListFault::RejectCursor));
    // The saved position is refused; the walk from the head needs cursors too, so it fails at its
    // own page 2 and keeps that position for the next pass.
    let refused = pass(&s).await;
    assert_eq!(refused.exit_code(), 1, "{refused:?}");
    let w = walk(&s).await;
    assert_eq!((w.state, w.early_stop), (WalkState::Failed, false), "{w:?}");

    // A position the server no longer knows (as after a cursor expired).
    {
        let conn = rusqlite::Connection::open(&s.ledger_path).unwrap();
        conn.execute("UPDATE walks SET position = 'stale-cursor'", [])
            .unwrap();
    }
    account.set_list_fault(None);
    let before = account.list_requests();
    let again = pass(&s).await;
    assert_eq!(again.exit_code(), 0, "{again:?}");
    let listing = again.providers[0].listing.as_ref().unwrap();
    assert!(listing.restarted && !listing.stopped_early, "{listing:?}");
    // The refused request, then the whole listing from the head: its page 1 is all done, and
    // early stop would have ended the walk there.
    assert_eq!(account.list_requests() - before, 1 + 3);
    assert_eq!(mirrored(&s).await, BATCHES * ITEMS);
    assert_eq!(walk(&s).await.state, WalkState::Complete);
}

#[tokio::test]
async fn perfectparser_since_never_advances_past_a_failed_walk() {
    let kind = ProviderKind::PerfectParser;
    let dir = tempfile::tempdir().unwrap();
    let account = Account::start(kind).await;
    let s = settings(dir.path(), &account, kind);
    account.set_list_fault(Some(ListFault::Status(502)));
    assert_eq!(pass(&s).await.exit_code(), 1);
    let failed = walk(&s).await;
    assert_eq!(
        (failed.since, failed.complete_since),
        (None, None),
        "{failed:?}"
    );
    // Failing again keeps both where they were.
    assert_eq!(pass(&s).await.exit_code(), 1);
    let still = walk(&s).await;
    assert_eq!(
        (still.walk, still.since, still.complete_since),
        (failed.walk, None, None)
    );

    account.set_list_fault(None);
    assert_eq!(pass(&s).await.exit_code(), 0);
    let done = walk(&s).await;
    assert_eq!(done.state, WalkState::Complete);
    // The failed walk finished first; the walk from the head after it listed since that walk's
    // start (less the clock margin), not since the failed passes.
    assert_eq!(done.walk, failed.walk + 1, "{done:?}");
    let margin = chrono::Duration::minutes(10);
    assert_eq!(done.since, Some(failed.started_at - margin), "{done:?}");
    assert_eq!(done.complete_since, Some(done.started_at - margin));
    assert_eq!(mirrored(&s).await, BATCHES * ITEMS);
}
