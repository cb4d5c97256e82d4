//! Cron ticks that request passes, and nothing else: the pass loop in `daemon` runs them.
//!
//! Passes never overlap: a tick that arrives while a pass runs is skipped (logged), not queued,
//! so a slow pass cannot build a backlog of passes behind it. A webhook's request
//! ([`PassTrigger::follow_up`]) is different: what it names may have completed after the running
//! pass listed, so it leaves one follow-up pass pending, however many arrive. A pass asked for
//! by webhooks alone lists only their providers ([`Scope`]); any other request lists them all.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::error::Error;

/// Which providers a pass lists (every due item is downloaded either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Only these, by name: what webhooks named since the last pass started.
    Only(BTreeSet<String>),
}

impl Scope {
    pub fn includes(&self, provider: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(names) => names.contains(provider),
        }
    }
}

/// Shared between the cron job and the pass loop.
#[derive(Debug, Default)]
pub struct PassTrigger {
    wake: Notify,
    finished: Notify,
    running: AtomicBool,
    /// A follow-up was asked for since the running pass started.
    follow_up: AtomicBool,
    /// What the next pass must list: `(everything, providers named by webhooks)`.
    wanted: Mutex<(bool, BTreeSet<String>)>,
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
            None => w.0 = true,
            Some(name) => {
                w.1.insert(name.to_owned());
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

    /// Marks a pass as running and says what it must list: everything when anything but
    /// webhooks asked (or nothing did), else the providers the webhooks named.
    pub fn begin(&self) -> Scope {
        self.set_running(true);
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let (all, names) = std::mem::take(&mut *w);
        if all || names.is_empty() {
            Scope::All
        } else {
            Scope::Only(names)
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
        let both = Scope::Only(["a".to_owned(), "b".to_owned()].into());
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
        assert_eq!(t.begin(), Scope::All, "a bare wake-up lists everything");
    }
}
