//! The daemon's one [`Observer`]: every event counts as progress for the watchdog, and feeds the
//! metrics and the alerts when they are configured.

use std::sync::Arc;
use std::time::Duration;

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
        }
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

    /// Waits for alert deliveries in flight.
    pub async fn flush(&self) {
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

    fn retry(&self, provider: &ProviderName) {
        if let Some(m) = &self.metrics {
            m.retry(provider);
        }
    }

    fn mirrored(&self, provider: &ProviderName, bytes: u64) {
        self.beat();
        if let Some(m) = &self.metrics {
            m.mirrored(provider, bytes);
        }
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
        if let Some(a) = &self.alerter {
            a.disk_full(error);
        }
    }

    fn provider_listed(&self, provider: &ProviderName, error: Option<&str>) {
        if let Some(a) = &self.alerter {
            a.provider_listed(provider.as_str(), error);
        }
    }
}
