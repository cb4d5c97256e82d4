//! `batchmirror run`: the long-running daemon. It owns every task it starts (metrics endpoint,
//! systemd watchdog, drop folder worker) in one [`TaskTracker`], and stops them all on the one
//! shutdown token with one deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::observer::DaemonObserver;
use super::{Mirror, alert_if_disk_full, systemd};
use crate::config::Settings;
use crate::error::Error;
use crate::scheduler::{self, PassTrigger};

/// The metrics endpoint reports unhealthy after this long without progress.
const HEALTHY_WITHIN: Duration = Duration::from_secs(15 * 60);

/// The daemon: a pass at start, then one per cron tick (never overlapping), until `shutdown`.
/// Under systemd it reports readiness, status and stopping, and feeds the watchdog from progress.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), Error> {
    let cron = settings.schedule_cron.clone();
    // A pass already drains its downloads within `drain_timeout` of the token; the side tasks
    // get the same budget once the pass loop has ended.
    let deadline = settings.download.drain_timeout;
    let heartbeat = Arc::new(systemd::Heartbeat::default());
    let observer = Arc::new(DaemonObserver::new(&settings, Some(heartbeat.clone())));
    let metrics = observer.metrics();
    let metrics_listen = settings.metrics.as_ref().map(|m| m.listen);
    let names: Vec<_> = settings
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.kind.as_str().to_owned()))
        .collect();
    let mirror = Mirror::open_with(settings, observer.clone()).await?;
    observer.attach(&mirror.ledger);
    let tasks = TaskTracker::new();
    if let (Some(listen), Some(m)) = (metrics_listen, &metrics) {
        let (hb, obs) = (heartbeat.clone(), observer.clone());
        let healthy = Arc::new(move || match obs.disk_full_reason() {
            Some(reason) => Err(format!("downloads paused, disk full: {reason}")),
            None if hb.age() >= HEALTHY_WITHIN => Err("no progress".to_owned()),
            None => Ok(()),
        });
        crate::metrics::serve(&tasks, listen, m.clone(), healthy, shutdown.clone())
            .await
            .map_err(|source| Error::Listen {
                what: "/metrics and /healthz",
                addr: listen,
                source,
            })?;
    }
    let trigger = Arc::new(PassTrigger::default());
    let mut sched = scheduler::start(&cron, trigger.clone()).await?;
    tracing::info!(schedule = %cron, providers = mirror.providers.len(), "batchmirror running");
    systemd::ready(&format!(
        "ready: {} provider(s), schedule {cron}",
        mirror.providers.len()
    ));
    systemd::spawn_watchdog(&tasks, heartbeat.clone(), shutdown.clone());
    {
        let token = shutdown.clone();
        tasks.spawn(async move {
            token.cancelled().await;
            systemd::stopping();
        });
    }
    let mut idle = tokio::time::interval(systemd::idle_beat_every());
    let mut dropfolder = mirror
        .dropfolder(trigger.clone())
        .map(|worker| tasks.spawn(worker.run(shutdown.clone())));
    trigger.request();
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            ended = async { dropfolder.as_mut().expect("guarded").await }, if dropfolder.is_some() => {
                dropfolder = None;
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(source) => break Err(Error::Task { task: "drop folder", source }),
                }
            }
            _ = idle.tick() => heartbeat.beat(),
            () = trigger.requested() => {
                trigger.set_running(true);
                let pass = mirror.pass(&shutdown).await;
                trigger.set_running(false);
                match pass {
                    Ok(report) => {
                        systemd::status(&report.summary());
                        if let Some(m) = &metrics {
                            let now = chrono::Utc::now();
                            let margin = mirror.settings.download.alert_margin;
                            let summaries = mirror.ledger.summary(&names, now, margin).await?;
                            m.observe_pass(
                                report.elapsed.as_secs_f64(),
                                report.unmirrored.count,
                                &summaries,
                            );
                        }
                    }
                    // The ledger or the disk failed under us: stop, and let the supervisor restart.
                    Err(e) => {
                        alert_if_disk_full(observer.as_ref(), &e);
                        break Err(e);
                    }
                }
            }
        }
    };
    // Every task stops on the one token, whatever ended the loop, within the one deadline.
    shutdown.cancel();
    tasks.close();
    let stopped = tokio::time::timeout(deadline, async {
        if let Err(e) = sched.shutdown().await {
            tracing::warn!("scheduler did not stop cleanly: {e}");
        }
        tasks.wait().await;
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(
            tasks = tasks.len(),
            "task(s) still running {} after shutdown: leaving them",
            humantime::format_duration(deadline)
        );
    }
    observer.flush().await;
    tracing::info!("batchmirror stopped");
    result
}

/// The stop signal that arrived, if any.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<std::sync::atomic::AtomicI32>);

impl StopSignal {
    fn record(&self, signo: i32) {
        self.0.store(signo, std::sync::atomic::Ordering::SeqCst);
    }

    /// The signal's number, once one arrived.
    pub fn received(&self) -> Option<i32> {
        let signo = self.0.load(std::sync::atomic::Ordering::SeqCst);
        (signo != 0).then_some(signo)
    }

    /// The exit code of a run a signal cut short, as shells report it (128 + the signal: 143
    /// for SIGTERM, 130 for SIGINT): a timer stopped at shutdown must not record success.
    pub fn exit_code(&self) -> Option<u8> {
        self.received()
            .and_then(|signo| u8::try_from(128 + signo).ok())
    }
}

/// Cancels `token` on SIGTERM or SIGINT, and says which one arrived.
pub fn cancel_on_signals(token: CancellationToken) -> Result<StopSignal, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let handler = |kind: SignalKind, signal_name: &'static str| {
        signal(kind).map_err(|source| Error::Signal {
            signal: signal_name,
            source,
        })
    };
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let stop = StopSignal::default();
    let seen = stop.clone();
    tokio::spawn(async move {
        // The numbers are POSIX's, the same on every Unix: SIGINT 2, SIGTERM 15.
        tokio::select! {
            _ = term.recv() => {
                seen.record(15);
                tracing::info!("SIGTERM received: stopping");
            }
            _ = int.recv() => {
                seen.record(2);
                tracing::info!("SIGINT received: stopping");
            }
        }
        token.cancel();
    });
    Ok(stop)
}
