//! The daemon's one [`Observer`]: every event counts as progress for the watchdog, and feeds the
//! metrics and the alerts when they are configured.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::systemd::Heartbeat;
use crate::alerts::Alerter;
use crate::config::Settings;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::model::{DueItem, Observer, ProviderName};

/// How long `sync --once` and a stopping daemon wait for alert deliveries.
const ALERT_FLUSH: Duration = Duration::from_secs(35);

pub struct DaemonObserver {
    heartbeat: Option<Arc<Heartbeat>>,
    metrics: Option<Arc<Metrics>>,
    alerter: Option<Arc<Alerter>>,
    bar: Option<ProgressBar>,
    bytes: AtomicU64,
    /// Why downloads are paused for a full disk, until a pass writes again (`/healthz`).
    disk_full: std::sync::Mutex<Option<String>>,
}

impl DaemonObserver {
    pub fn new(settings: &Settings, heartbeat: Option<Arc<Heartbeat>>) -> Self {
        Self {
            heartbeat,
            metrics: settings
                .metrics
                .as_ref()
                .map(|_| Arc::new(Metrics::default())),
            alerter: settings.alerts.clone().map(|a| Arc::new(Alerter::new(a))),
            bar: None,
            bytes: AtomicU64::new(0),
            disk_full: std::sync::Mutex::new(None),
        }
    }

    /// The full-disk error that paused downloads, while they are paused.
    pub fn disk_full_reason(&self) -> Option<String> {
        self.disk_full
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_disk_full(&self, reason: Option<&str>) {
        *self
            .disk_full
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason.map(str::to_owned);
    }

    /// Shows items, bytes and ETA on stderr while downloading, when stderr is a terminal (a person
    /// is watching); stays silent otherwise (cron, systemd, pipes).
    pub fn with_progress_bar(mut self) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {pos}/{len} results, {msg} [{elapsed}, ETA {eta}]",
            ) {
                bar.set_style(style);
            }
            // Both draw on stderr: log lines must clear the bar first, not run into it.
            crate::telemetry::print_through(Some(bar.clone()));
            self.bar = Some(bar);
        }
        self
    }

    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.metrics.clone()
    }

    /// Alerts remember what fired in the ledger, once it is open.
    pub fn attach(&self, ledger: &Ledger) {
        if let Some(a) = &self.alerter {
            a.attach(ledger.clone());
        }
    }

    /// Waits for alert deliveries in flight, and clears the progress bar.
    pub async fn flush(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            crate::telemetry::print_through(None);
        }
        if let Some(a) = &self.alerter {
            a.flush(ALERT_FLUSH).await;
        }
    }

    fn beat(&self) {
        if let Some(h) = &self.heartbeat {
            h.beat();
        }
    }
}

impl Observer for DaemonObserver {
    fn progress(&self) {
        self.beat();
    }

    fn request(&self, provider: &ProviderName, outcome: &str) {
        self.beat();
        if let Some(m) = &self.metrics {
            m.request(provider, outcome);
        }
    }

    fn dropfolder_queue(&self, files: u64) {
        if let Some(m) = &self.metrics {
            m.dropfolder_queue(files);
        }
    }

    fn retry(&self, provider: &ProviderName) {
        if let Some(m) = &self.metrics {
            m.retry(provider);
        }
    }

    fn wants_plan(&self) -> bool {
        self.bar.is_some()
    }

    fn downloads_planned(&self, items: u64) {
        if let Some(b) = &self.bar {
            b.set_length(items);
            b.set_position(0);
            b.set_message("0 B");
        }
    }

    fn mirrored(&self, provider: &ProviderName, bytes: u64) {
        self.beat();
        if let Some(b) = &self.bar {
            b.inc(1);
            let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            b.set_message(indicatif::HumanBytes(total).to_string());
        }
        if let Some(m) = &self.metrics {
            m.mirrored(provider, bytes);
        }
    }

    fn disk_ok(&self) {
        self.set_disk_full(None);
        if let Some(a) = &self.alerter {
            a.disk_ok();
        }
    }

    fn lost(&self, item: &DueItem, error: &str) {
        if let Some(a) = &self.alerter {
            a.lost(item, error);
        }
    }

    fn at_risk(&self, item: &DueItem) {
        if let Some(a) = &self.alerter {
            a.at_risk(item);
        }
    }

    fn disk_full(&self, error: &str) {
        self.set_disk_full(Some(error));
        if let Some(a) = &self.alerter {
            a.disk_full(error);
        }
    }

    fn provider_listed(
        &self,
        provider: &ProviderName,
        error: Option<&str>,
        failing_since: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        if let Some(a) = &self.alerter {
            a.provider_listed(provider.as_str(), error, failing_since);
        }
    }
}
