//! Cron ticks that request passes, and nothing else: the pass loop in `daemon` runs them.
//!
//! Passes never overlap: a tick that arrives while a pass runs is skipped (logged), not queued,
//! so a slow pass cannot build a backlog of passes behind it. A webhook's request
//! ([`PassTrigger::follow_up`]) is different: what it names may have completed after the running
//! pass listed, so it leaves one follow-up pass pending, however many arrive. A pass asked for
//! by webhooks alone lists only their providers ([`Scope`]), and a webhook that names a batch
//! ([`PassTrigger::refresh`]) has that batch read by id instead of its provider listed; any
//! other request lists them all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::error::Error;
use crate::model::BatchId;

/// Named batches kept per provider before the provider is listed instead: a flood of events
/// must not grow memory without bound, and past this many a walk is the cheaper read anyway.
pub const MAX_NAMED: usize = 1_000;

/// What a pass reads from the providers (every due item is downloaded either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// What webhooks asked for since the last pass started: providers to list, by name, and
    /// for other providers the batches to read by id (their listing is not walked).
    Only {
        list: BTreeSet<String>,
        refresh: BTreeMap<String, BTreeSet<BatchId>>,
    },
}

impl Scope {
    /// True when the pass walks `provider`'s listing.
    pub fn includes(&self, provider: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only { list, .. } => list.contains(provider),
        }
    }

    /// Nothing to read: the requests that woke the pass were taken by an earlier one.
    pub fn is_empty(&self) -> bool {
        match self {
            Scope::All => false,
            Scope::Only { list, refresh } => list.is_empty() && refresh.is_empty(),
        }
    }

    /// The batches of `provider` to read by id (none when its listing is walked).
    pub fn named(&self, provider: &str) -> Vec<BatchId> {
        match self {
            Scope::Only { refresh, .. } => refresh
                .get(provider)
                .map(|ids| ids.iter().cloned().collect())
                .unwrap_or_default(),
            Scope::All => Vec::new(),
        }
    }
}

/// What the next pass must read.
#[derive(Debug, Default)]
struct Wanted {
    /// Anything but a webhook asked: list every provider.
    all: bool,
    list: BTreeSet<String>,
    refresh: BTreeMap<String, BTreeSet<BatchId>>,
}

/// Shared between the cron job and the pass loop.
#[derive(Debug, Default)]
pub struct PassTrigger {
    wake: Notify,
    finished: Notify,
    running: AtomicBool,
    /// A follow-up was asked for since the running pass started.
    follow_up: AtomicBool,
    wanted: Mutex<Wanted>,
}

impl PassTrigger {
    /// Asks for a pass unless one is running; at most one request is ever pending.
    pub fn request(&self) -> bool {
        if self.running.load(Ordering::SeqCst) {
            tracing::info!("schedule tick skipped: the previous pass is still running");
            return false;
        }
        self.want(None);
        self.wake.notify_one();
        true
    }

    fn want(&self, provider: Option<&str>) {
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        match provider {
            None => w.all = true,
            Some(name) => {
                w.list.insert(name.to_owned());
            }
        }
    }

    /// Asks for a pass unless one is running, silently: for the drop folder, which asks often
    /// while it awaits results (a pass already running will pick them up).
    pub fn nudge(&self) {
        if !self.running.load(Ordering::SeqCst) {
            self.want(None);
            self.wake.notify_one();
        }
    }

    /// Asks for a pass listing `provider` that starts after this call: now if none runs, else
    /// one follow-up after the running pass (many calls during a pass still make one). For
    /// webhooks.
    pub fn follow_up(&self, provider: &str) {
        self.want(Some(provider));
        self.wake_after_running();
    }

    /// [`PassTrigger::follow_up`] for a webhook that names `batch`: the pass reads that batch by
    /// id instead of listing `provider` (unless something else asks for the listing). Batches
    /// named during a pass are read together by the one follow-up.
    pub fn refresh(&self, provider: &str, batch: BatchId) {
        {
            let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            let named = w.refresh.entry(provider.to_owned()).or_default();
            if named.len() < MAX_NAMED {
                named.insert(batch);
            } else {
                tracing::warn!(
                    provider,
                    named = MAX_NAMED,
                    "too many batches named by webhooks since the last pass: listing the provider instead"
                );
                w.list.insert(provider.to_owned());
            }
        }
        self.wake_after_running();
    }

    fn wake_after_running(&self) {
        // Flag first: a pass that ends between the two steps still sees it.
        self.follow_up.store(true, Ordering::SeqCst);
        if !self.running.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Waits for a request.
    pub async fn requested(&self) {
        self.wake.notified().await;
    }

    /// Marks a pass as running and says what it must read: everything when anything but
    /// webhooks asked, nothing when nothing did ([`Scope::is_empty`]), else the providers and batches the webhooks named (a
    /// provider also listed needs no batch read by id).
    pub fn begin(&self) -> Scope {
        self.set_running(true);
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let Wanted {
            all,
            list,
            mut refresh,
        } = std::mem::take(&mut *w);
        refresh.retain(|name, ids| !list.contains(name) && !ids.is_empty());
        // Nothing wanted: a wake-up left over from requests an earlier pass already took (two
        // webhooks at once store a permit each), so there is nothing to read.
        if all {
            Scope::All
        } else {
            Scope::Only { list, refresh }
        }
    }

    /// Marks a pass as running (true) or finished (false).
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
        if running {
            // The pass starting now lists after every follow-up asked for so far.
            self.follow_up.store(false, Ordering::SeqCst);
        } else {
            if self.follow_up.swap(false, Ordering::SeqCst) {
                self.wake.notify_one();
            }
            self.finished.notify_waiters();
        }
    }

    /// Waits for the end of the next pass (the drop folder delivers results then).
    pub async fn pass_finished(&self) {
        self.finished.notified().await;
    }
}

/// Starts the cron scheduler; each tick calls [`PassTrigger::request`].
pub async fn start(cron: &str, trigger: Arc<PassTrigger>) -> Result<JobScheduler, Error> {
    let err = |e: tokio_cron_scheduler::JobSchedulerError| Error::Schedule {
        cron: cron.to_owned(),
        source: e,
    };
    let sched = JobScheduler::new().await.map_err(err)?;
    let job = Job::new_async(cron, move |_, _| {
        let trigger = trigger.clone();
        Box::pin(async move {
            trigger.request();
        })
    })
    .map_err(err)?;
    sched.add(job).await.map_err(err)?;
    sched.start().await.map_err(err)?;
    Ok(sched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_during_a_pass_are_skipped_not_queued() {
        let t = PassTrigger::default();
        assert!(t.request());
        t.requested().await;
        t.set_running(true);
        assert!(!t.request(), "a tick during a pass must be dropped");
        t.set_running(false);
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), t.requested()).await;
        assert!(
            pending.is_err(),
            "no pass may be queued behind the one that ran"
        );
    }

    #[tokio::test]
    async fn follow_ups_during_a_pass_coalesce_into_one_pass_after_it() {
        let t = PassTrigger::default();
        t.follow_up("a");
        t.requested().await;
        t.set_running(true);
        for _ in 0..50 {
            t.follow_up("a");
        }
        t.set_running(false);
        let wait = std::time::Duration::from_millis(50);
        assert!(
            tokio::time::timeout(wait, t.requested()).await.is_ok(),
            "a webhook during a pass must leave a follow-up pass"
        );
        t.set_running(true);
        t.set_running(false);
        assert!(
            tokio::time::timeout(wait, t.requested()).await.is_err(),
            "fifty webhooks during one pass make one follow-up, not more"
        );
    }

    #[test]
    fn webhook_passes_list_only_the_named_providers_and_any_other_request_lists_all() {
        let t = PassTrigger::default();
        t.follow_up("b");
        t.follow_up("a");
        let both = Scope::Only {
            list: ["a".to_owned(), "b".to_owned()].into(),
            refresh: BTreeMap::new(),
        };
        assert_eq!(t.begin(), both);
        assert!(!both.includes("c"));
        t.set_running(false);
        t.follow_up("a");
        t.nudge();
        assert_eq!(
            t.begin(),
            Scope::All,
            "the drop folder wants every provider"
        );
        t.set_running(false);
        assert!(t.request());
        assert_eq!(t.begin(), Scope::All);
        t.set_running(false);
        assert!(
            t.begin().is_empty(),
            "a wake-up left over from requests an earlier pass took reads nothing"
        );
    }

    #[test]
    fn named_batches_coalesce_per_provider_and_a_listing_asked_for_covers_them() {
        let id = |s: &str| BatchId::parse(s).unwrap();
        let t = PassTrigger::default();
        t.refresh("a", id("e1"));
        t.refresh("a", id("e2"));
        t.refresh("a", id("e1"));
        t.refresh("b", id("e9"));
        t.follow_up("b");
        let scope = t.begin();
        assert_eq!(scope.named("a"), [id("e1"), id("e2")], "one read per batch");
        assert!(
            !scope.includes("a"),
            "a named batch does not list its provider"
        );
        assert!(scope.includes("b"));
        assert!(scope.named("b").is_empty(), "b's listing reads e9 anyway");
        t.set_running(false);
        t.refresh("a", id("e3"));
        t.request();
        let scope = t.begin();
        assert_eq!(scope, Scope::All, "a scheduled pass lists everything");
        assert!(scope.named("a").is_empty());
        t.set_running(false);
        for k in 0..=MAX_NAMED {
            t.refresh("a", id(&format!("e{k}")));
        }
        let scope = t.begin();
        assert!(scope.includes("a"), "past the cap the provider is listed");
        assert!(scope.named("a").is_empty());
    }
}
