//! systemd integration: READY=1 once the ledger is open, checked and recovered; STATUS= after each
//! pass; STOPPING=1 on shutdown; WATCHDOG=1 only while the daemon shows progress.
//!
//! The watchdog is fed by a [`Heartbeat`] that real work beats (listing pages, downloaded chunks,
//! the idle pass loop), never by a free-running timer: a wedged pass stops the pings and systemd
//! restarts the service. Everything here is a no-op without `NOTIFY_SOCKET`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// When the daemon last made progress.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// Records progress now.
    pub fn beat(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last progress.
    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// The ledger is open, checked and recovered: the service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line status shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Shutdown has begun (downloads are draining).
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining downloads"),
    ]);
}

/// How often the idle pass loop beats, given the watchdog period (or a default without one).
pub fn idle_beat_every() -> Duration {
    sd_notify::watchdog_enabled().map_or(Duration::from_secs(30), |p| p / 4)
}

/// Pings the watchdog, on `tasks`, while `heartbeat` is fresh (younger than half the period).
/// Nothing is started when systemd asked for no watchdog.
pub fn spawn_watchdog(tasks: &TaskTracker, heartbeat: Arc<Heartbeat>, cancel: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let limit = period / 2;
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(period / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut withheld = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let age = heartbeat.age();
            if age < limit {
                send(&[NotifyState::Watchdog]);
                withheld = false;
            } else if !withheld {
                withheld = true;
                tracing::error!(
                    "no progress for {}: withholding the watchdog ping (systemd restarts the service if this lasts)",
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_age_resets_on_beat() {
        let h = Heartbeat::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.age() >= Duration::from_millis(30));
        h.beat();
        assert!(h.age() < Duration::from_millis(30));
    }
}
