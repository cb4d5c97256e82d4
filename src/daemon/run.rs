//! `batchmirror run`: the long-running daemon. It owns every task it starts (metrics endpoint,
//! webhook receiver, systemd watchdog, drop folder worker) in one [`TaskTracker`], and stops them all on the one
//! shutdown token with one deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::observer::DaemonObserver;
use super::reload::Reload;
use super::{Mirror, alert_if_disk_full, systemd};
use crate::config::Settings;
use crate::error::Error;
use crate::scheduler::{self, PassTrigger};

/// The metrics endpoint reports unhealthy after this long without progress.
const HEALTHY_WITHIN: Duration = Duration::from_secs(15 * 60);

/// The daemon: a pass at start, then one per cron tick (never overlapping), until `shutdown`.
/// Under systemd it reports readiness, status and stopping, and feeds the watchdog from progress.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), Error> {
    run_reloading(settings, None, shutdown).await
}

/// [`run`], reading the config again on each of `reload`'s requests (SIGHUP, from
/// [`cancel_or_reload_on_signals`]) between passes.
pub async fn run_reloading(
    settings: Settings,
    mut reload: Option<Reload>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let cron = settings.schedule_cron.clone();
    // A pass already drains its downloads within `drain_timeout` of the token; the side tasks
    // get the same budget once the pass loop has ended.
    let deadline = settings.download.drain_timeout;
    let heartbeat = Arc::new(systemd::Heartbeat::default());
    let observer = Arc::new(DaemonObserver::new(&settings, Some(heartbeat.clone())));
    let metrics = observer.metrics();
    let metrics_listen = settings.metrics.as_ref().map(|m| m.listen);
    let webhook_listen = settings.webhook.as_ref().map(|w| w.listen);
    let names: Vec<_> = settings
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.kind.as_str().to_owned()))
        .collect();
    let mut mirror = Mirror::open_with(settings, observer.clone()).await?;
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
    if let Some(listen) = webhook_listen {
        crate::webhook::serve(
            &tasks,
            listen,
            &mirror.settings.providers,
            trigger.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await?;
    }
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
            () = async { reload.as_mut().expect("guarded").requested().await }, if reload.is_some() => {
                let fresh = reload.as_ref().and_then(Reload::load);
                if let Some(cron) = fresh.and_then(|f| mirror.reconfigure(&f)) {
                    sched = reschedule(sched, &cron, trigger.clone()).await;
                    systemd::status(&format!("schedule {cron}"));
                }
            }
            () = trigger.requested() => {
                let scope = trigger.begin();
                if scope.is_empty() {
                    trigger.set_running(false);
                    continue;
                }
                let pass = mirror.pass_scoped(&shutdown, &scope).await;
                trigger.set_running(false);
                match pass {
                    Ok(report) => {
                        // A quiet pass (nothing new, nothing wrong) every few minutes is noise.
                        if report.ok() && report.download.mirrored == 0 {
                            tracing::debug!("pass finished: {}", report.summary());
                        } else {
                            tracing::info!("pass finished: {}", report.summary());
                        }
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

/// A scheduler on `cron` in place of `old`; `old` itself, still ticking, when the new one will
/// not start (the config's cron was validated, so this is the scheduler's own failure).
async fn reschedule(
    mut old: tokio_cron_scheduler::JobScheduler,
    cron: &str,
    trigger: Arc<PassTrigger>,
) -> tokio_cron_scheduler::JobScheduler {
    match scheduler::start(cron, trigger).await {
        Ok(fresh) => {
            if let Err(e) = old.shutdown().await {
                tracing::warn!("the previous schedule did not stop cleanly: {e}");
            }
            fresh
        }
        Err(e) => {
            tracing::error!("schedule not changed, the previous one still runs: {e}");
            old
        }
    }
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

/// Cancels `token` on SIGTERM, SIGINT or SIGHUP (a closed terminal: the drain runs as for the
/// others), and says which one arrived.
pub fn cancel_on_signals(token: CancellationToken) -> Result<StopSignal, Error> {
    let hangup = signal(SignalKind::hangup(), "SIGHUP")?;
    watch(token, Hangup::Stops(hangup))
}

/// [`cancel_on_signals`] for `run`, where SIGHUP asks for the config at `config` to be read
/// again (systemd's `ExecReload=kill -HUP $MAINPID`) instead of stopping.
pub fn cancel_or_reload_on_signals(
    token: CancellationToken,
    config: &Path,
) -> Result<(StopSignal, Reload), Error> {
    let mut hangup = signal(SignalKind::hangup(), "SIGHUP")?;
    // One pending request is enough: a reload reads the file as it is then.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the config (after the running pass)");
            let _ = tx.try_send(());
        }
    });
    let stop = watch(token, Hangup::Reloads)?;
    Ok((stop, Reload::new(config, rx)))
}

/// What SIGHUP does to a command.
enum Hangup {
    Stops(Signal),
    /// Handled elsewhere.
    Reloads,
}

fn signal(kind: SignalKind, name: &'static str) -> Result<Signal, Error> {
    tokio::signal::unix::signal(kind).map_err(|source| Error::Signal {
        signal: name,
        source,
    })
}

fn watch(token: CancellationToken, hangup: Hangup) -> Result<StopSignal, Error> {
    let mut term = signal(SignalKind::terminate(), "SIGTERM")?;
    let mut int = signal(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = match hangup {
        Hangup::Stops(s) => Some(s),
        Hangup::Reloads => None,
    };
    let stop = StopSignal::default();
    let seen = stop.clone();
    tokio::spawn(async move {
        // The numbers are POSIX's, the same on every Unix: SIGHUP 1, SIGINT 2, SIGTERM 15.
        tokio::select! {
            _ = term.recv() => {
                seen.record(15);
                tracing::info!("SIGTERM received: stopping");
            }
            _ = int.recv() => {
                seen.record(2);
                tracing::info!("SIGINT received: stopping");
            }
            _ = async { hup.as_mut().expect("guarded").recv().await }, if hup.is_some() => {
                seen.record(1);
                tracing::info!("SIGHUP received (hang-up): stopping");
            }
        }
        token.cancel();
    });
    Ok(stop)
}
